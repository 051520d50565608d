"""Find, score and zero-ablate the attention heads of mlx-lm language models."""

from __future__ import annotations

from typing import Any

from . import attribution, composition, errors, interventions, patching, scores
from .attribution import head_logit_attribution, logit_attribution
from .capture import capture_attention
from .composition import composition_scores
from .model import InterpretableModel, Trace
from .patching import attribution_patch, patch_heads

__all__ = [
    "HeadWidget",
    "InterpretableModel",
    "Trace",
    "attribution",
    "attribution_patch",
    "capture_attention",
    "composition",
    "composition_scores",
    "errors",
    "head_logit_attribution",
    "interventions",
    "logit_attribution",
    "patch_heads",
    "patching",
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
