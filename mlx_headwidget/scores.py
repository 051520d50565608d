"""Head scores: how much of a head's attention follows one rule (previous token, induction, ...).

A pattern A[..., i, j] is the attention of query row i to key j (causal: j <= i, rows sum to 1).
Every function takes a numpy or mx array, never modifies it, and returns
    (T, T) -> float,   (H, T, T) -> float64 array (H,),
    (B, H, T, T) -> (H,): the mean over the B sequences of each sequence's score (sequences where
    the score is undefined, NaN, are left out), as TransformerLens's detect_head does for a list.
Each kind defines target keys S_i for each query row i (see its docstring). The modes:
- "strict" (default): score = mean over counted rows i of sum_{j in S_i} A[i, j]. A row counts when
  S_i is non-empty and the row is not forced by the causal mask (it has >= 2 keys), so row 0 never
  counts. exclude_bos / exclude_current_token drop key 0 / key i from every row and renormalise:
  row score = sum_{j in S_i, kept} A[i, j] / sum_{j <= i, kept} A[i, j] (0 if nothing is left);
  rows with fewer than 2 kept keys or no kept target do not count.
- "tl_detector": TransformerLens head_detector.detect_head with error_measure="mul":
  A' = A with column 0 zeroed (exclude_bos) and the diagonal zeroed (exclude_current_token),
  score = sum_{i,j} A'[i, j] * D[i, j] / sum_{i,j} A'[i, j], D[i, j] = 1 for j in S_i. All rows
  count, row 0 included, so an ideal previous-token head scores (T - 1) / T.
- "stripe": the plain mean of A[i, j] over the one target cell of every row that has one (no
  exclusions): the diagonal means of the TransformerLens demos.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from .errors import ScoreTypeError, ScoreValueError, is_int

SCORE_KINDS = ("induction", "previous_token", "first_token", "current_token", "duplicate_token")
MODES = ("strict", "tl_detector", "stripe")


def _to_float64(pattern: Any) -> np.ndarray:
    if isinstance(pattern, mx.array):
        if pattern.dtype == mx.bfloat16:  # numpy has no bfloat16
            pattern = pattern.astype(mx.float32)
        return np.array(pattern, dtype=np.float64)
    try:
        a = np.asarray(pattern)
    except Exception as err:
        raise ScoreTypeError(f"pattern must be a numpy or mx array, got {type(pattern)}") from err
    if a.dtype.kind not in "biuf":
        raise ScoreTypeError(f"pattern must hold real numbers, got dtype {a.dtype}")
    return np.array(a, dtype=np.float64)  # always a copy: callers can never see a write


def validate_pattern(pattern: Any, *, check_rows: bool = False, atol: float = 1e-4) -> np.ndarray:
    """Check an attention pattern; return a float64 copy, (T, T) -> (1, T, T), else same shape.

    Accepts (T, T), (H, T, T) or (B, H, T, T). Raises ScoreValueError for another number of axes,
    non-square last axes, T = 0, NaN/inf, negative values, and (check_rows=True) any row whose sum
    differs from 1 by more than atol.
    """
    a = _to_float64(pattern)
    if not 2 <= a.ndim <= 4:
        raise ScoreValueError(
            f"pattern must be 2-D (T, T), 3-D (H, T, T) or 4-D (B, H, T, T), got shape {a.shape}"
        )
    if a.shape[-1] != a.shape[-2]:
        raise ScoreValueError(f"pattern must be square in its last two axes, got shape {a.shape}")
    if a.shape[-1] == 0 or a.size == 0:
        raise ScoreValueError(f"pattern is empty: shape {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        where = tuple(int(k) for k in np.argwhere(bad)[0])
        raise ScoreValueError(f"pattern has {int(bad.sum())} NaN/inf values, first at {where}")
    if (a < 0).any():
        where = tuple(int(k) for k in np.argwhere(a < 0)[0])
        raise ScoreValueError(f"pattern has negative values, e.g. {a[where]:.3g} at {where}")
    if check_rows:
        err = np.abs(a.sum(axis=-1) - 1.0)
        if (err > atol).any():
            where = tuple(int(k) for k in np.unravel_index(np.argmax(err), err.shape))
            raise ScoreValueError(
                f"pattern rows must sum to 1 (atol={atol}); row {where} sums to "
                f"{a.sum(axis=-1)[where]:.6g}"
            )
    return a[None] if a.ndim == 2 else a


def _check_options(mode: str, exclude_bos: bool, exclude_current_token: bool) -> None:
    if not isinstance(mode, str) or mode not in MODES:
        raise ScoreValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    for name, flag in (
        ("exclude_bos", exclude_bos),
        ("exclude_current_token", exclude_current_token),
    ):
        if not isinstance(flag, (bool, np.bool_)):
            raise ScoreTypeError(f"{name} must be True or False, got {flag!r}")
    if mode == "stripe" and (exclude_bos or exclude_current_token):
        raise ScoreValueError(
            "mode 'stripe' is a plain diagonal mean without exclude_bos/exclude_current_token; "
            "use mode 'strict' or 'tl_detector'"
        )


def _tokens(tokens: Any, T: int, B: int) -> np.ndarray:
    """Token ids as int64 (1 or B, T), checked against a pattern of B sequences of T positions."""
    if isinstance(tokens, mx.array):
        tokens = np.array(tokens)
    t = np.asarray(tokens)
    if t.dtype.kind not in "iu":
        raise ScoreTypeError(f"tokens must be integer ids, got dtype {t.dtype}")
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[1] != T or t.shape[0] not in (1, B):
        raise ScoreValueError(
            f"tokens of shape {np.shape(tokens)} do not match a pattern of {B} sequence(s) of "
            f"{T} positions: expected ({T},) or ({B}, {T})"
        )
    return t.astype(np.int64)


def _equal_earlier(t: np.ndarray, shift: int) -> np.ndarray:
    """(b, T, T) bool: cell (i, j) is set when 0 <= j - shift < i and t[j - shift] == t[i]."""
    T = t.shape[1]
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    src = np.clip(np.arange(T) - shift, 0, T - 1)
    same = t[:, None, src] == t[:, :, None]
    return same & (j - shift >= 0) & (j - shift < i)


def _score(
    A: np.ndarray,
    S: np.ndarray,
    mode: str,
    exclude_bos: bool,
    exclude_current_token: bool,
    ndim: int,
    what: str | None = None,
) -> float | np.ndarray:
    """Reduce patterns A (B, H, T, T) with target masks S (1 or B, T, T) to scores (see module doc).

    `what` names a position-based score: a score with no row to count is then an error, not NaN.
    """
    T = A.shape[-1]
    keys = np.tril(np.ones((T, T)))  # einsum on float masks: no (B, H, T, T) temporaries
    keys[:, 0] *= not exclude_bos
    keys[np.diag_indices(T)] *= not exclude_current_token
    with np.errstate(invalid="ignore", divide="ignore"):
        if mode == "tl_detector":
            D = np.tril(S) * keys  # TransformerLens zeroes excluded attention, then multiplies
            kept = np.triu(np.ones((T, T)), 1) + keys  # sum A' runs over the whole matrix
            per_seq = np.einsum("bhij,bij->bh", A, D) / np.einsum("bhij,ij->bh", A, kept)
        else:
            S = S * keys
            rows = S.any(axis=-1)
            if mode == "strict":
                rows = rows & (keys.sum(axis=-1) >= 2)
            hit = np.einsum("bhij,bij->bhi", A, S)
            if exclude_bos or exclude_current_token:
                left = np.einsum("bhij,ij->bhi", A, keys)
                hit = np.divide(hit, left, out=np.zeros_like(hit), where=left > 0)
            n = rows.sum(axis=-1)
            if what is not None and not n.all():
                raise ScoreValueError(
                    f"{what} has no row to score in a pattern of {T} positions (mode={mode!r}, "
                    f"exclude_bos={exclude_bos}, exclude_current_token={exclude_current_token})"
                )
            per_seq = np.einsum("bhi,bi->bh", hit, rows.astype(np.float64)) / n[:, None]
        defined = ~np.isnan(per_seq)
        out = np.where(defined, per_seq, 0.0).sum(axis=0) / defined.sum(axis=0)
    return float(out[0]) if ndim == 2 else out


def _prepare(pattern: Any, mode: str, exclude_bos: bool, exclude_current_token: bool):
    """Checked options and patterns as (B, H, T, T) float64, with the input's number of axes."""
    _check_options(mode, exclude_bos, exclude_current_token)
    a = validate_pattern(pattern)
    ndim = len(np.shape(pattern)) if not isinstance(pattern, mx.array) else pattern.ndim
    A = a if a.ndim == 4 else a[None]
    if A.shape[-1] < 2:
        raise ScoreValueError(
            f"a pattern of {A.shape[-1]} position is too short to score: it needs at least 2"
        )
    return A, ndim


