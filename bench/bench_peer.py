"""Peer comparison: our induction scan against TransformerLens's, same weights and shapes, one run.

Theirs: TransformerLens 4.x's TransformerBridge around Hugging Face's LlamaForCausalLM in CPU torch,
float32, loaded from our checkpoint (4-bit weights dequantized: the same numbers our quantized
matmuls use), or for SmolLM2 ("smollm2") from its GGUF file as transformers' own GGUF loader reads
and dequantizes it. Ours: the checkpoint itself in MLX.
  ours    plain mlx-lm forward | traced (all layers kept) | scan (score_grid) | scan, numpy
  theirs  plain HF forward (sdpa) | bridge forward (eager attention, no hooks) |
          run_with_cache(names_filter=hook_pattern) then the scores from the cache (the usual way) |
          run_with_hooks with the score taken inside each hook_pattern hook (no cache)
Every scan computes the same strict induction score (mean of A[n + 1 + k, 2 + k], k < n, on
[BOS] + x + x); the largest difference between our grid and theirs is printed.
Targets (issue 8): our traced / plain <= their run_with_cache / plain, each against the plain
forward of its own framework (ours: mlx-lm's forward; theirs: the bridge's forward without hooks,
the computation run_with_cache adds its hooks to; Hugging Face's sdpa forward, a different
attention implementation, is listed for reference); our scan's extra memory <= their pattern
cache / n_layers (= one layer's patterns, n_heads x T x T float32).

Usage: LD_PRELOAD=<OpenBLAS> python bench/bench_peer.py [--quick] [--model 1b-4bit-f32] [--T ...]
       (SmolLM2: --model smollm2 --T 101 512)
"""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
import numpy as np
from common import Report, compare, fmt, machine, parser, pattern_bytes, settle
from models import CACHE, checkpoint, load, repeated_tokens, scan_runs
from safetensors.numpy import save_file

QUANT_KEYS = ("quantization", "quantization_config")
THEIR_PLAIN = "bridge forward (eager)"  # TransformerLens's forward without hooks


def hf_folder(name: str):
    """A Hugging Face LlamaForCausalLM folder (float32) with the weights of model `name`."""
    src = checkpoint(name)
    if src.suffix == ".gguf":
        return hf_from_gguf(src)
    out = CACHE / f"{src.name}-hf"
    if (out / "config.json").is_file():
        return out
    config = json.loads((src / "config.json").read_text())
    if config.get("model_type") != "llama":
        raise ValueError(
            f"the peer benchmark converts llama checkpoints, not {config['model_type']}"
        )
    q = config.get("quantization")
    weights = mx.load(str(src / "model.safetensors"))
    tensors = {}
    for key, w in weights.items():
        if key.endswith((".scales", ".biases")):
            continue
        base = key.removesuffix(".weight")
        if q and f"{base}.scales" in weights:
            w = mx.dequantize(
                w, weights[f"{base}.scales"], weights[f"{base}.biases"], q["group_size"], q["bits"]
            )
        tensors[key] = np.array(w.astype(mx.float32))
    tmp = CACHE / f".{out.name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    config = {k: v for k, v in config.items() if k not in QUANT_KEYS}
    config.update(architectures=["LlamaForCausalLM"], torch_dtype="float32")
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / f, tmp / f)
    tmp.rename(out)
    return out


