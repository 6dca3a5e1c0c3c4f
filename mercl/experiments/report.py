"""``mercl report RUN_DIR``: RUN_DIR/report.md and report.html with tables and PNG figures.

Reads what :func:`mercl.experiments.runner.run_experiment` stored (``experiment.json``,
``results.csv`` and the unit JSONs in ``cache/``) and writes, next to the report, in
``RUN_DIR/figures/``: confusion matrices (summed over folds), per-subject accuracy bars,
MERCL training curves (the runs' histories), a 2-D t-SNE of the saved shared embeddings
coloured by class and by modality. The plots a hyperparameter search wrote in a ``plots/``
folder of RUN_DIR are included too (those its ``plots/written.json`` lists, plain files only:
:mod:`mercl.experiments.written_plots`). The Markdown references images by relative path; the
HTML embeds them (base64), so it is self-contained.

Names from the data (subject ids, row labels) stay text: table cells are escaped
(:func:`mercl.markdown.md_cell`) and the figures draw labels with ``text.parse_math`` off,
so a subject ``s$x^$`` is neither a broken table nor a mathtext parse error.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from mercl import atomic
from mercl.data.labels import class_names
from mercl.errors import MerclError
from mercl.experiments.runner import load_record
from mercl.experiments.tables import TABLE_TITLES, leakage_table, method_table, protocol_name, to_markdown
from mercl.experiments.written_plots import plot_folders, written_plots

MODALITY_COLOURS = {"video": "tab:blue", "audio": "tab:orange", "eeg": "tab:green"}


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _save(fig, path: Path) -> Path:
    """Atomic PNG write."""
    import matplotlib.pyplot as plt

    try:
        atomic.write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"),
                            suffix=".png")
    finally:
        plt.close(fig)
    return path


# ----------------------------------------------------------------------------- figures


def _pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def literal_labels():
    """Figures whose text comes from the data: ``$...$`` in a subject id is drawn as typed, not
    parsed as mathtext (where a malformed one aborts the whole report)."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        yield


def confusion_figure(records: list[dict], rows: list[str], scheme: str, path: Path) -> Path:
    """One confusion matrix per row (summed over folds), row-normalised colours, counts written."""
    plt = _pyplot()
    names = class_names(scheme)
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        mats = [np.asarray(r["confusion"]) for r in records if r["row"] == row]
        total = np.sum(mats, axis=0) if mats else np.zeros((len(names), len(names)), int)
        norm = total / np.maximum(total.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, str(int(total[i, j])), ha="center", va="center",
                        color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
        ax.set_title(row, fontsize=9)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
    axes[0][0].set_ylabel("true", fontsize=8)
    return _save(fig, path)


def per_subject_figure(records: list[dict], rows: list[str], path: Path) -> Path:
    """Grouped bars: accuracy per subject (test rows over all folds), one bar per row/method."""
    plt = _pyplot()
    frames = [pd.DataFrame({**r["predictions"], "method": r["row"]}) for r in records]
    pred = pd.concat(frames, ignore_index=True)
    pred["correct"] = pred["label"] == pred["prediction"]
    table = pred.pivot_table(index="subject", columns="method", values="correct", aggfunc="mean")
    table = table[[r for r in rows if r in table.columns]]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(table) * max(1, len(rows)) / 2), 3.2))
    table.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def training_curves_figure(records: list[dict], path: Path) -> Path | None:
    """Loss and inner-validation metric per epoch, one line per fold (MERCL histories)."""
    plt = _pyplot()
    runs = [r for r in records if r.get("history")]
    if not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for r in runs:
        hist = pd.DataFrame(r["history"])
        for ax, col in zip(axes, ("loss", "val_metric"), strict=True):
            if col in hist:
                ax.plot(hist["global_epoch"], hist[col], marker="o", ms=3, label=f"fold {r['fold']}")
    for ax, title in zip(axes, ("training loss", "inner-validation metric"), strict=True):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch (pre-training, then fine-tuning)", fontsize=8)
        ax.legend(fontsize=7)
    return _save(fig, path)