def previous_token(
    pattern: Any,
    *,
    mode: str = "strict",
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
) -> float | np.ndarray:
    """Previous-token score: S_i = {i - 1}.

    pattern (T, T) -> float; (H, T, T) or (B, H, T, T) -> float64 (H,).
    strict and stripe: mean over rows i = 1..T-1 of A[i, i-1]; tl_detector: sum_i A[i, i-1] / sum A.
    """
    A, ndim = _prepare(pattern, mode, exclude_bos, exclude_current_token)
    S, what = targets("previous_token", A.shape[-1], mode=mode)
    return _score(A, S, mode, exclude_bos, exclude_current_token, ndim, what)


def first_token(
    pattern: Any,
    *,
    mode: str = "strict",
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
) -> float | np.ndarray:
    """First-token (BOS) score: S_i = {0}.

    pattern (T, T) -> float; (H, T, T) or (B, H, T, T) -> float64 (H,).
    strict: mean over rows i = 1..T-1 of A[i, 0]; stripe: mean over every row i = 0..T-1;
    tl_detector (TransformerLens has no such pattern; its formula with D = column 0):
    sum_i A[i, 0] / sum A.
    """
    A, ndim = _prepare(pattern, mode, exclude_bos, exclude_current_token)
    S, what = targets("first_token", A.shape[-1], mode=mode)
    return _score(A, S, mode, exclude_bos, exclude_current_token, ndim, what)


