"""Typed configs: dataclasses loaded from YAML/dicts and validated on load.

A config class is a plain ``@dataclass`` whose fields carry type annotations
(int, float, bool, str, Literal[...], list[T], tuple[T, ...], dict[str, T],
Optional[T] and nested dataclasses). :func:`from_dict` checks every value against
its annotation and rejects unknown keys; a class may add range checks in a
``validate(self)`` method that raises :class:`FieldProblem`. Every error is a
:class:`~mercl.errors.ConfigError` naming the dotted field, e.g.
``config field 'model.tcn.dilations[2]': expected int, got 'x'``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from mercl.errors import ConfigError, InputFileError

T = TypeVar("T")


class FieldProblem(Exception):
    """Raised from a config's ``validate``: ``FieldProblem('heads', 'must divide width')``."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def at_least(config: Any, minimum: float, name: str) -> None:
    """Raise :class:`FieldProblem` naming ``name`` when ``config.<name>`` is below ``minimum``."""
    value = getattr(config, name)
    if value < minimum:
        raise FieldProblem(name, f"must be >= {minimum}, got {value}")


def _join(prefix: str, name: str) -> str:
    if not prefix:
        return name
    return f"{prefix}{name}" if name.startswith("[") else f"{prefix}.{name}"


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert(value: Any, tp: Any, field: str, source: Any) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, field, source)
            except ConfigError as exc:
                errors.append(exc.problem)
        raise ConfigError(field, errors[0] if len(errors) == 1 else " or ".join(errors), source)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(field, f"must be one of {choices}, got {_describe(value)}", source)
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, prefix=field, source=source)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(field, f"expected a list, got {_describe(value)}", source)
        item_type = args[0] if args else Any
        items = [_convert(v, item_type, _join(field, f"[{i}]"), source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(field, f"expected a mapping, got {_describe(value)}", source)
        val_type = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, val_type, _join(field, str(k)), source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(field, f"expected true/false, got {_describe(value)}", source)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(field, f"expected an integer, got {_describe(value)}", source)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field, f"expected a number, got {_describe(value)}", source)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(field, f"expected a string, got {_describe(value)}", source)
        return value
    return value


def from_dict(cls: type[T], data: Any, *, prefix: str = "", source: Any = None) -> T:
    """Build a config dataclass from ``data``, validating every field.

    Missing fields take their defaults; unknown keys and wrong types raise a
    :class:`ConfigError` naming the dotted field path.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix or "<root>", f"expected a mapping, got {_describe(data)}", source)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(_join(prefix, str(key)), f"unknown field (known: {known})", source)
    kwargs = {}
    for name, f in fields.items():
        path = _join(prefix, name)
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], path, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(path, "is required", source)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except FieldProblem as exc:
            raise ConfigError(_join(prefix, exc.field), exc.problem, source) from None
    return obj


def to_dict(obj: Any) -> Any:
    """A plain, YAML/JSON-safe dict of a config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return obj


def config_hash(obj: Any, length: int = 12) -> str:
    """A short, stable hash of a config's content."""
    blob = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file, turning I/O and syntax problems into one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "no such file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise InputFileError(path, f"{where}not valid YAML ({getattr(exc, 'problem', exc)})") from None


def load_config(cls: type[T], path: str | Path, overrides: dict[str, Any] | None = None) -> T:
    """Load and validate a YAML config file, with optional dotted-key overrides."""
    data = load_yaml(path) or {}
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return from_dict(cls, data, source=path)


def set_dotted(data: dict, key: str, value: Any) -> None:
    """``set_dotted(d, 'a.b.c', 1)`` sets ``d['a']['b']['c'] = 1``, creating levels."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
