"""What a search leaves in ``<storage>/<name>/``: the trial table, the best config, plots, summary.

* ``trials.csv`` / ``trials.parquet``: one row per trial: every hyperparameter (the dilation
  schedule as "1-2-4"), best and last validation metric, epochs run, restarts and the status
  (``completed``, ``stopped_early`` by ASHA, ``error``).
* ``best_config.yaml``: the best trial's full training config (``mercl evaluate --config`` reads it).
* ``plots/*.png``: optimisation history, parameter importances, parallel coordinates
  (``optuna.visualization.matplotlib`` on a study rebuilt from the trial table).
* ``crossval/``: the outer cross-validation of the best config (``mercl.training.crossval``).
* ``summary.md``: the best trial, how many trials ASHA stopped, the outer-CV result beside the
  majority baseline, and the protocol.

``asha/state.json``: what :class:`tuning.asha.RecordingASHA` recorded (which trials it stopped
early, and its rungs).
"""

from __future__ import annotations

import json
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mercl.atomic import write_atomic, write_text
from mercl.experiments.written_plots import record_written_plots
from mercl.markdown import md_cell, md_row
from mercl.training.metrics import TRIVIAL_BASELINES
from tuning.space import BaseModelShape, ParamSpec, plain, readable_hparams

STATUS_COMPLETED = "completed"
STATUS_STOPPED = "stopped_early"
STATUS_ERROR = "error"
STATUS_UNFINISHED = "unfinished"
STATUS_BUDGET = "stopped_by_budget"  # still training when the search's time budget was spent


# ----------------------------------------------------------------------------- cloud storage


def _is_uri(location: str) -> bool:
    return "://" in str(location)


def upload_outputs(exp_dir: Path, location: str) -> None:
    """Copy the local outputs folder to a cloud ``location`` (no-op for local storage)."""
    if not _is_uri(location) or not exp_dir.is_dir():
        return
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(location)
    fs.create_dir(path, recursive=True)
    local = pyarrow.fs.LocalFileSystem()
    for info in local.get_file_info(pyarrow.fs.FileSelector(str(exp_dir), recursive=True)):
        if info.type == pyarrow.fs.FileType.Directory:
            fs.create_dir(f"{path}/{Path(info.path).relative_to(exp_dir).as_posix()}", recursive=True)
    pyarrow.fs.copy_files(str(exp_dir), path, source_filesystem=local, destination_filesystem=fs)


def download_outputs(location: str, exp_dir: Path, names=("search_config.yaml", "asha", "tensorboard")) -> None:
    """Fetch what a resumed search needs from a cloud ``location`` into the local outputs folder."""
    if not _is_uri(location):
        return
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(location)
    for name in names:
        source = f"{path}/{name}"
        if fs.get_file_info(source).type == pyarrow.fs.FileType.NotFound:
            continue
        (exp_dir / name).parent.mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(source, str(exp_dir / name), source_filesystem=fs,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())


# ----------------------------------------------------------------------------- ASHA that remembers


def asha_state_path(exp_dir: Path) -> Path:
    """Where RecordingASHA keeps its state: in a subfolder, because Tune copies the top-level
    ``*.json``/``*.pkl`` of the experiment folder to its driver staging folder on restore and
    syncs them back later, which would put the state of before the interruption back."""
    return exp_dir / "asha" / "state.json"


def asha_stopped(exp_dir: Path) -> dict[str, int]:
    """{trial_id: global_epoch at which ASHA stopped it} from ``asha/state.json``."""
    path = asha_state_path(exp_dir)
    return dict(json.loads(path.read_text()).get("stopped", {})) if path.is_file() else {}


# ----------------------------------------------------------------------------- the searcher's study


def load_searcher_state(location: str | Path) -> dict[str, Any] | None:
    """The newest ``searcher-state-*.pkl`` Tune saved in the experiment (local path or URI), or None.

    It is the searcher's ``__dict__``; for OptunaSearch it holds the study (``_ot_study``).
    """
    import pyarrow.fs

    if _is_uri(str(location)):
        fs, path = pyarrow.fs.FileSystem.from_uri(str(location))
    else:
        fs, path = pyarrow.fs.LocalFileSystem(), str(location)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    paths = sorted(i.path for i in infos if re.fullmatch(r"searcher-state-.*\.pkl", Path(i.path).name))
    if not paths:
        return None
    with fs.open_input_stream(paths[-1]) as f:
        return pickle.loads(f.read())


def searcher_study(location: str | Path):
    """The Optuna study inside the saved OptunaSearch state (None when there is none, or per fold)."""
    state = load_searcher_state(location)
    if not isinstance(state, dict) or "_ot_study" not in state:
        return None
    return state["_ot_study"]


