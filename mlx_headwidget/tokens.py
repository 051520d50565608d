"""Text <-> token ids, and validation of everything a trace accepts as input.

Functions take an `InterpretableModel` (they read its `tokenizer`, `bos_token_id`, `pad_token_id`,
`vocab_size` and `context_length`) and never run the model, so bad input fails before any forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from .errors import InputError, InputTypeError

INPUT_KINDS = (
    "a string, a list of strings, a list of token ids, or an mx.array of shape (T,) or (B, T)"
)


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise InputTypeError(f"expected a string, got {type(text).__name__}: {text!r:.80}")
    if not text.strip():
        raise InputError(f"text {text!r} is empty or whitespace only; give at least one character")
    return text


def encode(model, text: str, prepend_bos: bool = True) -> list[int]:
    """Token ids of one text: the tokenizer's ids without its special tokens, then BOS in front.

    The tokenizer adds no special tokens of its own, so BOS appears once whether or not it would
    add it itself; special tokens written in the text (e.g. "<s>") are kept as those tokens.
    A model without a BOS token gets none, whatever `prepend_bos` says.
    """
    text = _check_text(text)
    ids = list(model.tokenizer.encode(text, add_special_tokens=False))
    if prepend_bos and model.bos_token_id is not None:
        ids = [int(model.bos_token_id), *ids]
    if not ids:
        raise InputError(f"text {text!r} encodes to no tokens")
    return ids


def to_tokens(model, text: str | Sequence[str], prepend_bos: bool = True) -> mx.array:
    """Ids of a text (1, T), or of a list of texts (B, T) right-padded with the pad id; int32."""
    return prepare_inputs(model, text, prepend_bos)[0]


def prepare_inputs(model, inputs: Any, prepend_bos: bool = True) -> tuple[mx.array, list[int]]:
    """Validate `inputs` and return (token ids (B, T) int32, real length of each row).

    Texts are encoded with `encode`; a list of texts is right-padded with `model.pad_token_id`.
    Ids given directly are used as they are (no BOS added) and count as unpadded.
    """
    if isinstance(inputs, str):
        rows = [encode(model, inputs, prepend_bos)]
    elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, str) for x in inputs):
        rows = [encode(model, text, prepend_bos) for text in inputs]
    else:
        return _ids_from_array(model, inputs)
    lengths = [len(r) for r in rows]
    T = max(lengths)
    _check_length(model, T)
    ids = np.full((len(rows), T), model.pad_token_id, dtype=np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return mx.array(ids), lengths


def _ids_from_array(model, inputs: Any) -> tuple[mx.array, list[int]]:
    if isinstance(inputs, mx.array):
        if not mx.issubdtype(inputs.dtype, mx.integer):
            raise InputTypeError(f"token ids must be integers, got an mx.array of {inputs.dtype}")
        ids = np.array(inputs)
    elif isinstance(inputs, (list, tuple, np.ndarray)):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) == 0:
                raise InputError("inputs are an empty list; give at least one token id or text")
            bad = [x for x in inputs if not isinstance(x, (int, np.integer)) or isinstance(x, bool)]
            if bad:
                raise InputTypeError(
                    f"a list of inputs must hold only texts or only integer ids; got {bad[0]!r} "
                    f"({type(bad[0]).__name__}). Accepted: {INPUT_KINDS}"
                )
        ids = np.asarray(inputs)
        if not np.issubdtype(ids.dtype, np.integer):
            raise InputTypeError(f"token ids must be integers, got an array of {ids.dtype}")
    else:
        raise InputTypeError(
            f"cannot run inputs of type {type(inputs).__name__}; use {INPUT_KINDS}"
        )
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2:
        raise InputError(f"token ids must have shape (T,) or (B, T), got {tuple(ids.shape)}")
    B, T = ids.shape
    if B == 0 or T == 0:
        raise InputError(f"token ids of shape {tuple(ids.shape)} are empty; need B >= 1 and T >= 1")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= model.vocab_size:
        bad = low if low < 0 else high
        raise InputError(
            f"token id {bad} is outside the vocabulary: valid ids are 0..{model.vocab_size - 1}"
        )
    _check_length(model, T)
    return mx.array(ids.astype(np.int32)), [T] * B


def _check_length(model, T: int) -> None:
    if model.context_length is not None and T > model.context_length:
        raise InputError(
            f"sequence of {T} tokens is longer than the model's context of "
            f"{model.context_length} tokens; shorten it to at most {model.context_length}"
        )


def token_to_str(model, token_id: int) -> str:
    """The text of one token id (special tokens are shown, e.g. '<s>'); decoded once per model
    (kept in `model.token_strings` when the model has that dict)."""
    if isinstance(token_id, mx.array):
        token_id = token_id.item()
    if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)):
        raise InputTypeError(f"token id must be an integer, got {token_id!r}")
    if not 0 <= token_id < model.vocab_size:
        raise InputError(f"token id {token_id} is outside the vocabulary 0..{model.vocab_size - 1}")
    cache = getattr(model, "token_strings", None)
    text = None if cache is None else cache.get(int(token_id))
    if text is None:
        text = model.tokenizer.decode([int(token_id)])
        if cache is not None:
            cache[int(token_id)] = text
    return text


def to_str_tokens(model, text_or_ids: Any, prepend_bos: bool = True) -> list:
    """One string per token: of a text (encoded as `to_tokens` does) or of ids (T,) / (1, T).

    A batch (B > 1 rows, or a list of texts) gives one list per row, without the padding.
    """
    ids, lengths = prepare_inputs(model, text_or_ids, prepend_bos)
    rows = [
        [token_to_str(model, int(i)) for i in row[:n]]
        for row, n in zip(ids.tolist(), lengths, strict=True)
    ]
    texts = isinstance(text_or_ids, (list, tuple)) and isinstance(text_or_ids[0], str)
    return rows if texts or len(rows) > 1 else rows[0]


def get_token_predictions(logits: mx.array, top_k: int = 5) -> list[int]:
    """The `top_k` token ids with the highest logits, best first; `logits` has shape (vocab,)."""
    values = np.array(mx.array(logits).astype(mx.float32))
    while values.ndim > 1 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 1:
        raise InputError(f"logits must have shape (vocab,), got {tuple(np.shape(logits))}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise InputTypeError(f"top_k must be an integer, got {top_k!r}")
    if not 1 <= top_k <= values.shape[0]:
        raise InputError(f"top_k={top_k} is out of range: valid 1..{values.shape[0]}")
    return [int(i) for i in np.argsort(-values, kind="stable")[:top_k]]


def single_token(model, token: Any, name: str = "token") -> int:
    """The id of one token: an id in the vocabulary, or a text that encodes to exactly one token
    (without BOS; e.g. " sat" with its leading space). `name` is used in error messages."""
    if isinstance(token, mx.array):
        if token.size != 1:
            raise InputError(f"{name} must be one token id, got an mx.array of shape {token.shape}")
        token = token.item()
    if isinstance(token, str):
        ids = list(model.tokenizer.encode(token, add_special_tokens=False)) if token else []
        if len(ids) != 1:
            pieces = [token_to_str(model, i) for i in ids]
            raise InputError(
                f"{name} {token!r} is {len(ids)} tokens {pieces}, not one; pass the text of one "
                "token (mind a leading space) or its id"
            )
        return int(ids[0])
    if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
        raise InputTypeError(f"{name} must be a token id or a one-token text, got {token!r}")
    if not 0 <= token < model.vocab_size:
        raise InputError(f"{name} id {token} is outside the vocabulary 0..{model.vocab_size - 1}")
    return int(token)
