"""Find, score and zero-ablate the attention heads of mlx-lm language models."""

from __future__ import annotations

from typing import Any

from . import errors, interventions, scores
from .capture import capture_attention
from .model import InterpretableModel, Trace

__all__ = [
    "HeadWidget",
    "InterpretableModel",
    "Trace",
    "capture_attention",
    "errors",
    "interventions",
    "scores",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`HeadWidget` is imported on first use: the library itself needs no widget machinery
    (anywidget, ipywidgets, traitlets)."""
    if name == "HeadWidget":
        from .widget import HeadWidget

        return HeadWidget
    raise AttributeError(f"module 'mlx_headwidget' has no attribute {name!r}")
