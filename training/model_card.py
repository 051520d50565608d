"""Measure the bundled model and write its MODEL.md; every number in the card comes from this run.

python training/model_card.py [--folder mlx_headwidget/default_model]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlx_headwidget import InterpretableModel, tutorial
from mlx_headwidget import interventions as iv
from mlx_headwidget.analysis import ablation_effect
from mlx_headwidget.capture import capture_attention
from mlx_headwidget.detect import (
    detect_induction_heads,
    heads_grid,
    random_repeated_tokens,
    score_grid,
)

SEEDS = [42, 43, 44, 45]
N = 50


def second_copy_loss(model, heads) -> float:
    """Mean loss over the predictable second-copy positions of [BOS] + x + x, over SEEDS."""
    losses = []
    for seed in SEEDS:
        result = ablation_effect(model, random_repeated_tokens(model, N, 2, seed), heads)
        losses.append(result.token_loss_after[N + 1 : 2 * N].mean())
    return float(np.mean(losses))


def previous_token_grid(model) -> np.ndarray:
    """(layers, heads) previous-token scores on the same sequences, mean over SEEDS."""
    grids = [
        score_grid(model, random_repeated_tokens(model, N, 2, s), "previous_token") for s in SEEDS
    ]
    return np.mean(grids, axis=0)


def control_heads(model, induction) -> list[tuple[int, int]]:
    """Two heads outside the circuit, drawn at random (seed 0) from those scoring under 0.3 on
    both induction and previous-token (`mlx_headwidget.tutorial.control_heads`)."""
    grid = heads_grid(induction, (model.n_layers, model.n_heads))
    top = [(h.layer, h.head) for h in induction[:2]]
    return tutorial.control_heads(grid, previous_token_grid(model), 2, 0.3, exclude=top)


def rank_of(logits: mx.array, token: int) -> int:
    """0 for the top-1 token."""
    return int((logits > logits[token]).sum())


def sat_detail(model, text: str, word: str, heads: list) -> dict:
    """Where `word` ranks after `text`, clean and with the last layer's attention zeroed, and how
    much each of `heads` attends from the last token to the position after its earlier
    occurrence."""
    tokens = model.to_tokens(text)
    target = int(model.to_tokens(word, prepend_bos=False)[0, 0])
    ids = tokens[0].tolist()
    source = ids.index(ids[-1]) + 1  # the token after the first occurrence of the last token
    kept = {}
    logits = capture_attention(
        model, tokens, layers=sorted({h[0] for h in heads}), on_pattern=kept.__setitem__
    )
    last = f"model.model.layers.{model.n_layers - 1}.self_attn"
    trace = model.run(tokens, interventions={last: iv.zero_out}, capture=False)
    return {
        "rank": rank_of(logits[0, -1], target),
        "rank_last_layer_attention_zeroed": rank_of(trace.logits[0, -1], target),
        "attention": {h: float(kept[h[0]][0, h[1], -1, source]) for h in heads},
        "source": model.to_str_tokens(tokens)[source],
    }


def measure(folder: Path) -> dict:
    model = InterpretableModel(str(folder))
    heads = detect_induction_heads(
        model, n_random_tokens=N, threshold=0.0, seed=SEEDS[0], n_samples=len(SEEDS), progress=False
    )
    prev = previous_token_grid(model)
    top_prev = np.unravel_index(np.argmax(prev[: heads[0].layer]), prev[: heads[0].layer].shape)
    strong = [(h.layer, h.head) for h in heads if h.score >= 0.8]
    low = control_heads(model, heads)
    before = prev[: heads[0].layer]
    prev_heads = [np.unravel_index(i, before.shape) for i in np.argsort(before, None)[::-1][:2]]
    prev_heads = [(int(a), int(b)) for a, b in prev_heads]
    top = heads[0]
    by_length = {
        n: float(
            score_grid(model, kind="induction", n_random_tokens=n, n_samples=2)[top.layer, top.head]
        )
        for n in (10, 25, 50, 100, 200, 400)
    }
    text = "The cat sat on the mat. The cat"
    cat = ablation_effect(model, text, strong)
    cat_detail = sat_detail(model, text, " sat", strong)
    prompts = json.loads((folder / "training_log.json").read_text())["final"].get(
        "copy_prompts", []
    )
    copies = []
    for prompt, word in prompts:
        logits = model.model(model.to_tokens(prompt))[0, -1]
        copies.append(
            (prompt, word, rank_of(logits, int(model.to_tokens(word, prepend_bos=False)[0, 0])))
        )
    return {
        "copies": copies,
        "model": model,
        "heads": heads,
        "prev": prev,
        "top_prev": (int(top_prev[0]), int(top_prev[1])),
        "clean": second_copy_loss(model, []),
        "top_two": second_copy_loss(model, [(h.layer, h.head) for h in heads[:2]]),
        "low_two": second_copy_loss(model, low),
        "prev_heads": prev_heads,
        "prev_two": second_copy_loss(model, prev_heads),
        "low": low,
        "strong": strong,
        "cat": cat,
        "cat_detail": cat_detail,
        "by_length": by_length,
    }


def write_card(folder: Path, m: dict) -> str:
    model, heads, log = (
        m["model"],
        m["heads"],
        json.loads((folder / "training_log.json").read_text()),
    )
    final = log["final"]
    s = final["settings"]
    size = sum(f.stat().st_size for f in folder.iterdir() if f.suffix == ".safetensors")
    top = "\n".join(f"| L{h.layer}H{h.head} | {h.score:.3f} | {h.std:.3f} |" for h in heads[:6])
    lp, hp = m["top_prev"]
    cat = m["cat"]
    before = ", ".join(f"{t!r} {p:.2f}" for t, p in cat.top_before[:3])
    after = ", ".join(f"{t!r} {p:.2f}" for t, p in cat.top_after[:3])
    strong = ", ".join(f"L{a}H{b}" for a, b in m["strong"])
    low = ", ".join(f"L{a}H{b}" for a, b in m["low"])
    prevs = ", ".join(f"L{a}H{b}" for a, b in m["prev_heads"])
    tied = model.model.args.tie_word_embeddings
    embeddings = "tied embeddings" if tied else "separate input and output embeddings"
    lengths = ", ".join(f"{n}: {v:.2f}" for n, v in m["by_length"].items())
    top_name = f"L{heads[0].layer}H{heads[0].head}"
    return f"""# mlx_headwidget default model

