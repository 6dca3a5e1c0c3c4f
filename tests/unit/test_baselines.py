"""The paper's baselines: features recomputed from a real-format synthetic study (mp4 + EDF),
their cache, fitting and predicting, beating the majority class on planted structure, no
leakage from rows outside ``fit``."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from mercl.baselines import BASELINE_NAMES, BASELINES, BaselineFeatures, build_features, get_baseline
from mercl.baselines.ave_kelm import KernelELM, disr_select
from mercl.baselines.features import VISUAL_NAMES, BaselineFeatureConfig, cache_folder
from mercl.config import from_dict
from mercl.data.prepare import PrepareConfig, prepare
from mercl.data.reader import load_dataset
from mercl.data.synth import SynthConfig, synthesize
from mercl.errors import ConfigError, MerclError

# test-sized deep models: about a second each on one CPU thread (two threads on a machine
# busy with other work were 15-40x slower)
SMALL = {
    "ve_bilstm": {"input_dim": 32, "hidden": [32, 16], "epochs": 15, "device": "cpu", "threads": 1},
    "ave_lstm": {"hidden": 16, "epochs": 15, "pca_components": 8, "device": "cpu", "threads": 1},
    "ave_kelm": {"av_features": 8, "eeg_features": 8},
}


def make(name: str, seed: int = 0):
    return get_baseline(name)(seed=seed, **SMALL.get(name, {}))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """3 subjects x 4 clips of 10 s (one clip without audio), 32 px video -> 48 EEG rows."""
    root = tmp_path_factory.mktemp("baselines")
    synthesize(root / "raw", SynthConfig(subjects=3, stimuli=4, duration=10.0, video_size=32, fps=4))
    cfg = from_dict(PrepareConfig, {"video": {"size": 32, "fps": 1.0}})
    result = prepare(root / "raw", "manifest", root / "out", config=cfg, workers=1, progress=False)
    prepared = load_dataset(result.dataset_dir)
    start = time.perf_counter()
    features = build_features(prepared, progress=False)
    return prepared, features, time.perf_counter() - start


# ---------------------------------------------------------------- features from the recordings


def test_features_have_the_documented_shapes(study):
    prepared, f, _ = study
    n, m = len(prepared), len(prepared.stimuli)
    assert (n, m) == (48, 16)
    assert f.eeg_psd.shape == (48, 7, 14, 5)
    assert f.eeg_wpd.shape == (48, 14, 12)  # 128 Hz: level 4, 4 Hz nodes below 48 Hz
    assert f.eeg_raw.shape == (48, 14, 256)  # 4 s at 64 Hz
    assert f.egemaps.shape == (16, 88) and f.mfcc.shape == (16, 40, 13)
    assert f.visual.shape == (16, len(VISUAL_NAMES)) and f.vgg.shape == (16, 4, 512)
    assert f.frames.shape == (16, 4, 3, 16, 16)
    for name in ("eeg_wpd", "eeg_raw", "egemaps", "mfcc", "visual", "vgg", "frames"):
        assert np.isfinite(getattr(f, name)).all(), name
    assert np.array_equal(f.stim_row, prepared.stimulus_index)


def test_egemaps_gives_the_88_opensmile_functionals_per_segment(study):
    import opensmile

    _, f, _ = study
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
    )
    assert f.names["egemaps"] == list(smile.feature_names) and len(f.names["egemaps"]) == 88
    with_audio = f.egemaps[f.audio_present]
    assert len(with_audio) == 12 and (with_audio.std(axis=0) > 0).sum() > 60  # segments differ
    assert not f.egemaps[~f.audio_present].any() and not f.mfcc[~f.audio_present].any()
    # loudness functional follows the shards' segment energy
    loud = with_audio[:, f.names["egemaps"].index("loudness_sma3_amean")]
    corr = np.corrcoef(loud, study[0].stimuli.audio_energy[f.audio_present])[0, 1]
    assert corr > 0.7


def test_raw_eeg_is_cut_at_the_segments_of_the_shards(study):
    """Alpha power of the recomputed raw segments matches the shards' alpha band power row by row."""
    import scipy.signal

    prepared, f, _ = study
    freqs, psd = scipy.signal.welch(f.eeg_raw, fs=f.raw_sfreq, nperseg=64, axis=-1)  # (N, C, F)
    alpha = np.log10(psd[..., (freqs >= 8) & (freqs < 13)].sum(-1))  # (N, C)
    shard_alpha = f.eeg_psd[:, :, :, 2].mean(axis=1)  # (N, C) mean over sub-windows
    corr = np.corrcoef(alpha.ravel(), shard_alpha.ravel())[0, 1]
    assert corr > 0.9
    shifted = np.roll(alpha, 1, axis=0)  # a misalignment by one row would not match as well
    assert np.corrcoef(shifted.ravel(), shard_alpha.ravel())[0, 1] < corr - 0.05


