"""DREAMER (Katsigiannis & Ramzan 2018), the released ``DREAMER.mat``.

Layout: ``RAW/DREAMER.mat`` (``RAW`` may also be the file), one MATLAB v5 struct ``DREAMER``:

* ``EEG_SamplingRate`` 128, ``EEG_Electrodes`` the 14 Emotiv channel names
  (:data:`DREAMER_CHANNELS` where the field is absent);
* ``Data``: one struct per subject (23) with ``EEG.stimuli`` and ``EEG.baseline``, each a
  cell of 18 (samples, 14) arrays in microvolts (the baseline is 61 s recorded before each
  clip), and ``ScoreValence``, ``ScoreArousal``, ``ScoreDominance`` (18 integers, 1-5).

Clip ``k`` (row ``k`` of every subject's cells) is film clip ``k + 1`` for all subjects: the
stimulus id is that number zero-padded (``"01"`` .. ``"18"``), so ``--stimuli DIR`` looks for
``DIR/01.mp4`` and so on. The baseline is never part of the trial; ``--baseline correct``
subtracts its per-channel mean.

Ratings: the 1-5 scores are mapped linearly onto the platform's 1-9 scale, ``r9 = 2 * r5 - 1``
(1, 2, 3, 4, 5 -> 1, 3, 5, 7, 9), so the scale's middle 3 lands on the binary threshold 5 and
``valence2``/``arousal2``/``dominance2`` follow DEAP's rule here: a rating equal to the
threshold is low (score 3 -> low, 4 and 5 -> high).

The whole file is one load unit (``loadmat`` cannot read one subject of a struct alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mercl.data.sources import SourceOptions
from mercl.data.sources._baseline import handle_baseline
from mercl.data.sources._common import expect_file, pick_indices, resample
from mercl.data.sources._matlab import cells, load_mat, numbers, require_keys, samples_by_channels, text
from mercl.data.trial import Trial
from mercl.errors import InputFileError

SFREQ = 128.0
N_CLIPS = 18
FILE_NAME = "DREAMER.mat"
MICROVOLT = 1e-6
SCORE_RANGE = (1.0, 5.0)
SCORE_FIELDS = {"valence": "ScoreValence", "arousal": "ScoreArousal", "dominance": "ScoreDominance"}
DREAMER_CHANNELS = "AF3 F7 F3 FC5 T7 P7 O1 O2 P8 T8 FC6 F4 F8 AF4".split()


def score_to_nine(score: np.ndarray) -> np.ndarray:
    """DREAMER's 1-5 scores on the 1-9 scale (``2 * s - 1``: the middle 3 becomes 5)."""
    return 2.0 * np.asarray(score, dtype=np.float64) - 1.0


def read_header(path: Path) -> tuple[dict, list[str]]:
    """The ``DREAMER`` struct of ``path`` (checked: rate, electrodes, subjects) and its EEG channel names."""
    content = load_mat(path, "DREAMER's DREAMER.mat")
    require_keys(content, ("DREAMER",), path, "the file")
    dreamer = content["DREAMER"]
    require_keys(dreamer, ("Data", "EEG_SamplingRate"), path, "DREAMER")
    rate = numbers(dreamer["EEG_SamplingRate"], 1, path, "DREAMER.EEG_SamplingRate")[0]
    if rate != SFREQ:
        raise InputFileError(path, f"DREAMER.EEG_SamplingRate is {rate:g} Hz, DREAMER's EEG is {SFREQ:g} Hz")
    names = list(DREAMER_CHANNELS)
    if "EEG_Electrodes" in dreamer:
        names = [text(v, path, "DREAMER.EEG_Electrodes") for v in cells(dreamer["EEG_Electrodes"], path,
                                                                         "DREAMER.EEG_Electrodes")]
        if len(names) != len(DREAMER_CHANNELS) or len(set(names)) != len(names):
            raise InputFileError(path, f"DREAMER.EEG_Electrodes must name {len(DREAMER_CHANNELS)} distinct "
                                       f"channels, got {names[:20]}")
    if not cells(dreamer["Data"], path, "DREAMER.Data"):
        raise InputFileError(path, "DREAMER.Data holds no subjects")
    return dreamer, names


