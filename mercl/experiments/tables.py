"""The experiment's tables, laid out like the paper's: rows = methods, column groups = label schemes.

Every cell is ``mean ± std`` over folds (population std, ``ddof=0``, as ``mercl evaluate``
prints) of the per-fold results in ``results.csv`` / the unit JSONs, with 3 decimals. Every
table carries the majority and clip-majority rows and names its protocol; the segment
protocol is LEAKY, and trial/subject on data with shared clips say "clips shared with training".
"""

from __future__ import annotations

import pandas as pd

from mercl.markdown import md_row, split_md_row

TABLE_TITLES = {
    "methods": "Methods (paper Tables 3-6)",
    "modalities": "Modality combinations of MERCL (paper Table 7)",
    "ablation": "Ablation of MERCL (paper Table 8)",
    "energy": "Audio-energy sample selection (paper Table 9)",
}
METRICS = (("accuracy", "Acc"), ("macro_f1", "F1"))


def cell(values: pd.Series) -> str:
    """``"0.523 ± 0.012"``: mean ± population std of per-fold values."""
    return f"{values.mean():.3f} ± {values.std(ddof=0):.3f}"


def _ordered(values: pd.Series) -> list:
    return list(dict.fromkeys(values))


def method_table(results: pd.DataFrame, table: str, protocol: str) -> pd.DataFrame:
    """Strings: index = row labels (in run order), columns ``<scheme> Acc`` / ``<scheme> F1``."""
    part = results[(results["table"] == table) & (results["protocol"] == protocol)]
    schemes = _ordered(part["scheme"])
    out = {}
    for row in _ordered(part["row"]):
        mine = part[part["row"] == row]
        out[row] = {f"{s} {name}": cell(mine.loc[mine["scheme"] == s, metric])
                    for s in schemes for metric, name in METRICS}
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.index.name = "method"
    return frame


def protocol_name(protocol: str, labels: dict[str, str] | None = None) -> str:
    """How a table names a protocol: ``segment (LEAKY)``, ``trial (clips shared with training)``, ..."""
    if labels and protocol in labels:
        return labels[protocol]
    return "segment (LEAKY)" if protocol == "segment" else protocol


LEAKS = (("segment", "trial", "window leak"), ("trial", "stimulus", "clip leak"))


def leakage_table(results: pd.DataFrame, table: str, protocols: list[str],
                  labels: dict[str, str] | None = None) -> pd.DataFrame:
    """Mean accuracy per protocol (one column each, per scheme) and the leak gaps between them:
    segment - trial (window leak: overlapping windows of a trial on both sides) and trial -
    stimulus (clip leak: test clips seen in training through other viewers), where both
    protocols ran."""
    part = results[results["table"] == table]
    schemes = _ordered(part["scheme"])
    gaps = [(a, b, name) for a, b, name in LEAKS if a in protocols and b in protocols]
    out = {}
    for row in _ordered(part["row"]):
        mine = part[part["row"] == row]
        values = {}
        for s in schemes:
            acc = {p: mine.loc[(mine["scheme"] == s) & (mine["protocol"] == p), "accuracy"].mean() for p in protocols}
            for p in protocols:
                values[f"{s} {protocol_name(p, labels)} Acc"] = f"{acc[p]:.3f}"
            for a, b, name in gaps:
                values[f"{s} {name} ({a} - {b})"] = f"{acc[a] - acc[b]:+.3f}"
        out[row] = values
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.index.name = "method"
    return frame


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (index as the first column); no extra dependency (tabulate).
    Every cell is escaped (:func:`mercl.markdown.md_cell`): row and column names come from the data."""
    header = [frame.index.name or "", *frame.columns]
    lines = [md_row(header), "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        lines.append(md_row([index, *row.tolist()]))
    return "\n".join(lines)


def parse_markdown_tables(text: str) -> list[pd.DataFrame]:
    """Every Markdown table in ``text`` back as a DataFrame of strings (first column as index)."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(split_md_row(line))
            continue
        if len(block) >= 2:
            header, body = block[0], block[2:]
            frame = pd.DataFrame(body, columns=header).set_index(header[0])
            tables.append(frame)
        block = []
    return tables
