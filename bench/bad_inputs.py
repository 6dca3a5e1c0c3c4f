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

Usage: ``.venv/bin/python bench/bad_inputs.py [--only deap,seed,manifest,uea] [--keep DIR]``.
Prints the counts per source and outcome, then every case that is not as it should be.
"""

from __future__ import annotations

import argparse
import contextlib
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
    deap_content,
    write_mp4,
    write_pickle,
    write_recording,
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
    parser.add_argument("--only", default="deap,seed,manifest,uea", help="comma-separated sources")
    parser.add_argument("--keep", metavar="DIR", help="build the cases here and keep them (default: a temp dir)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per case")
    parser.add_argument("--match", default="", help="only cases whose name contains this")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    _warm_up()
    makers = {"deap": deap_cases, "seed": seed_cases, "manifest": manifest_cases, "uea": uea_cases}
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
