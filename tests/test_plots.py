from __future__ import annotations

import base64
import html
import json

import mlx.core as mx
import numpy as np
import plotly.graph_objects as go
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlx_headwidget import plots


def causal_pattern(T: int, seed: int = 0) -> np.ndarray:
    """A random causal attention pattern (T, T): rows sum to 1, zero above the diagonal."""
    rng = np.random.default_rng(seed)
    a = np.tril(rng.random((T, T)) + 0.01)
    return a / a.sum(axis=1, keepdims=True)


def subplot_count(fig: go.Figure) -> int:
    return sum(1 for key in fig.layout.to_plotly_json() if key.startswith("xaxis"))


# token_label


def test_token_label_escapes_html_and_tex_and_shows_whitespace():
    assert plots.token_label("<b>a&b</b>") == "&lt;b&gt;a&amp;b&lt;/b&gt;"
    assert plots.token_label("$x$") == "&#36;x&#36;"
    assert plots.token_label(" the\n\t\r") == "␣the↵⇥␍"
    assert plots.token_label("\u00a0") == "·"
    assert plots.token_label("&amp;") == "&amp;amp;"
    assert plots.token_label("\x00\x1b\x7f") == "␀␛␡"


@given(st.text())
def test_token_label_output_is_inert_and_decodes_to_the_visible_token(token):
    label = plots.token_label(token)
    assert not any(ch in label for ch in "<>$") and not any(ch.isspace() for ch in label)
    visible = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
    control = {chr(i): chr(0x2400 + i) for i in range(32)} | {"\x7f": "␡"}
    expected = "".join(visible.get(c, "·") if c.isspace() else control.get(c, c) for c in token)
    assert html.unescape(label) == expected


# attention_heatmap


def test_heatmap_z_is_the_pattern_with_nan_above_the_diagonal():
    a = causal_pattern(5)
    before = a.copy()
    fig = plots.attention_heatmap(a, list("abcde"))
    expected = a.copy()
    expected[np.triu_indices(5, k=1)] = np.nan
    np.testing.assert_array_equal(np.asarray(fig.data[0].z, dtype=float), expected)
    np.testing.assert_array_equal(a, before)
    assert fig.data[0].hoverongaps is False
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.coloraxis.cmax is None and fig.data[0].zmax == pytest.approx(a.max())


def test_heatmap_without_mask_keeps_every_value_and_honours_options():
    a = causal_pattern(4)
    fig = plots.attention_heatmap(
        a,
        list("abcd"),
        mask_upper_tri=False,
        zmax=0.5,
        title="T",
        width=300,
        height=200,
        colorscale="Reds",
        show_colorbar=False,
    )
    np.testing.assert_array_equal(np.asarray(fig.data[0].z, dtype=float), a)
    assert fig.data[0].zmax == 0.5 and fig.data[0].zmin == 0.0 and fig.data[0].showscale is False
    assert fig.layout.title.text == "T" and (fig.layout.width, fig.layout.height) == (300, 200)


def test_heatmap_repeated_tokens_keep_their_own_positions():
    tokens = ["<s>", "the", " cat", "the", " cat"]
    fig = plots.attention_heatmap(causal_pattern(5), tokens)
    for axis in (fig.layout.xaxis, fig.layout.yaxis):
        assert list(axis.tickvals) == [0, 1, 2, 3, 4]
        assert list(axis.ticktext) == ["&lt;s&gt;", "the", "␣cat", "the", "␣cat"]
    assert list(fig.data[0].x) == [0, 1, 2, 3, 4] and list(fig.data[0].y) == [0, 1, 2, 3, 4]


def test_heatmap_hover_names_query_key_and_value():
    a = np.tril(np.full((3, 3), 1 / 3))
    a[2] = [0.5, 0.25, 0.25]
    fig = plots.attention_heatmap(a, ["<b>", "a b", "x\n"])
    hover = fig.data[0].hovertext
    assert hover[2][1] == "query 'x↵' (2) -> key 'a␣b' (1): 0.250"
    assert hover[1][0] == "query 'a␣b' (1) -> key '&lt;b&gt;' (0): 0.333"
    assert hover[0][2] == ""
    assert fig.data[0].hovertemplate == "%{hovertext}<extra></extra>"


