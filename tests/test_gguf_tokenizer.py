"""The tokenizer built from a GGUF file's metadata gives the ids of the tokenizer the file was made
from, and those of transformers' own GGUF tokenizer where both follow llama.cpp.

Byte-level BPE: the vocabulary and merges of `make_tokenizer` (a `tokenizers` BPE), with each
pre-tokenizer name we accept. SentencePiece BPE: a model trained by the `sentencepiece` library
itself, whose own `encode` is the reference (llama.cpp's SentencePiece tokenizer follows it, and
tokenizes each piece of text between special tokens as a new text, with its leading space).
"""

from __future__ import annotations

import io

import gguf
import numpy as np
import pytest
import sentencepiece as spm
from gguf_files import VOCAB, write_tokenizer
from transformers import AutoTokenizer

from mlx_headwidget.gguf_file import read_header
from mlx_headwidget.gguf_tokenizer import build_tokenizer
from mlx_headwidget.testing import make_tokenizer, training_text

PLAIN = [
    "The cat sat on the mat. The cat",
    "naïve café — Zürich, Ελλάδα, 東京, emoji 🤖🎉 and ünïcödé",
    "spaces:  two,   three,     five;\t\ttabs",
    "lines\n\nand\r\nmore\n\n\nend\n",
    "don't WE'LL it's they've I'd",
    "trailing spaces   ",
]
DIGITS = ["numbers 12345 and 3.14159, 2024-11-28"]
LEADING = [" leading space", "   three leading spaces"]
SPECIAL = ["<s>special</s> tokens <s>", "x<s>y</s>z", "</s>\n<s> a"]
ADDED = ["call <|tool|>now, then<think> a bit", "<think><|tool|>"]  # in the tokenizer-only files


def _tokenizer_file(path, fill) -> str:
    writer = gguf.GGUFWriter(str(path), "llama")
    fill(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def ours(path):
    header = read_header(path)
    return build_tokenizer(header.metadata, header.path)


def transformers_of(path):
    from pathlib import Path

    return AutoTokenizer.from_pretrained(Path(path).parent, gguf_file=Path(path).name)


@pytest.fixture(scope="module")
def byte_level(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    return {
        pre: _tokenizer_file(folder / f"{pre}.gguf", lambda w, p=pre: write_tokenizer(w, p, True))
        for pre in ("gpt2", "llama-bpe", "qwen2", "smollm")
    }


def test_byte_level_equals_the_original_and_transformers(byte_level):
    """pre = gpt2 is the split `make_tokenizer` was trained and runs with (GPT-2's regex)."""
    original, mine = make_tokenizer(VOCAB), ours(byte_level["gpt2"])
    theirs = transformers_of(byte_level["gpt2"])
    for text in PLAIN + DIGITS + LEADING + SPECIAL:
        expected = original.encode(text).ids  # BOS added by its post-processor
        assert mine.encode(text) == expected == theirs.encode(text), text
        assert mine.decode(expected, skip_special_tokens=True) == text.replace("<s>", "").replace(
            "</s>", ""
        )
    for text in ADDED:  # a control token is special, a user-defined one is kept whole
        assert mine.encode(text) == theirs.encode(text), text
        assert {VOCAB, VOCAB + 1} <= set(mine.encode(text))
    assert (
        mine.decode(mine.encode(ADDED[0]), skip_special_tokens=True)
        == "call now, then<think> a bit"
    )
    assert (mine.bos_token_id, mine.eos_token_id) == (1, 0)
    assert mine.convert_ids_to_tokens([0, 1]) == ["</s>", "<s>"]


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "smollm"])
def test_pre_tokenizer_variants_equal_transformers(byte_level, pre):
    """transformers knows the Llama 3 and Qwen2 splits; for smollm (digits one by one, then GPT-2's
    split) it uses GPT-2's, so it only agrees on texts without digits."""
    mine, theirs = ours(byte_level[pre]), transformers_of(byte_level[pre])
    texts = PLAIN + LEADING + SPECIAL + ADDED + (DIGITS if pre != "smollm" else [])
    for text in texts:
        assert mine.encode(text) == theirs.encode(text), (pre, text)
    # where the variants differ: digits. Llama 3 takes up to 3 at a time, Qwen2 and smollm one
    words = [w for w, _ in mine.backend_tokenizer.pre_tokenizer.pre_tokenize_str("x 12345")]
    expected = {"llama-bpe": ["x", "Ġ", "123", "45"], "qwen2": ["x", "Ġ", *"12345"]}
    assert words == expected.get(pre, ["x", "Ġ", *"12345"])


