"""Score every head of a model and pick out the ones of a kind (induction, previous-token, ...).

`score_grid` is the layer x head grid the widget draws; `detect_induction_heads` and
`detect_head_types` are the tutorial's detection functions built on it. Scores are reduced layer by
layer inside one forward pass (`capture.capture_attention`), so a scan never holds more than one
layer's (n_heads, T, T) patterns at a time. On a model sharded over processes each scores its own
heads and only the (n_layers, n_heads) scores are gathered (`distributed.gather_heads`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from . import scores
from .capture import capture_attention, check_layers
from .distributed import gather_heads
from .errors import is_int, is_number
from .tokens import prepare_inputs

GRID_KINDS = (
    "induction",
    "induction_text",
    "previous_token",
    "first_token",
    "current_token",
    "duplicate_token",
)
HEAD_TYPES = ("previous_token", "first_token", "current_token", "duplicate_token", "induction")


@dataclass(frozen=True)
class HeadScore:
    """One head's score: `layer`, `head`, mean `score` and its standard deviation over samples."""

    layer: int
    head: int
    score: float
    std: float = 0.0

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}: {self.score:.3f}"


def heads_grid(
    heads: Iterable[HeadScore], shape: tuple[int, int], field: str = "score"
) -> np.ndarray:
    """The (n_layers, n_heads) float64 grid of each listed head's `field` ("score" or "std");
    NaN where a head is not listed."""
    if field not in ("score", "std"):
        raise ValueError(f"field must be 'score' or 'std', got {field!r}")
    grid = np.full(shape, np.nan)
    for h in heads:
        grid[h.layer, h.head] = getattr(h, field)
    return grid


# Query rows of attention computed at a time in a scan: the work memory is n_heads x ROW_BLOCK x T
# float32 twice (scores, then pattern rows), about a quarter of one layer's patterns at T = 2048.
ROW_BLOCK = 256


def _check_threshold(threshold: float) -> float:
    if not is_number(threshold):
        raise TypeError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return float(threshold)


def _check_count(name: str, value: int, minimum: int) -> int:
    if not is_int(value):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def random_repeated_tokens(
    model, n_random_tokens: int = 50, n_repeats: int = 2, seed: int = 42, prepend_bos: bool = True
) -> mx.array:
    """Token ids (1, [1 +] n_random_tokens * n_repeats): [BOS] + x + x (+ x ...).

    x is drawn uniformly (with a numpy Generator seeded by `seed`) from the vocabulary without the
    tokenizer's special tokens, so no control token lands inside the sequence.
    """
    n_random_tokens = _check_count("n_random_tokens", n_random_tokens, 2)
    n_repeats = _check_count("n_repeats", n_repeats, 2)
    special = set(getattr(model.tokenizer, "all_special_ids", None) or [])
    pool = np.array([i for i in range(model.vocab_size) if i not in special], dtype=np.int64)
    rng = np.random.default_rng(seed)
    x = rng.choice(pool, size=n_random_tokens, replace=True)
    ids = np.tile(x, n_repeats)
    if prepend_bos:
        if model.bos_token_id is None:
            raise ValueError("prepend_bos=True but the model's tokenizer has no BOS token")
        ids = np.concatenate([[model.bos_token_id], ids])
    return mx.array(ids[None].astype(np.int32))


def _grid(
    model, tokens: mx.array, layers: list[int], scorers: dict, progress=False
) -> dict[str, np.ndarray]:
    """One forward; each captured layer's pattern is scored by every `scorers` {name:
    scores.RowScorer} block of query rows by block (the pattern is never whole): {name:
    (n_layers, n_heads)}, NaN for layers not captured.

    `progress`: True for a tqdm bar over the layers, or a callable called after each layer.
    On a sharded model each process scores its own heads, then the grids are gathered."""
    grids = {k: np.full((model.n_layers, len(model.local_heads)), np.nan) for k in scorers}
    bar = None
    if progress is True and model.rank == 0:  # one bar, not one per process
        from tqdm.auto import tqdm

        bar = tqdm(total=len(layers), desc="scoring layers", leave=False)
    tick = bar.update if bar is not None else progress if callable(progress) else None

    def on_rows(layer: int, start: int, rows: mx.array) -> None:
        for name, scorer in scorers.items():
            if start == 0:
                scorer.reset()
            scorer.add(start, rows[0])
            if scorer.complete:
                grids[name][layer] = scorer.result()
        if tick is not None and start + rows.shape[2] == rows.shape[3]:
            tick()

    try:
        capture_attention(
            model, tokens, layers=layers, on_rows=on_rows, row_block=ROW_BLOCK, logits=False
        )
    finally:
        if bar is not None:
            bar.close()
    return {name: gather_heads(model, grid, axis=1) for name, grid in grids.items()}


def _induction_grids(
    model,
    layers: list[int],
    n_random_tokens: int,
    n_repeats: int,
    seeds: Iterable[int],
    prepend_bos: bool,
    mode: str,
    progress: Any = False,
) -> np.ndarray:
    """(samples, n_layers, n_heads): induction scores on [BOS] + x * n_repeats, one random x per
    seed (`random_repeated_tokens`), each scored in one forward."""
    grids = []
    for seed in seeds:
        tokens = random_repeated_tokens(model, n_random_tokens, n_repeats, seed, prepend_bos)
        scorer = scores.RowScorer(
            "induction",
            tokens.shape[1],
            seq_len=n_random_tokens,
            prepend_bos=prepend_bos,
            mode=mode,
        )
        grids.append(_grid(model, tokens, layers, {"induction": scorer}, progress)["induction"])
    return np.stack(grids)


def _counter(progress: Callable[[int, int], Any], total: int) -> Callable[[], None]:
    """A per-layer tick that calls progress(done, total)."""
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        progress(done, total)

    return tick


