"""`HeadSession`: what the widget shows of a model, computed by the library and cached.

`HeadSession(model)` answers `tokens(text)`, `grid(text, kind, progress=...)` (every head's score,
`analysis.score_grid`), `patterns(text, heads)` (single heads' attention, `analysis.head_patterns`),
`ablation(text, heads)` (`analysis.ablation_effect`; the clean run of a text, computed once, is
the baseline of every ablation on it and keeps each layer's output when the budget allows, so an
ablation computes only the layers from its first ablated head's), `attention_to(text, query, key)`
(every head's attention from one token to another, "which heads look here") and
`composition_into(kind, layer, head)` (`composition.composition_scores` into one head),
`patching(text, corrupted, answer, distractor)` (`patching.patch_heads`) and
`logit_attribution(text, answer, distractor)` (`attribution.head_logit_attribution`). Plain
Python, no widget: tests and other front ends call it directly.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import mlx.core as mx
import numpy as np

from . import analysis, attribution, composition, patching
from .capture import capture_attention
from .errors import OutOfRangeError, is_int
from .tokens import check_text

CACHE_BYTES = 256 * 2**20
# A forward runs every layer anyway: when one forward's patterns of every head (float16) fit in
# this, a pattern request keeps them all, else every head of the layers asked for if they fit.
FORWARD_BYTES = 16 * 2**20
_STRING_BYTES = 64  # bytes counted per token string (a Python str and its list slot, roughly)


def _nbytes(value: Any) -> int:
    """What an entry costs in the budget: its arrays' bytes, plus a little per token string."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, mx.array):
        return value.nbytes
    if isinstance(value, analysis.AblationResult):
        arrays = value.token_loss_before.nbytes + value.token_loss_after.nbytes
        if value.layer_outputs is not None:
            arrays += value.layer_outputs.nbytes
        return arrays + _STRING_BYTES * (len(value.tokens) + 2 * len(value.top_before))
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, list):
        return _STRING_BYTES * len(value)
    raise TypeError(f"no size for a cache entry of type {type(value).__name__}")


