"""Broken inputs as a user would hand them to ``mercl prepare``, and how each one ends.

Builds a small valid input per source (DEAP pickle, SEED ``.mat`` + ``label.mat``, an EDF
manifest with an mp4 clip, a UEA ``.ts`` file with its auxiliary JSON), then damages it in
many ways (truncations, byte flips, wrong dtypes and shapes, NaN/Inf and absurd values, odd
manifest cells, paths of the wrong kind) and runs ``mercl prepare`` on each (its default
workers, in a forked child so a crash is an outcome too), each case in its own folder. Every case ends in one of:

* ``error``: exit 2 with one ``mercl: error: ...`` line and no ``manifest.json`` (what we want
  for input that cannot make a sound dataset);
* ``accepted``: exit 0, a manifest, every feature value finite (right for damage that leaves
  valid data, e.g. a flipped bit inside the samples; wrong for cases marked ``must_refuse``);
* ``garbage``: exit 0 and a dataset holding NaN/Inf features;
* ``traceback``: an exception other than MerclError escaped (or exit 2 without one line);
* ``crash``: the process died (a library segfaulted on the damaged file);
* ``timeout``: no end within ``--timeout`` seconds.

Usage: ``.venv/bin/python bench/bad_inputs.py [--only deap,seed,...,mahnob,names] [--keep DIR]``.
Prints the counts per source and outcome, then every case that is not as it should be.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mercl.cli import main as mercl_main
from mercl.data.synth_sources import (
    SEED_V_FILE_CHANNELS,
    deap_content,
    write_cnt,
    write_huge_frame_clip,
    write_mp4,
    write_pickle,
    write_recording,
    write_seed_iv_session,
    write_seed_labels,
    write_seed_session,
)

ROOT = Path(__file__).resolve().parents[1]

SFREQ = 128.0
CHANNELS = ["Fp1", "Fz", "Cz", "Pz"]


@dataclass
class Case:
    source: str
    name: str
    build: Callable[[Path], tuple[Path, list[str]]]  # folder -> (RAW, extra CLI args)
    must_refuse: bool = True  # False: damage that may leave valid data (a flipped sample value)


# ---------------------------------------------------------------- valid inputs


def deap_dict(seconds: float = 8.0) -> dict:
    content = deap_content(0)
    content["data"] = content["data"][:, :, : 384 + int(seconds * 128)].copy()
    return content


def build_deap(folder: Path, **changes) -> Path:
    content = deap_dict()
    content.update(changes)
    write_pickle(folder / "deap" / "s01.dat", content)
    return folder / "deap"


def build_seed(folder: Path) -> Path:
    raw = folder / "seed"
    write_seed_session(raw / "1_20131027.mat", n_samples=1000)
    write_seed_labels(raw)
    return raw


def manifest_rows() -> list[dict]:
    return [
        {"subject": "s01", "trial": t, "stimulus": s, "eeg": "s01.edf", "onset": 12.0 * t, "duration": 12.0,
         "valence": 2.0 + 3 * t, "arousal": 5.0, "lag": 0.0}
        for t, s in enumerate("ABC")
    ]  # fmt: skip


_TEMPLATES: dict[str, Path] = {}


def build_manifest(folder: Path, rows: list[dict] | None = None, fmt: str = "edf", clip: bool = True) -> Path:
    """The manifest input: its recording and clip are written once and copied for every case."""
    key = f"{fmt}-{clip}"
    if key not in _TEMPLATES:
        _TEMPLATES[key] = _write_manifest(Path(tempfile.mkdtemp(prefix="bad-inputs-template-")), fmt, clip)
    raw = folder / "manifest"
    shutil.copytree(_TEMPLATES[key], raw)
    if rows is not None:
        for r in rows:
            r["eeg"] = r["eeg"] if fmt == "edf" else f"s01.{fmt}"
        pd.DataFrame(rows).to_csv(raw / "manifest.csv", index=False)
    return raw


def _write_manifest(folder: Path, fmt: str, clip: bool, rows: list[dict] | None = None) -> Path:
    raw = folder / "manifest"
    raw.mkdir(parents=True, exist_ok=True)
    n = int(36 * SFREQ)
    t = np.arange(n) / SFREQ
    rng = np.random.default_rng(0)
    eeg = 20e-6 * np.sin(2 * np.pi * (6 + 3 * np.arange(4))[:, None] * t) + 5e-6 * rng.standard_normal((4, n))
    write_recording(raw / f"s01.{fmt}", eeg, SFREQ, CHANNELS)
    rows = manifest_rows() if rows is None else rows
    if fmt != "edf":
        for r in rows:
            r["eeg"] = f"s01.{fmt}"
    pd.DataFrame(rows).to_csv(raw / "manifest.csv", index=False)
    if clip:
        write_mp4(raw / "stimuli" / "A.mp4", 12.0, audio=True)
    return raw


def build_uea(folder: Path, lines: list[str] | None = None, aux: object = None) -> Path:
    raw = folder / "uea"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if lines is None:
        lines = []
        for i in range(10):
            dims = [",".join(f"{v:.3f}" for v in 4000 + 20 * rng.standard_normal(128)) for _ in range(2)]
            lines.append(":".join(dims) + f":{i % 2}")
    header = "@problemName Toy\n@timeStamps false\n@univariate false\n@classLabel true 0 1\n@data\n"
    (raw / "Toy_TRAIN.ts").write_text(header + "\n".join(lines) + "\n")
    (raw / "auxiliary").mkdir(exist_ok=True)
    (raw / "auxiliary" / "Toy.json").write_text(json.dumps({"sfreq": 128} if aux is None else aux))
    return raw


# ---------------------------------------------------------------- damage


def truncate(path: Path, keep: float | int) -> None:
    data = path.read_bytes()
    n = keep if isinstance(keep, int) else int(len(data) * keep)
    path.write_bytes(data[: max(n, 0)] if n >= 0 else data[:n])


def flip(path: Path, seed: int, n: int = 8, region: tuple[float, float] = (0.0, 1.0)) -> None:
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    lo, hi = int(len(data) * region[0]), max(int(len(data) * region[1]), int(len(data) * region[0]) + 1)
    for pos in rng.integers(lo, hi, n):
        data[pos] ^= 1 << int(rng.integers(0, 8))
    path.write_bytes(bytes(data))


def file_cases(source: str, build: Callable[[Path], Path], target: str, extra: list[str],
               header_bytes: int) -> list[Case]:  # fmt: skip
    """Truncations and byte flips of the file ``target`` (relative to RAW)."""
    cases = []

    def damaged(fn):
        def make(folder):
            raw = build(folder)
            fn(raw / target)
            return raw, extra

        return make

    for keep in (0, 1, 16, header_bytes // 2, header_bytes, 0.25, 0.5, 0.9, -1):
        may_pass = keep == -1 and target.endswith((".mp4", ".csv", ".ts"))  # a spare last byte / final newline
        cases.append(Case(source, f"{target} truncated to {keep}", damaged(lambda p, k=keep: truncate(p, k)),
                          not may_pass))  # fmt: skip
    for seed in range(6):
        cases.append(Case(source, f"{target} header flips #{seed}",
                          damaged(lambda p, s=seed: flip(p, s, 4, (0.0, header_bytes / max(p.stat().st_size, 1)))),
                          must_refuse=False))  # fmt: skip
    for seed in range(4):
        cases.append(Case(source, f"{target} body flips #{seed}", damaged(lambda p, s=seed: flip(p, 100 + s, 16)),
                          must_refuse=False))  # fmt: skip
    cases.append(Case(source, f"{target} is a directory", damaged(lambda p: (p.unlink(), p.mkdir()))))
    cases.append(Case(source, f"{target} is text", damaged(lambda p: p.write_text("hello, not data\n"))))
    return cases


def deap_cases() -> list[Case]:
    def with_content(**changes):
        return lambda folder: (build_deap(folder, **changes), [])

    def data_with(fn):
        def make(folder):
            content = deap_dict()
            data = content["data"].astype(np.float64)
            fn(data)
            return build_deap(folder, data=data), []

        return make

    cases = file_cases("deap", build_deap, "s01.dat", [], 300)
    base = deap_dict()
    d, lab = base["data"], base["labels"]

    def setitem(index, value):
        def fn(a):
            a[index] = value

        return fn

    cases += [
        Case("deap", "1e300 in one EEG sample", data_with(setitem((3, 2, 600), 1e300))),
        Case("deap", "1e300 everywhere in a trial", data_with(setitem((5, slice(0, 32)), 1e300))),
        Case("deap", "1e200 in one sample", data_with(setitem((3, 2, 600), 1e200))),
        Case("deap", "1e30 in one sample (float32 power overflows)", data_with(setitem((3, 2, 600), 1e30))),
        Case("deap", "NaN sample", data_with(setitem((1, 0, 900), np.nan))),
        Case("deap", "Inf sample", data_with(setitem((1, 0, 900), np.inf))),
        Case("deap", "NaN in a peripheral channel only", data_with(setitem((1, 35, 900), np.nan)), False),
        Case("deap", "data int16", with_content(data=d.astype(np.int16))),
        Case("deap", "data float16", with_content(data=d.astype(np.float16)), False),
        Case("deap", "data complex", with_content(data=d.astype(np.complex64))),
        Case("deap", "data bool", with_content(data=d > 0)),
        Case("deap", "data object", with_content(data=d.astype(object))),
        Case("deap", "data strings", with_content(data=np.full((40, 40, 5), "x"))),
        Case("deap", "data as nested lists", with_content(data=d[:, :, :1500].tolist()), False),
        Case("deap", "data 2-D", with_content(data=d[0])),
        Case("deap", "data 4-D", with_content(data=d[None])),
        Case("deap", "39 trials", with_content(data=d[:39])),
        Case("deap", "31 channels", with_content(data=d[:, :31])),
        Case("deap", "baseline only", with_content(data=d[:, :, :384])),
        Case("deap", "1 s after baseline", with_content(data=d[:, :, : 384 + 128])),
        Case("deap", "empty data", with_content(data=np.zeros((40, 40, 0)))),
        Case("deap", "labels NaN", with_content(labels=np.where(np.arange(160).reshape(40, 4) == 7, np.nan, lab))),
        Case("deap", "labels 0", with_content(labels=np.zeros((40, 4)))),
        Case("deap", "labels 1e300", with_content(labels=np.full((40, 4), 1e300))),
        Case("deap", "labels (40, 3)", with_content(labels=lab[:, :3])),
        Case("deap", "labels (4, 40)", with_content(labels=lab.T.copy())),
        Case("deap", "labels strings", with_content(labels=lab.astype(str))),
        Case("deap", "labels int", with_content(labels=np.full((40, 4), 5)), False),
        Case("deap", "labels None", with_content(labels=None)),
        Case("deap", "data None", with_content(data=None)),
    ]

    def pickled(obj, protocol=2):
        def make(folder):
            write_pickle(folder / "deap" / "s01.dat", obj, protocol)
            return folder / "deap", []

        return make

    cases += [Case("deap", f"protocol {p}", pickled(deap_dict(), p), False) for p in (0, 1, 3, 4, 5)]
    cases += [
        Case("deap", "pickle of a list", pickled([1, 2, 3])),
        Case("deap", "pickle of None", pickled(None)),
        Case("deap", "dict without labels", pickled({"data": d})),
        Case("deap", "pickle of a set", pickled({1, 2})),
        Case("deap", "pickle with a function", pickled({"data": d, "labels": lab, "f": print})),
    ]

    def raw_kind(fn):
        def make(folder):
            raw = folder / "deap"
            raw.mkdir(parents=True)
            return fn(raw), []

        return make

    cases += [
        Case("deap", "RAW/data_preprocessed_python is a file",
             raw_kind(lambda r: ((r / "data_preprocessed_python").write_text("x"), r)[1])),
        Case("deap", "RAW empty folder", raw_kind(lambda r: r)),
        Case("deap", "RAW is a file named x.txt", raw_kind(lambda r: ((r / "x.txt").write_text("x"), r / "x.txt")[1])),
        Case("deap", "-o is a file", lambda folder: (build_deap(folder), ["-o", str(build_deap(folder) / "s01.dat")])),
        Case("deap", "--stimuli is a file",
             lambda folder: (build_deap(folder), ["--stimuli", str(build_deap(folder) / "s01.dat")])),
    ]  # fmt: skip
    return cases


def seed_cases() -> list[Case]:
    cases = file_cases("seed", build_seed, "1_20131027.mat", [], 128)
    cases += file_cases("seed", build_seed, "label.mat", [], 128)

    def session(variables):
        def make(folder):
            raw = build_seed(folder)
            import scipy.io

            scipy.io.savemat(str(raw / "1_20131027.mat"), variables)
            return raw, []

        return make

    good = {f"djc_eeg{n}": np.random.default_rng(n).normal(0, 10, (62, 1000)) for n in range(1, 16)}

    def changed(key, value):
        return session({**good, key: value})

    def labels(value):
        def make(folder):
            raw = build_seed(folder)
            write_seed_labels(raw, value)
            return raw, []

        return make

    big = good["djc_eeg3"].copy()
    big[5, 100] = 1e300
    nan = good["djc_eeg3"].copy()
    nan[5, 100] = np.nan
    cases += [
        Case("seed", "1e300 sample", changed("djc_eeg3", big)),
        Case("seed", "NaN sample", changed("djc_eeg3", nan)),
        Case("seed", "61 channels", changed("djc_eeg3", good["djc_eeg3"][:61])),
        Case("seed", "1-D trial", changed("djc_eeg3", good["djc_eeg3"][0])),
        Case("seed", "3-D trial", changed("djc_eeg3", good["djc_eeg3"][None])),
        Case("seed", "complex trial", changed("djc_eeg3", good["djc_eeg3"].astype(complex))),
        Case("seed", "string trial", changed("djc_eeg3", "hello")),
        Case("seed", "bool trial (saved as uint8)", changed("djc_eeg3", good["djc_eeg3"] > 0), False),
        Case("seed", "int16 trial", changed("djc_eeg3", good["djc_eeg3"].astype(np.int16)), False),
        Case("seed", "cell array trial", changed("djc_eeg3", np.array([good["djc_eeg3"], 1], dtype=object))),
        Case("seed", "struct trial", changed("djc_eeg3", {"a": 1})),
        Case("seed", "empty trial (skipped as too short)", changed("djc_eeg3", np.zeros((62, 0))), False),
        Case("seed", "short trial (1 s)", changed("djc_eeg3", good["djc_eeg3"][:, :200]), False),
        Case("seed", "clip 16", changed("djc_eeg16", good["djc_eeg3"])),
        Case("seed", "clip 0", changed("djc_eeg0", good["djc_eeg3"])),
        Case("seed", "no trial variables", session({"x": np.zeros(3)})),
        Case("seed", "labels 2", labels(np.full((1, 15), 2))),
        Case("seed", "labels NaN", labels(np.full((1, 15), np.nan))),
        Case("seed", "labels 14", labels(np.zeros((1, 14)))),
        Case("seed", "labels strings", labels(np.array(["a"] * 15))),
        Case("seed", "labels float 0.5", labels(np.full((1, 15), 0.5))),
    ]

    def v73(folder):
        raw = build_seed(folder)
        path = raw / "1_20131027.mat"
        path.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64" + b" " * 90 + b"\x00\x02IM" + b"\x89HDF\r\n\x1a\n")
        return raw, []

    cases += [
        Case("seed", "v7.3-looking header", v73),
        Case("seed", "RAW is a file", lambda f: (build_seed(f) / "label.mat", [])),
        Case("seed", "session is a directory named like one",
             lambda f: (((build_seed(f) / "2_20131030.mat").mkdir(), f / "seed")[1], [])),
    ]  # fmt: skip
    return cases


def manifest_cases() -> list[Case]:
    cases = file_cases("manifest", build_manifest, "s01.edf", [], 256 * 5)
    cases += file_cases("manifest", lambda f: build_manifest(f, fmt="bdf"), "s01.bdf", [], 256 * 5)[:10]
    cases += file_cases("manifest", build_manifest, "stimuli/A.mp4", [], 1024)
    cases += file_cases("manifest", build_manifest, "manifest.csv", [], 20)[:10]

    odd = ["", " ", "nan", "NaN", "inf", "-inf", "1e309", "-1", "0", "1.5", "abc", "\uff11", "1_0", "0x10",
           "True", "x" * 5000, "1e300", "-0", "\u00a0", "None", "'", '"', "1,5", "\x00"]  # fmt: skip
    columns = ["subject", "trial", "stimulus", "eeg", "onset", "duration", "valence", "lag"]

    def with_cell(column, value):
        def make(folder):
            rows = manifest_rows()
            rows[1][column] = value
            return build_manifest(folder, rows), []

        return make

    for column in columns:
        for value in odd:
            acceptable = column in ("subject", "stimulus") and value not in ("",) and "\x00" not in value
            acceptable |= column in ("onset", "duration", "lag") and value.strip() == ""  # optional: the default
            acceptable |= column == "lag" and value == "1e300"  # every trial too short after it: skipped, warned
            acceptable |= column in ("onset", "lag") and value in ("0", "-0", "1.5", "\uff11", "1_0")
            acceptable |= column == "trial" and value in ("0", "-0", "\uff11", "1_0", "True")
            acceptable |= column == "valence" and value in ("1.5", "\uff11")
            acceptable |= column == "duration" and value in ("1.5", "\uff11", "1_0")  # Python float() reads them
            cases.append(Case("manifest", f"cell {column}={value[:12]!r}", with_cell(column, value), not acceptable))

    def table(text: str, name: str = "manifest.csv"):
        def make(folder):
            raw = build_manifest(folder)
            (raw / "manifest.csv").unlink()
            (raw / name).write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
            return raw, []

        return make

    head = "subject,trial,stimulus,eeg,onset,duration,valence\n"
    good = "s01,0,A,s01.edf,0,12,5\n"
    cases += [
        Case("manifest", "header only", table(head)),
        Case("manifest", "empty file", table("")),
        Case("manifest", "ragged row (extra cell)", table(head + good + "s01,1,B,s01.edf,12,12,5,9\n")),
        Case("manifest", "short row (missing cells)", table(head + good + "s01,1,B\n")),
        Case("manifest", "duplicate header names", table("subject,subject,trial,stimulus,eeg,valence\n")),
        Case("manifest", "latin-1 bytes", table(head.encode() + b"s\xe901,0,A,s01.edf,0,12,5\n")),
        Case("manifest", "binary garbage", table(bytes(range(256)) * 4)),
        Case("manifest", "quoted newline in a cell", table(head + '"s0\n1",0,A,s01.edf,0,12,5\n'), False),
        Case("manifest", "semicolon separated", table(head.replace(",", ";") + good.replace(",", ";"))),
        Case("manifest", "duplicate trial", table(head + good + good)),
        Case("manifest", "eeg is the manifest itself", table(head + "s01,0,A,manifest.csv,0,12,5\n")),
        Case("manifest", "eeg points at the stimuli folder", table(head + "s01,0,A,stimuli,0,12,5\n")),
        Case("manifest", "eeg is an mp4", table(head + "s01,0,A,stimuli/A.mp4,0,12,5\n")),
        Case("manifest", "onset past the end", table(head + "s01,0,A,s01.edf,100,12,5\n")),
        Case("manifest", "yaml scalar", table("42\n", "manifest.yaml")),
        Case("manifest", "yaml rows with lists",
             table("- {subject: [1], trial: 0, stimulus: A, eeg: s01.edf, valence: 5}\n", "manifest.yaml")),
        Case("manifest", "yaml rows with nulls",
             table("- {subject: s01, trial: null, stimulus: A, eeg: s01.edf, valence: 5}\n", "manifest.yaml")),
        Case("manifest", "yaml trial true",
             table("- {subject: s01, trial: true, stimulus: A, eeg: s01.edf, valence: 5}\n", "manifest.yaml")),
        Case("manifest", "yaml valence dict",
             table("- {subject: s01, trial: 0, stimulus: A, eeg: s01.edf, valence: {a: 1}}\n", "manifest.yaml")),
        Case("manifest", "yaml eeg number",
             table("- {subject: s01, trial: 0, stimulus: A, eeg: 5, valence: 5}\n", "manifest.yaml")),
        Case("manifest", "yaml bad syntax", table("- {subject: s01, trial: [\n", "manifest.yaml")),
    ]  # fmt: skip

    def edf_header(field: str, text: str):
        """Overwrite an EDF header field of the 1st signal (ASCII, padded to its width)."""

        def make(folder):
            raw = build_manifest(folder)
            path = raw / "s01.edf"
            data = bytearray(path.read_bytes())
            ns = int(data[252:256])  # the EEG signals + MNE's "EDF Annotations"
            per_signal = {"phys_min": 16 + 80 + 8, "phys_max": 16 + 80 + 16, "dig_min": 16 + 80 + 24}
            offset = {"records": 236, "duration": 244, "ns": 252, "header_bytes": 184}.get(field)
            offset = 256 + ns * per_signal[field] if offset is None else offset
            data[offset : offset + len(text)] = text.encode()
            path.write_bytes(bytes(data))
            return raw, []

        return make

    cases += [
        Case("manifest", "EDF physical max 1e300", edf_header("phys_max", "1e300   ")),
        Case("manifest", "EDF physical min -1e300", edf_header("phys_min", "-1e300  ")),
        Case("manifest", "EDF physical max nan", edf_header("phys_max", "nan     ")),
        Case("manifest", "EDF physical max inf", edf_header("phys_max", "inf     ")),
        Case("manifest", "EDF digital min = max", edf_header("dig_min", "32767   "), False),  # MNE copes
        Case("manifest", "EDF record duration 0", edf_header("duration", "0       "), False),  # MNE reads it
        Case("manifest", "EDF record duration -1", edf_header("duration", "-1      ")),
        Case("manifest", "EDF record duration abc", edf_header("duration", "abc     ")),
        Case("manifest", "EDF records -1", edf_header("records", "-1      "), False),
        Case("manifest", "EDF records 0", edf_header("records", "0       ")),
        Case("manifest", "EDF records 99999999", edf_header("records", "99999999")),
        Case("manifest", "EDF signals 0", edf_header("ns", "0   ")),
        Case("manifest", "EDF signals 999", edf_header("ns", "999 ")),
        Case("manifest", "EDF header bytes x", edf_header("header_bytes", "x       ")),
    ]

    def clip(fn):
        def make(folder):
            raw = build_manifest(folder)
            fn(raw / "stimuli")
            return raw, []

        return make

    def nan_audio(stimuli: Path) -> None:
        import av

        (stimuli / "A.mp4").unlink()
        with av.open(str(stimuli / "A.mkv"), mode="w") as container:
            stream = container.add_stream("pcm_f32le", rate=16000, layout="mono")
            wave = np.sin(np.arange(16000 * 12) / 10).astype(np.float32)
            wave[5000:6000] = np.nan
            for start in range(0, len(wave), 1600):
                frame = av.AudioFrame.from_ndarray(wave[None, start : start + 1600], format="flt", layout="mono")
                frame.rate = 16000
                frame.pts = start
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)

    cases += [
        Case("manifest", "clip with NaN audio samples (mkv, float PCM)", clip(nan_audio)),
        Case("manifest", "clip zero bytes", clip(lambda s: (s / "A.mp4").write_bytes(b""))),
        Case("manifest", "stimuli is a file", clip(lambda s: (shutil.rmtree(s), s.write_text("x")))),
        Case("manifest", "clip too short", clip(lambda s: write_mp4(s / "A.mp4", 3.0))),
        Case("manifest", "clip video only", clip(lambda s: write_mp4(s / "A.mp4", 12.0, audio=False)), False),
    ]
    return cases


def uea_cases() -> list[Case]:
    cases = file_cases("uea", build_uea, "Toy_TRAIN.ts", ["--segment", "1"], 90)

    def lines_with(fn):
        def make(folder):
            rng = np.random.default_rng(0)
            lines = []
            for i in range(10):
                dims = [[f"{v:.3f}" for v in 4000 + 20 * rng.standard_normal(128)] for _ in range(2)]
                fn(i, dims)
                lines.append(":".join(",".join(d) for d in dims) + f":{i % 2}")
            return build_uea(folder, lines), ["--segment", "1"]

        return make

    def value(v, case=3):
        def fn(i, dims):
            if i == case:
                dims[1][50] = v

        return fn

    for v in ("?", "nan", "NaN", "inf", "-inf", "1e309", "1e300", "1e30", "", "abc", "0x1", "\uff11", "1_0"):
        ok = v in ("\uff11", "1_0")
        cases.append(Case("uea", f"value {v!r}", lines_with(value(v)), not ok))

    def shorter(i, dims):
        if i == 4:
            dims[0].pop()

    def both_shorter(i, dims):
        if i == 4:
            dims[0].pop()
            dims[1].pop()

    def one_dim(i, dims):
        if i == 4:
            dims.pop()

    def aux(content):
        return lambda folder: (build_uea(folder, aux=content), ["--segment", "1"])

    def raw_lines(extra_lines: list[str]):
        return lambda folder: (build_uea(folder, extra_lines), ["--segment", "1"])

    cases += [
        Case("uea", "one dimension shorter", lines_with(shorter)),
        Case("uea", "one case shorter", lines_with(both_shorter)),
        Case("uea", "one case missing a dimension", lines_with(one_dim)),
        Case("uea", "label not in @classLabel", raw_lines(["1,2,3:1,2,3:7"])),
        Case("uea", "no cases", raw_lines([])),
        Case("uea", "only a label", raw_lines(["0"])),
        Case("uea", "aux sfreq 0", aux({"sfreq": 0})),
        Case("uea", "aux sfreq string", aux({"sfreq": "128"})),
        Case("uea", "aux sfreq NaN", aux({"sfreq": float("nan")})),
        Case("uea", "aux sfreq Infinity", aux({"sfreq": float("inf")})),
        Case("uea", "aux sfreq 1e300", aux({"sfreq": 1e300})),
        Case("uea", "aux sfreq 1", aux({"sfreq": 1})),
        Case("uea", "aux sfreq true", aux({"sfreq": True})),
        Case("uea", "aux a list", aux([1, 2])),
        Case("uea", "aux channels wrong count", aux({"sfreq": 128, "channels": ["a"]})),
        Case("uea", "aux channels not strings", aux({"sfreq": 128, "channels": [1, 2]})),
        Case("uea", "aux channels a string", aux({"sfreq": 128, "channels": "ab"})),
        Case("uea", "aux channels duplicated", aux({"sfreq": 128, "channels": ["a", "a"]})),
        Case("uea", "aux missing", lambda f: ((build_uea(f) / "auxiliary" / "Toy.json").unlink(),
                                              (f / "uea", ["--segment", "1"]))[1]),
        Case("uea", "aux is a directory", lambda f: ((build_uea(f) / "auxiliary" / "Toy.json").unlink(),
                                                     (f / "uea" / "auxiliary" / "Toy.json").mkdir(),
                                                     (f / "uea", ["--segment", "1"]))[2]),
    ]  # fmt: skip
    return cases


# ---------------------------------------------------------------- SEED-IV, SEED-V, FACED (issue 20)


def build_seed_iv(folder: Path, trials: dict | None = None) -> Path:
    raw = folder / "seed-iv"
    trials = {n: np.random.default_rng(n).normal(0, 10, (62, 1000)) for n in range(1, 25)} if trials is None else trials
    write_seed_iv_session(raw / "eeg_raw_data" / "1" / "1_20160518.mat", trials, "cz")
    return raw


def seed_iv_cases() -> list[Case]:
    target = "eeg_raw_data/1/1_20160518.mat"
    cases = file_cases("seed-iv", build_seed_iv, target, [], 128)
    good = {n: np.random.default_rng(n).normal(0, 10, (62, 1000)) for n in range(1, 25)}

    def variables(fn):
        def make(folder):
            raw = build_seed_iv(folder)
            import scipy.io

            scipy.io.savemat(str(raw / target), fn({f"cz_eeg{n}": v for n, v in good.items()}))
            return raw, []

        return make

    def trial3(value):
        return variables(lambda v: {**v, "cz_eeg3": value})

    big, nan = good[3].copy(), good[3].copy()
    big[5, 100], nan[5, 100] = 1e300, np.nan
    cases += [
        Case("seed-iv", "1e300 sample", trial3(big)),
        Case("seed-iv", "NaN sample", trial3(nan)),
        Case("seed-iv", "61 channels", trial3(good[3][:61])),
        Case("seed-iv", "transposed trial", trial3(good[3].T)),
        Case("seed-iv", "1-D trial", trial3(good[3][0])),
        Case("seed-iv", "3-D trial", trial3(good[3][None])),
        Case("seed-iv", "complex trial", trial3(good[3].astype(complex))),
        Case("seed-iv", "string trial", trial3("hello")),
        Case("seed-iv", "cell array trial", trial3(np.array([good[3], 1], dtype=object))),
        Case("seed-iv", "struct trial", trial3({"a": 1})),
        Case("seed-iv", "int16 trial", trial3(good[3].astype(np.int16)), False),
        Case("seed-iv", "empty trial (skipped as too short)", trial3(np.zeros((62, 0))), False),
        Case("seed-iv", "eeg25 too", variables(lambda v: {**v, "cz_eeg25": good[3]})),
        Case("seed-iv", "eeg0 too", variables(lambda v: {**v, "cz_eeg0": good[3]})),
        Case("seed-iv", "eeg24 missing", variables(lambda v: {k: x for k, x in v.items() if k != "cz_eeg24"})),
        Case("seed-iv", "eeg3 twice (two prefixes)", variables(lambda v: {**v, "ab_eeg3": good[3]})),
        Case("seed-iv", "no trial variables", variables(lambda v: {"x": np.zeros(3)})),
        Case("seed-iv", "keys without prefix (eeg<N>)", variables(lambda v: {k[3:]: x for k, x in v.items()}), False),
    ]

    def layout(fn, extra=()):
        def make(folder):
            raw = build_seed_iv(folder)
            return fn(raw) or raw, list(extra)

        return make

    cases += [
        Case("seed-iv", "session folder 4", layout(lambda r: (r / "eeg_raw_data" / "4").mkdir() and None)),
        Case("seed-iv", "session 2 is a file", layout(lambda r: (r / "eeg_raw_data" / "2").write_text("x") and None)),
        Case("seed-iv", "subject twice in a session", layout(lambda r: shutil.copy(
            r / target, r / "eeg_raw_data" / "1" / "1_20160519.mat") and None)),
        Case("seed-iv", "RAW is the .mat file", layout(lambda r: r / target)),
        Case("seed-iv", "RAW empty folder", layout(lambda r: (r / "empty").mkdir() or r / "empty")),
        Case("seed-iv", "--baseline correct", layout(lambda r: None, ["--baseline", "correct"])),
        Case("seed-iv", "--channels absent", layout(lambda r: None, ["--channels", "Fp1,XX9"])),
        Case("seed-iv", "--channels fp1,cz", layout(lambda r: None, ["--channels", "fp1,cz"]), False),
    ]  # fmt: skip
    return cases


SEED_V_TIMES = "session,trial,start_s,end_s\n" + "".join(f"1,{n},{5 * (n - 1)},{5 * n}\n" for n in range(1, 16))


def build_seed_v(folder: Path, sfreq: int = 1000, channels=None, n_bytes: int = 2, times: str = SEED_V_TIMES) -> Path:
    """EEG_raw/1_1_20180507.cnt: 15 trials of 5 s back to back (75 s, 66 channels) + trial times CSV."""
    raw = folder / "seed-v"
    channels = SEED_V_FILE_CHANNELS if channels is None else channels
    eeg = np.random.default_rng(0).normal(0, 20, (len(channels), 75 * sfreq))
    write_cnt(raw / "EEG_raw" / "1_1_20180507.cnt", 75 * sfreq, channels, sfreq, n_bytes=n_bytes,
              segments=[(0, eeg)], events=[(5 * sfreq * n, 1) for n in range(15)])
    (folder / "times.csv").write_text(times)
    return raw


def seed_v_cases() -> list[Case]:
    target = "EEG_raw/1_1_20180507.cnt"

    def times_arg(folder):
        return ["--trial-times", str(folder / "times.csv")]

    def build(folder, **kw):
        return build_seed_v(folder, **kw), times_arg(folder)

    cases = []
    for case in file_cases("seed-v", build_seed_v, target, [], 900 + 75 * 66):
        cases.append(Case(case.source, case.name, lambda f, b=case.build: (b(f)[0], times_arg(f)), case.must_refuse))

    def patched(offset_of, value, dtype):
        """Overwrite a header field (``offset_of(n_channels)`` bytes into the file)."""
        def make(folder):
            raw, extra = build(folder)
            path = raw / target
            data = bytearray(path.read_bytes())
            at = offset_of(66)
            data[at : at + np.dtype(dtype).itemsize] = np.array(value, dtype).tobytes()
            path.write_bytes(bytes(data))
            return raw, extra

        return make

    def cal(ch):  # ELECTLOC record of channel ch: calibration at +71
        return lambda n: 900 + 75 * ch + 71

    def with_times(text):
        return lambda f: (build_seed_v(f, times=text), times_arg(f))

    header = "session,trial,start_s,end_s\n"
    cases += [
        Case("seed-v", "500 Hz", lambda f: build(f, sfreq=500)),
        Case("seed-v", "60 EEG channels", lambda f: build(f, channels=SEED_V_FILE_CHANNELS[2:])),
        Case("seed-v", "no M1 M2 VEO HEO (62 channels)",
             lambda f: build(f, channels=[c for c in SEED_V_FILE_CHANNELS if c not in ("M1", "M2", "VEO", "HEO")]),
             False),
        Case("seed-v", "int32 samples", lambda f: build(f, n_bytes=4), False),
        Case("seed-v", "rate field 0", patched(lambda n: 376, 0, "<u2")),
        Case("seed-v", "channel count field 0", patched(lambda n: 370, 0, "<u2")),
        Case("seed-v", "channel count field 65535", patched(lambda n: 370, 65535, "<u2")),
        Case("seed-v", "sample count field -1", patched(lambda n: 864, -1, "<i4"), False),
        Case("seed-v", "sample count field 2**31-1", patched(lambda n: 864, 2**31 - 1, "<i4")),
        Case("seed-v", "event table offset past the end", patched(lambda n: 886, 2**31 - 1, "<i4")),
        Case("seed-v", "event table offset 0", patched(lambda n: 886, 0, "<i4")),
        Case("seed-v", "calibration NaN in one channel", patched(cal(5), np.nan, "<f4")),
        Case("seed-v", "calibration Inf in one channel", patched(cal(5), np.inf, "<f4")),
        Case("seed-v", "calibration 1e30 in one channel", patched(cal(5), 1e30, "<f4")),
        Case("seed-v", "calibration NaN in VEO only", patched(cal(64), np.nan, "<f4"), False),
        Case("seed-v", "no --trial-times (released table overruns 75 s)", lambda f: (build_seed_v(f), [])),
        Case("seed-v", "trial times empty file", with_times("")),
        Case("seed-v", "trial times header only", with_times(header)),
        Case("seed-v", "trial times wrong header", with_times("a,b,c,d\n1,1,0,5\n")),
        Case("seed-v", "trial times text cell", with_times(header + "1,1,zero,5\n")),
        Case("seed-v", "trial times NaN", with_times(header + "1,1,nan,5\n")),
        Case("seed-v", "trial times inf", with_times(header + "1,1,0,inf\n")),
        Case("seed-v", "trial times trial 16", with_times(header + "1,16,0,5\n")),
        Case("seed-v", "trial times trial 1.5", with_times(header + "1,1.5,0,5\n")),
        Case("seed-v", "trial times session 0", with_times(header + "0,1,0,5\n")),
        Case("seed-v", "trial times end before start", with_times(header + "1,1,5,4\n")),
        Case("seed-v", "trial times negative start", with_times(header + "1,1,-1,4\n")),
        Case("seed-v", "trial times duplicate", with_times(header + "1,1,0,5\n1,1,5,10\n")),
        Case("seed-v", "trial times five columns", with_times(header + "1,1,0,5,7\n")),
        Case("seed-v", "trial times only session 2", with_times(header + "2,1,0,5\n")),
        Case("seed-v", "trial times past the end", with_times(header + "1,1,70,80\n")),
        Case("seed-v", "trial times binary", lambda f: (build_seed_v(f, times="\x00\xff\xfe" * 20), times_arg(f))),
        Case("seed-v", "trial times one trial", with_times(header + "1,3,0,5\n"), False),
        Case("seed-v", "trial times is a directory", lambda f: (build_seed_v(f), ["--trial-times", str(f / "seed-v")])),
        Case("seed-v", "trial times missing", lambda f: (build_seed_v(f), ["--trial-times", str(f / "nope.csv")])),
        Case("seed-v", "session 4 file", lambda f: (lambda r: (shutil.copy(r / target, r / "EEG_raw" / "1_4_20180508.cnt"),
                                                              (r, times_arg(f)))[1])(build_seed_v(f))),
        Case("seed-v", "--baseline correct", lambda f: (build_seed_v(f), [*times_arg(f), "--baseline", "correct"])),
    ]  # fmt: skip
    return cases


@functools.lru_cache(maxsize=1)
def _faced_good() -> np.ndarray:
    return np.random.default_rng(0).normal(0, 10, (28, 32, 7500)).astype(np.float32)


def build_faced(folder: Path, data=..., protocol: int = 4) -> Path:
    """Processed_data/sub000.pkl holding ``data`` (by default a valid (28, 32, 7500) array)."""
    raw = folder / "faced"
    write_pickle(raw / "Processed_data" / "sub000.pkl", _faced_good() if data is ... else data, protocol)
    return raw


def faced_cases() -> list[Case]:
    cases = file_cases("faced", build_faced, "Processed_data/sub000.pkl", [], 128)
    d = _faced_good()

    def content(obj, protocol=4):
        return lambda folder: (build_faced(folder, obj, protocol), [])

    def changed(index, value):
        data = d.copy()
        data[index] = value
        return content(data)

    cases += [
        Case("faced", "NaN sample", changed((3, 2, 600), np.nan)),
        Case("faced", "Inf sample", changed((3, 2, 600), np.inf)),
        Case("faced", "1e30 sample (float32 power overflows)", changed((3, 2, 600), 1e30)),
        Case("faced", "NaN in A1 only (dropped)", changed((3, 31, 600), np.nan), False),
        Case("faced", "transposed (28, 7500, 32)", content(d.transpose(0, 2, 1).copy())),
        Case("faced", "6000 samples (200 Hz)", content(d[:, :, :6000].copy())),
        Case("faced", "30 channels", content(d[:, :30].copy())),
        Case("faced", "27 clips", content(d[:27].copy())),
        Case("faced", "2-D", content(d[0].copy())),
        Case("faced", "4-D", content(d[None])),
        Case("faced", "float64", content(d.astype(np.float64)), False),
        Case("faced", "float16", content(d.astype(np.float16)), False),
        Case("faced", "int16", content(d.astype(np.int16)), False),
        Case("faced", "complex", content(d.astype(np.complex64))),
        Case("faced", "bool", content(d > 0)),
        Case("faced", "object", content(d.astype(object))),
        Case("faced", "strings", content(np.full((28, 32, 5), "x"))),
        Case("faced", "nested lists", content(d[:, :, :10].tolist())),
        Case("faced", "dict with the array", content({"data": d})),
        Case("faced", "None", content(None)),
        Case("faced", "pickle with a function", content([print])),
        Case("faced", "pickle protocol 2", content(d, 2), False),
        Case("faced", "--baseline correct", lambda f: (build_faced(f), ["--baseline", "correct"])),
        Case("faced", "RAW empty folder", lambda f: ((f / "faced").mkdir(), (f / "faced", []))[1]),
        Case("faced", "RAW is a file named x.pkl",
             lambda f: (lambda r: (shutil.copy(r / "Processed_data" / "sub000.pkl", r / "x.pkl"), (r / "x.pkl", []))[1])(
                 build_faced(f))),
        Case("faced", "--channels A1 (a dropped reference)", lambda f: (build_faced(f), ["--channels", "Fp1,A1"])),
    ]  # fmt: skip
    return cases


# ---------------------------------------------------------------- DREAMER, AMIGOS, MAHNOB-HCI (issue 20)


def resave(path: Path, content: dict | None = None, drop: str = "") -> Path:
    """Rewrite a .mat file with ``content`` (default: its own variables less ``drop``); returns RAW."""
    import scipy.io

    if content is None:
        content = {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__") and k != drop}
    scipy.io.savemat(str(path), content)
    return path.parent


def dreamer_parts(seconds: int = 6) -> dict:
    """Fields of one DREAMER subject (18 clips of ``seconds`` s, 2 s baselines), for editing."""
    rng = np.random.default_rng(0)
    return {"stimuli": [rng.normal(0, 10, (128 * seconds, 14)) for _ in range(18)],
            "baselines": [rng.normal(0, 10, (256, 14)) for _ in range(18)],
            "scores": {"valence": [1, 2, 3, 4, 5, 3] * 3, "arousal": [3] * 18, "dominance": [4] * 18}}  # fmt: skip


def build_dreamer(folder: Path, edit=None, **fields) -> Path:
    from mercl.data.synth_sources import dreamer_subject, write_dreamer

    parts = dreamer_parts()
    subject = dreamer_subject(parts["stimuli"], parts["baselines"], parts["scores"])
    if edit is not None:
        edit(subject)
    write_dreamer(folder / "dreamer" / "DREAMER.mat", [subject], **fields)
    return folder / "dreamer"


def dreamer_cases() -> list[Case]:
    cases = file_cases("dreamer", build_dreamer, "DREAMER.mat", [], 256)

    def subject_with(fn, must_refuse=True, name=""):
        return Case("dreamer", name, lambda f: (build_dreamer(f, edit=fn), []), must_refuse)

    def clip(part, k, value):
        return lambda s: s["EEG"][part].__setitem__((k, 0), value)

    def sample(value):
        def fn(s):
            s["EEG"]["stimuli"][3, 0][100, 2] = value

        return fn

    good = dreamer_parts()["stimuli"][0]
    cases += [
        subject_with(clip("stimuli", 4, good.T.copy()), name="stimuli transposed"),
        subject_with(clip("baseline", 4, dreamer_parts()["baselines"][0].T.copy()), name="baseline transposed"),
        subject_with(clip("stimuli", 4, good[:, :13]), name="13 channels"),
        subject_with(clip("stimuli", 4, good[0]), name="one sample row"),
        subject_with(clip("stimuli", 4, "text"), name="stimuli text"),
        subject_with(clip("stimuli", 4, good.astype(complex)), name="stimuli complex"),
        subject_with(clip("stimuli", 4, good.astype(np.int16)), False, "stimuli int16"),
        subject_with(clip("stimuli", 4, np.zeros((0, 14))), name="empty clip"),
        subject_with(clip("stimuli", 4, good[:100]), False, "clip shorter than a segment"),
        subject_with(sample(np.nan), name="NaN sample"),
        subject_with(sample(np.inf), name="Inf sample"),
        subject_with(sample(1e300), name="1e300 sample"),
        subject_with(lambda s: s.pop("ScoreValence"), name="no ScoreValence"),
        subject_with(lambda s: s.pop("EEG"), name="no EEG"),
        subject_with(lambda s: s["EEG"].pop("baseline"), name="no baseline"),
        subject_with(lambda s: s.update(ScoreValence=np.full((18, 1), 0.0)), name="score 0"),
        subject_with(lambda s: s.update(ScoreValence=np.full((18, 1), 6.0)), name="score 6"),
        subject_with(lambda s: s.update(ScoreValence=np.full((18, 1), np.nan)), name="score NaN"),
        subject_with(lambda s: s.update(ScoreValence=np.full((17, 1), 3.0)), name="17 scores"),
        subject_with(lambda s: s.update(ScoreValence="high"), name="score text"),
        subject_with(lambda s: s["EEG"].update(stimuli=s["EEG"]["stimuli"][:17]), name="17 clips"),
        subject_with(lambda s: s["EEG"].update(stimuli=np.zeros((18, 1))), name="stimuli a matrix, not a cell"),
        Case("dreamer", "rate 256", lambda f: (build_dreamer(f, EEG_SamplingRate=256), [])),
        Case("dreamer", "rate text", lambda f: (build_dreamer(f, EEG_SamplingRate="fast"), [])),
        Case("dreamer", "13 electrodes", lambda f: (build_dreamer(f, electrodes=["AF3"] * 13), [])),
        Case("dreamer", "duplicate electrodes", lambda f: (build_dreamer(f, electrodes=["AF3"] * 14), [])),
        Case("dreamer", "Data empty", lambda f: (build_dreamer(f, Data=np.zeros((0, 0))), [])),
        Case("dreamer", "Data a number", lambda f: (build_dreamer(f, Data=3), [])),
        Case("dreamer", "--baseline correct", lambda f: (build_dreamer(f), ["--baseline", "correct"]), False),
        Case("dreamer", "--channels missing one", lambda f: (build_dreamer(f), ["--channels", "AF3,Cz"])),
        Case("dreamer", "RAW without DREAMER.mat", lambda f: ((f / "dreamer").mkdir(parents=True), (f / "dreamer", []))[1]),
        Case("dreamer", "wrong top-level name", lambda f: (resave(build_dreamer(f) / "DREAMER.mat", {"data": 1}), [])),
    ]  # fmt: skip
    return cases


AMIGOS_IDS = [str(v) for v in (4, 5, 9, 10, 13, 18, 19, 20, 23, 30, 31, 34, 36, 58, 80, 138)] + ["N1", "P1", "B1", "U1"]


def amigos_parts(seconds: int = 6) -> dict:
    rng = np.random.default_rng(1)
    return {"video_ids": list(AMIGOS_IDS), "joined": [rng.normal(0, 10, (640 + 128 * seconds, 17)) for _ in range(20)],
            "ratings": [[5, 2 + k % 7, 5, 5, 5, 0, 1, 0, 0, 0, 0, 0] for k in range(20)]}  # fmt: skip


def build_amigos(folder: Path, edit=None, nested: bool = True, **changes) -> Path:
    from mercl.data.synth_sources import write_amigos

    parts = amigos_parts()
    if edit is not None:
        edit(parts)
    name = "Data_Preprocessed_P01.mat"
    write_amigos(folder / "amigos" / (name[:-4] if nested else "") / name, **parts, **changes)
    return folder / "amigos"


def amigos_cases() -> list[Case]:
    from mercl.data.synth_sources import mat_cells

    cases = file_cases("amigos", lambda f: build_amigos(f, nested=False), "Data_Preprocessed_P01.mat", [], 256)

    def parts_with(fn, must_refuse=True, name=""):
        return Case("amigos", name, lambda f: (build_amigos(f, edit=fn), []), must_refuse)

    def cell(key, k, value):
        return lambda p: p[key].__setitem__(k, value)

    def sample(column, value):
        def fn(p):
            p["joined"][3][900, column] = value

        return fn

    good = amigos_parts()["joined"][0]
    cases += [
        parts_with(cell("joined", 2, good.T.copy()), name="joined_data transposed"),
        parts_with(cell("joined", 2, good[:, :16]), name="16 columns"),
        parts_with(cell("joined", 2, good[:, :14]), name="14 columns (EEG only)"),
        parts_with(cell("joined", 2, good[:600]), name="shorter than the 5 s baseline"),
        parts_with(cell("joined", 2, good[:700]), False, "shorter than a segment"),
        parts_with(cell("joined", 2, "text"), name="joined_data text"),
        parts_with(cell("joined", 2, good.astype(complex)), name="joined_data complex"),
        parts_with(cell("joined", 2, None), False, "one EEG cell empty"),
        parts_with(sample(3, np.nan), name="NaN in EEG"),
        parts_with(sample(3, 1e300), name="1e300 in EEG"),
        parts_with(sample(16, np.nan), False, "NaN in GSR only"),
        parts_with(cell("ratings", 5, [0] * 12), name="ratings 0"),
        parts_with(cell("ratings", 5, [np.nan] * 12), name="ratings NaN"),
        parts_with(cell("ratings", 5, [5] * 10), name="10 ratings"),
        Case("amigos", "ratings text", lambda f: (build_amigos(f, labels_selfassessment=mat_cells(
            [np.array(["high"])] + [np.full((1, 12), 5.0)] * 19, (1, 20))), [])),
        parts_with(cell("video_ids", 3, "5"), name="video id twice"),
        parts_with(cell("video_ids", 3, np.array([[7]])), False, "video id a number"),
        parts_with(cell("video_ids", 3, np.ones((2, 2))), name="video id a matrix"),
        parts_with(lambda p: [p[k].__setitem__(slice(16, 20), [None] * 4) for k in p], False, "no long videos"),
        parts_with(lambda p: [p[k].__setitem__(slice(0, 20), [None] * 20) for k in p], name="every cell empty"),
        parts_with(lambda p: [p[k].pop() for k in p], name="19 cells"),
        Case("amigos", "no joined_data", lambda f: (resave(build_amigos(f, nested=False) / "Data_Preprocessed_P01.mat",
                                                          drop="joined_data"), [])),
        Case("amigos", "two files for P01", lambda f: (build_amigos(f), build_amigos(f, nested=False), (f / "amigos", []))[2]),
        Case("amigos", "RAW without participant files", lambda f: ((f / "amigos").mkdir(parents=True), (f / "amigos", []))[1]),
        Case("amigos", "--baseline correct", lambda f: (build_amigos(f), ["--baseline", "correct"]), False),
    ]  # fmt: skip
    return cases


def build_mahnob(folder: Path, marks=(2.0, 9.0), felt=(5, 6), sfreq: int = 256, ch_names=None, pulse_s=0.04,
                 media="69.avi") -> Path:
    from mercl.data.synth_sources import MAHNOB_BDF_CHANNELS, write_mahnob_session

    names = ch_names or MAHNOB_BDF_CHANNELS
    rng = np.random.default_rng(2)
    sessions = folder / "mahnob" / "Sessions"
    for sid, clip in ((2, media), (4, "55.avi")):
        eeg = rng.normal(0, 10, (min(32, len(names) - 1), 12 * sfreq))
        write_mahnob_session(sessions, sid, "1", clip, felt, eeg, marks, sfreq=sfreq, ch_names=names, pulse_s=pulse_s,
                             trial_name="Part_1_S_Trial1_emotion.bdf")
    return folder / "mahnob"


def mahnob_cases() -> list[Case]:
    bdf = "Sessions/2/Part_1_S_Trial1_emotion.bdf"
    cases = file_cases("mahnob", build_mahnob, bdf, [], 48 * 256)
    cases += file_cases("mahnob", build_mahnob, "Sessions/2/session.xml", [], 64)

    def xml(text):
        def make(folder):
            raw = build_mahnob(folder)
            (raw / "Sessions" / "2" / "session.xml").write_text(text)
            return raw, []

        return make

    from mercl.data.synth_sources import MAHNOB_BDF_CHANNELS as names

    cases += [
        Case("mahnob", "no Status channel", lambda f: (build_mahnob(f, ch_names=[*names[:-1], "Trigger"]), [])),
        Case("mahnob", "31 EEG channels", lambda f: (build_mahnob(f, ch_names=[*names[:31], "Status"]), [])),
        Case("mahnob", "512 Hz", lambda f: (build_mahnob(f, sfreq=512), [])),
        Case("mahnob", "128 Hz", lambda f: (build_mahnob(f, sfreq=128), [])),
        Case("mahnob", "no Status markers", lambda f: (build_mahnob(f, marks=()), [])),
        Case("mahnob", "one short marker", lambda f: (build_mahnob(f, marks=(2.0,)), [])),
        Case("mahnob", "marker at 0 s and one more", lambda f: (build_mahnob(f, marks=(0.0, 5.0)), [])),
        Case("mahnob", "one long pulse", lambda f: (build_mahnob(f, pulse_s=-1), []), False),
        Case("mahnob", "markers 0.5 s apart", lambda f: (build_mahnob(f, marks=(2.0, 2.5)), [])),
        Case("mahnob", "three markers", lambda f: (build_mahnob(f, marks=(2.0, 9.0, 10.0)), []), False),
        Case("mahnob", "felt 0", lambda f: (build_mahnob(f, felt=(0, 5)), [])),
        Case("mahnob", "felt 10", lambda f: (build_mahnob(f, felt=(10, 5)), [])),
        Case("mahnob", "felt text", lambda f: (build_mahnob(f, felt=("high", 5)), [])),
        Case("mahnob", "felt nan", lambda f: (build_mahnob(f, felt=("nan", 5)), [])),
        Case("mahnob", "felt empty", lambda f: (build_mahnob(f, felt=("", 5)), [])),
        Case("mahnob", "mediaFile empty", lambda f: (build_mahnob(f, media=""), [])),
        Case("mahnob", "same clip twice", lambda f: (build_mahnob(f, media="55.avi"), [])),
        Case("mahnob", "no felt ratings anywhere", lambda f: (build_mahnob(f, felt=None), [])),
        Case("mahnob", "xml root not <session>", xml('<trial feltVlnc="5" feltArsl="5" mediaFile="a.avi"/>')),
        Case("mahnob", "xml without subject", xml('<session feltVlnc="5" feltArsl="5" mediaFile="a.avi"/>')),
        Case("mahnob", "xml empty", xml("")),
        Case("mahnob", "xml entity bomb", xml('<!DOCTYPE s [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;'
                                              '&a;&a;&a;&a;">]><session feltVlnc="&b;"><subject id="1"/></session>')),
        Case("mahnob", "two BDFs in a session",
             lambda f: (shutil.copy(build_mahnob(f) / bdf, f / "mahnob" / "Sessions" / "2" / "x_emotion.bdf"),
                        (f / "mahnob", []))[1]),
        Case("mahnob", "no sessions", lambda f: ((f / "mahnob" / "Sessions").mkdir(parents=True), (f / "mahnob", []))[1]),
        Case("mahnob", "--baseline correct", lambda f: (build_mahnob(f), ["--baseline", "correct"]), False),
        Case("mahnob", "--channels lower case", lambda f: (build_mahnob(f), ["--channels", "fp1,cz"]), False),
    ]  # fmt: skip
    return cases


# ---------------------------------------------------------------- names from the data (issue 21)


def name_cases() -> list[Case]:
    """Ids a user's manifest can hold: ones that would take a clip from outside the stimuli folder
    (refused in one line), and table/mathtext characters in subject and stimulus ids (kept as they
    are; tests/integration/test_bad_inputs.py takes them on through evaluate and report)."""

    def with_ids(subject: str | None = None, stimulus=None, outside: bool = False):
        def make(folder):
            raw = build_manifest(folder)
            if outside:  # a real clip beside the stimuli folder, where an escaping id would find it
                shutil.copy(raw / "stimuli" / "A.mp4", raw / "outside.mp4")
            rows = manifest_rows()
            for row in rows:
                row["subject"] = subject or row["subject"]
            if stimulus is not None:
                name = stimulus(raw) if callable(stimulus) else stimulus
                if not outside:  # a clip of that name inside the folder
                    (raw / "stimuli" / f"{name}.mp4").parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(raw / "stimuli" / "A.mp4", raw / "stimuli" / f"{name}.mp4")
                rows[0]["stimulus"] = name
            pd.DataFrame(rows).to_csv(raw / "manifest.csv", index=False)
            return raw, []

        return make

    return [
        Case("manifest", "stimulus id ../outside (a clip beside the stimuli folder)",
             with_ids(stimulus="../outside", outside=True)),
        Case("manifest", "stimulus id /absolute/outside", with_ids(stimulus=lambda raw: str(raw / "outside"),
                                                                   outside=True)),
        Case("manifest", "stimulus id ../../../etc/passwd (no such clip)",
             with_ids(stimulus="../../../etc/passwd", outside=True)),
        Case("manifest", "subject id with a table pipe p|01", with_ids(subject="p|01"), False),
        Case("manifest", "subject id with mathtext s$x^$", with_ids(subject="s$x^$"), False),
        Case("manifest", "stimulus id with pipe and dollars A|$x$", with_ids(stimulus="A|$x$"), False),
        Case("manifest", "stimulus id with a sub-folder set1/A", with_ids(stimulus="set1/A"), False),
        Case("manifest", "a clip of 16400 x 16 pixel frames", huge_frames),
        Case("manifest", "--video-size 100000", lambda folder: (build_manifest(folder), ["--video-size", "100000"])),
        Case("manifest", "--overlap 0.99999 (a segment every 40 microseconds)",
             lambda folder: (build_manifest(folder), ["--overlap", "0.99999"])),
    ]  # fmt: skip


def huge_frames(folder: Path) -> tuple[Path, list[str]]:
    """The manifest study with clip A replaced by a real clip of 16400 x 16 pixel frames."""
    raw = build_manifest(folder)
    (raw / "stimuli" / "A.mp4").unlink()
    write_huge_frame_clip(raw / "stimuli" / "A.mkv", seconds=13)
    return raw, []


# ---------------------------------------------------------------- running


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def run_case(case: Case, folder: Path, timeout: int) -> tuple[str, str]:
    """:func:`_run_case` in a forked child, so that a crash of a library (a segfault) is an outcome."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        try:
            result = _run_case(case, folder, timeout)
        except BaseException as exc:  # noqa: BLE001
            result = ("traceback", f"in the sweep itself: {exc!r}")
        with os.fdopen(write, "w") as f:
            json.dump(result, f)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "crash", f"killed by signal {os.WTERMSIG(status)}"
    return tuple(json.loads(text)) if text else ("crash", f"no result (status {status})")


