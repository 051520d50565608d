"""Interventions: functions applied to a module's output during a trace, and head ablations.

`interventions` in `model.trace(...)` maps a module path to a function f(x) -> x applied to that
module's output. Paths are the `InterpretableModel`'s `.model` followed by mlx-lm's attribute path,
e.g. "model.model.layers.3.self_attn" or "model.model.layers.3.mlp". In every architecture
"model.model.layers.L.self_attn" also names layer L's attention module (in gpt2 an alias of
"model.model.h.L.attn").

Head interventions (`zero_heads`, `mean_heads`, `replace_heads`, `on_heads`) act on an attention
module's output projection input, reshaped (B, T, n_heads, d_head): head h is slice [..., h, :].
This is exact under GQA (values are shared by a group of query heads, so zeroing V would remove the
whole group). An output projection with a bias still adds it: zeroing every head leaves attention
output == bias. `on_input(f)` applies f to a module's input (its first argument) instead.

On a model sharded over processes (mlx_headwidget.distributed) heads keep their global numbers:
each process zeroes the chosen heads it computes. A hook on a module inside a sharded attention or
MLP block (e.g. "...self_attn.q_proj") sees that process's share of its output.

Modules are swapped for thin wrappers during one forward and put back in `finally`.
An intervention's output is checked as the forward runs: if the function raises, returns another
shape or type, or returns NaN or infinite values, the trace raises `InterventionError` naming the
module path (no NaN logits are handed back), and the model is left as it was. Values that only
overflow later in the model are not checked.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .errors import (
    InterventionError,
    InterventionTypeError,
    OutOfRangeError,
    UnknownPathError,
    UnsupportedArchitectureError,
    is_int,
)

OUT_PROJ_NAMES = ("o_proj", "c_proj", "out_proj", "dense", "wo")
_LAYER_ALIAS = re.compile(r"^model\.model\.layers\.(\d+)(?:\.self_attn(?=\.|$))?")


def zero_out(x: mx.array) -> mx.array:
    """The module's output becomes zeros (same shape and dtype)."""
    return mx.zeros_like(x)


@dataclass(frozen=True)
class scale:
    """Multiply the module's output by `k`."""

    k: float

    def __call__(self, x: mx.array) -> mx.array:
        return x * self.k


class PreProjection:
    """Base of the head interventions: a change of an attention module's output projection input
    x (B, T, n_heads * d_head), seen as heads (B, T, n_heads, d_head)."""

    checked = False  # True: its output is checked like a function's (`run_intervention`)

    def check(self, model, path: str) -> None:
        """Raise if it cannot apply to `model`'s attention at `path` (before anything runs)."""
        bad = [h for h in getattr(self, "heads", ()) if h >= model.n_heads]
        if bad:
            raise OutOfRangeError(
                f"head {bad[0]} is out of range for {path!r}: valid heads are "
                f"0..{model.n_heads - 1}"
            )

    def on(self, heads: range, n_heads: int) -> PreProjection:
        """The part of this intervention on `heads` of the model's `n_heads` (one process's share
        of a sharded model), numbered from 0 as that process's output projection input is."""
        if heads == range(n_heads):
            return self
        raise UnsupportedArchitectureError(
            f"{type(self).__name__} cannot run on a model sharded over processes (this process "
            f"computes heads {heads.start}..{heads.stop - 1} of {n_heads}); only zero_heads, "
            "mean_heads and ablate_heads can"
        )

    def apply(self, x: mx.array, n_heads: int, lengths: list[int]) -> mx.array:
        raise NotImplementedError