def _text_tokens(model, inputs) -> mx.array:
    tokens = prepare_inputs(model, inputs)[0]  # validated ids (B, T)
    if tokens.shape[0] != 1:
        raise ValueError(
            f"score_grid scores one sequence at a time, got a batch of {tokens.shape[0]}"
        )
    if tokens.shape[1] < 2:
        raise ValueError("the text is too short to score: it needs at least 2 tokens")
    return tokens


def score_grid(
    model,
    inputs=None,
    kind: str = "induction",
    *,
    mode: str = "strict",
    layers=None,
    n_random_tokens: int = 50,
    n_repeats: int = 2,
    seed: int = 42,
    n_samples: int = 1,
    progress: bool | Callable[[int, int], Any] = False,
) -> np.ndarray:
    """Score every head: a float array (n_layers, n_heads); layers not asked for are NaN.

    `progress`: True shows a tqdm bar; a callable is called as progress(done, total) after each
    layer's forward, total = layers x samples (the widget's status line uses it).

    kind "induction" scores induction on [BOS] + x * n_repeats for `n_samples` random x (the mean
    over samples; `inputs` is not used). The other kinds score the heads on `inputs` (a string or
    token ids): "induction_text" (token-equality induction), "previous_token", "first_token",
    "current_token", "duplicate_token". Definitions and modes: see `mlx_headwidget.scores`.
    """
    if kind not in GRID_KINDS:
        raise ValueError(f"unknown score kind {kind!r}; choose one of {', '.join(GRID_KINDS)}")
    if mode not in scores.MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(scores.MODES)}")
    if mode == "stripe" and kind in ("induction_text", "duplicate_token"):
        raise ValueError(
            f"mode='stripe' has no definition for {kind!r} (it needs token equality); "
            "use mode='strict' or 'tl_detector'"
        )
    layer_list = check_layers(model, layers)
    if kind == "induction":
        n_samples = _check_count("n_samples", n_samples, 1)
        if callable(progress):
            progress = _counter(progress, len(layer_list) * n_samples)
        bos = model.bos_token_id is not None  # a model without BOS scores x * n_repeats
        seeds = range(seed, seed + n_samples)
        grids = _induction_grids(
            model, layer_list, n_random_tokens, n_repeats, seeds, bos, mode, progress
        )
        return grids.mean(axis=0)
    tokens = _text_tokens(model, inputs)
    if callable(progress):
        progress = _counter(progress, len(layer_list))
    ids = np.array(tokens[0])
    name = "induction" if kind == "induction_text" else kind
    scorer = scores.RowScorer(name, tokens.shape[1], tokens=ids, mode=mode)
    return _grid(model, tokens, layer_list, {kind: scorer}, progress)[kind]


def _heads_above(grid: np.ndarray, threshold: float, spread: np.ndarray | None = None):
    found = [
        HeadScore(
            int(layer),
            int(head),
            float(grid[layer, head]),
            float(spread[layer, head]) if spread is not None else 0.0,
        )
        for layer, head in zip(*np.nonzero(np.nan_to_num(grid, nan=-1.0) >= threshold), strict=True)
    ]
    return sorted(found, key=lambda h: (-h.score, h.layer, h.head))


def detect_induction_heads(
    model,
    n_random_tokens: int = 50,
    n_repeats: int = 2,
    threshold: float = 0.3,
    seed: int = 42,
    layers=None,
    n_samples: int = 4,
    prepend_bos: bool = True,
    mode: str = "strict",
    progress: bool = True,
) -> list[HeadScore]:
    """Heads whose induction score on repeated random tokens is >= threshold, best first.

    Each of `n_samples` sequences is [BOS] + x * n_repeats with x = `n_random_tokens` random
    non-special tokens (seeds seed, seed+1, ...); a head's score is the mean over samples and
    `HeadScore.std` the standard deviation. Strict mode: the mean over the rows of every repeat
    after the first of the attention paid to the token right after the earlier copy.
    """
    threshold = _check_threshold(threshold)
    if mode not in scores.MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(scores.MODES)}")
    n_samples = _check_count("n_samples", n_samples, 1)
    layer_list = check_layers(model, layers)
    seeds = range(seed, seed + n_samples)
    if progress and n_samples > 1 and model.rank == 0:
        from tqdm.auto import tqdm

        seeds = tqdm(seeds, desc="induction scan", leave=False)
    grids = _induction_grids(
        model, layer_list, n_random_tokens, n_repeats, seeds, bool(prepend_bos), mode
    )
    return _heads_above(grids.mean(axis=0), threshold, grids.std(axis=0))


def detect_head_types(
    model, text: str, threshold: float = 0.3, layers=None, mode: str = "strict"
) -> dict[str, list[HeadScore]]:
    """Heads of each type on `text`: {kind: [HeadScore, ...] best first} for the five HEAD_TYPES.

    A head is listed under a type when its score of that kind is >= threshold (a head can have
    several types). "induction" here is token-equality induction on the text itself.
    """
    threshold = _check_threshold(threshold)
    if mode not in ("strict", "tl_detector"):
        raise ValueError(
            f"detect_head_types takes mode 'strict' or 'tl_detector', got {mode!r} "
            "(the stripe mode has no token-equality kinds)"
        )
    layer_list = check_layers(model, layers)
    tokens = _text_tokens(model, text)
    ids = np.array(tokens[0])
    T = tokens.shape[1]
    scorers = {kind: scores.RowScorer(kind, T, tokens=ids, mode=mode) for kind in HEAD_TYPES}
    grids = _grid(model, tokens, layer_list, scorers)
    return {kind: _heads_above(grids[kind], threshold) for kind in HEAD_TYPES}
