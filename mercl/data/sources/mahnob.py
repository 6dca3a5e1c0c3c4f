"""MAHNOB-HCI (Soleymani et al. 2012), the emotion-elicitation sessions as released.

Layout: ``RAW/Sessions/<sessionId>/session.xml`` + ``Part_<subject>_<N|S>_Trial<k>_emotion.bdf``
(``RAW`` may also be the ``Sessions`` folder). A session folder without an ``*_emotion.bdf``
(the implicit-tagging sessions) is not read.

* ``session.xml``: root ``<session>`` with attributes ``feltVlnc``, ``feltArsl`` (1-9),
  ``mediaFile`` (the clip shown), ``isStim``, ...; child ``<subject id=".."/>``. Sessions
  without felt ratings are skipped and counted in one console line.
* The BDF: 47 channels at 256 Hz, the first 32 EEG (BioSemi-32 names as in the file, volts as
  MNE reads them), then EXG1-8, GSR, Erg, Resp, Temp and ``Status``.
* ``Status`` marks the clip: its first rising edge (low 16 bits, as BioSemi codes triggers) is
  the clip's start and the next rising edge its end, as torcheeg and LibEER read them with
  ``mne.find_events``; a Status holding one long pulse instead ends at that pulse's falling
  edge. No fixed 30 s offset is assumed. The seconds before the start are the baseline:
  never part of the trial, subtracted as a per-channel mean under ``--baseline correct``.
  Only the trial window (and the baseline when it is used) is read from the file.

The stimulus id is ``mediaFile`` without its extension (``69.avi`` -> ``69``), so
``--stimuli DIR`` finds the release's own clip files ``DIR/69.avi``. Trials of a subject are
numbered by session id order. ``valence2``/``arousal2`` split the felt ratings at 5, a rating
equal to 5 is low (DEAP's rule here).
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import mne
import numpy as np

from mercl.data.sources import SourceOptions
from mercl.data.sources._baseline import handle_baseline
from mercl.data.sources._common import (
    check_finite,
    check_ratings,
    expect_dir,
    expect_file,
    pick_indices,
    resample,
    short_reason,
)
from mercl.data.sources.manifest import open_recording
from mercl.data.trial import Trial
from mercl.errors import InputFileError

log = logging.getLogger(__name__)

SFREQ = 256.0
N_EEG = 32
SUBFOLDER = "Sessions"
SESSION_FILE = "session.xml"
BDF_GLOB = "*_emotion.bdf"
STATUS = "Status"
TRIGGER_MASK = 0xFFFF  # BioSemi: trigger codes in bits 0-15, system codes above
LONG_PULSE_S = 1.0  # a single Status pulse at least this long spans the clip
FELT = {"valence": "feltVlnc", "arousal": "feltArsl"}


@dataclass
class Session:
    """One rated emotion session: its folder, BDF, clip and felt ratings."""

    trial: int
    folder: Path
    bdf: Path
    stimulus: str
    ratings: dict[str, float]


@dataclass
class SessionXml:
    """What ``session.xml`` says: subject id, clip id and felt ratings (empty if not rated)."""

    subject: str
    stimulus: str | None
    ratings: dict[str, float] = field(default_factory=dict)


def read_session_xml(path: Path) -> SessionXml:
    """Parse and check one ``session.xml``."""
    try:
        root = ET.parse(path).getroot()
    except Exception as exc:  # ParseError, an unknown declared encoding (LookupError), OSError, ...
        raise InputFileError(path, f"not a readable XML session file ({short_reason(exc)})") from None
    if root.tag != "session":
        raise InputFileError(path, f"root element is <{root.tag}>, expected <session>")
    subject = root.find("subject")
    if subject is None or not (subject.get("id") or "").strip():
        raise InputFileError(path, 'no <subject id=".."/> element')
    present = [k for k in FELT.values() if (root.get(k) or "").strip()]
    if not present:
        return SessionXml(subject.get("id").strip(), None)
    if len(present) < len(FELT):
        raise InputFileError(path, f"has {present[0]} but not {', '.join(k for k in FELT.values() if k not in present)}")
    ratings = {}
    for rating, key in FELT.items():
        try:
            ratings[rating] = float(root.get(key))
        except ValueError:
            raise InputFileError(path, f"{key}={root.get(key)!r} is not a number") from None
    check_ratings(ratings, path, "felt ratings")
    media = (root.get("mediaFile") or "").strip()
    if not media:
        raise InputFileError(path, "a rated session without a mediaFile (the clip id)")
    return SessionXml(subject.get("id").strip(), clip_id(media), ratings)


def clip_id(media_file: str) -> str:
    """``mediaFile`` without folders and extension: ``69.avi`` -> ``69``."""
    name = re.split(r"[\\/]", media_file)[-1]
    return name.rsplit(".", 1)[0] if "." in name[1:] else name


def clip_span(raw: mne.io.BaseRaw, path: Path) -> tuple[int, int]:
    """``[start, stop)`` samples of the clip from the Status channel's rising edges."""
    if STATUS not in raw.ch_names:
        raise InputFileError(path, f"no '{STATUS}' channel: the clip's start and end cannot be found")
    kwargs = dict(stim_channel=STATUS, shortest_event=1, mask=TRIGGER_MASK, mask_type="and", verbose="error")
    try:
        onsets = mne.find_events(raw, output="onset", **kwargs)[:, 0]
        offsets = mne.find_events(raw, output="offset", **kwargs)[:, 0]
    except Exception as exc:  # damaged samples fail inside MNE's reader
        raise InputFileError(path, f"cannot read the Status channel ({short_reason(exc)})") from None
    if len(onsets) >= 2:
        return int(onsets[0]), int(onsets[1])
    if len(onsets) == 1:
        stop = int(offsets[0]) + 1
        if stop - onsets[0] >= LONG_PULSE_S * raw.info["sfreq"]:
            return int(onsets[0]), stop
        raise InputFileError(path, f"one short Status marker (sample {onsets[0]}), the clip needs a start and an end")
    raise InputFileError(path, "no Status markers: the clip's start and end cannot be found")


