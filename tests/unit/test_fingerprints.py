"""Input fingerprints (mercl.data.fingerprints): what counts as a changed input."""

from __future__ import annotations

import os

import pytest

from mercl.data.fingerprints import (
    EDGE_BYTES,
    FULL_HASH_BYTES,
    changed_inputs,
    content_hash,
    file_fingerprint,
    same_input,
)
from mercl.errors import InputFileError


def test_a_touched_small_file_is_unchanged_an_edited_one_changed(tmp_path):
    path = tmp_path / "s01.edf"
    path.write_bytes(b"0123456789" * 100)
    before = file_fingerprint(path)
    os.utime(path, ns=(1, 1))
    assert file_fingerprint(path) != before and same_input(before, file_fingerprint(path))
    path.write_bytes(b"0123456789" * 99 + b"012345678X")  # same size, one byte
    assert not same_input(before, file_fingerprint(path))
    assert changed_inputs({"s01.edf": before}, {"s01.edf": file_fingerprint(path)}) == ["s01.edf"]


def test_a_large_file_is_hashed_at_its_edges_and_its_mtime_stands_for_the_middle(tmp_path):
    path = tmp_path / "long.bdf"
    size = FULL_HASH_BYTES + 3 * EDGE_BYTES
    path.write_bytes(bytes(size))
    assert content_hash(path).startswith("edges:")
    os.utime(path, ns=(10**18, 10**18))
    before = file_fingerprint(path)
    with open(path, "r+b") as f:  # the middle changes, the size and the edges do not
        f.seek(size // 2)
        f.write(b"\x01")
    assert content_hash(path) == before.split(":", 2)[2]  # the partial hash cannot see it ...
    assert not same_input(before, file_fingerprint(path))  # ... the mtime does
    os.utime(path, ns=(10**18, 10**18))
    assert same_input(before, file_fingerprint(path))


def test_inputs_that_appear_or_disappear_are_changes():
    assert changed_inputs({"a": "x", "b": "y"}, {"a": "x", "c": "z"}) == ["b", "c"]
    assert changed_inputs(None, {"a": "x"}) == ["no input fingerprint recorded"]


def test_a_folder_is_fingerprinted_by_its_entries_and_a_missing_file_is_one_line(tmp_path):
    folder = tmp_path / "session"
    folder.mkdir()
    (folder / "a.bdf").write_bytes(b"x")
    before = file_fingerprint(folder)
    assert before.startswith("dir:") and file_fingerprint(folder) == before
    (folder / "b.xml").write_bytes(b"y")
    assert file_fingerprint(folder) != before
    with pytest.raises(InputFileError, match="cannot read it") as info:
        file_fingerprint(tmp_path / "gone.edf")
    assert "\n" not in str(info.value)