def _run_case(case: Case, folder: Path, timeout: int) -> tuple[str, str]:
    """(outcome, detail) of ``mercl prepare`` on the case's input."""
    folder.mkdir(parents=True)
    try:
        raw, extra = case.build(folder)
    except Exception as exc:  # the damage itself could not be written: not a mercl outcome
        return "unbuilt", f"{type(exc).__name__}: {exc}"
    out = folder / "out"
    args = ["prepare", str(raw), "--source", case.source, "-o", str(out), "--no-progress"]  # default workers
    if "-o" in extra:
        i = extra.index("-o")
        args[args.index("-o") + 1] = extra[i + 1]
        extra = extra[:i] + extra[i + 2 :]
    err = io.StringIO()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = mercl_main(args + extra)
    except _Timeout:
        return "timeout", ""
    except BaseException as exc:  # noqa: BLE001 - everything that escapes is the finding
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        return "traceback", f"{type(exc).__name__}: {str(exc)[:150]} at {Path(tb.filename).name}:{tb.lineno}"
    finally:
        signal.alarm(0)
    lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("mercl: error:")]
    manifests = list(out.rglob("manifest.json")) if out.is_dir() else []
    if code == 2:
        if len(lines) == 1 and not manifests:
            return "error", lines[0][len("mercl: error: ") :][:200]
        return "traceback", f"exit 2 with {len(lines)} error lines, {len(manifests)} manifests"
    if code != 0:
        return "traceback", f"exit {code}"
    if not manifests:
        return "traceback", "exit 0 without a manifest"
    return ("accepted" if _finite(manifests[0].parent) else "garbage"), ""


