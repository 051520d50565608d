"""Scaling: time and memory of the induction scan as T doubles, against the plain forward.

For each model and T = 128, 256, ... up to the model's largest T (on [BOS] + x + x):
  plain  mx.eval(model.model(tokens));
  scan   detect.score_grid(model, kind="induction"): one forward, each layer's patterns scored
         and dropped.
Time is fitted as seconds = c + a * T + b * T^2 (least squares): c is the fixed cost of a forward,
a * T the work per token (the weight matmuls, the MLP, the vocabulary projection), b * T^2 the
work per pair of tokens (scores, softmax, pattern @ V, and the scoring). The quadratic term
overtakes the linear one at T = a / b.
Memory (process peak above the loaded model) is compared with one layer's float32 patterns,
n_heads * T^2 * 4 bytes, which a scan must hold at least once.

Usage: LD_PRELOAD=<OpenBLAS> python bench/bench_scaling.py [--quick] [--models NAME:MAX_T ...]
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from common import BenchSetupError, Report, compare, fmt, machine, parser, pattern_bytes, ratio
from models import load, repeated_tokens, scan_runs


def sizes(max_T: int, start: int = 128) -> list[int]:
    """start, 2 * start, ... up to max_T."""
    out = [start]
    while out[-1] * 2 <= max_T:
        out.append(out[-1] * 2)
    return out


def fit(T: list[int], seconds: list[float]) -> tuple[float, float, float] | None:
    """(c, a, b) of seconds = c + a * T + b * T^2 by least squares; None under 4 points."""
    if len(T) < 4:
        return None
    t = np.array(T, dtype=np.float64)
    X = np.stack([np.ones_like(t), t, t * t], axis=1)
    (c, a, b), *_ = np.linalg.lstsq(X, np.array(seconds), rcond=None)
    return float(c), float(a), float(b)


def cases(model, tokens: mx.array, n: int) -> dict:
    runs = scan_runs(model, tokens, n)
    return {"plain": runs["plain"], "scan": runs["scan"]}


def model_arg(text: str) -> tuple[str, int]:
    name, _, max_T = text.partition(":")
    if not max_T.isdigit() or int(max_T) < 8:
        raise BenchSetupError(f"--models takes NAME:MAX_T with MAX_T >= 8, got {text!r}")
    return name, int(max_T)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--models",
        nargs="+",
        type=model_arg,
        default=None,
        help="NAME:MAX_T; default: bundled-shape:4096 1b-4bit-f32:1024",
    )
    args = p.parse_args(argv)
    default = [("tiny", 128)] if args.quick else [("bundled-shape", 4096), ("1b-4bit-f32", 1024)]
    report = Report("Scan scaling with T", args)
    report.note("\n".join(f"- {k}: {v}" for k, v in machine().items()))
    for name, max_T in args.models or default:
        model, desc = load(name)
        rows, Ts, scan_s = [], [], []
        for T in sizes(max_T, start=16 if args.quick else 128):
            tokens, n = repeated_tokens(model, T)

            got = compare(cases(model, tokens, n), args)
            T_real, one = tokens.shape[1], pattern_bytes(model.n_heads, tokens.shape[1])
            s = got["scan"]
            step = fmt(ratio(s.seconds, scan_s[-1] if scan_s else None), "x")
            rows.append(
                [
                    T_real,
                    fmt(got["plain"].seconds, "s"),
                    fmt(s.seconds, "s"),
                    fmt(s.seconds / got["plain"].seconds, "x"),
                    step,
                    fmt(s.rss_extra, "MiB"),
                    fmt(s.mlx_extra, "MiB"),
                    fmt(one, "MiB"),
                    fmt(ratio(s.rss_extra, one), "x"),
                ]
            )
            Ts.append(T_real)
            scan_s.append(s.seconds)
        cab = fit(Ts, scan_s)
        note = "scan vs T/2: scan time over the scan time at half T; 2x is linear, 4x quadratic."
        if cab is not None:
            c, a, b = cab
            cross = f"T = {a / b:,.0f}" if a > 0 and b > 0 else "no T (a fitted term is <= 0)"
            note += (
                f" Fit: scan seconds = {c:.3g} + {a:.3g} * T + {b:.3g} * T^2; the quadratic "
                f"term overtakes the linear one at {cross}."
            )
        report.table(
            desc,
            [
                "T",
                "plain s",
                "scan s",
                "scan / plain",
                "scan vs T/2",
                "scan process peak MiB",
                "scan MLX peak MiB",
                "one layer's patterns MiB",
                "peak / patterns",
            ],
            rows,
            note,
        )
        del model
    report.finish()


if __name__ == "__main__":
    main()
