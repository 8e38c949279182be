"""alignlab: ten 2024 research systems on human-AI interaction and alignment, on one small core."""

__version__ = "0.1.0"
