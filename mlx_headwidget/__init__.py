"""Find, score and zero-ablate the attention heads of mlx-lm language models."""

from __future__ import annotations

from . import errors, interventions, scores
from .capture import capture_attention
from .model import InterpretableModel, Trace

__all__ = ["InterpretableModel", "Trace", "capture_attention", "errors", "interventions", "scores"]
__version__ = "0.1.0"
