"""The tutorial's API: get_attention_patterns, attention_heatmap and the single-head scores."""

from __future__ import annotations

import sys

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go
import pytest

from mlx_headwidget import InterpretableModel
from mlx_headwidget.testing import make_checkpoint
from mlx_headwidget.visualization import (
    AttentionVisualizationConfig,
    attention_heatmap,
    current_token_score,
    first_token_score,
    get_attention_patterns,
    induction_score,
    previous_token_score,
)

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

TEXT = "The cat sat on the mat"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> InterpretableModel:
    return InterpretableModel(str(make_checkpoint("llama", tmp_path_factory.mktemp("m"), seed=5)))


@pytest.fixture(scope="module")
def trace(model):
    with model.trace(TEXT) as trace:
        pass
    return trace


def test_get_attention_patterns(model, trace):
    patterns = get_attention_patterns(trace)
    assert sorted(patterns) == list(range(model.n_layers))
    T = len(model.to_str_tokens(TEXT))
    for layer, p in patterns.items():
        assert isinstance(p, np.ndarray) and p.dtype == np.float32
        assert p.shape == (1, model.n_heads, T, T)
        np.testing.assert_array_equal(p, np.array(trace.attention[layer]))
    assert list(get_attention_patterns(trace, layers=1)) == [1]
    assert list(get_attention_patterns(trace, layers=[1, 0])) == [1, 0]


def test_get_attention_patterns_uncaptured_layer(model):
    with model.trace(TEXT, capture=[0]) as partial:
        pass
    with pytest.raises(KeyError, match="layer 1 was not captured"):
        get_attention_patterns(partial, layers=[1])


def test_heatmap_accepts_4d_3d_2d(model, trace):
    p = get_attention_patterns(trace)[1]
    tokens = model.to_str_tokens(TEXT)
    figs = [
        attention_heatmap(p, tokens, head_idx=2),
        attention_heatmap(p[0], tokens, head_idx=2),
        attention_heatmap(p[0, 2], tokens),
    ]
    expected = np.where(np.triu(np.ones_like(p[0, 2], dtype=bool), k=1), np.nan, p[0, 2])
    for fig in figs:
        assert isinstance(fig, go.Figure)
        np.testing.assert_allclose(np.array(fig.data[0].z, dtype=float), expected, atol=1e-7)
    config = AttentionVisualizationConfig(mask_upper_tri=False, figure_width=500)
    fig = attention_heatmap(p, tokens, head_idx=2, title="L1H2", config=config)
    np.testing.assert_allclose(np.array(fig.data[0].z, dtype=float), p[0, 2], atol=1e-7)
    assert fig.layout.width == 500 and "L1H2" in fig.layout.title.text


def test_heatmap_matplotlib_backend(model, trace):
    p = get_attention_patterns(trace)[0]
    tokens = model.to_str_tokens(TEXT)
    fig = attention_heatmap(p, tokens, backend="matplotlib", title="L0H0")
    assert isinstance(fig, matplotlib.figure.Figure)
    image = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(
        image[np.tril_indices(len(tokens))], p[0, 0][np.tril_indices(len(tokens))]
    )
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == tokens


def test_heatmap_matplotlib_missing_says_how_to_install(monkeypatch, model, trace):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        attention_heatmap(
            get_attention_patterns(trace)[0], model.to_str_tokens(TEXT), backend="matplotlib"
        )


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((np.ones((3, 4)), ["a", "b", "c"]), {}, ValueError, "square"),
        ((np.ones((2, 2, 3, 3, 1)), ["a"]), {}, ValueError, "2-D, 3-D or 4-D"),
        ((np.eye(3), ["a", "b"]), {}, ValueError, "2 tokens for a pattern of 3"),
        ((np.ones((2, 3, 3)) / 3, ["a", "b", "c"]), {"head_idx": 5}, IndexError, "head_idx 5"),
        ((np.eye(3), ["a", "b", "c"]), {"backend": "bokeh"}, ValueError, "unknown backend"),
    ],
)
def test_heatmap_bad_input(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        attention_heatmap(*args, **kwargs)


def ideal_induction(n: int) -> np.ndarray:
    """x + x without BOS (T = 2n): second-copy row i attends to i - n + 1; others to themselves."""
    T = 2 * n
    a = np.eye(T)
    for i in range(n, T):
        a[i] = 0
        a[i, i - n + 1] = 1
    return a


def test_tutorial_scores_on_ideal_heads():
    assert induction_score(ideal_induction(6), 6) == 1.0
    prev = np.eye(5, k=-1)
    prev[0, 0] = 1
    assert previous_token_score(prev) == 1.0
    first = np.zeros((5, 5))
    first[:, 0] = 1
    assert first_token_score(first) == 1.0 and current_token_score(first) == pytest.approx(0.2)
    assert current_token_score(np.eye(5)) == 1.0 and first_token_score(np.eye(5)) == 0.2


def test_tutorial_scores_on_uniform_attention():
    T = 6
    uniform = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]
    assert first_token_score(uniform) == pytest.approx(np.mean(1 / np.arange(1, T + 1)))
    assert current_token_score(uniform) == pytest.approx(np.mean(1 / np.arange(1, T + 1)))
    assert previous_token_score(uniform) == pytest.approx(np.mean(1 / np.arange(2, T + 1)))
    # rows 3..5 of x + x with n = 3 look at i - 2, with weight 1 / (i + 1)
    assert induction_score(uniform, 3) == pytest.approx(np.mean([1 / 4, 1 / 5, 1 / 6]))


@pytest.mark.parametrize("seq_len, message", [(6, "not shorter"), (0, "positive integer")])
def test_induction_score_bad_seq_len(seq_len, message):
    with pytest.raises(ValueError, match=message):
        induction_score(np.eye(6), seq_len)
