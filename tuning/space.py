"""The search space: YAML entries -> Optuna distributions -> training-config overrides.

Each entry of the config's ``space:`` mapping is one hyperparameter::

    space:
      l1: {low: 0.1, high: 2.0}                  # float, uniform
      lr: {low: 1.0e-4, high: 3.0e-3, log: true}  # float, log-uniform
      width: {choices: [32, 64]}                  # categorical
      heads: {choices: [1, 2, 4, 8]}              # only divisors of the sampled width are drawn
      tcn_blocks: {low: 2, high: 4, int: true}    # dilations [g**i for i in range(blocks)]
      tcn_growth: {choices: [2, 3]}
      model.eeg.dropout: {low: 0.1, high: 0.6}    # any dotted TrainConfig field

Named parameters (:data:`PARAMETERS`) map to fields of :class:`mercl.training.config.TrainConfig`
(``lr`` sets both stages' learning rate, ``dropout`` the TCN's and the attention/classifier
dropout); a dotted name is a TrainConfig field itself. The TCN dilation schedule is two
parameters, the number of blocks ``n`` and the growth ``g``: dilations ``[g**i for i in range(n)]``.

Attention heads must divide the width. When every heads choice divides every width the
sampler draws ``heads`` from its choices; otherwise it draws ``heads_w<width>`` from the
divisors of the width sampled in the same trial (a conditional parameter, which TPE handles),
and a width with no valid heads choice makes the space impossible: rejected before the search.

:class:`SpaceSampler` is Optuna's define-by-run function (a plain picklable class, so the
searcher's checkpoint restores). :func:`trial_overrides` turns a trial's sampled values into
dotted TrainConfig overrides; :func:`readable_hparams` into the table/TensorBoard row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mercl.config import FieldProblem, from_dict
from mercl.errors import ConfigError, MerclError


@dataclass
class ParamSpec:
    """One hyperparameter's range: ``choices`` or ``low``/``high`` (``log``, ``int``, ``step``)."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    int: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    def validate(self) -> None:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise FieldProblem("choices", "give either choices or low/high, not both")
            if not self.choices:
                raise FieldProblem("choices", "is empty")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise FieldProblem("choices", f"has duplicates: {self.choices}")
            for i, c in enumerate(self.choices):
                if not isinstance(c, (bool, int, float, str)) and c is not None:
                    raise FieldProblem(f"choices[{i}]", f"must be a number, string or bool, got {c!r}")
            return
        if self.low is None or self.high is None:
            raise FieldProblem("low" if self.low is None else "high", "give low and high, or choices")
        if self.low > self.high:
            raise FieldProblem("high", f"must be >= low ({self.low}), got {self.high}")
        if self.log and self.low <= 0:
            raise FieldProblem("low", f"must be > 0 for a log scale, got {self.low}")
        if self.int and (float(self.low) != int(self.low) or float(self.high) != int(self.high)):
            raise FieldProblem("low", f"int: true needs integer bounds, got {self.low}..{self.high}")
        if self.step is not None and self.step <= 0:
            raise FieldProblem("step", f"must be > 0, got {self.step}")
        if self.step is not None and self.log:
            raise FieldProblem("step", "cannot be combined with log: true")

    def values_at_bounds(self) -> list[Any]:
        """The extreme values this parameter can take (every choice, or low and high)."""
        if self.choices is not None:
            return list(self.choices)
        if self.int:
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]

    def suggest(self, trial, name: str) -> Any:
        """Draw a value from an Optuna trial (define-by-run)."""
        if self.choices is not None:
            return trial.suggest_categorical(name, list(self.choices))
        if self.int:
            step = int(self.step) if self.step else 1
            return trial.suggest_int(name, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)


@dataclass(frozen=True)
class Parameter:
    """A named hyperparameter: the TrainConfig fields it sets and its allowed range."""

    paths: tuple[str, ...]
    kind: type
    minimum: float | None = None
    maximum: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    help: str = ""


PARAMETERS: dict[str, Parameter] = {
    "l1": Parameter(("loss.l1",), float, 0.0, help="AMCL weight"),
    "l2": Parameter(("loss.l2",), float, 0.0, help="EMCL weight"),
    "l3": Parameter(("loss.l3",), float, 0.0, help="SMCL weight"),
    "alpha": Parameter(("loss.alpha",), float, -1.0, 1.0, help="SMCL target similarity"),
    "temperature": Parameter(("loss.temperature",), float, 0.0, min_exclusive=True, help="SupCon temperature"),
    "lr": Parameter(("pretrain.lr", "finetune.lr"), float, 0.0, min_exclusive=True, help="both stages"),
    "pretrain_lr": Parameter(("pretrain.lr",), float, 0.0, min_exclusive=True),
    "finetune_lr": Parameter(("finetune.lr",), float, 0.0, min_exclusive=True),
    "weight_decay": Parameter(("pretrain.weight_decay", "finetune.weight_decay"), float, 0.0),
    "dropout": Parameter(("model.tcn.dropout", "model.dropout"), float, 0.0, 1.0, max_exclusive=True),
    "width": Parameter(("model.width",), int, 1),
    "heads": Parameter(("model.heads",), int, 1),
    "tcn_blocks": Parameter((), int, 1, help="number of TCN blocks"),
    "tcn_growth": Parameter((), int, 1, help="dilation growth factor"),
}
DILATION_PARAMS = ("tcn_blocks", "tcn_growth")
# Backbone features are computed once per search (the feature cache): their fields stay fixed.
FIXED_PREFIXES = ("model.video.", "model.audio.", "model.modalities", "cache_backbone_features", "device")


