"""Tracing overhead: the plain mlx-lm forward against the traced forward and the induction scan.

For each model and T, on the same tokens ([BOS] + x + x, x = (T - 1) // 2 random tokens):
  plain      mx.eval(model.model(tokens)): mlx-lm as it runs without us;
  traced     `model.run(tokens)`: every layer's patterns (1, H, T, T) float32 kept;
  scan         detect.score_grid(model, kind="induction"): one forward, each layer's attention
               computed by blocks of query rows, each block scored in MLX as it comes and dropped;
  scan, numpy  whole patterns scored by the numpy reference (scores.induction on a float64 copy
               of each pattern), for comparison.
Targets (issue 8): traced <= 1.3x plain; scan <= 1.2x plain.

Usage: LD_PRELOAD=<OpenBLAS> python bench/bench_tracing.py [--quick] [--models ...] [--T ...]
"""

from __future__ import annotations

import numpy as np
from common import Report, compare, fmt, machine, parser
from models import load, repeated_tokens, scan_runs

TRACED_LIMIT, SCAN_LIMIT = 1.3, 1.2


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=None, help="default: bundled 1b-4bit-f32")
    p.add_argument("--T", type=int, nargs="+", default=None, help="default: 128 512 2048")
    args = p.parse_args(argv)
    models = args.models or (["tiny", "tiny-4bit"] if args.quick else ["bundled", "1b-4bit-f32"])
    sizes = args.T or ([64] if args.quick else [128, 512, 2048])

    report = Report("Tracing overhead", args)
    report.note("\n".join(f"- {k}: {v}" for k, v in machine().items()))
    for name in models:
        model, desc = load(name)
        rows, agree = [], []
        for T in sizes:
            tokens, n = repeated_tokens(model, T)
            fns = scan_runs(model, tokens, n)
            got = compare(fns, args)
            base = got["plain"].seconds
            for case, m in got.items():
                rows.append(
                    [
                        case,
                        tokens.shape[1],
                        fmt(m.seconds, "s"),
                        fmt(m.seconds / base, "x"),
                        fmt(m.rss_extra, "MiB"),
                        fmt(m.mlx_extra, "MiB"),
                        len(m.runs),
                    ]
                )
            agree.append(float(np.abs(fns["scan"]() - fns["scan, numpy"]()).max()))
            T_real = tokens.shape[1]
            report.target(
                f"{name}, T={T_real}: traced / plain", got["traced"].seconds / base, TRACED_LIMIT
            )
            report.target(
                f"{name}, T={T_real}: scan / plain", got["scan"].seconds / base, SCAN_LIMIT
            )
        report.table(
            desc,
            ["run", "T", "seconds", "vs plain", "process peak MiB", "MLX peak MiB", "n"],
            rows,
            "seconds: median of n runs; peaks: above the memory in use before the run. The two "
            f"scans' scores agree to {max(agree):.1e} (largest absolute difference).",
        )
        del model
    report.finish()


if __name__ == "__main__":
    main()
