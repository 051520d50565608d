"""The induction-head tutorial's own code, run against the bundled model.

BLOCKS are the tutorial's Python code blocks, copied verbatim from its text (parts 2 to 8). Before
running, `adapt` makes the changes listed in ADAPTATIONS, and nothing else: the import lines
(mlxterp -> mlx_headwidget), the model id (-> the bundled model), and the few constants that only
exist in the tutorial's 16-layer, 128k-token Llama-3.2-1B. PRELUDE defines the names the tutorial
uses without defining them. Each block runs after the setup block, in a fresh namespace, and the
test checks what it computed and printed.
"""

from __future__ import annotations

import contextlib
import io
import re

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")  # the tutorial draws with matplotlib; tests have no display

from matplotlib.figure import Figure  # noqa: E402

from mlx_headwidget import InterpretableModel, scores  # noqa: E402
from mlx_headwidget.detect import HEAD_TYPES, HeadScore, random_repeated_tokens  # noqa: E402

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

# (tutorial text, replacement): every entry must occur in BLOCKS (test_every_adaptation_applies)
ADAPTATIONS = [
    # the import lines
    ("from mlxterp import", "from mlx_headwidget import"),
    ("from mlxterp.visualization import", "from mlx_headwidget.visualization import"),
    # the model id: InterpretableModel(None) is the bundled model
    ('"mlx-community/Llama-3.2-1B-Instruct-4bit"', "None"),
    # Llama-3.2-1B has 16 layers, the bundled model 4: the tutorial's layer L is layer L * 4 // 16
    ("layers=[5]", "layers=[1]"),
    ("patterns[5]", "patterns[1]"),
    ("list(range(16))", "list(range(4))"),
    ('"model.model.layers.10.self_attn"', '"model.model.layers.2.self_attn"'),
    # random ids 5000 .. vocab_size - 5000 avoid the special and rare tokens of a 128k vocabulary;
    # the bundled vocabulary has 2048 tokens, of which ids 0 .. 258 are special and byte tokens
    ("np.random.randint(5000, vocab_size - 5000,", "np.random.randint(300, vocab_size - 300,"),
]

# Names the tutorial's code uses without defining them.
PRELUDE = """
import mlx.core as mx  # the "Complete Induction Score Heatmap" block uses mx without importing it
from mlx_headwidget import InterpretableModel as _Model

vocab_size = _Model().vocab_size  # used by the same block; the tutorial never defines it
del _Model
"""

