"""Markdown tables that hold text from a user's data (subject, clip and row names).

A subject id such as ``s|01`` would end a table cell early and shift every cell after it;
``$x$`` is math to a renderer with math (GitHub), ``*a*`` italics, a line break ends the
row. :func:`md_cell` makes any value one literal cell; :func:`split_md_row` reads a row
written that way back into the original values. Every table of summary.md (``mercl
evaluate``, a search) and report.md (``mercl report``) goes through them.
"""

from __future__ import annotations

import re

# CommonMark lets a backslash escape any ASCII punctuation; these are the characters that
# change a cell's meaning (pipe: GFM's cell separator, also inside code spans; $: math;
# < an HTML tag; ` * ~ [ ] code, emphasis, links). An underscore only emphasises at a word's
# edge, so ``best_val_metric`` stays as it is.
_SPECIAL = re.compile(r"([\\|`*\[\]<$~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")
_CELL_BOUNDARY = re.compile(r"(?<!\\)\|")


def md_cell(value: object) -> str:
    """``value`` as the literal text of one Markdown table cell: ``"s|01"`` -> ``"s\\|01"``."""
    text = " ".join(str(value).split())  # line breaks (and runs of blanks) would end the row
    return _SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def md_row(cells: list[object]) -> str:
    """``| a | b |`` with every cell through :func:`md_cell`."""
    return "| " + " | ".join(md_cell(c) for c in cells) + " |"


def md_unescape(text: str) -> str:
    """The inverse of :func:`md_cell` (CommonMark's backslash escapes undone)."""
    return _ESCAPED.sub(r"\1", text)


def split_md_row(line: str) -> list[str]:
    """The cells of one table row, unescaped: ``split_md_row(md_row(cells)) == cells`` (as str)."""
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [md_unescape(c.strip()) for c in _CELL_BOUNDARY.split(inner)]
