"""Write notebooks/01_induction_heads.ipynb and notebooks/02_widget_tour.ipynb (without outputs).

    python notebooks/build_notebooks.py notebooks [--model SOURCE]

SOURCE is the argument given to InterpretableModel in the notebooks' setup cells; without it the
notebooks load the bundled model (`InterpretableModel()`), which is what the repository stores.
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
def widget_notebook(source: str | None) -> nbformat.NotebookNode:
    load = model_call(source)
    cells = [
        md(
            """
# A tour of `HeadWidget`

`HeadWidget` puts every attention head of a model on one clickable grid, shows the attention of
the head you pick on your own text, and zero-ablates the heads you select to show what the model
loses without them. This tour runs it on the bundled model and drives it from Python, so every
step below also prints numbers you can check.

The widget needs a running kernel: run the cells (Run > Run All Cells) to bring it to life.
"""
        ),
        code(
            f"""
import numpy as np

from mlx_headwidget import InterpretableModel
from mlx_headwidget.widget import HeadWidget

model = {load}
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
HeadWidget("mlx-community/Llama-3.2-1B-Instruct-4bit")   # a Hugging Face hub id (downloaded once)
HeadWidget("/path/to/model")                              # a local mlx-lm folder (config.json + *.safetensors)
HeadWidget(InterpretableModel("/path/to/model"))          # a model you already loaded
```

Hub models are best run on a Mac, where MLX uses the GPU; on Linux MLX runs on the CPU, which
suits small models like the bundled one. A local folder is anything `mlx_lm.convert` writes or
`mlx_lm.load` reads. From a terminal, `python -m mlx_headwidget MODEL` prints the same induction
grid as text.
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
    ):
        nb = build(args.model)
        nbformat.validate(nb)
        nbformat.write(nb, args.out / name)
        print("wrote", args.out / name)


if __name__ == "__main__":
    main()
