"""Head scores: exact values on ideal and uniform heads, TransformerLens parity, properties."""

from __future__ import annotations

import itertools

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlx_headwidget import scores
from mlx_headwidget.scores import ScoreTypeError, ScoreValueError

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

FLAGS = list(itertools.product([False, True], repeat=2))  # (exclude_bos, exclude_current_token)


# ---------- synthetic heads ----------


def causal_softmax(logits: np.ndarray) -> np.ndarray:
    T = logits.shape[-1]
    z = np.where(np.tril(np.ones((T, T), dtype=bool)), logits, -np.inf)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def random_pattern(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 3.0):
    return causal_softmax(scale * rng.standard_normal(shape))


def uniform(T: int) -> np.ndarray:
    return np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]


def one_hot_rows(T: int, key_of_row) -> np.ndarray:
    a = np.zeros((T, T))
    for i in range(T):
        a[i, key_of_row(i)] = 1.0
    return a


def ideal_induction(n: int, r: int = 2, bos: bool = True, rest=lambda i: 0) -> np.ndarray:
    """Rows of copies 2..r on the token after the previous copy; other rows at key rest(i)."""
    T = bos + n * r
    return one_hot_rows(T, lambda i: i - n + 1 if i >= bos + n else rest(i))


def harmonic(lo: int, hi: int) -> float:
    """sum_{i=lo}^{hi} 1/(i+1)."""
    return sum(1.0 / (i + 1) for i in range(lo, hi + 1))


# ---------- exact values ----------


@pytest.mark.parametrize("T", [2, 3, 8])
def test_ideal_previous_token_head(T):
    a = one_hot_rows(T, lambda i: max(i - 1, 0))
    assert scores.previous_token(a) == 1.0
    assert scores.previous_token(a, mode="stripe") == 1.0
    # D has T-1 ones on the sub-diagonal; sum(A) = T (row 0 puts its 1 on key 0).
    assert scores.previous_token(a, mode="tl_detector") == pytest.approx((T - 1) / T)


def test_ideal_previous_token_head_tl_exclude_bos():
    # Column 0 zeroed: rows 0 and 1 vanish; the other T-2 rows keep their 1 on the target.
    a = one_hot_rows(6, lambda i: max(i - 1, 0))
    assert scores.previous_token(a, mode="tl_detector", exclude_bos=True) == 1.0
    # strict with exclude_bos: row 1 (target = BOS) no longer counts, rows 2..5 score 1.
    assert scores.previous_token(a, exclude_bos=True) == 1.0


@pytest.mark.parametrize("mode", scores.MODES)
def test_ideal_first_and_current_token_heads(mode):
    T = 6
    assert scores.first_token(one_hot_rows(T, lambda i: 0), mode=mode) == 1.0
    assert scores.current_token(np.eye(T), mode=mode) == 1.0
    assert scores.first_token(np.eye(T), mode=mode) == pytest.approx(
        {"strict": 0.0, "stripe": 1 / T, "tl_detector": 1 / T}[mode]
    )


@pytest.mark.parametrize("n", [1, 2, 5])
def test_ideal_induction_head_bos_x_x(n):
    a = ideal_induction(n)  # rows of [BOS] + copy 1 on BOS
    T = 2 * n + 1
    assert scores.induction(a, seq_len=n, prepend_bos=True) == 1.0
    # D = one 1 per second-copy row (n); sum(A) = T.
    assert scores.induction(a, seq_len=n, prepend_bos=True, mode="tl_detector") == pytest.approx(
        n / T
    )
    # Diagonal 1-n covers rows n-1..2n (n+2 cells): row n-1 -> key 0 (BOS: 1 here),
    # row n -> key 1 (this row looks at BOS: 0), rows n+1..2n -> 1 each.
    assert scores.induction(a, seq_len=n, mode="stripe") == pytest.approx((n + 1) / (n + 2))


