"""Hypothesis fuzzing: score functions on random valid patterns, traces of random token
sequences, and random sequences of widget updates, valid and invalid, in any order."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from helpers import FakeFrontEnd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mlx_headwidget import scores
from mlx_headwidget.widget import HeadWidget, WidgetInputError

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

FAST = settings(max_examples=40, deadline=None)
MODEL_RUNS = settings(max_examples=30, deadline=None)


# ---- scores ------------------------------------------------------------------------------------
@st.composite
def patterns(draw, T: int | None = None):
    """A valid causal pattern (H, T, T): random non-negative weights, some exactly 0, rows
    normalised; with T given, that many positions."""
    T = T or draw(st.integers(2, 12))
    H = draw(st.integers(1, 4))
    # 0 or >= 1e-3: tiny weights renormalised by the exclusions would not survive float32
    weight = st.one_of(st.just(0.0), st.floats(1e-3, 1e3))
    weights = draw(arrays(np.float64, (H, T, T), elements=weight))
    weights = np.tril(weights) + np.eye(T) * 1e-9  # every row has a positive entry
    return weights / weights.sum(-1, keepdims=True)


@st.composite
def score_calls(draw):
    """(kind, pattern (H, T, T), keyword arguments) for a call of scores.score that is valid."""
    kind = draw(st.sampled_from(scores.SCORE_KINDS))
    modes = [m for m in scores.MODES if not (m == "stripe" and kind == "duplicate_token")]
    mode = draw(st.sampled_from(modes))
    kwargs: dict = {"mode": mode}
    if mode != "stripe":
        kwargs["exclude_bos"] = draw(st.booleans())
        kwargs["exclude_current_token"] = draw(st.booleans())
    if kind == "induction" and (mode == "stripe" or draw(st.booleans())):
        n, r, bos = draw(st.integers(1, 4)), draw(st.integers(2, 3)), draw(st.booleans())
        pattern = draw(patterns(T=bos + n * r))
        if mode != "stripe":
            kwargs["prepend_bos"] = bos
        return kind, pattern, {**kwargs, "seq_len": n}
    pattern = draw(patterns())
    if kind in ("induction", "duplicate_token"):
        T = pattern.shape[-1]
        kwargs["tokens"] = np.array(draw(st.lists(st.integers(0, 3), min_size=T, max_size=T)))
    return kind, pattern, kwargs


def _targets(kind: str, T: int, kwargs: dict) -> list[set[int]]:
    """S_i of each row of a position-based score, as the scores module's docstring defines it."""
    if kind == "previous_token":
        return [{i - 1} if i else set() for i in range(T)]
    if kind == "first_token":
        return [{0}] * T
    if kind == "current_token":
        return [{i} for i in range(T)]
    n, bos = kwargs["seq_len"], kwargs["prepend_bos"]  # induction on [BOS] + x * r, x distinct
    ids = [-1] * bos + list(range(n)) * ((T - bos) // n)
    return [{j + 1 for j in range(i) if ids[j] == ids[i]} for i in range(T)]


def _strict_has_a_row(kind: str, T: int, kwargs: dict) -> bool:
    """A strict row counts with >= 2 kept keys and a kept target."""
    targets = _targets(kind, T, kwargs)
    for i in range(T):
        kept = set(range(i + 1))
        kept -= {0} if kwargs["exclude_bos"] else set()
        kept -= {i} if kwargs["exclude_current_token"] else set()
        if len(kept) >= 2 and targets[i] & kept:
            return True
    return False


@FAST
@given(score_calls(), st.randoms(use_true_random=False))
def test_scores_are_bounded_unmutating_and_follow_head_order(call, rnd):
    kind, pattern, kwargs = call
    original = pattern.copy()
    by_position = kind not in ("induction", "duplicate_token") or "seq_len" in kwargs
    T = pattern.shape[-1]
    if kwargs["mode"] == "strict" and by_position and not _strict_has_a_row(kind, T, kwargs):
        with pytest.raises(scores.ScoreValueError, match="has no row to score"):
            scores.score(kind, pattern, **kwargs)
        return
    got = scores.score(kind, pattern, **kwargs)
    np.testing.assert_array_equal(pattern, original)  # never written
    assert got.shape == (pattern.shape[0],) and got.dtype == np.float64
    defined = ~np.isnan(got)
    if kwargs["mode"] == "tl_detector":  # NaN only where every weight is excluded
        kept = pattern.copy()
        kept[:, :, 0] *= not kwargs["exclude_bos"]
        kept[:, np.arange(T), np.arange(T)] *= not kwargs["exclude_current_token"]
        np.testing.assert_array_equal(defined, kept.sum((-1, -2)) > 0)
    elif by_position:
        assert defined.all()  # token-based kinds are NaN where no token repeats
    assert ((got[defined] >= -1e-12) & (got[defined] <= 1 + 1e-12)).all()
    order = list(range(pattern.shape[0]))
    rnd.shuffle(order)
    np.testing.assert_allclose(scores.score(kind, pattern[order], **kwargs), got[order], atol=1e-12)
    one = scores.score(kind, pattern[0], **kwargs)  # (T, T) -> float, the first head's score
    assert isinstance(one, float) and (np.isnan(one) if np.isnan(got[0]) else one == got[0])
    as_mx = scores.score(kind, mx.array(pattern.astype(np.float32)), **kwargs)
    np.testing.assert_allclose(as_mx, got, atol=1e-5)
    batch = np.stack([pattern, pattern])  # (2, H, T, T): the mean of two equal sequences
    np.testing.assert_allclose(scores.score(kind, batch, **kwargs), got, atol=1e-12)


@FAST
@given(st.integers(2, 16), st.sampled_from(scores.SCORE_KINDS))
def test_ideal_heads_score_one(T, kind):
    """A head that puts all its weight on the target key scores exactly 1 (strict mode)."""
    ideal = np.zeros((T, T))
    if kind == "previous_token":
        ideal[0, 0], ideal[np.arange(1, T), np.arange(T - 1)] = 1, 1
        assert scores.previous_token(ideal) == 1.0
    elif kind == "first_token":
        ideal[:, 0] = 1
        assert scores.first_token(ideal) == 1.0
    elif kind == "current_token":
        assert scores.current_token(np.eye(T)) == 1.0
    else:  # induction / duplicate on [BOS] + x + x with distinct x
        n = max(1, (T - 1) // 2)
        ids = np.concatenate([[-1], np.arange(n), np.arange(n)])
        rows = np.arange(1 + n, 1 + 2 * n)
        ideal = np.eye(1 + 2 * n)
        ideal[rows] = 0
        shift = 1 if kind == "induction" else 0
        ideal[rows, rows - n + shift] = 1
        assert scores.score(kind, ideal, tokens=ids + 1) == 1.0


# ---- traces ------------------------------------------------------------------------------------
token_rows = st.lists(
    st.lists(st.integers(0, 511), min_size=1, max_size=20), min_size=1, max_size=3
)


@MODEL_RUNS
@given(token_rows)
def test_random_token_sequences_trace_like_the_plain_forward(llama, rows):
    for row in rows:
        ids = mx.array([row], dtype=mx.int32)
        plain = np.array(llama.model(ids).astype(mx.float32))
        with llama.trace(ids) as trace:
            pass
        scale = max(1.0, np.abs(plain).max())
        np.testing.assert_allclose(np.array(trace.logits), plain, atol=1e-5 * scale)
        T = len(row)
        for pattern in trace.attention.values():
            p = np.array(pattern)
            assert p.shape == (1, llama.n_heads, T, T)
            np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
            assert (p >= 0).all() and (np.triu(p, 1) == 0).all()
        with llama.trace(ids, capture=False) as untouched:
            pass
        np.testing.assert_array_equal(np.array(untouched.logits), plain)
    # a batch of texts: padded rows equal each text alone. The "." keeps every text non-blank
    # (a blank text is an InputError, tests/test_model.py), so this check runs on every example.
    texts = [llama.tokenizer.decode(r) + "." for r in rows]
    with llama.trace(texts, capture=[0]) as batch:
        pass
    for i, text in enumerate(texts):
        with llama.trace(text, capture=[0]) as single:
            pass
        n = batch.lengths[i]
        assert n == single.tokens.shape[1]
        np.testing.assert_allclose(
            np.array(batch.attention[0][i, :, :n, :n]), single.attention[0][0], atol=1e-5
        )


# ---- widget ------------------------------------------------------------------------------------
TEXTS = ["The cat sat on the mat. The cat sat.", "Ça va? 🐱 日本", "<s>a</s>"]
BAD_TEXTS = ["", "   ", "word " * 600]
KINDS = ["induction", "previous_token", "duplicate_token", "current_token"]
head = st.tuples(st.integers(-1, 2), st.integers(-1, 4)).map(list)
steps = st.one_of(
    st.tuples(st.just("text"), st.sampled_from(TEXTS + BAD_TEXTS)),
    st.tuples(st.just("kind"), st.sampled_from(KINDS + ["nope", ""])),
    st.tuples(st.just("selection"), st.lists(head, max_size=3)),
    st.tuples(st.just("focus"), st.one_of(st.just([]), head)),
    st.tuples(st.just("select"), st.tuples(head, st.booleans())),
)


def check_consistent(w: HeadWidget, page: FakeFrontEnd) -> None:
    """Everything a view asking now is sent belongs to the current text, kind, selection and
    focus."""
    L, H = w.shape
    assert w.status["state"] in ("done", "error")
    heads = [tuple(h) for h in w.selection]
    assert len(set(heads)) == len(heads) and all(0 <= a < L and 0 <= b < H for a, b in heads)
    rid = page.request(want=["tokens", "grid", "pattern", "ablation"])
    assert page.answer(rid)["ok"], page.answer(rid)
    got = page.result(rid)
    assert w.scores.shape == (L, H) == got["grid"]["values"].shape
    assert got["grid"]["kind"] == w.kind and got["grid"]["text"] in (None, w.text)
    assert got["tokens"]["text"] == w.text
    T = len(got["tokens"]["tokens"])
    if w.focus:
        pattern = got["pattern"]
        assert [pattern["layer"], pattern["head"]] == w.focus and pattern["text"] == w.text
        assert w.focused_pattern.shape == (T, T) == pattern["values"].shape
        np.testing.assert_allclose(w.focused_pattern.sum(-1), 1.0, atol=2e-2)
    else:
        assert got["pattern"] == {}
    assert got["ablation"]["text"] == w.text
    assert sorted(map(tuple, got["ablation"]["heads"])) == sorted(heads)


@MODEL_RUNS
@given(st.lists(st.tuples(st.booleans(), steps), min_size=1, max_size=10))
def test_random_widget_updates_never_leave_it_inconsistent(llama, plan):
    w = HeadWidget(llama, text=TEXTS[0])
    page = FakeFrontEnd(w)
    check_consistent(w, page)
    for from_front, (name, value) in plan:
        if from_front and name != "select":
            before = {k: getattr(w, k) for k in ("text", "kind", "selection", "focus")}
            rid = page.request({name: value}, ["grid", "pattern", "ablation"])
            answer = page.answer(rid)  # errors are answered, never raised
            if not answer["ok"]:
                assert w.status == {"state": "error", "message": answer["error"]}
                assert {k: getattr(w, k) for k in before} == before
        elif name == "select":
            try:
                w.select(*value[0], add=value[1])
            except WidgetInputError as err:
                assert "out of range" in str(err) and w.status["state"] == "error"
        else:
            try:
                setattr(w, name, value)
            except WidgetInputError as err:
                assert str(err) == w.status["message"] and w.status["state"] == "error"
        check_consistent(w, page)
