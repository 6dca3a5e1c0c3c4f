"""MATLAB ``.mat`` (v5/v7) reading shared by the DREAMER and AMIGOS sources.

Files are read with ``scipy.io.loadmat(simplify_cells=True)``: structs become dicts, cell
arrays become lists or object arrays, and singleton dimensions are squeezed (a (1, 12) row
becomes (12,)). The helpers below turn what that gives back into checked numpy arrays, each
problem one :class:`~mercl.errors.InputFileError` naming the file and the place in it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from mercl.data.sources._common import check_finite, expect_file, short_reason
from mercl.errors import InputFileError


def load_mat(path: Path, what: str, variable_names: list[str] | None = None) -> dict:
    """``loadmat(simplify_cells=True)`` of ``path`` with one-line errors (missing, truncated, v7.3).

    With ``variable_names`` only those are read; when one of them is missing, the whole file is
    read after all, so that a file cut short says so instead of lacking the variable.
    """
    expect_file(path, what)
    content = _loadmat(path, variable_names)
    if variable_names is not None and not set(variable_names) <= set(content):
        content = _loadmat(path, None)
    return content


def _loadmat(path: Path, variable_names: list[str] | None) -> dict:
    try:
        content = scipy.io.loadmat(str(path), simplify_cells=True, variable_names=variable_names)
    except NotImplementedError:
        raise InputFileError(path, "MATLAB v7.3 (HDF5) files are not supported; re-save with -v7") from None
    except MemoryError:
        raise InputFileError(path, "truncated or not a MATLAB file (a size in its header is absurd)") from None
    except Exception as exc:  # scipy raises many types for damaged files
        raise InputFileError(path, f"truncated or not a MATLAB file ({short_reason(exc)})") from None
    return {k: v for k, v in content.items() if not k.startswith("__")}


def require_keys(content, keys: tuple[str, ...], path: Path, where: str) -> None:
    """``content`` must be a dict (a MATLAB struct or the file's variables) holding ``keys``."""
    if not isinstance(content, dict):
        raise InputFileError(path, f"{where} must be a struct with fields {', '.join(keys)}, got {_kind(content)}")
    missing = [k for k in keys if k not in content]
    if missing:
        raise InputFileError(path, f"{where} has no {', '.join(repr(k) for k in missing)} "
                                   f"(has {', '.join(sorted(map(str, content))) or 'nothing'})")


def cells(value, path: Path, where: str) -> list:
    """The elements of a cell array (or struct array) as a list; one element squeezed out of its
    cell (``simplify_cells`` does that) comes back as a one-item list."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray) and value.dtype == object:
        return list(value.ravel(order="F"))
    if isinstance(value, dict) or (isinstance(value, np.ndarray) and value.dtype != object):
        return [value]
    raise InputFileError(path, f"{where} must be a cell array, got {_kind(value)}")


def is_empty(value) -> bool:
    """An empty MATLAB cell element (``[]``, ``''`` or a 0-sized array)."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, np.ndarray) and value.size == 0


def samples_by_channels(value, n_columns: int, path: Path, where: str, *, n_eeg: int | None = None,
                        at_least: int = 1) -> np.ndarray:
    """A (samples, n_columns) real matrix as float64 (the releases store time down the rows) whose
    first ``n_eeg`` columns (default all) are finite. The transposed layout (columns x samples)
    is refused naming that."""
    array = value if isinstance(value, np.ndarray) else np.asarray(value) if _numeric(value) else None
    if array is None or array.dtype == object or not _real_numbers(array):
        raise InputFileError(path, f"{where} must be a (samples, {n_columns}) array of numbers, got {_kind(value)}")
    if array.ndim == 2 and array.shape[0] == n_columns and array.shape[1] != n_columns:
        raise InputFileError(path, f"{where} is {array.shape}: channels x samples, transposed; the release stores "
                                   f"(samples, {n_columns})")
    if array.ndim != 2 or array.shape[1] != n_columns:
        raise InputFileError(path, f"{where} must be (samples, {n_columns}), got {array.shape}")
    if array.shape[0] < at_least:
        raise InputFileError(path, f"{where} has {array.shape[0]} samples, needs at least {at_least}")
    array = array.astype(np.float64, copy=False)
    check_finite(array[:, :n_eeg], path, where)
    return array


def numbers(value, count: int, path: Path, where: str) -> np.ndarray:
    """``count`` finite real numbers (any shape holding exactly that many) as a float64 vector."""
    array = np.asarray(value) if _numeric(value) else None
    if array is None or array.dtype == object or not _real_numbers(array) or array.size != count:
        raise InputFileError(path, f"{where} must hold {count} numbers, got {_kind(value)}")
    array = array.astype(np.float64).ravel()
    if not np.isfinite(array).all():
        raise InputFileError(path, f"{where} holds NaN/Inf")
    return array


def text(value, path: Path, where: str) -> str:
    """A MATLAB char array (or a whole number) as a stripped string."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        return "".join(value.ravel().tolist()).strip()
    if _numeric(value):
        array = np.asarray(value)
        if array.size == 1 and _real_numbers(array) and float(array.ravel()[0]).is_integer():
            return str(int(array.ravel()[0]))
    raise InputFileError(path, f"{where} must be text, got {_kind(value)}")


def _numeric(value) -> bool:
    return isinstance(value, (np.ndarray, int, float, np.number)) and not isinstance(value, bool)


def _real_numbers(array: np.ndarray) -> bool:
    return array.dtype.kind in "iuf"


def _kind(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array {value.shape}"
    if isinstance(value, dict):
        return f"a struct with fields {', '.join(sorted(map(str, value)))[:120]}"
    if isinstance(value, list):
        return f"a cell of {len(value)}"
    return type(value).__name__