@pytest.mark.parametrize(("n", "r", "bos"), [(4, 2, False), (3, 3, True), (3, 4, False)])
def test_ideal_induction_head_layouts_inferred(n, r, bos):
    a = ideal_induction(n, r, bos, rest=lambda i: i)
    assert scores.induction(a, seq_len=n) == 1.0
    ids = np.concatenate([np.full(int(bos), 99), np.tile(np.arange(10, 10 + n), r)])
    assert scores.induction(a, ids) == 1.0


def test_induction_attention_to_any_earlier_copy_counts_strict():
    # x * 3 without BOS, n = 2: rows of copy 3 look at the token after copy 1's occurrence.
    n = 2
    a = one_hot_rows(6, lambda i: i - 2 * n + 1 if i >= 2 * n else (i - n + 1 if i >= n else i))
    assert scores.induction(a, seq_len=n) == 1.0
    assert scores.induction(a, seq_len=n, mode="stripe") < 1.0  # the stripe only sees copy r-1


@pytest.mark.parametrize("T", [2, 5, 9])
def test_uniform_attention_position_scores(T):
    u = uniform(T)
    strict = np.mean([1 / (i + 1) for i in range(1, T)])
    every_row = np.mean([1 / (i + 1) for i in range(T)])
    for fn in (scores.first_token, scores.previous_token, scores.current_token):
        assert fn(u) == pytest.approx(strict)
    # One target per row: the weight on the targets over sum(A) = T.
    assert scores.previous_token(u, mode="tl_detector") == pytest.approx(harmonic(1, T - 1) / T)
    assert scores.first_token(u, mode="tl_detector") == pytest.approx(harmonic(0, T - 1) / T)
    assert scores.current_token(u, mode="tl_detector") == pytest.approx(harmonic(0, T - 1) / T)
    assert scores.previous_token(u, mode="stripe") == pytest.approx(strict)
    assert scores.first_token(u, mode="stripe") == pytest.approx(every_row)
    assert scores.current_token(u, mode="stripe") == pytest.approx(every_row)


def test_uniform_attention_with_exclusions():
    T = 7
    u = uniform(T)
    # strict, exclude_bos: row i keeps i of its i+1 keys, so the target weighs (1/(i+1)) / (i/(i+1))
    # = 1/i; row 1 loses its target (BOS) for previous_token and is forced for current_token.
    expected = np.mean([1 / i for i in range(2, T)])
    assert scores.previous_token(u, exclude_bos=True) == pytest.approx(expected)
    assert scores.current_token(u, exclude_bos=True) == pytest.approx(expected)
    # exclude_current_token: row 1 keeps key 0 only (forced, not counted); the others score 1/i.
    assert scores.previous_token(u, exclude_current_token=True) == pytest.approx(expected)
    # tl_detector: every row loses 1/(i+1) from sum(A); with exclude_bos row 1's target is gone.
    kept = sum(i / (i + 1) for i in range(T))
    assert scores.previous_token(u, mode="tl_detector", exclude_bos=True) == pytest.approx(
        harmonic(2, T - 1) / kept
    )
    assert scores.previous_token(
        u, mode="tl_detector", exclude_current_token=True
    ) == pytest.approx(harmonic(1, T - 1) / kept)
    assert scores.first_token(u, mode="tl_detector", exclude_bos=True) == 0.0


def test_uniform_attention_induction():
    n = 4
    u = uniform(2 * n + 1)
    assert scores.induction(u, seq_len=n) == pytest.approx(
        np.mean([1 / (i + 1) for i in range(n + 1, 2 * n + 1)])
    )
    assert scores.induction(u, seq_len=n, mode="tl_detector") == pytest.approx(
        harmonic(n + 1, 2 * n) / (2 * n + 1)
    )
    assert scores.induction(u, seq_len=n, mode="stripe") == pytest.approx(
        np.mean([1 / (i + 1) for i in range(n - 1, 2 * n + 1)])
    )


