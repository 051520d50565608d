"""HeadWidget without a browser: state set through the comm exactly as the front end sets it, and
from Python; every result compared with the library computing the same thing directly."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mlx_headwidget import analysis
from mlx_headwidget import widget as widget_module
from mlx_headwidget.analysis import ablation_effect, head_pattern, score_grid
from mlx_headwidget.widget import HeadWidget, WidgetInputError, asset

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

REPO = Path(__file__).resolve().parents[1]
TEXT = "The cat sat on the mat. The cat sat on the mat."
OTHER = "Return the number of items in a list."
STATE = ("text", "kind", "selection", "focus", "grid", "text_tokens", "pattern", "ablation")


class FrontEnd:
    """The browser's end of the widget's comm: sends updates and custom messages the way the JS
    does, and keeps every message the kernel sends back (buffers put back in place)."""

    kernel = "test"
    comm_id = "test-comm"

    def __init__(self, widget: HeadWidget):
        self.received: list[dict] = []
        widget.comm = self  # the widget registers its message handler through on_msg

    def on_msg(self, handler) -> None:
        self.handler = handler

    def send(self, data=None, buffers=None, **_) -> None:
        buffers = list(buffers or [])
        paths = data.get("buffer_paths", []) if data["method"] != "custom" else []
        for path, buffer in zip(paths, buffers[: len(paths)], strict=True):
            node = data["state"]
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = buffer
        self.received.append({"data": data, "buffers": buffers})

    def close(self, *_, **__) -> None:
        pass

    def update(self, **state) -> None:
        data = {"method": "update", "state": state, "buffer_paths": []}
        self.handler({"content": {"data": data}, "buffers": []})

    def custom(self, content: dict) -> None:
        self.handler({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})

    def updates(self, key: str) -> list:
        return [m["data"]["state"][key] for m in self.received if key in m["data"].get("state", {})]


def decode(array: dict) -> np.ndarray:
    dtype = {"float16": "<f2", "float32": "<f4"}[array["dtype"]]
    return np.frombuffer(bytes(array["data"]), dtype=dtype).reshape(array["shape"])


def snapshot(w: HeadWidget) -> dict:
    return {k: getattr(w, k) for k in STATE}


@pytest.fixture
def widget(llama) -> HeadWidget:
    return HeadWidget(llama, text=TEXT)


def test_front_end_files_are_found_and_shipped_in_the_wheel(tmp_path):
    for name in ("widget.js", "widget.css"):
        assert asset(name).read_text() == (REPO / "js" / name).read_text()
    assert str(HeadWidget._esm) == (REPO / "js" / "widget.js").read_text()
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the source tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("mlx_headwidget", "js"):
        shutil.copytree(REPO / folder, src / folder, ignore=skip)
    # No build isolation: the installed setuptools builds it, so no package index is needed.
    cmd = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q"]
    built = subprocess.run([*cmd, "-w", str(tmp_path)], cwd=src, capture_output=True, text=True)
    assert built.returncode == 0, f"pip wheel failed:\n{built.stdout}\n{built.stderr}"
    (wheel,) = tmp_path.glob("mlx_headwidget-*.whl")
    with zipfile.ZipFile(wheel) as z:
        for name in ("widget.js", "widget.css"):
            assert z.read(f"mlx_headwidget/static/{name}") == (REPO / "js" / name).read_bytes()


def test_initial_state_is_the_library_on_the_text(widget, llama):
    assert widget.shape == [llama.n_layers, llama.n_heads]
    assert widget.kinds == list(analysis.GRID_KINDS)
    expected = score_grid(llama, TEXT, "induction").astype(np.float32)
    np.testing.assert_array_equal(widget.scores, expected)
    np.testing.assert_array_equal(decode(widget.grid), expected)
    assert widget.grid["text"] is None  # random-token induction does not depend on the text
    assert widget.text_tokens == {"text": TEXT, "tokens": llama.to_str_tokens(TEXT)}
    assert widget.selected == [] and widget.pattern == {} and widget.focused_pattern is None
    clean = ablation_effect(llama, TEXT, [])
    assert widget.ablation["heads"] == [] and widget.ablation["top_before"] == [
        [tok, p] for tok, p in clean.top_before
    ]
    assert widget.ablation["loss_before"] == widget.ablation["loss_after"] == clean.loss_before
    assert widget.status["state"] == "done"
    w = HeadWidget(llama, text=TEXT, kind="previous_token", selection=[[1, 2]], focus=[1, 2])
    assert (w.pattern["layer"], w.ablation["heads"]) == (1, [[1, 2]])
    np.testing.assert_allclose(w.scores, score_grid(llama, TEXT, "previous_token"), atol=1e-6)


def test_a_click_sends_the_pattern_then_the_ablation(widget, llama):
    fe = FrontEnd(widget)
    fe.update(selection=[[1, 2]], focus=[1, 2], request=1)
    assert widget.selected == [(1, 2)]
    expected = head_pattern(llama, TEXT, 1, 2)
    T = len(llama.to_str_tokens(TEXT))
    (sent,) = fe.updates("pattern")
    assert (sent["layer"], sent["head"], sent["text"]) == (1, 2, TEXT)
    assert sent["dtype"] == "float16" and len(sent["data"]) == 2 * T * T
    np.testing.assert_allclose(decode(sent), expected, atol=1e-3)
    np.testing.assert_allclose(widget.focused_pattern, expected, atol=1e-3)
    # the pattern goes out first; the ablation comes last, in one message with the done status
    messages = [m["data"].get("state", {}) for m in fe.received]
    last = {key: max(i for i, m in enumerate(messages) if key in m) for key in messages[-1]}
    assert max(i for i, m in enumerate(messages) if "pattern" in m) < last["ablation"]
    assert last == {"ablation": len(messages) - 1, "status": len(messages) - 1}
    assert messages[-1]["status"]["state"] == "done"
    effect = ablation_effect(llama, TEXT, [(1, 2)])
    ab = widget.ablation
    assert ab["heads"] == [[1, 2]] and ab["text"] == TEXT
    assert ab["top_before"] == [[t, p] for t, p in effect.top_before]
    assert ab["top_after"] == [[t, p] for t, p in effect.top_after]
    assert (ab["loss_before"], ab["loss_after"]) == (effect.loss_before, effect.loss_after)
    np.testing.assert_allclose(decode(ab["token_loss_after"]), effect.token_loss_after, rtol=1e-6)
    assert widget.ablation_result.loss_after == effect.loss_after
    assert widget.status["state"] == "done" and widget.status["request"] == 1


def test_view_and_selection_are_separate_requests(widget, llama):
    fe = FrontEnd(widget)
    fe.update(focus=[0, 1], request=1)  # the view alone: its pattern, no ablation
    assert (widget.pattern["layer"], widget.pattern["head"]) == (0, 1)
    assert fe.updates("ablation") == [] and widget.status["request"] == 1
    answer = fe.received[-1]["data"]["state"]  # the pattern and "done" arrive in one message
    assert set(answer) == {"pattern", "status"} and answer["status"]["state"] == "done"
    fe.update(selection=[[1, 2], [0, 1]], request=2)
    assert fe.updates("pattern") == [widget.pattern]  # the pattern is not sent again
    effect = ablation_effect(llama, TEXT, [(0, 1), (1, 2)])
    assert widget.ablation["heads"] == [[0, 1], [1, 2]]
    assert widget.ablation["top_after"] == [[t, p] for t, p in effect.top_after]
    fe.update(selection=[[1, 2]], request=3)  # the head in view is no longer ablated
    assert widget.focus == [0, 1] and widget.ablation["heads"] == [[1, 2]]
    fe.update(selection=[], focus=[], request=4)
    assert widget.pattern == {} and widget.ablation["heads"] == []
    assert widget.ablation["top_after"] == widget.ablation["top_before"]


def test_kind_and_text_changes_recompute_and_are_cached(widget, llama, monkeypatch):
    calls = []
    real = analysis.score_grid
    monkeypatch.setattr(
        analysis, "score_grid", lambda *a, **k: calls.append(a[1:]) or real(*a, **k)
    )
    fe = FrontEnd(widget)
    fe.update(selection=[[0, 3]], focus=[0, 3], request=1)
    fe.update(kind="previous_token", request=2)
    np.testing.assert_allclose(widget.scores, score_grid(llama, TEXT, "previous_token"), atol=1e-6)
    fe.update(text=OTHER, request=3)
    assert widget.text_tokens["tokens"] == llama.to_str_tokens(OTHER)
    np.testing.assert_allclose(decode(widget.grid), score_grid(llama, OTHER, "previous_token"))
    np.testing.assert_allclose(widget.focused_pattern, head_pattern(llama, OTHER, 0, 3), atol=1e-3)
    assert widget.ablation["text"] == OTHER
    assert (
        widget.ablation["top_after"][0][0]
        == ablation_effect(llama, OTHER, [(0, 3)]).top_after[0][0]
    )
    fe.update(text=TEXT, request=4)
    fe.update(kind="induction", request=5)
    fe.update(text=OTHER, request=6)  # random-token induction: the same grid for every text
    assert calls == [(TEXT, "previous_token"), (OTHER, "previous_token")]
    assert [s for s in fe.updates("status") if s["state"] == "done"][-1]["request"] == 6


def test_one_forward_serves_every_head_of_a_small_model(widget, llama, monkeypatch):
    forwards = []
    real = widget_module.capture_attention
    monkeypatch.setattr(
        widget_module,
        "capture_attention",
        lambda *a, **k: forwards.append(k.get("layers")) or real(*a, **k),
    )
    fe = FrontEnd(widget)
    for request, (layer, head) in enumerate([(0, 1), (llama.n_layers - 1, 2), (1, 0)], start=1):
        fe.update(focus=[layer, head], request=request)
        want = head_pattern(llama, TEXT, layer, head)
        np.testing.assert_allclose(widget.focused_pattern, want, atol=1e-3)
    assert forwards == [list(range(llama.n_layers))]


def test_python_api_select_and_on_select(widget, llama):
    seen = []

    def record(selected):
        seen.append(selected)

    assert widget.on_select(record) is record
    widget.select(1, 3)
    widget.select(0, 2, add=True)
    assert widget.selected == [(1, 3), (0, 2)] and widget.focus == [0, 2]
    widget.select(0, 2, add=True)  # again: removed, the view goes back to the other head
    assert widget.selected == [(1, 3)] and widget.focus == [1, 3]
    assert seen == [[(1, 3)], [(1, 3), (0, 2)], [(1, 3)]]
    widget.text = OTHER
    np.testing.assert_allclose(widget.focused_pattern, head_pattern(llama, OTHER, 1, 3), atol=1e-3)
    with pytest.raises(TypeError, match="callable"):
        widget.on_select("not a function")


LONG = "one two three four five six seven eight nine ten " * 120
BAD_FROM_FRONT_END = [
    ({"selection": [[2, 0]]}, "out of range: layers are 0..1, heads 0..3"),
    ({"selection": [[0, 4]]}, "out of range"),
    ({"selection": [[1]]}, "pair [layer, head] of integers"),
    ({"selection": [[1.5, 2]]}, "pair [layer, head] of integers"),
    ({"selection": [[True, 2]]}, "pair [layer, head] of integers"),
    ({"selection": "L1H2"}, "pair [layer, head] of integers, got 'L1H2'"),
    ({"selection": [[1, 2], [1, 2]]}, "L1H2 is selected twice"),
    ({"focus": [0, 9]}, "focus [0, 9] is out of range"),
    ({"focus": [0]}, "focus must be a pair [layer, head]"),
    ({"kind": "nope"}, "unknown score kind 'nope'; choose one of induction"),
    ({"text": ""}, "empty"),
    ({"text": LONG}, "longer than the model's context of 512 tokens"),
    ({"text": 42}, "expected a unicode string"),
    ({"grid": {}}, "grid can only be set by the kernel"),
    ({"selection": [[0, 0]], "kind": "nope"}, "unknown score kind"),  # nothing of it applied
]


@pytest.mark.parametrize(("change", "message"), BAD_FROM_FRONT_END)
def test_bad_input_from_the_front_end_is_shown_and_undone(widget, llama, change, message):
    fe = FrontEnd(widget)
    fe.update(selection=[[1, 1]], focus=[1, 1], request=1)
    before = snapshot(widget)
    fe.received.clear()
    fe.update(**change, request=2)
    assert widget.status["state"] == "error" and widget.status["request"] == 2
    assert message in widget.status["message"]
    assert snapshot(widget) == before
    for key in change:  # the front end is told the last good value
        assert fe.updates(key)[-1] == before[key]
    fe.update(selection=[[0, 2]], focus=[0, 2], request=3)  # still answering
    assert widget.status == {**widget.status, "state": "done", "request": 3}
    assert widget.ablation["heads"] == [[0, 2]]


def test_bad_input_from_python_raises_and_keeps_the_state(widget):
    widget.select(1, 1)
    before = snapshot(widget)
    for attempt, message in [
        (lambda: setattr(widget, "selection", [(5, 0)]), "out of range"),
        (lambda: setattr(widget, "kind", "nope"), "unknown score kind"),
        (lambda: setattr(widget, "text", "   "), "empty"),
        (lambda: setattr(widget, "focus", [-1, 0]), "out of range"),
        (lambda: widget.select(0, 9), "out of range"),
        (lambda: widget.select("0", 1), "pair [layer, head] of integers"),
    ]:
        with pytest.raises(WidgetInputError, match=message.replace("[", r"\[")) as info:
            attempt()
        assert isinstance(info.value, ValueError)
        assert widget.status["state"] == "error" and message in widget.status["message"]
        assert snapshot(widget) == before
    with pytest.raises(ValueError, match="empty"):
        HeadWidget(widget.model, text="")


def test_a_failing_computation_is_reported_and_rolled_back(widget, llama, monkeypatch):
    fe = FrontEnd(widget)
    fe.update(selection=[[1, 1]], focus=[1, 1], request=1)
    before = snapshot(widget)

    def fail(*_, **__):
        raise RuntimeError("forward failed")

    monkeypatch.setattr(analysis, "ablation_effect", fail)
    fe.update(selection=[[0, 0]], focus=[0, 0], request=2)
    assert widget.status["state"] == "error" and "forward failed" in widget.status["message"]
    assert snapshot(widget) == before and fe.updates("selection")[-1] == [[1, 1]]
    with pytest.raises(RuntimeError, match="forward failed"):
        widget.select(0, 0)
    assert snapshot(widget) == before
    monkeypatch.undo()
    fe.update(selection=[[0, 0]], focus=[0, 0], request=3)
    assert widget.status["state"] == "done" and widget.ablation["heads"] == [[0, 0]]


def test_prefetch_sends_the_asked_patterns_within_the_budget(widget, llama):
    fe = FrontEnd(widget)
    fe.custom({"type": "prefetch", "text": TEXT, "heads": [[0, 0], [1, 3], [0, 0]]})
    (reply,) = [m for m in fe.received if m["data"]["method"] == "custom"]
    content = reply["data"]["content"]
    assert content["type"] == "patterns" and content["heads"] == [[0, 0], [1, 3]]
    for (layer, head), buf in zip(content["heads"], reply["buffers"], strict=True):
        got = np.frombuffer(buf, dtype="<f2").reshape(content["shape"])
        np.testing.assert_allclose(got, head_pattern(llama, TEXT, layer, head), atol=1e-3)
    T = content["shape"][0]
    widget.prefetch_bytes = 2 * T * T  # room for one head
    fe.received.clear()
    fe.custom({"type": "prefetch", "text": TEXT, "heads": [[1, 0], [1, 1]]})
    assert fe.received[-1]["data"]["content"]["heads"] == [[1, 0]]
    fe.received.clear()
    fe.custom({"type": "prefetch", "text": "an older text", "heads": [[1, 0]]})
    assert fe.received == []  # stale: never answered
    fe.custom({"type": "prefetch", "text": TEXT, "heads": [[9, 9]]})
    assert widget.status["state"] == "error" and "out of range" in widget.status["message"]


def test_each_request_is_answered_with_its_id(widget):
    fe = FrontEnd(widget)
    fe.update(request=7)  # nothing changed: still answered, so the front end can send the next
    assert fe.updates("status")[-1]["request"] == 7 and widget.status["state"] == "done"


def test_a_long_scan_reports_its_progress(widget, llama):
    fe = FrontEnd(widget)
    fe.update(kind="previous_token", request=widget.request + 1)
    statuses = fe.updates("status")
    progress = [s["progress"] for s in statuses if s["state"] == "computing" and "progress" in s]
    assert progress[0] == 0.0 and progress[-1] == 1.0, statuses
    assert progress == sorted(progress)
    assert statuses[-1]["state"] == "done" and "progress" not in statuses[-1]


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_reply_timeout_must_be_positive(llama, timeout):
    with pytest.raises(WidgetInputError, match="reply_timeout must be > 0"):
        HeadWidget(llama, text=TEXT, reply_timeout=timeout)