def test_heatmap_accepts_mx_arrays_including_bfloat16():
    a = causal_pattern(4).astype(np.float32)
    for dtype in (mx.float32, mx.bfloat16):
        fig = plots.attention_heatmap(mx.array(a).astype(dtype), list("abcd"))
        z = np.asarray(fig.data[0].z, dtype=float)
        np.testing.assert_allclose(np.tril(z), np.tril(a), atol=4e-3)


@pytest.mark.parametrize(
    ("pattern", "tokens", "error", "message"),
    [
        (np.ones((3, 4)), list("abc"), ValueError, r"square \(T, T\).*\(3, 4\)"),
        (np.ones((2, 3, 3)), list("abc"), ValueError, r"square .*\(2, 3, 3\)"),
        (np.ones((0, 0)), [], ValueError, "T >= 1"),
        (np.eye(3), list("ab"), ValueError, "2 tokens for a pattern of 3 positions"),
        (np.eye(3), "abc", TypeError, "list of strings, got str"),
        (np.eye(3), ["a", 7, "c"], TypeError, r"tokens\[1\] is int 7"),
        (np.array([["a"]]), ["a"], TypeError, "numeric numpy or mx array"),
    ],
)
def test_heatmap_bad_input(pattern, tokens, error, message):
    with pytest.raises(error, match=message):
        plots.attention_heatmap(pattern, tokens)


# attention_grid


def test_grid_draws_the_chosen_heads_on_one_colour_scale():
    patterns = np.stack([causal_pattern(4, seed) for seed in range(6)])
    fig = plots.attention_grid(patterns, list("abcd"), heads=[5, 0, 3], n_cols=2, layer=7)
    assert len(fig.data) == 3 and subplot_count(fig) == 4
    assert [a.text for a in fig.layout.annotations] == ["L7H5", "L7H0", "L7H3"]
    for trace, h in zip(fig.data, [5, 0, 3], strict=True):
        expected = np.where(np.triu(np.ones((4, 4)), k=1) == 1, np.nan, patterns[h])
        np.testing.assert_array_equal(np.asarray(trace.z, dtype=float), expected)
        assert trace.coloraxis == "coloraxis"
    assert fig.layout.coloraxis.cmax == pytest.approx(np.tril(patterns[[5, 0, 3]]).max())
    assert fig.data[1].hovertext[1][0].startswith("L7H0: query 'b' (1) -> key 'a' (0): ")
    assert fig.data[2].xaxis == "x3" and fig.layout.yaxis3.autorange == "reversed"
    titles = [
        (ax.title.text, ay.title.text)
        for ax, ay in [
            (fig.layout.xaxis, fig.layout.yaxis),
            (fig.layout.xaxis2, fig.layout.yaxis2),
            (fig.layout.xaxis3, fig.layout.yaxis3),
        ]
    ]
    assert titles == [(None, "query"), ("key", None), ("key", "query")]


def test_grid_defaults_to_every_head_and_custom_titles():
    patterns = np.stack([causal_pattern(3, seed) for seed in range(5)])
    fig = plots.attention_grid(patterns, list("abc"))
    assert len(fig.data) == 5 and subplot_count(fig) == 8
    assert fig.layout.annotations[4].text == "H4"
    fig = plots.attention_grid(patterns, list("abc"), heads=[1, 2], titles=["one", "two"])
    assert [a.text for a in fig.layout.annotations] == ["one", "two"] and subplot_count(fig) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(patterns=np.eye(3)), r"\(n_heads, T, T\).*\(3, 3\)"),
        (dict(heads=[0, 4]), r"heads contains 4; valid indices are integers 0\.\.3"),
        (dict(heads=[]), "heads is empty"),
        (dict(n_cols=0), "n_cols must be a positive integer, got 0"),
        (dict(heads=[0, 1], titles=["x"]), "1 titles for 2 heads"),
        (dict(tokens=list("ab")), "2 tokens for a pattern of 3 positions"),
    ],
)
def test_grid_bad_input(kwargs, message):
    args = dict(patterns=np.stack([np.eye(3)] * 4), tokens=list("abc")) | kwargs
    with pytest.raises(ValueError, match=message):
        plots.attention_grid(**args)


