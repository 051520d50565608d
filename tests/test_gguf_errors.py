"""GGUF files that must be refused: each gives one `GGUFError` naming the file and what is wrong,
raised by the loader before it returns anything (no model is built from a part of a file)."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest
from gguf_files import Spec, write_model

from mlx_headwidget import InterpretableModel
from mlx_headwidget.errors import GGUFError, ModelLoadError

TYPES = {"token_embd": "Q8_0", "blk.0.attn_q": "Q4_0", "blk.1.ffn_up": "Q4_1"}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("good") / "good.gguf", Spec(types=TYPES))


def refused(path, *message: str) -> GGUFError:
    with pytest.raises(GGUFError) as err:
        InterpretableModel(path)
    text = str(err.value)
    assert text.startswith(f"{path}: "), text
    for part in message:
        assert part in text, text
    return err.value


def test_the_good_file_loads(good):
    assert InterpretableModel(good).n_layers == 2


@pytest.mark.parametrize("fraction", [0.999, 0.6, 0.01])
def test_a_truncated_file(good, tmp_path, fraction):
    data = good.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * fraction)])
    if fraction > 0.5:  # the header is whole, tensor data is missing
        refused(cut, "needs bytes", f"but the file has {cut.stat().st_size} bytes", "truncated")
    else:
        refused(cut, "the file ends inside the header", "truncated or not a GGUF file")


def test_not_a_gguf_file(tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    refused(text, "not a GGUF file (it starts with b'hell', not b'GGUF')")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    refused(empty, "the file is empty")
    old = tmp_path / "old.gguf"
    old.write_bytes(b"GGUF" + struct.pack("<IQQ", 1, 0, 0))
    refused(old, "GGUF version 1 is not supported (2 and 3 are)")


def test_corrupt_metadata(tmp_path):
    # one key/value pair whose value type (99) does not exist
    key = b"general.architecture"
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, len(key)) + key + struct.pack("<I", 99))
    refused(bad, "metadata 'general.architecture' has an unknown value type 99")


def test_unsupported_architecture(tmp_path):
    path = write_model(tmp_path / "g.gguf", Spec(), arch="gemma2")
    refused(path, "architecture 'gemma2' is not supported; supported: llama, qwen2, qwen3")


def test_unsupported_tensor_types(tmp_path):
    path = write_model(tmp_path / "q5.gguf", Spec(types={"blk.1.ffn_up": "Q5_0"}))
    refused(path, "tensor 'blk.1.ffn_up.weight' is stored as Q5_0", "supported types: F32, F16,")
    # MLX would load this one without an error, with wrong weights
    path = write_model(tmp_path / "q4k.gguf", Spec(ffn=256, types={"blk.0.ffn_down": "Q4_K"}))
    refused(path, "tensor 'blk.0.ffn_down.weight' is stored as Q4_K", "or loads it wrong")


def test_missing_and_unexpected_tensors(tmp_path):
    path = write_model(tmp_path / "m.gguf", Spec(types=TYPES), drop=("blk.1.ffn_up.weight",))
    refused(path, "the file lacks 1 tensor(s) a llama model needs: blk.1.ffn_up.weight")
    extra = {"blk.0.ffn_extra": np.ones((64, 64))}
    path = write_model(tmp_path / "x.gguf", Spec(types=TYPES), extra=extra)
    refused(path, "tensor 'blk.0.ffn_extra.weight' is not part of a llama model")


def test_shapes_that_contradict_the_metadata(tmp_path):
    path = write_model(tmp_path / "s.gguf", Spec(types=TYPES), ffn_metadata=96)
    refused(path, "tensor 'blk.0.ffn_gate.weight' has shape (128, 64), the config (from the "
            "metadata) needs (96, 64)")  # fmt: skip


def test_unsupported_pre_tokenizer(tmp_path):
    path = write_model(tmp_path / "t.gguf", Spec(), tokenizer_pre="falcon")
    refused(path, "pre-tokenizer 'falcon', which is not supported", "smollm")


def test_a_missing_gguf_path_is_a_load_error(tmp_path):
    missing = tmp_path / "nowhere" / "model.gguf"
    with pytest.raises(ModelLoadError, match=re.escape(f"no GGUF file {str(missing)!r} exists")):
        InterpretableModel(missing)
