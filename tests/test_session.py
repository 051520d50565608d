"""HeadSession without a widget: every answer is the library's, computed once, under one budget."""

from __future__ import annotations

import numpy as np
import pytest

from mlx_headwidget import analysis
from mlx_headwidget.analysis import ablation_effect, head_pattern, score_grid
from mlx_headwidget.errors import InputError, OutOfRangeError
from mlx_headwidget.session import HeadSession
from mlx_headwidget.testing import PATTERN_ATOL

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

TEXT = "The cat sat on the mat. The cat sat on the mat."
OTHER = "Return the number of items in a list."
# A pattern is kept as float16: within half a float16 step of values <= 1 (2**-12) of the float32
# pattern, which a capture of one layer gives within PATTERN_ATOL of a capture of all layers.
F16 = 2**-12 + PATTERN_ATOL


def counting(monkeypatch, name: str) -> list:
    """Record the arguments of every call of analysis.<name>, which still runs."""
    calls: list = []
    real = getattr(analysis, name)
    monkeypatch.setattr(analysis, name, lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    return calls


def test_grid_is_score_grid_computed_once(llama, monkeypatch):
    session = HeadSession(llama)
    calls = counting(monkeypatch, "score_grid")
    seen = []
    grid = session.grid(TEXT, "previous_token", progress=lambda done, total: seen.append(done))
    assert grid.dtype == np.float32 and grid.shape == (llama.n_layers, llama.n_heads)
    # the same computation: the same numbers
    want = score_grid(llama, TEXT, "previous_token").astype(np.float32)
    np.testing.assert_array_equal(grid, want)
    assert seen == list(range(1, llama.n_layers + 1))
    assert session.grid(TEXT, "previous_token") is grid and not grid.flags.writeable
    assert len(calls) == 1  # (the reference above calls score_grid by its own name)
    induction = session.grid(TEXT, "induction")
    assert session.grid(OTHER, "induction") is induction  # random tokens: one grid for all texts
    assert session.grid(OTHER, "previous_token") is not grid
    assert len(calls) == 3
    with pytest.raises(ValueError, match="unknown score kind 'nope'; choose one of induction"):
        session.grid(TEXT, "nope")


def test_tokens_are_the_models_and_each_text_is_tokenized_once(llama, monkeypatch):
    session = HeadSession(llama)
    encoded = []
    real = llama.to_tokens
    monkeypatch.setattr(llama, "to_tokens", lambda *a, **k: encoded.append(a) or real(*a, **k))
    assert session.tokens(TEXT) == llama.to_str_tokens(TEXT)
    session.grid(TEXT, "duplicate_token")
    session.patterns(TEXT, [(0, 1)])
    session.ablation(TEXT, [(1, 2)])
    session.tokens(TEXT)
    assert encoded == [(TEXT,)]  # once, whatever was asked of the text
    for bad, error, message in (("", InputError, "empty"), (42, TypeError, "expected a string")):
        with pytest.raises(error, match=message):
            session.tokens(bad)
    assert not session.cached(("ids", ""))


def test_patterns_of_a_small_model_come_from_one_forward(llama, monkeypatch):
    session = HeadSession(llama)
    calls = counting(monkeypatch, "head_patterns")
    heads = [(0, 1), (llama.n_layers - 1, 2), (1, 0)]
    for layer, head in heads:
        got = session.patterns(TEXT, [(layer, head)])[(layer, head)]
        assert got.dtype == np.float16 and not got.flags.writeable
        np.testing.assert_allclose(got, head_pattern(llama, TEXT, layer, head), atol=F16)
    assert len(calls) == len(heads) + 1  # the session's one forward, then the references
    every = [(layer, head) for layer in range(llama.n_layers) for head in range(llama.n_heads)]
    assert calls[0][0][2] == every  # that forward kept every head
    assert all(session.cached(("pattern", TEXT, *h)) for h in every)


def test_patterns_too_big_for_one_forward_keep_the_layer_or_the_head(llama, monkeypatch):
    T = len(llama.to_str_tokens(TEXT))
    calls = counting(monkeypatch, "head_patterns")
    layer_bytes = llama.n_heads * T * T * 2  # one layer's heads, float16
    session = HeadSession(llama, forward_bytes=layer_bytes)
    session.patterns(TEXT, [(1, 2), (1, 3)])
    assert calls[-1][0][2] == [(1, head) for head in range(llama.n_heads)]
    session = HeadSession(llama, forward_bytes=layer_bytes - 1)
    session.patterns(TEXT, [(1, 2), (0, 3), (1, 2)])
    assert calls[-1][0][2] == [(1, 2), (0, 3)]
    assert session.cached(("pattern", TEXT, 0, 3)) and not session.cached(("pattern", TEXT, 0, 2))
    with pytest.raises(OutOfRangeError, match="head 9 is out of range"):
        session.patterns(TEXT, [(0, 9)])


def test_ablation_is_ablation_effect_with_the_clean_run_reused(llama, monkeypatch):
    session = HeadSession(llama)
    calls = counting(monkeypatch, "ablation_effect")
    result = session.ablation(TEXT, [(1, 2), (0, 1), (1, 2)])
    want = ablation_effect(llama, TEXT, [(0, 1), (1, 2)])
    assert result.heads == want.heads == [(0, 1), (1, 2)]
    assert result.top_before == want.top_before and result.top_after == want.top_after
    # the session's ablation replays the layers before layer 0 (none here) from the clean run:
    # the same operations on the same inputs, measured identical; compared with a tolerance
    np.testing.assert_allclose(result.token_loss_after, want.token_loss_after, atol=1e-6)
    # the session: the clean run (keeping each layer's output), then the ablation given it as
    # its baseline
    assert [c[0][2] for c in calls[:2]] == [[], [(0, 1), (1, 2)]]
    assert calls[0][1]["keep_layer_outputs"] is True
    assert calls[1][1]["baseline"] is session.ablation(TEXT, [])
    session.ablation(TEXT, [(0, 3)])
    assert len(calls) == 3 and calls[2][1]["baseline"] is session.ablation(TEXT, [])
    assert session.ablation(TEXT, [(1, 2), (0, 1)]) is result
    with pytest.raises(TypeError, match="layer must be an integer, got 1.5"):
        session.ablation(TEXT, [(1.5, 0)])


def test_the_clean_run_keeps_layer_outputs_when_the_budget_allows(llama):
    session = HeadSession(llama)
    clean = session.ablation(TEXT, [])
    outputs = clean.layer_outputs
    assert len(outputs.outputs) == llama.n_layers
    T = session.ids(TEXT).shape[1]
    assert outputs.nbytes == 4 * llama.n_layers * T * llama.d_model  # counted in the budget
    assert session.nbytes >= outputs.nbytes
    later = session.ablation(TEXT, [(1, 0)])  # computes layer 1 only: layer 0 replayed
    full = ablation_effect(llama, TEXT, [(1, 0)])
    np.testing.assert_allclose(later.token_loss_after, full.token_loss_after, atol=1e-6)
    # a budget a quarter of which cannot hold them: the clean run keeps none
    small = HeadSession(llama, budget=4 * (4 * llama.n_layers * T * llama.d_model) - 4)
    assert small.ablation(TEXT, []).layer_outputs is None
    assert small.ablation(TEXT, [(1, 0)]).top_after == later.top_after


def test_one_budget_for_every_kind_least_recently_used_first(llama):
    probe = HeadSession(llama)
    pattern = probe.patterns(TEXT, [(0, 0)])[(0, 0)].nbytes
    grid = probe.grid(TEXT, "first_token").nbytes
    ids = probe.ids(TEXT).nbytes
    # room for the ids, the grid and two patterns
    session = HeadSession(llama, budget=ids + grid + 2 * pattern, forward_bytes=0)
    session.grid(TEXT, "first_token")
    session.patterns(TEXT, [(0, 0)])
    session.grid(TEXT, "first_token")  # used again: now newer than the ids and the pattern
    session.patterns(TEXT, [(0, 1)])
    assert session.nbytes <= session.budget
    assert [session.cached(k) for k in (("grid", TEXT, "first_token"), ("ids", TEXT))] == [
        True,
        True,
    ]
    session.patterns(TEXT, [(1, 1)])  # one entry too many: the least recently used goes
    assert not session.cached(("pattern", TEXT, 0, 0)) and session.nbytes <= session.budget
    assert session.cached(("pattern", TEXT, 1, 1)) and session.cached(("pattern", TEXT, 0, 1))
    tiny = HeadSession(llama, budget=1, forward_bytes=0)
    got = tiny.patterns(TEXT, [(1, 1)])[(1, 1)]  # larger than the budget: returned, kept alone
    np.testing.assert_array_equal(got, session.patterns(TEXT, [(1, 1)])[(1, 1)])
    assert tiny.cached(("pattern", TEXT, 1, 1)) and tiny.nbytes == got.nbytes


def test_attention_to_is_the_captured_patterns_entry_one_forward_per_query(llama, monkeypatch):
    from mlx_headwidget import session as session_module
    from mlx_headwidget.capture import capture_attention

    session = HeadSession(llama)
    ids = session.ids(TEXT)
    T = ids.shape[1]
    full = np.zeros((llama.n_layers, llama.n_heads, T, T), np.float32)

    def keep(layer, pattern):
        full[layer] = np.array(pattern[0], dtype=np.float32)

    # the same forward (all layers, no logits) as the session's: the same numbers
    capture_attention(llama, ids, on_pattern=keep, logits=False)
    calls = []
    real = session_module.capture_attention
    monkeypatch.setattr(
        session_module, "capture_attention", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    for key in (0, 3, T - 1):
        got = session.attention_to(TEXT, T - 1, key)
        assert got.dtype == np.float32 and got.shape == (llama.n_layers, llama.n_heads)
        np.testing.assert_array_equal(got, full[:, :, T - 1, key])
    assert len(calls) == 1  # one forward for the query's row; every key read from it
    np.testing.assert_array_equal(session.attention_to(TEXT, 4, 2), full[:, :, 4, 2])
    assert len(calls) == 2
    with pytest.raises(OutOfRangeError, match=r"key token 5 comes after query token 4"):
        session.attention_to(TEXT, 4, 5)
    with pytest.raises(OutOfRangeError, match=rf"query token {T} is out of range.*0\.\.{T - 1}"):
        session.attention_to(TEXT, T, 0)
    with pytest.raises(OutOfRangeError, match=r"key token -1 is out of range"):
        session.attention_to(TEXT, 3, -1)
    assert len(calls) == 2  # refused before any forward


def test_composition_into_is_the_librarys_computed_once_per_kind_and_layer(llama, monkeypatch):
    from mlx_headwidget import composition

    session = HeadSession(llama)
    L, H = llama.n_layers, llama.n_heads
    calls = []
    real = composition.composition_scores
    monkeypatch.setattr(
        composition, "composition_scores", lambda *a, **k: calls.append(k) or real(*a, **k)
    )
    for kind in ("k", "q", "v"):
        # the same computation, kept as float32: the library's numbers cast the same way
        want = real(llama, kind, layers=[L - 1])[:, :, L - 1].astype(np.float32)
        for head in range(H):
            got = session.composition_into(kind, L - 1, head)
            assert got.dtype == np.float32 and got.shape == (L, H)
            np.testing.assert_array_equal(got, want[:, :, head])
        assert np.isnan(got[L - 1]).all() and np.isfinite(got[: L - 1]).all()
    assert calls == [{"layers": [L - 1]}] * 3  # one per (kind, layer), every head of it
    assert np.isnan(session.composition_into("k", 0, 0)).all()  # layer 0 reads no head
    with pytest.raises(OutOfRangeError, match=rf"head {H} is out of range"):
        session.composition_into("k", 0, H)
    with pytest.raises(ValueError, match="kind must be one of 'k', 'q', 'v', got 'x'"):
        session.composition_into("x", 1, 0)


# the first copy's nouns swapped: the same tokens' count (" c" "at", " m" "at"), another answer
PROMPT = "The cat sat on the mat. The cat sat on the"
CORRUPTED = "The mat sat on the cat. The mat sat on the"


def test_patching_and_dla_are_the_librarys_cached_per_inputs(llama, monkeypatch):
    from mlx_headwidget import patching
    from mlx_headwidget.attribution import head_logit_attribution

    session = HeadSession(llama)
    calls = []
    real = patching.patch_heads
    monkeypatch.setattr(patching, "patch_heads", lambda *a, **k: calls.append(a) or real(*a, **k))
    seen = []
    got = session.patching(PROMPT, CORRUPTED, " m", " c", lambda d, t: seen.append((d, t)))
    # the same computation, kept as float32
    want = real(llama, PROMPT, CORRUPTED, " m", " c").astype(np.float32)
    assert got.dtype == np.float32 and got.shape == (llama.n_layers, llama.n_heads)
    np.testing.assert_array_equal(got, want)
    assert seen and seen[-1][0] == seen[-1][1]
    session.patching(PROMPT, CORRUPTED, " m", " c")
    assert len(calls) == 1  # cached per input pair and tokens
    dla = session.logit_attribution(PROMPT, " m", " c")
    want = head_logit_attribution(llama, PROMPT, " m", " c").astype(np.float32)
    np.testing.assert_array_equal(dla, want)
    one = head_logit_attribution(llama, PROMPT, " m").astype(np.float32)
    np.testing.assert_array_equal(session.logit_attribution(PROMPT, " m", None), one)
    with pytest.raises(InputError, match="clean has 19 tokens, corrupted has 8"):
        session.patching(PROMPT, "The dog sat.", " m", " c")
    with pytest.raises(InputError, match=r"answer ' kitten' is 5 tokens \[.*\], not one"):
        session.patching(PROMPT, CORRUPTED, " kitten", " c")