def test_features_are_cached_once_per_dataset_and_config(study):
    prepared, f, first_s = study
    folder = cache_folder(prepared, BaselineFeatureConfig())
    assert folder.parent == prepared.path / "cache" and folder.name.startswith("baselines-")
    assert sorted(p.name for p in folder.iterdir()) == ["eeg.parquet", "meta.json", "stimuli.parquet"]
    start = time.perf_counter()
    again = build_features(prepared, progress=False)
    cached_s = time.perf_counter() - start
    assert cached_s < first_s / 5
    for name in ("eeg_wpd", "eeg_raw", "egemaps", "mfcc", "visual", "vgg", "frames"):
        assert np.array_equal(getattr(again, name), getattr(f, name)), name
    other = cache_folder(prepared, from_dict(BaselineFeatureConfig, {"n_mfcc": 20}))
    assert other != folder and not other.exists()
    with pytest.raises(ConfigError, match="n_mfcc"):
        build_features(prepared, config={"n_mfcc": 0}, progress=False)


# ---------------------------------------------------------------- every baseline on the study


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_each_baseline_fits_and_predicts_on_the_prepared_study(study, name):
    prepared, f, _ = study
    labels = prepared.labels("quadrant4")
    groups = prepared.trial_groups()
    test = np.flatnonzero(groups % 4 == 0)
    train = np.setdiff1d(np.arange(len(prepared)), test)
    model = make(name).fit(f, train, labels[train])
    predicted = model.predict(f, test)
    assert predicted.shape == (len(test),) and predicted.dtype == np.int64
    assert set(predicted) <= set(labels[train])
    proba = model.predict_proba(f, test)
    assert proba.shape == (len(test), len(np.unique(labels[train])))
    assert np.allclose(proba.sum(axis=1), 1.0) and (proba >= 0).all()
    assert set(model.modalities) <= {"video", "audio", "eeg"}


# ---------------------------------------------------------------- planted structure, leakage