def searcher_studies(location: str | Path) -> dict[int | None, Any]:
    """{fold: Optuna study} of a nested search's saved searcher ({None: study} for a plain one)."""
    from tuning.nested import studies_in_state

    return studies_in_state(load_searcher_state(location))


# ----------------------------------------------------------------------------- the trial table


def _history(result) -> pd.DataFrame:
    """A trial's per-epoch rows (deduplicated on ``global_epoch``, the last report wins)."""
    frame = getattr(result, "metrics_dataframe", None)
    if frame is None or len(frame) == 0 or "global_epoch" not in frame:
        return pd.DataFrame(columns=["global_epoch", "val_metric", "stage"])
    frame = frame.dropna(subset=["global_epoch"])
    return frame.drop_duplicates("global_epoch", keep="last").sort_values("global_epoch")


def trial_id_from_path(path) -> str:
    """``.../run_trial_68511e26_1_alpha=...`` -> ``68511e26`` (for a trial that reported nothing)."""
    match = re.search(r"run_trial_([0-9a-f]+)_", Path(str(path)).name)
    return match.group(1) if match else Path(str(path)).name


def result_trial_id(result) -> str:
    """A Tune ``Result``'s trial id: the one it reported, else its folder's (it reported nothing)."""
    return (result.metrics or {}).get("trial_id") or trial_id_from_path(result.path)


def trial_row(result, base: BaseModelShape, stopped: dict[str, int], metric: str, mode: str,
              planned_epochs: int, budget: bool = False) -> dict[str, Any]:
    """One row of the trial table from a Tune ``Result`` (``budget``: the search had a time budget,
    so a trial whose training loop never returned (Tune's ``done``) before its last epoch was
    stopped by it)."""
    metrics = result.metrics or {}
    config = result.config or {}
    trial_id = result_trial_id(result)
    history = _history(result)
    sign = 1.0 if mode == "max" else -1.0
    values = history[metric].astype(float) if metric in history else pd.Series(dtype=float)
    finetune = history[history["stage"] == "finetune"] if "stage" in history else history
    ft_values = finetune[metric].astype(float) if metric in finetune else pd.Series(dtype=float)
    best_idx = (values * sign).idxmax() if values.notna().any() else None
    epochs = int(history["global_epoch"].max()) if len(history) else 0
    if result.error is not None:
        status = STATUS_ERROR
    elif trial_id in stopped:
        status = STATUS_STOPPED
    elif budget and not metrics.get("done", False) and epochs < planned_epochs:
        status = STATUS_BUDGET  # (one cut after its last epoch, before Tune saw it return, ran to the end)
    elif len(history) == 0:
        status = STATUS_UNFINISHED
    else:
        status = STATUS_COMPLETED
    row = {"trial_id": trial_id, "status": status}
    row.update(readable_hparams(config, base))
    row.update({
        f"best_{metric}": float(values.loc[best_idx]) if best_idx is not None else math.nan,
        "best_epoch": int(history.loc[best_idx, "global_epoch"]) if best_idx is not None else -1,
        f"best_finetune_{metric}": float((ft_values * sign).max() * sign) if ft_values.notna().any() else math.nan,
        f"last_{metric}": float(values.iloc[-1]) if len(values) else math.nan,
        "epochs_run": epochs,
        "epochs_planned": planned_epochs,
        "stage_at_end": str(history["stage"].iloc[-1]) if "stage" in history and len(history) else "",
        "restarts": int(metrics.get("restarts", 0) or 0),
        "time_s": float(metrics.get("time_total_s", math.nan) or math.nan),
        "error": str(result.error).splitlines()[0][:200] if result.error is not None else "",
    })
    return {k: plain(v) for k, v in row.items()}


def trial_table(results, base: BaseModelShape, stopped: dict[str, int], metric: str, mode: str,
                planned_epochs: int, budget: bool = False) -> pd.DataFrame:
    """One row per trial of a Tune ``ResultGrid``, ordered by trial id."""
    rows = [trial_row(r, base, stopped, metric, mode, planned_epochs, budget) for r in results]
    frame = pd.DataFrame(rows)
    return frame.sort_values("trial_id").reset_index(drop=True) if len(frame) else frame


def write_trial_tables(table: pd.DataFrame, exp_dir: Path) -> None:
    write_atomic(exp_dir / "trials.csv", lambda p: table.to_csv(p, index=False))
    write_atomic(exp_dir / "trials.parquet", lambda p: table.to_parquet(p, index=False))