@dataclass(frozen=True)
class HeadIntervention(PreProjection):
    """Replace some heads' slices of the output projection's input by zeros or their mean."""

    heads: tuple[int, ...]
    mode: str

    def on(self, heads: range, n_heads: int) -> HeadIntervention:
        """The part of this intervention on `heads` (one process's share of a sharded model),
        numbered from 0 as that process's output projection input is."""
        return HeadIntervention(tuple(h - heads.start for h in self.heads if h in heads), self.mode)

    def apply(self, x: mx.array, n_heads: int, lengths: list[int]) -> mx.array:
        """x (B, T, n_heads * d_head) -> same shape with the chosen heads replaced."""
        if not self.heads:
            return x
        B, T, HD = x.shape
        h = x.reshape(B, T, n_heads, HD // n_heads)  # (B, T, H, D)
        chosen = np.zeros(n_heads, dtype=bool)
        chosen[list(self.heads)] = True
        chosen = mx.array(chosen)[None, None, :, None]
        if self.mode == "zero":
            h = mx.where(chosen, mx.zeros_like(h), h)
        else:  # mean over each row's real (unpadded) positions
            real = (mx.arange(T)[None, :] < mx.array(lengths)[:, None])[:, :, None, None]
            total = mx.sum(mx.where(real, h, mx.zeros_like(h)), axis=1, keepdims=True)
            mean = (total / mx.array(lengths, dtype=h.dtype)[:, None, None, None]).astype(h.dtype)
            h = mx.where(chosen, mean, h)
        return h.reshape(B, T, HD)


@dataclass(frozen=True, eq=False)
class HeadReplacement(PreProjection):
    """Row b's heads where mask[b] is True take their values from `source` (its row b, or its only
    row): one patched head (or set of heads) per batch row. See `replace_heads`."""

    source: mx.array  # (1 or B, T, n_heads * d_head)
    mask: np.ndarray  # (B, n_heads) bool

    def check(self, model, path: str) -> None:
        width = model.n_heads * model.d_head
        if self.mask.shape[1] != model.n_heads or self.source.shape[2] != width:
            raise InterventionError(
                f"replace_heads on {path!r}: mask has {self.mask.shape[1]} heads and source "
                f"{self.source.shape[2]} values per position; this model needs {model.n_heads} "
                f"heads and {width} (n_heads * d_head)"
            )

    def apply(self, x: mx.array, n_heads: int, lengths: list[int]) -> mx.array:
        B, T, HD = x.shape
        S = self.source.shape[0]
        if self.mask.shape[0] != B or S not in (1, B) or self.source.shape[1:] != (T, HD):
            rows = "1" if B == 1 else f"1 or {B}"
            raise InterventionError(
                f"replace_heads: input of shape {(B, T, HD)} but source {self.source.shape} and "
                f"mask {self.mask.shape}; need source ({rows}, {T}, {HD}) and mask ({B}, {n_heads})"
            )
        h = x.reshape(B, T, n_heads, HD // n_heads)
        src = self.source.astype(x.dtype).reshape(S, T, n_heads, HD // n_heads)
        chosen = mx.array(self.mask)[:, None, :, None]  # (B, 1, H, 1)
        return mx.where(chosen, src, h).reshape(B, T, HD)


@dataclass(frozen=True, eq=False)
class HeadFunction(PreProjection):
    """fn(h) -> h on the heads (B, T, n_heads, d_head) before the output projection. See
    `on_heads`."""

    fn: Callable[[mx.array], mx.array]
    checked = True

    def apply(self, x: mx.array, n_heads: int, lengths: list[int]) -> mx.array:
        B, T, HD = x.shape
        h = x.reshape(B, T, n_heads, HD // n_heads)
        out = self.fn(h)
        if not isinstance(out, mx.array) or out.shape != h.shape:
            got = out.shape if isinstance(out, mx.array) else type(out).__name__
            raise InterventionError(
                f"on_heads: the function returned {got}; it must return an mx.array of the heads' "
                f"shape {h.shape} (B, T, n_heads, d_head)"
            )
        return out.reshape(B, T, HD)


@dataclass(frozen=True)
class on_input:
    """`{path: on_input(f)}`: f(x) -> x applied to the module's input (its first positional
    argument) before it runs, instead of to its output."""

    fn: Callable[[mx.array], mx.array]


def _head_list(heads: Iterable[int]) -> tuple[int, ...]:
    if is_int(heads):
        heads = [heads]
    out = []
    for h in heads:
        if not is_int(h) or h < 0:
            raise InterventionTypeError(f"heads must be non-negative integers, got {h!r}")
        out.append(int(h))
    return tuple(sorted(set(out)))


def zero_heads(heads: Iterable[int]) -> HeadIntervention:
    """On an attention path: zero the chosen heads' outputs before the output projection."""
    return HeadIntervention(_head_list(heads), "zero")


def mean_heads(heads: Iterable[int]) -> HeadIntervention:
    """On an attention path: replace the chosen heads' outputs by their mean over positions.

    The mean is per sequence, over its real (unpadded) positions, before the output projection.
    """
    return HeadIntervention(_head_list(heads), "mean")


def replace_heads(source: mx.array, mask: Any) -> HeadReplacement:
    """On an attention path: in batch row b, the heads where mask[b, h] is True take their output
    (before the output projection) from `source`, row b of it or its only row.

    `source` (1 or B, T, n_heads * d_head), e.g. another run's output projection input; `mask`
    (B, n_heads) bool. One patched head per row runs many patching experiments in one forward.
    """
    if not isinstance(source, mx.array) or source.ndim != 3:
        got = source.shape if isinstance(source, mx.array) else type(source).__name__
        raise InterventionTypeError(
            f"replace_heads needs source as an mx.array (1 or B, T, n_heads * d_head), got {got}"
        )
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.ndim != 2:
        raise InterventionTypeError(
            f"replace_heads needs mask as a bool array (B, n_heads), got {mask.dtype} {mask.shape}"
        )
    return HeadReplacement(source, mask)


def on_heads(fn: Callable[[mx.array], mx.array]) -> HeadFunction:
    """On an attention path: fn(h) -> h on the heads h (B, T, n_heads, d_head) before the output
    projection, checked like any intervention function (shape, NaN)."""
    if not callable(fn):
        raise InterventionTypeError(f"on_heads needs a function f(h) -> h, got {fn!r}")
    return HeadFunction(fn)


def ablate_heads(
    heads: Iterable[tuple[int, int]], mode: str = "zero"
) -> dict[str, HeadIntervention]:
    """{"model.model.layers.L.self_attn": zero_heads([...])} for a list of (layer, head) pairs."""
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
    by_layer: dict[int, list[int]] = {}
    for pair in heads:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Iterable) or len(pair) != 2:
            raise InterventionTypeError(f"heads must be (layer, head) pairs, got {pair!r}")
        layer, head = pair
        if not is_int(layer) or layer < 0:
            raise InterventionTypeError(f"layer must be a non-negative integer, got {layer!r}")
        by_layer.setdefault(int(layer), []).append(head)
    return {
        f"model.model.layers.{layer}.self_attn": HeadIntervention(_head_list(hs), mode)
        for layer, hs in sorted(by_layer.items())
    }


class Wrapper(nn.Module):
    """Stands in for a module during one forward; reads of other attributes go to the original."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        object.__setattr__(self, "_inner", inner)  # not a child: parameters stay the original's

    def __getattr__(self, key: str) -> Any:
        if key == "_inner":
            raise AttributeError(key)
        return getattr(self._inner, key)


class Swaps:
    """Replaced attributes / list items, put back in reverse order by `restore` (or on leaving a
    `with Swaps() as swaps:` block)."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, Any, Any]] = []

    def __enter__(self) -> Swaps:
        return self

    def __exit__(self, *_: Any) -> None:
        self.restore()

    def replace(self, parent: Any, key: str | int, new: Any) -> None:
        old = parent[key] if isinstance(parent, list) else getattr(parent, key)
        self._set(parent, key, new)
        self._undo.append((parent, key, old))

    def restore(self) -> None:
        while self._undo:
            self._set(*self._undo.pop())

    @staticmethod
    def _set(parent: Any, key: str | int, value: Any) -> None:
        if isinstance(parent, list):
            parent[key] = value
        else:
            setattr(parent, key, value)


class _OutputHook(Wrapper):
    def __init__(self, inner: nn.Module, path: str, fn: Callable):
        super().__init__(inner)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args, **kwargs):
        return run_intervention(self._path, self._fn, self._inner(*args, **kwargs))


class _InputHook(_OutputHook):
    def __call__(self, x, *args, **kwargs):
        return self._inner(run_intervention(self._path, self._fn, x), *args, **kwargs)


class _PreProjection(Wrapper):
    def __init__(self, inner: nn.Module, path: str, head_iv: PreProjection, n_heads: int, lengths):
        super().__init__(inner)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_iv", head_iv)
        object.__setattr__(self, "_n_heads", n_heads)
        object.__setattr__(self, "_lengths", lengths)

    def __call__(self, x: mx.array, *args, **kwargs):
        def apply(x: mx.array) -> mx.array:
            return self._iv.apply(x, self._n_heads, self._lengths)

        x = run_intervention(self._path, apply, x) if self._iv.checked else apply(x)
        return self._inner(x, *args, **kwargs)


def run_intervention(path: str, fn: Callable, out: Any) -> Any:
    """fn(out), checked: an exception, another shape or a NaN raise an error naming `path`."""
    try:
        new = fn(out)
    except Exception as err:
        raise InterventionError(
            f"intervention on {path!r} raised {type(err).__name__}: {err}"
        ) from err
    if isinstance(out, mx.array):
        if not isinstance(new, mx.array) or new.shape != out.shape:
            got = new.shape if isinstance(new, mx.array) else type(new).__name__
            raise InterventionError(
                f"intervention on {path!r} returned {got}; it must return an mx.array of the "
                f"module's output shape {out.shape}"
            )
        if mx.issubdtype(new.dtype, mx.floating):
            for what, test in (("NaN", mx.isnan), ("infinite", mx.isinf)):
                if mx.any(test(new)).item():
                    raise InterventionError(f"intervention on {path!r} returned {what} values")
    return new


@dataclass
class Plan:
    """Validated interventions: output hooks and head interventions, resolved to modules."""

    hooks: list[tuple[str, Any, str | int, Callable]]  # path, parent, key, fn
    heads: list[tuple[str, nn.Module, PreProjection]]  # path, attention module, intervention
    inputs: list[tuple[str, Any, str | int, Callable]] = field(default_factory=list)  # on_input


def module_paths(model) -> list[str]:
    """Every module path an intervention can name ("model.<mlx-lm path>")."""
    return [f"model.{name}" for name, _ in model.model.named_modules() if name]


def resolve(model, path: str) -> tuple[str, Any, str | int]:
    """(canonical path, parent, key) of a module path; unknown: error naming the closest paths."""
    valid = set(module_paths(model))
    if path not in valid and (m := _LAYER_ALIAS.match(path)) and model.layers_path:
        if int(m.group(1)) >= model.n_layers:
            raise UnknownPathError(
                f"unknown module path {path!r}: layer {m.group(1)} is out of range, the model "
                f"has {model.n_layers} layers (valid 0..{model.n_layers - 1})"
            )
        attn = f".{model.attention_name}" if m.group(0).endswith(".self_attn") else ""
        path = f"{model.layers_path}.{m.group(1)}{attn}{path[m.end() :]}"
    if path not in valid:
        close = difflib.get_close_matches(path, sorted(valid), n=5, cutoff=0.6) or sorted(valid)[:5]
        raise UnknownPathError(
            f"unknown module path {path!r}; closest valid paths: {', '.join(close)}"
        )
    parent: Any = model.model
    parts = path.split(".")[1:]
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else getattr(parent, part)
    key: str | int = int(parts[-1]) if isinstance(parent, list) else parts[-1]
    return path, parent, key


def plan(model, interventions: Mapping[str, Any] | None) -> Plan:
    """Check every path, function and head index before anything runs."""
    result = Plan([], [])
    if interventions is None:
        return result
    if not isinstance(interventions, Mapping):
        raise InterventionTypeError(
            "interventions must be a dict {module path: function}, got "
            f"{type(interventions).__name__}"
        )
    attention_layer = {id(model.attention(i)): i for i in range(model.n_layers)}
    for path, fn in interventions.items():
        if not isinstance(path, str):
            raise UnknownPathError(f"intervention paths must be strings, got {path!r}")
        canonical, parent, key = resolve(model, path)
        module = parent[key] if isinstance(parent, list) else getattr(parent, key)
        if isinstance(fn, PreProjection):
            layer = attention_layer.get(id(module))
            if layer is None:
                raise InterventionTypeError(
                    f"head interventions apply to an attention module such as "
                    f"'model.model.layers.0.self_attn', not {path!r}"
                )
            out_projection_name(module)
            fn.check(model, path)
            result.heads.append((canonical, module, fn))
        elif isinstance(fn, on_input):
            if not callable(fn.fn):
                raise InterventionTypeError(
                    f"on_input for {path!r} needs a function f(x) -> x, got {fn.fn!r}"
                )
            result.inputs.append((canonical, parent, key, fn.fn))
        elif callable(fn):
            result.hooks.append((canonical, parent, key, fn))
        else:
            raise InterventionTypeError(
                f"intervention for {path!r} is not callable: got {fn!r}; pass f(x) -> x, zero_out, "
                "scale(k), zero_heads([...]), mean_heads([...]), replace_heads(...), on_heads(f) "
                "or on_input(f)"
            )
    return result


def layers_of(model, the_plan: Plan) -> list[int]:
    """The layers a validated plan changes: the index of each path inside a layer; 0 for a path
    outside the layers (it may change what layer 0 sees)."""
    prefix = f"{model.layers_path}." if model.layers_path else None
    paths = [entry[0] for entry in (*the_plan.hooks, *the_plan.inputs, *the_plan.heads)]
    found = []
    for path in paths:
        inside = prefix is not None and path.startswith(prefix)
        found.append(int(path[len(prefix) :].split(".")[0]) if inside else 0)
    return sorted(set(found))


def out_projection_name(attn: nn.Module) -> str:
    """The attribute of the attention module that projects the concatenated heads back."""
    for name in OUT_PROJ_NAMES:
        if isinstance(getattr(attn, name, None), nn.Module):
            return name
    raise UnsupportedArchitectureError(
        f"{type(attn).__name__} has no output projection named one of {', '.join(OUT_PROJ_NAMES)}"
    )


def install(model, the_plan: Plan, swaps: Swaps, lengths: list[int]) -> None:
    """Swap in the wrappers of a validated plan (undone by `swaps.restore()`)."""
    for hooks, wrapper in ((the_plan.hooks, _OutputHook), (the_plan.inputs, _InputHook)):
        for path, parent, key, fn in hooks:
            current = parent[key] if isinstance(parent, list) else getattr(parent, key)
            swaps.replace(parent, key, wrapper(current, path, fn))
    local = model.local_heads  # all heads, unless the model is sharded over processes
    for path, attn, head_iv in the_plan.heads:
        name = out_projection_name(attn)
        mine = head_iv.on(local, model.n_heads)
        wrapped = _PreProjection(getattr(attn, name), path, mine, len(local), lengths)
        swaps.replace(attn, name, wrapped)
