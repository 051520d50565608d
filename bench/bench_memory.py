"""Scan memory: peak memory of a scores-only induction scan, minus the model's own weights.

For each model (default: the Llama-3.2-1B-shaped 4-bit model with 16 and with 8 layers) at T:
  plain      one plain mlx-lm forward, for reference;
  scan         detect.score_grid(model, kind="induction"): attention by blocks of 256 query rows,
               each block scored in MLX as it comes (the whole pattern never exists);
  scan, numpy  the scan with whole patterns scored by the numpy reference (a float64 copy).
Memory is the process peak above the memory in use after loading (weights, caches of earlier runs
cleared), and MLX's own peak; see common.py. One layer's patterns = n_heads * T * T * 4 bytes.
Targets (issue 8): scan extra <= 2x one layer's patterns, and the same for 8 and 16 layers.

A second table measures one layer's attention alone at the first model's shapes: mlx's fused
attention, the explicit float32 attention a capture of whole patterns runs (model.trace), and
the same attention by blocks of query rows, each block scored as it comes (the scan).

Usage: LD_PRELOAD=<OpenBLAS> python bench/bench_memory.py [--quick] [--models ...] [--T 2048]
"""

from __future__ import annotations

import mlx.core as mx
from common import Report, compare, fmt, machine, measure, parser, pattern_bytes, ratio
from models import load, repeated_tokens, scan_runs

from mlx_headwidget.capture import attention_by_rows, explicit_attention
from mlx_headwidget.scores import RowScorer, score_heads

EXTRA_LIMIT = 2.0  # x one layer's patterns
LAYERS_LIMIT = 1.1  # extra with more layers / extra with fewer


def scan_cases(model, tokens: mx.array, n: int) -> dict:
    runs = scan_runs(model, tokens, n)
    return {name: runs[name] for name in ("plain", "scan", "scan, numpy")}


def blockwise_attention(q, k, v, scale: float, n: int, block: int):
    """Causal attention by blocks of query rows, each block's rows scored as they come, as the
    scan does (capture.attention_by_rows + scores.RowScorer): (output (1, H, T, D), score (H,))."""
    scorer = RowScorer("induction", q.shape[2], seq_len=n, prepend_bos=True)
    out = attention_by_rows(
        q, k, v, scale, "causal", block=block, on_rows=lambda s, rows: scorer.add(s, rows[0])
    )
    return out, mx.array(scorer.result())


def layer_table(report: Report, model, T: int, n: int, block: int) -> None:
    """One layer's attention at the model's shapes: whole patterns vs blocks of query rows."""
    H, KV, D = model.n_heads, model.n_kv_heads, model.d_head
    q = mx.random.normal((1, H, T, D), key=mx.random.key(0))
    k = mx.random.normal((1, KV, T, D), key=mx.random.key(1))
    v = mx.random.normal((1, KV, T, D), key=mx.random.key(2))
    mx.eval(q, k, v)
    scale = D**-0.5

    def fast():
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask="causal")
        mx.eval(out)
        return out

    def whole():
        out, pattern = explicit_attention(q, k, v, scale, "causal")
        score = mx.array(score_heads("induction", pattern[0], seq_len=n, prepend_bos=True))
        mx.eval(out, score)
        return out, score

    def blocks():
        out, score = blockwise_attention(q, k, v, scale, n, block)
        mx.eval(out, score)
        return out, score

    fast(), whole(), blocks()  # warm-up
    (o1, s1), (o2, s2) = whole(), blocks()
    same = max(float(mx.abs(o1 - o2).max()), float(mx.abs(s1 - s2).max()))
    one = pattern_bytes(H, T)
    rows = []
    for name, fn in [
        ("mx.fast.scaled_dot_product_attention (plain forward)", fast),
        ("explicit attention, whole patterns (model.trace)", whole),
        (f"explicit attention by blocks of {block} query rows (scan)", blocks),
    ]:
        m = measure(fn)
        rows.append(
            [name, fmt(m.seconds, "s"), fmt(m.mlx_extra, "MiB"), fmt(m.mlx_extra / one, "x")]
        )
    report.table(
        f"One layer's attention alone: H={H}, KV heads={KV}, d_head={D}, T={T}",
        ["computation", "seconds", "MLX peak MiB", "vs one layer's patterns"],
        rows,
        f"One layer's patterns: {fmt(one, 'MiB')} MiB. Outputs and induction scores of the "
        f"whole and block-wise versions agree to {same:.1e}.",
    )


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--models", nargs="+", default=None, help="default: 1b-4bit-f32 1b-4bit-8layers-f32"
    )
    p.add_argument("--T", type=int, default=None, help="default: 2048")
    p.add_argument("--block", type=int, default=None, help="query rows per block; default 256")
    args = p.parse_args(argv)
    quick_models = ["tiny-4bit", "tiny-4bit-1layer"]
    models = args.models or (quick_models if args.quick else ["1b-4bit-f32", "1b-4bit-8layers-f32"])
    T = args.T or (256 if args.quick else 2048)
    if args.repeats is None:
        args.repeats = 1
    report = Report("Scan memory", args)
    report.note("\n".join(f"- {k}: {v}" for k, v in machine().items()))
    rows, extra = [], {}
    first = None
    for name in models:
        model, desc = load(name)
        report.note(f"- {name}: {desc}")
        warm, wn = repeated_tokens(model, 32)
        for fn in scan_cases(model, warm, wn).values():  # one-time costs at a small size
            fn()
        tokens, n = repeated_tokens(model, T)
        got = compare(scan_cases(model, tokens, n), args)
        one = pattern_bytes(model.n_heads, tokens.shape[1])
        for case, m in got.items():
            rows.append(
                [
                    name,
                    model.n_layers,
                    case,
                    tokens.shape[1],
                    fmt(m.seconds, "s"),
                    fmt(m.rss_extra, "MiB"),
                    fmt(m.mlx_extra, "MiB"),
                    fmt(ratio(m.rss_extra, one), "x"),
                ]
            )
        extra[name] = (model.n_layers, got["scan"].rss_extra, one)
        if first is None:
            first = (model, tokens.shape[1], n)
        else:
            del model
    report.table(
        "Peak memory above the loaded model",
        [
            "model",
            "layers",
            "run",
            "T",
            "seconds",
            "process peak MiB",
            "MLX peak MiB",
            "vs one layer",
        ],
        rows,
        "vs one layer: process peak / one layer's float32 patterns (n_heads x T x T x 4 bytes).",
    )
    for name, (layers, scan, one) in extra.items():
        report.target(
            f"{name} ({layers} layers): scan extra / one layer's patterns",
            ratio(scan, one),
            EXTRA_LIMIT,
        )
    if len(extra) >= 2:
        (a, b) = sorted(extra.values())[-1], sorted(extra.values())[0]
        report.target(f"scan extra, {a[0]} layers / {b[0]} layers", ratio(a[1], b[1]), LAYERS_LIMIT)
    model, T_real, n = first
    layer_table(report, model, T_real, n, args.block or (64 if args.quick else 256))
    report.finish()


if __name__ == "__main__":
    main()