def best_trial(table: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    """The best trial: among trials that ran to the end, the best fine-tuning validation metric.

    (An ASHA-stopped trial's metric comes from an earlier epoch or the pre-training probe, so
    it is only chosen when no trial completed.)
    """
    key = f"best_finetune_{metric}"
    ok = table[table["status"] == STATUS_COMPLETED]
    if not len(ok) or ok[key].isna().all():
        ok = table[table["status"] != STATUS_ERROR]
        key = f"best_{metric}"
    ok = ok.dropna(subset=[key])
    if not len(ok):
        return None
    return ok.loc[ok[key].idxmax() if mode == "max" else ok[key].idxmin()]


def write_best_config(train_config: dict[str, Any], trial: pd.Series, exp_dir: Path, metric: str) -> Path:
    """``best_config.yaml``: the best trial's full training config (a mercl TrainConfig YAML)."""
    header = (f"# Best trial {trial['trial_id']} of search {exp_dir.name}: "
              f"best fine-tuning {metric} {trial[f'best_finetune_{metric}']:.4f} on the inner validation split.\n"
              f"# Use: mercl evaluate DATASET --config {exp_dir / 'best_config.yaml'}\n")
    path = exp_dir / "best_config.yaml"
    write_text(path, header + yaml.safe_dump(train_config, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- plots


def _distribution(spec: ParamSpec):
    import optuna

    if spec.choices is not None:
        return optuna.distributions.CategoricalDistribution([plain(c) for c in spec.choices])
    if spec.int:
        return optuna.distributions.IntDistribution(int(spec.low), int(spec.high), log=spec.log,
                                                    step=int(spec.step or 1))
    return optuna.distributions.FloatDistribution(float(spec.low), float(spec.high), log=spec.log, step=spec.step)


def study_from_table(table: pd.DataFrame, specs: dict[str, ParamSpec], metric: str, mode: str):
    """An Optuna study with one trial per row: completed trials COMPLETE, ASHA-stopped ones PRUNED."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    distributions = {name: _distribution(spec) for name, spec in specs.items()}
    for _, row in table.iterrows():
        if row["status"] == STATUS_ERROR or pd.isna(row[f"best_{metric}"]):
            continue
        params = {name: plain(row[name]) for name in specs if name in row and not pd.isna(row[name])}
        dists = {name: distributions[name] for name in params}
        complete = row["status"] == STATUS_COMPLETED
        value = row[f"best_finetune_{metric}"] if complete else None
        if complete and pd.isna(value):
            value = row[f"best_{metric}"]
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dists, value=float(value) if complete else None,
            state=optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.PRUNED,
            intermediate_values={int(row["best_epoch"]): float(row[f"best_{metric}"])} if not complete else None,
            user_attrs={"trial_id": row["trial_id"]},
        ))
    return study


def write_plots(study, plots_dir: Path) -> dict[str, str]:
    """PNG plots of the study; returns {name: path or the reason it was skipped}."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    plots_dir.mkdir(parents=True, exist_ok=True)
    done: dict[str, str] = {}
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    jobs = {
        "optimization_history": (ovm.plot_optimization_history, 1),
        "param_importances": (ovm.plot_param_importances, 2),
        "parallel_coordinate": (ovm.plot_parallel_coordinate, 1),
    }
    for name, (plot, needed) in jobs.items():
        if len(complete) < needed:
            done[name] = f"skipped: needs {needed} completed trials, have {len(complete)}"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study)
            fig = (ax if not isinstance(ax, np.ndarray) else ax.flat[0]).figure
            fig.set_size_inches(9, 5.5)
            fig.tight_layout()
            path = plots_dir / f"{name}.png"
            write_atomic(path, lambda p, fig=fig: fig.savefig(p, dpi=110, format="png"))
            plt.close(fig)
            done[name] = str(path)
        except Exception as exc:  # a plot is a nicety: never lose the search's results over one
            done[name] = f"skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    record_written_plots(plots_dir, [p for p in done.values() if p.endswith(".png")])  # what `mercl report` shows
    return done


# ----------------------------------------------------------------------------- summary.md


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)




def _scores(crossval, folds: list[int] | None = None) -> dict[str, pd.DataFrame]:
    """{method: its rows of the outer results} for mercl and both baselines (optionally some folds only)."""
    res = crossval.results
    if folds is not None:
        res = res[res["fold"].isin(folds)]
    return {m: res[res["method"] == m] for m in ("mercl", *TRIVIAL_BASELINES) if m in set(res["method"])}


def headline_text(crossval, *, nested: bool, test_fold: int, n_folds: int) -> str:
    """One line: accuracy on data no part of the search saw, beside both baselines, with the protocol."""
    if nested:
        parts = _scores(crossval)
        scored = sorted(set(crossval.results["fold"]))
        missing = [f for f in range(n_folds) if f not in scored]
        over = f"{len(scored)} of {n_folds} outer folds (no finished trial in the search of fold " \
               f"{', '.join(map(str, missing))})" if missing else f"{n_folds} outer folds"
        where = f"nested search, mean ± std over {over}, each scored by a search that never saw it"
        cells = [f"{m} {p['accuracy'].mean():.3f} ± {p['accuracy'].std(ddof=0):.3f}" for m, p in parts.items()]
    else:
        parts = _scores(crossval, [test_fold])
        where = f"held-out test fold {test_fold} of {n_folds}, never seen by the search"
        cells = [f"{m} {p['accuracy'].iloc[0]:.3f}" for m, p in parts.items() if len(p)]
    return f"{', '.join(cells)} [{crossval.protocol}; {where}]"


@dataclass
class SearchSummary:
    """What summary.md says about one finished search; :meth:`markdown` writes it, leading with
    the scores no part of the search saw."""

    name: str
    exp_dir: Path
    table: pd.DataFrame  # trials.csv
    best: pd.Series | None  # the best trial's row
    hparam_names: list[str]
    metric: str
    data_text: str
    protocol_text: str
    crossval: Any | None  # mercl.training.crossval.CrossValResult of the outer scores
    test_fold: int
    plots: dict[str, str]
    study_trials: int | None  # trials in the searcher's Optuna study (studies, nested)
    tensorboard_cmd: str
    nested: bool = False
    fold_bests: dict[int, pd.Series] | None = None
    n_folds: int = 0
    model_file: str | None = None
    final_text: str = ""

    def markdown(self) -> str:
        lines = [f"# Hyperparameter search `{self.name}`", ""]
        lines += self._headline() + self._search()
        lines += self._per_fold() if self.nested and self.fold_bests else self._best() + self._outer_cv()
        lines += self._trials() + self._plots()
        lines += ["", "## TensorBoard", "", f"    {self.tensorboard_cmd}", ""]
        return "\n".join(lines)

    def _headline(self) -> list[str]:
        crossval, nested = self.crossval, self.nested
        lines = ["## Headline: accuracy on data no part of the search saw", ""]
        if crossval is None:
            return lines + ["Not measured (crossval.enabled is false, or no trial finished)."]
        text = headline_text(crossval, nested=nested, test_fold=self.test_fold, n_folds=self.n_folds)
        lines += [f"**{text}**", "", "| method | protocol | accuracy | macro-F1 | folds |", "|---|---|---|---|---|"]
        for method, part in _scores(crossval, None if nested else [self.test_fold]).items():
            acc, f1 = part["accuracy"], part["macro_f1"]
            cells = (f"{acc.mean():.3f} ± {acc.std(ddof=0):.3f}", f"{f1.mean():.3f} ± {f1.std(ddof=0):.3f}") \
                if nested else (f"{acc.iloc[0]:.3f}", f"{f1.iloc[0]:.3f}")
            lines.append(f"| {method} | {crossval.protocol} | {cells[0]} | {cells[1]} | "
                         f"{', '.join(str(int(f)) for f in part['fold'])} |")
        lines += ["", "`majority`: the training side's most frequent class; `clip-majority`: the test clip's "
                  "usual label among other viewers in training (clip memory with no signal; equals `majority` "
                  "when test clips are held out)."]
        if crossval.leaky:
            lines += ["", "> **LEAKY PROTOCOL**: segment-level folds put overlapping windows of one trial on "
                      "both sides of the split."]
        return lines

    def _search(self) -> list[str]:
        table, metric = self.table, self.metric
        counts = table["status"].value_counts().to_dict() if len(table) else {}
        unfinished = counts.get(STATUS_UNFINISHED, 0)
        lines = ["", "## Search", "", f"- data: {self.data_text}",
                 f"- trials: {len(table)}: {counts.get(STATUS_COMPLETED, 0)} completed, "
                 f"**{counts.get(STATUS_STOPPED, 0)} stopped early by ASHA**, {counts.get(STATUS_ERROR, 0)} failed"
                 + (f", {unfinished} unfinished" if unfinished else "")
                 + (f", {counts[STATUS_BUDGET]} stopped by the time budget" if counts.get(STATUS_BUDGET) else "")]
        if self.study_trials is not None:
            held = "studies held by the per-fold searchers" if self.nested else "study held by the searcher"
            lines.append(f"- Optuna (TPE) {held}: {self.study_trials} trials")
        lines.append(f"- selection: {metric} on an inner validation split of the training side, held out the way "
                     f"the protocol ({self.protocol_text}) holds out; a fold's test rows never reached its search")
        if self.model_file:
            lines.append(f"- final model: `{self.model_file}` ({self.final_text}); `mercl info {self.model_file}`")
        return lines

    def _per_fold(self) -> list[str]:
        metric = self.metric
        lines = ["", "## Per fold: the best configuration its search found, scored on the fold's test rows", ""]
        shown = [h for h in self.hparam_names if h != "fold"]
        lines += ["| fold | best trial | inner-val " + metric + " | test accuracy | majority | clip-majority | "
                  + " | ".join(md_cell(h) for h in shown) + " |", "|" + "---|" * (6 + len(shown))]
        res = self.crossval.results if self.crossval is not None else \
            pd.DataFrame(columns=["method", "fold", "accuracy"])
        for fold, row in sorted(self.fold_bests.items()):
            acc = {m: res[(res["method"] == m) & (res["fold"] == fold)]["accuracy"] for m in ("mercl", *TRIVIAL_BASELINES)}
            cells = [f"{a.iloc[0]:.3f}" if len(a) else "-" for a in acc.values()]
            lines.append(f"| {fold} | `{row['trial_id']}` | {row[f'best_finetune_{metric}']:.4f} | "
                         + " | ".join(cells) + " | " + " | ".join(md_cell(_fmt_value(plain(row[h]))) for h in shown)
                         + " |")
        return lines + ["", "Per-fold training configs: `fold<k>/best_config.yaml`; outer scores: `crossval/`."]

    def _best(self) -> list[str]:
        best, metric = self.best, self.metric
        lines = ["", "## Best trial", ""]
        if best is None:
            return lines + ["No trial reported a validation metric."]
        lines.append(f"Trial `{best['trial_id']}` ({best['status']}): best fine-tuning {metric} "
                     f"**{best[f'best_finetune_{metric}']:.4f}** on the inner validation split, "
                     f"{int(best['epochs_run'])} epochs. Its training config: `best_config.yaml`.")
        lines += ["", "| hyperparameter | value |", "|---|---|"]
        return lines + [md_row([h, _fmt_value(plain(best[h]))]) for h in self.hparam_names if h in best]

    def _outer_cv(self) -> list[str]:
        test_fold = self.test_fold
        lines = ["", f"## Outer cross-validation of the best config ({self.protocol_text})", ""]
        if self.crossval is None:
            return lines + ["Not run (crossval.enabled is false, or no best trial)."]
        res = self.crossval.results
        lines += ["| method | protocol | accuracy over all folds (mean ± std) | macro-F1 | "
                  f"accuracy on fold {test_fold} (held out from the search) |", "|---|---|---|---|---|"]
        for method in [m for m in ("mercl", *TRIVIAL_BASELINES) if m in set(res["method"])]:
            part = res[res["method"] == method]
            held = part[part["fold"] == test_fold]["accuracy"]
            held_text = f"{held.iloc[0]:.3f}" if len(held) else "-"
            lines.append(f"| {method} | {self.crossval.protocol} | {part['accuracy'].mean():.3f} ± "
                         f"{part['accuracy'].std(ddof=0):.3f} | {part['macro_f1'].mean():.3f} | {held_text} |")
        return lines + ["", f"Only fold {test_fold} is a clean test of the search (the headline); the other folds' "
                        "test rows were part of the search's training data, so the mean over all folds can be "
                        "optimistic (`nested: true` scores every fold cleanly). Details: `crossval/summary.md`, "
                        "`crossval/results.csv`."]

    def _trials(self) -> list[str]:
        table, metric = self.table, self.metric
        lines = ["", "## Trials", "", "`trials.csv` / `trials.parquet`: every hyperparameter, best and last "
                 f"{metric}, epochs run and status per trial.", ""]
        show = ["trial_id", "status", *self.hparam_names, f"best_{metric}", f"last_{metric}", "epochs_run"]
        show = list(dict.fromkeys(c for c in show if c in table.columns))
        lines += [md_row(show), "|" + "---|" * len(show)]
        return lines + [md_row([_fmt_value(plain(row[c])) for c in show]) for _, row in table.iterrows()]

    def _plots(self) -> list[str]:
        lines = ["", "## Plots", ""]
        for plot_name, where in self.plots.items():
            lines.append(f"- {plot_name}: " + (f"![{plot_name}]({Path(where).relative_to(self.exp_dir)})"
                                               if where.endswith(".png") else where))
        return lines