# score_heatmap and max_score_per_layer


def test_score_heatmap_cells_labels_and_hover():
    s = np.arange(12, dtype=float).reshape(3, 4) / 12
    s[0, 1] = np.nan
    fig = plots.score_heatmap(s, kind="induction")
    np.testing.assert_array_equal(np.asarray(fig.data[0].z, dtype=float), s)
    assert list(fig.layout.xaxis.ticktext) == ["H0", "H1", "H2", "H3"]
    assert list(fig.layout.yaxis.ticktext) == ["L0", "L1", "L2"]
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.data[0].hovertext[2][3] == "L2H3 induction 0.917"
    assert fig.data[0].hovertext[0][1] == ""
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0.0, 1.0)
    fig = plots.score_heatmap(s, kind="<i>dup token")
    assert fig.data[0].hovertext[1][0] == f"L1H0 &lt;i&gt;dup token {s[1, 0]:.3f}"


def test_max_score_per_layer_bars_are_the_maxima_and_hover_names_the_argmax():
    rng = np.random.default_rng(3)
    s = rng.random((5, 6))
    s[2, 4] = np.nan
    s[4] = np.nan
    fig = plots.max_score_per_layer(mx.array(s.astype(np.float32)), kind="previous_token")
    bars = np.asarray(fig.data[0].y, dtype=float)
    np.testing.assert_allclose(bars[:4], np.nanmax(s[:4].astype(np.float32), axis=1))
    assert np.isnan(bars[4])
    heads = list(fig.data[0].customdata)
    assert heads[:4] == list(np.nanargmax(s[:4], axis=1)) and heads[4] == -1
    h = heads[1]
    assert fig.data[0].hovertext[1] == f"L1 max previous_token {s[1, h]:.3f} (L1H{h})"
    assert fig.data[0].hovertext[4] == "L4: no previous_token score"
    assert list(fig.layout.xaxis.ticktext) == ["L0", "L1", "L2", "L3", "L4"]


@pytest.mark.parametrize("figure", [plots.score_heatmap, plots.max_score_per_layer])
@pytest.mark.parametrize("scores", [np.ones(4), np.ones((2, 3, 4)), np.ones((0, 3))])
def test_score_figures_reject_scores_that_are_not_layer_by_head(figure, scores):
    with pytest.raises(ValueError, match=r"\(n_layers, n_heads\) array, got shape"):
        figure(scores)


# head_type_distribution


def test_head_type_distribution_counts_and_lists():
    counts = {"previous_token": 12, "first_token": [(0, 1), (0, 2)], "current_token": 0}
    fig = plots.head_type_distribution(counts)
    assert list(fig.data[0].x) == ["previous_token", "first_token", "current_token"]
    assert list(fig.data[0].y) == [12, 2, 0]
    assert fig.data[0].hovertext[1] == "first_token: 2 heads"


@pytest.mark.parametrize(
    ("counts", "error", "message"),
    [
        ({"induction": -1}, ValueError, "'induction' must be a non-negative int"),
        ({"induction": 1.5}, ValueError, "non-negative int or a list, got 1.5"),
        ([("induction", 3)], TypeError, "counts must be a dict"),
    ],
)
def test_head_type_distribution_bad_input(counts, error, message):
    with pytest.raises(error, match=message):
        plots.head_type_distribution(counts)


# score_comparison