def tsne_figure(records: list[dict], scheme: str, path: Path, seed: int = 0) -> Path | None:
    """2-D t-SNE of the saved shared embeddings (valid ones), coloured by class and by modality."""
    from sklearn.manifold import TSNE

    plt = _pyplot()
    xs, classes, modalities = [], [], []
    for r in records:
        emb = r.get("embeddings")
        if not emb:
            continue
        for m, z in emb["z"].items():
            valid = np.asarray(emb["valid"][m], bool)
            z = np.asarray(z, np.float32)[valid]
            xs.append(z)
            classes += list(np.asarray(emb["labels"])[valid])
            modalities += [m] * len(z)
    if not xs or sum(len(x) for x in xs) < 5:
        return None
    x = np.concatenate(xs)
    # Barnes-Hut from a few hundred points on (960 points, 500 iterations, here: 2.9 s vs 13 s exact)
    method = "exact" if len(x) <= 300 else "barnes_hut"
    xy = TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", method=method,
              max_iter=500, random_state=seed).fit_transform(x)
    names = class_names(scheme)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    classes = np.asarray(classes)
    for k, name in enumerate(names):
        sel = classes == k
        axes[0].scatter(xy[sel, 0], xy[sel, 1], s=8, label=name)
    modalities = np.asarray(modalities)
    for m, colour in MODALITY_COLOURS.items():
        sel = modalities == m
        if sel.any():
            axes[1].scatter(xy[sel, 0], xy[sel, 1], s=8, c=colour, label=m)
    for ax, title in zip(axes, ("by class", "by modality"), strict=True):
        ax.set_title(f"t-SNE of shared embeddings, {title}", fontsize=9)
        ax.legend(fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


# ----------------------------------------------------------------------------- the report


REPORT_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}"
    "table.results{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}"
    "table.results th,table.results td{padding:4px 10px;border-bottom:1px solid #e3e3e3;text-align:right}"
    "table.results th{background:#f3f5f8;border-bottom:2px solid #bbb}"
    "table.results td:first-child,table.results th:first-child{text-align:left}"
    "table.results tbody tr:nth-child(even){background:#fafafa}"
    "p.note{background:#fff7e0;border-left:4px solid #e0a800;padding:0.5em 0.8em}"
    "img{max-width:100%}figcaption{font-size:0.85em;color:#555}"
)


def html_table(frame: pd.DataFrame) -> str:
    """One header row (the index name becomes the first column's header, not a row of its own)."""
    flat = frame.reset_index() if frame.index.name else frame
    return flat.to_html(index=False, escape=True, classes="results", border=0)


