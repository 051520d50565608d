"""Loading, architecture facts, tokens, and input validation of `InterpretableModel`."""

from __future__ import annotations

import json
import re
import shutil
import socket

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
import numpy as np
import pytest
from helpers import TEXT

from mlx_headwidget import InterpretableModel
from mlx_headwidget import interventions as iv
from mlx_headwidget import model as model_module
from mlx_headwidget.errors import (
    BundledModelMissingError,
    InputError,
    InputTypeError,
    ModelLoadError,
    TraceError,
)

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS


def test_architecture_facts_match_config(case, checkpoint, models):
    model = models(case)
    config = json.loads((checkpoint(case) / "config.json").read_text())
    n_heads = config.get("num_attention_heads", config.get("n_head"))
    hidden = config.get("hidden_size", config.get("n_embd"))
    assert model.architecture == config["model_type"]
    assert model.n_layers == config.get("num_hidden_layers", config.get("n_layer"))
    assert model.n_heads == n_heads
    assert model.n_kv_heads == config.get("num_key_value_heads", n_heads)
    assert model.d_head == config.get("head_dim", hidden // n_heads)
    assert model.vocab_size == config["vocab_size"]
    assert model.context_length == config.get("max_position_embeddings", config.get("n_positions"))
    assert model.bos_token_id == config["bos_token_id"] == 1
    assert model.attention(0) is model.model.layers[0][model.attention_name]


def test_loaded_pair_behaves_like_the_folder(checkpoint, llama):
    pair = InterpretableModel(mlx_lm.load(str(checkpoint("llama"))))
    facts = ("architecture", "n_layers", "n_heads", "n_kv_heads", "d_head", "vocab_size",
             "context_length", "bos_token_id")  # fmt: skip
    assert [getattr(pair, f) for f in facts] == [getattr(llama, f) for f in facts]
    with pair.trace(TEXT) as a, llama.trace(TEXT) as b:
        pass
    np.testing.assert_array_equal(np.array(a.logits), np.array(b.logits))


def test_to_tokens_prepends_bos_once(llama):
    ids = llama.to_tokens(TEXT)
    assert ids.dtype == mx.int32 and ids.ndim == 2 and ids.shape[0] == 1
    assert ids[0].tolist() == llama.tokenizer.encode(TEXT)  # the tokenizer adds BOS itself
    assert ids[0].tolist().count(llama.bos_token_id) == 1
    no_bos = llama.to_tokens(TEXT, prepend_bos=False)
    assert no_bos[0].tolist() == ids[0, 1:].tolist()


def test_a_list_of_texts_is_right_padded(llama):
    texts = ["The cat", "The cat sat on the mat"]
    ids = llama.to_tokens(texts)
    a, b = (llama.to_tokens(t)[0].tolist() for t in texts)
    assert ids.shape == (2, len(b))
    assert ids[0].tolist() == a + [llama.pad_token_id] * (len(b) - len(a))
    assert ids[1].tolist() == b
    with llama.trace(texts, capture=False) as trace:
        pass
    assert trace.lengths == [len(a), len(b)]


def test_str_tokens_and_token_strings(llama):
    strings = llama.to_str_tokens(TEXT)
    assert strings[0] == "<s>" and "".join(strings[1:]) == TEXT
    ids = llama.to_tokens(TEXT)
    assert llama.to_str_tokens(ids) == llama.to_str_tokens(ids[0]) == strings
    assert llama.to_str_tokens(ids[0].tolist()) == strings
    assert llama.to_str_tokens(["The cat", TEXT]) == [llama.to_str_tokens("The cat"), strings]
    assert llama.token_to_str(llama.bos_token_id) == "<s>"
    assert llama.token_to_str(mx.array(ids[0, 1])) == strings[1]
    with pytest.raises(
        InputError, match=re.escape("token id 512 is outside the vocabulary 0..511")
    ):
        llama.token_to_str(512)


def test_token_strings_are_decoded_once_per_model(checkpoint):
    model = InterpretableModel(checkpoint("llama"))
    assert model.token_strings == {}
    ids = model.to_tokens(TEXT)[0].tolist()
    first = model.to_str_tokens(TEXT)
    assert model.token_strings == {i: model.tokenizer.decode([i]) for i in ids}
    decoded = []
    model.tokenizer.decode = lambda ids: decoded.append(ids) or "changed"
    assert model.to_str_tokens(TEXT) == first and decoded == []  # all from the cache
    assert model.token_to_str(max(ids) + 1) == "changed"


def test_get_token_predictions(llama):
    logits = mx.array([0.1, 3.0, -2.0, 3.0, 2.5])
    assert llama.get_token_predictions(logits, top_k=3) == [1, 3, 4]
    assert llama.get_token_predictions(logits[None], top_k=1) == [1]
    with llama.trace(TEXT) as trace:
        out = llama.output.save()
    best = llama.get_token_predictions(out[0, -1], top_k=5)
    assert best[0] == int(np.argmax(np.array(trace.logits[0, -1])))
    with pytest.raises(InputError, match=re.escape("top_k=6 is out of range: valid 1..5")):
        llama.get_token_predictions(logits, top_k=6)
    with pytest.raises(InputError, match=re.escape("logits must have shape (vocab,)")):
        llama.get_token_predictions(mx.zeros((2, 5)))


def test_output_is_the_traced_logits_and_only_inside_the_block(llama, model_state):
    with llama.trace(TEXT) as trace:
        logits = llama.output.save()
    assert logits is trace.logits and logits.dtype == mx.float32
    assert logits.shape == (1, trace.tokens.shape[1], llama.vocab_size)
    before = model_state(llama)
    with pytest.raises(TraceError, match=re.escape("model.output is only available inside")):
        llama.output.save()
    assert model_state(llama) == before


def test_a_trace_inside_a_trace_is_refused(llama, model_state):
    before = model_state(llama)
    with llama.trace(TEXT) as outer:
        with pytest.raises(TraceError, match="traces cannot be nested"):
            with llama.trace("another text"):
                pass
        assert llama.output.save() is outer.logits  # the outer trace is intact
    assert model_state(llama) == before


def test_run_returns_the_trace_the_block_yields(llama, model_state):
    before = model_state(llama)
    ablate = {"model.model.layers.1.self_attn": iv.zero_heads([2])}
    run = llama.run(TEXT, interventions=ablate, capture=[0, 1])
    with llama.trace(TEXT, interventions=ablate, capture=[0, 1]) as traced:
        # a forward of its own inside a trace block is not a nested trace
        other = llama.run("another text", capture=False)
        assert llama.output.save() is traced.logits
    assert model_state(llama) == before
    assert sorted(run.attention) == sorted(traced.attention) == [0, 1] and other.attention == {}
    # the same computation twice: the same numbers
    np.testing.assert_array_equal(np.array(run.logits), np.array(traced.logits))
    for layer in (0, 1):
        np.testing.assert_array_equal(np.array(run.attention[layer]), traced.attention[layer])
    clean = llama.run(TEXT, capture=False)
    assert np.abs(np.array(clean.logits) - np.array(run.logits)).max() > 1e-4  # ablated
    assert run.lengths == [run.tokens.shape[1]] and other.tokens.shape[0] == 1


BAD_INPUTS = [
    ("", InputError, "text '' is empty or whitespace only"),
    (" \n\t", InputError, "is empty or whitespace only"),
    (["fine", "  "], InputError, "text '  ' is empty or whitespace only"),
    ([], InputError, "inputs are an empty list"),
    ([1, 512], InputError, "token id 512 is outside the vocabulary: valid ids are 0..511"),
    (mx.array([[1, -3]]), InputError, "token id -3 is outside the vocabulary: valid ids are 0."),
    (mx.array([1.0, 2.0]), InputTypeError, "token ids must be integers, got an mx.array of"),
    (np.array([1.5]), InputTypeError, "token ids must be integers, got an array of float64"),
    ([1, "a"], InputTypeError, "a list of inputs must hold only texts or only integer ids"),
    (3.5, InputTypeError, "cannot run inputs of type float"),
    (mx.zeros((1, 2, 3), dtype=mx.int32), InputError, "must have shape (T,) or (B, T)"),
    (mx.ones((1, 513), dtype=mx.int32), InputError,
     "sequence of 513 tokens is longer than the model's context of 512 tokens"),
    ("word " * 600, InputError, "is longer than the model's context of 512 tokens"),
]  # fmt: skip


@pytest.mark.parametrize(("inputs", "error", "message"), BAD_INPUTS)
def test_bad_inputs_raise_before_the_forward(llama, model_state, inputs, error, message):
    before = model_state(llama)
    with pytest.raises(error, match=re.escape(message)):
        with llama.trace(inputs):
            pass
    assert model_state(llama) == before


def test_error_classes_are_value_and_type_errors():
    assert issubclass(InputError, ValueError) and issubclass(InputTypeError, TypeError)
    assert issubclass(ModelLoadError, ValueError) and issubclass(TraceError, ValueError)


def test_folder_without_config_or_weights(checkpoint, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(checkpoint("llama"), folder)
    (folder / "config.json").unlink()
    message = f"{folder} is not an mlx-lm model folder: it has no config.json"
    with pytest.raises(ModelLoadError, match=re.escape(message)):
        InterpretableModel(str(folder))
    shutil.copy(checkpoint("llama") / "config.json", folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelLoadError, match=re.escape("it has no weights (*.safetensors)")):
        InterpretableModel(folder)
    with pytest.raises(ModelLoadError, match=re.escape("no folder")):
        InterpretableModel(str(tmp_path / "does" / "not" / "exist"))


LOOPBACK = ("127.0.0.1", "::1", "localhost")
MISSING = "mlx-headwidget-tests/no-such-model"


@pytest.fixture
def no_outside_network(monkeypatch):
    """Any name lookup or connection beyond this machine fails the test; returns the hosts that
    were refused (the code under test may catch the error, so the test checks the list too)."""
    refused: list[str] = []
    lookup, connect = socket.getaddrinfo, socket.socket.connect

    def guarded_lookup(host, *args, **kwargs):
        if host not in LOOPBACK:
            refused.append(host)
            raise AssertionError(f"the test looked up {host!r}")
        return lookup(host, *args, **kwargs)

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            refused.append(address[0])
            raise AssertionError(f"the test connected to {address!r}")
        return connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", guarded_lookup)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    return refused


@pytest.fixture
def hub(monkeypatch, no_outside_network):
    """A hub lookup with no network and no proxy, whose download (mlx_lm.load, reached only when
    the hub answers) fails as a missing repository does: returns the repos it was asked for."""
    for var in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    downloads: list[str] = []

    def download(repo, **_):
        downloads.append(repo)
        raise OSError(f"404 Client Error: Repository Not Found for url: .../api/models/{repo}")

    monkeypatch.setattr(mlx_lm, "load", download)
    yield downloads
    assert no_outside_network == []


def check_hub_message(message: str) -> None:
    assert f"could not load hub model '{MISSING}'" in message
    assert "it is not in the local Hugging Face cache (" in message
    assert f"huggingface-cli download {MISSING}" in message
    assert "pass a local mlx-lm folder" in message


def test_hub_id_offline_by_setting_says_so_and_does_not_download(monkeypatch, hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        InterpretableModel(MISSING)
    check_hub_message(str(err.value))
    assert "and HF_HUB_OFFLINE is set." in str(err.value)
    assert hub == []


def test_unreachable_hub_says_which_endpoint_and_does_not_download(monkeypatch, hub):
    with socket.socket() as closed:  # bound, not listening: a connection to it is refused
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        with pytest.raises(ModelLoadError) as err:
            InterpretableModel(MISSING)
    check_hub_message(str(err.value))
    assert f"and {endpoint} is not reachable: " in str(err.value)
    assert hub == []


def test_reachable_hub_whose_download_fails_reports_the_download_error(monkeypatch, hub):
    with socket.create_server(("127.0.0.1", 0)) as server:  # the "hub": it accepts connections
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        with pytest.raises(ModelLoadError) as err:
            InterpretableModel(MISSING)
        server.settimeout(10)  # the connection is already queued; this only bounds a failure
        server.accept()[0].close()  # the reachability check connected to HF_ENDPOINT
    check_hub_message(str(err.value))
    assert (
        f"and downloading it failed: OSError: 404 Client Error: Repository Not Found for url: "
        f".../api/models/{MISSING}." in str(err.value)
    )
    assert hub == [MISSING]


def test_missing_bundled_model_says_how_to_load_another(monkeypatch, tmp_path):
    monkeypatch.setattr(model_module, "DEFAULT_MODEL_DIR", tmp_path / "default_model")
    with pytest.raises(BundledModelMissingError) as err:
        InterpretableModel()
    message = str(err.value)
    assert "the bundled default model is not present" in message
    assert "InterpretableModel('/path/to/folder')" in message and "hub id" in message


def test_a_quantized_folder_is_dequantized_on_a_cpu_by_default(checkpoint, models):
    kept = models("llama-4bit")  # loaded with dequantize=False
    model = InterpretableModel(checkpoint("llama-4bit"))
    layers = [m for _, m in model.model.named_modules() if isinstance(m, nn.QuantizedLinear)]
    assert layers == [] and mx.default_device().type == mx.cpu
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == mx.float32
    assert "quantization" not in model.config
    assert model.config["dequantized_from"]["bits"] == 4
    assert kept.config["quantization"]["bits"] == 4
    assert isinstance(kept.model.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    with model.trace(TEXT) as a, kept.trace(TEXT) as b:
        pass
    # the same weights through a float32 matmul and a quantized one: measured 2e-6 of the scale
    scale = np.abs(np.array(b.logits)).max()
    np.testing.assert_allclose(np.array(a.logits), np.array(b.logits), rtol=0, atol=2e-5 * scale)
    for layer in a.attention:
        np.testing.assert_allclose(a.attention[layer], b.attention[layer], rtol=0, atol=1e-5)


def test_a_loaded_pair_is_dequantized_only_when_asked(checkpoint):
    def quantized(model: InterpretableModel) -> int:
        return sum(isinstance(m, nn.QuantizedLinear) for _, m in model.model.named_modules())

    assert (
        quantized(InterpretableModel(mlx_lm.load(str(checkpoint("llama-4bit"))))) == 15
    )  # 2 x 7 + lm_head
    asked = InterpretableModel(mlx_lm.load(str(checkpoint("llama-4bit"))), dequantize=True)
    assert quantized(asked) == 0
