"""Tune's ASHA that remembers: it records which trials it stopped early and keeps its rungs in
``asha/state.json`` (:func:`tuning.results.asha_state_path`), so a restored search compares
resumed trials with the ones that ran before the interruption (Tune itself does not checkpoint
scheduler state). In a nested search each fold has its own brackets and rungs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from mercl.atomic import write_text


def recording_asha(state_file: Path, **kwargs) -> RecordingASHA:
    """An ASHA scheduler (``ray.tune.schedulers.ASHAScheduler`` arguments) that records its stops."""
    return RecordingASHA(state_file=str(state_file), **kwargs)


class RecordingASHA(ASHAScheduler):
    """ASHA on ``time_attr`` that records early stops and persists its rungs (see module doc).

    A trial whose config has a ``fold`` (nested search, :mod:`tuning.nested`) is compared
    only with trials of the same fold: each fold has its own brackets and rungs.
    """

    def __init__(self, *, state_file: str, **kwargs):
        super().__init__(**kwargs)
        self._state_file = state_file
        self.stopped: dict[str, int] = {}
        self._loaded = False
        self._empty = copy.deepcopy(self._brackets)
        self._fold_brackets: dict[str, list] = {}

    def _brackets_of(self, trial) -> list:
        fold = (trial.config or {}).get("fold")
        if fold is None:
            return self._brackets
        return self._fold_brackets.setdefault(str(fold), copy.deepcopy(self._empty))

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        path = Path(self._state_file)
        if not path.is_file():
            return
        state = json.loads(path.read_text())
        self.stopped = dict(state.get("stopped", {}))
        self._restore_rungs(self._brackets, state.get("brackets", []))
        for fold, saved in state.get("fold_brackets", {}).items():
            self._fold_brackets[fold] = copy.deepcopy(self._empty)
            self._restore_rungs(self._fold_brackets[fold], saved)

    @staticmethod
    def _restore_rungs(brackets: list, saved_brackets: list) -> None:
        for bracket, rungs in zip(brackets, saved_brackets, strict=False):
            for (milestone, recorded), saved in zip(bracket._rungs, rungs, strict=False):
                if float(saved["milestone"]) == float(milestone):
                    recorded.update({k: float(v) for k, v in saved["recorded"].items()})

    @staticmethod
    def _rungs(brackets: list) -> list:
        return [[{"milestone": float(m), "recorded": {k: float(v) for k, v in rec.items()}}
                 for m, rec in bracket._rungs] for bracket in brackets]

    def _save(self) -> None:
        state = {
            "time_attr": self._time_attr,
            "max_t": self._max_t,
            "stopped": self.stopped,
            "brackets": self._rungs(self._brackets),
            "fold_brackets": {fold: self._rungs(b) for fold, b in self._fold_brackets.items()},
        }
        write_text(Path(self._state_file), json.dumps(state, indent=1))

    def on_trial_add(self, tune_controller, trial):
        self._load()
        super().on_trial_add(tune_controller, trial)
        brackets = self._brackets_of(trial)
        if brackets is not self._brackets:  # the same bracket index, in the fold's own brackets
            self._trial_info[trial.trial_id] = brackets[self._brackets.index(self._trial_info[trial.trial_id])]

    def on_trial_result(self, tune_controller, trial, result):
        self._load()
        if trial.trial_id not in self._trial_info:  # a trial restored from before an interruption
            self._trial_info[trial.trial_id] = self._brackets_of(trial)[0]
        action = super().on_trial_result(tune_controller, trial, result)
        at = result.get(self._time_attr)
        if action == TrialScheduler.STOP and at is not None and at < self._max_t:
            self.stopped[trial.trial_id] = int(at)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result):
        self._load()
        if trial.trial_id in self._trial_info:
            super().on_trial_complete(tune_controller, trial, result)
            self._save()

    def on_trial_remove(self, tune_controller, trial):
        self._trial_info.pop(trial.trial_id, None)
