"""Tiny random-weight checkpoints, built once per session, and helpers shared by the core tests.

A test that takes the `case` fixture runs once per entry of CASES.
"""

from __future__ import annotations

import sys

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

from mlx_headwidget import InterpretableModel
from mlx_headwidget.testing import CASE_TEXT, CASES, MAX_TOKENS, make_checkpoint

TEXT = CASE_TEXT


@pytest.fixture(params=list(CASES))
def case(request) -> str:
    """Each case name in turn; a test's own parametrize of `case` takes precedence."""
    return request.param


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """checkpoint(case) -> folder of that case's checkpoint (built on first use)."""
    built = {}

    def get(case: str):
        if case not in built:
            arch, kwargs = CASES[case]
            built[case] = make_checkpoint(arch, tmp_path_factory.mktemp(case), **kwargs)
        return built[case]

    return get


@pytest.fixture(scope="session")
def models(checkpoint):
    """models(case) -> InterpretableModel of that case (loaded once)."""
    loaded = {}

    def get(case: str) -> InterpretableModel:
        if case not in loaded:
            # the 4-bit cases test quantized layers: keep them (on a CPU the default dequantizes)
            quantized = "quantize_bits" in CASES[case][1]
            loaded[case] = InterpretableModel(str(checkpoint(case)), dequantize=not quantized)
        return loaded[case]

    return get


@pytest.fixture(scope="session")
def llama(models) -> InterpretableModel:
    return models("llama")


def case_tokens(model: InterpretableModel, case: str) -> mx.array:
    """(1, T) ids of TEXT for `case`, cut to MAX_TOKENS where forwards are expensive."""
    return model.to_tokens(TEXT)[:, : MAX_TOKENS.get(case, 10_000)]


@pytest.fixture(scope="session")
def tokens_of():
    return case_tokens


def state(model: InterpretableModel) -> tuple:
    """Identity of every module and parameter array, and of the shared attention function."""
    modules = [(name, id(m)) for name, m in model.model.named_modules()]
    params = [(name, id(p)) for name, p in tree_flatten(model.model.parameters())]
    modules_sdpa = [
        (name, id(getattr(mod, "scaled_dot_product_attention", None)))
        for name, mod in sorted(sys.modules.items())
        if name.startswith("mlx_lm.models.")
    ]
    return modules, params, modules_sdpa, model._trace is None, model._forward_active


@pytest.fixture(scope="session")
def model_state():
    """model_state(model) -> a snapshot that is equal before and after a trace or an error."""
    return state


def _values(model: InterpretableModel, attn: nn.Module, x: mx.array) -> mx.array:
    """V (B, n_kv_heads, T, d_head) from the attention input, with the module's own projection."""
    B, T, _ = x.shape
    if "v_proj" in attn:
        v = attn.v_proj(x)
    elif "qkv_proj" in attn:  # phi3: [q | k | v]
        v = attn.qkv_proj(x)[..., (model.n_heads + model.n_kv_heads) * model.d_head :]
    else:  # gpt2: c_attn = [q | k | v]
        v = mx.split(attn.c_attn(x), 3, axis=-1)[2]
    return v.reshape(B, T, model.n_kv_heads, model.d_head).transpose(0, 2, 1, 3)


def head_outputs(model: InterpretableModel, layer: int, pattern, x) -> mx.array:
    """pattern (B, H, T, T) @ V, head h reading KV group h // (H / n_kv): (B, T, H, d_head)."""
    v = _values(model, model.attention(layer), mx.array(x))
    v = mx.repeat(v, model.n_heads // model.n_kv_heads, axis=1)
    return (mx.array(pattern) @ v).transpose(0, 2, 1, 3)


def out_proj(model: InterpretableModel, layer: int) -> nn.Module:
    attn = model.attention(layer)
    return attn.o_proj if "o_proj" in attn else attn.c_proj


@pytest.fixture(scope="session")
def bundled() -> InterpretableModel:
    """The bundled default model (trained: real previous-token and induction heads)."""
    return InterpretableModel()
