"""MERCL: multimodal emotion recognition from EEG and the audio-visual stimulus."""

__version__ = "0.1.0"