def test_token_scores_by_hand():
    tokens = np.array([5, 1, 5, 5, 1])
    u = uniform(5)
    # duplicate: row 2 -> {0}: 1/3; row 3 -> {0, 2}: 2/4; row 4 -> {1}: 1/5 (rows 0, 1: no copy).
    assert scores.duplicate_token(u, tokens) == pytest.approx((1 / 3 + 2 / 4 + 1 / 5) / 3)
    assert scores.duplicate_token(u, tokens, mode="tl_detector") == pytest.approx(
        (1 / 3 + 2 / 4 + 1 / 5) / 5
    )
    # induction on a previous-token head: row 2 -> {1} hit; row 3 -> {1, 3} (A on 2): miss;
    # row 4 -> {2} (A on 3): miss.
    prev = one_hot_rows(5, lambda i: max(i - 1, 0))
    assert scores.induction(prev, tokens) == pytest.approx(1 / 3)
    assert scores.duplicate_token(prev, tokens) == pytest.approx(1 / 3)  # row 3 on key 2: hit
    # Repeated neighbours: TransformerLens's induction pattern keeps the diagonal (source of row 2
    # is key 2 itself, right after key 1), so a current-token head scores there.
    assert scores.induction(np.eye(3), [3, 7, 7]) == 1.0
    assert scores.induction(np.eye(3), [3, 7, 7], mode="tl_detector") == pytest.approx(1 / 3)


def test_no_repeated_token_is_nan_strict_and_zero_tl():
    u = uniform(4)
    assert np.isnan(scores.duplicate_token(u, [1, 2, 3, 4]))
    assert np.isnan(scores.induction(u, [1, 2, 3, 4]))
    assert scores.duplicate_token(u, [1, 2, 3, 4], mode="tl_detector") == 0.0


# ---------- TransformerLens itself ----------


@pytest.fixture(scope="module")
def tl():
    import torch
    from transformer_lens import head_detector

    return torch, head_detector


def tl_score(tl, a: np.ndarray, tokens: np.ndarray, head: str, eb: bool, ec: bool) -> float:
    torch, hd = tl
    make = getattr(hd, f"get_{head}_detection_pattern")
    return hd.compute_head_attention_similarity_score(
        torch.tensor(a),
        make(torch.tensor(tokens)[None]),
        exclude_bos=eb,
        exclude_current_token=ec,
        error_measure="mul",
    )


@pytest.mark.parametrize(("eb", "ec"), FLAGS)
def test_tl_detector_equals_transformer_lens(tl, eb, ec):
    rng = np.random.default_rng(0)
    for T in (2, 3, 9):
        pattern = random_pattern(rng, (3, T, T))
        tokens = rng.integers(0, 3, size=T)
        opts = dict(mode="tl_detector", exclude_bos=eb, exclude_current_token=ec)
        ours = {
            "previous_token_head": scores.previous_token(pattern, **opts),
            "duplicate_token_head": scores.duplicate_token(pattern, tokens, **opts),
            "induction_head": scores.induction(pattern, tokens, **opts),
        }
        for head, got in ours.items():
            want = [tl_score(tl, pattern[h], tokens, head, eb, ec) for h in range(3)]
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, err_msg=f"{head} T={T}")


def test_tl_detector_seq_len_equals_transformer_lens_on_distinct_tokens(tl):
    rng = np.random.default_rng(1)
    n = 5
    tokens = np.concatenate([[0], np.tile(rng.permutation(np.arange(1, 50))[:n], 2)])
    pattern = random_pattern(rng, (4, 2 * n + 1, 2 * n + 1))
    want = [tl_score(tl, pattern[h], tokens, "induction_head", False, False) for h in range(4)]
    np.testing.assert_allclose(
        scores.induction(pattern, seq_len=n, mode="tl_detector"), want, rtol=1e-12
    )


def test_batch_is_mean_of_per_sequence_scores_like_detect_head_on_a_list(tl):
    rng = np.random.default_rng(2)
    T = 8
    pattern = random_pattern(rng, (3, 2, T, T))
    tokens = rng.integers(0, 3, size=(3, T))
    got = scores.induction(pattern, tokens, mode="tl_detector", exclude_bos=True)
    want = np.mean(
        [[tl_score(tl, pattern[b, h], tokens[b], "induction_head", True, False) for h in range(2)]
         for b in range(3)],
        axis=0,
    )  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-12)