def test_score_comparison_one_subplot_per_layer_blue_then_red():
    rng = np.random.default_rng(1)
    prev, first = rng.random((6, 4)), rng.random((6, 4))
    fig = plots.score_comparison(prev, first, [0, 2, 5], n_cols=2)
    assert len(fig.data) == 6 and subplot_count(fig) == 4
    assert [a.text for a in fig.layout.annotations] == ["Layer 0", "Layer 2", "Layer 5"]
    assert fig.layout.barmode == "group"
    for k, layer in enumerate([0, 2, 5]):
        blue, red = fig.data[2 * k], fig.data[2 * k + 1]
        np.testing.assert_array_equal(np.asarray(blue.y, dtype=float), prev[layer])
        np.testing.assert_array_equal(np.asarray(red.y, dtype=float), first[layer])
        assert (blue.marker.color, red.marker.color) == (plots.BLUE, plots.RED)
        assert (blue.name, red.name) == ("previous_token", "first_token")
        assert blue.showlegend is (k == 0) and red.showlegend is (k == 0)
    assert fig.data[3].hovertext[1] == f"L2H1 first_token {first[2, 1]:.3f}"
    assert fig.layout.yaxis3.matches == "y"


@pytest.mark.parametrize(
    ("second", "layers", "message"),
    [
        (np.ones((3, 5)), [0], r"first \(3, 4\) and second \(3, 5\)"),
        (np.ones((3, 4)), [3], r"layers contains 3; valid indices are integers 0\.\.2"),
        (np.ones((3, 4)), [], "layers is empty"),
        (np.ones(4), [0], r"second must be a \(n_layers, n_heads\) array"),
    ],
)
def test_score_comparison_bad_input(second, layers, message):
    with pytest.raises(ValueError, match=message):
        plots.score_comparison(np.ones((3, 4)), second, layers)


# training_curves


def training_log() -> dict:
    induction = [[[0.1, 0.0], [0.05, 0.2]], [[0.1, 0.3], [0.9, 0.2]], [[0.2, 0.3], [0.95, None]]]
    previous = [[[0.5, 0.1], [0.0, 0.0]], [[0.6, 0.1], [0.0, 0.0]], [[0.7, 0.8], [0.0, 0.0]]]
    return {
        "steps": [100, 200, 300],
        "train_loss": [6.0, 3.0, 1.0],
        "val_loss": [6.5, 4.0, None],
        "repeat_loss": [6.0, 2.0, 0.5],
        "induction": induction,
        "previous_token": previous,
        "final": {"phase1_end_step": 250},
    }


def test_training_curves_losses_left_and_max_scores_right():
    fig = plots.training_curves(training_log())
    by_name = {trace.name: trace for trace in fig.data}
    assert list(by_name) == [
        "train_loss",
        "val_loss",
        "repeat_loss",
        "max induction",
        "max previous_token",
    ]
    np.testing.assert_array_equal(
        np.asarray(by_name["val_loss"].y, dtype=float), [6.5, 4.0, np.nan]
    )
    assert list(by_name["train_loss"].x) == [100, 200, 300]
    induction = by_name["max induction"]
    np.testing.assert_allclose(np.asarray(induction.y, dtype=float), [0.2, 0.9, 0.95])
    assert induction.hovertext[1] == "step 200 max induction 0.900 (L1H0)"
    assert by_name["max previous_token"].hovertext[2] == "step 300 max previous_token 0.800 (L0H1)"
    assert {t.yaxis for t in fig.data} == {"y", "y2"} and induction.yaxis == "y2"
    assert by_name["train_loss"].yaxis == "y"
    assert [shape.x0 for shape in fig.layout.shapes] == [250]
    assert list(fig.layout.yaxis2.range) == [0, 1.05]


def test_training_curves_plots_whatever_keys_exist():
    fig = plots.training_curves({"train_loss": [3.0, 2.0, 1.0]})
    assert [t.name for t in fig.data] == ["train_loss"] and list(fig.data[0].x) == [0, 1, 2]
    assert len(fig.layout.shapes) == 0
    log = training_log()
    del log["train_loss"], log["previous_token"], log["final"]
    fig = plots.training_curves(log)
    assert [t.name for t in fig.data] == ["val_loss", "repeat_loss", "max induction"]


