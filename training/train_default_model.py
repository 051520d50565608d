"""Train mlx_headwidget's bundled default model: a small Llama with real induction heads.

One command, fixed seed, CPU-friendly (2 cores, ~50 minutes with OpenBLAS preloaded on Linux):

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \
        python training/train_default_model.py --out mlx_headwidget/default_model --overwrite

Data (all available offline, redistributable):
- English text: the docstrings of the Python standard library and the pydoc topic pages
  (`pydoc_data.topics`), both part of CPython and under the PSF licence.
- Synthetic sequences: [BOS] followed by a random block of tokens repeated to fill the context
  (block lengths vary, so the copy must be found by content, not by position); and in phase 2
  also text rows with three spans of 2-12 tokens (random ids, or snippets of the text), each
  written into them twice, so that the model copies inside English too.

Schedule (defaults):
- phase 1 trains on repeated random blocks only. For the first --warmup-steps the blocks are short
  (4-24 tokens) and drawn from the first 512 token ids: a small vocabulary shortens the long loss
  plateau before the induction phase change (see MODEL.md). Then blocks of 4-64 from all ids.
- When the first induction head and an earlier previous-token head pass --target, that head is
  split into two identical heads (split_head), and from then on head dropout zeroes one random head
  per layer in half of the sequences, so each of the two learns to copy on its own. (Trained without
  the split, the model kept a single induction head, even with head dropout.)
- Phase 1 ends when two heads pass --target; phase 2 continues on a mix of text (30%), text with
  repeated spans (50%; half of the spans are snippets of the text itself, half random ids) and
  repeated random blocks (20%), so the model also models English and copies inside it. Phase 2
  runs at most --phase2-steps and stops early (after --min-phase2-steps) at the first evaluation
  where "The cat sat on the mat. The cat" predicts " sat" top-1 (the model card's target).
Every `--eval-every` steps the train/validation losses, the loss on the second copy of a repeated
sequence and every head's induction and previous-token score are logged to training_log.json;
`--keep-checkpoints` also keeps the weights of chosen evaluation steps (the phase-change timeline of
`mlx_headwidget.timeline` scans them). The bundled model's checkpoints were made with
    python training/train_default_model.py --out RUN --keep-checkpoints all --stop-after 1300
(OpenBLAS preloaded), which repeats the first 1,300 steps of its run; 11 of them, around the phase
change, ship in mlx_headwidget/default_model/checkpoints/ with that run's training_log.json.

Scores are measured with an explicit attention probe defined here (softmax(q k^T * scale) with the
causal mask, computed from the model's own post-RoPE queries and keys), using the project's strict
definitions: on [BOS] + x + x with |x| = n,
  induction(head)      = mean over the n second-copy rows i of A[i, i - n + 1]
  previous_token(head) = mean over rows i = 1..T-1 of A[i, i - 1]
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
import sysconfig
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map
from mlx_lm.models import llama
from mlx_lm.utils import save_config, save_model

from mlx_headwidget.capture import swap_attention

SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>"]

# Common English words given to the tokenizer trainer (not to the language model) so that everyday
# words in demo prompts ("The cat sat on the mat") are single tokens, as in real vocabularies.
TOKENIZER_SEED_WORDS = """
the a an and or but if then of to in on at by for with from as is are was were be been has
have had do does did not no yes it its this that these those there here he she they we you i
me my your his her their our who what when where why how all any some many much more most
few one two three four five six seven eight nine ten first last next new old good bad big
small long short high low hot cold cat dog fox bird fish cow horse mouse sat sit sits mat
hat bat rat car bus road house home door room table chair bed tree sun moon star sky sea
rain snow wind day night year time week morning evening man woman boy girl child king queen
friend mother father brother sister people name word book page quick brown lazy red blue
green black white yellow jumps jump jumped runs run ran walk walked went go goes come came
see saw look looked eat ate drink play played said say says hello world apple banana water
fire earth city country school teacher student work made make take took give gave get got
put
""".split()


def check_settings(args: argparse.Namespace) -> None:
    """Refuse nonsense model or training settings with a clear message."""
    problems = []
    if args.layers < 1:
        problems.append(f"--layers must be >= 1 (got {args.layers})")
    if args.heads < 1 or args.width % max(args.heads, 1):
        problems.append(f"--heads ({args.heads}) must be >= 1 and divide --width ({args.width})")
    if args.kv_heads < 1 or args.heads % max(args.kv_heads, 1):
        problems.append(
            f"--kv-heads ({args.kv_heads}) must be >= 1 and divide --heads ({args.heads})"
        )
    if args.vocab < 300:
        problems.append(f"--vocab must be >= 300 to hold the byte alphabet (got {args.vocab})")
    if not 2 <= args.block_min <= args.block_max < args.seq_len:
        problems.append("need 2 <= --block-min <= --block-max < --seq-len")
    if args.seq_len < 16 or args.batch < 1:
        problems.append("--seq-len must be >= 16 and --batch >= 1")
    if 2 * args.eval_block + 1 > args.seq_len * 4:
        problems.append("--eval-block too long for the context")
    if min(args.text_fraction, args.repeat_in_text_fraction) < 0 or (
        args.text_fraction + args.repeat_in_text_fraction > 1
    ):
        problems.append("--text-fraction and --repeat-in-text-fraction must be >= 0, sum <= 1")
    if not 0 <= args.min_phase2_steps <= args.phase2_steps:
        problems.append("need 0 <= --min-phase2-steps <= --phase2-steps")
    if not 0 <= args.text_span_fraction <= 1:
        problems.append(f"--text-span-fraction must be in [0, 1] (got {args.text_span_fraction})")
    if not 0 <= args.head_dropout < 1:
        problems.append(f"--head-dropout must be in [0, 1) (got {args.head_dropout})")
    if args.warmup_block_max and not args.block_min <= args.warmup_block_max < args.seq_len:
        problems.append(
            f"--warmup-block-max must be 0 or --block-min .. --seq-len - 1 "
            f"(got {args.warmup_block_max})"
        )
    if not 0 <= args.warmup_vocab <= args.vocab:  # ids past the vocabulary corrupt memory
        problems.append(
            f"--warmup-vocab must be 0 .. --vocab ({args.vocab}) (got {args.warmup_vocab})"
        )
    if args.stop_after < 0:
        problems.append(f"--stop-after must be >= 0 (got {args.stop_after})")
    if args.grow_from and not 2 <= args.grow_from < args.layers:
        problems.append(f"--grow-from must be 0 or 2 .. --layers - 1 (got {args.grow_from})")
    if problems:
        sys.exit("train_default_model.py: " + "; ".join(problems))


def stdlib_text() -> list[str]:
    """Docstrings of the Python standard library plus the pydoc topic pages (PSF licence)."""
    from pydoc_data import topics

    root = sysconfig.get_paths()["stdlib"]
    skip = {"test", "tests", "site-packages", "idlelib", "lib2to3", "__pycache__"}
    docs: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            try:
                tree = ast.parse(Path(dirpath, name).read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
                if isinstance(node, kinds):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) > 40:
                        docs.append(doc)
    docs += [topics.topics[k] for k in sorted(topics.topics)]
    return docs


def train_tokenizer(docs: list[str], vocab_size: int):
    """Byte-level BPE with a BOS token that the tokenizer prepends (as Llama's does)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    seed_text = [" ".join(f"{w} {w.capitalize()}" for w in TOKENIZER_SEED_WORDS)] * 400
    tok.train_from_iterator(docs + seed_text, trainer)
    bos = SPECIAL_TOKENS[0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return tok


def save_tokenizer(tok, out: Path, context: int) -> None:
    tok.save(str(out / "tokenizer.json"))
    bos, eos, pad = SPECIAL_TOKENS
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": pad,
        "add_bos_token": True,
        "model_max_length": context,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"bos_token": bos, "eos_token": eos, "pad_token": pad}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


class Batches:
    """Training batches: repeated random blocks and/or windows of the tokenized text."""

    def __init__(
        self,
        text_ids: np.ndarray,
        vocab: int,
        n_special: int,
        seq_len: int,
        seed: int,
        block: tuple[int, int] = (4, 24),
    ):
        self.text = text_ids
        self.block = block
        self.vocab, self.n_special, self.T = vocab, n_special, seq_len
        self.rng = np.random.default_rng(seed)

    def repeated(
        self, batch: int, vocab: int | None = None, block_max: int | None = None
    ) -> np.ndarray:
        """(batch, T + 1): BOS, then a random block of `block` tokens repeated to fill the row."""
        rows = np.empty((batch, self.T + 1), dtype=np.int32)
        for r in range(batch):
            n = int(self.rng.integers(self.block[0], (block_max or self.block[1]) + 1))
            block = self.rng.integers(self.n_special, vocab or self.vocab, size=n)
            rows[r, 0] = 0
            rows[r, 1:] = np.tile(block, self.T // n + 1)[: self.T]
        return rows

    def text_rows(self, batch: int) -> np.ndarray:
        """(batch, T + 1): BOS, then a random window of the text stream."""
        starts = self.rng.integers(0, len(self.text) - self.T, size=batch)
        rows = np.stack([self.text[s : s + self.T] for s in starts]).astype(np.int32)
        return np.concatenate([np.zeros((batch, 1), np.int32), rows], axis=1)

    def text_with_repeat(
        self, batch: int, spans: int = 3, text_span_fraction: float = 0.0
    ) -> np.ndarray:
        """(batch, T + 1): text rows, each with `spans` spans of 2-12 tokens written into it
        twice (the second copy later than the first, copies not overlapping), so that the
        model also copies inside English, where the text's own statistics would otherwise
        overrule the copy ("The cat sat on the mat. The cat" -> " sat"). A span is a
        snippet of the text stream with probability `text_span_fraction`, random ids
        otherwise."""
        rows = self.text_rows(batch)
        part = self.T // spans  # span k is written twice inside part k of the row
        for row in rows:
            for k in range(spans):
                n = int(self.rng.integers(2, min(12, part // 2 - 1) + 1))
                if self.rng.random() < text_span_fraction:
                    at = int(self.rng.integers(0, len(self.text) - n))
                    span = self.text[at : at + n]
                else:
                    span = self.rng.integers(self.n_special, self.vocab, size=n)
                lo = 1 + k * part
                first = int(self.rng.integers(lo, lo + part - 2 * n + 1))
                second = int(self.rng.integers(first + n, lo + part - n + 1))
                row[first : first + n] = span
                row[second : second + n] = span
        return rows

    def mixed(
        self,
        batch: int,
        text_fraction: float,
        repeat_in_text_fraction: float,
        text_span_fraction: float = 0.0,
    ) -> np.ndarray:
        """`text_fraction` text rows, `repeat_in_text_fraction` text rows with repeated spans
        (see text_with_repeat), the rest repeated random blocks."""
        n_text = int(round(batch * text_fraction))
        n_rep_text = int(round(batch * repeat_in_text_fraction))
        parts = [
            self.repeated(batch - n_text - n_rep_text),
            self.text_with_repeat(n_rep_text, text_span_fraction=text_span_fraction),
            self.text_rows(n_text),
        ]
        return np.concatenate(parts)


class HeadDropout:
    """Single-head dropout: in each layer and each training sequence, with probability `p`,
    zero the output of one uniformly chosen attention head (before o_proj).

    Without it the model builds one induction head and nothing else can copy; a model trained
    to survive losing any one head keeps a second one, as larger models do ("backup heads").
    """

    def __init__(self, model: llama.Model, p: float, seed: int):
        self.p, self.rng = p, np.random.default_rng(seed)
        self.layers = model.model.layers
        args = model.args
        self.n_heads = args.num_attention_heads
        self.head_dim = args.head_dim or args.hidden_size // args.num_attention_heads
        for layer in self.layers:
            layer.self_attn.o_proj = MaskedLinear.wrap(layer.self_attn.o_proj)

    def masks(self, batch: int) -> mx.array:
        """(layers, batch, 1, heads * head_dim) of 0/1: which head outputs are kept."""
        L, H = len(self.layers), self.n_heads
        keep = np.ones((L, batch, H), np.float32)
        drop = self.rng.random((L, batch)) < self.p
        which = self.rng.integers(0, H, size=(L, batch))
        keep[drop, which[drop]] = 0.0
        return mx.array(np.repeat(keep, self.head_dim, axis=-1)[:, :, None, :])

    def set(self, masks: mx.array | None) -> None:
        for i, layer in enumerate(self.layers):
            layer.self_attn.o_proj.slot.mask = None if masks is None else masks[i]


class MaskSlot:
    mask: mx.array | None = None


class MaskedLinear(nn.Linear):
    """nn.Linear (same parameter names) that multiplies its input by `slot.mask` when one is set."""

    @classmethod
    def wrap(cls, linear: nn.Linear) -> MaskedLinear:
        out = cls(1, 1, bias=False)
        out.update(linear.parameters())
        out.slot = MaskSlot()
        return out

    def __call__(self, x: mx.array) -> mx.array:
        mask = self.slot.mask
        return super().__call__(x if mask is None else x * mask.astype(x.dtype))


def explicit_attention_probe(patterns: list):
    """Stand-in for mlx-lm's shared attention: records softmax(q k^T * scale + causal mask)."""

    def sdpa(queries, keys, values, cache=None, scale=1.0, mask=None, sinks=None):
        B, H, T, D = queries.shape
        rep = H // keys.shape[1]
        k = mx.repeat(keys, rep, axis=1).astype(mx.float32)
        v = mx.repeat(values, rep, axis=1).astype(mx.float32)
        scores = (queries.astype(mx.float32) * scale) @ k.swapaxes(-1, -2)
        causal = mx.tril(mx.ones((T, T), dtype=mx.bool_))
        scores = mx.where(causal, scores, -mx.inf)
        pattern = mx.softmax(scores, axis=-1)
        patterns.append(pattern)
        return (pattern @ v).astype(queries.dtype)

    return sdpa


def measure_heads(model, vocab: int, n_special: int, n: int, seeds: list[int]):
    """Strict induction and previous-token scores (layers, heads), and the second-copy loss."""
    patterns: list = []
    with swap_attention(model, explicit_attention_probe(patterns)):
        ind, prev, losses = [], [], []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            x = rng.integers(n_special, vocab, size=n)
            ids = np.concatenate([[0], x, x]).astype(np.int32)
            patterns.clear()
            logits = model(mx.array(ids)[None])
            A = mx.stack(patterns)[:, 0]  # (L, H, T, T)
            rows = mx.arange(n + 1, 2 * n + 1)
            ind.append(np.array(A[:, :, rows, rows - n + 1].mean(axis=-1)))
            r = mx.arange(1, 2 * n + 1)
            prev.append(np.array(A[:, :, r, r - 1].mean(axis=-1)))
            lp = logits[0, n:-1] - mx.logsumexp(logits[0, n:-1], axis=-1, keepdims=True)
            target = mx.array(ids[n + 1 :])
            losses.append(float(-mx.take_along_axis(lp, target[:, None], axis=-1).mean()))
    return np.mean(ind, axis=0), np.mean(prev, axis=0), float(np.mean(losses))


COPY_PROMPTS = (
    ("The cat sat on the mat. The cat", " sat"),
    ("The dog ran to the park. The dog", " ran"),
    ("My friend Alice met Bob. Then Alice", " met"),
)


def copy_ranks(model, tok, bos: int) -> list[int]:
    """Rank of the expected next token after each of COPY_PROMPTS (0: the top-1 prediction):
    does the model copy inside English? The first prompt is the model card's target."""
    ranks = []
    for prompt, want in COPY_PROMPTS:
        ids = [bos] + tok.encode(prompt, add_special_tokens=False).ids
        logits = model(mx.array(ids, dtype=mx.int32)[None])[0, -1]
        expected = tok.encode(want, add_special_tokens=False).ids[0]
        ranks.append(int((logits > logits[expected]).sum()))
    return ranks


def circuit_found(ind: np.ndarray, prev: np.ndarray, target: float) -> bool:
    """Two heads with induction >= target, and a previous-token head >= target before them."""
    strong = np.argwhere(ind >= target)
    if len(strong) < 2:
        return False
    top_layer = np.unravel_index(np.argmax(ind), ind.shape)[0]
    return bool(top_layer > 0 and prev[:top_layer].max() >= target)


def first_induction_head(ind: np.ndarray, prev: np.ndarray, target: float) -> tuple | None:
    """(layer, head) of the top induction head once it and an earlier previous-token head pass
    `target`, else None."""
    layer, head = np.unravel_index(np.argmax(ind), ind.shape)
    if ind[layer, head] < target or layer == 0 or prev[:layer].max() < target:
        return None
    return int(layer), int(head)


def split_head(model: llama.Model, layer: int, head: int, ind: np.ndarray) -> int:
    """Split `head` of `layer` into two heads that compute exactly what it computed; returns the
    other head's index.

    The other head is the lowest-scoring head (by `ind`, (layers, heads)) sharing `head`'s KV
    head: it gets `head`'s query projection (so the same attention pattern on the same keys and
    values), and the two share `head`'s output projection, half each (Net2Net-style widening).
    The model's output changes only by the other head's previous contribution."""
    attn = model.model.layers[layer].self_attn
    H, KV = model.args.num_attention_heads, model.args.num_key_value_heads
    D = model.args.head_dim or model.args.hidden_size // H
    group = head // (H // KV)
    members = [h for h in range(group * (H // KV), (group + 1) * (H // KV)) if h != head]
    other = min(members, key=lambda h: ind[layer, h])
    src, dst = slice(head * D, (head + 1) * D), slice(other * D, (other + 1) * D)
    q = np.array(attn.q_proj.weight)
    q[dst] = q[src]
    o = np.array(attn.o_proj.weight)
    o[:, src] *= 0.5
    o[:, dst] = o[:, src]
    attn.q_proj.weight = mx.array(q)
    attn.o_proj.weight = mx.array(o)
    if "bias" in attn.q_proj:
        qb = np.array(attn.q_proj.bias)
        qb[dst] = qb[src]
        attn.q_proj.bias = mx.array(qb)
    return other


def grow(small: llama.Model, config: dict) -> llama.Model:
    """`small`'s layers, embeddings and head, with config's remaining layers stacked on top.

    The new layers' output projections (attention o_proj, MLP down_proj) start at zero, so the
    grown model computes exactly what `small` computes until training moves them."""
    big = llama.Model(llama.ModelArgs.from_dict(config))
    k = len(small.model.layers)
    weights = dict(tree_flatten(big.parameters()))
    weights.update(dict(tree_flatten(small.parameters())))
    for i in range(k, len(big.model.layers)):
        for name in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
            key = f"model.layers.{i}.{name}"
            weights[key] = mx.zeros_like(weights[key])
    big.load_weights(list(weights.items()))
    return big


def compiled_step(model: llama.Model, lr: float, dropout: HeadDropout | None = None):
    """(step(batch, masks) -> loss, state): one compiled Adam step on `model`.

    `masks` are HeadDropout.masks(batch) (ignored when `dropout` is None)."""
    optimizer = optim.Adam(learning_rate=lr)
    state = [model.state, optimizer.state]

    def step(batch, masks):
        if dropout is not None:
            dropout.set(masks)
        loss, grads = nn.value_and_grad(model, loss_fn)(model, batch)
        optimizer.update(model, grads)
        if dropout is not None:
            dropout.set(None)
        return loss

    return mx.compile(step, inputs=state, outputs=state), state


def padded(scores: np.ndarray, n_layers: int) -> list:
    """(layers, heads) scores as a list of n_layers rows; rows of layers not there yet are None."""
    rows = np.round(scores, 4).tolist()
    return rows + [None] * (n_layers - len(rows))


def loss_fn(model, batch):
    logits = model(batch[:, :-1])
    return nn.losses.cross_entropy(logits.astype(mx.float32), batch[:, 1:]).mean()


def text_loss(model, rows: np.ndarray) -> float:
    return float(loss_fn(model, mx.array(rows)))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("training/runs/default_model"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing model in --out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--mlp", type=int, default=256)
    p.add_argument(
        "--warmup-vocab",
        type=int,
        default=512,
        help="draw random blocks from the first N token ids during --warmup-steps (0: off)",
    )
    p.add_argument("--warmup-steps", type=int, default=1100)
    p.add_argument(
        "--warmup-block-max",
        type=int,
        default=24,
        help="longest repeated random block during --warmup-steps (0: --block-max)",
    )
    p.add_argument(
        "--head-dropout",
        type=float,
        default=0.5,
        help="once the first induction head passes --target: in each layer and training "
        "sequence, zero one random head's output with this probability, so that the model "
        "keeps backup heads (0: off)",
    )
    p.add_argument(
        "--grow-from",
        type=int,
        default=0,
        help="phase 0: train this many layers on repeated blocks (ids < --warmup-vocab if set) "
        "until they hold the circuit, then stack the remaining layers on top, initialised to "
        "pass the residual stream through unchanged (0: off)",
    )
    p.add_argument(
        "--split-induction",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="once the first induction head passes --target, split it into two identical heads "
        "(same KV head, output projection halved; see split_head), so that with --head-dropout "
        "each learns to copy alone",
    )
    p.add_argument("--block-min", type=int, default=4, help="shortest repeated random block")
    p.add_argument("--block-max", type=int, default=64, help="longest repeated random block")
    p.add_argument(
        "--init-from", type=Path, default=None, help="start from a model folder or checkpoint file"
    )
    p.add_argument(
        "--tie-embeddings",
        action="store_true",
        help="share the input embedding and the output head (off: with tied embeddings the "
        "model predicts its own input token at init, and no induction heads formed in trials)",
    )
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--context", type=int, default=2048, help="max_position_embeddings")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-phase1-steps", type=int, default=3000)
    p.add_argument(
        "--phase2-steps", type=int, default=3000, help="phase 2: at most this many steps"
    )
    p.add_argument(
        "--min-phase2-steps",
        type=int,
        default=300,
        help="phase 2 stops early, after at least this many steps, at the first evaluation where "
        "the first of COPY_PROMPTS predicts its copy top-1 (0: never stop early)",
    )
    p.add_argument("--text-fraction", type=float, default=0.3, help="phase 2: share of text rows")
    p.add_argument(
        "--repeat-in-text-fraction",
        type=float,
        default=0.5,
        help="phase 2: share of text rows with a random span written twice (the rest: repeated "
        "random blocks)",
    )
    p.add_argument(
        "--text-span-fraction",
        type=float,
        default=0.5,
        help="phase 2: share of the repeated spans in text rows that are snippets of the text "
        "itself (the rest: random ids)",
    )
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-block", type=int, default=50)
    p.add_argument("--target", type=float, default=0.85, help="score that ends phase 1")
    p.add_argument(
        "--keep-checkpoints",
        type=checkpoint_steps,
        default=(),
        metavar="all|STEP,STEP,..",
        help="keep the weights (float16) of these evaluation steps, or of all, as "
        "checkpoints/step_NNNNN.safetensors in --out, listed in training_log.json",
    )
    p.add_argument(
        "--stop-after",
        type=int,
        default=0,
        help="stop after this many steps (0: run the schedule to its end); to make checkpoints",
    )
    return p.parse_args(argv)


def checkpoint_steps(text: str) -> tuple[int, ...] | str:
    """--keep-checkpoints: "all", or steps separated by commas."""
    if text == "all":
        return text
    try:
        steps = tuple(sorted({int(s) for s in text.split(",") if s.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give 'all' or steps like 1000,1100") from None
    if not steps or steps[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: steps must be >= 1")
    return steps


def keep_checkpoint(model, out: Path, step: int, wanted: tuple[int, ...] | str) -> str | None:
    """Save the weights in float16 if `step` is wanted; returns the path in `out`, or None."""
    if wanted != "all" and step not in wanted:
        return None
    name = f"checkpoints/step_{step:05d}.safetensors"
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    weights = {k: v.astype(mx.float16) for k, v in tree_flatten(model.parameters())}
    mx.save_safetensors(str(out / name), weights, metadata={"step": str(step)})
    return name


def main(argv=None) -> None:
    args = parse_args(argv)
    check_settings(args)
    out: Path = args.out
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        sys.exit(f"train_default_model.py: {out} is not empty; pass --overwrite to replace it")
    t0 = time.time()
    mx.random.seed(args.seed)

    docs = stdlib_text()
    tok = train_tokenizer(docs, args.vocab)
    vocab = tok.get_vocab_size()
    n_special = len(SPECIAL_TOKENS)
    eos = tok.token_to_id(SPECIAL_TOKENS[1])
    stream = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        stream.extend(enc.ids + [eos])
    stream = np.array(stream, dtype=np.int32)
    split = int(len(stream) * 0.98)
    train_text, val_text = stream[:split], stream[split:]
    print(f"text: {len(docs)} documents, {len(stream)} tokens; vocab {vocab}", flush=True)

    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": args.width,
        "num_hidden_layers": args.layers,
        "intermediate_size": args.mlp,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": args.width // args.heads,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "max_position_embeddings": args.context,
        "rope_theta": 10000.0,
        "tie_word_embeddings": args.tie_embeddings,
        "bos_token_id": tok.token_to_id(SPECIAL_TOKENS[0]),
        "eos_token_id": eos,
        "pad_token_id": tok.token_to_id(SPECIAL_TOKENS[2]),
    }
    model = llama.Model(llama.ModelArgs.from_dict(config))
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    print(f"model: {n_params} parameters", flush=True)
    if args.grow_from:
        model = llama.Model(
            llama.ModelArgs.from_dict({**config, "num_hidden_layers": args.grow_from})
        )
        print(f"phase 0: {args.grow_from} layers until they hold the circuit", flush=True)

    if args.init_from is not None:
        init = args.init_from
        model.load_weights(str(init / "model.safetensors" if init.is_dir() else init))
        model.update(tree_map(lambda p: p.astype(mx.float32), model.parameters()))
    block = (args.block_min, args.block_max)
    data = Batches(train_text, vocab, n_special, args.seq_len, args.seed, block)
    val_rng = np.random.default_rng(args.seed + 1)
    val_starts = val_rng.integers(0, len(val_text) - args.seq_len, size=32)
    val_rows = np.stack([val_text[s : s + args.seq_len + 1] for s in val_starts])
    val_rows[:, 0] = 0
    step, state = compiled_step(model, args.lr)
    log = {
        "steps": [],
        "phase": [],
        "train_loss": [],
        "val_loss": [],
        "repeat_loss": [],
        "induction": [],
        "previous_token": [],
        "elapsed_s": [],
        "tokens_per_s": [],
        "copy_ranks": [],
        "checkpoints": [],
    }
    eval_seeds = [1000, 1001, 1002, 1003]
    phase, phase1_end, grown_at, s, running, tokens = 1, None, None, 0, [], 0
    if args.grow_from:
        phase = 0
    dropout: HeadDropout | None = None
    first_head, split_at, stopped_early = None, None, None
    t_train = time.time()
    total_max = args.max_phase1_steps + args.phase2_steps
    if args.stop_after:
        total_max = min(total_max, args.stop_after)
    while s < total_max:
        warm = s < args.warmup_steps
        if phase == 0:
            batch = data.repeated(args.batch, args.warmup_vocab or None)
        elif phase == 1:
            small = args.warmup_vocab if warm else None
            batch = data.repeated(args.batch, small, args.warmup_block_max if warm else None)
        else:
            batch = data.mixed(
                args.batch,
                args.text_fraction,
                args.repeat_in_text_fraction,
                args.text_span_fraction,
            )
        masks = dropout.masks(len(batch)) if dropout is not None else mx.zeros((1,))
        loss = step(mx.array(batch), masks)
        mx.eval(state)
        running.append(float(loss))
        tokens += batch.size - batch.shape[0]
        s += 1
        if s % args.eval_every == 0 or s == total_max:
            warming = args.warmup_vocab > 0 and (
                phase == 0 or (phase == 1 and s <= args.warmup_steps)
            )
            eval_vocab = args.warmup_vocab if warming else vocab
            ind, prev, rep_loss = measure_heads(
                model, eval_vocab, n_special, args.eval_block, eval_seeds
            )
            elapsed = time.time() - t_train
            log["steps"].append(s)
            log["phase"].append(phase)
            log["train_loss"].append(float(np.mean(running)))
            log["val_loss"].append(text_loss(model, val_rows))
            log["repeat_loss"].append(rep_loss)
            log["induction"].append(padded(ind, args.layers))
            log["previous_token"].append(padded(prev, args.layers))
            log["elapsed_s"].append(round(elapsed, 1))
            log["tokens_per_s"].append(round(tokens / elapsed, 1))
            ranks = copy_ranks(model, tok, config["bos_token_id"])
            log["copy_ranks"].append(ranks)
            running = []
            out.mkdir(parents=True, exist_ok=True)
            weights = dict(tree_flatten(model.parameters()))
            mx.save_safetensors(str(out / "checkpoint.safetensors"), weights)
            kept = keep_checkpoint(model, out, s, args.keep_checkpoints)
            log["checkpoints"].append(kept)
            print(
                f"step {s:5d} phase {phase} train {log['train_loss'][-1]:.3f} "
                f"val {log['val_loss'][-1]:.3f} repeat {rep_loss:.3f} "
                f"induction top two {' '.join(f'{v:.3f}' for v in np.sort(ind, None)[-2:][::-1])} "
                f"max prev {prev.max():.3f} copy ranks {ranks} "
                f"{tokens / elapsed:.0f} tok/s {elapsed / 60:.1f} min"
                + (f" (scores on ids < {eval_vocab})" if warming else ""),
                flush=True,
            )
            if phase == 0 and circuit_found(ind, prev, args.target):
                model, grown_at, phase = grow(model, config), s, 1
                step, state = compiled_step(model, args.lr)
                print(
                    f"circuit found in {args.grow_from} layers at step {s}; grown to "
                    f"{args.layers} layers; phase 1 (all ids)",
                    flush=True,
                )
            elif phase == 1 and not warming:
                if first_head is None:
                    first_head = first_induction_head(ind, prev, args.target)
                    if first_head is not None:
                        layer, head = first_head
                        print(f"step {s}: first induction head L{layer}H{head}", flush=True)
                        if args.split_induction and not circuit_found(ind, prev, args.target):
                            other, split_at = split_head(model, layer, head, ind), s
                            print(f"step {s}: split it into L{layer}H{head} and L{layer}H{other}")
                        if args.head_dropout:
                            dropout = HeadDropout(model, args.head_dropout, args.seed + 2)
                            print(f"step {s}: head dropout {args.head_dropout} from here on")
                        step, state = compiled_step(model, args.lr, dropout)
                if circuit_found(ind, prev, args.target):
                    phase, phase1_end = 2, s
                    total_max = min(s + args.phase2_steps, args.stop_after or math.inf)
                    print(f"induction circuit found at step {s}; phase 2 (text mix)", flush=True)
            elif phase == 2 and args.min_phase2_steps and s - phase1_end >= args.min_phase2_steps:
                if ranks[0] == 0 and circuit_found(ind, prev, args.target):
                    stopped_early = s
                    print(f"step {s}: {COPY_PROMPTS[0][0]!r} -> top-1 copy; done", flush=True)
                    break
    if phase1_end is None:
        print("warning: phase 1 ended without reaching the target scores", flush=True)

    model.update(tree_map(lambda p: p.astype(mx.float16), model.parameters()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoint.safetensors").unlink(missing_ok=True)
    save_model(out, model)
    (out / "model.safetensors.index.json").unlink(missing_ok=True)
    config["torch_dtype"] = "float16"
    save_config(dict(config), out / "config.json")
    save_tokenizer(tok, out, args.context)
    ind, prev, rep_loss = measure_heads(model, vocab, n_special, args.eval_block, eval_seeds)
    wall = time.time() - t0
    log["final"] = {
        "dtype": "float16",
        "induction": np.round(ind, 4).tolist(),
        "previous_token": np.round(prev, 4).tolist(),
        "repeat_loss": rep_loss,
        "val_loss": text_loss(model, val_rows),
        "phase1_end_step": phase1_end,
        "grown_at_step": grown_at,
        "first_induction_head": first_head,
        "split_at_step": split_at,
        "stopped_early_at_step": stopped_early,
        "copy_prompts": [list(p) for p in COPY_PROMPTS],
        "copy_ranks": copy_ranks(model, tok, config["bos_token_id"]),
        "steps": s,
        "tokens": int(tokens),
        "wall_time_s": round(wall, 1),
        "train_time_s": round(time.time() - t_train, 1),
        "tokens_per_s": round(tokens / (time.time() - t_train), 1),
        "parameters": int(n_params),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "eval_seeds": eval_seeds,
        "math": "float32 evaluation of float16 weights",
    }
    (out / "training_log.json").write_text(json.dumps(log) + "\n")
    print(f"saved to {out} in {wall / 60:.1f} min; final max induction {ind.max():.3f}", flush=True)
    if math.isnan(rep_loss):
        sys.exit("training diverged")


if __name__ == "__main__":
    main()