def current_token(
    pattern: Any,
    *,
    mode: str = "strict",
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
) -> float | np.ndarray:
    """Current-token score: S_i = {i}.

    pattern (T, T) -> float; (H, T, T) or (B, H, T, T) -> float64 (H,).
    strict: mean over rows i = 1..T-1 of A[i, i]; stripe: mean over every row i = 0..T-1;
    tl_detector (no TransformerLens pattern; same formula, D = identity): sum_i A[i, i] / sum A.
    """
    A, ndim = _prepare(pattern, mode, exclude_bos, exclude_current_token)
    S, what = targets("current_token", A.shape[-1], mode=mode)
    return _score(A, S, mode, exclude_bos, exclude_current_token, ndim, what)


def duplicate_token(
    pattern: Any,
    tokens: Any,
    *,
    mode: str = "strict",
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
) -> float | np.ndarray:
    """Duplicate-token score by token equality: S_i = {j < i : tokens[j] == tokens[i]}.

    pattern (T, T) -> float; (H, T, T) or (B, H, T, T) -> float64 (H,).
    tokens: ids (T,) or (B, T) aligned with the pattern. strict: mean over the rows with an earlier
    copy of their token of sum_{j in S_i} A[i, j] (NaN if no token repeats); tl_detector: as
    TransformerLens's "duplicate_token_head". No "stripe": it has no single diagonal.
    """
    A, ndim = _prepare(pattern, mode, exclude_bos, exclude_current_token)
    S, what = targets("duplicate_token", A.shape[-1], tokens=tokens, B=A.shape[0], mode=mode)
    return _score(A, S, mode, exclude_bos, exclude_current_token, ndim, what)


