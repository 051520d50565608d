"""Ablation cost: a forward with zero_heads on one head, or on a whole layer, against one forward.

For each model and T, on the same tokens ([BOS] + x + x):
  plain        mx.eval(model.model(tokens)): mlx-lm as it runs without us;
  no-op trace  model.run(tokens, capture=False): our forward path without an intervention;
  one head     model.run(tokens, interventions=iv.ablate_heads([(L, 0)]), capture=False);
  whole layer  the same with every head of layer L (L = the middle layer);
  widget       analysis.ablation_effect on one head with the clean result cached, as the widget
               answers a click (ablated forward, per-token losses, top-5 predictions); the clean
               run kept each layer's output, so the layers before the head's are replayed: for
               L0H0 (widget, layer 0) nothing is replayed, the worst case.
Targets: one head and whole layer <= 1.2x plain (issue 8); widget <= 1.5x plain (issue 6).

Usage: LD_PRELOAD=<OpenBLAS> python bench/bench_ablation.py [--quick] [--models ...] [--T ...]
"""

from __future__ import annotations

import mlx.core as mx
from common import Report, compare, fmt, machine, parser
from models import load, repeated_tokens

from mlx_headwidget import interventions as iv
from mlx_headwidget.analysis import ablation_effect

LIMIT = 1.2
WIDGET_LIMIT = 1.5


def cases(model, tokens: mx.array, layer: int) -> dict:
    def plain():
        logits = model.model(tokens)
        mx.eval(logits)
        return logits

    def traced(interventions):
        def run():
            return model.run(tokens, interventions=interventions, capture=False).logits

        return run

    one = iv.ablate_heads([(layer, 0)])
    whole = iv.ablate_heads([(layer, h) for h in range(model.n_heads)])
    clean = ablation_effect(model, tokens, [], keep_layer_outputs=True)

    def widget(head: tuple[int, int]):
        return lambda: ablation_effect(model, tokens, [head], baseline=clean)

    return {
        "plain": plain,
        "no-op trace": traced(None),
        f"one head (L{layer}H0)": traced(one),
        f"whole layer {layer}": traced(whole),
        f"widget (L{layer}H0)": widget((layer, 0)),
        "widget, layer 0 (L0H0)": widget((0, 0)),
    }


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=None, help="default: bundled 1b-4bit-f32")
    p.add_argument("--T", type=int, nargs="+", default=None, help="default: 128 512")
    args = p.parse_args(argv)
    models = args.models or (["tiny", "tiny-4bit"] if args.quick else ["bundled", "1b-4bit-f32"])
    sizes = args.T or ([32] if args.quick else [128, 512])
    report = Report("Ablation cost", args)
    report.note("\n".join(f"- {k}: {v}" for k, v in machine().items()))
    for name in models:
        model, desc = load(name)
        layer = model.n_layers // 2
        rows = []
        for T in sizes:
            tokens, _ = repeated_tokens(model, T)
            got = compare(cases(model, tokens, layer), args)
            base = got["plain"].seconds
            for case, m in got.items():
                rows.append(
                    [
                        case,
                        tokens.shape[1],
                        fmt(m.seconds, "s"),
                        fmt(m.seconds / base, "x"),
                        len(m.runs),
                    ]
                )
                if case not in ("plain", "no-op trace"):
                    limit = WIDGET_LIMIT if case.startswith("widget") else LIMIT
                    report.target(
                        f"{name}, T={tokens.shape[1]}: {case} / plain", m.seconds / base, limit
                    )
        report.table(
            desc, ["run", "T", "seconds", "vs plain", "n"], rows, "seconds: median of n runs."
        )
        del model
    report.finish()


if __name__ == "__main__":
    main()
