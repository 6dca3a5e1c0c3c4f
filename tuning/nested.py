"""Which outer folds a search searches: one (the plain search) or every one (nested), in one Tune run.

The search driver (:mod:`tuning.search`) asks :func:`searched_folds` for the object that
decides everything that differs between the two: :class:`OneFold` (``data.test_fold`` held
out, one Optuna study) and :class:`EveryFold` (nested). Each gives the trainable and what it is
run with, the searcher, each fold's best trial, the configurations the outer folds are scored
with and the words the console and summary use; no flag is threaded through the driver.

``data.nested: true`` searches every outer fold k on its own: fold k's trials train and
validate on an inner split of fold k's training side and never see its test rows; each fold
has its own Optuna study (TPE, same seed) and its own ASHA rungs
(:func:`tuning.asha.recording_asha` keeps rungs per fold). Afterwards each fold's best
configuration is trained on that fold's training side and scored on its test rows: k scores
that no search saw.

Why one Tune run with a per-fold searcher rather than k concurrent Tuners: the folds share
one concurrency limit (``resources.max_concurrent_trials``), so trials of different folds
fill the cluster as one queue; one experiment state and one ``Tuner.restore`` bring every
fold back with its finished trials and its Optuna study after an interruption (k Tuners
would need k driver threads or tasks, each with its own controller, restore and
progress table); and one trial table, TensorBoard folder and progress table show them all.

* :class:`FoldSearcher`: k searchers behind Tune's Searcher interface; suggestions go to the
  fold with the fewest trials so far (round robin), each config carries its ``fold``;
  results go back to the fold's own searcher. Saved and restored with Tune's searcher state.
* :func:`run_fold_trial`: the trainable; runs :func:`tuning.trial_driver.run_trial` with the
  fold's data (its own Ray Datasets and normalisation).
* :func:`fold_trial_name`: trial names (and folder names) start with the fold.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray.tune.search import Searcher

FOLD_KEY = "fold"


class FoldSearcher(Searcher):
    """One searcher per outer fold, ``per_fold`` trials each, behind one Searcher interface."""

    def __init__(self, searchers: dict[int, Searcher], per_fold: int, metric: str | None = None,
                 mode: str | None = None):
        super().__init__(metric=metric, mode=mode)
        self.searchers = dict(searchers)
        self.per_fold = per_fold
        self.fold_of: dict[str, int] = {}
        self.suggested = {fold: 0 for fold in self.searchers}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        results = [s.set_search_properties(metric, mode, config, **spec) for s in self.searchers.values()]
        return all(results)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        open_folds = [f for f, n in self.suggested.items() if n < self.per_fold]
        if not open_folds:
            return Searcher.FINISHED
        fold = min(open_folds, key=lambda f: (self.suggested[f], f))
        config = self.searchers[fold].suggest(trial_id)
        if config is None:
            return None
        if config == Searcher.FINISHED:  # the fold's searcher has nothing more to offer
            self.suggested[fold] = self.per_fold
            return self.suggest(trial_id)
        self.suggested[fold] += 1
        self.fold_of[trial_id] = fold
        return {**config, FOLD_KEY: fold}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.fold_of:
            self.searchers[self.fold_of[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.fold_of:
            self.searchers[self.fold_of[trial_id]].on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        state = {"per_fold": self.per_fold, "fold_of": self.fold_of, "suggested": self.suggested,
                 "searchers": {fold: s.__dict__.copy() for fold, s in self.searchers.items()}}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.per_fold = state["per_fold"]
        self.fold_of = dict(state["fold_of"])
        self.suggested = dict(state["suggested"])
        for fold, saved in state["searchers"].items():
            self.searchers[fold].__dict__.update(saved)


def studies_in_state(state: Any) -> dict[int | None, Any]:
    """{fold: Optuna study} in a saved searcher state ({None: study} for a plain OptunaSearch)."""
    if isinstance(state, dict) and "searchers" in state:
        return {fold: s["_ot_study"] for fold, s in state["searchers"].items() if "_ot_study" in s}
    if isinstance(state, dict) and "_ot_study" in state:
        return {None: state["_ot_study"]}
    return {}


def run_fold_trial(config: dict[str, Any], setup: dict[int, Any]) -> None:
    """Tune function trainable: the trial of fold ``config["fold"]`` with that fold's TrialSetup."""
    from tuning.trial_driver import run_trial

    run_trial(config, setup[int(config[FOLD_KEY])])


