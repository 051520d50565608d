"""What the widget asks of a model: heads' patterns on a text, and the effect of ablating heads.

Plain functions on an `InterpretableModel`; `score_grid` (the layer x head grid) lives in `detect`
and is re-exported here so the widget has one place to import from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from . import interventions as iv
from .capture import LayerOutputs, can_replay, capture_attention
from .detect import GRID_KINDS, score_grid
from .distributed import head_of
from .errors import OutOfRangeError, is_int
from .tokens import prepare_inputs

__all__ = [
    "AblationResult",
    "GRID_KINDS",
    "ablation_effect",
    "head_pattern",
    "head_patterns",
    "score_grid",
]


def check_head(model, layer: int, head: int) -> tuple[int, int]:
    """(layer, head) as ints, or TypeError / OutOfRangeError naming the bad value and the range."""
    for name, value, size in (("layer", layer, model.n_layers), ("head", head, model.n_heads)):
        if not is_int(value):
            raise TypeError(f"{name} must be an integer, got {value!r}")
        if not 0 <= value < size:
            raise OutOfRangeError(
                f"{name} {value} is out of range: valid {name}s are 0..{size - 1}"
            )
    return int(layer), int(head)


def head_pattern(model, text, layer: int, head: int) -> np.ndarray:
    """The attention pattern of one head on `text`: float32 (T, T), rows = query positions."""
    layer, head = check_head(model, layer, head)
    return head_patterns(model, text, [(layer, head)])[(layer, head)]


def head_patterns(model, text, heads) -> dict[tuple[int, int], np.ndarray]:
    """The patterns of several heads [(layer, head), ...] on one text, from one forward that
    captures only their layers: {(layer, head): float32 (T, T)}, rows = query positions.

    Each layer's (n_heads, T, T) patterns are handed over as the forward reaches it and dropped
    once its heads are copied, so no more than one layer's patterns exist at a time.
    """
    wanted: dict[int, set[int]] = {}
    for layer, head in heads:
        layer, head = check_head(model, layer, head)
        wanted.setdefault(layer, set()).add(head)
    if model.group is not None:  # sharded: each head is gathered from the rank computing it
        trace = model.run(text, capture=sorted(wanted))
        return {
            (layer, head): np.array(head_of(trace.attention, layer, head)[0], dtype=np.float32)
            for layer, hs in wanted.items()
            for head in sorted(hs)
        }
    found: dict[tuple[int, int], np.ndarray] = {}

    def keep(layer: int, pattern: mx.array) -> None:  # (1, n_heads, T, T) float32
        for head in sorted(wanted[layer]):
            found[(layer, head)] = np.array(pattern[0, head], dtype=np.float32)

    capture_attention(model, text, layers=sorted(wanted), on_pattern=keep, logits=False)
    return found


def token_losses(logits: mx.array, tokens: mx.array) -> np.ndarray:
    """Next-token cross-entropy per position: (T-1,), loss[t] = -log p(tokens[t+1] | tokens[:t+1]).

    `logits` (1, T, vocab) and `tokens` (1, T). loss[t] = m + log(sum(exp(x - m))) - x[target]
    with x the float32 logits of position t and m their maximum; the exponentials in float32,
    their sum and the rest in float64 (numpy: MLX's CPU exp is ~10x slower over a vocabulary).
    """
    x = np.asarray(logits[0, :-1].astype(mx.float32))
    target = np.asarray(tokens[0, 1:], dtype=np.int64)
    top = x.max(axis=-1, keepdims=True)
    total = np.exp(x - top).sum(axis=-1, dtype=np.float64)
    picked = np.take_along_axis(x, target[:, None], axis=-1)[:, 0]
    return top[:, 0].astype(np.float64) + np.log(total) - picked.astype(np.float64)


def top_predictions(model, logits_1d: mx.array, top_k: int = 5) -> list[tuple[str, float]]:
    """The `top_k` next tokens and their probabilities from one position's logits (vocab,)."""
    probs = mx.softmax(logits_1d.astype(mx.float32), axis=-1)
    ids = model.get_token_predictions(logits_1d, top_k=top_k)
    return [(model.token_to_str(i), float(probs[i])) for i in ids]


@dataclass
class AblationResult:
    """Before/after numbers for zero-ablating `heads` on one text.

    `token_loss_*` are per-position next-token losses (T-1,); `loss_*` their means; `top_*` the
    top-k next-token predictions after the last token, as (token string, probability).
    """

    heads: list[tuple[int, int]]
    tokens: list[str]
    top_before: list[tuple[str, float]]
    top_after: list[tuple[str, float]]
    loss_before: float
    loss_after: float
    token_loss_before: np.ndarray = field(repr=False)
    token_loss_after: np.ndarray = field(repr=False)
    # the clean run's layer outputs (`ablation_effect(..., keep_layer_outputs=True)` with no
    # heads): ablations using this result as their baseline start at their first ablated layer
    layer_outputs: LayerOutputs | None = field(default=None, repr=False, compare=False)

    @property
    def token_loss_change(self) -> np.ndarray:
        """Per-position loss after minus before (T-1,): positive where the ablation hurts."""
        return self.token_loss_after - self.token_loss_before


def ablation_effect(
    model,
    text,
    heads,
    top_k: int = 5,
    baseline: AblationResult | None = None,
    keep_layer_outputs: bool = False,
) -> AblationResult:
    """Zero-ablate `heads` [(layer, head), ...] on `text` and compare predictions and loss.

    Each head's output is zeroed before its layer's output projection (`interventions.zero_heads`).
    With no heads, `after` equals `before` exactly. Logits that are NaN or infinite (a model that
    overflows) raise ValueError instead of giving NaN losses. `baseline`, an earlier result on the
    same text with the same `top_k`, supplies the `before` numbers so only the ablated forward runs.
    `keep_layer_outputs` (no heads, a model `capture.can_replay`): the result keeps what each
    layer returned (n_layers x (1, T, d_model) floats); an ablation with it as `baseline` then
    reuses the layers before its first ablated head's layer instead of computing them again (the
    same numbers: those layers see the same input and nothing in them changes).
    """
    heads = sorted({check_head(model, layer, head) for layer, head in heads})
    tokens, lengths = prepare_inputs(model, text)
    if tokens.shape[0] != 1:
        raise ValueError("ablation_effect takes one text, not a batch")
    if tokens.shape[1] < 2:
        raise ValueError("the text is too short: it needs at least 2 tokens to measure a loss")
    keep = keep_layer_outputs and not heads and can_replay(model)
    record = LayerOutputs(tokens) if keep else None
    clean = baseline.layer_outputs if baseline is not None and heads else None
    replay = (clean, heads[0][0]) if clean is not None and clean.matches(tokens) else None
    logits = capture_attention(
        model,
        tokens,
        [],
        None,
        iv.ablate_heads(heads),
        lengths=lengths,
        record=record,
        replay=replay,
    )
    str_tokens = model.to_str_tokens(tokens[0])
    after = token_losses(logits, tokens)
    top_after = top_predictions(model, logits[0, -1], top_k)
    if baseline is not None:
        if baseline.tokens != str_tokens or len(baseline.top_before) != len(top_after):
            raise ValueError("baseline is a result for another text or another top_k")
        before, top_before = baseline.token_loss_before, baseline.top_before
    elif heads:
        clean = model.run(tokens, capture=False)
        before = token_losses(clean.logits, tokens)
        top_before = top_predictions(model, clean.logits[0, -1], top_k)
    else:
        before, top_before = after, top_after
    for when, losses in (("before", before), ("after", after)):
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            raise ValueError(
                f"the next-token loss {when} ablating {heads or 'no heads'} is NaN or infinite "
                f"at {bad.size} of {losses.size} positions (first: {int(bad[0]) + 1}): the "
                "model's logits are not finite on this text"
            )
    return AblationResult(
        heads=heads,
        tokens=str_tokens,
        top_before=top_before,
        top_after=top_after,
        loss_before=float(before.mean()),
        loss_after=float(after.mean()),
        token_loss_before=before,
        token_loss_after=after,
        layer_outputs=record,
    )
