"""The three modalities and the constants every layer shares about them (defined once, here).

``MODALITIES`` is the canonical order (video, audio, eeg) of configs, batches and outputs;
``MODALITY_CODES`` the CLI's letters (``--modalities ave``); ``SILENT_DB`` the audio energy
recorded for a silent or missing segment (the energy gate leaves such rows out of the audio
terms).
"""

from __future__ import annotations

from mercl.errors import MerclError

MODALITIES = ("video", "audio", "eeg")
MODALITY_CODES = {"v": "video", "a": "audio", "e": "eeg"}
SILENT_DB = -120.0  # audio_energy (dB) of a silent or missing segment


def parse_modalities(codes: str) -> list[str]:
    """``"ave"`` -> ``["video", "audio", "eeg"]`` (canonical order); unknown letters -> MerclError."""
    bad = [c for c in codes if c not in MODALITY_CODES]
    if bad or not codes:
        raise MerclError(f"--modalities: expected letters from 'ave' (audio, video, eeg), got {codes!r}")
    chosen = {MODALITY_CODES[c] for c in codes}
    return [m for m in MODALITIES if m in chosen]


def modality_letters(modalities) -> str:
    """``["audio", "eeg"]`` -> ``"ae"`` (the letters in a, v, e order, as variant names spell them)."""
    return "".join(code for code, m in (("a", "audio"), ("v", "video"), ("e", "eeg")) if m in modalities)