def subject_clips(subject, path: Path, where: str, n_channels: int) -> tuple[list, list, dict[str, np.ndarray]]:
    """One subject's 18 stimulus and 18 baseline arrays (samples, 14) and its scores on 1-9."""
    require_keys(subject, ("EEG", *SCORE_FIELDS.values()), path, where)
    require_keys(subject["EEG"], ("stimuli", "baseline"), path, f"{where}.EEG")
    clips = {part: cells(subject["EEG"][part], path, f"{where}.EEG.{part}") for part in ("stimuli", "baseline")}
    for part, items in clips.items():
        if len(items) != N_CLIPS:
            raise InputFileError(path, f"{where}.EEG.{part} holds {len(items)} clips, DREAMER has {N_CLIPS}")
    scores = {}
    for rating, field in SCORE_FIELDS.items():
        score = numbers(subject[field], N_CLIPS, path, f"{where}.{field}")
        low, high = SCORE_RANGE
        bad = (score < low) | (score > high)
        if bad.any():
            raise InputFileError(path, f"{where}.{field}: score {score[bad][0]:g} (clip {np.argmax(bad) + 1}) is "
                                       f"outside {low:g}-{high:g}")
        scores[rating] = score_to_nine(score)
    return clips["stimuli"], clips["baseline"], scores


@dataclass
class DreamerFile:
    """The ``DREAMER.mat`` file; ``load()`` yields every subject's 18 trials."""

    path: Path
    options: SourceOptions

    @property
    def name(self) -> str:
        return "DREAMER"

    def load(self) -> list[Trial]:
        dreamer, all_names = read_header(self.path)
        picks = pick_indices(all_names, self.options, self.path)
        names = [all_names[i] for i in picks]
        trials = []
        for s, subject in enumerate(cells(dreamer["Data"], self.path, "DREAMER.Data")):
            subject_id = f"{s + 1:02d}"
            where = f"subject {subject_id}"
            stimuli, baselines, scores = subject_clips(subject, self.path, where, len(all_names))
            for k in range(N_CLIPS):
                clip = f"{where} clip {k + 1}"
                eeg = samples_by_channels(stimuli[k], len(all_names), self.path, f"{clip} stimuli")
                base = samples_by_channels(baselines[k], len(all_names), self.path, f"{clip} baseline")
                eeg = eeg[:, picks].T * MICROVOLT
                eeg = handle_baseline(eeg, base[:, picks].T * MICROVOLT, self.options.baseline, self.path, clip)
                eeg, sfreq = resample(np.ascontiguousarray(eeg), SFREQ, self.options.resample)
                trials.append(Trial(
                    subject=subject_id, trial=k, stimulus=f"{k + 1:02d}", eeg=eeg, sfreq=sfreq, ch_names=names,
                    ratings={r: float(v[k]) for r, v in scores.items()}, label=None, lag=self.options.lag,
                    source_file=self.path,
                ))  # fmt: skip
        return trials


def discover(raw: Path, options: SourceOptions) -> list[DreamerFile]:
    """One unit: ``RAW/DREAMER.mat`` or RAW itself when it is a file."""
    raw = Path(raw)
    if not raw.exists():
        raise InputFileError(raw, "no such file or directory")
    path = raw if raw.is_file() else raw / FILE_NAME
    if not path.exists():
        raise InputFileError(raw, f"no {FILE_NAME} here")
    expect_file(path, "DREAMER's DREAMER.mat")
    return [DreamerFile(path=path, options=options)]


def recording_facts(unit: DreamerFile) -> tuple[Path, float, list[str]]:
    """(file, EEG rate, channel names) as fixed by the release, for ``mercl predict``'s checks."""
    return unit.path, SFREQ, list(DREAMER_CHANNELS)
