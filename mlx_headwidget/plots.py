"""Plotly figures of attention patterns and head scores: numpy (or mx) arrays in, `go.Figure` out.

Tokens are untrusted text, and plotly renders a subset of HTML and `$...$` LaTeX in labels and
hover text, so every token goes through `token_label` (escaped, whitespace made visible). Token
positions are numeric axes with tick labels: plotly would merge equal categorical labels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .errors import is_int

__all__ = [
    "attention_grid",
    "attention_heatmap",
    "head_type_distribution",
    "max_score_per_layer",
    "phase_change",
    "score_comparison",
    "score_heatmap",
    "token_label",
    "training_curves",
]

BLUE, RED = "#1f77b4", "#d62728"
HOVER = "%{hovertext}<extra></extra>"
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "$": "&#36;"}
_WHITESPACE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
_LOSSES = ("train_loss", "val_loss", "repeat_loss")
_SCORES = {"induction": (RED, "solid"), "previous_token": (BLUE, "dot")}


def token_label(token: str) -> str:
    """Plotly-safe form of a token for labels and hover text.

    `& < > $` become entities; space, newline, tab, CR become ␣ ↵ ⇥ ␍ (other whitespace ·);
    control characters become their Unicode control pictures (␀ ␛ ␡ ...).
    """
    return "".join(_visible(ch) for ch in token)


def _escaped(text: str) -> str:
    """`text` with only `& < > $` escaped: for names such as score kinds, not tokens."""
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def _visible(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ch.isspace():
        return _WHITESPACE.get(ch, "·")
    if ch == "\x7f":
        return "␡"
    if ord(ch) < 0x20:
        return chr(0x2400 + ord(ch))
    return ch


def _as_float(x, name: str) -> np.ndarray:
    if type(x).__module__.startswith("mlx") and "bfloat16" in str(getattr(x, "dtype", "")):
        import mlx.core as mx  # numpy has no bfloat16: widen first

        x = x.astype(mx.float32)
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a numeric numpy or mx array, got {type(x).__name__}"
        ) from err


def _scores_2d(scores, name: str = "scores") -> np.ndarray:
    s = _as_float(scores, name)
    if s.ndim != 2 or 0 in s.shape:
        raise ValueError(f"{name} must be a (n_layers, n_heads) array, got shape {s.shape}")
    return s


def _positive_int(value, name: str) -> int:
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _indices(values: Sequence[int], n: int, name: str) -> list[int]:
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty; pass at least one index in 0..{n - 1}")
    for v in values:
        if not is_int(v) or not 0 <= v < n:
            raise ValueError(f"{name} contains {v!r}; valid indices are integers 0..{n - 1}")
    return [int(v) for v in values]


def _labels(tokens: Sequence[str], T: int) -> list[str]:
    if isinstance(tokens, str) or not isinstance(tokens, Iterable):
        raise TypeError(f"tokens must be a list of strings, got {type(tokens).__name__}")
    tokens = list(tokens)
    if len(tokens) != T:
        raise ValueError(
            f"got {len(tokens)} tokens for a pattern of {T} positions; they must match"
        )
    for i, tok in enumerate(tokens):
        if not isinstance(tok, str):
            raise TypeError(f"tokens[{i}] is {type(tok).__name__} {tok!r}; pass strings")
    return [token_label(t) for t in tokens]


def _ticks(labels: list[str]) -> dict:
    return dict(tickmode="array", tickvals=list(range(len(labels))), ticktext=labels)


def _masked(a: np.ndarray, mask_upper_tri: bool) -> np.ndarray:
    """A copy of `a` (T, T) with NaN above the diagonal (future keys), which plotly leaves blank."""
    future = np.triu(np.ones(a.shape, dtype=bool), k=1) & mask_upper_tri
    return np.where(future, np.nan, a)


def _attention_trace(z: np.ndarray, labels: list[str], prefix: str = "", **kw) -> go.Heatmap:
    hover = [
        [
            f"{prefix}query '{labels[i]}' ({i}) -> key '{labels[j]}' ({j}): {v:.3f}"
            if math.isfinite(v)
            else ""
            for j, v in enumerate(row)
        ]
        for i, row in enumerate(z.tolist())
    ]
    x = np.arange(len(labels))
    return go.Heatmap(z=z, x=x, y=x, hovertext=hover, hovertemplate=HOVER, hoverongaps=False, **kw)


def _token_axes(fig: go.Figure, labels: list[str], x_title: bool, y_title: bool, **where) -> None:
    x_title, y_title = ("key" if x_title else None), ("query" if y_title else None)
    fig.update_xaxes(title_text=x_title, tickangle=-60, **_ticks(labels), **where)
    fig.update_yaxes(title_text=y_title, autorange="reversed", **_ticks(labels), **where)


def _zmax(zs: list[np.ndarray], zmax: float | None) -> float:
    """`zmax`, or else the largest finite value shown (1.0 if there is none above 0)."""
    if zmax is not None:
        return float(zmax)
    top = max((float(np.nanmax(z)) for z in zs if np.isfinite(z).any()), default=1.0)
    return top if top > 0 else 1.0


def attention_heatmap(
    pattern,
    tokens: Sequence[str],
    *,
    title: str | None = None,
    colorscale: str = "Blues",
    mask_upper_tri: bool = True,
    show_colorbar: bool = True,
    width: int = 800,
    height: int = 600,
    zmax: float | None = None,
) -> go.Figure:
    """Heatmap of one head's pattern (T, T): row i = query position (top to bottom), column j = key.

    z[i, j] = pattern[i, j], NaN (blank) for j > i when `mask_upper_tri`; colours span 0..zmax
    (default: the largest value shown). Hover: "query 'tok' (i) -> key 'tok' (j): 0.123".
    """
    a = _as_float(pattern, "pattern")
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"pattern must be a square (T, T) array with T >= 1, got shape {a.shape}")
    labels = _labels(tokens, a.shape[0])
    z = _masked(a, mask_upper_tri)
    zmax = _zmax([z], zmax)
    fig = go.Figure(
        _attention_trace(
            z, labels, colorscale=colorscale, zmin=0.0, zmax=zmax, showscale=show_colorbar
        )
    )
    _token_axes(fig, labels, x_title=True, y_title=True)
    fig.update_layout(
        title=title or "Attention pattern", width=width, height=height, plot_bgcolor="white"
    )
    return fig


def attention_grid(
    patterns,
    tokens: Sequence[str],
    heads: Sequence[int] | None = None,
    *,
    n_cols: int = 4,
    titles: Sequence[str] | None = None,
    layer: int | None = None,
    colorscale: str = "Blues",
    mask_upper_tri: bool = True,
    zmax: float | None = None,
) -> go.Figure:
    """Heads of one layer's patterns (H, T, T) as subplots, `n_cols` a row, one shared colour scale.

    `heads` picks and orders them (default: all); titles default to "L{layer}H{h}" (or "H{h}").
    """
    p = _as_float(patterns, "patterns")
    if p.ndim != 3 or p.shape[1] != p.shape[2] or 0 in p.shape:
        raise ValueError(f"patterns must be a (n_heads, T, T) array, got shape {p.shape}")
    labels = _labels(tokens, p.shape[1])
    heads = list(range(p.shape[0])) if heads is None else _indices(heads, p.shape[0], "heads")
    cols = min(_positive_int(n_cols, "n_cols"), len(heads))
    rows = math.ceil(len(heads) / cols)
    prefix = "" if layer is None else f"L{layer}"
    titles = [f"{prefix}H{h}" for h in heads] if titles is None else list(titles)
    if len(titles) != len(heads):
        raise ValueError(f"got {len(titles)} titles for {len(heads)} heads; they must match")
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=0.08,
        vertical_spacing=min(0.15, 0.6 / max(rows - 1, 1)),
    )
    zs = [_masked(p[h], mask_upper_tri) for h in heads]
    for k, (z, name) in enumerate(zip(zs, titles, strict=True)):
        row, col = k // cols + 1, k % cols + 1
        fig.add_trace(_attention_trace(z, labels, f"{name}: ", coloraxis="coloraxis"), row, col)
        bottom = k + cols >= len(heads)  # nothing drawn below this one
        _token_axes(fig, labels, x_title=bottom, y_title=col == 1, row=row, col=col)
    coloraxis = dict(colorscale=colorscale, cmin=0.0, cmax=_zmax(zs, zmax))
    fig.update_layout(
        coloraxis=coloraxis, width=280 * cols + 160, height=300 * rows + 100, plot_bgcolor="white"
    )
    return fig


def score_heatmap(
    scores,
    *,
    kind: str = "induction",
    title: str | None = None,
    zmin: float = 0.0,
    zmax: float = 1.0,
    colorscale: str = "Blues",
) -> go.Figure:
    """Layer x head grid of scores (L, H): rows "L0".. top to bottom, columns "H0"..; NaN is blank.

    Hover: "L10H23 induction 0.891".
    """
    s = _scores_2d(scores)
    L, H = s.shape
    name = _escaped(kind)
    hover = [
        [f"L{i}H{h} {name} {v:.3f}" if np.isfinite(v) else "" for h, v in enumerate(row)]
        for i, row in enumerate(s)
    ]
    heatmap = go.Heatmap(
        z=s,
        x=np.arange(H),
        y=np.arange(L),
        zmin=zmin,
        zmax=zmax,
        colorscale=colorscale,
        hovertext=hover,
        hovertemplate=HOVER,
        hoverongaps=False,
    )
    fig = go.Figure(heatmap)
    fig.update_xaxes(title_text="head", **_ticks([f"H{h}" for h in range(H)]))
    fig.update_yaxes(
        title_text="layer", autorange="reversed", **_ticks([f"L{i}" for i in range(L)])
    )
    fig.update_layout(title=title or f"{name} score per head")
    return fig


def max_score_per_layer(scores, *, kind: str = "induction", title: str | None = None) -> go.Figure:
    """Bar per layer of the max over heads of scores (L, H); customdata is the argmax head.

    Hover: "L10 max induction 0.891 (L10H23)". An all-NaN layer: NaN bar (blank), head -1.
    """
    s = _scores_2d(scores)
    name = _escaped(kind)
    best = np.where(np.isnan(s), -np.inf, s).argmax(axis=1)
    top = s[np.arange(len(s)), best]
    best[np.isnan(top)] = -1
    hover = [
        f"L{i} max {name} {v:.3f} (L{i}H{h})" if h >= 0 else f"L{i}: no {name} score"
        for i, (v, h) in enumerate(zip(top, best, strict=True))
    ]
    bar = go.Bar(
        x=np.arange(len(s)),
        y=top,
        customdata=best,
        hovertext=hover,
        hovertemplate=HOVER,
        marker_color=BLUE,
    )
    fig = go.Figure(bar)
    fig.update_xaxes(title_text="layer", **_ticks([f"L{i}" for i in range(len(s))]))
    fig.update_yaxes(title_text=f"max {name} score")
    fig.update_layout(title=title or f"Max {name} score per layer")
    return fig


def head_type_distribution(counts: Mapping[str, int], *, title: str | None = None) -> go.Figure:
    """Bar of the number of heads per type; a value is a count or a list of heads (its length)."""
    if not isinstance(counts, Mapping):
        raise TypeError(f"counts must be a dict {{type: count}}, got {type(counts).__name__}")
    names, values = [], []
    for key, value in counts.items():
        n = len(value) if isinstance(value, (list, tuple)) else value
        if not is_int(n) or n < 0:
            raise ValueError(
                f"count for {key!r} must be a non-negative int or a list, got {value!r}"
            )
        names.append(_escaped(str(key)))
        values.append(int(n))
    hover = [f"{k}: {v} heads" for k, v in zip(names, values, strict=True)]
    bar = go.Bar(x=names, y=values, hovertext=hover, hovertemplate=HOVER, marker_color=BLUE)
    fig = go.Figure(bar)
    fig.update_xaxes(title_text="head type")
    fig.update_yaxes(title_text="number of heads")
    fig.update_layout(title=title or "Head type distribution")
    return fig


def score_comparison(
    first,
    second,
    layers: Sequence[int],
    *,
    names: tuple[str, str] = ("previous_token", "first_token"),
    n_cols: int = 4,
    title: str | None = None,
) -> go.Figure:
    """One subplot per layer, grouped bars per head: `first` (L, H) in blue, `second` (L, H) red.

    Hover: "L0H2 previous_token 0.747".
    """
    a, b = _scores_2d(first, "first"), _scores_2d(second, "second")
    if a.shape != b.shape:
        raise ValueError(f"first {a.shape} and second {b.shape} must have the same shape")
    if len(names) != 2:
        raise ValueError(f"names must be two strings, got {names!r}")
    layers = _indices(layers, len(a), "layers")
    cols = min(_positive_int(n_cols, "n_cols"), len(layers))
    rows = math.ceil(len(layers) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"Layer {i}" for i in layers])
    heads = np.arange(a.shape[1])
    for k, layer in enumerate(layers):
        for values, name, color in ((a[layer], names[0], BLUE), (b[layer], names[1], RED)):
            label = _escaped(name)
            hover = [f"L{layer}H{h} {label} {v:.3f}" for h, v in enumerate(values)]
            bar = go.Bar(
                x=heads,
                y=values,
                name=label,
                legendgroup=label,
                showlegend=k == 0,
                marker_color=color,
                hovertext=hover,
                hovertemplate=HOVER,
            )
            fig.add_trace(bar, k // cols + 1, k % cols + 1)
    fig.update_xaxes(title_text="head", tickmode="array", tickvals=heads.tolist())
    fig.update_yaxes(matches="y", rangemode="tozero")  # one scale, so layers compare by eye
    fig.update_layout(
        barmode="group",
        title=title or "Pattern scores per head",
        width=300 * cols + 120,
        height=280 * rows + 100,
    )
    return fig


def _max_per_step(grids: Sequence, key: str) -> tuple[np.ndarray, list[str]]:
    """Per step, the max over heads of an (L, H) grid (NaN if none) and where it is ("L2H5")."""
    best, where = np.full(len(grids), np.nan), [""] * len(grids)
    for step, grid in enumerate(grids):
        g = np.atleast_2d(_as_float(np.nan if grid is None else grid, f"log[{key!r}][{step}]"))
        if g.ndim == 2 and np.isfinite(g).any():
            i, h = np.unravel_index(np.nanargmax(g), g.shape)
            best[step], where[step] = g[i, h], f"L{i}H{h}"
    return best, where


def training_curves(log: Mapping, *, title: str | None = None) -> go.Figure:
    """Loss curves (left axis) and the max over heads of induction/previous-token scores (right).

    `log`: the parsed training_log.json, {"steps": [S], "train_loss": [S], "val_loss": [S],
    "repeat_loss": [S], "induction": [S][L][H], "previous_token": [S][L][H], "final": {...}}.
    Missing keys are skipped; steps default to 0..S-1; `final.phase1_end_step` gets a dashed line.
    """
    if not isinstance(log, Mapping):
        raise TypeError(
            f"log must be a dict (the parsed training_log.json), got {type(log).__name__}"
        )
    present = [k for k in (*_LOSSES, *_SCORES) if log.get(k) is not None]
    if not present:
        wanted = ", ".join((*_LOSSES, *_SCORES))
        raise KeyError(f"log has none of the plottable keys ({wanted}); it has {sorted(log)}")
    steps = np.asarray(
        log["steps"] if log.get("steps") is not None else range(len(log[present[0]]))
    )
    for key in present:
        if len(log[key]) != len(steps):
            raise ValueError(f"log[{key!r}] has {len(log[key])} entries for {len(steps)} steps")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for key in (k for k in _LOSSES if k in present):
        y = _as_float([np.nan if v is None else v for v in log[key]], f"log[{key!r}]")
        fig.add_trace(go.Scatter(x=steps, y=y, name=key, mode="lines"), secondary_y=False)
    for key in (k for k in _SCORES if k in present):
        best, where = _max_per_step(log[key], key)
        hover = [
            f"step {s} max {key} {v:.3f} ({w})" for s, v, w in zip(steps, best, where, strict=True)
        ]
        color, dash = _SCORES[key]
        line = go.Scatter(
            x=steps,
            y=best,
            name=f"max {key}",
            mode="lines",
            hovertext=hover,
            hovertemplate=HOVER,
            line=dict(color=color, dash=dash),
        )
        fig.add_trace(line, secondary_y=True)
    final = log.get("final")
    if isinstance(final, Mapping) and final.get("phase1_end_step") is not None:
        fig.add_vline(
            x=final["phase1_end_step"],
            line_dash="dash",
            line_color="gray",
            annotation_text="phase 1 ends",
        )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss", secondary_y=False)
    fig.update_yaxes(
        title_text="max score over heads",
        range=[0, 1.05],
        tickmode="auto",
        showgrid=False,
        secondary_y=True,
    )
    fig.update_layout(title=title or "Training: loss and head scores", hovermode="x unified")
    return fig


def phase_change(
    steps,
    scores,
    second_copy_loss,
    icl_score,
    *,
    kind: str = "induction",
    phase: tuple[int, int] | None = None,
    top: int = 3,
    title: str | None = None,
) -> go.Figure:
    """Every head's score against training step, with the losses that move with it.

    steps (C,); scores (C, L, H) of `kind`; second_copy_loss (C,) and icl_score (C,) on the right
    axis (see `mlx_headwidget.timeline`). Each head is a line: the `top` heads with the highest
    score at the last step in colour, the others grey. `phase` (step before, step after) is
    shaded as the phase change. Hover: "L2H3 induction 0.965 at step 1200".
    """
    x = _as_float(steps, "steps")
    s = _as_float(scores, "scores")
    if s.ndim != 3 or s.shape[0] != len(x):
        raise ValueError(
            f"scores must be (steps, layers, heads) with {len(x)} steps, got {s.shape}"
        )
    losses = {
        "second-copy loss": _as_float(second_copy_loss, "second_copy_loss"),
        "in-context learning score": _as_float(icl_score, "icl_score"),
    }
    for name, values in losses.items():
        if values.shape != x.shape:
            raise ValueError(f"{name} has shape {values.shape}, expected {x.shape}")
    name = _escaped(kind)
    C, L, H = s.shape
    last = np.where(np.isnan(s[-1]), -np.inf, s[-1]).ravel()
    best = [int(i) for i in np.argsort(-last)[: _positive_int(top, "top")]]
    colors = ("#d62728", "#ff7f0e", "#9467bd", "#2ca02c", "#8c564b")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    others = [i for i in range(L * H) if i not in best]
    for i in others + best:  # the coloured lines last (on top), best first in the legend
        layer, head = divmod(i, H)
        rank = best.index(i) if i in best else None
        label = f"L{layer}H{head}"
        line = go.Scatter(
            x=x,
            y=s[:, layer, head],
            mode="lines",
            name=label,
            showlegend=rank is not None,
            line=dict(
                color=colors[rank % len(colors)] if rank is not None else "rgba(0,0,0,0.15)",
                width=2.5 if rank is not None else 1,
            ),
            hovertemplate=f"{label} {name} %{{y:.3f}} at step %{{x}}<extra></extra>",
        )
        fig.add_trace(line, secondary_y=False)
    for (label, values), dash in zip(losses.items(), ("dash", "dot"), strict=True):
        line = go.Scatter(
            x=x,
            y=values,
            mode="lines+markers",
            name=label,
            line=dict(color=BLUE, dash=dash),
            hovertemplate=f"{label} %{{y:.3f}} at step %{{x}}<extra></extra>",
        )
        fig.add_trace(line, secondary_y=True)
    if phase is not None:
        fig.add_vrect(
            x0=phase[0], x1=phase[1], fillcolor="gray", opacity=0.15, line_width=0,
            annotation_text="phase change", annotation_position="top left",
        )  # fmt: skip
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text=f"{name} score", range=[0, 1.05], secondary_y=False)
    fig.update_yaxes(title_text="loss (nats)", showgrid=False, secondary_y=True)
    fig.update_layout(title=title or f"{name.capitalize()} heads across training")
    return fig
