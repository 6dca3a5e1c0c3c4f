"""Parquet shard helpers: array columns, shape metadata, atomic writes, checksums.

An N-D array column is stored flat as ``fixed_size_list<float32|uint8>`` (one list per
row); the per-row shape lives in the schema metadata as JSON under ``b"shapes"``
(e.g. ``{"eeg": [13, 32, 5]}``), so ``pandas.read_parquet`` and
``ray.data.read_parquet`` read shards directly and :func:`array_column` restores shapes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mercl import atomic
from mercl.atomic import write_atomic
from mercl.errors import InputFileError

SHAPES_KEY = b"shapes"
INFO_KEY = b"mercl"


def fixed_list_array(values: np.ndarray, dtype: pa.DataType) -> pa.FixedSizeListArray:
    """(N, *shape) array -> N flat fixed-size lists of ``prod(shape)`` items of ``dtype``."""
    values = np.ascontiguousarray(values)
    size = int(np.prod(values.shape[1:], dtype=np.int64))
    if size == 0:
        raise ValueError(f"array column with empty rows: shape {values.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=dtype), size)


def array_column(table: pa.Table, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Column ``name`` of fixed-size lists as an (N, *shape) numpy array (shape from metadata if None)."""
    if shape is None:
        shape = tuple(read_shapes(table.schema)[name])
    column = table.column(name)
    if column.num_chunks == 0:
        values = np.zeros(0, dtype=column.type.value_type.to_pandas_dtype())
    else:
        chunks = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in column.chunks]
        values = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    if not values.flags.writeable:  # a zero-copy view of Arrow memory; torch wants writable arrays
        values = values.copy()
    return values.reshape((len(table), *shape))


def shapes_metadata(shapes: Mapping[str, tuple[int, ...]], info: Mapping[str, Any] | None = None) -> dict:
    """Schema metadata holding the per-row array shapes (and optional extra JSON info)."""
    meta = {SHAPES_KEY: json.dumps({k: [int(d) for d in v] for k, v in shapes.items()}).encode()}
    if info is not None:
        meta[INFO_KEY] = json.dumps(info).encode()
    return meta


def read_shapes(schema: pa.Schema) -> dict[str, list[int]]:
    """The ``b"shapes"`` metadata of a schema ({} if absent)."""
    meta = schema.metadata or {}
    return json.loads(meta[SHAPES_KEY]) if SHAPES_KEY in meta else {}


def read_info(schema: pa.Schema) -> dict[str, Any]:
    """The ``b"mercl"`` metadata of a schema ({} if absent)."""
    meta = schema.metadata or {}
    return json.loads(meta[INFO_KEY]) if INFO_KEY in meta else {}


def write_table(table: pa.Table, path: Path) -> None:
    """Write a Parquet file atomically (temporary name, then ``os.replace``)."""
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def write_json(obj: Any, path: Path) -> None:
    """Write JSON atomically."""
    atomic.write_json(path, obj)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet shard; a missing, truncated or corrupt file raises InputFileError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "no such file")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise InputFileError(
            path, f"not a readable Parquet file (truncated or corrupt?): {_first_line(exc)}"
        ) from None


def read_schema(path: Path) -> pa.Schema:
    """The schema (with metadata) of a Parquet shard, without reading its data."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "no such file")
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputFileError(
            path, f"not a readable Parquet file (truncated or corrupt?): {_first_line(exc)}"
        ) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def files_digest(files: Mapping[str, str]) -> str:
    """16-hex digest of a dataset's content: its ``{relative shard path: sha256}`` map.

    Equal digests mean the same shards byte for byte, so caches of results computed on a dataset
    (experiment units, backbone features) key on it and never outlive an edit of the data.
    """
    text = json.dumps(sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