def _repeat_layout(T: int, n: int, prepend_bos: bool | None) -> tuple[bool, int]:
    """(bos, r) with T = bos + n * r and r >= 2."""
    if prepend_bos not in (None, True, False):
        raise ScoreTypeError(f"prepend_bos must be None, True or False, got {prepend_bos!r}")
    fits = [b for b in (True, False) if (T - b) % n == 0 and (T - b) // n >= 2]
    if prepend_bos is not None:
        fits = [b for b in fits if b == bool(prepend_bos)]
    if len(fits) == 1:
        return fits[0], (T - fits[0]) // n
    shape = {True: "[BOS] + x * r", False: "x * r", None: "[BOS] + x * r or x * r"}[prepend_bos]
    if fits:
        raise ScoreValueError(
            f"a pattern of {T} positions fits both [BOS] + x * r and x * r with seq_len={n}; "
            "pass prepend_bos=True or False"
        )
    raise ScoreValueError(
        f"a pattern of {T} positions is not {shape} with len(x) = seq_len = {n} and r >= 2 "
        f"(seq_len must be at most {(T - 1) // 2 if prepend_bos is not False else T // 2} here)"
    )


def induction(
    pattern: Any,
    tokens: Any = None,
    *,
    seq_len: int | None = None,
    prepend_bos: bool | None = None,
    mode: str = "strict",
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
) -> float | np.ndarray:
    """Induction score: attention to the token right after an earlier copy of the current token.

    pattern (T, T) -> float; (H, T, T) or (B, H, T, T) -> float64 (H,).
    Give exactly one of `tokens` (ids (T,) or (B, T)) or `seq_len` = n, for a pattern of
    [BOS] + x * r or x * r (r >= 2, len(x) = n; prepend_bos=None infers which from T).
    S_i = {j + 1 : j < i, tokens[j] == tokens[i]}; with seq_len, x's tokens are taken as distinct,
    so S_i = {i - n + 1, i - 2n + 1, ...} for the rows of every copy after the first.
    strict: mean over the rows with an earlier copy (with seq_len: the n * (r - 1) rows of later
    copies) of sum_{j in S_i} A[i, j]; NaN when no token of `tokens` repeats. tl_detector: as
    TransformerLens's "induction_head". stripe (seq_len only, prepend_bos not used): the
    TransformerLens demo's mean of the diagonal offset 1 - n, i.e. A[i, i - n + 1] for i = n-1..T-1.
    """
    A, ndim = _prepare(pattern, mode, exclude_bos, exclude_current_token)
    S, what = targets(
        "induction",
        A.shape[-1],
        tokens=tokens,
        B=A.shape[0],
        seq_len=seq_len,
        prepend_bos=prepend_bos,
        mode=mode,
    )
    return _score(A, S, mode, exclude_bos, exclude_current_token, ndim, what)


def targets(
    kind: str,
    T: int,
    *,
    tokens: Any = None,
    B: int = 1,
    seq_len: int | None = None,
    prepend_bos: bool | None = None,
    mode: str = "strict",
) -> tuple[np.ndarray, str | None]:
    """(S, what): the target keys of `kind` for patterns of T positions, S (1 or B, T, T) bool with
    S[b, i, j] set when key j is in S_i, and the name to report when no row can be scored (None:
    the score is NaN instead, as for token-based scores of text without repeats).

    `tokens` (token-based kinds): ids (T,) or (B, T); `seq_len`, `prepend_bos`: see induction.
    """
    if kind == "previous_token":
        return np.eye(T, k=-1, dtype=bool)[None], kind
    if kind == "current_token":
        return np.eye(T, dtype=bool)[None], kind
    if kind == "first_token":
        S = np.zeros((1, T, T), dtype=bool)
        S[..., 0] = True
        return S, kind
    if kind == "duplicate_token":
        if mode == "stripe":
            raise ScoreValueError(
                "mode 'stripe' is not defined for duplicate_token (it has no single diagonal); "
                "use mode 'strict' or 'tl_detector'"
            )
        return _equal_earlier(_tokens(tokens, T, B), shift=0), None
    if kind != "induction":
        raise ScoreValueError(
            f"unknown score kind {kind!r}; choose one of {', '.join(SCORE_KINDS)}"
        )
    if (tokens is None) == (seq_len is None):
        raise ScoreValueError("induction needs exactly one of tokens or seq_len")
    if tokens is not None:
        if mode == "stripe":
            raise ScoreValueError(
                "mode 'stripe' needs seq_len (a repeated block), not tokens; "
                "use mode 'strict' or 'tl_detector' with tokens"
            )
        S = _equal_earlier(_tokens(tokens, T, B), shift=1)
        return S, None
    if not is_int(seq_len):
        raise ScoreTypeError(f"seq_len must be an integer, got {seq_len!r}")
    if not 1 <= seq_len < T:
        raise ScoreValueError(
            f"seq_len must be in 1..{T - 1} for a pattern of {T} positions, got {seq_len}"
        )
    if mode == "stripe":
        S = np.eye(T, k=1 - int(seq_len), dtype=bool)[None]
    else:
        bos, r = _repeat_layout(T, int(seq_len), prepend_bos)
        ids = np.concatenate([np.full(int(bos), -1), np.tile(np.arange(seq_len), r)])
        S = _equal_earlier(ids[None], shift=1)
    return S, "induction"


_SCORERS = {
    "induction": induction,
    "previous_token": previous_token,
    "first_token": first_token,
    "current_token": current_token,
    "duplicate_token": duplicate_token,
}
_USES_TOKENS = ("induction", "duplicate_token")


def score(kind: str, pattern: Any, tokens: Any = None, **kwargs: Any) -> float | np.ndarray:
    """Score of one kind (see SCORE_KINDS): the function of that name with these arguments.

    pattern (T, T) -> float; (H, T, T) or (B, H, T, T) -> float64 (H,).
    `tokens` goes to induction and duplicate_token; the position-based kinds do not use it.
    """
    if not isinstance(kind, str) or kind not in _SCORERS:
        raise ScoreValueError(
            f"unknown score kind {kind!r}; choose one of {', '.join(SCORE_KINDS)}"
        )
    if kind in _USES_TOKENS:
        return _SCORERS[kind](pattern, tokens, **kwargs)
    return _SCORERS[kind](pattern, **kwargs)


class RowScorer:
    """score_heads() fed by blocks of query rows: the same formulas (see `_score`), read from the
    target cells and the row sums of each block only, so no whole pattern need exist.

        scorer = RowScorer(kind, T, tokens=..., mode=..., ...)   # options as score_heads
        for start in range(0, T, b):
            scorer.add(start, pattern[:, start:start + b])       # (H, b, T) in MLX, in order
        scorer.result()                                          # float64 (H,)

    The rows must be causal (zero above the diagonal), as captured patterns are. `reset()`
    starts again for another pattern of the same sequence (another layer): the target cells are
    built once per sequence.
    """

    def __init__(self, kind: str, T: int, tokens: Any = None, **kwargs: Any):
        mode = kwargs.pop("mode", "strict")
        exclude_bos = kwargs.pop("exclude_bos", False)
        exclude_current_token = kwargs.pop("exclude_current_token", False)
        _check_options(mode, exclude_bos, exclude_current_token)
        if kind != "induction" and kwargs:
            raise ScoreTypeError(f"{kind} got unexpected options {sorted(kwargs)}")
        if kind not in _USES_TOKENS:
            tokens = None  # as score(): the position-based kinds do not use tokens
        if T < 2:
            raise ScoreValueError(
                f"a pattern of {T} position is too short to score: it needs at least 2"
            )
        S, what = targets(kind, T, tokens=tokens, mode=mode, **kwargs)
        keys = np.tril(np.ones((T, T), dtype=bool))
        keys[:, 0] &= not exclude_bos
        keys[np.diag_indices(T)] &= not exclude_current_token
        cells = S[0] & keys  # keys is lower-triangular, as the tl_detector formula needs
        self.T, self.mode = T, mode
        self.rows_i, self.cols_j = np.nonzero(cells)  # row-major: rows_i is sorted
        self.keys = keys if exclude_bos or exclude_current_token else None
        rows = cells.any(axis=-1)
        if mode == "strict":
            rows &= keys.sum(axis=-1) >= 2
        self.rows = rows.astype(np.float64)
        if what is not None and mode != "tl_detector" and not rows.any():
            raise ScoreValueError(
                f"{what} has no row to score in a pattern of {T} positions (mode={mode!r}, "
                f"exclude_bos={exclude_bos}, exclude_current_token={exclude_current_token})"
            )
        self.reset()

    def reset(self) -> None:
        """Forget the rows added so far."""
        self._picked: list[np.ndarray] = []  # (H, cells of the block), in row order
        self._left: list[np.ndarray] = []  # (H, b): each row's attention to its kept keys
        self._next = 0

    @property
    def complete(self) -> bool:
        """True once all T rows are added."""
        return self._next == self.T

    def add(self, start: int, A: mx.array) -> None:
        """Rows start .. start + b - 1 of one sequence's pattern: A (H, b, T) in MLX."""
        if A.ndim != 3 or A.shape[-1] != self.T or start != self._next:
            raise ScoreValueError(
                f"expected rows from {self._next} as (H, b, {self.T}), got rows from {start} "
                f"with shape {tuple(A.shape)}"
            )
        b = A.shape[1]
        if A.dtype != mx.float32:
            A = A.astype(mx.float32)
        lo, hi = np.searchsorted(self.rows_i, [start, start + b])
        i = mx.array((self.rows_i[lo:hi] - start).astype(np.int32))
        j = mx.array(self.cols_j[lo:hi].astype(np.int32))
        picked = A[:, i, j] if hi > lo else mx.zeros((A.shape[0], 0))
        if self.keys is not None:
            left = (A * mx.array(self.keys[start : start + b])).sum(-1)
        elif self.mode == "tl_detector":
            left = A.sum(-1)
        else:
            left = mx.zeros((A.shape[0], 0))
        self._picked.append(np.array(picked, dtype=np.float64))
        self._left.append(np.array(left, dtype=np.float64))
        self._next = start + b

    def result(self) -> np.ndarray:
        """float64 (H,): the score of each head over the rows added (all T of them)."""
        if self._next != self.T:
            raise ScoreValueError(f"rows 0..{self.T - 1} are needed, got 0..{self._next - 1}")
        picked = np.concatenate(self._picked, axis=1)
        left = np.concatenate(self._left, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.mode == "tl_detector":
                return picked.sum(axis=-1) / left.sum(axis=-1)
            T = self.T
            hit = np.stack([np.bincount(self.rows_i, weights=v, minlength=T) for v in picked])
            hit = hit + 0.0
            if self.keys is not None:
                hit = np.divide(hit, left, out=np.zeros_like(hit), where=left > 0)
            return hit @ self.rows / self.rows.sum()


def score_heads(kind: str, pattern: mx.array, tokens: Any = None, **kwargs: Any) -> np.ndarray:
    """score(kind, pattern, tokens, **kwargs) for one sequence's patterns (H, T, T) held in MLX,
    as captured: float64 (H,), equal to score() up to float32 rounding.

    Reads only the target cells and row sums in MLX, so a long pattern is never copied to
    numpy (score() makes a float64 copy, 2x its float32 size, plus einsum work). The pattern is
    not validated and must be causal (zero above the diagonal), as captured patterns are; use
    score() for patterns from elsewhere. Options: mode, exclude_bos, exclude_current_token, and
    seq_len / prepend_bos for induction.
    """
    if not isinstance(pattern, mx.array) or pattern.ndim != 3:
        raise ScoreValueError(f"score_heads takes an mx array (H, T, T), got {type(pattern)}")
    block = 128  # with key exclusions the work memory is H x block x T, not another pattern
    scorer = RowScorer(kind, pattern.shape[-1], tokens, **kwargs)
    for start in range(0, pattern.shape[-1], block):
        scorer.add(start, pattern[:, start : start + block])
    return scorer.result()