A {model.n_layers}-layer Llama ({model.n_heads} query heads, {model.n_kv_heads} KV heads, width
{s["width"]}, MLP {s["mlp"]}, vocabulary {model.vocab_size}, RoPE, {embeddings},
{final["parameters"]:,} parameters, float16, {size / 2**20:.1f} MiB) trained from scratch on a CPU so that
mlx_headwidget has a model with real induction and previous-token heads that works without a network.
It is a teaching and testing model, not a useful language model.

## Data and licence
- English text: the docstrings of the Python {".".join(map(str, __import__("sys").version_info[:2]))}
  standard library and the pydoc topic pages (`pydoc_data.topics`), part of CPython, PSF licence.
- Synthetic sequences: [BOS] followed by a random block of {s["block_min"]}-{s["block_max"]} tokens
  repeated to fill the context.
{warmup_line(s)}{dropout_line(s)}- Phase 1 trains on the synthetic sequences only, until two heads score >= {s["target"]} on induction and an
  earlier-layer head >= {s["target"]} on previous-token. {phase2_line(final)}
- Tokenizer: byte-level BPE trained with `tokenizers` on the same text plus a list of common English
  words (so that prompts like "The cat sat on the mat" are whole-word tokens); `<|bos|>` is prepended.
- The weights and this card are released under the PSF licence of the text they were trained on.

## Training
`training/train_default_model.py` (seed {s["seed"]}): batch {s["batch"]} x {s["seq_len"]} tokens, Adam
{s["lr"]}, {final["steps"]} steps ({final["tokens"]:,} tokens), phase 1 ended at step
{final["phase1_end_step"]}; {final["train_time_s"] / 60:.1f} min of training on 2 CPU cores
({final["tokens_per_s"]:.0f} tokens/s, MLX with OpenBLAS), {final["wall_time_s"] / 60:.1f} min in all.
Final validation loss on held-out text {final["val_loss"]:.2f}; loss on the second copy of repeated
random tokens {final["repeat_loss"]:.2f}. `training_log.json` holds, at every evaluation step, the
losses and every head's induction and previous-token score (the phase-change curve).

## Heads (strict scores, [BOS] + {N} random tokens x 2, mean over seeds {SEEDS})
| head | induction | sd over seeds |
|---|---|---|
{top}

Best previous-token head before layer {heads[0].layer}: L{lp}H{hp}, score {m["prev"][lp, hp]:.3f}.

