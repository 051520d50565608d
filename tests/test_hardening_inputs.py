"""Bad (and odd but valid) inputs not covered elsewhere: each one is answered with a clear error
naming what was wrong, or works, and leaves the model (and widget) exactly as it was."""

from __future__ import annotations

import json
import re

import mlx.core as mx
import numpy as np
import pytest
from helpers import TEXT

from mlx_headwidget import InterpretableModel, capture_attention
from mlx_headwidget import interventions as iv
from mlx_headwidget.analysis import ablation_effect, head_pattern
from mlx_headwidget.detect import detect_head_types, detect_induction_heads, score_grid
from mlx_headwidget.errors import (
    InputError,
    InputTypeError,
    InterventionError,
    InterventionTypeError,
    ModelLoadError,
    OutOfRangeError,
    UnknownPathError,
)
from mlx_headwidget.testing import assert_logits_close, make_checkpoint
from mlx_headwidget.widget import HeadWidget, WidgetInputError

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

EMOJI = "Ça va? 🐱‍👤 日本語 naïve — ok"
WIDGET_STATE = ("text", "kind", "selection", "focus")


def plain_logits(model: InterpretableModel, tokens: mx.array) -> np.ndarray:
    """The model's own forward, no tracing."""
    return np.array(model.model(tokens).astype(mx.float32))


@pytest.fixture
def unchanged(llama, model_state):
    """Yields; afterwards the model's modules, parameters and logits on TEXT are as before."""
    tokens = llama.to_tokens(TEXT)
    before, logits = model_state(llama), plain_logits(llama, tokens)
    yield
    assert model_state(llama) == before
    np.testing.assert_array_equal(plain_logits(llama, tokens), logits)


@pytest.fixture(scope="module")
def no_bos(tmp_path_factory) -> InterpretableModel:
    """The llama checkpoint with every trace of a BOS token removed from config and tokenizer."""
    folder = make_checkpoint("llama", tmp_path_factory.mktemp("no_bos"))
    for name, drop in (("config.json", "bos_token_id"), ("tokenizer_config.json", "bos_token")):
        data = json.loads((folder / name).read_text())
        data.pop(drop)
        data["add_bos_token"] = False
        (folder / name).write_text(json.dumps(data))
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["post_processor"] = None
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    return InterpretableModel(str(folder))


# ---- loading ------------------------------------------------------------------------------------
def test_sources_that_are_not_models(checkpoint, tmp_path):
    a_file = tmp_path / "weights.safetensors"
    a_file.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=re.escape(f"{a_file} is not a folder")):
        InterpretableModel(a_file)
    with pytest.raises(ModelLoadError, match="not a hub id"):
        InterpretableModel("no/such/folder/here")
    with pytest.raises(TypeError, match="source must be a folder, a hub id or a"):
        InterpretableModel(42)
    with pytest.raises(TypeError, match=re.escape("pair (mlx-lm model, tokenizer)")):
        InterpretableModel(("model", "tokenizer"))


# ---- empty text through every entry point -------------------------------------------------------
ENTRY_POINTS = {
    "to_str_tokens": lambda m, x: m.to_str_tokens(x),
    "capture_attention": lambda m, x: capture_attention(m, x),
    "score_grid": lambda m, x: score_grid(m, x, "previous_token"),
    "head_pattern": lambda m, x: head_pattern(m, x, 0, 0),
    "ablation_effect": lambda m, x: ablation_effect(m, x, [(0, 0)]),
    "detect_head_types": lambda m, x: detect_head_types(m, x),
}