# ---------- consistency ----------

CALLS = [
    ("previous_token", {}),
    ("first_token", {}),
    ("current_token", {}),
    ("duplicate_token", {"tokens": [4, 1, 4, 1, 1, 4]}),
    ("induction", {"tokens": [4, 1, 4, 1, 1, 4]}),
    ("induction", {"seq_len": 3}),
]


# exclusions that leave every kind rows to score under strict
SOME_FLAGS = {"first_token": (False, True), "current_token": (True, False)}


def modes_for(kind: str, kw: dict) -> list[str]:
    return [m for m in scores.MODES if m != "stripe" or "tokens" not in kw]


@pytest.mark.parametrize(("kind", "kw"), CALLS)
def test_heads_match_single_calls_and_mx_matches_numpy(kind, kw):
    pattern = random_pattern(np.random.default_rng(3), (4, 6, 6)).astype(np.float32)
    before = pattern.copy()
    for mode in modes_for(kind, kw):
        some = SOME_FLAGS.get(kind, (True, True))
        flags = [(False, False)] if mode == "stripe" else [(False, False), some]
        for eb, ec in flags:
            opts = dict(kw, mode=mode, exclude_bos=eb, exclude_current_token=ec)
            whole = scores.score(kind, pattern, **opts)
            assert whole.shape == (4,) and whole.dtype == np.float64
            singles = [scores.score(kind, pattern[h], **opts) for h in range(4)]
            assert all(isinstance(s, float) for s in singles)
            np.testing.assert_allclose(whole, singles, rtol=1e-13)
            mx_opts = {k: mx.array(v) if k == "tokens" else v for k, v in opts.items()}
            np.testing.assert_array_equal(scores.score(kind, mx.array(pattern), **mx_opts), whole)
            batch = np.stack([pattern, pattern[::-1]])
            np.testing.assert_allclose(
                scores.score(kind, batch, **opts), (whole + whole[::-1]) / 2, rtol=1e-13
            )
    np.testing.assert_array_equal(pattern, before)  # never written


def test_bfloat16_mx_input_and_direct_functions_match_dispatcher():
    p = random_pattern(np.random.default_rng(4), (2, 5, 5))
    got = scores.previous_token(mx.array(p).astype(mx.bfloat16))
    want = scores.previous_token(np.array(mx.array(p).astype(mx.bfloat16).astype(mx.float32)))
    np.testing.assert_array_equal(got, want)
    assert scores.score("first_token", p, tokens=[1, 2, 3, 4, 5]).tolist() == (
        scores.first_token(p).tolist()
    )


def test_seq_len_induction_equals_token_induction_on_distinct_tokens():
    p = random_pattern(np.random.default_rng(5), (3, 13, 13))
    ids = np.concatenate([[0], np.tile([7, 3, 9, 4], 3)])
    for mode in ("strict", "tl_detector"):
        for eb, ec in FLAGS:
            opts = dict(mode=mode, exclude_bos=eb, exclude_current_token=ec)
            np.testing.assert_allclose(
                scores.induction(p, seq_len=4, **opts), scores.induction(p, ids, **opts)
            )


# ---------- properties ----------


@st.composite
def patterns(draw, min_T: int = 2):
    H = draw(st.integers(1, 3))
    T = draw(st.integers(min_T, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.0, 1.0, 5.0, 20.0]))
    return random_pattern(np.random.default_rng(seed), (H, T, T), scale)


