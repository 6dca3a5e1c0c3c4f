"""What the search prints while it runs, besides Tune's progress table.

:class:`StopLine`: a trial that ASHA stopped is one console line (the trial, its epoch, its
metric), the normal end of most trials.
"""

from __future__ import annotations

from collections.abc import Callable

from ray.tune import Callback


class StopLine(Callback):
    """Prints ``trial <id> stopped by ASHA at epoch <e>: <metric> <value>`` when a trial ASHA
    stopped ends (``stopped(trial_id)``: the epoch ASHA stopped it at, or None)."""

    def __init__(self, stopped: Callable[[str], int | None], metric: str, say: Callable[[str], None] | None = None):
        # a built-in (print) is not kept: Tune pickles its callbacks into tuner.pkl, and Ray
        # replaces builtins.print in a driver, after which the original no longer pickles
        self.stopped, self.metric = stopped, metric
        self.say = None if is_print(say) else say

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        epoch = self.stopped(trial.trial_id)
        if epoch is None:
            return
        value = (trial.last_result or {}).get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        (self.say or print)(f"trial {trial.trial_id} stopped by ASHA at epoch {epoch}: {self.metric} {shown}")


def is_print(say) -> bool:
    """``say`` is Python's print (the original or the one Ray put in its place)."""
    return getattr(say, "__name__", None) == "print" and getattr(say, "__module__", None) in ("builtins", None)
