"""Find, score and zero-ablate the attention heads of mlx-lm language models."""

from __future__ import annotations

from . import attribution, composition, errors, interventions, patching, scores
from .attribution import head_logit_attribution, logit_attribution
from .capture import capture_attention
from .composition import composition_scores
from .model import InterpretableModel, Trace
from .patching import attribution_patch, patch_heads

__all__ = [
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
