"""Head analysis of a model sharded over several processes by mlx-lm's tensor parallelism.

A program started by `mlx.launch` runs once per process (rank); each rank calls

    model = InterpretableModel(source, distributed=True)

which loads the weights lazily, lets mlx-lm's `Model.shard(group)` split them and only then reads
them, so each rank holds its share. `shard` splits q/k/v and the MLP's gate/up by output rows and
sums at o_proj/down_proj: of H query and K KV heads over N ranks, rank r computes query heads

    local_heads = r * H/N .. (r+1) * H/N - 1      and KV heads r * K/N .. (r+1) * K/N - 1,

so query head h still reads KV head h // (H/K) on its own rank. Everything outside the attention
and MLP blocks (embeddings, residual stream, norms, logits) is whole on every rank.

On a sharded model the library keeps global head numbering:
- capture (`capture_attention`): each rank computes and captures only its `model.local_heads`;
  its on_pattern/on_rows callbacks get (B, len(local_heads), rows, T).
- scans (`score_grid`, `detect_*`): each rank scores its heads, then the (n_layers, n_heads)
  floats are gathered (`gather_heads`); patterns never move.
- `trace`: `trace.attention[layer]` gathers that layer's (B, n_heads, T, T) when first read
  (`ShardedPatterns`); `.head(layer, h)` moves one head, `.local(layer)` nothing.
- head interventions: a head is zeroed (or mean-ablated) on the rank that owns it.

A gather is a collective: every rank must make the same calls with the same inputs in the same
order, as in any `mlx.launch` program, or the ranks wait for each other forever.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from .errors import UnsupportedArchitectureError

__all__ = [
    "ShardedPatterns",
    "check_shardable",
    "gather_heads",
    "group_of",
    "launched_group",
    "quantization_group",
    "shard",
    "shard_sizes",
]


def launched_group() -> Any | None:
    """The group of all ranks if this process is one of several started by `mlx.launch`, else
    None (a lone process: `mx.distributed.init()` then gives a group of size 1)."""
    if not mx.distributed.is_available():
        return None
    group = mx.distributed.init()
    return group if group.size() > 1 else None


def group_of(distributed: bool, group: Any = None) -> Any | None:
    """The group to shard over: `group`, or with distributed=True every launched rank; None when
    that is a single process (nothing to shard)."""
    if group is None and distributed:
        if not mx.distributed.is_available():
            raise RuntimeError("this MLX build has no distributed backend (mx.distributed)")
        group = mx.distributed.init()
    if group is not None and not callable(getattr(group, "size", None)):
        raise TypeError(f"group must be an mx.distributed.Group, got {type(group).__name__}")
    return group if group is not None and group.size() > 1 else None


def quantization_group(model) -> int | None:
    """The quantization group size of the layers' output projections (None: not quantized)."""
    attention = model.attention(0)
    proj = getattr(attention, "o_proj", None)
    return proj.group_size if isinstance(proj, nn.QuantizedLinear) else None