def read_session_eeg(bdf: Path, options: SourceOptions) -> tuple[np.ndarray, list[str]]:
    """The clip's EEG (C, S) in volts, baseline handled, and the picked channels' names."""
    raw = open_recording(bdf)
    sfreq = float(raw.info["sfreq"])
    if sfreq != SFREQ:
        raise InputFileError(bdf, f"sampled at {sfreq:g} Hz, MAHNOB-HCI's BDF files are {SFREQ:g} Hz")
    if len(raw.ch_names) <= N_EEG or STATUS in raw.ch_names[:N_EEG]:
        raise InputFileError(bdf, f"{len(raw.ch_names)} channels ({', '.join(raw.ch_names[:4])}, ...): MAHNOB's "
                                  f"BDF has 32 EEG channels first, then others and '{STATUS}'")
    eeg_names = list(raw.ch_names[:N_EEG])
    picks = pick_indices(eeg_names, options, bdf)
    start, stop = clip_span(raw, bdf)
    try:
        eeg = raw.get_data(picks=picks, start=start, stop=stop)
        baseline = raw.get_data(picks=picks, start=0, stop=start) if options.baseline == "correct" else None
    except Exception as exc:
        raise InputFileError(bdf, f"cannot read its samples ({short_reason(exc)})") from None
    check_finite(eeg, bdf, "clip")
    eeg = handle_baseline(eeg, baseline, options.baseline, bdf, "clip")
    return eeg.astype(np.float64, copy=False), [eeg_names[i] for i in picks]