BLOCKS = {
    "Part 2: Setup": r"""
from mlxterp import InterpretableModel
from mlxterp.visualization import (
    get_attention_patterns,
    attention_heatmap,
    detect_induction_heads,
    detect_head_types,
    induction_score,
    previous_token_score,
    AttentionVisualizationConfig,
)
import matplotlib.pyplot as plt
import numpy as np

# Load model
model = InterpretableModel("mlx-community/Llama-3.2-1B-Instruct-4bit")
""",
    "Part 2: Basic Attention Heatmap": r"""
text = "The cat sat on the mat"

with model.trace(text) as trace:
    pass

tokens = model.to_str_tokens(text)
patterns = get_attention_patterns(trace, layers=[5])

config = AttentionVisualizationConfig(colorscale="Blues", mask_upper_tri=True)
fig = attention_heatmap(
    patterns[5],
    tokens,
    head_idx=0,
    title="Layer 5, Head 0 Attention Pattern",
    backend="matplotlib",
    config=config
)
""",
    "Part 2: Comparing Attention Across Layers": r"""
text = "Hello world"
with model.trace(text) as trace:
    pass

tokens = model.to_str_tokens(text)
patterns = get_attention_patterns(trace)

# Create grid comparing early (L0) vs late (L12) layers
fig, axes = plt.subplots(2, 4, figsize=(16, 8))
# ... visualization code
""",
    "Part 3: Method 1: Using detect_induction_heads": r"""
# Detect induction heads across all layers
induction_heads = detect_induction_heads(
    model,
    n_random_tokens=50,    # Length of random sequence
    n_repeats=2,           # Repeat twice: [random tokens][random tokens]
    threshold=0.3,         # Score threshold
    seed=42                # For reproducibility
)

print(f"Found {len(induction_heads)} potential induction heads\n")

# Show top 10
print("Top Induction Heads:")
print("-" * 40)
for head in induction_heads[:10]:
    print(f"  Layer {head.layer:2d}, Head {head.head:2d}: score = {head.score:.3f}")
""",
    "Part 3: Complete Induction Score Heatmap": r"""
# Generate random repeated sequence
np.random.seed(42)
n_tokens = 30
random_tokens = np.random.randint(5000, vocab_size - 5000, size=n_tokens)
repeated = np.tile(random_tokens, 2)

token_ids = mx.array([repeated.tolist()])
with model.trace(token_ids) as trace:
    pass

patterns = get_attention_patterns(trace)

# Compute induction scores for all 16 layers × 32 heads
""",
    "Part 4: Head Type Distribution": r"""
head_types = detect_head_types(
    model,
    "The quick brown fox jumps over the lazy dog",
    threshold=0.3,
    layers=list(range(16))
)

print("Head Type Distribution:")
for head_type, heads in head_types.items():
    if heads:
        print(f"  {head_type}: {len(heads)} heads")
""",
    "Part 4: Previous Token Heads": r"""
text = "The quick brown fox"
with model.trace(text) as trace:
    pass

patterns = get_attention_patterns(trace, layers=[0, 1, 2, 3])

# Find head with highest previous_token_score
# Best: L0H2 with score 0.747
""",
    "Part 5: The K-Composition Mechanism": r"""
# Visualize the composition on repeated text
text = "ABC DEF ABC DEF"
with model.trace(text) as trace:
    pass

tokens = model.to_str_tokens(text)
patterns = get_attention_patterns(trace)
""",
    "Part 6: Comparing Pattern Scores Across Layers": r"""
text = "The quick brown fox jumps"
with model.trace(text) as trace:
    pass

patterns = get_attention_patterns(trace)

# Compute scores for all heads in layers 0, 4, 8, 12
fig, axes = plt.subplots(1, 4, figsize=(16, 4))
# ... (compute and plot previous_token and first_token scores)
""",
    "Part 7: Ablation Study": r"""
from mlxterp import interventions as iv

text = "The cat sat on the mat. The cat"

# Normal completion
with model.trace(text) as trace:
    normal_output = model.output.save()

normal_pred = model.get_token_predictions(normal_output[0, -1, :], top_k=1)
normal_token = model.token_to_str(normal_pred[0])
print(f"Normal prediction: '{normal_token}'")

# Ablate layer 10 attention (where we found strong induction heads)
with model.trace(text, interventions={"model.model.layers.10.self_attn": iv.zero_out}):
    ablated_output = model.output.save()

ablated_pred = model.get_token_predictions(ablated_output[0, -1, :], top_k=1)
ablated_token = model.token_to_str(ablated_pred[0])
print(f"After ablating L10 attention: '{ablated_token}'")
""",
    "Part 8: Complete Analysis Pipeline": r'''
def full_induction_analysis(model_name, save_prefix="induction"):
    """Complete induction head analysis for a model."""
    print("=" * 60)
    print(f"Induction Head Analysis: {model_name}")
    print("=" * 60)

    model = InterpretableModel(model_name)

    # 1. Detect induction heads
    induction_heads = detect_induction_heads(model, n_random_tokens=50, threshold=0.3)
    print(f"\nFound {len(induction_heads)} induction heads")
    for head in induction_heads[:5]:
        print(f"  L{head.layer}H{head.head}: {head.score:.3f}")

    # 2. Detect other head types
    head_types = detect_head_types(model, "Sample text", threshold=0.3)
    print(f"\nHead type distribution:")
    for htype, heads in head_types.items():
        if heads:
            print(f"  {htype}: {len(heads)} heads")

    # 3. Visualizations (saved to files)
    # ... (as shown in previous sections)

    return {
        'induction_heads': induction_heads,
        'head_types': head_types
    }

results = full_induction_analysis("mlx-community/Llama-3.2-1B-Instruct-4bit")
''',
}