def planted(n: int = 160, seed: int = 0) -> tuple[BaselineFeatures, np.ndarray]:
    """Noise features with the label planted in every modality; each row has its own stimulus row."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sign = (2 * y - 1).astype(np.float32)
    t_e, c, t_v = 5, 4, 3
    eeg_psd = rng.standard_normal((n, t_e, c, 5)).astype(np.float32)
    eeg_psd[:, :, 0, :] += 1.5 * sign[:, None, None]
    eeg_wpd = rng.standard_normal((n, c, 12)).astype(np.float32)
    eeg_wpd[:, 1, 3] += 1.5 * sign
    eeg_raw = rng.standard_normal((n, c, 128)).astype(np.float32)
    eeg_raw[:, 2, :] += 1.0 * sign[:, None]
    egemaps = rng.standard_normal((n, 88)).astype(np.float32)
    egemaps[:, 10:20] += 1.5 * sign[:, None]
    mfcc = rng.standard_normal((n, 12, 13)).astype(np.float32)
    mfcc[:, :, 1] += 1.0 * sign[:, None]
    visual = rng.standard_normal((n, len(VISUAL_NAMES))).astype(np.float32)
    visual[:, :4] += 1.5 * sign[:, None]
    vgg = rng.standard_normal((n, t_v, 512)).astype(np.float32)
    vgg[:, :, :8] += 1.0 * sign[:, None, None]
    frames = rng.uniform(0.3, 0.7, (n, t_v, 3, 4, 4)).astype(np.float32)
    frames[:, :, 0] += 0.2 * sign[:, None, None, None]
    keys = pd.DataFrame(
        {"subject": "s", "trial": np.arange(n), "segment": 0, "stimulus": np.arange(n).astype(str)}
    )
    features = BaselineFeatures(
        keys=keys,
        eeg_psd=eeg_psd,
        eeg_wpd=eeg_wpd,
        eeg_raw=eeg_raw,
        stim_row=np.arange(n),
        audio_present=np.ones(n, bool),
        video_present=np.ones(n, bool),
        egemaps=egemaps,
        mfcc=mfcc,
        visual=visual,
        vgg=vgg,
        frames=frames,
        names={"egemaps": [f"f{i}" for i in range(88)], "visual": list(VISUAL_NAMES)},
        raw_sfreq=32.0,
    )
    return features, y


@pytest.fixture(scope="module")
def planted_data():
    features, y = planted()
    train, test = np.arange(0, 110), np.arange(110, 160)
    return features, y, train, test


@pytest.mark.parametrize("name", [n for n in BASELINE_NAMES if n != "majority"])
def test_each_baseline_beats_the_majority_class_on_planted_structure(planted_data, name):
    features, y, train, test = planted_data
    majority = make("majority").fit(features, train, y[train])
    majority_acc = (majority.predict(features, test) == y[test]).mean()
    acc = (make(name).fit(features, train, y[train]).predict(features, test) == y[test]).mean()
    assert majority_acc < 0.65
    assert acc >= 0.8, f"{name}: accuracy {acc:.2f}, majority {majority_acc:.2f}"


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_fit_sees_only_its_rows(planted_data, name):
    """Scrambling every array of the rows outside ``fit`` (PCA, scalers, selection, ...) changes nothing."""
    features, y, train, test = planted_data
    scrambled, _ = planted(seed=1)
    mixed = BaselineFeatures(**{**features.__dict__})
    for field in ("eeg_psd", "eeg_wpd", "eeg_raw", "egemaps", "mfcc", "visual", "vgg", "frames"):
        values = getattr(features, field).copy()
        values[test] = 100 * getattr(scrambled, field)[test]  # stimulus row == EEG row here
        setattr(mixed, field, values)
    a = make(name).fit(features, train, y[train]).predict_proba(features, train)
    b = make(name).fit(mixed, train, y[train]).predict_proba(mixed, train)
    assert np.allclose(a, b, atol=1e-6)


# ---------------------------------------------------------------- pieces and errors


def test_majority_predicts_the_most_frequent_training_class(planted_data):
    features, _, _, _ = planted_data
    rows = np.arange(6)
    model = make("majority").fit(features, rows, np.array([3, 1, 3, 1, 3, 0]))
    assert model.predict(features, np.arange(20, 25)).tolist() == [3] * 5
    assert model.predict_proba(features, [0]).tolist() == [[1 / 6, 2 / 6, 3 / 6]]
    tie = make("majority").fit(features, rows[:4], np.array([2, 5, 5, 2]))
    assert tie.predict(features, [7]).tolist() == [2]


def test_disr_picks_the_informative_features_first():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.standard_normal((300, 12))
    x[:, 4] += 2 * y
    x[:, 9] += 2 * (y == 2)
    order = disr_select(x, y, k=3, n_bins=5)
    assert order.tolist()[:2] == [4, 9]


def test_kernel_elm_separates_two_blobs_in_closed_form():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    x = rng.standard_normal((100, 3)) + 3 * y[:, None]
    elm = KernelELM(c=10.0).fit(x, y, 2)
    assert (elm.decision_function(x).argmax(1) == y).mean() > 0.95
    from sklearn.metrics.pairwise import rbf_kernel

    kernel = rbf_kernel(x, gamma=1 / 3) + np.eye(100) / 10.0
    target = np.where(np.eye(2)[y] > 0, 1.0, -1.0)
    assert np.allclose(kernel @ elm.beta_, target, atol=1e-6)


def test_bad_options_and_calls_are_one_line_errors(planted_data):
    features, y, train, _ = planted_data
    with pytest.raises(ConfigError, match="ve_bilstm.hidden"):
        get_baseline("ve_bilstm")(hidden=[8])
    with pytest.raises(ConfigError, match="ave_rt.classifier"):
        get_baseline("ave_rt")(classifier="svm")
    with pytest.raises(ConfigError, match="ave_lstm.nonsense"):
        get_baseline("ave_lstm")(nonsense=1)
    with pytest.raises(MerclError, match="unknown baseline 'svm'"):
        get_baseline("svm")
    with pytest.raises(MerclError, match="predict before fit"):
        make("ave_rt").predict(features, train)
    with pytest.raises(MerclError, match="3 labels for 110 training rows"):
        make("ave_rt").fit(features, train, y[:3])
    with pytest.raises(MerclError, match="out of range"):
        make("ave_rt").fit(features, np.array([0, 10_000]), y[:2])
    assert sorted(BASELINES) == sorted(["ve_bilstm", "ave_rt", "ave_kelm", "ave_lstm", "majority"])


def test_vgg19_weights_come_only_from_a_local_torchvision_file(tmp_path):
    import torch

    from mercl.baselines.features import vgg19_extractor
    from mercl.errors import InputFileError

    with pytest.raises(ConfigError, match="vgg19_weights"):
        from_dict(BaselineFeatureConfig, {"vgg19_weights": str(tmp_path / "missing.pt")})
    bad = tmp_path / "bad.pt"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(InputFileError, match="not a torchvision VGG19 state dict") as info:
        vgg19_extractor(str(bad))
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    a, b = vgg19_extractor(None), vgg19_extractor(None)  # seeded random weights: the same twice
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_visual_statistics_agree_with_matplotlib_hsv_and_see_motion():
    from matplotlib.colors import rgb_to_hsv

    from mercl.baselines.features import visual_statistics

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 3, 3, 20, 20), dtype=np.uint8)
    stats = visual_statistics(frames, chunk=2)
    hsv = rgb_to_hsv(np.moveaxis(frames.astype(np.float32) / 255, 2, -1))  # (5, 3, 20, 20, 3)
    energy = (hsv[..., 1] * hsv[..., 2]).mean(axis=(2, 3)).mean(axis=1)
    assert np.allclose(stats[:, VISUAL_NAMES.index("color_energy")], energy, atol=1e-6)
    assert np.allclose(
        stats[:, VISUAL_NAMES.index("saturation_mean")], hsv[..., 1].mean(axis=(1, 2, 3)), atol=1e-6
    )
    still = np.repeat(frames[:, :1], 3, axis=1)
    assert not visual_statistics(still)[:, VISUAL_NAMES.index("motion_mean")].any()
    grey = np.full((1, 2, 3, 8, 8), 128, np.uint8)
    assert visual_statistics(grey)[0, VISUAL_NAMES.index("color_energy")] == 0


def test_missing_recordings_are_a_one_line_error_naming_the_path(study, tmp_path):
    import dataclasses

    from mercl.errors import InputFileError

    prepared, _, _ = study
    gone = tmp_path / "moved-away"
    moved = dataclasses.replace(prepared, manifest={**prepared.manifest, "raw": str(gone)})
    with pytest.raises(InputFileError) as info:
        build_features(moved, cache_dir=tmp_path / "cache", progress=False)
    assert str(gone) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("meta.json"))
