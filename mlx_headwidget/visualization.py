"""The induction-head tutorial's API: patterns from a trace, heatmaps, detection, head scores.

Code written for the tutorial runs with only its import line changed to `mlx_headwidget`. The
single-pattern score functions here keep the tutorial's definitions (see each docstring); the
project's own definitions, with modes, are in `mlx_headwidget.scores`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import plots, scores
from .detect import HeadScore, detect_head_types, detect_induction_heads
from .errors import is_int

__all__ = [
    "AttentionVisualizationConfig",
    "HeadScore",
    "attention_heatmap",
    "current_token_score",
    "detect_head_types",
    "detect_induction_heads",
    "first_token_score",
    "get_attention_patterns",
    "induction_score",
    "previous_token_score",
]

BACKENDS = ("plotly", "matplotlib")


@dataclass
class AttentionVisualizationConfig:
    """Display settings for `attention_heatmap`."""

    colorscale: str = "Blues"
    mask_upper_tri: bool = True
    show_colorbar: bool = True
    figure_width: int = 800
    figure_height: int = 600


def get_attention_patterns(trace, layers=None) -> dict[int, np.ndarray]:
    """The captured patterns of a finished trace: {layer: float32 array (B, n_heads, T, T)}.

    `layers` is None (every captured layer), one int, or a list. Asking for a layer the trace did
    not capture is a KeyError that says how to capture it.
    """
    captured = trace.attention
    if layers is None:
        layers = sorted(captured)
    elif isinstance(layers, (int, np.integer)):
        layers = [int(layers)]
    out = {}
    for layer in layers:
        if layer not in captured:
            raise KeyError(
                f"layer {layer} was not captured in this trace (captured: {sorted(captured)}); "
                f"trace with capture=True or capture=[{layer}, ...]"
            )
        out[int(layer)] = np.array(captured[layer], dtype=np.float32)
    return out


def _as_2d(pattern, head_idx: int) -> np.ndarray:
    pattern = np.asarray(pattern, dtype=np.float32)
    if pattern.ndim == 4:
        pattern = pattern[0]
    if pattern.ndim == 3:
        if not 0 <= head_idx < pattern.shape[0]:
            raise IndexError(f"head_idx {head_idx} out of range: 0..{pattern.shape[0] - 1}")
        pattern = pattern[head_idx]
    if pattern.ndim != 2:
        raise ValueError(f"pattern must be 2-D, 3-D or 4-D, got shape {pattern.shape}")
    return pattern


def attention_heatmap(
    pattern,
    tokens: list[str],
    head_idx: int = 0,
    title: str | None = None,
    backend: str = "plotly",
    config: AttentionVisualizationConfig | None = None,
):
    """Heatmap of one head: rows = query tokens, columns = key tokens, future masked.

    `pattern` is (B, H, T, T) (batch 0 is drawn), (H, T, T) or (T, T); `head_idx` picks the head.
    Returns a plotly `go.Figure` (backend "plotly") or a matplotlib `Figure` ("matplotlib").
    """
    config = config or AttentionVisualizationConfig()
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    a = _as_2d(pattern, head_idx)
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"pattern must be square (T, T), got {a.shape}")
    if len(tokens) != a.shape[0]:
        raise ValueError(f"{len(tokens)} tokens for a pattern of {a.shape[0]} positions")
    if backend == "plotly":
        return plots.attention_heatmap(
            a,
            list(tokens),
            title=title,
            colorscale=config.colorscale,
            mask_upper_tri=config.mask_upper_tri,
            show_colorbar=config.show_colorbar,
            width=config.figure_width,
            height=config.figure_height,
        )
    return _matplotlib_heatmap(a, list(tokens), title, config)


def _matplotlib_heatmap(a: np.ndarray, tokens: list[str], title, config):
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "backend='matplotlib' needs matplotlib: pip install matplotlib "
            "(or pip install 'mlx_headwidget[matplotlib]'), or use backend='plotly'"
        ) from err
    if config.mask_upper_tri:
        a = np.where(np.triu(np.ones_like(a, dtype=bool), k=1), np.nan, a)
    fig, ax = plt.subplots(figsize=(config.figure_width / 100, config.figure_height / 100))
    image = ax.imshow(a, cmap=config.colorscale, vmin=0.0)
    ax.set_xticks(range(len(tokens)), labels=tokens, rotation=60, ha="right")
    ax.set_yticks(range(len(tokens)), labels=tokens)
    ax.set_xlabel("key token")
    ax.set_ylabel("query token")
    ax.set_title(title or "Attention pattern")
    if config.show_colorbar:
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    plt.close(fig)
    return fig


def induction_score(pattern, seq_len: int) -> float:
    """Tutorial induction score of one pattern (T, T) of a sequence x + x (+ ...), |x| = seq_len.

    The mean of A[i, i - seq_len + 1] over rows i = seq_len .. T-1: the offset diagonal that an
    induction head lights up (on [BOS] + x + x it also counts the last row of the first copy).
    """
    a = scores.validate_pattern(_as_2d(pattern, 0))[0]
    T = a.shape[0]
    if not is_int(seq_len) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    if seq_len >= T:
        raise ValueError(f"seq_len {seq_len} is not shorter than the pattern's {T} positions")
    rows = np.arange(seq_len, T)
    return float(a[rows, rows - seq_len + 1].mean())


def previous_token_score(pattern) -> float:
    """Mean of A[i, i - 1] over rows i = 1 .. T-1 of one pattern (T, T)."""
    return float(scores.previous_token(_as_2d(pattern, 0), mode="strict"))


def first_token_score(pattern) -> float:
    """Mean of A[i, 0] over every row i = 0 .. T-1 (row 0 included, as in the tutorial)."""
    a = scores.validate_pattern(_as_2d(pattern, 0))[0]
    return float(a[:, 0].mean())


def current_token_score(pattern) -> float:
    """Mean of A[i, i] over every row i = 0 .. T-1 (row 0 included, as in the tutorial)."""
    a = scores.validate_pattern(_as_2d(pattern, 0))[0]
    return float(np.diagonal(a).mean())