SETUP = "Part 2: Setup"


def adapt(code: str) -> str:
    """The block with every ADAPTATIONS replacement made."""
    for old, new in ADAPTATIONS:
        code = code.replace(old, new)
    return code


def run(name: str) -> tuple[dict, str]:
    """Run PRELUDE, the setup block and block `name` in a fresh namespace: (namespace, stdout)."""
    namespace: dict = {"__name__": "tutorial"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(PRELUDE, "<prelude>", "exec"), namespace)
        for part in dict.fromkeys([SETUP, name]):
            exec(compile(adapt(BLOCKS[part]), f"<tutorial {part}>", "exec"), namespace)
    namespace["plt"].close("all")
    return namespace, out.getvalue()


def check_pattern(pattern: np.ndarray, T: int, n_heads: int = 8) -> None:
    assert pattern.shape == (1, n_heads, T, T)
    np.testing.assert_allclose(pattern.sum(-1), 1.0, atol=1e-4)
    assert np.all(np.triu(pattern[0], k=1) == 0)  # causal: nothing above the diagonal


# The detection functions score each layer by blocks of query rows during the forward; the checks
# below score the whole patterns of a plain trace with `scores` instead. Measured (2026-11-28, this
# bundled model, under OpenBLAS with its own and Haswell's kernels and under MLX's bundled BLAS):
# the two agree to 5e-19 in each run, the scores move by up to 3e-8 from one BLAS to another, no
# score lies within 3e-3 of the threshold 0.3 and the printed induction scores are 4e-4 apart.
# SCORE_ATOL leaves room for a GPU's other summation order; the margin checks below make a head on
# the threshold, or a tie, fail with a message instead of giving a count or order by chance.
SCORE_ATOL = 1e-5


def whole_patterns(model: InterpretableModel, tokens) -> list[np.ndarray]:
    """Every layer's patterns (H, T, T) of one sequence, from a plain trace."""
    with model.trace(tokens) as trace:
        pass
    return [np.array(trace.attention[layer][0]) for layer in range(model.n_layers)]


def head_type_scores(model: InterpretableModel, text: str) -> dict[str, np.ndarray]:
    """{kind: (layers, heads)} strict scores of each HEAD_TYPES kind on `text` (NaN: undefined)."""
    tokens = model.to_tokens(text)
    ids = np.array(tokens[0])
    patterns = whole_patterns(model, tokens)
    return {k: np.stack([scores.score(k, p, tokens=ids) for p in patterns]) for k in HEAD_TYPES}


def induction_scores(model: InterpretableModel, n: int, seeds=(42, 43, 44, 45)) -> np.ndarray:
    """(layers, heads) strict induction on [BOS] + x + x, |x| = n, mean over the seeds' x (the
    sequences detect_induction_heads draws with its defaults)."""
    grids = [
        np.stack(
            [
                scores.induction(p, seq_len=n, prepend_bos=True)
                for p in whole_patterns(model, random_repeated_tokens(model, n, 2, seed))
            ]
        )
        for seed in seeds
    ]
    return np.mean(grids, axis=0)


def heads_above(grid: np.ndarray, threshold: float = 0.3) -> list[tuple[int, int]]:
    """Heads scoring >= threshold, best first; fails if one is within SCORE_ATOL of the
    threshold (then whether it counts is not defined)."""
    values = grid[np.isfinite(grid)]
    assert not (np.abs(values - threshold) <= SCORE_ATOL).any(), "a head sits on the threshold"
    found = [(int(i), int(h)) for i, h in np.argwhere(np.nan_to_num(grid, nan=-1.0) >= threshold)]
    return sorted(found, key=lambda head: -grid[head])