@pytest.mark.parametrize(
    ("log", "error", "message"),
    [
        ({"steps": [1, 2]}, KeyError, "none of the plottable keys"),
        ({"steps": [1, 2], "train_loss": [1.0]}, ValueError, "has 1 entries for 2 steps"),
        ([1.0, 2.0], TypeError, "log must be a dict"),
    ],
)
def test_training_curves_bad_input(log, error, message):
    with pytest.raises(error, match=message):
        plots.training_curves(log)


def from_json(value) -> np.ndarray:
    """A trace's numbers as a browser reads them from the figure's JSON: a typed array {dtype,
    bdata (base64, little-endian), shape "r, c"} decoded, or a (nested) list with null as NaN."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype="<" + value["dtype"])
        shape = value.get("shape")
        return flat.reshape([int(n) for n in shape.split(",")]) if shape else flat
    return np.array(value, dtype=float)


def sent(fig: go.Figure) -> dict:
    """The figure as it leaves Python: its JSON, parsed."""
    assert isinstance(fig, go.Figure)
    return json.loads(fig.to_json())


def test_every_figure_serialises_with_its_numbers():
    a, b = causal_pattern(3, seed=0), causal_pattern(3, seed=1)
    future = np.triu(np.ones((3, 3), dtype=bool), k=1)  # drawn blank: NaN
    grid = np.array([[0.1, np.nan, 0.7], [0.4, 0.2, 0.3]])  # (layers, heads), one head unscored
    other = np.array([[0.9, 0.0, 0.1], [0.3, 0.6, 0.5]])

    fig = sent(plots.attention_heatmap(a, ["x", "x", "<y>"]))
    np.testing.assert_array_equal(from_json(fig["data"][0]["z"]), np.where(future, np.nan, a))
    assert fig["layout"]["xaxis"]["ticktext"] == ["x", "x", "&lt;y&gt;"]

    fig = sent(plots.attention_grid(np.stack([a, b]), ["x", "x", "y"], heads=[1, 0]))
    assert [note["text"] for note in fig["layout"]["annotations"]] == ["H1", "H0"]
    for trace, head in zip(fig["data"], [b, a], strict=True):
        np.testing.assert_array_equal(from_json(trace["z"]), np.where(future, np.nan, head))

    fig = sent(plots.score_heatmap(grid))
    np.testing.assert_array_equal(from_json(fig["data"][0]["z"]), grid)

    fig = sent(plots.max_score_per_layer(grid))
    np.testing.assert_array_equal(from_json(fig["data"][0]["y"]), np.nanmax(grid, axis=1))
    np.testing.assert_array_equal(from_json(fig["data"][0]["customdata"]), [2, 0])

    fig = sent(plots.head_type_distribution({"induction": 2, "previous_token": [(0, 1)]}))
    assert fig["data"][0]["x"] == ["induction", "previous_token"]
    np.testing.assert_array_equal(from_json(fig["data"][0]["y"]), [2, 1])

    fig = sent(plots.score_comparison(grid, other, [1, 0]))
    bars = [from_json(t["y"]) for t in fig["data"]]  # per layer: first's bars, then second's
    for got, want in zip(bars, [grid[1], other[1], grid[0], other[0]], strict=True):
        np.testing.assert_array_equal(got, want)

    log = training_log()
    fig = sent(plots.training_curves(log))
    by_name = {t["name"]: t for t in fig["data"]}
    for key in ("train_loss", "val_loss", "repeat_loss"):
        np.testing.assert_array_equal(from_json(by_name[key]["y"]), np.array(log[key], float))
        np.testing.assert_array_equal(from_json(by_name[key]["x"]), log["steps"])
    for key in ("induction", "previous_token"):
        per_step = np.array(log[key], dtype=float).reshape(len(log["steps"]), -1)
        np.testing.assert_array_equal(
            from_json(by_name[f"max {key}"]["y"]), np.nanmax(per_step, axis=1)
        )