@dataclass
class MahnobSubject:
    """One subject's rated emotion sessions; ``load()`` reads the clip window of each BDF.
    ``files``: every session.xml and BDF it reads (what a rebuilt shard depends on)."""

    subject: str
    rated: list[Session]
    files: list[Path]
    options: SourceOptions

    @property
    def name(self) -> str:
        return self.subject

    def load(self) -> list[Trial]:
        trials = []
        for s in self.rated:
            eeg, names = read_session_eeg(s.bdf, self.options)
            eeg, sfreq = resample(eeg, SFREQ, self.options.resample)
            trials.append(Trial(
                subject=self.subject, trial=s.trial, stimulus=s.stimulus, eeg=eeg, sfreq=sfreq, ch_names=names,
                ratings=dict(s.ratings), label=None, lag=self.options.lag, source_file=s.bdf,
            ))  # fmt: skip
        return trials


def _session_order(folder: Path) -> tuple[int, int | str]:
    return (0, int(folder.name)) if folder.name.isdigit() else (1, folder.name)


def emotion_sessions(sessions_dir: Path) -> tuple[dict[str, list[tuple[Path, Path, SessionXml]]], int]:
    """``{subject: [(folder, bdf, xml), ...]}`` in session id order, and how many session
    folders hold no ``*_emotion.bdf``."""
    by_subject: dict[str, list] = {}
    without_bdf = 0
    for folder in sorted((p for p in sessions_dir.iterdir() if (p / SESSION_FILE).exists()), key=_session_order):
        bdfs = sorted(folder.glob(BDF_GLOB))
        if not bdfs:
            without_bdf += 1
            continue
        if len(bdfs) > 1:
            raise InputFileError(folder, f"{len(bdfs)} files {BDF_GLOB}, a session has one")
        expect_file(bdfs[0], "a MAHNOB-HCI BDF recording")
        expect_file(folder / SESSION_FILE, "a MAHNOB-HCI session.xml")
        info = read_session_xml(folder / SESSION_FILE)
        by_subject.setdefault(info.subject, []).append((folder, bdfs[0], info))
    return by_subject, without_bdf


def discover(raw: Path, options: SourceOptions) -> list[MahnobSubject]:
    """One unit per subject id; unrated sessions are skipped and counted in one line."""
    raw = Path(raw)
    expect_dir(raw, f"MAHNOB-HCI's {SUBFOLDER} folder (or the folder holding it)")
    sessions_dir = raw / SUBFOLDER if (raw / SUBFOLDER).is_dir() else raw
    by_subject, without_bdf = emotion_sessions(sessions_dir)
    if not by_subject:
        raise InputFileError(raw, f"no MAHNOB-HCI sessions (<id>/{SESSION_FILE} with a {BDF_GLOB}) here or in "
                                  f"{SUBFOLDER}/")
    units, unrated, total = [], 0, 0
    for subject in sorted(by_subject, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s)):
        sessions, shown = [], {}
        for trial, (folder, bdf, info) in enumerate(by_subject[subject]):
            total += 1
            if info.stimulus is None:
                unrated += 1
                continue
            if info.stimulus in shown:
                raise InputFileError(folder / SESSION_FILE, f"subject {subject} sees clip '{info.stimulus}' again "
                                                            f"(also in session {shown[info.stimulus]})")
            shown[info.stimulus] = folder.name
            sessions.append(Session(trial, folder, bdf, info.stimulus, info.ratings))
        if sessions:
            files = [p for s in sessions for p in (s.folder / SESSION_FILE, s.bdf)]
            units.append(MahnobSubject(subject=subject, rated=sessions, files=files, options=options))
    if unrated or without_bdf:
        extra = f"; {without_bdf} session folders without an {BDF_GLOB} not read" if without_bdf else ""
        log.warning("%d of %d emotion sessions have no felt ratings and are skipped%s", unrated, total, extra)
    if not units:
        raise InputFileError(raw, "no MAHNOB-HCI session has felt ratings (feltVlnc, feltArsl)")
    return units


def recording_facts(unit: MahnobSubject) -> tuple[Path, float | None, list[str] | None]:
    """(first BDF, EEG rate, its 32 EEG channel names) from the header, for ``mercl predict``'s checks."""
    bdf = unit.rated[0].bdf
    raw = open_recording(bdf)
    return bdf, float(raw.info["sfreq"]), list(raw.ch_names[:N_EEG])
