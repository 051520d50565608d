"""Tiny random-weight checkpoints in mlx-lm's folder layout, for tests and benchmarks.

``make_checkpoint("llama", folder)`` writes config.json, model.safetensors (+ index),
tokenizer.json and tokenizer_config.json; ``mlx_lm.load(folder)`` and
``transformers.AutoTokenizer.from_pretrained(folder)`` both load the result. Nothing is downloaded:
the weights come from mlx-lm's own model class under a fixed seed, the tokenizer is a byte-level BPE
trained on the docstrings of Python's builtins.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.utils import _get_classes, quantize_model, save_config, save_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from .files import atomic_write_files

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"  # also the padding token
QK_GAIN = 3.0
"""Factor on query/key projections: default inits give nearly uniform attention (score std ~0.3);
this gives scores with std ~3, so patterns have real structure. q/k norm weights (qwen3, unit-RMS
queries and keys, score std ~1) get its square root, for the same std ~3."""

_SMALL = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 512,
    "rope_theta": 10000.0,
}

_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {**_SMALL, "model_type": "llama", "tie_word_embeddings": False},
    "qwen2": {**_SMALL, "model_type": "qwen2", "tie_word_embeddings": True},
    "qwen3": {**_SMALL, "model_type": "qwen3", "tie_word_embeddings": True},
    # mlx-lm runs mistral with the llama class, which applies sliding_window only to layers whose
    # layer_types entry is "sliding_attention" and needs at least one "full_attention" layer.
    "mistral": {
        **_SMALL,
        "model_type": "mistral",
        "tie_word_embeddings": False,
        "sliding_window": 8,
        "layer_types": ["sliding_attention", "full_attention"],
    },
    "phi3": {
        **_SMALL,
        "model_type": "phi3",
        "tie_word_embeddings": False,
        "original_max_position_embeddings": 512,
    },
    # A low attention cap so that tanh soft-capping visibly changes the scores.
    "gemma2": {
        **_SMALL,
        "model_type": "gemma2",
        "query_pre_attn_scalar": 16,
        "attn_logit_softcapping": 10.0,
        "final_logit_softcapping": 30.0,
    },
    "gpt2": {
        "model_type": "gpt2",
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 4,
        "n_ctx": 512,
        "n_positions": 512,
        "layer_norm_epsilon": 1e-5,
    },
    # meta-llama/Llama-3.2-1B's config.json, apart from the vocabulary size.
    "llama-3.2-1b": {
        "model_type": "llama",
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "intermediate_size": 8192,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "tie_word_embeddings": True,
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
    },
}

ARCHS: tuple[str, ...] = tuple(_CONFIGS)
"""Architectures ``make_checkpoint`` can build."""

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", {}),
    "llama-4bit": ("llama", {"quantize_bits": 4}),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
    "mistral": ("mistral", {}),
    "phi3": ("phi3", {}),
    "gemma2": ("gemma2", {}),
    "gpt2": ("gpt2", {}),
    "llama-3.2-1b-4bit": ("llama-3.2-1b", {"quantize_bits": 4}),
}
"""The test suite's model cases: name -> (``make_checkpoint`` arch, its keyword arguments)."""
CASE_TEXT = "The cat sat on the mat because the cat liked the mat. The cat sat on the"
"""Longer than mistral's sliding window (8) and with repeats, so patterns have structure."""
MAX_TOKENS = {"llama-3.2-1b-4bit": 3}
"""4-bit matmuls of the 1B shapes cost about 1 s per token on 2 CPU cores: keep them short."""

# Two float32 computations of one quantity that take different paths (attention by blocks of
# query rows vs whole, a padded batch vs one text, a traced forward vs the plain one, one layer
# captured vs all) agree on the random-weight CASES to these tolerances. `python
# bench/float_error.py` measures the largest differences under OpenBLAS with this CPU's kernels
# and with Haswell's (AVX2), SkylakeX's and Sandybridge's, and under MLX's bundled BLAS
# (docs/numerics.md): patterns 3.5e-6, logits 1.6e-6 of max(1, max |logits|), both for a padded
# batch under OpenBLAS Haswell. Bugs (a wrong mask, head or cast) move them by 1e-3 and more.
PATTERN_ATOL = 2e-5
LOGITS_RTOL = 1e-5


