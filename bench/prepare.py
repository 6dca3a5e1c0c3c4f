"""Benchmark ``mercl prepare --source deap`` (EEG only) against a plain SciPy reference.

Writes DEAP-layout inputs (``sNN.dat``: Python-2-style latin-1 pickles of float64
``data`` (40 trials, 40 channels, 8064 samples) and ``labels`` (40, 4), ~103 MB each,
like the real release) into a temporary folder, then prints in one run:

* the I/O floor: the time to merely unpickle the inputs;
* segments/s of ``mercl prepare RAW --source deap -o OUT`` (the real CLI, a fresh
  process, default workers, no stimuli);
* segments/s of a plain vectorised SciPy reference doing the same EEG work per subject
  (unpickle, 32 EEG channels in volts without the 3 s baseline, one Hamming-windowed
  ``scipy.signal.spectrogram`` over the whole trial = every 1 s sub-window every 0.5 s,
  band integration of the PSD (the spectral band-pass), log10, segments indexed out,
  one Parquet file per subject), run with the same number of worker processes, and
  that both give the same features;
* the ratio of the two, where the time goes in ours (cProfile of an in-process run
  with one worker), and the extrapolation to all 32 DEAP subjects (37,120 segments)
  against the 60 s target and torcheeg's ~37 segments/s band-pass anchor.

Then, memory (issue 21): peak RSS of ``mercl prepare RAW --source manifest`` (a fresh
process, one worker, EEG only) for one 12 s row cut from a short (3 min) and from a long
(1 hour) recording, both 32-channel 512 Hz EDF, at the file's rate and resampled to
128 Hz, side by side with the difference and the ratio. Memory that follows the rows
gives the same peak for both files; reading the whole recording costs ~8 bytes per
sample (float64) of the long file more. And the RSS of ``load_dataset`` on a synthetic
8 x 8 x 60 s study with 224 px frames: whole (training, evaluate, experiment) and streamed
(``stream=True``, as predict loads), after loading and after serving every row.

Usage: ``.venv/bin/python bench/prepare.py [--subjects 4] [--workers 2] [--repeat 1] [--keep DIR]
[--only throughput|memory]``
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pickle
import pstats
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.signal

N_TRIALS, N_CHANNELS, N_SAMPLES, N_EEG = 40, 40, 8064, 32
SFREQ, BASELINE = 128.0, 384
SEGMENT_S, HOP_S, SUB_S, SUB_HOP_S = 4.0, 2.0, 1.0, 0.5
BANDS = {
    "delta": (0.4, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}
SEGMENTS_PER_TRIAL = 29  # floor((60 - 4) / 2) + 1
ALL_DEAP_SEGMENTS = 32 * N_TRIALS * SEGMENTS_PER_TRIAL  # 37,120
TARGET_S = 60.0
TORCHEEG_BANDPASS_SEG_PER_S = 37.0


# ---------------------------------------------------------------- inputs


class Py2StylePickler(pickle._Pickler):
    """Protocol 2 with ``bytes`` written as Python 2 ``str`` (BINSTRING), as in DEAP's files.

    Loading such a file with ``encoding="latin1"`` decodes the array bytes to ``str`` and
    numpy encodes them back, the same (slower) path the real ``sNN.dat`` files take.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def write_deap_inputs(folder: Path, n_subjects: int) -> list[Path]:
    """``folder/data_preprocessed_python/sNN.dat`` for NN = 01..n_subjects (microvolt-scale noise)."""
    sub = folder / "data_preprocessed_python"
    sub.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(1, n_subjects + 1):
        rng = np.random.default_rng(s)
        data = rng.standard_normal((N_TRIALS, N_CHANNELS, N_SAMPLES)) * 20.0  # float64, uV
        data += np.sin(2 * np.pi * 10 * np.arange(N_SAMPLES) / SFREQ) * 10.0  # some alpha
        labels = rng.uniform(1.0, 9.0, (N_TRIALS, 4)).round(2)
        path = sub / f"s{s:02d}.dat"
        with open(path, "wb") as f:
            Py2StylePickler(f, protocol=2).dump({"labels": labels, "data": data})
        paths.append(path)
    return paths


def unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def time_unpickle(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        unpickle(path)
    return time.perf_counter() - start


# ---------------------------------------------------------------- plain SciPy reference


def band_matrix(freqs: np.ndarray) -> np.ndarray:
    """(n_freqs, n_bands): PSD bins in [lo, hi) times the bin width."""
    df = freqs[1] - freqs[0]
    return np.stack([((freqs >= lo) & (freqs < hi)) * df for lo, hi in BANDS.values()], axis=1)


def reference_subject(path: Path, out: Path) -> int:
    """Same EEG work as ``mercl prepare`` for one subject, plainly; returns its segment count."""
    content = unpickle(path)
    eeg = content["data"][:, :N_EEG, BASELINE:] * 1e-6  # (40, 32, 7680) volts
    sub_len, sub_hop = int(SUB_S * SFREQ), int(SUB_HOP_S * SFREQ)
    freqs, _, psd = scipy.signal.spectrogram(  # (40, 32, 65, 119)
        eeg, fs=SFREQ, window="hamming", nperseg=sub_len, noverlap=sub_len - sub_hop, detrend="constant"
    )
    power = np.log10(np.maximum(psd.transpose(0, 1, 3, 2) @ band_matrix(freqs), 1e-30))  # (40, 32, 119, 5)
    n_sub = int((SEGMENT_S - SUB_S) / SUB_HOP_S) + 1
    index = np.arange(SEGMENTS_PER_TRIAL)[:, None] * int(HOP_S / SUB_HOP_S) + np.arange(n_sub)[None, :]
    segments = power[:, :, index].transpose(0, 2, 3, 1, 4).astype(np.float32)  # (40, 29, 7, 32, 5)
    n = N_TRIALS * SEGMENTS_PER_TRIAL
    trial = np.repeat(np.arange(N_TRIALS, dtype=np.int32), SEGMENTS_PER_TRIAL)
    columns = {
        "subject": pa.array([path.stem] * n, pa.string()),
        "trial": pa.array(trial),
        "segment": pa.array(np.tile(np.arange(SEGMENTS_PER_TRIAL, dtype=np.int32), N_TRIALS)),
        "stimulus": pa.array([f"{t + 1:02d}" for t in trial], pa.string()),
        "start_s": pa.array(np.tile(np.arange(SEGMENTS_PER_TRIAL, dtype=np.float32) * HOP_S, N_TRIALS)),
    }
    for j, name in enumerate(("valence", "arousal", "dominance", "liking")):
        columns[name] = pa.array(np.repeat(content["labels"][:, j], SEGMENTS_PER_TRIAL).astype(np.float32))
    flat = pa.array(segments.reshape(-1), pa.float32())
    columns["eeg"] = pa.FixedSizeListArray.from_arrays(flat, segments[0, 0].size)
    pq.write_table(pa.table(columns), out / f"{path.stem}.parquet", compression="zstd")
    return n


def reference_main(out: Path, paths: list[Path], workers: int) -> int:
    """The reference's own process (``--reference-run``): every subject, ``workers`` processes."""
    out.mkdir(parents=True, exist_ok=True)
    if workers <= 1:
        n = sum(reference_subject(p, out) for p in paths)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            n = sum(pool.map(reference_subject, paths, [out] * len(paths)))
    print(n)
    return 0


def timed(command: list[str]) -> tuple[float, float, str]:
    """Run a command; (wall seconds, CPU seconds of it and its children, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:3])} ... failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def run_reference(paths: list[Path], out: Path, workers: int) -> tuple[float, float, int]:
    """(wall s, CPU s, segments) of the reference in a fresh process, like the CLI."""
    command = [sys.executable, __file__, "--reference-run", str(out), "--workers", str(workers)]
    wall, cpu, stdout = timed(command + [str(p) for p in paths])
    return wall, cpu, int(stdout.split()[-1])


# ---------------------------------------------------------------- ours


def run_ours(raw: Path, out: Path, workers: int) -> tuple[float, float, int, Path]:
    """(wall s, CPU s, segments, dataset dir) of the real CLI in a fresh process."""
    mercl = Path(sys.executable).with_name("mercl")
    command = [str(mercl), "prepare", str(raw), "--source", "deap", "-o", str(out), "--no-progress"]
    wall, cpu, _ = timed(command + ["--workers", str(workers)])
    (dataset,) = [p for p in out.iterdir() if (p / "manifest.json").is_file()]
    segments = json.loads((dataset / "manifest.json").read_text())["counts"]["segments"]
    return wall, cpu, segments, dataset


def check_same_features(dataset: Path, reference: Path, paths: list[Path]) -> float:
    """Largest |ours - reference| over every EEG value (log10 band power)."""
    worst = 0.0
    for path in paths:
        ours = pq.read_table(dataset / "eeg" / f"{path.stem}.parquet").to_pandas()
        ref = pq.read_table(reference / f"{path.stem}.parquet").to_pandas()
        ours = ours.sort_values(["trial", "segment"]).reset_index(drop=True)
        ref = ref.sort_values(["trial", "segment"]).reset_index(drop=True)
        if len(ours) != len(ref) or not (ours["segment"].values == ref["segment"].values).all():
            sys.exit(f"{path.stem}: ours and the reference disagree on the segments")
        a, b = np.stack(ours["eeg"].values), np.stack(ref["eeg"].values)
        worst = max(worst, float(np.abs(a - b).max()))
    return worst


STAGES = (  # (label, file suffix, function name): cumulative time in the profile
    ("unpickle (read_deap_file)", "sources/deap.py", "read_deap_file"),
    ("trial build (load - unpickle)", "sources/deap.py", "load"),
    ("EEG features (eeg_trial_features)", "features/eeg.py", "eeg_trial_features"),
    ("table build (_eeg_unit_table - features)", "data/prepare.py", "_eeg_unit_table"),
    ("Parquet write (write_table)", "data/shards.py", "write_table"),
    ("checksums (sha256_file)", "data/shards.py", "sha256_file"),
    ("index + manifest (prepare - shards)", "data/prepare.py", "prepare"),
)


def profile_ours(raw: Path, out: Path) -> tuple[float, dict[str, float]]:
    """In-process ``prepare(workers=1)`` under cProfile: total seconds and seconds per stage."""
    from mercl.data.prepare import prepare

    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(prepare, raw, "deap", out, workers=1, progress=False)
    total = time.perf_counter() - start
    cumulative: dict[tuple[str, str], float] = {}
    for (filename, _, name), (_, _, _, ct, _) in pstats.Stats(profiler).stats.items():
        for _, suffix, func in STAGES:
            if name == func and filename.endswith(suffix):
                cumulative[(suffix, func)] = cumulative.get((suffix, func), 0.0) + ct
    get = {func: cumulative.get((suffix, func), 0.0) for _, suffix, func in STAGES}
    stages = {
        STAGES[0][0]: get["read_deap_file"],
        STAGES[1][0]: get["load"] - get["read_deap_file"],
        STAGES[2][0]: get["eeg_trial_features"],
        STAGES[3][0]: get["_eeg_unit_table"] - get["eeg_trial_features"],
        STAGES[4][0]: get["write_table"],
        STAGES[5][0]: get["sha256_file"],
    }
    stages[STAGES[6][0]] = get["prepare"] - sum(stages.values())
    return total, stages


# ---------------------------------------------------------------- memory: one row, short vs long file

MEM_CHANNELS, MEM_SFREQ, MEM_ROW = 32, 512.0, (60.0, 12.0)  # row: onset, duration (s)
MEM_FILES = (("short", 180.0), ("long", 3600.0))  # name, recording length (s)
MEM_RATES = (None, 128.0)  # the file's rate, then resampled


def write_one_row_recording(folder: Path, seconds: float) -> Path:
    """``folder/manifest.csv`` with one 12 s row of ``folder/rec.edf`` (32 ch, 512 Hz, ``seconds`` long)."""
    from mercl.data.synth_sources import write_recording

    if (folder / "rec.edf").is_file() and (folder / "manifest.csv").is_file():
        return folder  # kept from an earlier run (--keep)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    eeg = rng.standard_normal((MEM_CHANNELS, int(seconds * MEM_SFREQ)), dtype=np.float32) * 20e-6
    write_recording(folder / "rec.edf", eeg, MEM_SFREQ, [f"EEG{i:02d}" for i in range(MEM_CHANNELS)])
    del eeg
    onset, duration = MEM_ROW
    (folder / "manifest.csv").write_text(
        f"subject,trial,stimulus,eeg,onset,duration,valence\ns01,0,none,rec.edf,{onset},{duration},5\n"
    )
    return folder


# The child reports its own high-water mark (VmHWM) as it exits. ``ru_maxrss`` of a child
# is not enough: a child started by vfork/fork carries its parent's peak into its own.
PEAK_RUNNER = (
    "import sys\n"
    "from mercl.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
    "print('VmHWM_KB', hwm.split()[1], file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def cli_peak_rss_mb(args: list[str]) -> float:
    """Run ``mercl ARGS`` in a fresh process; its peak resident set size in MB."""
    done = subprocess.run([sys.executable, "-c", PEAK_RUNNER, *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"mercl {' '.join(args[:3])} ... failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    kib = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("VmHWM_KB")]
    return int(kib[-1]) / 1024


def prepare_peak_rss_mb(raw: Path, out: Path, resample: float | None) -> float:
    """Peak RSS (MB) of ``mercl prepare RAW --source manifest`` (one worker, inline) into ``out``."""
    args = ["prepare", str(raw), "--source", "manifest", "-o", str(out), "--no-progress", "--workers", "1"]
    if resample is not None:
        args += ["--resample", f"{resample:g}"]
    shutil.rmtree(out, ignore_errors=True)
    return cli_peak_rss_mb(args)


def memory_report(work: Path) -> dict[str, dict[str, float]]:
    """Peak RSS (MB) per rate label and file name; prints the side-by-side table."""
    raws = {}
    for name, seconds in MEM_FILES:
        t = time.perf_counter()
        # in a child process: a child's ru_maxrss starts from its parent's RSS at the fork,
        # so this process must never hold the recording itself
        raws[name] = work / f"mem-{name}"
        subprocess.run([sys.executable, __file__, "--write-recording", str(raws[name]), str(seconds)], check=True)
        size = (raws[name] / "rec.edf").stat().st_size / 1e6
        print(f"  wrote {name} recording ({seconds / 60:g} min, {size:.0f} MB EDF) in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
    peaks: dict[str, dict[str, float]] = {}
    for rate in MEM_RATES:
        label = "file rate (512 Hz)" if rate is None else f"resampled to {rate:g} Hz"
        peaks[label] = {name: prepare_peak_rss_mb(raws[name], work / f"mem-out-{name}", rate) for name, _ in MEM_FILES}
    onset, duration = MEM_ROW
    print()
    print(f"Peak RSS of mercl prepare --source manifest, one {duration:g} s row (onset {onset:g} s), "
          f"{MEM_CHANNELS} ch @ {MEM_SFREQ:g} Hz EDF, 1 worker, EEG only:")
    print(f"  {'':24s} {'3 min file':>11s} {'1 h file':>11s} {'long - short':>13s} {'long / short':>13s}")
    for label, peak in peaks.items():
        short, long = peak["short"], peak["long"]
        print(f"  {label:24s} {short:8.0f} MB {long:8.0f} MB {long - short:+10.0f} MB {long / short:12.2f}x")
    whole = MEM_CHANNELS * MEM_SFREQ * (MEM_FILES[1][1] - MEM_FILES[0][1]) * 8 / 1e6
    print(f"  (reading whole files as float64 would add ~{whole:.0f} MB for the long one; the issue measured +232 MB)")
    return peaks


# ---------------------------------------------------------------- memory: load_dataset, whole or streamed

LOAD_STUDY = {"subjects": 8, "stimuli": 8, "duration": 60.0, "channels": 32, "video_size": 64, "fps": 4}
LOAD_PROBE = (  # argv: dataset, mode ("whole" or "stream"); prints MB over the RSS before loading
    "import sys\n"
    "def mb(key):\n"
    "    return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]) / 1024\n"
    "import numpy as np\n"
    "from mercl.data.reader import SegmentDataset, load_dataset\n"
    "base = mb('VmRSS:')\n"
    "try:\n"
    "    prepared = load_dataset(sys.argv[1], verify=False, **({'stream': True} if sys.argv[2] == 'stream' else {}))\n"
    "except TypeError:  # a version without stream=\n"
    "    sys.exit(print('nan nan nan nan'))\n"
    "held, peak = mb('VmRSS:') - base, mb('VmHWM:') - base\n"
    "items = SegmentDataset(prepared, np.arange(len(prepared)), 'valence2')\n"
    "for i in range(len(items)):\n"
    "    items[i]\n"
    "print(held, peak, mb('VmRSS:') - base, mb('VmHWM:') - base)\n"
)


def load_report(work: Path) -> None:
    """RSS of ``load_dataset`` (whole, and ``stream=True`` as predict loads) on a synthetic study, then
    after serving every row through SegmentDataset; printed beside the arrays' size."""
    from mercl.data.prepare import load_prepare_config, prepare
    from mercl.data.synth import SynthConfig, synthesize

    if not (work / "study" / "manifest.csv").is_file():  # kept from an earlier run (--keep)
        synthesize(work / "study", SynthConfig(**LOAD_STUDY))
    result = prepare(work / "study", "manifest", work / "study-out", config=load_prepare_config(None, {}),
                     workers=2, progress=False)
    shapes, counts = result.manifest["shapes"], result.manifest["counts"]
    n_clip_segments = sum(pq.read_metadata(result.dataset_dir / rel).num_rows
                          for rel in result.manifest["files"] if rel.startswith("stimuli/"))
    arrays = (counts["segments"] * 4 * np.prod(shapes["eeg"])
              + n_clip_segments * (4 * np.prod(shapes["audio"]) + np.prod(shapes["video"]))) / 1e6
    print()
    print(f"load_dataset, {LOAD_STUDY['subjects']} subjects x {LOAD_STUDY['stimuli']} clips x "
          f"{LOAD_STUDY['duration']:g} s ({counts['segments']:,} EEG rows, {n_clip_segments} clip segments of "
          f"{shapes['video'][0]} x {shapes['video'][-1]} px frames: {arrays:.0f} MB of arrays); MB over the RSS before:")
    print(f"  {'':22s} {'held':>8s} {'peak':>8s} {'after serving every row':>24s} {'its peak':>9s}")
    for mode in ("whole", "stream"):
        done = subprocess.run([sys.executable, "-c", LOAD_PROBE, str(result.dataset_dir), mode],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"load_dataset probe failed:\n{done.stderr}")
        held, peak, served, served_peak = (float(x) for x in done.stdout.split()[-4:])
        label = "whole (evaluate, ...)" if mode == "whole" else "stream=True (predict)"
        print(f"  {label:22s} {held:8.0f} {peak:8.0f} {served:24.0f} {served_peak:9.0f}")


# ---------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=4, help="DEAP subjects to write (default 4)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs of each (the fastest is kept)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    parser.add_argument("--only", choices=("throughput", "memory"), help="run one part (default: both)")
    parser.add_argument("--reference-run", type=Path, metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument("--write-recording", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reference_run is not None:
        return reference_main(args.reference_run, [Path(f) for f in args.files], args.workers)
    if args.write_recording is not None:
        write_one_row_recording(args.write_recording, float(args.files[0]))
        return 0

    if args.only != "memory":
        throughput_report(args)
    if args.only != "throughput":
        work = args.keep or Path(tempfile.mkdtemp(prefix="mercl-bench-mem-"))
        work.mkdir(parents=True, exist_ok=True)
        try:
            print(f"memory: one row from a short and a long recording, in {work} ...", flush=True)
            memory_report(work)
            load_report(work)
        finally:
            if args.keep is None:
                shutil.rmtree(work, ignore_errors=True)
    return 0


def throughput_report(args: argparse.Namespace) -> None:
    """The DEAP throughput comparison (the first part of the module docstring)."""
    work = args.keep or Path(tempfile.mkdtemp(prefix="mercl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    try:
        print(
            f"writing {args.subjects} DEAP-layout subjects (float64 (40, 40, 8064)) to {work} ...", flush=True
        )
        t = time.perf_counter()
        raw = work / "raw"
        paths = write_deap_inputs(raw, args.subjects)
        size_mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"  {size_mb:.0f} MB written in {time.perf_counter() - t:.1f} s", flush=True)

        io_floor = min(time_unpickle(paths) for _ in range(2))  # second pass: page cache warm
        ours, ref = (np.inf, np.inf), (np.inf, np.inf)  # (wall, CPU) of the fastest run
        for r in range(args.repeat):
            for d in (work / "ours", work / "reference"):
                shutil.rmtree(d, ignore_errors=True)
            wall, cpu, ref_segments = run_reference(paths, work / "reference", args.workers)
            ref = min(ref, (wall, cpu))
            print(f"  run {r + 1}: reference {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
            wall, cpu, segments, dataset = run_ours(raw, work / "ours", args.workers)
            ours = min(ours, (wall, cpu))
            print(f"  run {r + 1}: mercl prepare {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
        if segments != ref_segments:
            sys.exit(f"segment counts differ: ours {segments}, reference {ref_segments}")
        max_diff = check_same_features(dataset, work / "reference", paths)
        profile_total, stages = profile_ours(raw, work / "profiled")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()[0]

    w = args.workers
    scale = ALL_DEAP_SEGMENTS / segments
    print()
    print(
        f"DEAP-format EEG, {args.subjects} subjects = {segments:,} segments of {SEGMENT_S:g} s "
        f"(hop {HOP_S:g} s, {N_EEG} ch @ {SFREQ:g} Hz); workers={w}; {os.cpu_count()} CPUs; "
        f"load average {load_before:.1f} before, {load_after:.1f} after"
    )
    print(f"  {'':40s} {'wall s':>8s} {'seg/s':>8s} {'CPU s':>8s} {'seg/CPU-s':>10s}")
    print(f"  {'I/O floor: unpickle only (1 process)':40s} {io_floor:8.2f} {segments / io_floor:8,.0f}")
    for label, (wall, cpu) in (("mercl prepare --source deap (CLI)", ours), ("plain SciPy reference", ref)):
        print(f"  {label:40s} {wall:8.2f} {segments / wall:8,.0f} {cpu:8.2f} {segments / cpu:10,.0f}")
    print(f"  ours / reference: {ours[0] / ref[0]:.2f}x wall, {ours[1] / ref[1]:.2f}x CPU (target <= 2x)")
    print(f"  same features: max |ours - reference| = {max_diff:.2e} (log10 band power)")
    print()
    print(f"Where the time goes in ours (in-process prepare(), 1 worker, cProfile): {profile_total:.2f} s")
    for label, seconds in stages.items():
        print(f"  {label:42s} {seconds:7.2f} s  {100 * seconds / profile_total:5.1f} %")
    print()
    print(f"Extrapolated to all 32 DEAP subjects ({ALL_DEAP_SEGMENTS:,} segments, linear in segments):")
    for label, (wall, cpu) in (("mercl prepare", ours), ("reference", ref)):
        idle = cpu * scale / w
        verdict = " / ".join("met" if x <= TARGET_S else "MISSED" for x in (wall * scale, idle))
        print(
            f"  {label:14s} {wall * scale:7.1f} s as measured; {idle:7.1f} s on {w} idle cores (CPU s / {w}); "
            f"{TARGET_S:g} s target: {verdict}"
        )
    print(f"  {'I/O floor':14s} {io_floor * scale:7.1f} s (unpickling alone, 1 process)")
    anchor = ALL_DEAP_SEGMENTS / TORCHEEG_BANDPASS_SEG_PER_S
    print(
        f"  torcheeg's band-pass path at ~{TORCHEEG_BANDPASS_SEG_PER_S:g} segments/s would take {anchor:.0f} s; "
        f"ours runs {segments / ours[0] / TORCHEEG_BANDPASS_SEG_PER_S:.0f}x that rate as measured, "
        f"{segments * w / ours[1] / TORCHEEG_BANDPASS_SEG_PER_S:.0f}x on idle cores (needed >= 10x)"
    )
    print()


if __name__ == "__main__":
    raise SystemExit(main())