def check_found(found: list[HeadScore], grid: np.ndarray) -> None:
    """`found`, a detection's result, is every head of `grid` >= 0.3 with its score, best first
    (heads within SCORE_ATOL of each other may come in either order)."""
    assert sorted((h.layer, h.head) for h in found) == sorted(heads_above(grid))
    got = [h.score for h in found]
    np.testing.assert_allclose(got, [grid[h.layer, h.head] for h in found], rtol=0, atol=SCORE_ATOL)
    assert got == sorted(got, reverse=True)


def test_every_adaptation_applies():
    code = "\n".join(BLOCKS.values())
    for old, _ in ADAPTATIONS:
        assert old in code, old
    adapted = "\n".join(adapt(c) for c in BLOCKS.values())
    assert "mlxterp" not in adapted and "Llama-3.2-1B" not in adapted


def test_setup():
    ns, _ = run(SETUP)
    model = ns["model"]
    assert isinstance(model, InterpretableModel)
    assert (model.n_layers, model.n_heads, model.vocab_size) == (4, 8, ns["vocab_size"])


def test_basic_attention_heatmap():
    ns, _ = run("Part 2: Basic Attention Heatmap")
    tokens = ns["tokens"]
    assert tokens[0] == ns["model"].token_to_str(ns["model"].bos_token_id)
    assert "".join(tokens[1:]) == "The cat sat on the mat"
    assert list(ns["patterns"]) == [1]
    check_pattern(ns["patterns"][1], len(tokens))
    fig = ns["fig"]
    assert isinstance(fig, Figure)
    assert fig.axes[0].get_title() == "Layer 5, Head 0 Attention Pattern"
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.ma.filled(shown, 0.0), ns["patterns"][1][0, 0], atol=1e-6)


def test_comparing_attention_across_layers():
    ns, _ = run("Part 2: Comparing Attention Across Layers")
    assert sorted(ns["patterns"]) == [0, 1, 2, 3]
    for pattern in ns["patterns"].values():
        check_pattern(pattern, len(ns["tokens"]))
    assert ns["axes"].shape == (2, 4)


def test_detect_induction_heads():
    ns, out = run("Part 3: Method 1: Using detect_induction_heads")
    heads = ns["induction_heads"]
    assert heads and all(isinstance(h, HeadScore) for h in heads)
    assert [h.score for h in heads] == sorted((h.score for h in heads), reverse=True)
    assert heads[-1].score >= 0.3
    lines = out.splitlines()
    assert lines[0] == f"Found {len(heads)} potential induction heads"
    assert lines[2:4] == ["Top Induction Heads:", "-" * 40]
    shown = [re.fullmatch(r"  Layer +(\d+), Head +(\d+): score = (0\.\d{3})", x) for x in lines[4:]]
    assert len(shown) == min(10, len(heads)) and all(shown)
    for match, head in zip(shown, heads, strict=False):
        assert (int(match[1]), int(match[2]), match[3]) == (
            head.layer,
            head.head,
            f"{head.score:.3f}",
        )


def test_complete_induction_score_heatmap():
    ns, _ = run("Part 3: Complete Induction Score Heatmap")
    ids = np.array(ns["token_ids"])
    assert ids.shape == (1, 60) and ids.min() >= 300 and ids.max() < ns["vocab_size"] - 300
    assert np.array_equal(ids[0, :30], ids[0, 30:])
    patterns = ns["patterns"]
    assert sorted(patterns) == [0, 1, 2, 3]
    for pattern in patterns.values():
        check_pattern(pattern, 60)
    # the step the tutorial leaves as a comment: its induction_score over every head
    grid = np.array(
        [[ns["induction_score"](patterns[i][0, h], 30) for h in range(8)] for i in range(4)]
    )
    assert grid.max() > 0.3  # the bundled model's induction heads light up