@pytest.fixture(scope="module")
def sentencepiece_file(tmp_path_factory):
    """A SentencePiece BPE trained on the builtins' docstrings as Llama's was configured (byte
    fallback, digits split, a space prefix, whitespace kept), written as llama.cpp's converter
    writes one: pieces, scores, and types (1 normal, 2 unknown, 3 control, 6 byte)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([line for line in training_text().splitlines() if line.strip()]),
        model_writer=model,
        vocab_size=600,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    ids = range(sp.get_piece_size())
    kinds = [
        2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1 for i in ids
    ]

    def fill(w: gguf.GGUFWriter) -> None:
        w.add_tokenizer_model("llama")
        w.add_token_list([sp.id_to_piece(i) for i in ids])
        w.add_token_scores([sp.get_score(i) for i in ids])
        w.add_token_types(kinds)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)  # add_bos_token unset: llama.cpp adds BOS for SentencePiece

    return sp, _tokenizer_file(tmp_path_factory.mktemp("spm") / "spm.gguf", fill)


def _llama_cpp_ids(sp, text: str) -> list[int]:
    """BOS, then each piece between special tokens encoded by SentencePiece as a text of its own
    (so with its own space prefix), special tokens as their ids: llama.cpp's rule."""
    ids, rest = [1], text
    while rest:
        at = {s: rest.find(s) for s in ("<s>", "</s>") if s in rest}
        if not at:
            return ids + sp.encode(rest)
        special = min(at, key=at.get)
        ids += sp.encode(rest[: at[special]]) if at[special] else []
        ids.append(sp.piece_to_id(special))
        rest = rest[at[special] + len(special) :]
    return ids


def test_sentencepiece_equals_the_sentencepiece_library(sentencepiece_file):
    sp, path = sentencepiece_file
    mine = ours(path)
    assert any(sp.is_byte(i) for i in mine.encode("emoji 🤖🎉"))  # byte fallback is exercised
    for text in PLAIN + DIGITS + LEADING + SPECIAL:
        assert mine.encode(text) == _llama_cpp_ids(sp, text), text
    for text in PLAIN + DIGITS + LEADING:
        assert mine.decode(mine.encode(text), skip_special_tokens=True) == text
    assert (mine.bos_token_id, mine.eos_token_id, mine.unk_token_id) == (1, 2, 0)


def test_sentencepiece_equals_transformers_where_it_follows_llama_cpp(sentencepiece_file):
    """transformers puts no space in front of text after a special token and does not double the
    one of a text starting with a space: llama.cpp and SentencePiece do (tested above)."""
    _, path = sentencepiece_file
    mine, theirs = ours(path), transformers_of(path)
    for text in PLAIN + DIGITS:
        assert mine.encode(text) == theirs.encode(text), text


def test_chat_template_and_flags_are_kept(byte_level, tmp_path):
    mine = ours(byte_level["gpt2"])
    rendered = mine.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert rendered == "<s>Hi</s>"

    def no_bos(w: gguf.GGUFWriter) -> None:
        write_tokenizer(w)
        w.add_add_eos_token(True)

    path = _tokenizer_file(tmp_path / "flags.gguf", no_bos)
    assert ours(path).encode("The cat") == [1, *make_tokenizer(VOCAB).encode("The cat").ids[1:], 0]


def test_an_unknown_tokenizer_kind_is_refused(tmp_path):
    from mlx_headwidget.errors import GGUFError

    def bert(w: gguf.GGUFWriter) -> None:
        w.add_tokenizer_model("bert")
        w.add_token_list(["[PAD]", "a"])

    path = _tokenizer_file(tmp_path / "bert.gguf", bert)
    with pytest.raises(
        GGUFError, match="tokenizer kind 'bert' is not supported; supported: 'gpt2'"
    ):
        ours(path)
    assert np.array_equal(read_header(path).metadata["tokenizer.ggml.tokens"], ["[PAD]", "a"])
