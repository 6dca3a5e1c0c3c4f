"""The typed config loader names the bad field for every kind of mistake."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from mercl.config import FieldProblem, config_hash, from_dict, load_config, to_dict
from mercl.errors import ConfigError, InputFileError


@dataclass
class Inner:
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    kind: Literal["knn", "linear"] = "knn"


@dataclass
class Outer:
    width: int = 32
    heads: int = 4
    lr: float = 1e-3
    name: str | None = None
    inner: Inner = field(default_factory=Inner)

    def validate(self):
        if self.width % self.heads:
            raise FieldProblem("heads", f"must divide width ({self.width}), got {self.heads}")


def test_defaults_and_conversion():
    cfg = from_dict(Outer, {"lr": 1, "inner": {"dilations": [1, 3]}})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.inner.dilations == [1, 3]
    assert to_dict(cfg)["inner"] == {"dilations": [1, 3], "kind": "knn"}


@pytest.mark.parametrize(
    "data, field_name",
    [
        ({"width": "wide"}, "width"),
        ({"inner": {"dilations": [1, "x"]}}, "inner.dilations[1]"),
        ({"inner": {"kind": "svm"}}, "inner.kind"),
        ({"inner": {"dilatons": [1]}}, "inner.dilatons"),
        ({"heads": 5}, "heads"),
        ({"width": True}, "width"),
        ({"inner": [1, 2]}, "inner"),
    ],
)
def test_bad_field_is_named(data, field_name):
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, data)
    assert f"'{field_name}'" in str(info.value)
    assert "\n" not in str(info.value)


def test_hash_is_stable_and_sensitive():
    assert config_hash(Outer()) == config_hash(from_dict(Outer, {}))
    assert config_hash(Outer()) != config_hash(Outer(lr=2e-3))


def test_load_config_yaml_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("width: 64\ninner:\n  kind: linear\n")
    cfg = load_config(Outer, path, overrides={"heads": 8})
    assert (cfg.width, cfg.heads, cfg.inner.kind) == (64, 8, "linear")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(Outer, path, overrides={"heads": 7})
    path.write_text("width: [1,\n")
    with pytest.raises(InputFileError, match="not valid YAML"):
        load_config(Outer, path)
    with pytest.raises(InputFileError, match="no such file"):
        load_config(Outer, tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------- GPU-related fields


def test_precision_is_one_of_fp32_bf16_fp16_and_named_when_wrong():
    from mercl.training.config import load_train_config

    assert load_train_config("tiny").precision == "fp32"
    assert load_train_config("tiny", {"precision": "bf16"}).precision == "bf16"
    with pytest.raises(ConfigError, match=r"'precision': must be one of fp32, bf16, fp16, got 'fp8'"):
        load_train_config("tiny", {"precision": "fp8"})


SPACE = {"space.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}, "data.dataset": "unused"}


@pytest.mark.parametrize("gpus", [0.5, 1.5, 0.25])
def test_search_refuses_a_gpu_share_per_rank_that_nccl_cannot_run(gpus):
    """Two DDP ranks on one GPU fail in NCCL ("Duplicate GPU detected"): refused before Ray starts."""
    from tuning.config import load_search_config

    with pytest.raises(ConfigError, match=r"'resources.gpus_per_worker': must be a whole number of GPUs "
                                          r"with 2 DDP workers"):
        load_search_config(None, {**SPACE, "resources.gpus_per_worker": gpus, "resources.num_workers": 2})


@pytest.mark.parametrize("workers, gpus", [(1, 0.5), (2, 1), (4, 2), (2, 0), (3, 0)])
def test_search_accepts_whole_gpus_per_rank_a_share_for_one_rank_and_cpu_only(workers, gpus):
    from tuning.config import load_search_config

    cfg = load_search_config(None, {**SPACE, "resources.gpus_per_worker": gpus, "resources.num_workers": workers})
    assert cfg.resources.use_gpu == (gpus > 0)