class HeadSession:
    """Grids, patterns and ablations of one model, cached under one byte budget.

    Thread-safe: one computation at a time (a second caller waits). Bad input raises the
    library's errors (`errors.InputError`, `OutOfRangeError`, ...), before any forward.
    """

    def __init__(self, model, budget: int = CACHE_BYTES, forward_bytes: int = FORWARD_BYTES):
        self.model = model
        self.budget = int(budget)
        self.forward_bytes = int(forward_bytes)
        self._entries: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()

    # ---- the cache ---------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes of every cached entry, as counted against `budget`."""
        return self._bytes

    def cached(self, key: tuple) -> bool:
        """Whether `key` (see the module docstring) is cached; does not count as a use."""
        return key in self._entries

    def _get(self, key: tuple) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def _put(self, key: tuple, value: Any) -> Any:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        size = _nbytes(value)
        self._entries[key] = (value, size)
        self._bytes += size
        while self._bytes > self.budget and len(self._entries) > 1:
            self._bytes -= self._entries.popitem(last=False)[1][1]
        return value

    # ---- what the widget asks ----------------------------------------------------------------
    def ids(self, text: str) -> mx.array:
        """Token ids (1, T) of `text` (BOS first), validated; tokenized once per text."""
        with self._lock:
            ids = self._get(("ids", text))
            if ids is None:
                ids = self._put(("ids", text), self.model.to_tokens(check_text(text)))
            return ids

    def tokens(self, text: str) -> list[str]:
        """One string per token of `text`."""
        with self._lock:
            tokens = self._get(("tokens", text))
            if tokens is None:
                tokens = self._put(("tokens", text), self.model.to_str_tokens(self.ids(text)[0]))
            return tokens

    @staticmethod
    def grid_key(text: str, kind: str) -> tuple:
        """The cache key of a grid: "induction" scores random tokens, the same for every text."""
        return ("grid", None if kind == "induction" else text, kind)

    def grid(
        self, text: str, kind: str, progress: Callable[[int, int], Any] | None = None
    ) -> np.ndarray:
        """Every head's score of `kind` on `text`: float32 (n_layers, n_heads), read-only.

        "induction" scores repeated random tokens, so one grid serves every text. `progress`
        is called as progress(done, total) after each layer's forward when it is computed."""
        if kind not in analysis.GRID_KINDS:
            choices = ", ".join(analysis.GRID_KINDS)
            raise ValueError(f"unknown score kind {kind!r}; choose one of {choices}")
        key = self.grid_key(text, kind)
        with self._lock:
            grid = self._get(key)
            if grid is None:
                ids = self.ids(text)
                grid = analysis.score_grid(self.model, ids, kind, progress=progress or False)
                grid = np.asarray(grid, dtype=np.float32)
                grid.flags.writeable = False  # shared by every caller
                self._put(key, grid)
            return grid

    def patterns(
        self, text: str, heads: Iterable[tuple[int, int]]
    ) -> dict[tuple[int, int], np.ndarray]:
        """{(layer, head): float16 (T, T), rows = query positions} for `heads`; the missing ones
        computed in one forward, which also keeps the other heads it can afford (FORWARD_BYTES)."""
        heads = [analysis.check_head(self.model, *h) for h in heads]
        with self._lock:
            found = {h: self._get(("pattern", text, *h)) for h in heads}
            missing = [h for h, p in found.items() if p is None]
            if missing:
                for h, pattern in analysis.head_patterns(
                    self.model, self.ids(text), self._widened(text, missing)
                ).items():
                    value = pattern.astype(np.float16)
                    value.flags.writeable = False
                    self._put(("pattern", text, *h), value)
                    if h in found:
                        found[h] = value
            return found

    def _widened(self, text: str, heads: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """`heads`, or every head of their layers, or of the model, as FORWARD_BYTES allows."""
        L, H, T = self.model.n_layers, self.model.n_heads, self.ids(text).shape[1]
        if L * H * T * T * 2 <= self.forward_bytes:
            layers = range(L)
        elif H * T * T * 2 <= self.forward_bytes:
            layers = sorted({layer for layer, _ in heads})
        else:
            return heads
        return [(layer, head) for layer in layers for head in range(H)]

    def ablation(self, text: str, heads: Iterable[tuple[int, int]]) -> analysis.AblationResult:
        """Zero-ablating `heads` on `text` (`analysis.ablation_effect`); no heads: the clean run,
        which every ablation on the same text reuses as its `before`."""
        heads = tuple(sorted({analysis.check_head(self.model, *h) for h in heads}))
        with self._lock:
            result = self._get(("ablation", text, heads))
            if result is None:
                baseline = self.ablation(text, ()) if heads else None
                result = analysis.ablation_effect(
                    self.model,
                    self.ids(text),
                    list(heads),
                    baseline=baseline,
                    keep_layer_outputs=not heads and self._affords_layer_outputs(text),
                )
                self._put(("ablation", text, heads), result)
            return result

    def _affords_layer_outputs(self, text: str) -> bool:
        """Whether the clean run of `text` may keep every layer's output (float32 (T, d_model)
        each, so that an ablation computes only the layers from its first ablated one): when
        that takes at most a quarter of the budget."""
        T, d = self.ids(text).shape[1], self.model.d_model
        return 4 * self.model.n_layers * T * d <= self.budget // 4

    def attention_to(self, text: str, query: int, key: int) -> np.ndarray:
        """Every head's attention from token `query` to token `key` of `text`: float32
        (n_layers, n_heads) = pattern[layer, head, query, key], read-only. One forward captures
        the query's row of every head, (n_layers, n_heads, T), kept for any other key."""
        T = self.ids(text).shape[1]
        for name, value in (("query", query), ("key", key)):
            if not (is_int(value) and 0 <= value < T):
                raise OutOfRangeError(
                    f"{name} token {value!r} is out of range: the text has tokens 0..{T - 1}"
                )
        if key > query:
            raise OutOfRangeError(
                f"key token {key} comes after query token {query}: "
                f"a token attends only to tokens 0..{query}"
            )
        with self._lock:
            rows = self._get(("query_rows", text, int(query)))
            if rows is None:
                rows = np.zeros((self.model.n_layers, self.model.n_heads, T), np.float32)

                def keep(layer: int, pattern: mx.array) -> None:  # (1, n_heads, T, T) float32
                    rows[layer] = np.array(pattern[0, :, query], dtype=np.float32)

                capture_attention(self.model, self.ids(text), on_pattern=keep, logits=False)
                rows.flags.writeable = False
                self._put(("query_rows", text, int(query)), rows)
            grid = np.ascontiguousarray(rows[:, :, key])
            grid.flags.writeable = False
            return grid

    def composition_into(self, kind: str, layer: int, head: int) -> np.ndarray:
        """Who feeds head (layer, head): the `kind` ("k", "q", "v") composition score of every
        head into it, float32 (n_layers, n_heads) = composition_scores(model, kind,
        layers=[layer])[:, :, layer, head] (NaN for heads at or after `layer`), read-only. One
        computation per (kind, layer) serves every head of the layer."""
        layer, head = analysis.check_head(self.model, layer, head)
        with self._lock:
            scores = self._get(("composition", kind, layer))
            if scores is None:
                full = composition.composition_scores(self.model, kind, layers=[layer])
                scores = np.asarray(full[:, :, layer, :], dtype=np.float32)
                scores.flags.writeable = False
                self._put(("composition", kind, layer), scores)
            grid = np.ascontiguousarray(scores[:, :, head])
            grid.flags.writeable = False
            return grid

    @staticmethod
    def patching_key(text: str, corrupted: str, answer: str, distractor: str) -> tuple:
        """The cache key of a patching grid."""
        return ("patching", text, corrupted, answer, distractor)

    def patching(
        self,
        text: str,
        corrupted: str,
        answer: str,
        distractor: str,
        progress: Callable[[int, int], Any] | None = None,
    ) -> np.ndarray:
        """Every head's recovered share of the logit difference, `patching.patch_heads(model,
        text, corrupted, answer, distractor)` as float32 (n_layers, n_heads), read-only; cached
        per input pair and tokens. `progress(done, total)` hears the patched forwards."""
        key = self.patching_key(text, corrupted, answer, distractor)
        with self._lock:
            grid = self._get(key)
            if grid is None:
                clean, bad = self.ids(text), self.ids(corrupted)
                grid = patching.patch_heads(
                    self.model, clean, bad, answer, distractor, progress=progress or False
                )
                grid = np.asarray(grid, dtype=np.float32)
                grid.flags.writeable = False
                self._put(key, grid)
            return grid

    def logit_attribution(self, text: str, answer: str, distractor: str | None) -> np.ndarray:
        """Every head's direct contribution to logit(answer) (- logit(distractor)) at the last
        token, `attribution.head_logit_attribution` as float32 (n_layers, n_heads), read-only."""
        key = ("logit_attribution", text, answer, distractor)
        with self._lock:
            grid = self._get(key)
            if grid is None:
                grid = attribution.head_logit_attribution(
                    self.model, self.ids(text), answer, distractor
                )
                grid = np.asarray(grid, dtype=np.float32)
                grid.flags.writeable = False
                self._put(key, grid)
            return grid