def fold_trial_name(trial) -> str:
    """``fold1_run_trial_<id>``: the fold first (progress table, folders, pid files)."""
    return f"fold{trial.config.get(FOLD_KEY)}_run_trial_{trial.trial_id}"


# ----------------------------------------------------------------------------- plain or nested


@dataclass(frozen=True)
class OneFold:
    """The plain search: one searcher over ``data.test_fold``'s training side."""

    test_fold: int
    nested = False

    def trainable(self) -> Callable[..., None]:
        from tuning.trial_driver import run_trial

        return run_trial

    def trial_setup(self, setups: dict[int, Any]) -> Any:
        return setups[self.test_fold]

    def searcher(self, make_searcher: Callable[[], Searcher], num_samples: int, folds: list[int], metric: str,
                 mode: str) -> tuple[Searcher, int, Callable | None]:
        """(searcher, Tune's num_samples, trial name creator or None)."""
        return make_searcher(), num_samples, None

    def folds_text(self, n_searched: int) -> str:
        return ""

    def fold_bests(self, table, folds, best_trial: Callable) -> dict[int, Any]:
        return {}

    def outer_configs(self, best_config: dict, fold_configs: dict[int, dict], n_folds: int) -> dict[int, dict]:
        """{fold: TrainConfig dict} the outer folds are scored with: the best config on every fold."""
        return {fold: best_config for fold in range(n_folds)}

    def scores_outer(self, fold_bests: dict) -> bool:
        return True

    def best_text(self, trial_id: str) -> str:
        return f"trial {trial_id}"


@dataclass(frozen=True)
class EveryFold:
    """The nested search: one searcher per outer fold (:class:`FoldSearcher`), each fold's trials
    run with that fold's data (:func:`run_fold_trial`)."""

    nested = True

    def trainable(self) -> Callable[..., None]:
        return run_fold_trial

    def trial_setup(self, setups: dict[int, Any]) -> Any:
        return setups

    def searcher(self, make_searcher: Callable[[], Searcher], num_samples: int, folds: list[int], metric: str,
                 mode: str) -> tuple[Searcher, int, Callable | None]:
        """One Optuna study per fold (same seed), ``num_samples`` trials each, one concurrency limit for all."""
        searcher = FoldSearcher({fold: make_searcher() for fold in folds}, per_fold=num_samples,
                                metric=metric, mode=mode)
        return searcher, num_samples * len(folds), fold_trial_name

    def folds_text(self, n_searched: int) -> str:
        return f"{n_searched} outer folds x "

    def fold_bests(self, table, folds, best_trial: Callable) -> dict[int, Any]:
        """{fold: the best row among that fold's trials}."""
        found = {fold: best_trial(table[table[FOLD_KEY] == fold]) for fold in folds} if len(table) else {}
        return {fold: row for fold, row in found.items() if row is not None}

    def outer_configs(self, best_config: dict, fold_configs: dict[int, dict], n_folds: int) -> dict[int, dict]:
        """Each fold scored with its own search's best config."""
        return dict(fold_configs)

    def scores_outer(self, fold_bests: dict) -> bool:
        return bool(fold_bests)

    def best_text(self, trial_id: str) -> str:
        return f"trial {trial_id}, the best inner-validation score of all folds' searches"


def searched_folds(nested: bool, test_fold: int) -> OneFold | EveryFold:
    """The search's folds object from its config (``data.nested``, ``data.test_fold``)."""
    return EveryFold() if nested else OneFold(test_fold)
