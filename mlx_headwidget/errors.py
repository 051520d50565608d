"""Exceptions raised by mlx_headwidget, each a ValueError, TypeError or KeyError subclass, and the
small checks that many modules share."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """An integer (Python or numpy) that is not a bool: what indices and counts must be."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number (int or float, Python or numpy) that is not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


class ModelLoadError(ValueError):
    """A model source could not be loaded (missing folder or files, hub id not available)."""


class BundledModelMissingError(ModelLoadError):
    """`InterpretableModel()` was called but the bundled default model is not installed."""


class InputError(ValueError):
    """Text or token ids that cannot be run: empty text, ids outside the vocabulary, too long."""


class InputTypeError(TypeError):
    """Inputs of a type the model cannot run (e.g. float token ids)."""


class OutOfRangeError(ValueError, IndexError):
    """A layer or head index outside the model's range."""


class UnknownPathError(KeyError):
    """An intervention path that names no module of the model."""

    def __str__(self) -> str:  # KeyError would print the message inside quotes
        return str(self.args[0]) if self.args else ""


class InterventionError(ValueError):
    """An intervention that raised, returned the wrong shape or produced NaN."""


class InterventionTypeError(TypeError):
    """An intervention that is not callable, or a head intervention on a non-attention module."""


class TraceError(ValueError):
    """Tracing used wrongly: a trace inside a trace, or `model.output` outside a trace block."""


class UnsupportedArchitectureError(ValueError):
    """An architecture whose attention patterns cannot be captured exactly."""


class GGUFError(ModelLoadError):
    """A GGUF file that cannot be loaded: not GGUF, truncated, or holding something unsupported."""


class ScoreValueError(ValueError):
    """A pattern, tokens, seq_len, kind, mode or option that cannot be scored."""


class ScoreTypeError(TypeError):
    """A pattern or tokens of a non-numeric type, or an option of the wrong type."""


class WidgetInputError(ValueError):
    """A value the widget cannot take: bad selection or focus, unknown kind, unusable text, or a
    malformed request from the front end."""