def dilations(blocks: int, growth: int) -> list[int]:
    """The TCN dilation schedule ``[growth**i for i in range(blocks)]``."""
    return [int(growth) ** i for i in range(int(blocks))]


def dilation_string(values: list[int]) -> str:
    """``[1, 2, 4, 8]`` -> ``"1-2-4-8"`` (how tables and TensorBoard show a schedule)."""
    return "-".join(str(int(v)) for v in values)


def _check_range(name: str, param: Parameter, spec: ParamSpec, source=None) -> None:
    """Every value the spec can produce lies in the parameter's range (else name the bound)."""
    for i, value in enumerate(spec.values_at_bounds()):
        field = f"choices[{i}]" if spec.choices is not None else ("low", "high")[i]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"space.{name}.{field}", f"must be a number, got {value!r}", source)
        if param.kind is int and float(value) != int(value):
            raise ConfigError(f"space.{name}.{field}", f"must be an integer, got {value!r}", source)
        if param.minimum is not None:
            low_ok = value > param.minimum if param.min_exclusive else value >= param.minimum
            if not low_ok:
                op = ">" if param.min_exclusive else ">="
                raise ConfigError(f"space.{name}.{field}", f"must be {op} {param.minimum}, got {value}", source)
        if param.maximum is not None:
            high_ok = value < param.maximum if param.max_exclusive else value <= param.maximum
            if not high_ok:
                op = "<" if param.max_exclusive else "<="
                raise ConfigError(f"space.{name}.{field}", f"must be {op} {param.maximum}, got {value}", source)


def parse_space(space: dict[str, Any], source=None) -> dict[str, ParamSpec]:
    """Validate the ``space:`` mapping into ParamSpecs; a bad entry names ``space.<name>...``."""
    if not space:
        raise ConfigError("space", "is empty: give at least one hyperparameter to search", source)
    specs: dict[str, ParamSpec] = {}
    for name, entry in space.items():
        if name not in PARAMETERS and "." not in name:
            known = ", ".join(PARAMETERS)
            raise ConfigError(f"space.{name}", f"unknown hyperparameter (known: {known}; or a dotted "
                                               "training-config field such as model.eeg.dropout)", source)
        if any(name.startswith(p) for p in FIXED_PREFIXES):
            raise ConfigError(f"space.{name}", "cannot be searched: backbone features are computed once per "
                                               "search (set it in the base training config instead)", source)
        if isinstance(entry, list):
            entry = {"choices": entry}
        spec = from_dict(ParamSpec, entry, prefix=f"space.{name}", source=source)
        if name in PARAMETERS:
            _check_range(name, PARAMETERS[name], spec, source)
        specs[name] = spec
    return specs


