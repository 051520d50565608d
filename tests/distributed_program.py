"""The program tests/test_distributed_launch.py starts on 2 ranks with `mlx.launch`.

    distributed_program.py OUT LLAMA LLAMA4BIT KV1 GPT2

Every rank loads the bundled model and the tiny llamas in LLAMA and LLAMA4BIT (4-bit) sharded
over the ranks, runs
`results` (scans, patterns, ablations, with global head numbers), measures the memory of its
share of the weights against an unsharded load, runs the command line on the tiny llama, records
the refusals of KV1 (1 KV head), GPT2 (no shard() in mlx-lm) and of HeadWidget, and writes
OUT/rank<r>.json.
The test runs the same `results` on one process and compares.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from mlx_headwidget import InterpretableModel, capture_attention
from mlx_headwidget import interventions as iv
from mlx_headwidget.analysis import ablation_effect, head_pattern
from mlx_headwidget.detect import score_grid
from mlx_headwidget.errors import UnsupportedArchitectureError
from mlx_headwidget.testing import CASE_TEXT
from mlx_headwidget.visualization import (
    detect_head_types,
    detect_induction_heads,
    get_attention_patterns,
)
from mlx_headwidget.widget import HeadWidget


def heads_to_check(model) -> list[tuple[int, int]]:
    """A few heads on both halves of the head range: first, last, and either side of the cut."""
    L, H = model.n_layers, model.n_heads
    return [(0, 0), (1, H // 2 - 1), (1, H // 2), (L - 1, H - 1)]


def results(model) -> dict[str, Any]:
    """What the library gives on `model`, as JSON-ready lists (global head numbers)."""
    L, H = model.n_layers, model.n_heads
    out: dict[str, Any] = {}
    out["induction_grid"] = score_grid(model, kind="induction", n_samples=2).tolist()
    out["previous_token_grid"] = score_grid(model, CASE_TEXT, kind="previous_token").tolist()
    types = detect_head_types(model, CASE_TEXT, threshold=0.0)
    out["head_types"] = {k: [[h.layer, h.head, h.score] for h in v] for k, v in types.items()}
    found = detect_induction_heads(model, n_samples=2, threshold=0.0, progress=False)
    out["induction_heads"] = [[h.layer, h.head, h.score, h.std] for h in found]
    with model.trace(CASE_TEXT) as trace:
        logits = model.output.save()
    patterns = get_attention_patterns(trace, layers=[0, L - 1])  # whole layers, gathered
    out["patterns"] = {str(k): v.tolist() for k, v in patterns.items()}
    out["logits_last"] = np.array(logits[0, -1]).tolist()
    out["head_patterns"] = {
        f"{layer},{head}": head_pattern(model, CASE_TEXT, layer, head).tolist()
        for layer, head in heads_to_check(model)
    }
    ablated = ablation_effect(model, CASE_TEXT, [(1, 0), (L - 1, H - 1)])
    out["ablation"] = {
        "loss_before": ablated.loss_before,
        "loss_after": ablated.loss_after,
        "token_loss_after": ablated.token_loss_after.tolist(),
        "top_after": ablated.top_after,
    }
    mean = iv.ablate_heads([(0, 1), (1, H - 2)], mode="mean")
    with model.trace(CASE_TEXT, capture=False, interventions=mean) as trace:
        pass
    out["mean_ablated_logits_last"] = np.array(trace.logits[0, -1]).tolist()
    shapes = []
    capture_attention(model, CASE_TEXT, layers=[0], on_pattern=lambda _, p: shapes.append(p.shape))
    out["captured_shape"] = list(shapes[0])  # this process's heads only
    return out


def weight_bytes(model) -> dict[str, int]:
    """Bytes of the model's weights: all, those in the layers (the sharded ones), the largest."""
    weights = tree_flatten(model.model.parameters())
    return {
        "all": sum(w.nbytes for _, w in weights),
        "layers": sum(w.nbytes for name, w in weights if ".layers." in f".{name}"),
        "largest": max(w.nbytes for _, w in weights),
    }


def load_measured(source, distributed: bool) -> tuple[InterpretableModel, dict[str, int]]:
    """The model, and the peak memory MLX allocated to load it (all weights read)."""
    gc.collect()
    mx.clear_cache()
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    model = InterpretableModel(source, distributed=distributed)
    mx.eval(model.model.parameters())
    return model, {"peak": mx.get_peak_memory() - before, **weight_bytes(model)}


def main(out: Path, llama: str, llama4bit: str, kv1: str, gpt2: str) -> None:
    rank = mx.distributed.init().rank()
    report: dict[str, Any] = {"LD_PRELOAD": os.environ.get("LD_PRELOAD", "")}
    for name, source in (("bundled", None), ("llama", llama), ("llama-4bit", llama4bit)):
        model, memory = load_measured(source, distributed=True)
        report[name] = {
            "size": model.group.size(),
            "rank": model.rank,
            "local_heads": [model.local_heads.start, model.local_heads.stop],
            "memory": memory,
            "results": results(model),
        }
        try:
            HeadWidget(model)
        except ValueError as err:
            report[name]["widget"] = str(err)
        del model
        _, report[name]["memory_unsharded"] = load_measured(source, distributed=False)
    report["refusals"] = {}
    for name, source in (("kv1", kv1), ("gpt2", gpt2)):
        try:
            InterpretableModel(source, distributed=True)
            report["refusals"][name] = None
        except UnsupportedArchitectureError as err:
            report["refusals"][name] = str(err)
    from mlx_headwidget.__main__ import main as command

    printed = io.StringIO()
    args = [llama, "--samples", "2", "--threshold", "0", "--save", str(out / "scan.npz")]
    with contextlib.redirect_stdout(printed):
        code = command(args)
    report["command"] = {"code": code, "stdout": printed.getvalue()}
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:6])
