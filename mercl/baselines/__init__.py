"""The MERCL paper's baselines (section 4.2), re-implemented, plus the majority class.

``BASELINES`` maps a name to its class; every class follows :class:`~mercl.baselines.base.Baseline`
(``fit(features, rows, labels)`` / ``predict(features, rows)`` on a
:class:`~mercl.baselines.features.BaselineFeatures` built once per dataset by
:func:`~mercl.baselines.features.build_features`).

* ``ve_bilstm``: VE-BiLSTM (Ogawa et al. 2018), video + EEG, two BiLSTM layers.
* ``ave_rt``: AVE-RT (Xing et al. 2019), EEG PSD + eGeMAPS + luminance/colour energy, random tree.
* ``ave_kelm``: AVE-KELM (Duan et al. 2016), DISR / decision-tree selection, kernel ELMs.
* ``ave_lstm``: AVE-LSTM (Chen et al. 2022), MFCC / VGG19 / PCA-EEG LSTMs, decision fusion.
* ``majority``: the training rows' most frequent class.
"""

from __future__ import annotations

from mercl.baselines.ave_kelm import AveKELM
from mercl.baselines.ave_lstm import AveLSTM
from mercl.baselines.ave_rt import AveRT
from mercl.baselines.base import Baseline
from mercl.baselines.features import BaselineFeatureConfig, BaselineFeatures, build_features
from mercl.baselines.majority import Majority
from mercl.baselines.ve_bilstm import VeBiLSTM
from mercl.errors import MerclError

BASELINES: dict[str, type[Baseline]] = {
    cls.name: cls for cls in (VeBiLSTM, AveRT, AveKELM, AveLSTM, Majority)
}
BASELINE_NAMES = tuple(BASELINES)

# Options for running on a CPU. VE-BiLSTM's defaults are the paper's sizes (1024-d inputs,
# 1024 and 256 BiLSTM units): on the 2-core dev machine one epoch over the demo study's 432
# training rows took minutes; these sizes fit it in under a minute. The other baselines'
# defaults are already CPU-sized.
CPU_OPTIONS: dict[str, dict] = {
    "ve_bilstm": {"input_dim": 128, "hidden": [128, 64], "epochs": 20},
}


def get_baseline(name: str) -> type[Baseline]:
    """The baseline class called ``name`` (MerclError listing the known ones otherwise)."""
    try:
        return BASELINES[name]
    except KeyError:
        raise MerclError(f"unknown baseline '{name}' (choose from {', '.join(BASELINE_NAMES)})") from None


__all__ = [
    "BASELINES",
    "BASELINE_NAMES",
    "CPU_OPTIONS",
    "Baseline",
    "BaselineFeatureConfig",
    "BaselineFeatures",
    "build_features",
    "get_baseline",
]