def assert_logits_close(actual: Any, expected: Any, rtol: float = LOGITS_RTOL) -> None:
    """|actual - expected| <= rtol * max(1, max |expected|) everywhere: logits of two different
    computations, compared relative to their size (see LOGITS_RTOL)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


_QK_PROJECTIONS = ("q_proj", "k_proj", "qkv_proj", "c_attn")
_QK_NORMS = ("q_norm", "k_norm")
_QUANT_BITS = (2, 3, 4, 5, 6, 8)
_SPECIALS = (EOS_TOKEN, BOS_TOKEN)  # ids 0 and 1


def training_text() -> str:
    """Docstrings of Python's builtins (about 30 KB of English, PSF licence), in a fixed order."""
    docs = (getattr(builtins, name).__doc__ for name in sorted(dir(builtins)))
    return "\n\n".join(doc for doc in docs if doc)


def make_tokenizer(vocab_size: int = 512) -> Tokenizer:
    """A byte-level BPE: id 0 = EOS and padding, id 1 = BOS (prepended to every text, as in Llama).

    The vocabulary has at most ``vocab_size`` entries (fewer if the text runs out of merges).
    """
    n_min = 256 + len(_SPECIALS)
    if vocab_size < n_min:
        raise ValueError(f"vocab_size={vocab_size} is too small: a byte-level BPE needs >= {n_min}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([training_text()], trainer=trainer)
    bos_id = tok.token_to_id(BOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    return tok


def make_config(arch: str, *, vocab_size: int = 512, **overrides: Any) -> dict[str, Any]:
    """The config.json dict for ``arch`` (one of ``ARCHS``), with ``overrides`` applied last."""
    if arch not in _CONFIGS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
    ids = {"bos_token_id": 1, "eos_token_id": 0, "pad_token_id": 0}
    config = {**_CONFIGS[arch], "vocab_size": vocab_size, **ids, **overrides}
    n_layers = config.get("num_hidden_layers", config.get("n_layer"))
    if "layer_types" in config and "layer_types" not in overrides:
        if n_layers < 2:
            raise ValueError(
                f"{arch} needs num_hidden_layers >= 2 (got {n_layers}): mlx-lm "
                "needs one full-attention layer beside the sliding ones"
            )
        config["layer_types"] = ["sliding_attention"] * (n_layers - 1) + ["full_attention"]
    return config


def _scale_qk(model: nn.Module, gain: float) -> None:
    """Multiply query/key projections (weights and biases) by ``gain``, q/k norms by its root."""
    scaled = []
    for name, value in tree_flatten(model.parameters()):
        module = name.split(".")[-2]
        if module in _QK_PROJECTIONS:
            scaled.append((name, value * gain))
        elif module in _QK_NORMS:
            scaled.append((name, value * gain**0.5))
    model.update(tree_unflatten(scaled))


def make_checkpoint(
    arch: str,
    folder: str | Path,
    *,
    quantize_bits: int | None = None,
    seed: int = 0,
    vocab_size: int = 512,
    **config_overrides: Any,
) -> Path:
    """Write a random-weight ``arch`` model (see ``ARCHS``) with its tokenizer into ``folder``.

    Weights are float32 from mlx-lm's own initialisers after ``mx.random.seed(seed)`` (this reseeds
    MLX's global generator), with query and key scaled by ``QK_GAIN``. ``quantize_bits`` (e.g. 4)
    quantizes as mlx-lm does (group size 64).
    ``config_overrides`` replace config.json entries (e.g. ``num_hidden_layers=4``).
    Files are written atomically (``files.atomic_write_files``): a failure leaves ``folder`` as is.
    Returns the folder as a ``Path``.
    """
    if quantize_bits is not None and quantize_bits not in _QUANT_BITS:
        raise ValueError(f"quantize_bits={quantize_bits!r}; valid: None or one of {_QUANT_BITS}")
    config = make_config(arch, vocab_size=vocab_size, **config_overrides)
    tokenizer = make_tokenizer(vocab_size)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    model_class, args_class = _get_classes(config)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(config))
    _scale_qk(model, QK_GAIN)
    mx.eval(model.parameters())
    if quantize_bits is not None:
        with contextlib.redirect_stdout(io.StringIO()):  # quantize_model prints bits per weight
            model, config = quantize_model(model, config, group_size=64, bits=quantize_bits)

    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "add_bos_token": True,
        "model_max_length": config.get("max_position_embeddings", config.get("n_positions")),
    }

    def write(staging: Path) -> None:
        save_model(staging, model)
        save_config(config, staging / "config.json")
        tokenizer.save(str(staging / "tokenizer.json"))
        (staging / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))

    atomic_write_files(folder, write)
    return folder