class Blocks:
    """The report's content, rendered once as Markdown and once as HTML."""

    def __init__(self):
        self.items: list[tuple[str, object]] = []

    def heading(self, text: str, level: int = 2):
        self.items.append(("h", (level, text)))

    def para(self, text: str):
        self.items.append(("p", text))

    def table(self, frame: pd.DataFrame):
        self.items.append(("t", frame))

    def image(self, path: Path, root: Path, caption: str):
        self.items.append(("i", (path, root, caption)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.items:
            if kind == "h":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "p":
                out.append(value)
            elif kind == "t":
                out.append(to_markdown(value))
            else:
                path, root, caption = value
                out.append(f"![{caption}]({path.relative_to(root).as_posix()})")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
               f"<style>{REPORT_CSS}</style></head><body>"]
        for kind, value in self.items:
            if kind == "h":
                out.append(f"<h{value[0]}>{html.escape(value[1])}</h{value[0]}>")
            elif kind == "p":
                css = " class='note'" if value.startswith("> ") else ""
                out.append(f"<p{css}>{html.escape(value.replace('**', '').removeprefix('> '))}</p>")
            elif kind == "t":
                out.append(html_table(value))
            else:
                path, _root, caption = value
                data = base64.b64encode(path.read_bytes()).decode()
                out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


def _experiment_sections(blocks: Blocks, run_dir: Path, figures: Path) -> None:
    meta = json.loads((run_dir / "experiment.json").read_text())
    results = pd.read_csv(run_dir / "results.csv")
    records = {}
    for rel in meta["units"]:
        rec = load_record(run_dir / rel)
        if rec is None:
            raise MerclError(f"{run_dir / rel}: missing or unreadable unit result (re-run mercl experiment)")
        records[rel] = rec
    labels = meta.get("protocol_labels") or {}
    blocks.heading(f"MERCL experiment `{meta['kind']}` on {meta['dataset_id']}", 1)
    blocks.para(f"Label schemes: {', '.join(meta['schemes'])}. Protocols: "
                f"{', '.join(protocol_name(p, labels) for p in meta['protocols'])}. "
                f"Folds: {meta['n_folds']}; seed {meta['seed']}; training config "
                f"`{meta['config_name'] or 'custom'}` ({meta['config_hash']}). "
                "Cells: mean ± std over folds; every table includes the majority-class baseline and "
                "clip-majority (the test clip's usual label among other viewers in training: clip memory, "
                "no signal; under the stimulus protocol it equals majority).")
    for protocol, warning in meta.get("warnings", {}).items():
        kind = "LEAKY PROTOCOL" if protocol in meta.get("leaky", ["segment"]) else "CLIPS SHARED WITH TRAINING"
        blocks.para(f"> **{kind} ({protocol}).** {warning}")
    for protocol, dropped in meta.get("dropped", {}).items():
        if sum(dropped):
            blocks.para(f"Protocol {protocol}: training sides leave out {', '.join(map(str, dropped))} rows per fold "
                        "(rows sharing a subject or a clip with the test side).")
    for table, protocol in _table_order(results, meta):
        blocks.heading(f"{TABLE_TITLES.get(table, table)}: protocol {protocol_name(protocol, labels)}", 2)
        if table == "modalities" and protocol == "stimulus":
            blocks.para("On clips no model saw in training: does EEG add anything on new content? Compare A+V "
                        "(content only) with the rows that include EEG, and every row with the baselines.")
        blocks.table(method_table(results, table, protocol))
    leak_protocols = [p for p in ("segment", "trial", "stimulus") if p in meta["protocols"]]
    if len(leak_protocols) >= 2:
        for table in dict.fromkeys(results["table"]):
            blocks.heading(f"{TABLE_TITLES.get(table, table)}: leakage", 2)
            blocks.para("Mean accuracy per protocol on the same data. window leak = segment (LEAKY) - trial: "
                        "overlapping windows of a trial on both sides; clip leak = trial - stimulus: test clips "
                        "in training through other viewers. A row whose score falls to the baselines' under "
                        "stimulus had learnt the clips, not the emotion.")
            blocks.table(leakage_table(results, table, leak_protocols, labels))

    blocks.heading("Figures", 2)
    unit_of = results.assign(rec=results["unit_file"].map(records))
    for protocol in meta["protocols"]:
        plabel = protocol_name(protocol, labels)
        for scheme in meta["schemes"]:
            part = unit_of[(unit_of["protocol"] == protocol) & (unit_of["scheme"] == scheme)]
            part = part.drop_duplicates(subset=["row", "unit_file"])
            recs = [{**r, "row": row} for r, row in zip(part["rec"], part["row"], strict=True)]
            rows = list(dict.fromkeys(part["row"]))
            tag = _safe(f"{protocol}-{scheme}")
            blocks.heading(f"{scheme}, protocol {plabel}", 3)
            path = confusion_figure(recs, rows, scheme, figures / f"confusion-{tag}.png")
            blocks.image(path, run_dir, f"confusion matrices, {scheme}, {plabel} (summed over folds)")
            path = per_subject_figure(recs, rows, figures / f"per-subject-{tag}.png")
            blocks.image(path, run_dir, f"per-subject accuracy, {scheme}, {plabel}")
            mercl_rows = [r for r in rows if any(x["row"] == r and x["method"] == "mercl" for x in recs)]
            if mercl_rows:
                main = "full" if "full" in mercl_rows else ("A+V+E" if "A+V+E" in mercl_rows else mercl_rows[0])
                mine = [x for x in recs if x["row"] == main]
                path = training_curves_figure(mine, figures / f"training-{tag}.png")
                if path is not None:
                    blocks.image(path, run_dir, f"training curves of MERCL ({main}), {scheme}, {plabel}")
                path = tsne_figure(mine, scheme, figures / f"tsne-{tag}.png", seed=int(meta["seed"]))
                if path is not None:
                    blocks.image(path, run_dir, f"t-SNE of MERCL ({main}) test-fold embeddings, {scheme}, {plabel}")


def _table_order(results: pd.DataFrame, meta: dict) -> list[tuple[str, str]]:
    """(table, protocol) pairs in report order: with clips shared across subjects, the modality
    table under ``stimulus`` comes first (it says whether EEG adds anything on new content)."""
    pairs = [(t, p) for t in dict.fromkeys(results["table"]) for p in meta["protocols"]]
    first = ("modalities", "stimulus")
    if meta.get("shared_clips") and first in pairs:
        pairs.remove(first)
        pairs.insert(0, first)
    return pairs


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write RUN_DIR/report.md, report.html and RUN_DIR/figures/*.png -> (markdown path, html path)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MerclError(f"{run_dir}: no such run directory")
    has_experiment = (run_dir / "experiment.json").is_file() and (run_dir / "results.csv").is_file()
    search_plots = [p for folder in plot_folders(run_dir) for p in written_plots(folder)]
    if not has_experiment and not search_plots:
        raise MerclError(f"{run_dir}: neither an experiment run (experiment.json, results.csv) "
                         "nor a search output (plots/*.png written by the search)")
    figures = run_dir / "figures"
    figures.mkdir(exist_ok=True)
    blocks = Blocks()
    if has_experiment:
        with literal_labels():
            _experiment_sections(blocks, run_dir, figures)
    else:
        blocks.heading(f"Report: {run_dir.name}", 1)
    if search_plots:
        blocks.heading("Hyperparameter search plots", 2)
        for path in search_plots:
            blocks.image(path, run_dir, path.stem.replace("_", " "))
    md, page = run_dir / "report.md", run_dir / "report.html"
    atomic.write_text(md, blocks.markdown())
    atomic.write_text(page, blocks.html(f"MERCL report: {run_dir.name}"))
    return md, page