@dataclass
class BaseModelShape:
    """The base training config's values the constrained parameters fall back to."""

    width: int
    heads: int
    dilations: list[int]

    @property
    def blocks(self) -> int:
        return len(self.dilations)

    @property
    def growth(self) -> int:
        d = self.dilations
        if len(d) > 1 and d[0] > 0 and all(d[i + 1] == d[i] * (d[1] // d[0]) for i in range(len(d) - 1)):
            return d[1] // d[0]
        return 2


class SpaceSampler:
    """Optuna define-by-run search space (picklable: the searcher's checkpoint holds it).

    ``sampler(trial)`` draws every parameter (width before heads) and returns the constants
    Tune adds to the trial config: the resolved ``heads`` when it was drawn per width.
    """

    def __init__(self, specs: dict[str, ParamSpec], base: BaseModelShape):
        self.specs = specs
        self.base = base
        self.heads_by_width = heads_choices_by_width(specs, base)
        widths = set(self.heads_by_width)
        self.conditional_heads = "heads" in specs and any(
            self.heads_by_width[w] != list(specs["heads"].choices or []) for w in widths
        )

    def __call__(self, trial) -> dict[str, Any] | None:
        values: dict[str, Any] = {}
        order = sorted(self.specs, key=lambda n: (n == "heads", n != "width"))
        for name in order:
            if name == "heads" and self.conditional_heads:
                width = int(values.get("width", self.base.width))
                choices = self.heads_by_width[width]
                values["heads"] = trial.suggest_categorical(f"heads_w{width}", choices)
                continue
            values[name] = self.specs[name].suggest(trial, name)
        return {"heads": values["heads"]} if self.conditional_heads else None


def heads_choices_by_width(specs: dict[str, ParamSpec], base: BaseModelShape) -> dict[int, list[int]]:
    """For every width the space can produce, the heads choices that divide it.

    Raises ConfigError (``space.heads`` or ``space.width``) when some width has none.
    """
    width_spec = specs.get("width")
    if width_spec is None:
        widths = [base.width]
    elif width_spec.choices is not None:
        widths = [int(w) for w in width_spec.choices]
    else:
        step = int(width_spec.step or 1)
        widths = list(range(int(width_spec.low), int(width_spec.high) + 1, step))
    heads_spec = specs.get("heads")
    if heads_spec is not None and heads_spec.choices is None:
        raise ConfigError("space.heads", "give heads as choices (heads must divide the width)")
    heads = [int(h) for h in heads_spec.choices] if heads_spec is not None else [base.heads]
    out: dict[int, list[int]] = {}
    for w in widths:
        ok = [h for h in heads if w % h == 0]
        if not ok:
            if heads_spec is not None:
                raise ConfigError("space.heads", f"no choice in {heads} divides width {w}: the space is impossible")
            raise ConfigError("space.width", f"width {w} is not divisible by the base config's heads ({base.heads})")
        out[w] = ok
    return out


def trial_overrides(params: dict[str, Any], base: BaseModelShape) -> dict[str, Any]:
    """A trial's sampled values -> dotted TrainConfig overrides (``{"loss.l1": 0.3, ...}``)."""
    overrides: dict[str, Any] = {}
    for name, value in params.items():
        if name.startswith("heads_w"):
            continue  # the conditional draw; ``heads`` holds the value
        if name == "fold":
            continue  # a nested search's outer fold (tuning.nested), not a hyperparameter
        if name in DILATION_PARAMS:
            continue
        if name in PARAMETERS:
            kind = PARAMETERS[name].kind
            for path in PARAMETERS[name].paths:
                overrides[path] = kind(value)
        else:
            overrides[name] = value
    if any(p in params for p in DILATION_PARAMS):
        blocks = int(params.get("tcn_blocks", base.blocks))
        growth = int(params.get("tcn_growth", base.growth))
        overrides["model.tcn.dilations"] = dilations(blocks, growth)
    return overrides


def readable_hparams(params: dict[str, Any], base: BaseModelShape) -> dict[str, Any]:
    """A trial's values as a flat row of plain Python scalars (tables, TensorBoard HParams).

    The conditional ``heads_w<width>`` draws collapse into ``heads``; the dilation schedule is
    shown as ``dilations`` = "1-2-4" beside its two parameters.
    """
    row: dict[str, Any] = {}
    for name, value in params.items():
        if name.startswith("heads_w"):
            continue
        row[name] = plain(value)
    if any(p in params for p in DILATION_PARAMS):
        blocks = int(params.get("tcn_blocks", base.blocks))
        growth = int(params.get("tcn_growth", base.growth))
        row["dilations"] = dilation_string(dilations(blocks, growth))
    return row


def plain(value: Any) -> Any:
    """numpy scalars -> Python scalars (TensorBoard HParams drops or mistypes numpy values)."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def check_space_against_base(specs: dict[str, ParamSpec], train_name: str, train_overrides: dict[str, Any]):
    """Build the base TrainConfig and the corner configs of the space; a problem names the field.

    Returns (base TrainConfig, BaseModelShape). Raises ConfigError/MerclError before any
    trial can start: an impossible heads/width space, a value a TrainConfig rejects, ...
    """
    from mercl.training.config import load_train_config

    try:
        base_cfg = load_train_config(train_name, train_overrides)
    except ConfigError as exc:
        where = f"train_overrides.{exc.field}" if _overridden(exc.field, train_overrides) else exc.field
        raise ConfigError(where, exc.problem, f"training config {train_name}") from None
    base = BaseModelShape(base_cfg.model.width, base_cfg.model.heads, list(base_cfg.model.tcn.dilations))
    heads_by_width = heads_choices_by_width(specs, base)
    # Corner configs: every extreme of every parameter (one at a time), every width with its heads.
    probes: list[tuple[str, dict[str, Any]]] = []
    for name, spec in specs.items():
        if name == "heads":
            continue
        for value in spec.values_at_bounds():
            params = {name: value}
            if name == "width":
                params["heads"] = heads_by_width[int(value)][0]
            probes.append((name, params))
    for width, heads in heads_by_width.items():
        for h in heads:
            probes.append(("heads", {"width": width, "heads": h} if "width" in specs else {"heads": h}))
    for name, params in probes:
        overrides = {**train_overrides, **trial_overrides(params, base)}
        try:
            load_train_config(train_name, overrides)
        except ConfigError as exc:
            raise ConfigError(f"space.{name}", f"{params} gives an invalid training config: "
                                               f"'{exc.field}' {exc.problem}") from None
        except MerclError as exc:
            raise ConfigError(f"space.{name}", str(exc)) from None
    return base_cfg, base


def _overridden(field: str, train_overrides: dict[str, Any]) -> bool:
    return any(field == k or field.startswith(k + ".") or field.startswith(k + "[") for k in train_overrides)
