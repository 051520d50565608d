"""Activation patching cost: batched patch_heads against one head at a time, and attribution
patching against exact patching.

On [BOS] + x + x[:k] (T tokens; copying continues with x[k]) against the same with its last token
replaced by a random one (answer x[k], distractor the corrupted run's preferred token):
  one at a time   patching.patch_heads(batch=1): a forward per head, plus a clean and a corrupted;
  batched         patching.patch_heads(batch=B): ceil(heads / B) forwards of B rows, plus the two;
  attribution     patching.attribution_patch: a clean forward, a corrupted one and a backward pass,
                  always for every head.
Large models patch a subset of heads (--heads: the heads of the middle layers, `batch` of them),
so that one at a time stays affordable; the "whole grid" column extrapolates from the time of the
two unpatched forwards (measured too) and the patched ones.
Accuracy: the largest |batched - one at a time| share, and the Pearson correlation of the
attribution grid with the exact one (on random weights a number, not a finding).

Usage: LD_PRELOAD=<OpenBLAS> python bench/bench_patching.py [--quick] [--models ...] [--T ...]
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
from common import Report, compare, fmt, machine, parser
from mlx.utils import tree_map
from models import load

from mlx_headwidget import patching
from mlx_headwidget.capture import capture_attention
from mlx_headwidget.detect import random_repeated_tokens

BATCH = 32
# model name -> how many heads to patch (None: every head) and the T values to run
DEFAULTS = {"bundled": (None, [33, 129]), "1b-4bit-f32": (BATCH, [33]), "tiny": (None, [17])}


def induction_pair(model, T: int, seed: int = 1):
    """(clean, corrupted, answer, distractor) of T tokens (see the module docstring)."""
    n = (T - 1) // 2
    k = T - 1 - n
    x = random_repeated_tokens(model, n, 2, seed=seed)[0].tolist()
    other = random_repeated_tokens(model, n, 2, seed=seed + 100)[0, 1].item()
    clean = x[: 1 + n + k]
    corrupted = [*clean[:-1], other]
    logits = np.array(capture_attention(model, corrupted, layers=[])[0, -1])
    distractor = next(int(i) for i in np.argsort(-logits)[:2] if i != x[1 + k])
    return clean, corrupted, x[1 + k], distractor


def head_subset(model, count: int | None) -> list[tuple[int, int]]:
    """Every head, or `count` heads from the middle layer on."""
    every = [(layer, h) for layer in range(model.n_layers) for h in range(model.n_heads)]
    if count is None or count >= len(every):
        return every
    start = (model.n_layers // 2) * model.n_heads
    return every[start : start + count]


def cases(model, pair, heads: list, batch: int, grids: dict) -> dict:
    """The three runs on one (clean, corrupted, answer, distractor); each stores its grid."""

    def exact(rows: int, key: str):
        def run():
            grids[key] = patching.patch_heads(model, *pair, heads=heads, batch=rows)

        return run

    def approx():
        grids["attribution"] = patching.attribution_patch(model, *pair)

    def baseline():
        for tokens in pair[:2]:
            capture_attention(model, tokens, layers=[])

    return {
        "clean + corrupted forwards": baseline,
        "one at a time": exact(1, "one"),
        f"batched ({batch} per forward)": exact(batch, "batched"),
        "attribution patching": approx,
    }


def run_model(name: str, args, report: Report) -> None:
    """Both tables of one model."""
    model, desc = load(name)
    if name == "bundled" and model.model.model.norm.weight.dtype != mx.float32:
        # as InterpretableModel() computes it (stored in float16); the tests' numbers are float32
        model.model.update(tree_map(lambda a: a.astype(mx.float32), model.model.parameters()))
        desc = desc.replace("float16", "float16 on disk, computed in float32")
    count, default_T = DEFAULTS.get(name, (args.batch, [33]))
    heads = head_subset(model, args.heads if args.heads is not None else count)
    grid = model.n_layers * model.n_heads
    index = tuple(np.array(heads).T)
    rows, quality = [], []
    for T in args.T or default_T:
        grids: dict = {}
        got = compare(cases(model, induction_pair(model, T), heads, args.batch, grids), args)
        forwards = [2, len(heads) + 2, math.ceil(len(heads) / args.batch) + 2, "2 + 1 backward"]
        base, unpatched = got["one at a time"].seconds, got.pop("clean + corrupted forwards")
        fixed = unpatched.seconds
        rows.append(
            ["clean + corrupted forwards", T, 0, 2, fmt(fixed, "s"), "", "", len(unpatched.runs)]
        )
        for (case, m), f in zip(got.items(), forwards[1:], strict=True):
            n = grid if case == "attribution patching" else len(heads)
            whole = m.seconds if n == grid else fixed + (m.seconds - fixed) / n * grid
            rows.append(
                [case, T, n, f, fmt(m.seconds, "s"), fmt(whole, "s"), fmt(m.seconds / base, "x"),
                 len(m.runs)]
            )  # fmt: skip
        exact, approx = grids["one"][index], grids["attribution"][index]
        diff = np.abs(grids["batched"][index] - exact).max()
        corr = np.corrcoef(exact, approx)[0, 1]

        def top2(values: np.ndarray) -> str:
            return ", ".join(f"L{heads[i][0]}H{heads[i][1]}" for i in np.argsort(-values)[:2])

        quality.append([T, len(heads), f"{diff:.1e}", f"{corr:.3f}", top2(exact), top2(approx)])
        mx.clear_cache()
    report.table(
        desc,
        ["run", "T", "heads", "forwards", "seconds", "whole grid (s)", "vs one at a time", "n"],
        rows,
        f"seconds: median of n runs; whole grid ({grid} heads): measured, or estimated as the two "
        "unpatched forwards + (seconds - those) / heads x the grid's heads.",
    )
    report.table(
        f"{desc}: accuracy",
        ["T", "heads", "max abs(batched - one at a time)", "corr(attribution, exact)",
         "top-2 exact", "top-2 attribution"],
        quality,
        "Shares (1 = the whole logit difference); correlation over the heads patched.",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=None, help="default: bundled 1b-4bit-f32")
    p.add_argument("--T", type=int, nargs="+", default=None, help="default: per model")
    p.add_argument("--heads", type=int, default=None, help="heads to patch (default: per model)")
    p.add_argument("--batch", type=int, default=BATCH, help="patched heads per forward")
    args = p.parse_args(argv)
    report = Report("Activation patching", args)
    report.note("\n".join(f"- {k}: {v}" for k, v in machine().items()))
    for name in args.models or (["tiny"] if args.quick else ["bundled", "1b-4bit-f32"]):
        run_model(name, args, report)
    report.finish()


if __name__ == "__main__":
    main()