def test_head_type_distribution():
    ns, out = run("Part 4: Head Type Distribution")
    types = ns["head_types"]
    assert list(types) == list(HEAD_TYPES)
    grids = head_type_scores(ns["model"], "The quick brown fox jumps over the lazy dog")
    for kind in HEAD_TYPES:
        check_found(types[kind], grids[kind])
    expected = ["Head Type Distribution:"] + [
        f"  {kind}: {len(heads_above(grid))} heads" for kind, grid in grids.items()
    ]
    assert out.splitlines() == [line for line in expected if not line.endswith(": 0 heads")]
    assert types["previous_token"]


def test_previous_token_heads():
    ns, _ = run("Part 4: Previous Token Heads")
    patterns = ns["patterns"]
    assert sorted(patterns) == [0, 1, 2, 3]
    # the step the tutorial leaves as a comment: the head with the highest previous_token_score
    scores = {
        (i, h): ns["previous_token_score"](patterns[i][0, h]) for i in range(4) for h in range(8)
    }
    assert max(scores.values()) > 0.5


def test_k_composition_pattern():
    ns, _ = run("Part 5: The K-Composition Mechanism")
    tokens = ns["tokens"]
    assert "".join(tokens[1:]) == "ABC DEF ABC DEF"
    for pattern in ns["patterns"].values():
        check_pattern(pattern, len(tokens))


def test_pattern_scores_across_layers():
    ns, _ = run("Part 6: Comparing Pattern Scores Across Layers")
    assert sorted(ns["patterns"]) == [0, 1, 2, 3]
    assert ns["axes"].shape == (4,)


def test_ablation_study():
    ns, out = run("Part 7: Ablation Study")
    model = ns["model"]
    assert out.splitlines() == [
        f"Normal prediction: '{ns['normal_token']}'",
        f"After ablating L10 attention: '{ns['ablated_token']}'",
    ]
    for logits in (ns["normal_output"], ns["ablated_output"]):
        assert logits.shape == (1, len(model.to_str_tokens(ns["text"])), model.vocab_size)
    assert not np.allclose(np.array(ns["normal_output"]), np.array(ns["ablated_output"]))


def test_complete_analysis_pipeline():
    ns, out = run("Part 8: Complete Analysis Pipeline")
    results = ns["results"]
    assert sorted(results) == ["head_types", "induction_heads"]
    model = InterpretableModel()
    induction = induction_scores(model, n=50)
    check_found(results["induction_heads"], induction)
    grids = head_type_scores(model, "Sample text")
    for kind in HEAD_TYPES:
        check_found(results["head_types"][kind], grids[kind])
    top = heads_above(induction)
    assert top and induction[top[-1]] >= 0.3
    gaps = -np.diff([induction[head] for head in top[:6]])
    assert (gaps > SCORE_ATOL).all(), "two of the printed heads tie: their order is not defined"
    # what it printed, from these independent scores; each printed score within its rounding
    printed = re.compile(r"  L(\d+)H(\d+): (\d\.\d{3})")
    lines = out.splitlines()
    shown = [printed.fullmatch(line) for line in lines[5 : 5 + min(5, len(top))]]
    assert all(shown), lines
    assert [(int(m[1]), int(m[2])) for m in shown] == top[:5]
    for m in shown:
        assert abs(float(m[3]) - induction[int(m[1]), int(m[2])]) <= 5e-4 + SCORE_ATOL, m[0]
    shown = [printed.sub("  L#H#: #", line) for line in lines]
    kinds = [f"  {k}: {len(heads_above(g))} heads" for k, g in grids.items()]
    assert shown == [
        "=" * 60,
        "Induction Head Analysis: None",
        "=" * 60,
        "",
        f"Found {len(top)} induction heads",
        *["  L#H#: #"] * min(5, len(top)),
        "",
        "Head type distribution:",
        *[line for line in kinds if not line.endswith(": 0 heads")],
    ]