@settings(max_examples=60, deadline=None)
@given(
    p=patterns(),
    mode=st.sampled_from(scores.MODES),
    flags=st.sampled_from(FLAGS),
    seed=st.integers(0, 1000),
)
def test_every_score_in_unit_interval_and_permutes_with_heads(p, mode, flags, seed):
    H, T, _ = p.shape
    if mode == "stripe":
        flags = (False, False)
    eb, ec = flags
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 3, size=T)
    perm = rng.permutation(H)
    calls = [(k, {}) for k in ("previous_token", "first_token", "current_token")]
    if mode != "stripe":
        calls += [("duplicate_token", {"tokens": tokens}), ("induction", {"tokens": tokens})]
    if T >= 4:
        calls.append(("induction", {"seq_len": T // 2, "prepend_bos": T % 2 == 1}))
    for kind, kw in calls:
        opts = dict(kw, mode=mode, exclude_bos=eb, exclude_current_token=ec)
        try:
            s = scores.score(kind, p, **opts)
        except ScoreValueError as err:  # strict, when exclusions leave no row: a stated error
            assert mode == "strict" and (eb or ec) and "no row to score" in str(err)
            continue
        if np.isnan(s).any():
            # Defined as NaN only: strict token scores with no repeated token left to score, and
            # tl_detector when every key is excluded (T = 2, both exclusions), as TransformerLens.
            no_rows = (
                "tokens" in kw and mode == "strict" and (len(set(tokens.tolist())) == T or eb or ec)
            )
            all_excluded = mode == "tl_detector" and eb and ec and T == 2
            assert (no_rows or all_excluded) and np.isnan(s).all(), (kind, kw, mode, flags, s)
            continue
        assert np.all((s >= -1e-12) & (s <= 1 + 1e-12)), (kind, kw, s)
        np.testing.assert_allclose(scores.score(kind, p[perm], **opts), s[perm], rtol=1e-12)


# ---------- bad input ----------


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (np.ones((3, 4)) / 4, r"square in its last two axes, got shape \(3, 4\)"),
        (np.ones(4), r"must be 2-D \(T, T\), 3-D \(H, T, T\) or 4-D"),
        (np.ones((1, 1, 1, 2, 2)), r"got shape \(1, 1, 1, 2, 2\)"),
        (np.zeros((0, 0)), "pattern is empty"),
        (np.array([[1.0, 0], [np.nan, 0.5]]), r"1 NaN/inf values, first at \(1, 0\)"),
        (np.array([[1.0, 0], [0.5, np.inf]]), r"NaN/inf values, first at \(1, 1\)"),
        (np.array([[1.0, 0], [1.5, -0.5]]), r"negative values, e.g. -0.5 at \(1, 1\)"),
        (np.ones((1, 1)), "pattern of 1 position is too short to score: it needs at least 2"),
    ],
)
def test_bad_patterns(pattern, message):
    with pytest.raises(ScoreValueError, match=message):
        scores.previous_token(pattern)


def test_validate_pattern_rows_and_types():
    rows = np.array([[1.0, 0.0], [0.7, 0.2]])
    assert scores.validate_pattern(rows).shape == (1, 2, 2)
    with pytest.raises(ScoreValueError, match=r"rows must sum to 1 \(atol=0.0001\); row \(1,\)"):
        scores.validate_pattern(rows, check_rows=True)
    u = uniform(3)
    out = scores.validate_pattern(u, check_rows=True)
    assert out.shape == (1, 3, 3) and out.dtype == np.float64
    out[...] = 7.0  # a copy: the caller's array is untouched
    np.testing.assert_array_equal(u, uniform(3))
    assert scores.validate_pattern(np.stack([u[None]] * 2)).shape == (2, 1, 3, 3)
    assert scores.validate_pattern(mx.array(u)).shape == (1, 3, 3)
    with pytest.raises(ScoreTypeError, match="must hold real numbers, got dtype <U1"):
        scores.validate_pattern(np.array([["a"]]))
    with pytest.raises(ScoreTypeError, match="must hold real numbers"):
        scores.first_token(None)


def test_bad_kind_mode_and_options():
    u = uniform(4)
    with pytest.raises(ScoreValueError, match="unknown score kind 'copying'; choose one of induct"):
        scores.score("copying", u)
    with pytest.raises(ScoreValueError, match="unknown mode 'abs'; choose one of strict, tl_det"):
        scores.first_token(u, mode="abs")
    with pytest.raises(ScoreTypeError, match="exclude_bos must be True or False, got 'yes'"):
        scores.first_token(u, exclude_bos="yes")
    with pytest.raises(ScoreValueError, match="'stripe' is a plain diagonal mean without"):
        scores.current_token(u, mode="stripe", exclude_current_token=True)
    with pytest.raises(ScoreValueError, match="'stripe' is not defined for duplicate_token"):
        scores.duplicate_token(u, [1, 2, 1, 2], mode="stripe")
    with pytest.raises(ScoreValueError, match="first_token has no row to score .*exclude_bos=True"):
        scores.first_token(u, exclude_bos=True)
    with pytest.raises(ScoreValueError, match="current_token has no row to score"):
        scores.current_token(u, exclude_current_token=True)


def test_bad_induction_arguments():
    u = uniform(7)
    with pytest.raises(ScoreValueError, match="exactly one of tokens or seq_len"):
        scores.induction(u)
    with pytest.raises(ScoreValueError, match="exactly one of tokens or seq_len"):
        scores.induction(u, [1] * 7, seq_len=3)
    with pytest.raises(ScoreValueError, match=r"seq_len must be in 1..6 .* 7 positions, got 9"):
        scores.induction(u, seq_len=9)
    with pytest.raises(ScoreValueError, match=r"7 positions is not \[BOS\] \+ x \* r or x \* r"):
        scores.induction(u, seq_len=4)
    with pytest.raises(ScoreValueError, match=r"7 positions is not x \* r with .* seq_len = 3"):
        scores.induction(u, seq_len=3, prepend_bos=False)
    with pytest.raises(ScoreValueError, match="fits both .* pass prepend_bos=True or False"):
        scores.induction(u, seq_len=1)
    assert scores.induction(one_hot_rows(7, lambda i: i), seq_len=1, prepend_bos=False) == 1.0
    with pytest.raises(ScoreTypeError, match="seq_len must be an integer, got 2.0"):
        scores.induction(u, seq_len=2.0)
    with pytest.raises(ScoreTypeError, match="seq_len must be an integer, got True"):
        scores.induction(u, seq_len=True)
    with pytest.raises(ScoreValueError, match="'stripe' needs seq_len"):
        scores.induction(u, [1] * 7, mode="stripe")


def test_bad_tokens():
    u = uniform(4)
    with pytest.raises(ScoreTypeError, match="tokens must be integer ids, got dtype float64"):
        scores.duplicate_token(u, [1.0, 2.0, 1.0, 2.0])
    with pytest.raises(ScoreValueError, match=r"tokens of shape \(3,\) do not match .*\(4,\)"):
        scores.duplicate_token(u, [1, 2, 1])
    with pytest.raises(ScoreValueError, match=r"expected \(4,\) or \(2, 4\)"):
        scores.induction(np.stack([u[None], u[None]]), np.zeros((3, 4), dtype=int))


# ---------- score_heads: the MLX reduction used by scans ----------


def _outcome(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (ScoreValueError, ScoreTypeError) as err:
        return type(err)


def _score_cases(kind: str, T: int, rng: np.random.Generator) -> list[dict]:
    if kind == "duplicate_token":
        return [{"tokens": rng.integers(0, 4, size=T)}, {"tokens": np.arange(T)}]
    if kind != "induction":
        return [{}]
    cases = [{"tokens": rng.integers(0, 4, size=T)}, {"tokens": np.arange(T)}]
    for n in (1, 2, 3, 10):
        cases += [{"seq_len": n, "prepend_bos": bos} for bos in (True, False, None)]
    return cases


@pytest.mark.parametrize("T", [2, 3, 21, 301])  # 301 > the row block of the exclusion sums
@pytest.mark.parametrize("kind", scores.SCORE_KINDS)
def test_score_heads_equals_the_numpy_reference(kind, T):
    """Every kind, mode, exclusion and repeat layout: the same value (or the same error)."""
    rng = np.random.default_rng(T)
    pattern = random_pattern(rng, (3, T, T)).astype(np.float32)
    for mode, (bos, cur) in itertools.product(scores.MODES, FLAGS):
        if mode == "stripe" and (bos or cur):
            continue
        opts = {"mode": mode, "exclude_bos": bos, "exclude_current_token": cur}
        for case in _score_cases(kind, T, rng):
            want = _outcome(scores.score, kind, pattern, **case, **opts)
            got = _outcome(scores.score_heads, kind, mx.array(pattern), **case, **opts)
            if isinstance(want, type) or isinstance(got, type):
                assert got is want, (mode, bos, cur, case)
                continue
            assert np.array_equal(np.isnan(got), np.isnan(want)), (mode, bos, cur, case)
            np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"{mode} {case}")


def test_score_heads_on_ideal_heads_gives_one():
    T, n = 21, 10
    ideal = np.stack(
        [
            one_hot_rows(T, lambda i: max(i - 1, 0)),
            one_hot_rows(T, lambda i: 0),
            one_hot_rows(T, lambda i: i),
            one_hot_rows(T, lambda i: i - n + 1 if i > n else 0),  # [BOS] + x + x
        ]
    ).astype(np.float32)
    got = [
        scores.score_heads(kind, mx.array(ideal), **kw)[k]
        for k, (kind, kw) in enumerate(
            [
                ("previous_token", {}),
                ("first_token", {}),
                ("current_token", {}),
                ("induction", {"seq_len": n}),
            ]
        )
    ]
    np.testing.assert_allclose(got, 1.0, atol=1e-7)


def test_score_heads_bad_input():
    with pytest.raises(ScoreValueError, match="mx array"):
        scores.score_heads("induction", np.eye(3)[None], seq_len=1)
    with pytest.raises(ScoreValueError, match="unknown score kind"):
        scores.score_heads("nope", mx.ones((1, 3, 3)))
    with pytest.raises(ScoreTypeError, match="unexpected options"):
        scores.score_heads("previous_token", mx.ones((1, 3, 3)), seq_len=1)
    with pytest.raises(ScoreValueError, match="unknown mode"):
        scores.score_heads("previous_token", mx.ones((1, 3, 3)), mode="loose")


@pytest.mark.parametrize("block", [1, 4, 21])
def test_row_scorer_by_blocks_equals_score_heads(block):
    rng = np.random.default_rng(block)
    pattern = mx.array(random_pattern(rng, (3, 21, 21)).astype(np.float32))
    ids = rng.integers(0, 4, size=21)
    for kind, kw in [("induction", {"seq_len": 10}), ("induction", {"tokens": ids}),
                     ("duplicate_token", {"tokens": ids}), ("previous_token", {})]:  # fmt: skip
        for mode, (bos, cur) in itertools.product(("strict", "tl_detector"), FLAGS):
            opts = {"mode": mode, "exclude_bos": bos, "exclude_current_token": cur, **kw}
            scorer = scores.RowScorer(kind, 21, **opts)
            for _ in range(2):  # reset() starts over: the same result the second time
                scorer.reset()
                for start in range(0, 21, block):
                    assert not scorer.complete
                    scorer.add(start, pattern[:, start : start + block])
                assert scorer.complete
                want = scores.score_heads(kind, pattern, **opts)
                np.testing.assert_allclose(scorer.result(), want, atol=1e-6, equal_nan=True)


def test_row_scorer_wants_every_row_in_order():
    pattern = mx.array(np.tril(np.ones((2, 6, 6), dtype=np.float32)))
    scorer = scores.RowScorer("previous_token", 6)
    with pytest.raises(ScoreValueError, match="expected rows from 0"):
        scorer.add(2, pattern[:, 2:4])
    scorer.add(0, pattern[:, :3])
    with pytest.raises(ScoreValueError, match=r"rows 0..5 are needed, got 0..2"):
        scorer.result()
    with pytest.raises(ScoreValueError, match=r"expected rows from 3 as \(H, b, 6\)"):
        scorer.add(3, pattern[:, 3:, :5])
