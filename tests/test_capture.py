"""Captured patterns are the ones the model used, in every architecture.

Per case: (1) rows sum to 1 and respect causality and sliding windows; (2) logits of the traced
forward equal a plain mlx-lm forward, so the capture runs the model's own computation; (3) captured
patterns times V (recomputed with the module's own projections from the attention input of a
forward without capture) give the attention output that forward produced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
import numpy as np
import pytest
from helpers import TEXT, case_tokens, head_outputs, out_proj
from mlx_lm.models import gpt_oss, llama
from mlx_lm.models.base import scaled_dot_product_attention

from mlx_headwidget import InterpretableModel, capture_attention
from mlx_headwidget import interventions as iv
from mlx_headwidget.capture import (
    LayerOutputs,
    attention_by_rows,
    explicit_attention,
    swap_attention,
)
from mlx_headwidget.errors import OutOfRangeError, TraceError, UnsupportedArchitectureError
from mlx_headwidget.testing import (
    PATTERN_ATOL,
    assert_logits_close,
    make_checkpoint,
)

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS


@dataclass
class Run:
    tokens: mx.array
    plain: np.ndarray  # logits of model.model(tokens)
    traced: np.ndarray  # model.output.save() inside the trace
    attention: dict[int, np.ndarray]
    attn_in: dict[int, np.ndarray]  # input of each layer's attention, forward without capture
    attn_out: dict[int, np.ndarray]  # output of each layer's attention, same forward
    unchanged: bool  # the model's modules, parameters and functions are the same afterwards


def _recorders(model: InterpretableModel, attn_in: dict, attn_out: dict) -> dict:
    norm = "ln_1" if model.architecture == "gpt2" else "input_layernorm"

    def keep(store, layer):
        def record(x):
            store[layer] = np.array(x)
            return x

        return record

    paths = {}
    for layer in range(model.n_layers):
        paths[f"{model.layers_path}.{layer}.{norm}"] = keep(attn_in, layer)
        paths[f"model.model.layers.{layer}.self_attn"] = keep(attn_out, layer)
    return paths


@pytest.fixture(scope="module")
def runs(models, model_state):
    done: dict[str, Run] = {}

    def get(case: str) -> Run:
        if case not in done:
            model = models(case)
            before = model_state(model)
            tokens = case_tokens(model, case)
            plain = np.array(model.model(tokens).astype(mx.float32))
            attn_in, attn_out = {}, {}
            with model.trace(tokens, _recorders(model, attn_in, attn_out), capture=False):
                pass
            with model.trace(tokens) as trace:
                traced = np.array(model.output.save())
            attention = {k: np.array(v) for k, v in trace.attention.items()}
            unchanged = model_state(model) == before
            done[case] = Run(tokens, plain, traced, attention, attn_in, attn_out, unchanged)
        return done[case]

    return get


def _window(model: InterpretableModel, layer: int) -> int | None:
    types = model.config.get("layer_types")
    if types and types[layer] == "sliding_attention":
        return model.config["sliding_window"]
    return None


def test_rows_sum_to_one_causal_and_windowed(case, models, runs):
    model, run = models(case), runs(case)
    T = run.tokens.shape[1]
    assert sorted(run.attention) == list(range(model.n_layers))
    query, key = np.indices((T, T))
    windows = 0
    for layer, pattern in run.attention.items():
        assert pattern.shape == (1, model.n_heads, T, T) and pattern.dtype == np.float32
        np.testing.assert_allclose(pattern.sum(-1), 1.0, atol=1e-5, err_msg=f"layer {layer}")
        assert (pattern[..., key > query] == 0).all()
        window = _window(model, layer)
        if window is not None:
            assert T > window + 2
            assert (pattern[..., query - key >= window] == 0).all()
            windows += 1
        if model.n_kv_heads < model.n_heads:  # heads sharing keys still have their own pattern
            assert np.abs(pattern[0, 0] - pattern[0, 1]).max() > 1e-3
    assert windows == (1 if case == "mistral" else 0)


def test_traced_logits_equal_plain_forward_and_model_is_restored(case, models, runs):
    model, run = models(case), runs(case)
    assert run.traced.shape == (1, run.tokens.shape[1], model.vocab_size)
    # the plain forward runs mlx-lm's fast attention (fused on Metal), the trace our explicit one
    assert_logits_close(run.traced, run.plain)
    assert run.unchanged


def test_patterns_times_values_give_the_attention_output(case, models, runs):
    model, run = models(case), runs(case)
    for layer, pattern in run.attention.items():
        heads = head_outputs(model, layer, pattern, run.attn_in[layer])
        B, T = heads.shape[:2]
        out = np.array(out_proj(model, layer)(heads.reshape(B, T, -1)))
        # V and the output projection recomputed: another summation order (LOGITS_RTOL)
        assert_logits_close(out, run.attn_out[layer])


@pytest.mark.parametrize("case", ["llama", "gpt2", "gemma2"])
def test_padded_batch_rows_equal_single_texts(case, models):
    model = models(case)
    texts = [
        "The cat sat on the mat.",
        "A much longer text: the cat sat on the mat, again and again.",
    ]
    with model.trace(texts) as trace:
        pass
    B, T = trace.tokens.shape
    assert B == 2 and trace.lengths[1] == T > trace.lengths[0]
    n = trace.lengths[0]
    assert (np.array(trace.tokens[0, n:]) == model.pad_token_id).all()
    for i, text in enumerate(texts):
        with model.trace(text) as single:
            pass
        n = trace.lengths[i]
        assert single.tokens.shape[1] == n
        # batched and single matmuls round differently (LOGITS_RTOL, PATTERN_ATOL)
        assert_logits_close(trace.logits[i, :n], single.logits[0])
        for layer, pattern in trace.attention.items():
            p = np.array(pattern[i])
            np.testing.assert_allclose(p[:, :n, :n], single.attention[layer][0], atol=PATTERN_ATOL)
            assert (p[:, n:, :] == 0).all() and (p[:, :, n:] == 0).all()


def test_capture_only_the_layers_asked_for(llama):
    with llama.trace(TEXT) as every:
        pass
    for capture, expected in [([1], [1]), (-2, [0]), (False, []), ([], [])]:
        with llama.trace(TEXT, capture=capture) as trace:
            pass
        assert sorted(trace.attention) == expected
        # a layer not captured runs mlx-lm's fast attention (fused on Metal): another computation
        assert_logits_close(trace.logits, every.logits)
        for layer in expected:
            np.testing.assert_allclose(
                trace.attention[layer], every.attention[layer], atol=PATTERN_ATOL
            )


def test_capture_attention_streams_each_layer_once_in_order(llama):
    with llama.trace(TEXT) as trace:
        pass
    seen = []

    def on_pattern(layer, pattern):
        seen.append(layer)
        np.testing.assert_array_equal(np.array(pattern), np.array(trace.attention[layer]))

    logits = capture_attention(llama, trace.tokens, on_pattern=on_pattern)
    assert seen == [0, 1]
    assert np.array_equal(np.array(logits), np.array(trace.logits))


def test_without_logits_the_forward_stops_after_the_last_captured_layer(llama):
    """logits=False: the same patterns (the same computation up to that layer), no logits, and the
    layers after it never run (an intervention on layer 1's MLP and on the norm would see them)."""
    whole, early, ran = {}, {}, []

    def seen(name):
        def fn(x):
            ran.append(name)
            return x

        return fn

    watch = {"model.model.layers.1.mlp": seen("mlp 1"), "model.model.norm": seen("norm")}
    logits = capture_attention(llama, TEXT, [1], lambda i, p: whole.update({i: np.array(p)}))
    assert logits is not None and ran == []
    out = capture_attention(
        llama, TEXT, [0], lambda i, p: early.update({i: np.array(p)}), watch, logits=False
    )
    assert out is None and ran == [] and sorted(early) == [0]
    capture_attention(llama, TEXT, [1], lambda i, p: early.update({i: np.array(p)}), watch)
    assert ran == ["mlp 1", "norm"]  # with logits, the watched modules run
    np.testing.assert_array_equal(early[1], whole[1])
    ran.clear()
    out = capture_attention(llama, TEXT, [1], lambda i, p: None, watch, logits=False)
    assert out is None and ran == []  # layer 1 is the last: its MLP does not run
    assert capture_attention(llama, TEXT, [], logits=False) is None


def test_a_scan_holds_about_one_layer_of_patterns(tmp_path):
    """8 layers, T = 512: streaming keeps < 2 layers' patterns in memory, keeping all holds 8."""
    model = InterpretableModel(str(make_checkpoint("llama", tmp_path, num_hidden_layers=8)))
    ids = mx.array(np.random.default_rng(0).integers(2, 512, size=(1, 512)), dtype=mx.int32)
    one_layer = model.n_heads * 512 * 512 * 4  # bytes of one (1, H, T, T) float32 pattern
    maxima = []

    def measure(keep: bool) -> float:
        mx.clear_cache()
        mx.reset_peak_memory()
        start = mx.get_active_memory()
        if keep:
            with model.trace(ids) as trace:
                pass
        else:
            capture_attention(model, ids, on_pattern=lambda i, p: maxima.append(p.max().item()))
        peak = (mx.get_peak_memory() - start) / one_layer
        if keep:
            del trace
        return peak

    streamed, kept = measure(False), measure(True)
    assert len(maxima) == 8
    assert streamed < 2.0, streamed
    assert kept > 8.0, kept


def _tiny_gpt_oss(tokenizer) -> InterpretableModel:
    """gpt_oss: attention sinks (one logit per head) and a sliding window of 4 in layer 0."""
    args = gpt_oss.ModelArgs(
        num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2, vocab_size=512,
        hidden_size=64, intermediate_size=64, head_dim=16, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
    )  # fmt: skip
    mx.random.seed(1)
    model = gpt_oss.Model(args)
    for layer in model.layers:
        layer.self_attn.sinks = mx.random.normal((4,))
    return InterpretableModel((model, tokenizer))


def test_attention_sinks_take_their_share_of_each_row(llama):
    model = _tiny_gpt_oss(llama.tokenizer)
    tokens = model.to_tokens(TEXT)
    T = tokens.shape[1]
    with model.trace(tokens) as trace:
        pass
    assert_logits_close(trace.logits, model.model(tokens))
    query, key = np.indices((T, T))
    for layer, pattern in trace.attention.items():
        p = np.array(pattern)
        sums = p.sum(-1)
        assert (sums < 1 - 1e-3).all() and (sums > 0).all()
        assert (p[..., key > query] == 0).all()
        if layer == 0:
            assert (p[..., query - key >= 4] == 0).all()


def test_explicit_attention_masks_and_sinks_match_numpy():
    rng = np.random.default_rng(0)
    B, H, K, T, D = 2, 4, 2, 5, 8
    q = rng.normal(size=(B, H, T, D)).astype(np.float32)
    k, v = rng.normal(size=(2, B, K, T, D)).astype(np.float32)
    sinks = rng.normal(size=H).astype(np.float32)
    scale = D**-0.5
    k_full, v_full = np.repeat(k, H // K, axis=1), np.repeat(v, H // K, axis=1)
    scores = scale * q @ k_full.swapaxes(-1, -2)
    causal = np.tril(np.ones((T, T), dtype=bool))
    masked = np.where(causal, scores, -np.inf)
    expected = np.exp(masked - masked.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    additive = np.where(causal, 0.0, -1e9).astype(np.float32)
    for mask in ["causal", mx.array(causal), mx.array(additive)]:
        out, pattern = explicit_attention(mx.array(q), mx.array(k), mx.array(v), scale, mask)
        # float32 against float64, T = 5: a few float32 roundings of values <= 1
        np.testing.assert_allclose(np.array(pattern), expected, atol=1e-6)
        np.testing.assert_allclose(np.array(out), expected @ v_full, atol=1e-5)
    with_sink = np.concatenate([np.broadcast_to(sinks[None, :, None, None], (B, H, T, 1)),
                                masked], axis=-1)  # fmt: skip
    sink_expected = np.exp(with_sink - with_sink.max(-1, keepdims=True))
    sink_expected = (sink_expected / sink_expected.sum(-1, keepdims=True))[..., 1:]
    _, pattern = explicit_attention(mx.array(q), mx.array(k), mx.array(v), scale, "causal",
                                    mx.array(sinks))  # fmt: skip
    np.testing.assert_allclose(np.array(pattern), sink_expected, atol=1e-6)


class InlineAttention(nn.Module):
    """Llama attention computed inline: no shared function to hook, no capture of its own."""

    def __init__(self, original: llama.Attention):
        super().__init__()
        self.inner = original

    def __call__(self, x, mask=None, cache=None):
        a = self.inner
        B, L, _ = x.shape
        q = a.rope(a.q_proj(x).reshape(B, L, a.n_heads, -1).transpose(0, 2, 1, 3))
        k = a.rope(a.k_proj(x).reshape(B, L, a.n_kv_heads, -1).transpose(0, 2, 1, 3))
        v = a.v_proj(x).reshape(B, L, a.n_kv_heads, -1).transpose(0, 2, 1, 3)
        k, v = (mx.repeat(t, a.n_heads // a.n_kv_heads, axis=1) for t in (k, v))
        scores = (q * a.scale) @ k.swapaxes(-1, -2)
        scores = mx.where(mx.tril(mx.ones((L, L), dtype=mx.bool_)), scores, -mx.inf)
        out = mx.softmax(scores, axis=-1) @ v
        return a.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class TwiceAttention(InlineAttention):
    """Calls the shared attention function twice: no single pattern is "the" pattern."""

    def __call__(self, x, mask=None, cache=None):
        a = self.inner
        B, L, _ = x.shape
        q = a.rope(a.q_proj(x).reshape(B, L, a.n_heads, -1).transpose(0, 2, 1, 3))
        k = a.rope(a.k_proj(x).reshape(B, L, a.n_kv_heads, -1).transpose(0, 2, 1, 3))
        v = a.v_proj(x).reshape(B, L, a.n_kv_heads, -1).transpose(0, 2, 1, 3)
        one = scaled_dot_product_attention(q, k, v, cache=None, scale=a.scale, mask=mask)
        two = scaled_dot_product_attention(q, k, v, cache=None, scale=a.scale / 2, mask=mask)
        return a.o_proj((one + two).transpose(0, 2, 1, 3).reshape(B, L, -1))


@pytest.mark.parametrize(
    ("attention", "message"),
    [
        (InlineAttention, "cannot capture the attention of layer 0 of this 'llama' model"),
        (TwiceAttention, "layer 0's attention computed 2 attention patterns in one call"),
    ],
)
def test_attention_we_cannot_capture_is_refused(checkpoint, model_state, attention, message):
    mlx_model, tokenizer = mlx_lm.load(str(checkpoint("llama")))
    for layer in mlx_model.layers:
        layer.self_attn = attention(layer.self_attn)
    model = InterpretableModel((mlx_model, tokenizer))
    before = model_state(model)
    with pytest.raises(UnsupportedArchitectureError, match=re.escape(message)):
        with model.trace(TEXT):
            pass
    assert model_state(model) == before
    with model.trace(TEXT, capture=False) as trace:  # still runs, without patterns
        pass
    assert trace.attention == {}
    np.testing.assert_array_equal(np.array(trace.logits), np.array(model.model(trace.tokens)))


def test_supported_architectures_are_named_in_the_refusal(checkpoint):
    mlx_model, tokenizer = mlx_lm.load(str(checkpoint("llama")))
    mlx_model.layers[1].self_attn = InlineAttention(mlx_model.layers[1].self_attn)
    model = InterpretableModel((mlx_model, tokenizer))
    with pytest.raises(UnsupportedArchitectureError) as err:
        capture_attention(model, model.to_tokens(TEXT), layers=[1])
    for name in ("llama", "mistral", "qwen2", "qwen3", "phi3", "gpt2", "gemma2"):
        assert name in str(err.value)
    capture_attention(model, model.to_tokens(TEXT), layers=[0])  # layer 0 is still capturable


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            [2],
            "layer 2 is out of range: the model has 2 layers, valid 0..1 (or -2..-1 from the end)",
        ),
        (-3, "layer -3 is out of range: the model has 2 layers"),
    ],
)
def test_layer_out_of_range(llama, model_state, layers, message):
    before = model_state(llama)
    with pytest.raises(OutOfRangeError, match=re.escape(message)):
        with llama.trace(TEXT, capture=layers):
            pass
    with pytest.raises(OutOfRangeError, match=re.escape(message)):
        capture_attention(llama, llama.to_tokens(TEXT), layers=layers)
    assert model_state(llama) == before


def test_no_forward_inside_a_running_forward(llama, model_state):
    before = model_state(llama)

    def nested(layer, pattern):
        capture_attention(llama, llama.to_tokens("again"))

    with pytest.raises(TraceError, match="a forward pass of this model is already running"):
        capture_attention(llama, llama.to_tokens(TEXT), on_pattern=nested)
    assert model_state(llama) == before


def test_swap_attention_runs_the_given_function_and_puts_the_shared_one_back(llama, model_state):
    before = model_state(llama)
    tokens = llama.to_tokens(TEXT)
    plain = np.array(llama.model(tokens))
    calls = []

    def zero(queries, keys, values, cache, scale, mask, sinks=None):
        calls.append((queries.shape, keys.shape))
        return mx.zeros_like(queries)

    # the InterpretableModel, or mlx-lm's model itself (the training script's probe)
    for model in (llama, llama.model):
        calls.clear()
        with swap_attention(model, zero):
            swapped = np.array(llama.model(tokens))
        T, H, KV, D = tokens.shape[1], llama.n_heads, llama.n_kv_heads, llama.d_head
        assert calls == [((1, H, T, D), (1, KV, T, D))] * llama.n_layers
        assert np.abs(swapped - plain).max() > 1e-2  # no attention output: other logits
        assert model_state(llama) == before
        # the same forward again, after the block: the same computation, the same logits
        np.testing.assert_array_equal(np.array(llama.model(tokens)), plain)
    with pytest.raises(RuntimeError, match="inside"), swap_attention(llama, zero):
        raise RuntimeError("raised inside the block")
    assert model_state(llama) == before


@pytest.mark.parametrize("block", [1, 2, 3, 5, 9])
def test_attention_by_rows_equals_the_whole_computation(block):
    rng = np.random.default_rng(1)
    B, H, K, T, D = 2, 4, 2, 5, 8
    q = mx.array(rng.normal(size=(B, H, T, D)).astype(np.float32))
    k, v = (mx.array(x) for x in rng.normal(size=(2, B, K, T, D)).astype(np.float32))
    sinks = mx.array(rng.normal(size=H).astype(np.float32))
    causal = np.tril(np.ones((T, T), dtype=bool))
    masks = [None, "causal", mx.array(causal), mx.array(np.where(causal, 0.0, -1e9), mx.float32)]
    masks.append(
        mx.array(causal[None, None] & (rng.random((B, 1, T, T)) > 0.2) | np.eye(T, dtype=bool))
    )
    for mask in masks:
        for sink in (None, sinks):
            want_out, want = explicit_attention(q, k, v, D**-0.5, mask, sink)
            starts, rows = [], []

            def on_rows(s, r, starts=starts, rows=rows):
                starts.append(s)
                rows.append(np.array(r))

            out = attention_by_rows(q, k, v, D**-0.5, mask, sink, block=block, on_rows=on_rows)
            assert starts == list(range(0, T, block))
            # blocks of rows: matmuls of other shapes (see PATTERN_ATOL, LOGITS_RTOL)
            np.testing.assert_allclose(
                np.concatenate(rows, axis=2), np.array(want), atol=PATTERN_ATOL
            )
            assert_logits_close(out, want_out)


def test_capture_by_rows_gives_the_pattern_in_blocks(case, models, tokens_of):
    """Every architecture (gemma2's own capture too): rows of 3 queries at a time, in order,
    put together equal the whole pattern, and the logits are the same."""
    model = models(case)
    tokens = tokens_of(model, case)
    T = tokens.shape[1]
    whole = {}
    logits = capture_attention(model, tokens, on_pattern=lambda i, p: whole.update({i: p}))
    blocks = {}

    def on_rows(layer, start, rows):
        assert start == sum(r.shape[2] for r in blocks.setdefault(layer, []))
        blocks[layer].append(np.array(rows))

    by_rows = capture_attention(model, tokens, on_rows=on_rows, row_block=3)
    # matmuls of other shapes: BLAS kernels sum in another order (PATTERN_ATOL, LOGITS_RTOL)
    assert_logits_close(by_rows, logits)
    assert sorted(blocks) == sorted(whole) == list(range(model.n_layers))
    for layer, parts in blocks.items():
        assert [p.shape[2] for p in parts] == [min(3, T - s) for s in range(0, T, 3)]
        np.testing.assert_allclose(
            np.concatenate(parts, axis=2), np.array(whole[layer]), atol=PATTERN_ATOL
        )


def test_capture_by_rows_zeroes_padding(llama):
    texts = ["The cat sat on the mat.", "The cat"]
    whole, blocks = {}, {}
    capture_attention(llama, texts, on_pattern=lambda i, p: whole.update({i: np.array(p)}))
    capture_attention(
        llama,
        texts,
        on_rows=lambda i, s, r: blocks.setdefault(i, []).append(np.array(r)),
        row_block=2,
    )
    n = len(llama.to_str_tokens("The cat"))
    for layer, parts in blocks.items():
        rows = np.concatenate(parts, axis=2)
        np.testing.assert_allclose(rows, whole[layer], atol=PATTERN_ATOL)
        assert (rows[1, :, n:] == 0).all() and (rows[1, :, :, n:] == 0).all()


def test_capture_by_rows_bad_arguments(llama):
    with pytest.raises(ValueError, match="not both"):
        capture_attention(llama, TEXT, on_pattern=print, on_rows=print)
    with pytest.raises(TypeError, match="on_rows must be callable"):
        capture_attention(llama, TEXT, on_rows=3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="row_block must be a positive integer"):
            capture_attention(llama, TEXT, on_rows=print, row_block=bad)


def test_a_scan_by_rows_holds_a_fraction_of_one_layer(tmp_path):
    """8 layers, T = 512: with blocks of 64 query rows the peak memory above the start is under
    half that of the same capture with whole patterns (which holds the scores and the pattern)."""
    model = InterpretableModel(str(make_checkpoint("llama", tmp_path, num_hidden_layers=8)))
    ids = mx.array(np.random.default_rng(0).integers(2, 512, size=(1, 512)), dtype=mx.int32)
    seen = []

    def peak(**how) -> float:
        mx.clear_cache()
        mx.reset_peak_memory()
        start = mx.get_active_memory()
        capture_attention(model, ids, **how)
        return mx.get_peak_memory() - start

    whole = peak(on_pattern=lambda i, p: seen.append((i, p.max().item())))
    by_rows = peak(on_rows=lambda i, s, r: seen.append((i, r.max().item())), row_block=64)
    assert len(seen) == 8 + 8 * 8
    assert by_rows < 0.5 * whole, (by_rows, whole)


def attention_path(model: InterpretableModel, layer: int) -> str:
    return f"{model.layers_path}.{layer}.{model.attention_name}"


def test_replayed_layers_give_the_logits_of_computing_them(models, case, tokens_of):
    """Layers 0..k-1 replaying their recorded outputs give the whole forward's logits for every
    k, and with an ablation from layer k on, the ablated forward's; the replayed layers really
    are not computed (a changed recorded output changes the logits)."""
    model = models(case)
    ids = tokens_of(model, case)
    record = LayerOutputs(ids)
    clean = np.array(capture_attention(model, ids, [], record=record))
    assert len(record.outputs) == model.n_layers and record.nbytes > 0
    # the same layers on the same input run the same operations: measured identical (0 apart)
    # under OpenBLAS, its Haswell kernels and MLX's BLAS; compared as two computations anyway
    assert_logits_close(clean, np.array(capture_attention(model, ids, [])))
    for k in range(model.n_layers + 1):
        assert_logits_close(np.array(capture_attention(model, ids, [], replay=(record, k))), clean)
    last = model.n_layers - 1
    ablate = {attention_path(model, last): iv.zero_heads([0])}
    want = np.array(capture_attention(model, ids, [], None, ablate))
    assert not np.allclose(want, clean)
    assert_logits_close(
        np.array(capture_attention(model, ids, [], None, ablate, replay=(record, last))), want
    )
    zeroed = LayerOutputs(ids, [mx.zeros_like(record.outputs[0]), *record.outputs[1:]])
    assert not np.allclose(np.array(capture_attention(model, ids, [], replay=(zeroed, 1))), clean)


def test_replay_refuses_what_it_cannot_give(llama):
    ids = llama.to_tokens(TEXT)
    record = LayerOutputs(ids)
    capture_attention(llama, ids, [], record=record)
    with pytest.raises(ValueError, match="recorded on the same tokens"):
        capture_attention(llama, llama.to_tokens("another text"), [], replay=(record, 1))
    with pytest.raises(ValueError, match="layer 0 is captured or intervened on"):
        capture_attention(llama, ids, [0], on_pattern=print, replay=(record, 1))
    ablate = {attention_path(llama, 0): iv.zero_heads([0])}
    with pytest.raises(ValueError, match="layer 0 is captured or intervened on"):
        capture_attention(llama, ids, [], None, ablate, replay=(record, 1))
    with pytest.raises(ValueError, match=r"layer count must be in 0\.\.2, got 3"):
        capture_attention(llama, ids, [], replay=(record, 3))
    with pytest.raises(ValueError, match="empty LayerOutputs of the same tokens"):
        capture_attention(llama, ids, [], record=record)
    other = mx.array(np.array(ids)[:, ::-1].copy())  # the same shape, other tokens
    with pytest.raises(ValueError, match="empty LayerOutputs of the same tokens"):
        capture_attention(llama, other, [], record=LayerOutputs(ids))
    with pytest.raises(ValueError, match=r"replay at most its first 0 layers"):
        capture_attention(llama, ids, [0], on_pattern=print, replay=(record, 2))
    with pytest.raises(ValueError, match="record or replay, not both"):
        capture_attention(llama, ids, [], record=LayerOutputs(ids), replay=(record, 1))
