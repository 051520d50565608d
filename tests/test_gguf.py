"""GGUF files load into mlx-lm models that compute what the file means.

Small random files are written with the `gguf` package (tests/gguf_files.py), with tensors in F32,
F16, BF16, Q8_0, Q4_0, Q4_1 and Q6_K, for llama (grouped-query attention, tied and untied output,
RoPE frequency factors and linear scaling), qwen2 (q/k/v biases) and qwen3 (q/k norms, a head size
that is not width / heads). Our model is compared with gguf's own dequantization of each tensor and
with an independent float64 numpy forward of the file (llama.cpp's semantics, q/k as stored), and
for the files transformers can load, with transformers' GGUF loader too.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import torch
from gguf_files import SHAPE, VOCAB, Spec, read_file, reference_forward, write_model
from mlx.utils import tree_flatten

from mlx_headwidget import InterpretableModel
from mlx_headwidget import gguf as gguf_loader
from mlx_headwidget.gguf_file import EXPANDED
from mlx_headwidget.quantized import dequantize_by_default, float32_weight

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

# Per-tensor types: every layer matrix type appears in a q/k projection somewhere, so the Q/K row
# order is exercised on packed weights, scales and biases of each quantized type.
MIX_A = {
    "token_embd": "Q8_0",
    "blk.0.attn_q": "Q4_0", "blk.0.attn_k": "Q4_1", "blk.0.attn_v": "Q8_0",
    "blk.0.attn_output": "F16", "blk.0.ffn_up": "Q4_1", "blk.0.ffn_down": "Q4_0",
    "blk.1.attn_q": "Q8_0", "blk.1.attn_k": "Q4_0", "blk.1.attn_v": "Q4_1",
    "blk.1.attn_output": "Q4_0", "blk.1.ffn_gate": "Q8_0", "blk.1.ffn_up": "F16",
    "blk.1.ffn_down": "Q4_1", "output": "Q4_1",
}  # fmt: skip
MIX_B = {
    "token_embd": "F16",
    "blk.0.attn_q": "Q4_1", "blk.0.attn_k": "F16", "blk.0.attn_v": "Q4_0",
    "blk.0.attn_output": "Q8_0", "blk.0.ffn_gate": "BF16", "blk.0.ffn_down": "Q6_K",
    "blk.1.attn_q": "BF16", "blk.1.attn_k": "Q8_0", "blk.1.attn_v": "F16",
    "blk.1.ffn_gate": "Q4_0", "blk.1.ffn_up": "Q8_0", "blk.1.ffn_down": "Q6_K", "output": "Q4_1",
}  # fmt: skip
FILES = {
    "llama-tied": Spec(types=MIX_A, seed=1),
    "llama-untied": Spec(tied=False, types=MIX_B, ffn=256, seed=2),
    "llama-rope-freqs": Spec(types=MIX_A, rope_freqs=True, linear_rope=2.0, seed=3),
    "qwen2": Spec(arch="qwen2", types=MIX_A, rope_base=1e6, seed=4),
    "qwen3": Spec(arch="qwen3", tied=False, types=MIX_B, ffn=256, head_dim=32, seed=5),
}
TRANSFORMERS_FILES = ("llama-tied", "qwen2")  # no RoPE scaling, no Q6_K (see test below)
# Patterns: float32 MLX vs float64 numpy; measured at most 1e-5 here (with and without OpenBLAS).
PATTERN_ATOL = 1e-4
# Logits: measured at most 2.5e-6 of the largest |logit| (float32 sums over 64-256 terms).
LOGITS_RTOL_OF_MAX = 2e-5
# Dequantized values: the same products (small integer x float16 scale, in float32) in gguf and
# MLX, measured identical; another CPU could fuse Q4_1's d * q + m into one rounding.
DEQUANT_RTOL = 1e-6


@pytest.fixture(scope="session")
def gguf_file(tmp_path_factory):
    """gguf_file(name) -> path of that FILES entry (written on first use)."""
    folder = tmp_path_factory.mktemp("gguf")
    written = {}

    def get(name: str):
        if name not in written:
            written[name] = write_model(folder / f"{name}.gguf", FILES[name])
        return written[name]

    return get


@pytest.fixture(scope="session")
def reference(gguf_file):
    """reference(name) -> (metadata, {tensor: float32}, tokens, logits (T, V), [patterns])."""
    done = {}

    def get(name: str):
        if name not in done:
            meta, weights = read_file(gguf_file(name))
            for tensor, kind in _types(gguf_file(name)).items():
                if kind in EXPANDED:  # MLX holds Q6_K as float16: compare with what it holds
                    weights[tensor] = weights[tensor].astype(np.float16).astype(np.float32)
            rng = np.random.default_rng(0)
            half = [int(t) for t in rng.integers(2, VOCAB, 30)]
            tokens = [1, *half, *half]  # BOS + a repeated random half: attention with structure
            done[name] = (meta, weights, tokens, *reference_forward(meta, weights, tokens))
        return done[name]

    return get


def _types(path) -> dict[str, str]:
    from mlx_headwidget.gguf_file import read_header

    return {name: info.type for name, info in read_header(path).tensors.items()}


def _converter_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's converter on q/k rows (Hugging Face -> GGUF): per head, row (half, i) goes to
    2 i + half. Written from its definition, independently of `gguf.unpermute_rows`."""
    d = w.shape[0] // n_heads
    out = np.empty_like(w)
    for h in range(n_heads):
        for half in range(2):
            for i in range(d // 2):
                out[h * d + 2 * i + half] = w[h * d + half * d // 2 + i]
    return out


def _dense(module: nn.Module) -> np.ndarray:
    if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
        w = float32_weight(
            module.weight, module.scales, module.biases, module.group_size, module.bits
        )
        return np.array(w, dtype=np.float64)
    return np.array(module.weight.astype(mx.float32), dtype=np.float64)


@pytest.mark.parametrize("dequantize", [True, False])
@pytest.mark.parametrize("name", list(FILES))
def test_every_tensor_equals_gguf_dequantization(gguf_file, reference, name, dequantize):
    model = InterpretableModel(gguf_file(name), dequantize=dequantize)
    _, weights, *_ = reference(name)
    arch, n_kv = FILES[name].arch, SHAPE["kv_heads"]
    modules = dict(model.model.named_modules())
    checked = 0
    for tensor, expected in weights.items():
        if tensor == "rope_freqs.weight":
            continue
        module_path, leaf = tensor.rsplit(".", 1)
        module = modules[gguf_loader.mlx_module(module_path)]
        ours = _dense(module) if leaf == "weight" else np.array(module.bias, dtype=np.float64)
        if arch == "llama" and module_path.endswith(("attn_q", "attn_k")):
            ours = _converter_permute(ours, n_kv if module_path.endswith("k") else SHAPE["heads"])
        np.testing.assert_allclose(ours, expected, rtol=DEQUANT_RTOL, atol=0, err_msg=tensor)
        checked += 1
    assert checked == len(weights) - ("rope_freqs.weight" in weights)


def test_modules_keep_their_own_bits_or_become_float32(gguf_file):
    kept = InterpretableModel(gguf_file("llama-tied"), dequantize=False)
    layer0 = kept.model.model.layers[0]
    assert isinstance(kept.model.model.embed_tokens, nn.QuantizedEmbedding)
    assert (kept.model.model.embed_tokens.bits, layer0.self_attn.q_proj.bits) == (8, 4)
    assert (layer0.self_attn.k_proj.bits, layer0.self_attn.v_proj.bits) == (4, 8)
    assert layer0.self_attn.q_proj.group_size == 32
    assert type(layer0.self_attn.o_proj) is nn.Linear  # stored as F16: stays float16
    assert layer0.self_attn.o_proj.weight.dtype == mx.float16
    eight = {"group_size": 32, "bits": 8}  # the Q8_0 modules of MIX_A; the other 9 are 4-bit
    assert kept.config["quantization"] == {"group_size": 32, "bits": 4} | dict.fromkeys(
        ["model.embed_tokens", "model.layers.0.self_attn.v_proj",
         "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.gate_proj"], eight
    )  # fmt: skip
    deq = InterpretableModel(gguf_file("llama-untied"), dequantize=True)
    assert not any(isinstance(m, nn.QuantizedLinear) for _, m in deq.model.named_modules())
    assert "quantization" not in deq.config and deq.config["dequantized_from"]["bits"] == 4
    dtypes = {k: v.dtype for k, v in tree_flatten(deq.model.parameters())}
    assert dtypes["model.layers.0.mlp.down_proj.weight"] == mx.float32  # Q6_K
    assert dtypes["model.layers.0.self_attn.q_proj.weight"] == mx.float32  # Q4_1
    assert dtypes["model.layers.0.mlp.gate_proj.weight"] == mx.bfloat16  # BF16 as stored
    assert dtypes["model.embed_tokens.weight"] == mx.float16  # F16 as stored


def test_dequantize_defaults_to_the_device():
    assert dequantize_by_default(mx.Device(mx.cpu)) is True
    assert dequantize_by_default(mx.Device(mx.gpu)) is False
    assert dequantize_by_default() is (mx.default_device().type == mx.cpu)


def test_default_load_on_cpu_is_dequantized(gguf_file):
    model = InterpretableModel(gguf_file("llama-tied")).model
    quantized = [n for n, m in model.named_modules() if isinstance(m, nn.QuantizedLinear)]
    on_cpu = mx.default_device().type == mx.cpu
    assert len(quantized) == (0 if on_cpu else 13)  # 13 quantized matrices in MIX_A


def _check_against(model, tokens, logits, patterns, what: str) -> tuple[float, float]:
    with model.trace(mx.array([tokens])) as trace:
        ours = np.array(model.output.save()[0], dtype=np.float64)
    assert sorted(trace.attention) == list(range(len(patterns)))
    worst_pattern = 0.0
    for layer, expected in enumerate(patterns):
        got = np.array(trace.attention[layer][0], dtype=np.float64)
        assert got.shape == expected.shape == (model.n_heads, len(tokens), len(tokens))
        for head in range(model.n_heads):
            np.testing.assert_allclose(
                got[head], expected[head], rtol=0, atol=PATTERN_ATOL,
                err_msg=f"{what}: layer {layer} head {head}",
            )  # fmt: skip
        worst_pattern = max(worst_pattern, float(np.abs(got - expected).max()))
    scale = float(np.abs(logits).max())
    np.testing.assert_allclose(ours, logits, rtol=0, atol=LOGITS_RTOL_OF_MAX * scale, err_msg=what)
    return worst_pattern, float(np.abs(ours - logits).max()) / scale


@pytest.mark.parametrize("dequantize", [True, False])
@pytest.mark.parametrize("name", list(FILES))
def test_logits_and_every_pattern_equal_the_numpy_reference(gguf_file, reference, name, dequantize):
    meta, _, tokens, logits, patterns = reference(name)
    # the reference must be demanding: sharp heads that differ within a KV group
    assert np.mean([p[:, 8:].max(-1).mean() for p in patterns]) > 0.5
    assert min(np.abs(p[0] - p[1]).max() for p in patterns) > 0.1
    model = InterpretableModel(gguf_file(name), dequantize=dequantize)
    assert (model.n_heads, model.n_kv_heads) == (SHAPE["heads"], SHAPE["kv_heads"])
    _check_against(model, tokens, logits, patterns, f"{name}, dequantize={dequantize}")


@pytest.mark.parametrize("name", TRANSFORMERS_FILES)
def test_transformers_gguf_loader_agrees(gguf_file, reference, name):
    """A second independent reading of the same file (it dequantizes to torch float32 and undoes
    llama.cpp's q/k order itself). It ignores RoPE scaling and frequency factors, so only the
    files without them."""
    from transformers import AutoModelForCausalLM

    path = gguf_file(name)
    hf = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, attn_implementation="eager", dtype=torch.float32
    )
    _, _, tokens, _, _ = reference(name)
    with torch.no_grad():
        out = hf(torch.tensor([tokens]), output_attentions=True)
    patterns = [a[0].numpy().astype(np.float64) for a in out.attentions]
    logits = out.logits[0].numpy().astype(np.float64)
    _check_against(InterpretableModel(path), tokens, logits, patterns, f"{name} vs transformers")


def test_a_wrong_qk_layout_is_caught(gguf_file, reference, monkeypatch):
    """Loading llama q/k rows as stored (with mlx-lm's RoPE) still runs and gives plausible
    numbers; the comparison with the reference must fail, and by far."""
    meta, _, tokens, logits, patterns = reference("llama-tied")
    monkeypatch.setattr(gguf_loader, "unpermute_rows", lambda w, n_heads: w)
    wrong = InterpretableModel(gguf_file("llama-tied"))
    with wrong.trace(mx.array([tokens])) as trace:
        pass
    worst = max(
        float(np.abs(np.array(trace.attention[layer][0]) - patterns[layer]).max())
        for layer in range(len(patterns))
    )
    assert worst > 0.2  # measured 0.9; 2000x PATTERN_ATOL
    with pytest.raises(AssertionError):
        _check_against(wrong, tokens, logits, patterns, "wrong layout")


def test_dequantized_and_quantized_models_agree(gguf_file, reference):
    _, _, tokens, _, _ = reference("llama-tied")
    outputs = []
    for dequantize in (True, False):
        with InterpretableModel(gguf_file("llama-tied"), dequantize=dequantize).trace(
            mx.array([tokens]), capture=False
        ) as trace:
            outputs.append(np.array(trace.logits))
    # the same weights (float32 scales), different matmul kernels: measured 2e-5 of the scale
    assert np.abs(outputs[0] - outputs[1]).max() <= 2e-5 * np.abs(outputs[0]).max()
