"""Activation patching of heads: how much of a clean run's preference one head's output restores.

A clean and a corrupted input of the same length, and two tokens. The metric is the logit
difference at the last position,

    m(run) = logit(answer) - logit(distractor)

A patched run is the corrupted input with some heads' outputs z (the output projection's input,
(T, n_heads, d_head), at every position) taken from the clean run. The recovered share of head
(l, h) is

    share[l, h] = (m(corrupted, z[l, h] from clean) - m(corrupted)) / (m(clean) - m(corrupted))

0 = as corrupted, 1 = as clean (it can leave [0, 1]). `patch_heads` runs one patched head per batch
row, so the grid costs ceil(n_layers * n_heads / batch) forwards of `batch` rows, plus one clean and
one corrupted forward. `attribution_patch` is its first-order approximation (gradient times
activation difference) from one clean forward, one corrupted forward and one backward pass:

    share[l, h] ~ sum_{t, d} dm/dz[l, t, h, d] (z_clean - z_corrupted)[l, t, h, d]
                  / (m(clean) - m(corrupted))

with the gradient taken on the corrupted run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import mlx.core as mx
import numpy as np

from . import interventions as iv
from .capture import capture_attention
from .errors import InputError, OutOfRangeError
from .progress import Progress, ticker
from .tokens import prepare_inputs, single_token

DEGENERATE = 1e-4
"""m(clean) - m(corrupted) must exceed DEGENERATE * max(1, |m(clean)|, |m(corrupted)|): two
computations of one logit differ by ~1e-6 of the logits' size (docs/numerics.md), so a smaller
denominator would turn float noise into shares."""


def _path(layer: int) -> str:
    return f"model.model.layers.{layer}.self_attn"


def _one_sequence(model, inputs: Any, name: str) -> mx.array:
    ids = prepare_inputs(model, inputs)[0]
    if ids.shape[0] != 1:
        raise InputError(f"{name} must be one sequence, got a batch of {ids.shape[0]}")
    return ids


def _pair(model, clean: Any, corrupted: Any) -> tuple[mx.array, mx.array]:
    """Token ids (1, T) of both inputs; an error naming both lengths when they differ."""
    clean_ids = _one_sequence(model, clean, "clean")
    corrupted_ids = _one_sequence(model, corrupted, "corrupted")
    if clean_ids.shape[1] != corrupted_ids.shape[1]:
        raise InputError(
            f"clean and corrupted inputs must have the same number of tokens to patch position by "
            f"position: clean has {clean_ids.shape[1]} tokens, corrupted has "
            f"{corrupted_ids.shape[1]}"
        )
    return clean_ids, corrupted_ids


def _tokens(model, answer: Any, distractor: Any) -> tuple[int, int]:
    a, d = single_token(model, answer, "answer"), single_token(model, distractor, "distractor")
    if a == d:
        raise InputError(f"answer and distractor are the same token ({a}): their difference is 0")
    return a, d


def _metric(logits: mx.array, answer: int, distractor: int) -> mx.array:
    """logit(answer) - logit(distractor) at the last position of each row: (B,)."""
    last = logits[:, -1].astype(mx.float32)
    return last[:, answer] - last[:, distractor]


def _heads(model, heads: Iterable[tuple[int, int]] | None) -> list[tuple[int, int]]:
    """Every (layer, head) in order, or the given pairs checked against the model."""
    if heads is None:
        return [(layer, h) for layer in range(model.n_layers) for h in range(model.n_heads)]
    out = []
    for pair in heads:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Iterable) or len(pair) != 2:
            raise TypeError(f"heads must be (layer, head) pairs, got {pair!r}")
        for name, value, size in zip(
            ("layer", "head"), pair, (model.n_layers, model.n_heads), strict=True
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an integer, got {value!r} in {pair!r}")
            if not 0 <= value < size:
                raise OutOfRangeError(f"{name} {value} is out of range: valid 0..{size - 1}")
        out.append((int(pair[0]), int(pair[1])))
    return out


def head_outputs(model, inputs: Any) -> tuple[mx.array, list[mx.array]]:
    """One forward: (logits (B, T, vocab) float32, [z (B, T, n_heads, d_head) for each layer]),
    z being each layer's output projection input (the heads' outputs)."""
    seen: dict[int, mx.array] = {}

    def keeper(layer: int) -> Callable[[mx.array], mx.array]:
        def keep(h: mx.array) -> mx.array:
            seen[layer] = h
            return h

        return keep

    ivs = {_path(layer): iv.on_heads(keeper(layer)) for layer in range(model.n_layers)}
    logits = capture_attention(model, inputs, layers=[], interventions=ivs)
    return logits, [seen[layer] for layer in range(model.n_layers)]


def _check_batch(batch: int) -> int:
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive integer (rows per forward), got {batch!r}")
    return int(batch)


def _patched(
    model, source_z: list[mx.array], target: mx.array, answer: int, distractor: int,
    pairs: list[tuple[int, int]], batch: int, progress,
) -> np.ndarray:  # fmt: skip
    """m of `target` with each of `pairs` patched from `source_z` alone, `batch` rows a forward:
    (n_layers, n_heads) float64, NaN where not computed."""
    grid = np.full((model.n_layers, model.n_heads), np.nan)
    chunks = [pairs[i : i + batch] for i in range(0, len(pairs), batch)]
    tick, close = ticker(progress, len(chunks), "patching heads")
    try:
        for chunk in chunks:
            masks: dict[int, np.ndarray] = {}
            for row, (layer, head) in enumerate(chunk):
                masks.setdefault(layer, np.zeros((len(chunk), model.n_heads), bool))[row, head] = 1
            ivs = {
                _path(layer): iv.replace_heads(source_z[layer].reshape(1, target.shape[1], -1), m)
                for layer, m in masks.items()
            }
            rows = mx.repeat(target, len(chunk), axis=0)  # the target once per patched head
            logits = capture_attention(model, rows, layers=[], interventions=ivs)
            values = np.array(_metric(logits, answer, distractor), dtype=np.float64)
            for (layer, head), value in zip(chunk, values, strict=True):
                grid[layer, head] = value
            tick()
    finally:
        close()
    return grid


def patched_logit_diffs(
    model,
    source: Any,
    target: Any,
    answer: Any,
    distractor: Any,
    *,
    heads: Iterable[tuple[int, int]] | None = None,
    batch: int = 32,
    progress: Progress = False,
) -> np.ndarray:
    """m = logit(answer) - logit(distractor) at the last position of `target` with one head's
    output taken from `source`, for every head: (n_layers, n_heads) float64.

    `heads`: only these (layer, head) pairs (others NaN); `batch`: patched heads per forward;
    `progress`: True for a tqdm bar, or a callable(done, total) called after each forward.
    """
    source_ids, target_ids = _pair(model, source, target)
    a, d = _tokens(model, answer, distractor)
    pairs, batch = _heads(model, heads), _check_batch(batch)
    _, source_z = head_outputs(model, source_ids)
    return _patched(model, source_z, target_ids, a, d, pairs, batch, progress)


def _recoverable(clean: float, corrupted: float) -> float:
    """clean - corrupted, refused when it is float noise."""
    if abs(clean - corrupted) <= DEGENERATE * max(1.0, abs(clean), abs(corrupted)):
        raise InputError(
            f"the logit difference is {clean:.6g} on the clean input and {corrupted:.6g} on the "
            "corrupted one: with nothing to recover, the share (patched - corrupted) / (clean - "
            "corrupted) is undefined. Choose inputs (or answer/distractor tokens) on which the "
            "model's preference differs"
        )
    return clean - corrupted


def patch_heads(
    model,
    clean: Any,
    corrupted: Any,
    answer: Any,
    distractor: Any,
    *,
    heads: Iterable[tuple[int, int]] | None = None,
    batch: int = 32,
    progress: Progress = False,
) -> np.ndarray:
    """Recovered share of the logit difference per head (module docstring): (n_layers, n_heads)
    float64, share[l, h] = (m(corrupted, head l, h from clean) - m(corrupted)) / (m(clean) -
    m(corrupted)), m = logit(answer) - logit(distractor) at the last position.

    `clean`, `corrupted`: texts or ids (as `trace` takes them) of one sequence each and the same
    length; `answer`, `distractor`: token ids or one-token texts. `heads`: only these (layer, head)
    pairs (others NaN). `batch` patched heads per forward: ceil(n_heads * n_layers / batch)
    forwards of (batch, T), plus a clean and a corrupted one; logits of (batch, T, vocab) float32
    are held at once. `progress`: True for a tqdm bar, or a callable(done, total).
    """
    clean_ids, corrupted_ids = _pair(model, clean, corrupted)
    a, d = _tokens(model, answer, distractor)
    pairs, batch = _heads(model, heads), _check_batch(batch)
    clean_logits, clean_z = head_outputs(model, clean_ids)
    corrupted_logits = capture_attention(model, corrupted_ids, layers=[])
    m_clean = _metric(clean_logits, a, d).item()
    m_corrupted = _metric(corrupted_logits, a, d).item()
    recoverable = _recoverable(m_clean, m_corrupted)  # refused before the long part
    grid = _patched(model, clean_z, corrupted_ids, a, d, pairs, batch, progress)
    return (grid - m_corrupted) / recoverable


def patch_head_group(
    model, clean: Any, corrupted: Any, answer: Any, distractor: Any, heads: Iterable
) -> float:
    """Recovered share (module docstring) when all of `heads` [(layer, head), ...] are patched
    from the clean run at once, in one corrupted forward."""
    clean_ids, corrupted_ids = _pair(model, clean, corrupted)
    a, d = _tokens(model, answer, distractor)
    pairs = _heads(model, heads)
    clean_logits, clean_z = head_outputs(model, clean_ids)
    m_clean = _metric(clean_logits, a, d).item()
    m_corrupted = _metric(capture_attention(model, corrupted_ids, layers=[]), a, d).item()
    masks: dict[int, np.ndarray] = {}
    for layer, head in pairs:
        masks.setdefault(layer, np.zeros((1, model.n_heads), bool))[0, head] = True
    T = corrupted_ids.shape[1]
    ivs = {_path(k): iv.replace_heads(clean_z[k].reshape(1, T, -1), m) for k, m in masks.items()}
    patched = _metric(capture_attention(model, corrupted_ids, layers=[], interventions=ivs), a, d)
    return (patched.item() - m_corrupted) / _recoverable(m_clean, m_corrupted)


def attribution_patch(
    model, clean: Any, corrupted: Any, answer: Any, distractor: Any
) -> np.ndarray:
    """First-order approximation of `patch_heads` (module docstring): (n_layers, n_heads) float64,

        share[l, h] ~ sum_{t, d} dm/dz[l, t, h, d] (z_clean - z_corrupted)[l, t, h, d]
                      / (m(clean) - m(corrupted))

    z = the heads' outputs before the output projection (T, n_heads, d_head), the gradient of m
    on the corrupted run (through every later layer); one clean forward, one corrupted forward
    and one backward pass. Exact when m is linear in z; the error grows with how far the patch
    moves attention patterns and norms.
    """
    clean_ids, corrupted_ids = _pair(model, clean, corrupted)
    a, d = _tokens(model, answer, distractor)
    clean_logits, clean_z = head_outputs(model, clean_ids)
    m_clean = _metric(clean_logits, a, d).item()

    def run(deltas: list[mx.array]) -> tuple[mx.array, list[mx.array]]:
        """m of the corrupted run with deltas added to z (zero: m's value, d m / d z)."""
        seen: dict[int, mx.array] = {}

        def adder(layer: int) -> Callable[[mx.array], mx.array]:
            def add(h: mx.array) -> mx.array:
                seen[layer] = h
                return h + deltas[layer]

            return add

        ivs = {_path(layer): iv.on_heads(adder(layer)) for layer in range(model.n_layers)}
        logits = capture_attention(model, corrupted_ids, layers=[], interventions=ivs)
        return _metric(logits, a, d)[0], [seen[layer] for layer in range(model.n_layers)]

    zeros = [mx.zeros_like(z) for z in clean_z]
    (m_corrupted, corrupted_z), grads = mx.value_and_grad(run)(zeros)
    recoverable = _recoverable(m_clean, m_corrupted.item())
    grid = np.stack(
        [
            np.einsum(
                "bthd,bthd->h",
                np.array(g, dtype=np.float64),
                np.array(zc, dtype=np.float64) - np.array(zx, dtype=np.float64),
            )
            for g, zc, zx in zip(grads, clean_z, corrupted_z, strict=True)
        ]
    )
    return grid / recoverable
