"""The tokenizer in a GGUF file's metadata (`tokenizer.ggml.*`), built with `tokenizers`.

Two kinds, as llama.cpp runs them:

- `gpt2`: byte-level BPE. The file holds the vocabulary (in the byte alphabet) and the merges, and
  `tokenizer.ggml.pre` names how text is split into words before merging; each name we accept maps
  to the split llama.cpp uses for it (`PRE_TOKENIZERS`).
- `llama`: SentencePiece BPE. The file holds the vocabulary and a score per token; a pair of
  adjacent pieces merges into the token their concatenation spells, highest score first, so the
  merge list is every such pair ranked by that score. A space is written "▁" and one is put in
  front of the text and after each special token (`add_space_prefix`, default on); characters
  outside the vocabulary fall back to their UTF-8 bytes (<0x..> tokens).

Token types (`tokenizer.ggml.token_type`): 3 = control (special, e.g. "<|im_start|>"), 4 = user
defined (matched whole in the text), 1 = normal, 6 = byte. BOS/EOS/UNK/padding ids, whether BOS or
EOS is added (`add_bos_token`: default on for `llama`, off for `gpt2`) and the chat template come
from the same metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

from .errors import GGUFError

# The splits of llama.cpp's pre-tokenizers (regular expressions on the text; GPT-2 contractions are
# case-sensitive, Llama 3's and Qwen2's are not).
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_LLAMA3 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLITS = {
    "gpt2": [_GPT2],
    "digits": [r"\p{N}", _GPT2],  # every digit on its own, then GPT-2's split
    "llama3": [_LLAMA3],
    "qwen2": [_QWEN2],
}
PRE_TOKENIZERS: dict[str, str] = {
    **dict.fromkeys(("gpt2", "mpt", "olmo", "jais"), "gpt2"),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell"), "digits"),
    **dict.fromkeys(("llama3", "llama-bpe", "llama-v3", "smaug-bpe", "dbrx"), "llama3"),
    **dict.fromkeys(("qwen2", "stablelm2", "deepseek-r1-qwen"), "qwen2"),
}
"""`tokenizer.ggml.pre` values of byte-level files we read -> the split they use."""
# llama.cpp takes a word whole when the vocabulary has it, before any merge, for Llama 3's splits
_IGNORE_MERGES = {"llama3"}
_NORMAL, _CONTROL, _USER_DEFINED = 1, 3, 4


def _byte_level(meta: dict[str, Any], path: Path) -> Tokenizer:
    pre = meta.get("tokenizer.ggml.pre")
    if pre not in PRE_TOKENIZERS:
        raise GGUFError(
            f"{path}: byte-level tokenizer with pre-tokenizer {pre!r}, which is not supported "
            f"(its text splitting is unknown here); supported: {', '.join(sorted(PRE_TOKENIZERS))}"
        )
    split = PRE_TOKENIZERS[pre]
    vocab = {token: i for i, token in enumerate(meta["tokenizer.ggml.tokens"])}
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    bad = next((m for m in merges if len(m) != 2 or m[0] not in vocab or m[1] not in vocab), None)
    if bad is not None:
        raise GGUFError(f"{path}: merge {' '.join(bad)!r} names tokens outside the vocabulary")
    tok = Tokenizer(models.BPE(vocab, merges, ignore_merges=split in _IGNORE_MERGES))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in _SPLITS[split]]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def sentencepiece_merges(tokens: list[str], scores: np.ndarray, types: np.ndarray) -> list:
    """Every pair of normal tokens whose concatenation is a normal token, best score first.

    Ties (same score) are ranked by the merged token's id, then by the left piece's length.
    """
    ids = {t: i for i, t in enumerate(tokens) if types[i] == _NORMAL}
    ranked = []
    for token, i in ids.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ids and right in ids:
                ranked.append((-float(scores[i]), i, cut, left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _sentencepiece(meta: dict[str, Any], path: Path) -> Tokenizer:
    tokens = meta["tokenizer.ggml.tokens"]
    n = len(tokens)
    scores = np.asarray(meta.get("tokenizer.ggml.scores", np.zeros(n)), dtype=np.float64)
    types = np.asarray(meta.get("tokenizer.ggml.token_type", np.full(n, _NORMAL)))
    if len(scores) != n or len(types) != n:
        raise GGUFError(f"{path}: {n} tokens but {len(scores)} scores and {len(types)} token types")
    unk = meta.get("tokenizer.ggml.unknown_token_id")
    tok = Tokenizer(
        models.BPE(
            {t: i for i, t in enumerate(tokens)},
            sentencepiece_merges(tokens, scores, types),
            unk_token=tokens[unk] if unk is not None else None,
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    # a space in front of the text and of every piece of text after a special token, as
    # llama.cpp and SentencePiece do (a normalizer, which runs on each piece between specials)
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    spaces = [normalizers.Replace(" ", "▁")]
    tok.normalizer = normalizers.Sequence(([normalizers.Prepend("▁")] if prefix else []) + spaces)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tok


def _special_ids(meta: dict[str, Any], n: int, path: Path) -> dict[str, int | None]:
    ids = {}
    for name in ("bos", "eos", "unknown", "padding", "eot"):
        value = meta.get(f"tokenizer.ggml.{name}_token_id")
        if value is not None and not 0 <= int(value) < n:
            raise GGUFError(f"{path}: {name} token id {value} is outside the vocabulary 0..{n - 1}")
        ids[name] = None if value is None else int(value)
    return ids


def build_tokenizer(meta: dict[str, Any], path: Path, context_length: int | None = None):
    """A `transformers.PreTrainedTokenizerFast` for the tokenizer in GGUF metadata `meta`.

    Raises `GGUFError` for a tokenizer kind or pre-tokenizer that is not supported.
    """
    from transformers import PreTrainedTokenizerFast

    kind = meta.get("tokenizer.ggml.model")
    if "tokenizer.ggml.tokens" not in meta:
        raise GGUFError(f"{path}: the file has no tokenizer (no tokenizer.ggml.tokens)")
    if kind == "gpt2":
        tok = _byte_level(meta, path)
    elif kind == "llama":
        tok = _sentencepiece(meta, path)
    else:
        raise GGUFError(
            f"{path}: tokenizer kind {kind!r} is not supported; supported: 'gpt2' (byte-level "
            "BPE) and 'llama' (SentencePiece BPE)"
        )
    tokens = meta["tokenizer.ggml.tokens"]
    types = np.asarray(meta.get("tokenizer.ggml.token_type", np.full(len(tokens), _NORMAL)))
    if len(types) != len(tokens):
        raise GGUFError(f"{path}: {len(tokens)} tokens but {len(types)} token types")
    control = [t for t, k in zip(tokens, types, strict=True) if k == _CONTROL]
    user = [t for t, k in zip(tokens, types, strict=True) if k == _USER_DEFINED]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    ids = _special_ids(meta, len(tokens), path)
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    for key, on in (("bos", add_bos), ("eos", add_eos)):
        if on and ids[key] is None:
            raise GGUFError(f"{path}: the tokenizer adds {key.upper()} but the file gives no id")
    ends = {key: ids[key] for key, on in (("bos", add_bos), ("eos", add_eos)) if on}
    if ends:
        bos = [tokens[ends["bos"]]] if "bos" in ends else []
        eos = [tokens[ends["eos"]]] if "eos" in ends else []
        tok.post_processor = processors.TemplateProcessing(
            single=[*bos, "$A", *eos],
            pair=[*bos, "$A", *eos, *bos, "$B", *eos],
            special_tokens=[(tokens[i], i) for i in set(ends.values())],
        )

    def name(key: str) -> str | None:
        return None if ids[key] is None else tokens[ids[key]]

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=name("bos"),
        eos_token=name("eos"),
        unk_token=name("unknown"),
        pad_token=name("padding"),
        model_max_length=context_length or int(1e30),
    )
    hf.chat_template = meta.get("tokenizer.chat_template")
    return hf
