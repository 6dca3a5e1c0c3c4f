"""TensorBoard for a search: every trial's curves, and its hyperparameters in the HParams view.

A Tune callback running in the search driver writes one run per trial under
``<storage>/<name>/tensorboard/<trial_id>/``: the reported metrics every epoch (step =
``global_epoch``, tags ``epoch/<metric>``) and, when the trial ends, an HParams session with
its hyperparameters (plain Python values; the dilation schedule as the string "1-2-4-8")
and the metrics ``hparam/best_val_metric``, ``hparam/last_val_metric``, ``hparam/epochs``.
All trials then sit side by side in TensorBoard's HParams dashboard::

    tensorboard --logdir <storage>/<name>

Tune's own TBXLoggerCallback is switched off (search.py sets
``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS``): it writes the HParams view with numpy types and
drops string hyperparameters.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tuning.space import BaseModelShape, ParamSpec, plain, readable_hparams

SKIP_METRICS = {"global_epoch", "stage_epoch", "training_iteration", "timestamp", "time_this_iter_s",
                "time_total_s", "time_since_restore", "iterations_since_restore", "pid", "restarts"}


def tensorboard_command(exp_dir: Path) -> str:
    return f"tensorboard --logdir {exp_dir}"


def _ray_callback_base():
    from ray.tune import Callback

    return Callback


class HParamsWriter:
    """Writes the per-trial TensorBoard runs (usable without Tune: see :class:`HParamsCallback`)."""

    def __init__(self, log_dir: Path, specs: dict[str, ParamSpec], base: BaseModelShape, metric: str, mode: str):
        self.log_dir = Path(log_dir)
        self.specs = specs
        self.base = base
        self.metric = metric
        self.mode = mode
        self._writers: dict[str, Any] = {}
        self._history: dict[str, list[float]] = {}
        self._last_epoch: dict[str, int] = {}

    def __getstate__(self):  # pickled into Tune's tuner.pkl: open writers stay behind
        state = dict(self.__dict__)
        state["_writers"] = {}
        return state

    def _writer(self, trial_id: str):
        from torch.utils.tensorboard import SummaryWriter

        if trial_id not in self._writers:
            self._writers[trial_id] = SummaryWriter(str(self.log_dir / trial_id))
        return self._writers[trial_id]

    def result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Scalars of one reported epoch."""
        step = result.get("global_epoch")
        if step is None:
            return
        writer = self._writer(trial_id)
        for key, value in result.items():
            if key in SKIP_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(float(value)):
                writer.add_scalar(f"epoch/{key}", float(value), int(step))
        if self.metric in result and result[self.metric] is not None:
            self._history.setdefault(trial_id, []).append(float(result[self.metric]))
        self._last_epoch[trial_id] = int(step)
        writer.flush()

    def hparams(self, trial_id: str, config: dict[str, Any], status: str) -> None:
        """The trial's HParams session, written once when it ends."""
        values = self._history.get(trial_id, [])
        best = (max(values) if self.mode == "max" else min(values)) if values else float("nan")
        metrics = {
            f"hparam/best_{self.metric}": float(best),
            f"hparam/last_{self.metric}": float(values[-1]) if values else float("nan"),
            "hparam/epochs": float(self._last_epoch.get(trial_id, 0)),
        }
        hparams = {k: plain(v) for k, v in readable_hparams(config, self.base).items()}
        hparams["status"] = status
        discrete = {name: [plain(c) for c in spec.choices] for name, spec in self.specs.items()
                    if spec.choices is not None and name in hparams}
        writer = self._writer(trial_id)
        writer.add_hparams(hparams, metrics, hparam_domain_discrete=discrete, run_name=".")
        writer.flush()
        writer.close()
        self._writers.pop(trial_id, None)


def hparams_callback(log_dir: Path, specs: dict[str, ParamSpec], base: BaseModelShape, metric: str, mode: str,
                     stopped_lookup=None, after_trial=None):
    """A ``ray.tune.Callback`` feeding an :class:`HParamsWriter` (built lazily: Ray is imported here).

    stopped_lookup: callable(trial_id) -> bool telling whether ASHA stopped the trial early.
    after_trial: callable() run after a trial's HParams are written (uploads to cloud storage).
    """

    class HParamsCallback(_ray_callback_base()):
        def __init__(self):
            self.writer = HParamsWriter(log_dir, specs, base, metric, mode)
            self.stopped_lookup = stopped_lookup

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.writer.result(trial.trial_id, result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            stopped = self.stopped_lookup(trial.trial_id) if self.stopped_lookup else False
            self.writer.hparams(trial.trial_id, trial.config, "stopped_early" if stopped else "completed")
            if after_trial is not None:
                after_trial()

        def on_trial_error(self, iteration, trials, trial, **info):
            self.writer.hparams(trial.trial_id, trial.config, "error")
            if after_trial is not None:
                after_trial()

    return HParamsCallback()
