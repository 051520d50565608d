"""The induction-head tutorial's whole analysis as plain functions that return numbers.

`full_induction_analysis(model)` runs every measurement of notebooks/01_induction_heads.ipynb
(induction scan, head types, best previous-token head, ablations) and returns a results dict;
`key_findings(results)` turns it into the rows of the tutorial's "key findings" table and
`format_findings(rows)` into text.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import interventions as iv
from .analysis import token_losses, top_predictions
from .detect import (
    HeadScore,
    detect_head_types,
    detect_induction_heads,
    heads_grid,
    random_repeated_tokens,
)
from .errors import is_int, is_number
from .model import InterpretableModel

__all__ = [
    "ABLATION_TEXT",
    "TYPES_TEXT",
    "format_findings",
    "full_induction_analysis",
    "key_findings",
    "predict",
    "repeated_loss",
]

TYPES_TEXT = "The quick brown fox jumps over the lazy dog"
ABLATION_TEXT = "The cat sat on the mat. The cat"


def predict(
    model: InterpretableModel, text: Any, interventions: dict | None = None, top_k: int = 5
) -> list[tuple[str, float]]:
    """The `top_k` next tokens after `text` with their probabilities; `interventions` applied."""
    trace = model.run(text, interventions=interventions, capture=False)
    return top_predictions(model, trace.logits[0, -1], top_k)


def repeated_loss(
    model: InterpretableModel,
    heads: list[tuple[int, int]] | tuple = (),
    *,
    n_random_tokens: int = 50,
    n_repeats: int = 2,
    seed: int = 42,
    n_samples: int = 4,
) -> dict[str, float]:
    """Mean next-token loss (nats) on [BOS] + x * n_repeats with `heads` zero-ablated.

    {"first_copy": mean loss of predicting the n tokens of the first copy, "later_copies": mean loss
    of predicting tokens n+2 .. T-1, every later-copy token whose predecessor occurred before}
    (the first token of the second copy follows x[-1], seen nowhere earlier, so it is left out);
    each the mean over `n_samples` sequences x (seeds seed, seed+1, ...), |x| = n_random_tokens.
    """
    if not is_int(n_samples) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    interventions = iv.ablate_heads(heads) if heads else None
    first, later = [], []
    for i in range(n_samples):
        tokens = random_repeated_tokens(model, n_random_tokens, n_repeats, seed + i)
        trace = model.run(tokens, interventions=interventions, capture=False)
        loss = token_losses(trace.logits, tokens)  # loss[t] predicts token t + 1
        first.append(loss[:n_random_tokens].mean())
        later.append(loss[n_random_tokens + 1 :].mean())
    return {"first_copy": float(np.mean(first)), "later_copies": float(np.mean(later))}


def control_heads(
    induction_grid: np.ndarray,
    previous_grid: np.ndarray,
    n: int,
    below: float,
    seed: int = 0,
    exclude: Any = (),
) -> list[tuple[int, int]]:
    """`n` heads outside the induction circuit, for a control ablation: drawn at random (numpy
    generator `seed`) from the heads whose induction and previous-token scores (both grids
    (n_layers, n_heads)) are under `below`; when fewer qualify, the heads with the lowest
    max(induction, previous-token) score. Heads in `exclude` ((layer, head) pairs, e.g. the
    heads being tested) are never chosen. Returned as sorted (layer, head) pairs.

    The lowest-scoring heads by induction alone would be the previous-token heads, which the
    induction circuit needs: zeroing them is no control."""
    worst = np.maximum(induction_grid, previous_grid).astype(float)
    for layer, head in exclude:
        worst[layer, head] = np.inf
    outside = np.argwhere(worst < below)
    if len(outside) >= n:
        picked = outside[np.random.default_rng(seed).choice(len(outside), size=n, replace=False)]
    else:
        picked = [np.unravel_index(k, worst.shape) for k in np.argsort(worst, axis=None)[:n]]
    return sorted((int(layer), int(head)) for layer, head in picked)


def full_induction_analysis(
    model: Any = None,
    *,
    n_random_tokens: int = 50,
    n_repeats: int = 2,
    threshold: float = 0.3,
    seed: int = 42,
    n_samples: int = 4,
    types_text: str = TYPES_TEXT,
    ablation_text: str = ABLATION_TEXT,
    top_k: int = 3,
) -> dict[str, Any]:
    """Every measurement of the induction-head tutorial on one model, as a results dict.

    `model` is an `InterpretableModel` or anything it loads (None = the bundled model). Keys:
    "model" (its repr), "settings", "induction_grid" (n_layers, n_heads) of strict induction
    scores (mean of `n_samples` seeds), "induction_heads" (HeadScores >= threshold, best first),
    "head_types" ({type: [HeadScore >= threshold]} on `types_text`), "previous_token_grid" and
    "first_token_grid" (n_layers, n_heads) on `types_text`, "best_previous_token_head",
    "ablation" (top-k predictions after `ablation_text`: "normal", with the attention of the
    best induction head's layer zeroed, and with only the induction heads zeroed) and
    "repeated_loss" (`repeated_loss` normal, with the induction heads zeroed, and with as many
    `control_heads` zeroed, heads scoring under `threshold` (at least 0.1) on both induction and
    previous-token). With no head above `threshold` the
    ablations use the single best-scoring head.
    """
    if not is_number(threshold):
        raise TypeError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    model = model if isinstance(model, InterpretableModel) else InterpretableModel(model)
    shape = (model.n_layers, model.n_heads)
    settings = dict(
        n_random_tokens=n_random_tokens,
        n_repeats=n_repeats,
        threshold=threshold,
        seed=seed,
        n_samples=n_samples,
        types_text=types_text,
        ablation_text=ablation_text,
    )
    # threshold 0 lists every head with its score: one scan gives the grid and the selection
    every = detect_induction_heads(
        model,
        n_random_tokens=n_random_tokens,
        n_repeats=n_repeats,
        threshold=0.0,
        seed=seed,
        n_samples=n_samples,
        progress=False,
    )
    induction_heads = [h for h in every if h.score >= threshold]
    all_types = detect_head_types(model, types_text, threshold=0.0)
    head_types = {
        kind: [h for h in heads if h.score >= threshold] for kind, heads in all_types.items()
    }
    previous_grid = heads_grid(all_types["previous_token"], shape)
    first_grid = heads_grid(all_types["first_token"], shape)

    targets = induction_heads or every[:1]
    heads = [(h.layer, h.head) for h in targets]
    layer = targets[0].layer
    control = control_heads(
        heads_grid(every, shape), previous_grid, len(heads), max(threshold, 0.1), exclude=heads
    )
    layer_path = f"model.model.layers.{layer}.self_attn"
    loss_kw = dict(
        n_random_tokens=n_random_tokens, n_repeats=n_repeats, seed=seed, n_samples=n_samples
    )
    return {
        "model": repr(model),
        "settings": settings,
        "induction_grid": heads_grid(every, shape),
        "induction_heads": induction_heads,
        "head_types": head_types,
        "previous_token_grid": previous_grid,
        "first_token_grid": first_grid,
        "best_previous_token_head": all_types["previous_token"][0],
        "ablation": {
            "text": ablation_text,
            "layer": layer,
            "heads": heads,
            "normal": predict(model, ablation_text, top_k=top_k),
            "layer_zeroed": predict(model, ablation_text, {layer_path: iv.zero_out}, top_k),
            "heads_zeroed": predict(model, ablation_text, iv.ablate_heads(heads), top_k),
        },
        "repeated_loss": {
            "heads": heads,
            "control_heads": control,
            "normal": repeated_loss(model, **loss_kw),
            "heads_zeroed": repeated_loss(model, heads, **loss_kw),
            "control_zeroed": repeated_loss(model, control, **loss_kw),
        },
    }


def _heads_text(heads: list[HeadScore], n: int) -> str:
    return ", ".join(f"L{h.layer}H{h.head} ({h.score:.2f})" for h in heads[:n]) or "none"


def _top(predictions: list[tuple[str, float]]) -> str:
    token, p = predictions[0]
    return f"{token!r} ({p:.2f})"


def key_findings(results: dict[str, Any], n_top: int = 3) -> list[tuple[str, str]]:
    """The "key findings" table of `full_induction_analysis` results: [(finding, details), ...]."""
    threshold = results["settings"]["threshold"]
    induction = results["induction_heads"]
    layers: dict[int, int] = {}
    for h in induction:
        layers[h.layer] = layers.get(h.layer, 0) + 1
    per_layer = ", ".join(f"L{layer} ({n})" for layer, n in sorted(layers.items()))
    types = results["head_types"]
    best_prev = results["best_previous_token_head"]
    ablation = results["ablation"]
    loss = results["repeated_loss"]
    return [
        ("Top induction heads", _heads_text(induction, n_top)),
        (f"Induction heads (score >= {threshold})", f"{len(induction)}: {per_layer or 'none'}"),
        (
            "Previous token heads",
            f"{len(types['previous_token'])}, best is L{best_prev.layer}H{best_prev.head} "
            f"({best_prev.score:.2f})",
        ),
        ("First token heads", f"{len(types['first_token'])} of {results['induction_grid'].size}"),
        (
            f"Next token after {ablation['text']!r}",
            f"{_top(ablation['normal'])}; L{ablation['layer']} attention zeroed: "
            f"{_top(ablation['layer_zeroed'])}; induction heads zeroed: "
            f"{_top(ablation['heads_zeroed'])}",
        ),
        (
            "Loss on repeated tokens (nats)",
            f"first copy {loss['normal']['first_copy']:.2f}, second copy "
            f"{loss['normal']['later_copies']:.2f}; induction heads zeroed: "
            f"{loss['heads_zeroed']['later_copies']:.2f}; as many control heads zeroed: "
            f"{loss['control_zeroed']['later_copies']:.2f}",
        ),
    ]


def format_findings(rows: list[tuple[str, str]]) -> str:
    """Rows [(finding, details), ...] as a two-column text table with a header rule."""
    width = max(len("Finding"), *(len(name) for name, _ in rows))
    lines = [f"{'Finding':<{width}}  Details", f"{'-' * width}  {'-' * 7}"]
    lines += [f"{name:<{width}}  {details}" for name, details in rows]
    return "\n".join(lines)