## Causal checks (measured by `training/model_card.py`)
- Loss on the second copy: clean {m["clean"]:.3f}; top two induction heads zero-ablated
  {m["top_two"]:.3f} ({m["top_two"] / m["clean"]:.1f}x); the top two previous-token heads ({prevs})
  ablated {m["prev_two"]:.3f} ({m["prev_two"] / m["clean"]:.1f}x: the circuit's first step); two
  heads outside the circuit, drawn at random ({low}), ablated {m["low_two"]:.3f}
  ({m["low_two"] / m["clean"]:.2f}x).
- "The cat sat on the mat. The cat": top predictions {before}; with the induction heads
  ({strong}) ablated: {after}.
{cat_line(m)}{copies_line(m)}

## What it can and cannot do
It copies: given [A][B] ... [A] it predicts [B], for any tokens. Strict induction score of {top_name}
by the length n of the repeated random block ([BOS] + x + x, two seeds): {lengths}. It writes
locally plausible docstring-like English and nothing more; it knows no facts. Context window
{model.context_length} positions (trained on sequences of {s["seq_len"]}).
{"" if tied else EMBEDDINGS_NOTE}"""


def cat_line(m: dict) -> str:
    d, L = m["cat_detail"], m["model"].n_layers - 1
    attention = ", ".join(f"L{a}H{b} {w:.2f}" for (a, b), w in d["attention"].items())
    if d["rank"] == 0:
        return (
            f"  The induction heads attend from the last token to {d['source']!r}: {attention}.\n"
        )
    return (
        f'  **Not met: " sat" is not the top-1 prediction (rank {d["rank"]}).** The induction heads do\n'
        f'  attend from the last " cat" to {d["source"]!r} ({attention}), but on English text the\n'
        f"  last layer's attention suppresses the copy: with layer {L}'s attention zeroed, \" sat\"\n"
        f"  ranks {d['rank_last_layer_attention_zeroed']}. On repeated random tokens (above) the copy goes through.\n"
    )


def phase2_line(final: dict) -> str:
    """Phase 2's mix and length, from the training log."""
    s = final["settings"]
    spans = (
        f"three spans of 2-12 tokens each written twice ({pct(s.get('text_span_fraction', 0))}% of "
        "the spans snippets of the text, the rest random ids)"
    )
    steps = final["steps"] - final["phase1_end_step"]
    stop = final.get("stopped_early_at_step")
    why = (
        f"of at most {s['phase2_steps']}, it stopped (at step {stop} in all) at the first evaluation "
        f'after {s["min_phase2_steps"]} phase-2 steps where "{final["copy_prompts"][0][0]}" '
        f'predicted "{final["copy_prompts"][0][1]}" top-1'
        if stop
        else "its full length (the copy check never stopped it early)"
    )
    return (
        f"Phase 2 trained {steps} steps on {pct(s['text_fraction'])}% text, "
        f"{pct(s.get('repeat_in_text_fraction', 0))}% text with {spans}, and the rest synthetic: {why}."
    )


def copies_line(m: dict) -> str:
    if not m["copies"]:
        return ""
    ranks = "; ".join(f'"{p}" -> {w!r} rank {r}' for p, w, r in m["copies"])
    return f"- Copying inside English, rank of the copied word (0 = top-1): {ranks}.\n"


def pct(x: float) -> int:
    return int(round(100 * x))


def warmup_line(s: dict) -> str:
    if not s.get("warmup_vocab") or not s.get("warmup_steps"):
        return ""
    block = s.get("warmup_block_max") or s["block_max"]
    return (
        f"- Warm-up: the first {s['warmup_steps']} steps draw the random blocks ({s['block_min']}-"
        f"{block} tokens) from the first {s['warmup_vocab']} token ids only: a smaller vocabulary\n"
        "  shortens the loss plateau before induction heads form.\n"
    )


def dropout_line(s: dict) -> str:
    out = ""
    if s.get("split_induction"):
        out += (
            "- Split: when the first induction head and an earlier previous-token head passed "
            f"{s['target']}, the\n  induction head was split into two identical heads (the other "
            "head of its KV group with the lowest\n  score took its query projection, and the two "
            "shared its output projection, half each). In a trial\n  without the split, the model "
            "kept a single induction head (next best 0.06) through 450 steps of head\n  dropout.\n"
        )
    if s.get("head_dropout"):
        out += (
            f"- Head dropout, from then on: in each layer of each training sequence, with "
            f"probability {s['head_dropout']},\n  one uniformly chosen head's output is zeroed "
            "(before o_proj), so each of the two induction\n  heads learns to copy on its own.\n"
        )
    return out


EMBEDDINGS_NOTE = """
## Why the embeddings are not tied
With tied input and output embeddings the freshly initialised model predicts its own input token
(at initialisation its logit is about 2.2 above the mean logit, whose spread is about 1.0, and it is
the top-1 prediction at 10-12% of positions of random text, against 0% untied), and in trials with this
architecture no induction head formed within 1,600 steps, tied, while the same model untied formed
them by step ~1,000 (2 layers, width 64, 4 heads, vocabulary 512, blocks of 4-24 tokens, 64-token
sequences, batch 32, Adam 1e-3; with or without BOS). The output head adds
width x vocabulary parameters (under 0.6 MB in float16).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parents[1] / "mlx_headwidget" / "default_model"
    parser.add_argument("--folder", type=Path, default=default)
    args = parser.parse_args()
    m = measure(args.folder)
    card = write_card(args.folder, m)
    (args.folder / "MODEL.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