@pytest.mark.parametrize("text", ["", " \n\t\u3000"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_empty_text_everywhere(llama, unchanged, entry, text):
    with pytest.raises(InputError, match=re.escape(f"text {text!r} is empty or whitespace only")):
        ENTRY_POINTS[entry](llama, text)


BAD_IDS = [
    ([1, 512], InputError, "token id 512 is outside the vocabulary: valid ids are 0..511"),
    ([1, -1], InputError, "token id -1 is outside the vocabulary"),
    (mx.array([1.0, 5.0]), InputTypeError, "token ids must be integers"),
    (np.array([1, 2], dtype=np.float16), InputTypeError, "token ids must be integers, got an"),
    ([1, True], InputTypeError, "got True (bool)"),
]


@pytest.mark.parametrize(("ids", "error", "message"), BAD_IDS)
@pytest.mark.parametrize("entry", ["to_str_tokens", "capture_attention", "score_grid"])
def test_bad_token_ids_everywhere(llama, unchanged, entry, ids, error, message):
    with pytest.raises(error, match=re.escape(message)):
        ENTRY_POINTS[entry](llama, ids)


# ---- texts that must work -----------------------------------------------------------------------
def test_unicode_and_emoji_round_trip(llama, unchanged):
    tokens = llama.to_tokens(EMOJI)
    ids = tokens[0].tolist()
    assert ids[0] == llama.bos_token_id and llama.tokenizer.decode(ids[1:]) == EMOJI
    assert len(llama.to_str_tokens(EMOJI)) == len(ids)
    with llama.trace(EMOJI) as trace:
        pass
    assert_logits_close(trace.logits, plain_logits(llama, tokens))  # explicit vs fast attention
    for pattern in trace.attention.values():
        np.testing.assert_allclose(np.array(pattern).sum(-1), 1.0, atol=1e-5)


def test_a_text_of_only_special_tokens_is_those_tokens(llama, unchanged):
    assert llama.to_tokens("<s></s><s>").tolist() == [[1, 1, 0, 1]]
    assert llama.to_str_tokens("</s>", prepend_bos=False) == ["</s>"]
    with llama.trace("</s></s>") as trace:
        pass
    assert_logits_close(trace.logits, plain_logits(llama, trace.tokens))  # explicit vs fast


def test_a_text_merged_into_one_token(llama, unchanged):
    word = llama.token_to_str(348)  # " argument": one token of the byte-level BPE
    assert llama.to_tokens(word, prepend_bos=False).tolist() == [[348]]
    with llama.trace(word, prepend_bos=False) as trace:
        pass
    for pattern in trace.attention.values():  # one position attends to itself only
        assert np.array(pattern).tolist() == [[[[1.0]]] * llama.n_heads]
    assert score_grid(llama, word, "previous_token").shape == (llama.n_layers, llama.n_heads)
    with pytest.raises(ValueError, match="needs at least 2 tokens"):
        score_grid(llama, [348], "previous_token")


def test_context_length_exactly_and_one_past(llama, unchanged):
    n = next(k for k in range(400, 600) if llama.to_tokens(" a" * k).shape[1] == 512)
    with llama.trace(" a" * n, capture=[0]) as trace:
        pass
    assert trace.tokens.shape == (1, 512) and trace.attention[0].shape[-1] == 512
    message = "sequence of 513 tokens is longer than the model's context of 512 tokens"
    with pytest.raises(InputError, match=re.escape(message)):
        llama.to_tokens(" a" * (n + 1))
    with pytest.raises(InputError, match=re.escape(message)):
        llama.to_tokens(["short", " a" * (n + 1)])


def test_batch_of_odd_texts_has_each_text_s_length_and_tokens(llama, unchanged):
    texts = [EMOJI, "<s>", TEXT]
    with llama.trace(texts) as trace:
        pass
    assert trace.lengths == [llama.to_tokens(t).shape[1] for t in texts]
    assert llama.to_str_tokens(texts) == [llama.to_str_tokens(t) for t in texts]
    for i, text in enumerate(texts):
        n = trace.lengths[i]
        single = plain_logits(llama, llama.to_tokens(text))[0]
        assert_logits_close(trace.logits[i, :n], single)  # a padded batch, explicit attention


# ---- a model without BOS ------------------------------------------------------------------------
def test_model_without_bos(no_bos):
    assert no_bos.bos_token_id is None
    ids = no_bos.to_tokens("hello there").tolist()
    assert ids == no_bos.to_tokens("hello there", prepend_bos=False).tolist()
    assert ids[0] == no_bos.tokenizer.encode("hello there")
    grid = score_grid(no_bos, kind="induction", n_random_tokens=10)
    assert grid.shape == (2, 4) and np.isfinite(grid).all() and (0 <= grid).all()
    with pytest.raises(ValueError, match="prepend_bos=True but the model's tokenizer has no BOS"):
        detect_induction_heads(no_bos, n_random_tokens=10, progress=False)
    heads = detect_induction_heads(no_bos, 10, threshold=0.0, prepend_bos=False, progress=False)
    assert len(heads) == 8
    w = HeadWidget(no_bos, text="hello there")
    assert w.status["state"] == "done" and w.scores.shape == (2, 4)
    before = {k: getattr(w, k) for k in WIDGET_STATE}
    with pytest.raises(WidgetInputError, match="it gives 1 token; scoring needs at least 2"):
        w.text = no_bos.token_to_str(348)
    assert {k: getattr(w, k) for k in WIDGET_STATE} == before


# ---- layers and heads ---------------------------------------------------------------------------
def test_negative_layers(llama, unchanged):
    with llama.trace(TEXT, capture=[1, 0]) as pos:
        pass
    with llama.trace(TEXT, capture=[-1, -2]) as neg:
        pass
    assert sorted(neg.attention) == [0, 1]
    for layer in (0, 1):
        np.testing.assert_array_equal(neg.attention[layer], pos.attention[layer])
    grid = score_grid(llama, TEXT, "previous_token", layers=-1)
    assert np.isnan(grid[0]).all() and np.isfinite(grid[1]).all()
    with pytest.raises(InterventionTypeError, match="layer must be a non-negative integer, got -1"):
        iv.ablate_heads([(-1, 0)])
    with pytest.raises(OutOfRangeError, match=re.escape("layer -1 is out of range: valid layers")):
        head_pattern(llama, TEXT, -1, 0)
    with pytest.raises(OutOfRangeError, match=re.escape("head -2 is out of range: valid heads")):
        ablation_effect(llama, TEXT, [(0, -2)])


OUT_OF_RANGE = [
    (lambda m: m.trace(TEXT, interventions=iv.ablate_heads([(2, 0)])).__enter__(),
     UnknownPathError, "'model.model.layers.2.self_attn': layer 2 is out of range, the model has "
     "2 layers (valid 0..1)"),
    (lambda m: m.trace(TEXT, interventions=iv.ablate_heads([(1, 4)])).__enter__(),
     OutOfRangeError, "head 4 is out of range for 'model.model.layers.1.self_attn'"),
    (lambda m: ablation_effect(m, TEXT, [(3, 0)]), OutOfRangeError, "layer 3 is out of range"),
    (lambda m: iv.ablate_heads([(0,)]), InterventionTypeError,
     "heads must be (layer, head) pairs, got (0,)"),
    (lambda m: iv.ablate_heads([5]), InterventionTypeError, "heads must be (layer, head) pairs"),
    (lambda m: iv.ablate_heads(["L0H1"]), InterventionTypeError, "got 'L0H1'"),
    (lambda m: score_grid(m, TEXT, "first_token", layers=[0, 7]), OutOfRangeError,
     "layer 7 is out of range: the model has 2 layers"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "message"), OUT_OF_RANGE)
def test_layer_and_head_out_of_range(llama, unchanged, call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call(llama)


def test_duplicate_heads_count_once(llama, unchanged):
    def logits(interventions):
        with llama.trace(TEXT, capture=False, interventions=interventions) as trace:
            pass
        return np.array(trace.logits)

    path = "model.model.layers.1.self_attn"
    once = logits({path: iv.zero_heads([1, 3])})
    np.testing.assert_array_equal(logits({path: iv.zero_heads([3, 1, 1, 3])}), once)
    np.testing.assert_array_equal(logits(iv.ablate_heads([(1, 3), (1, 1), (1, 3)])), once)
    w = HeadWidget(llama, text=TEXT)
    w.select(1, 3)
    w.select(1, 1, add=True)
    assert w.selected == [(1, 3), (1, 1)]
    before = {k: getattr(w, k) for k in WIDGET_STATE}
    with pytest.raises(WidgetInputError, match="head L1H3 is selected twice"):
        w.selection = [[1, 3], [1, 1], [1, 3]]
    assert {k: getattr(w, k) for k in WIDGET_STATE} == before
    np.testing.assert_array_equal(
        w.ablation_result.token_loss_after,
        ablation_effect(llama, TEXT, [(1, 1), (1, 3)]).token_loss_after,
    )


# ---- detection options --------------------------------------------------------------------------
BAD_COUNTS = [
    ({"n_samples": 0}, ValueError, "n_samples must be >= 1, got 0"),
    ({"n_samples": -2}, ValueError, "n_samples must be >= 1, got -2"),
    ({"n_samples": True}, TypeError, "n_samples must be an integer >= 1, got True"),
    ({"n_samples": 1.5}, TypeError, "n_samples must be an integer >= 1, got 1.5"),
    ({"n_samples": "2"}, TypeError, "n_samples must be an integer >= 1, got '2'"),
    ({"n_random_tokens": 1}, ValueError, "n_random_tokens must be >= 2, got 1"),
    ({"n_random_tokens": 2.5}, TypeError, "n_random_tokens must be an integer >= 2, got 2.5"),
    ({"n_repeats": False}, TypeError, "n_repeats must be an integer >= 2, got False"),
    ({"threshold": float("nan")}, ValueError, "threshold must be in [0, 1], got nan"),
    ({"threshold": None}, TypeError, "threshold must be a number in [0, 1], got None"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_COUNTS)
def test_detection_counts_and_threshold(llama, unchanged, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        detect_induction_heads(llama, **kwargs, progress=False)
    if "threshold" not in kwargs:
        with pytest.raises(error, match=re.escape(message)):
            score_grid(llama, kind="induction", **kwargs)


# ---- interventions and callbacks ----------------------------------------------------------------
BAD_INTERVENTIONS = [
    (lambda x: x * mx.inf, "intervention on 'model.model.layers.0.mlp' returned infinite values"),
    (lambda x: np.array(x), "returned ndarray; it must return an mx.array of the module's output"),
    (lambda x: x[None], "returned (1, 1, "),
    (lambda x: mx.where(mx.arange(x.shape[1])[None, :, None] == 3, mx.nan, x),
     "intervention on 'model.model.layers.0.mlp' returned NaN values"),
    (lambda x: {}["missing"], "intervention on 'model.model.layers.0.mlp' raised KeyError"),
]  # fmt: skip


@pytest.mark.parametrize(("fn", "message"), BAD_INTERVENTIONS)
def test_interventions_that_misbehave(llama, unchanged, fn, message):
    with pytest.raises(InterventionError, match=re.escape(message)) as info:
        with llama.trace(TEXT, interventions={"model.model.layers.0.mlp": fn}):
            pass
    assert llama._trace is None and not llama._forward_active
    if "raised" in message:
        assert isinstance(info.value.__cause__, KeyError)  # the original error is kept


def test_a_failing_on_pattern_callback_propagates_and_unpatches(llama, unchanged):
    def on_pattern(layer, pattern):
        raise ZeroDivisionError(f"callback failed at layer {layer}")

    with pytest.raises(ZeroDivisionError, match="callback failed at layer 0"):
        capture_attention(llama, TEXT, on_pattern=on_pattern)
    with pytest.raises(TypeError, match="on_pattern must be callable"):
        capture_attention(llama, TEXT, on_pattern="print")