def hf_from_gguf(path):
    """A Hugging Face folder (float32) of a GGUF file as transformers reads it: its GGUF loader
    dequantizes every tensor and reorders llama's q/k rows itself, independently of ours."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    out = CACHE / f"{path.stem}-hf"
    if (out / "config.json").is_file():
        return out
    hf_logging.disable_progress_bar()
    tmp = CACHE / f".{out.name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    kw = dict(gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kw)
    # save_pretrained refuses a model read from GGUF; its float32 tensors are saved as they are
    save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    model.config.torch_dtype = torch.float32
    model.config.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(path.parent, **kw).save_pretrained(tmp)
    del model
    tmp.rename(out)
    return out


def ours(model, tokens: mx.array, n: int) -> tuple[dict, dict]:
    """Our four runs, and the grid each scan returns (by run name)."""
    grids: dict = {}
    return scan_runs(model, tokens, n, grids), grids


def theirs(folder, tokens: np.ndarray, n: int, T_runs) -> tuple[dict, dict]:
    """Their runs (plain HF first: booting the bridge switches the model to eager attention)."""
    import torch
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_grad_enabled(False)
    hf = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.from_numpy(tokens.astype(np.int64))
    rows = torch.arange(n + 1, 2 * n + 1)
    grids = {}

    def plain_hf():
        return hf(ids).logits

    plain = T_runs({"plain HF (sdpa)": plain_hf})
    bridge = TransformerBridge.boot_transformers(
        str(folder), hf_model=hf, tokenizer=AutoTokenizer.from_pretrained(folder)
    )
    is_pattern = lambda name: name.endswith("hook_pattern")  # noqa: E731
    L = bridge.cfg.n_layers

    def bridge_forward():
        return bridge(ids, return_type="logits")

    def cache_scan():
        _, cache = bridge.run_with_cache(ids, names_filter=is_pattern, return_type="logits")
        grid = torch.stack(
            [
                cache[f"blocks.{i}.attn.hook_pattern"][0][:, rows, rows - n + 1].mean(-1)
                for i in range(L)
            ]
        )
        grids["run_with_cache"] = grid.numpy()
        return cache

    def hook_scan():
        grid = torch.zeros(L, bridge.cfg.n_heads)

        def score(pattern, hook):
            grid[hook.layer()] = pattern[0][:, rows, rows - n + 1].mean(-1)

        bridge.run_with_hooks(ids, fwd_hooks=[(is_pattern, score)], return_type=None)
        grids["run_with_hooks"] = grid.numpy()

    runs = {"bridge forward (eager)": bridge_forward, "run_with_cache": cache_scan}
    runs["run_with_hooks"] = hook_scan
    return {**plain, **T_runs(runs)}, grids


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default: 1b-4bit-f32 (quick: tiny-4bit)")
    p.add_argument("--T", type=int, nargs="+", default=None, help="default: 512 2048")
    args = p.parse_args(argv)
    name = args.model or ("tiny-4bit" if args.quick else "1b-4bit-f32")
    sizes = args.T or ([256] if args.quick else [512, 2048])
    report = Report("Peer comparison with TransformerLens", args)
    report.note("\n".join(f"- {k}: {v}" for k, v in machine().items()))
    folder = hf_folder(name)
    model, desc = load(name)
    report.note(f"Model: {desc}; Hugging Face copy: float32, {folder}")
    # All of ours first, then the model goes: both models and a full pattern cache at once would
    # not fit in memory at the 1B shapes.
    inputs, our_runs = [], []
    for T in sizes:
        tokens, n = repeated_tokens(model, T)
        fns, grids = ours(model, tokens, n)
        our_runs.append((compare(fns, args), grids))
        inputs.append((np.array(tokens), n))
    L, H = model.n_layers, model.n_heads
    del model, fns
    settle()
    for (tokens, n), (our, our_grids) in zip(inputs, our_runs, strict=True):
        T_real = tokens.shape[1]
        their, their_grids = theirs(folder, tokens, n, lambda f: compare(f, args))
        settle()  # the torch model goes before the next T's copy is loaded
        diff = max(
            float(np.abs(a - b).max()) for a in our_grids.values() for b in their_grids.values()
        )
        rows = []
        for side, got, plain in (
            ("ours, MLX", our, "plain"),
            ("TransformerLens, torch", their, THEIR_PLAIN),
        ):
            for case, m in got.items():
                rows.append(
                    [
                        side,
                        case,
                        fmt(m.seconds, "s"),
                        fmt(m.seconds / got[plain].seconds, "x"),
                        fmt(m.rss_extra, "MiB"),
                        len(m.runs),
                    ]
                )
        one = pattern_bytes(H, T_real)
        report.table(
            f"T={T_real}",
            ["framework", "run", "seconds", "vs its plain", "process peak MiB", "n"],
            rows,
            f"vs its plain: ours against mlx-lm's forward, theirs against {THEIR_PLAIN}. "
            f"Their pattern cache: {L} layers x {fmt(one, 'MiB')} MiB = {fmt(L * one, 'MiB')} "
            f"MiB. Induction grids, ours vs theirs: largest difference {diff:.1e}.",
        )
        report.target(
            f"T={T_real}: our traced / plain (limit: their run_with_cache / bridge forward)",
            our["traced"].seconds / our["plain"].seconds,
            their["run_with_cache"].seconds / their[THEIR_PLAIN].seconds,
        )
        # Their cache holds L x one layer's patterns by construction, so its share per layer is
        # `one`; its measured process peak is not a reliable size (torch's allocator reuses the
        # memory of earlier runs without growing the process).
        report.target(
            f"T={T_real}: our scan extra memory (limit: their cache's / {L} = one layer)",
            our["scan"].rss_extra,
            one,
            unit="MiB",
        )
        del their
    report.finish()


if __name__ == "__main__":
    main()