def _finite(dataset: Path) -> bool:
    import pyarrow.parquet as pq

    for shard in dataset.rglob("*.parquet"):
        table = pq.read_table(shard)
        for column in ("eeg", "audio", "audio_energy", "start_s", "valence", "arousal"):
            if column in table.column_names:
                values = table.column(column).combine_chunks()
                flat = values.flatten() if hasattr(values, "flatten") else values
                array = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float64)
                if not np.isfinite(array).all():
                    return False
    return True


def _warm_up() -> None:
    """Import and run once what every case needs (librosa's numba code, PyAV, MNE's readers), so
    the forked children inherit it instead of each paying seconds for it."""
    from mercl.data.features.audio import AudioFeatureConfig, log_mel, read_audio

    folder = Path(tempfile.mkdtemp(prefix="bad-inputs-warm-"))
    raw = build_manifest(folder)
    log_mel(read_audio(raw / "stimuli" / "A.mp4", 16000), 16000, AudioFeatureConfig())
    import mne

    mne.io.read_raw(raw / "s01.edf", preload=True, verbose="error")
    shutil.rmtree(folder, ignore_errors=True)
    deap_content(0)  # cached


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="deap,seed,manifest,uea,seed-iv,seed-v,faced,dreamer,amigos,mahnob,names",
                        help="comma-separated case groups (the sources and names)")
    parser.add_argument("--keep", metavar="DIR", help="build the cases here and keep them (default: a temp dir)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per case")
    parser.add_argument("--match", default="", help="only cases whose name contains this")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    _warm_up()
    makers = {"deap": deap_cases, "seed": seed_cases, "manifest": manifest_cases, "uea": uea_cases}
    makers.update(dreamer=dreamer_cases, amigos=amigos_cases, mahnob=mahnob_cases)
    makers.update({"seed-iv": seed_iv_cases, "seed-v": seed_v_cases, "faced": faced_cases})
    makers.update(names=name_cases)
    cases = [c for s in args.only.split(",") for c in makers[s]() if args.match in c.name]
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    counts: Counter = Counter()
    wrong = []
    start = time.perf_counter()
    for i, case in enumerate(cases):
        folder = root / f"{i:04d}"
        shutil.rmtree(folder, ignore_errors=True)
        outcome, detail = run_case(case, folder, args.timeout)
        counts[case.source, outcome] += 1
        bad = outcome in ("traceback", "crash", "timeout", "garbage") or (outcome == "accepted" and case.must_refuse)
        if bad:
            wrong.append((case, outcome, detail))
        print(f"[{i + 1}/{len(cases)}] {case.source:8s} {outcome:9s} {case.name[:60]:60s} {detail[:110]}", flush=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    for template in _TEMPLATES.values():
        shutil.rmtree(template.parent, ignore_errors=True)
    outcomes = ["error", "accepted", "garbage", "traceback", "crash", "timeout", "unbuilt"]
    print(f"\n{len(cases)} inputs in {time.perf_counter() - start:.0f} s")
    print(f"{'source':10s}" + "".join(f"{o:>11s}" for o in outcomes))
    for source in dict.fromkeys(c.source for c in cases):
        print(f"{source:10s}" + "".join(f"{counts[source, o]:11d}" for o in outcomes))
    print(f"\nnot as they should be: {len(wrong)}")
    for case, outcome, detail in wrong:
        print(f"  {case.source:8s} {outcome:9s} {case.name}: {detail}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
