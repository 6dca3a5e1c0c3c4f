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
