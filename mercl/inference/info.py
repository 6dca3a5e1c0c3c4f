"""``mercl info MODEL``: a model file's description in a few readable lines."""

from __future__ import annotations

from collections.abc import Sequence

from mercl.inference.model_file import ModelFile


def _shorten(names: Sequence[str], limit: int = 8) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _backbone_text(m: str, cfg: dict, frozen: bool) -> str:
    init = f"weights {cfg['weights']}" if cfg.get("weights") else "random init"
    name = cfg.get("backbone") if m == "video" else f"VGGish width {cfg.get('width')}"
    return f"{m} {name} ({'frozen' if frozen else 'trained'}, {init})"


def format_info(mf: ModelFile) -> str:
    """``mercl info MODEL``: the description in a few readable lines."""
    d = mf.description
    pre = d["preprocessing"]
    pcfg = pre.get("config") or {}
    names = d["class_names"]
    counts = d["train_class_counts"]
    total = max(sum(counts), 1)
    training = d.get("training") or {}
    lines = [f"{mf.path}: mercl model (schema {d.get('schema_version')}), written by mercl {d.get('mercl_version')} "
             f"on {d.get('created')}"]
    lines.append(f"  predicts {d['label_scheme']}: {', '.join(names)}; training rows per class "
                 f"{'/'.join(str(c) for c in counts)}, majority {names[d['majority_class']]} "
                 f"({counts[d['majority_class']] / total:.0%})")
    missing = [m for m, seen in d.get("missing_modalities_seen", {}).items() if seen]
    lines.append(f"  modalities: {', '.join(d['modalities'])}"
                 + (f"; missing {' and '.join(missing)} seen in training (masked when absent)" if missing else ""))
    eeg = pcfg.get("eeg", {})
    bands = ", ".join(f"{b} {lo:g}-{hi:g}" for b, (lo, hi) in (pre.get("bands") or {}).items())
    sfreq = pre.get("sfreq")
    rate = f"{sfreq:g} Hz" if isinstance(sfreq, (int, float)) else f"{sfreq} Hz"
    lines.append(f"  preprocessing {pre['config_hash']}: {pre.get('segment_s'):g} s segments, hop {pre.get('hop_s'):g} s; "
                 f"EEG {len(pre['ch_names'])} channels at {rate} ({_shorten(pre['ch_names'])}), bands {bands} Hz, "
                 f"sub-windows {eeg.get('subwindow_s')} s")
    audio, video = pcfg.get("audio", {}), pcfg.get("video", {})
    lines.append(f"  stimulus features: audio {audio.get('sample_rate')} Hz, {audio.get('n_mels')} Mel bands; "
                 f"video {video.get('fps'):g} fps, {video.get('size')} px")
    bb = d["backbones"]
    if bb.get("configs"):
        parts = [_backbone_text(m, c, m in bb.get("frozen", [])) for m, c in bb["configs"].items()]
        digest = f"; weights digest {bb['digest'][:16]}" if bb.get("digest") else ""
        lines.append(f"  backbones: {'; '.join(parts)}{digest}")
    cfg = d["train_config"]
    model = cfg.get("model", {})
    trained = f"  trained on {pre.get('dataset_id')}"
    if training:
        trained += (f": {training.get('n_train')} training rows, {training.get('n_val')} validation rows; "
                    f"validation accuracy {training.get('val_accuracy', float('nan')):.3f} "
                    f"(majority {training.get('majority_val_accuracy', float('nan')):.3f}, clip-majority "
                    f"{training.get('clip_majority_val_accuracy', float('nan')):.3f})")
    if training.get("config_name"):
        trained += f"; config {training['config_name']}"
    lines.append(trained)
    lines.append(f"  model: width {model.get('width')}, embed {model.get('embed_dim')}, heads {model.get('heads')}, "
                 f"cross-attention {'on' if model.get('cross_attention') else 'off'}, "
                 f"contrastive pre-training {'on' if cfg.get('contrastive') else 'off'}, seed {cfg.get('seed')}")
    lines.append(f"  use: mercl predict {mf.path} RAW --source {pre.get('source') or 'manifest'} -o OUT")
    return "\n".join(lines)
