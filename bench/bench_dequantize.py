"""Quantized layers on a CPU: the plain forward with the weights as stored against dequantized.

For each pair of models (default: SmolLM2-135M-Instruct with its Q4_1 layers as stored in the GGUF
file, "smollm2-q4", and dequantized to float32 on load, "smollm2", which is what
`InterpretableModel` does on a CPU) at each T, on the same tokens ([BOS] + x + x):
  plain  mx.eval(model.model(tokens)), the mlx-lm forward;
and, per model, the seconds to load it and its parameters' memory. MLX's CPU backend runs quantized
matmuls far slower than float32 ones; the ratio says how much. The largest difference of the two
models' logits (relative to the largest logit) shows they compute the same function.

Usage: LD_PRELOAD=<OpenBLAS> python bench/bench_dequantize.py [--quick] [--models Q:F ...] [--T ...]
"""

from __future__ import annotations

import time

import mlx.core as mx
import numpy as np
from common import BenchSetupError, Report, compare, fmt, machine, parser, settle
from models import MIB, load, nbytes, repeated_tokens


def pair_arg(text: str) -> tuple[str, str]:
    quantized, _, dequantized = text.partition(":")
    if not quantized or not dequantized:
        raise BenchSetupError(f"--models takes QUANTIZED:DEQUANTIZED pairs, got {text!r}")
    return quantized, dequantized


def timed_load(name: str):
    """(model, description, seconds to load and evaluate its parameters)."""
    settle()
    t0 = time.perf_counter()
    model, desc = load(name)
    return model, desc, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--models",
        nargs="+",
        type=pair_arg,
        default=None,
        help="QUANTIZED:DEQUANTIZED model names; default: smollm2-q4:smollm2",
    )
    p.add_argument("--T", type=int, nargs="+", default=None, help="default: 101 512")
    args = p.parse_args(argv)
    pairs = args.models or (
        [("tiny-4bit", "tiny-4bit-f32")] if args.quick else [("smollm2-q4", "smollm2")]
    )
    sizes = args.T or ([64] if args.quick else [101, 512])
    report = Report("Quantized vs dequantized weights on a CPU", args)
    report.note("\n".join(f"- {k}: {v}" for k, v in machine().items()))
    for q_name, f_name in pairs:
        timed_load(q_name)  # the first load in a process also imports mlx-lm's code: not timed
        quantized, q_desc, q_load = timed_load(q_name)
        dequantized, f_desc, f_load = timed_load(f_name)
        report.note(f"- {q_desc}\n- {f_desc}")
        rows = []
        for T in sizes:
            tokens, _ = repeated_tokens(quantized, T)
            logits: dict[str, mx.array] = {}  # the last run's logits of each model

            def forward(name, model, tokens=tokens, logits=logits):
                def run():
                    logits[name] = model.model(tokens)
                    mx.eval(logits[name])

                return run

            got = compare(
                {q_name: forward(q_name, quantized), f_name: forward(f_name, dequantized)}, args
            )
            a, b = (np.array(logits[n].astype(mx.float32)) for n in (q_name, f_name))
            diff = float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))
            logits.clear()
            base = got[f_name].seconds
            for name, m in got.items():
                rows.append(
                    [
                        name,
                        tokens.shape[1],
                        fmt(m.seconds, "s"),
                        fmt(m.seconds / base, "x"),
                        f"{diff:.1e}",
                        len(m.runs),
                    ]
                )
        report.table(
            f"Plain forward: {q_name} against {f_name}",
            ["model", "T", "seconds", "vs dequantized", "logits: largest difference", "n"],
            rows,
            "seconds: median of n runs; logits difference: max |a - b| / max(1, max |b|).",
        )
        report.table(
            f"Loading: {q_name} and {f_name}",
            ["model", "load seconds", "parameters MiB"],
            [
                [q_name, fmt(q_load, "s"), f"{nbytes(quantized) / MIB:,.1f}"],
                [f_name, fmt(f_load, "s"), f"{nbytes(dequantized) / MIB:,.1f}"],
            ],
            "load seconds: building the model and evaluating its parameters, once.",
        )
        del quantized, dequantized
    report.finish()


if __name__ == "__main__":
    main()