def shard_sizes(model, up_to: int = 64) -> list[int]:
    """Group sizes N (<= up_to) this model shards over: N divides the query heads, the KV heads
    and the MLP width (mlx-lm splits each into N equal parts), and in a quantized model each
    rank's share of o_proj's and down_proj's inputs is a whole number of quantization groups."""
    mlp = model.config.get("intermediate_size")
    widths = [model.n_heads, model.n_kv_heads] + ([mlp] if isinstance(mlp, int) else [])
    group = quantization_group(model)
    if group:
        widths.append(model.n_heads * model.d_head // group)
        widths += [mlp // group] if isinstance(mlp, int) else []
    common = math.gcd(*widths)
    return [n for n in range(1, up_to + 1) if common % n == 0]


def _shardable_architectures() -> list[str]:
    """mlx-lm model modules whose source defines `shard` (read, not imported: some modules need
    optional packages)."""
    spec = find_spec("mlx_lm.models")
    folders = spec.submodule_search_locations if spec else []
    return sorted(
        f.stem
        for folder in folders
        for f in Path(folder).glob("*.py")
        if "def shard(" in f.read_text(encoding="utf-8", errors="replace")
    )


def refuse_sharded_widget(model) -> None:
    """A widget answers clicks in one process: refuse a sharded model, saying what to do instead."""
    if model.group is not None:  # every process would have to answer every click
        raise ValueError(
            "HeadWidget runs on a model in one process, not on one sharded over "
            f"{model.group.size()} processes. Run the scan under mlx.launch "
            "(python -m mlx_headwidget MODEL --save scan.npz) and draw it in a notebook with "
            "mlx_headwidget.gridfile.load_grid('scan.npz').figure(); see docs/scale-out.md"
        )


def check_shardable(model, size: int) -> None:
    """Raise UnsupportedArchitectureError, naming what works, if `model` cannot be split over
    `size` ranks with global head numbering."""
    if not callable(getattr(model.model, "shard", None)):
        raise UnsupportedArchitectureError(
            f"this {model.architecture!r} model cannot be sharded: mlx-lm has no tensor "
            f"parallelism (Model.shard) for it. Architectures whose mlx-lm model has shard(): "
            f"{', '.join(_shardable_architectures())}. Run it in one process instead "
            "(InterpretableModel(source) without distributed=True)."
        )
    if model.n_heads != model.config.get("num_attention_heads", model.n_heads):
        raise UnsupportedArchitectureError(
            f"the model passed has {model.n_heads} heads per layer but its config says "
            f"{model.config['num_attention_heads']}: it looks sharded already. Pass the unsharded "
            "model, or better its folder (then each rank reads only its share of the weights)."
        )
    sizes = shard_sizes(model)
    if size not in sizes:
        mlp = model.config.get("intermediate_size")
        mlp = mlp if isinstance(mlp, int) else None
        group = quantization_group(model)
        quantized = ""
        if group:
            inputs = f"o_proj's {model.n_heads * model.d_head}" + (
                f" and down_proj's {mlp}" if mlp else ""
            )
            quantized = f", and {inputs} inputs into whole quantization groups of {group}"
        raise UnsupportedArchitectureError(
            f"this model cannot be split over {size} processes: its {model.n_heads} query heads, "
            f"{model.n_kv_heads} KV heads"
            + (f" and MLP width {mlp}" if mlp else "")
            + f" must each divide by the group size{quantized}. Group sizes that work: "
            f"{', '.join(map(str, sizes))}."
        )


def shard(model, group: Any) -> None:
    """Split `model` (an InterpretableModel with lazily loaded weights) over `group` with mlx-lm's
    `shard`, read this rank's weights and set `model.group` and `model.local_heads`."""
    size, rank = group.size(), group.rank()
    check_shardable(model, size)
    try:
        model.model.shard(group)
    except (ValueError, TypeError, AttributeError) as err:  # a case check_shardable does not know
        raise UnsupportedArchitectureError(
            f"mlx-lm's shard() could not split this {model.architecture!r} model over {size} "
            f"processes: {err}"
        ) from err
    per_rank = model.n_heads // size
    for layer in range(model.n_layers):
        attn = model.attention(layer)
        got = getattr(attn, "n_heads", None)
        if got != per_rank:  # shard() did not split this layer's heads as assumed
            raise UnsupportedArchitectureError(
                f"after mlx-lm's shard(), layer {layer} computes {got} heads per process, "
                f"expected {model.n_heads} / {size} = {per_rank}: its heads cannot be numbered"
            )
    # Read tensor by tensor: each read loads a whole tensor and keeps this rank's slice, so
    # beside the kept slices at most one whole tensor is in memory.
    for _, weight in tree_flatten(model.model.parameters()):
        mx.eval(weight)
    # every rank has finished loading before the first collective of a forward pass
    mx.eval(mx.distributed.all_sum(mx.array(1.0), group=group, stream=mx.cpu))
    model.group = group
    model.local_heads = range(rank * per_rank, (rank + 1) * per_rank)


def _gather(group: Any, x: mx.array, axis: int) -> mx.array:
    """Concatenate every rank's `x` along `axis` in rank order (a collective)."""
    whole = mx.distributed.all_gather(mx.moveaxis(x, axis, 0), group=group, stream=mx.cpu)
    return mx.moveaxis(whole, 0, axis)


def gather_heads(model, local: np.ndarray, axis: int = 1) -> np.ndarray:
    """This rank's heads' values (..., len(local_heads), ...) along `axis` -> every head's
    (..., n_heads, ...), in head order; the array itself on an unsharded model.

    The scans move their (n_layers, n_heads) scores this way: L x H floats per scan."""
    if model.group is None:
        return local
    dtype = local.dtype
    whole = _gather(model.group, mx.array(np.ascontiguousarray(local)), axis)
    return np.array(whole).astype(dtype, copy=False)


class ShardedPatterns(Mapping):
    """`trace.attention` of a sharded model: {layer: (B, n_heads, T, T) float32}.

    Each rank captured its own heads; reading a layer gathers every rank's heads (once, then
    kept), so every rank must read the same layers in the same order. `local(layer)` is this
    rank's heads without communication, `head(layer, h)` one head (B, T, T), moving T x T floats
    per rank instead of a layer's H/N x T x T.
    """

    def __init__(self, group: Any, local_heads: range, local: dict[int, mx.array]):
        self.group, self.local_heads = group, local_heads
        self._local = local
        self._whole: dict[int, mx.array] = {}

    def __getitem__(self, layer: int) -> mx.array:
        if layer not in self._whole:
            self._whole[layer] = _gather(self.group, self._local[layer], axis=1)
        return self._whole[layer]

    def __iter__(self) -> Iterator[int]:
        return iter(self._local)

    def __len__(self) -> int:
        return len(self._local)

    def local(self, layer: int) -> mx.array:
        """This rank's heads of `layer`: (B, len(local_heads), T, T), heads local_heads."""
        return self._local[layer]

    def head(self, layer: int, head: int) -> mx.array:
        """One head's pattern (B, T, T) on every rank: the owner's, summed with zeros elsewhere
        (exact: x + 0 == x)."""
        local = self._local[layer]
        if head in self.local_heads:
            mine = local[:, head - self.local_heads.start]
        else:
            mine = mx.zeros((local.shape[0], *local.shape[2:]), dtype=local.dtype)
        return mx.distributed.all_sum(mine, group=self.group, stream=mx.cpu)


def head_of(attention: Mapping, layer: int, head: int) -> mx.array:
    """Pattern (B, T, T) of one head from a trace's attention, moving only that head if sharded."""
    if isinstance(attention, ShardedPatterns):
        return attention.head(layer, head)
    return attention[layer][:, head]
