"""Attention capture: every head's real pattern, taken from the computation the model runs.

Most mlx-lm models call `mlx_lm.models.base.scaled_dot_product_attention(queries, keys, values,
cache, scale, mask, sinks)` with queries and keys after RoPE and q/k norms. During a capture that
name is replaced, in the module defining each attention class, by an explicit float32 version that,
for a captured layer, computes

    scores  = (q * scale) @ k^T                 (B, H, T, T); GQA expanded: head h reads KV group
                                                 h // (H / n_kv_heads)
    scores  = masked(scores, mask)              mask as mlx-lm passes it: None, "causal", a bool
                                                 array (True = keep) or an additive array
    pattern = softmax(scores)                   with attention sinks, the sink logit joins the
                                                 denominator, so rows sum to 1 - p(sink) < 1
    output  = (pattern @ V).astype(q.dtype)

and the model continues with that output, so the pattern is the one the model used. Layers not
captured call the original fast function. gemma2 computes attention inline (tanh soft-capping), so
it has its own replacement mirroring its code. Each layer's attention module is wrapped during the
forward so the capture knows the layer index; the forward is evaluated layer by layer and each
captured pattern is handed to `on_pattern`, then dropped.

With `on_rows` instead of `on_pattern` (the scans), a captured layer's attention is computed
`row_block` query rows at a time (`attention_by_rows`): each block's rows of the pattern are handed
over and dropped before the next block is computed, so no whole (B, H, T, T) pattern exists.

Padding: in delivered patterns the rows and columns of padded positions (t >= length) are zero.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten
from mlx_lm.models import base

from . import interventions as iv
from .errors import OutOfRangeError, TraceError, UnsupportedArchitectureError, is_int
from .tokens import prepare_inputs

TESTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gpt2", "gemma2")
_SDPA = "scaled_dot_product_attention"
_SDPA_PARAMS = {"queries", "keys", "values", "cache", "scale", "mask", "sinks"}
fast_attention = base.scaled_dot_product_attention
"""mlx-lm's shared attention function, (queries, keys, values, cache, scale, mask, sinks=None) ->
output (B, n_heads, T, d_head); `swap_attention` replaces it for the length of a block."""
# An argument we do not know (a new mlx-lm feature) could change the pattern: refuse to capture.
_SHARED_SDPA_KNOWN = set(inspect.signature(fast_attention).parameters) <= _SDPA_PARAMS
# Every global and attribute name gemma2's Attention.__call__ uses in mlx-lm 0.28-0.32; a new name
# means its code changed, and `_gemma2_attention` might no longer mirror it.
_GEMMA2_NAMES = frozenset(
    "shape q_proj k_proj v_proj reshape n_heads transpose n_kv_heads rope offset update_and_fetch "
    "scale repeats head_dim mx expand_dims swapaxes tanh attn_logit_softcapping dtype bool_ where "
    "array finfo min softmax o_proj".split()
)


def expand_heads(x: mx.array, n_heads: int) -> mx.array:
    """(B, n_kv_heads, S, D) -> (B, n_heads, S, D): query head h reads KV head h // group size."""
    n_kv = x.shape[1]
    return x if n_kv == n_heads else mx.repeat(x, n_heads // n_kv, axis=1)


def shared_attention_modules(model: Any) -> list:
    """The Python modules (e.g. `mlx_lm.models.llama`) that define a class of `model` (an
    `InterpretableModel` or an mlx-lm `nn.Module`) and call mlx-lm's shared attention function."""
    net = model if isinstance(model, nn.Module) else model.model
    names = {type(m).__module__ for m in net.modules()}
    found = [sys.modules.get(name) for name in sorted(names)]
    return [m for m in found if m is not None and getattr(m, _SDPA, None) is fast_attention]


@contextmanager
def swap_attention(model: Any, fn: Callable) -> Iterator[None]:
    """Inside the block, the model's attention calls `fn(queries, keys, values, cache, scale, mask,
    sinks=None)` in place of `fast_attention` (queries and keys after RoPE and q/k norms; keys and
    values with the un-expanded KV-head count); put back on leaving, whatever happens.

    The one way this package runs a forward with another attention function: captures, the
    benchmarks' unfused forward and the training script's probe all go through it. Attention
    computed inline (gemma2) is not affected.
    """
    with iv.Swaps() as swaps:
        for module in shared_attention_modules(model):
            swaps.replace(module, _SDPA, fn)
        yield


def masked(scores: mx.array, mask: Any) -> mx.array:
    """Apply an mlx-lm attention mask to scores (B, H, T, S)."""
    if mask is None:
        return scores
    if isinstance(mask, str):
        T, S = scores.shape[-2:]
        mask = mask_rows(mask, 0, T, T, S)  # "causal" as a bool array
    if not isinstance(mask, mx.array):
        raise UnsupportedArchitectureError(f"unknown attention mask of type {type(mask).__name__}")
    if mask.dtype == mx.bool_:
        return mx.where(mask, scores, mx.array(mx.finfo(scores.dtype).min, scores.dtype))
    return scores + mask.astype(scores.dtype)


def softmax_with_sinks(scores: mx.array, sinks: mx.array | None) -> mx.array:
    """softmax over keys of scores (B, H, T, S); with sinks (H,), each head's sink logit joins the
    denominator (and takes its share of the row)."""
    if sinks is None:
        return mx.softmax(scores, axis=-1)
    B, H, T, _ = scores.shape
    sink = mx.broadcast_to(sinks.astype(mx.float32).reshape(1, H, 1, 1), (B, H, T, 1))
    return mx.softmax(mx.concatenate([sink, scores], axis=-1), axis=-1)[..., 1:]


def explicit_attention(queries, keys, values, scale, mask=None, sinks=None):
    """The module docstring's formula: (output (B, H, T, D) in q's dtype, pattern float32)."""
    n_heads = queries.shape[1]
    q = queries.astype(mx.float32) * scale
    k = expand_heads(keys.astype(mx.float32), n_heads)
    pattern = softmax_with_sinks(masked(q @ k.swapaxes(-1, -2), mask), sinks)
    out = pattern @ expand_heads(values.astype(mx.float32), n_heads)
    return out.astype(queries.dtype), pattern


def mask_rows(mask: Any, start: int, stop: int, T: int, S: int) -> Any:
    """Rows start..stop-1 of an mlx-lm attention mask for T queries over S keys (see `masked`)."""
    if mask is None:
        return None
    if isinstance(mask, str):
        if mask != "causal":
            raise UnsupportedArchitectureError(f"unknown attention mask {mask!r}")
        return mx.arange(S - T + start, S - T + stop)[:, None] >= mx.arange(S)[None]
    if not isinstance(mask, mx.array):
        raise UnsupportedArchitectureError(f"unknown attention mask of type {type(mask).__name__}")
    if mask.ndim >= 2 and mask.shape[-2] == T:
        return mask[..., start:stop, :]
    if mask.ndim < 2 or mask.shape[-2] == 1:
        return mask  # the same for every row
    raise UnsupportedArchitectureError(f"attention mask of shape {mask.shape} for {T} queries")


def attention_by_rows(
    queries, keys, values, scale, mask=None, sinks=None, *, block: int, on_rows: Callable
) -> mx.array:
    """`explicit_attention`, `block` query rows at a time: the rows of the pattern (B, H, b, S)
    float32 go to on_rows(start, rows), evaluated, and are dropped before the next block.
    Returns the output (B, H, T, D) in q's dtype; the pattern is never whole."""
    n_heads, T, S = queries.shape[1], queries.shape[2], keys.shape[2]
    k = expand_heads(keys.astype(mx.float32), n_heads).swapaxes(-1, -2)
    v = expand_heads(values.astype(mx.float32), n_heads)
    outs = []
    for start in range(0, T, block):
        stop = min(T, start + block)
        q = queries[:, :, start:stop].astype(mx.float32) * scale
        rows = softmax_with_sinks(masked(q @ k, mask_rows(mask, start, stop, T, S)), sinks)
        mx.eval(rows)
        on_rows(start, rows)
        out = (rows @ v).astype(queries.dtype)
        mx.eval(out)
        outs.append(out)
        del rows
    return mx.concatenate(outs, axis=2)


def _gemma2_attention(attn, x: mx.array, mask=None, cache=None):
    """mlx_lm.models.gemma2.Attention without a cache, scores in float32: (output, pattern).

    scores = cap * tanh((q / sqrt(query_pre_attn_scalar)) @ k^T / cap), then mask and softmax.
    """
    if cache is not None:
        raise TraceError("attention capture runs without a KV cache")
    B, L, _ = x.shape

    def split(t, n):  # (B, L, n * D) -> (B, n, L, D)
        return t.reshape(B, L, n, -1).transpose(0, 2, 1, 3)

    q = attn.rope(split(attn.q_proj(x), attn.n_heads)).astype(mx.float32) * attn.scale
    k = expand_heads(
        attn.rope(split(attn.k_proj(x), attn.n_kv_heads)).astype(mx.float32), attn.n_heads
    )
    v = expand_heads(split(attn.v_proj(x), attn.n_kv_heads).astype(mx.float32), attn.n_heads)
    cap = attn.attn_logit_softcapping
    scores = mx.tanh((q @ k.swapaxes(-1, -2)) / cap) * cap
    pattern = mx.softmax(masked(scores, mask), axis=-1)
    out = (pattern @ v).astype(x.dtype).transpose(0, 2, 1, 3).reshape(B, L, -1)
    return attn.o_proj(out), pattern


_FAMILIES: dict[str, tuple[frozenset[str], Callable]] = {
    "mlx_lm.models.gemma2": (_GEMMA2_NAMES, _gemma2_attention),
}


def capture_kind(attn) -> str | None:
    """The capture for this attention: "sdpa" (shared function), a family's module, or None."""
    cls = type(attn)
    call = next((c.__dict__["__call__"] for c in cls.__mro__ if "__call__" in c.__dict__), None)
    code = getattr(call, "__code__", None)
    names = set(code.co_names) if code is not None else set()
    module = sys.modules.get(cls.__module__)
    if _SDPA in names and _SHARED_SDPA_KNOWN and getattr(module, _SDPA, None) is fast_attention:
        return "sdpa"
    family = _FAMILIES.get(cls.__module__)
    if family is not None and names <= family[0]:
        return cls.__module__
    return None


def check_layers(model, layers: Any) -> list[int]:
    """Layers to capture: None/True all, False none, or ints in -n_layers..n_layers-1; sorted."""
    n = model.n_layers
    if layers is None or layers is True:
        return list(range(n))
    if layers is False:
        return []
    if isinstance(layers, (int, np.integer)):
        layers = [layers]
    if not isinstance(layers, Iterable):
        raise TypeError(f"layers must be None, a bool, an int or a list of ints, got {layers!r}")
    out = set()
    for layer in layers:
        if not is_int(layer):
            raise TypeError(f"layers must be integers, got {layer!r}")
        if not -n <= layer < n:
            raise OutOfRangeError(
                f"layer {layer} is out of range: the model has {n} layers, valid 0..{n - 1} "
                f"(or -{n}..-1 from the end)"
            )
        out.add(int(layer) % n)
    return sorted(out)


def _kind_of_layer(model, layer: int) -> str:
    attn = model.attention(layer)
    kind = capture_kind(attn) if attn is not None else None
    if kind is None:
        where = f"{type(attn).__module__}.{type(attn).__name__}" if attn is not None else "none"
        raise UnsupportedArchitectureError(
            f"cannot capture the attention of layer {layer} of this {model.architecture!r} model "
            f"(attention: {where}): it neither calls mlx-lm's shared {_SDPA} nor has a capture of "
            f"its own. Supported: models whose attention calls it (tested: "
            f"{', '.join(a for a in TESTED_ARCHITECTURES if a != 'gemma2')}) and gemma2. "
            "Trace with capture=False to run it without patterns."
        )
    return kind


_BY_ROWS = "handed over by rows"


class _Capture:
    """State of one forward, shared by the attention probes and the sdpa replacement."""

    def __init__(
        self,
        layers: list[int],
        n_heads: int,
        lengths: list[int],
        on_pattern,
        on_rows=None,
        row_block: int = 256,
    ):
        self.layers = frozenset(layers)
        self.stop_after: int | None = None  # raise _Done after this layer (logits not wanted)
        self.n_heads = n_heads
        self.lengths = lengths
        self.on_pattern = on_pattern
        self.on_rows = on_rows
        self.row_block = row_block
        self.layer: int | None = None
        self.patterns: list[Any] = []  # the layer's pattern, or _BY_ROWS once handed over by rows

    def sdpa(self, original: Callable) -> Callable:
        signature = inspect.signature(original)

        def scaled_dot_product_attention(*args, **kwargs):
            if self.layer not in self.layers:
                return original(*args, **kwargs)
            a = signature.bind(*args, **kwargs)
            a.apply_defaults()
            a = a.arguments
            if a["cache"] is not None:
                raise TraceError("attention capture runs without a KV cache")
            args = (a["queries"], a["keys"], a["values"], a["scale"], a["mask"], a.get("sinks"))
            if self.on_rows is not None:
                layer = self.layer
                self.patterns.append(_BY_ROWS)
                return attention_by_rows(
                    *args, block=self.row_block, on_rows=lambda s, r: self.rows(layer, s, r)
                )
            out, pattern = explicit_attention(*args)
            self.patterns.append(pattern)
            return out

        return scaled_dot_product_attention

    def _check(self, layer: int, shape: tuple, rows: int) -> None:
        B, T = len(self.lengths), max(self.lengths)
        if shape != (B, self.n_heads, rows, T):
            raise UnsupportedArchitectureError(
                f"layer {layer}'s pattern has shape {shape}, expected {(B, self.n_heads, rows, T)}"
            )

    def _real(self, start: int, stop: int, pattern: mx.array) -> mx.array:
        """pattern rows start..stop-1 with padded rows and columns zeroed."""
        T = max(self.lengths)
        if min(self.lengths) == T:
            return pattern
        real = (mx.arange(T)[None] < mx.array(self.lengths)[:, None]).astype(mx.float32)
        return pattern * real[:, None, start:stop, None] * real[:, None, None, :]

    def rows(self, layer: int, start: int, rows: mx.array) -> None:
        """Hand rows start.. of a layer's pattern (B, H, b, T) to on_rows."""
        self._check(layer, tuple(rows.shape), min(self.row_block, max(self.lengths) - start))
        stop = start + rows.shape[2]
        mx.eval(self.on_rows(layer, start, self._real(start, stop, rows)))

    def deliver(self, layer: int, out: Any) -> None:
        """Evaluate the layer, zero padded rows/columns, hand the pattern over and forget it."""
        if len(self.patterns) != 1:
            raise UnsupportedArchitectureError(
                f"layer {layer}'s attention computed {len(self.patterns)} attention patterns in "
                "one call (expected exactly 1); its pattern cannot be identified"
            )
        pattern = self.patterns.pop()
        if pattern is _BY_ROWS:
            mx.eval(out)
            return
        T = max(self.lengths)
        self._check(layer, tuple(pattern.shape), T)
        mx.eval(out, pattern)
        if self.on_rows is not None:  # a family's attention gives the whole pattern: by rows
            for start in range(0, T, self.row_block):
                self.rows(layer, start, pattern[:, :, start : start + self.row_block])
            return
        pattern = self._real(0, T, pattern)
        if self.on_pattern is not None:
            mx.eval(self.on_pattern(layer, pattern))


class _AttentionProbe(iv.Wrapper):
    """Sets the current layer around the attention call; captured layers deliver their pattern."""

    def __init__(self, inner, layer: int, capture: _Capture, family_fn: Callable | None):
        super().__init__(inner)
        object.__setattr__(self, "_layer", layer)
        object.__setattr__(self, "_capture", capture)
        object.__setattr__(self, "_family_fn", family_fn)

    def __call__(self, *args, **kwargs):
        cap, layer = self._capture, self._layer
        cap.layer, cap.patterns = layer, []
        try:
            if layer in cap.layers and self._family_fn is not None:
                out, pattern = self._family_fn(self._inner, *args, **kwargs)
                cap.patterns.append(pattern)
            else:
                out = self._inner(*args, **kwargs)
        finally:
            cap.layer = None
        if layer in cap.layers:
            cap.deliver(layer, out)
            if cap.stop_after == layer:  # nothing after this layer is wanted
                raise _Done
        else:
            mx.eval(out)
        return out


class _Done(Exception):
    """Raised by the last captured layer's probe when the logits are not wanted."""


class _Record(iv.Wrapper):
    """A layer that also keeps what it returns (evaluated), in layer order."""

    def __init__(self, inner, outputs: list):
        super().__init__(inner)
        object.__setattr__(self, "_outputs", outputs)

    def __call__(self, *args, **kwargs):
        out = self._inner(*args, **kwargs)
        mx.eval(out)
        self._outputs.append(out)
        return out


class _Replay(iv.Wrapper):
    """A layer that returns its recorded output of an earlier forward instead of computing."""

    def __init__(self, inner, output: Any):
        super().__init__(inner)
        object.__setattr__(self, "_output", output)

    def __call__(self, *args, **kwargs):
        return self._output


@dataclass
class LayerOutputs:
    """What each layer returned in one forward of `tokens` (`capture_attention(record=...)`),
    for later forwards of the same tokens that change nothing before some layer: they replay
    layers 0..k-1 instead of computing them (`capture_attention(replay=(outputs, k))`).
    outputs: one per layer, as the layer returned it (for most models (B, T, d_model))."""

    tokens: mx.array
    outputs: list = field(default_factory=list)

    def matches(self, tokens: mx.array) -> bool:
        """Whether these outputs were recorded on `tokens` (B, T)."""
        same_shape = self.tokens.shape == tokens.shape
        return same_shape and bool(mx.all(self.tokens == tokens))

    @property
    def nbytes(self) -> int:
        leaves = (x for out in self.outputs for x in tree_flatten(out))
        return sum(v.nbytes for _, v in leaves if isinstance(v, mx.array))


def capture_attention(
    model,
    tokens: Any,
    layers: Any = None,
    on_pattern: Callable[[int, mx.array], Any] | None = None,
    interventions: Mapping[str, Any] | None = None,
    *,
    lengths: list[int] | None = None,
    prepend_bos: bool = True,
    on_rows: Callable[[int, int, mx.array], Any] | None = None,
    row_block: int = 256,
    logits: bool = True,
    record: LayerOutputs | None = None,
    replay: tuple[LayerOutputs, int] | None = None,
) -> mx.array | None:
    """One forward pass; each captured layer's pattern (B, n_heads, T, T) float32 goes to
    `on_pattern(layer, pattern)` and is not kept. Returns the logits (B, T, vocab) float32, or
    with `logits=False` None: the forward then stops after the last captured layer (a scan needs
    neither the later layers nor the unembedding, T x vocab floats).

    `tokens` is anything `model.trace` accepts; `layers` None = all, or a list of layer indices;
    `lengths` (one per row) marks right padding when passing padded ids.
    `on_rows` instead of `on_pattern`: each captured layer's attention is computed by blocks of
    `row_block` query rows, and each block goes to `on_rows(layer, start, rows)`, rows =
    pattern[:, :, start:start + b] (B, n_heads, b, T), in order; the whole pattern never exists.
    On a model sharded over processes, the patterns hold this process's heads only,
    `model.local_heads` (mlx_headwidget.distributed).
    `record`: an empty `LayerOutputs(tokens)` that gets what each layer returns. `replay`:
    (outputs recorded on the same tokens, k): layers 0..k-1 return their recorded outputs
    without computing, so interventions and captures there have no effect: they are refused.
    """
    if model._forward_active:
        raise TraceError(
            "a forward pass of this model is already running; do not start another from inside "
            "an on_pattern callback or an intervention"
        )
    tokens, real_lengths = prepare_inputs(model, tokens, prepend_bos)
    if lengths is not None:
        lengths = [int(n) for n in lengths]
        T = tokens.shape[1]
        if len(lengths) != tokens.shape[0] or not all(1 <= n <= T for n in lengths):
            raise ValueError(
                f"lengths {lengths} must hold {tokens.shape[0]} values in 1..{T} (one per row)"
            )
        real_lengths = lengths
    if on_pattern is not None and not callable(on_pattern):
        raise TypeError(f"on_pattern must be callable(layer, pattern), got {on_pattern!r}")
    if on_rows is not None and not callable(on_rows):
        raise TypeError(f"on_rows must be callable(layer, start, rows), got {on_rows!r}")
    if on_rows is not None and on_pattern is not None:
        raise ValueError("pass on_pattern or on_rows, not both")
    if not is_int(row_block) or row_block < 1:
        raise ValueError(f"row_block must be a positive integer, got {row_block!r}")
    layer_list = check_layers(model, layers)
    the_plan = iv.plan(model, interventions)
    kinds = {layer: _kind_of_layer(model, layer) for layer in layer_list}
    # a sharded model computes only its heads here (distributed.py): the patterns have those
    cap = _Capture(
        sorted(kinds), len(model.local_heads), real_lengths, on_pattern, on_rows, int(row_block)
    )
    if not logits:
        if not layer_list:
            return None
        cap.stop_after = max(layer_list)
    layer_items = _layer_items(model, tokens, layer_list, the_plan, record, replay)
    try:
        return _run(model, tokens, real_lengths, kinds, cap, the_plan, layer_items)
    except _Done:
        return None


def _layer_items(model, tokens, captured: list[int], the_plan, record, replay) -> dict:
    """{layer index: the module standing in for the layer} for `record` / `replay`."""
    if record is not None and replay is not None:
        raise ValueError("pass record or replay, not both")
    if record is not None:
        if record.outputs or not record.matches(tokens):
            raise ValueError("record takes an empty LayerOutputs of the same tokens")
        _layer_list(model)  # a model whose layers cannot be swapped: refused before the forward
        return {i: _Record(layer, record.outputs) for i, layer in enumerate(model.layers)}
    if replay is None:
        return {}
    outputs, upto = replay
    if model.group is not None:
        raise ValueError("replaying layers is not supported on a sharded model")
    _layer_list(model)
    if not outputs.matches(tokens) or len(outputs.outputs) != model.n_layers:
        raise ValueError("replay takes the layer outputs recorded on the same tokens")
    if not (is_int(upto) and 0 <= upto <= model.n_layers):
        raise ValueError(f"replay's layer count must be in 0..{model.n_layers}, got {upto!r}")
    touched = sorted({*captured, *iv.layers_of(model, the_plan)})
    if touched and touched[0] < upto:
        raise ValueError(
            f"layer {touched[0]} is captured or intervened on: it cannot be replayed "
            f"(replay at most its first {touched[0]} layers)"
        )
    return {i: _Replay(model.layers[i], outputs.outputs[i]) for i in range(upto)}


def _layer_list(model) -> list:
    """The list holding the model's layers, which its forward reads (`model.layers` may be a
    copy: mlx-lm's pipeline models iterate a slice of it taken at each call)."""
    parent: Any = model.model
    for part in (model.layers_path or "").split(".")[1:]:
        parent = getattr(parent, part, None)
    if not isinstance(parent, list) or len(parent) != model.n_layers:
        raise UnsupportedArchitectureError(
            f"{model.architecture}: the list of its layers was not found at {model.layers_path!r}"
        )
    if any(a is not b for a, b in zip(parent, model.layers, strict=True)):
        raise UnsupportedArchitectureError(
            f"{model.architecture}: {model.layers_path} does not hold the layers the model runs"
        )
    return parent


def can_replay(model) -> bool:
    """Whether forwards of `model` can record and replay layer outputs (`capture_attention`'s
    record / replay): its layer list is found, and it is not sharded over processes."""
    try:
        _layer_list(model)
    except UnsupportedArchitectureError:
        return False
    return model.group is None


def _run(
    model, tokens, lengths, kinds: dict[int, str], cap: _Capture, the_plan, layer_items: dict
) -> mx.array:
    with ExitStack() as undo:  # everything below is put back in reverse order, whatever happens
        model._forward_active = True
        undo.callback(setattr, model, "_forward_active", False)
        if "sdpa" in kinds.values():
            undo.enter_context(swap_attention(model, cap.sdpa(fast_attention)))
        swaps = undo.enter_context(iv.Swaps())
        for i in range(model.n_layers):
            attn = model.attention(i)
            if attn is None:
                continue
            family = _FAMILIES.get(kinds.get(i, ""))
            probe = _AttentionProbe(attn, i, cap, family[1] if family else None)
            swaps.replace(model.layers[i], model.attention_name, probe)
        iv.install(model, the_plan, swaps, lengths)
        layer_list = _layer_list(model) if layer_items else None
        for i, item in layer_items.items():  # after the swaps inside the layers
            swaps.replace(layer_list, i, item)
        logits = model.model(tokens).astype(mx.float32)
        mx.eval(logits)
    return logits
