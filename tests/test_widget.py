"""HeadWidget without a browser: requests sent through the comm exactly as the front end sends
them, and state set from Python; every result compared with the library computing the same thing
directly. The messages are those of `mlx_headwidget.wire`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import FakeFrontEnd

from mlx_headwidget import analysis, wire
from mlx_headwidget.analysis import ablation_effect, head_pattern, score_grid
from mlx_headwidget.timeline import Checkpoint, bundled_checkpoints, load_checkpoint
from mlx_headwidget.widget import HeadWidget, WidgetInputError, asset

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

REPO = Path(__file__).resolve().parents[1]
TEXT = "The cat sat on the mat. The cat sat on the mat."
OTHER = "Return the number of items in a list."
STATE = ("text", "kind", "selection", "focus", "step", "attend_to")
ALL = list(wire.PARTS)
CLICK = ("pattern", "ablation")
F16 = 1e-3  # a pattern sent as float16, against the library's float32 (see test_session.py)


def snapshot(w: HeadWidget) -> dict:
    return {k: getattr(w, k) for k in STATE}


def counting(monkeypatch, name: str) -> list:
    """Record the arguments of every call of analysis.<name>, which still runs."""
    calls: list = []
    real = getattr(analysis, name)
    monkeypatch.setattr(analysis, name, lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    return calls


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


def test_the_package_exports_the_widget_lazily():
    code = (
        "import sys, mlx_headwidget\n"
        "assert 'anywidget' not in sys.modules and 'ipywidgets' not in sys.modules\n"
        "from mlx_headwidget import HeadWidget\n"
        "from mlx_headwidget.widget import HeadWidget as W\n"
        "assert HeadWidget is W and 'anywidget' in sys.modules\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_a_new_view_gets_the_library_on_the_text(widget, llama):
    assert widget.shape == [llama.n_layers, llama.n_heads]
    assert widget.kinds == [
        *analysis.GRID_KINDS,
        "attention_to_token",
        *wire.COMPOSITION,
        "patching",
        "logit_attribution",
    ]
    expected = score_grid(llama, TEXT, "induction").astype(np.float32)
    np.testing.assert_array_equal(widget.scores, expected)
    fe = FakeFrontEnd(widget)
    rid = fe.request(want=ALL, new_view=True)
    got = fe.result(rid)
    np.testing.assert_array_equal(got["grid"]["values"], expected)
    assert got["grid"]["kind"] == "induction"
    assert got["grid"]["text"] is None  # random-token induction does not depend on the text
    assert got["tokens"] == {"text": TEXT, "tokens": llama.to_str_tokens(TEXT)}
    assert widget.text_tokens == got["tokens"]
    assert got["pattern"] == {} and widget.selected == [] and widget.focused_pattern is None
    clean = ablation_effect(llama, TEXT, [])
    assert got["ablation"]["heads"] == [] and got["ablation"]["top_before"] == [
        [tok, p] for tok, p in clean.top_before
    ]
    assert got["ablation"]["loss_before"] == got["ablation"]["loss_after"] == clean.loss_before
    assert widget.status["state"] == "done"
    w = HeadWidget(llama, text=TEXT, kind="previous_token", selection=[[1, 2]], focus=[1, 2])
    fe = FakeFrontEnd(w)
    got = fe.result(fe.request(want=ALL))
    assert (got["pattern"]["layer"], got["ablation"]["heads"]) == (1, [[1, 2]])
    np.testing.assert_allclose(w.scores, score_grid(llama, TEXT, "previous_token"), atol=1e-6)


def test_a_click_is_one_request_answered_pattern_first(widget, llama):
    fe = FakeFrontEnd(widget)
    rid = fe.request({"selection": [[1, 2]], "focus": [1, 2]}, CLICK)
    assert widget.selected == [(1, 2)] and widget.focus == [1, 2]
    (part, answer) = fe.about(rid)
    # the pattern goes out first, as soon as it is computed; the ablation is the answer
    assert part["part"] and set(part["result"]) == {"pattern"}
    assert answer["ok"] and set(answer["result"]) == {"ablation"} and answer["seconds"] >= 0
    sent = part["result"]["pattern"]
    assert (sent["layer"], sent["head"], sent["text"]) == (1, 2, TEXT)
    assert sent["values"].dtype == np.float16
    expected = head_pattern(llama, TEXT, 1, 2)
    np.testing.assert_allclose(sent["values"], expected, atol=F16)
    np.testing.assert_allclose(widget.focused_pattern, expected, atol=F16)
    # then the state, with the done status, in one message to every view
    order = [i for i, m in enumerate(fe.received) if m.get("custom", {}).get("id") == rid]
    (update,) = [m["state"] for m in fe.received[order[-1] + 1 :]]
    assert update["selection"] == [[1, 2]] and update["focus"] == [1, 2]
    assert update["status"]["state"] == "done"
    effect = ablation_effect(llama, TEXT, [(1, 2)])
    ab = answer["result"]["ablation"]
    assert ab["heads"] == [[1, 2]] and ab["text"] == TEXT
    assert ab["top_before"] == [[t, p] for t, p in effect.top_before]
    assert ab["top_after"] == [[t, p] for t, p in effect.top_after]
    assert (ab["loss_before"], ab["loss_after"]) == (effect.loss_before, effect.loss_after)
    np.testing.assert_allclose(ab["token_loss_after"], effect.token_loss_after, rtol=1e-6)
    assert widget.ablation_result.loss_after == effect.loss_after


def test_a_request_computes_only_the_parts_it_wants(widget, llama, monkeypatch):
    fe = FakeFrontEnd(widget)
    ablations = counting(monkeypatch, "ablation_effect")
    rid = fe.request({"focus": [0, 1]}, ["pattern"])  # the view alone: its pattern, no ablation
    assert set(fe.result(rid)) == {"pattern"} and ablations == []
    assert (fe.result(rid)["pattern"]["layer"], widget.focus) == (0, [0, 1])
    # the front end holds the pattern (pushed, or sent before): the selection asks no pattern
    rid = fe.request({"selection": [[1, 2], [0, 1]]}, ["ablation"])
    assert set(fe.result(rid)) == {"ablation"}
    effect = ablation_effect(llama, TEXT, [(0, 1), (1, 2)])
    assert fe.result(rid)["ablation"]["heads"] == [[0, 1], [1, 2]]
    assert fe.result(rid)["ablation"]["top_after"] == [[t, p] for t, p in effect.top_after]
    fe.request({"selection": [[1, 2]]}, ["ablation"])  # the head in view is no longer ablated
    assert widget.focus == [0, 1] and widget.ablation_result.heads == [(1, 2)]
    rid = fe.request({"selection": [], "focus": []}, CLICK)
    assert fe.result(rid)["pattern"] == {} and fe.result(rid)["ablation"]["heads"] == []
    ab = fe.result(rid)["ablation"]
    assert ab["top_after"] == ab["top_before"]


def test_kind_and_text_changes_recompute_and_are_cached(widget, llama, monkeypatch):
    calls = counting(monkeypatch, "score_grid")
    fe = FakeFrontEnd(widget)
    fe.request({"selection": [[0, 3]], "focus": [0, 3]}, ALL)
    rid = fe.request({"kind": "previous_token"}, ["grid"])
    want = score_grid(llama, TEXT, "previous_token")
    np.testing.assert_allclose(fe.result(rid)["grid"]["values"], want, atol=1e-6)
    rid = fe.request({"text": OTHER}, ALL)
    got = fe.result(rid)
    assert got["tokens"]["tokens"] == llama.to_str_tokens(OTHER)
    np.testing.assert_allclose(got["grid"]["values"], score_grid(llama, OTHER, "previous_token"))
    np.testing.assert_allclose(got["pattern"]["values"], head_pattern(llama, OTHER, 0, 3), atol=F16)
    assert got["ablation"]["text"] == OTHER
    assert (
        got["ablation"]["top_after"][0][0]
        == ablation_effect(llama, OTHER, [(0, 3)]).top_after[0][0]
    )
    fe.request({"text": TEXT}, ALL)
    fe.request({"kind": "induction"}, ["grid"])
    rid = fe.request({"text": OTHER}, ALL)  # random-token induction: the same grid for every text
    asked = [(c[0].tolist(), c[1]) for c in calls]  # the widget passes the text's token ids
    assert asked == [
        (llama.to_tokens(TEXT).tolist(), "induction"),
        (llama.to_tokens(TEXT).tolist(), "previous_token"),
        (llama.to_tokens(OTHER).tolist(), "previous_token"),
    ]
    assert fe.answer(rid)["ok"] and widget.status["state"] == "done"


def test_one_forward_serves_every_head_of_a_small_model(widget, llama, monkeypatch):
    forwards = counting(monkeypatch, "head_patterns")
    fe = FakeFrontEnd(widget)
    for layer, head in [(0, 1), (llama.n_layers - 1, 2), (1, 0)]:
        rid = fe.request({"focus": [layer, head]}, ["pattern"])
        want = head_pattern(llama, TEXT, layer, head)
        np.testing.assert_allclose(fe.result(rid)["pattern"]["values"], want, atol=F16)
    # the widget's one forward, then the three references (head_pattern calls head_patterns)
    assert len(forwards) == 4 and len(forwards[0][1]) == llama.n_layers * llama.n_heads


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
    np.testing.assert_allclose(widget.focused_pattern, head_pattern(llama, OTHER, 1, 3), atol=F16)
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
    ({"text": 42}, "text must be a string, got 42"),
    (
        {"grid": {}},
        "a request changes text, kind, selection, focus, step, attend_to, contrast; got ['grid']",
    ),
    ({"attend_to": [2, 5]}, "attend_to must be [] or [query, key], token positions with key <= q"),
    ({"attend_to": "L1"}, "attend_to must be [] or [query, key]"),
    ({"step": 3}, "this model has no training checkpoints: step must be None, not 3"),
    ({"selection": [[0, 0]], "kind": "nope"}, "unknown score kind"),  # nothing of it applied
]


@pytest.mark.parametrize(("change", "message"), BAD_FROM_FRONT_END)
def test_bad_input_from_the_front_end_is_answered_as_an_error(widget, change, message):
    fe = FakeFrontEnd(widget)
    fe.request({"selection": [[1, 1]], "focus": [1, 1]}, CLICK)
    before = snapshot(widget)
    fe.received.clear()
    rid = fe.request(change, CLICK)
    answer = fe.answer(rid)
    assert answer["ok"] is False and message in answer["error"]
    assert fe.about(rid) == [answer]  # no part of it was sent
    assert widget.status == {"state": "error", "message": answer["error"]}
    assert snapshot(widget) == before and fe.states("selection") == [] == fe.states("focus")
    rid = fe.request({"selection": [[0, 2]], "focus": [0, 2]}, CLICK)  # still answering
    assert fe.answer(rid)["ok"] and widget.status["state"] == "done"
    assert fe.result(rid)["ablation"]["heads"] == [[0, 2]]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"id": "x", "op": "delete", "args": {}}, "unknown request 'delete'; the kernel answers"),
        ({"id": "x", "op": "set", "args": "all"}, "request args must be an object"),
        ({"id": "x", "op": "set", "args": {"want": ["grid", "everything"]}}, "wants some of"),
        ({"id": "x", "op": "set", "args": {"changes": [1]}}, "a request changes text"),
    ],
)
def test_malformed_requests_are_answered_as_errors(widget, message, error):
    fe = FakeFrontEnd(widget)
    fe.custom(message)
    assert fe.answer("x")["ok"] is False and error in fe.answer("x")["error"]
    fe.custom({"op": "set", "args": {}})  # no id: not a request, nothing to answer
    fe.custom(["not", "an", "object"])
    assert len(fe.received) == 2  # the error answer, and the error status


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


def test_a_failing_computation_is_reported_and_changes_nothing(widget, llama, monkeypatch):
    fe = FakeFrontEnd(widget)
    fe.request({"selection": [[1, 1]], "focus": [1, 1]}, CLICK)
    before = snapshot(widget)

    def fail(*_, **__):
        raise RuntimeError("forward failed")

    monkeypatch.setattr(analysis, "ablation_effect", fail)
    fe.received.clear()
    rid = fe.request({"selection": [[0, 0]], "focus": [0, 0]}, CLICK)
    assert fe.answer(rid)["ok"] is False and "forward failed" in fe.answer(rid)["error"]
    assert widget.status["state"] == "error" and "forward failed" in widget.status["message"]
    assert snapshot(widget) == before and fe.states("selection") == []
    with pytest.raises(RuntimeError, match="forward failed"):
        widget.select(0, 0)
    assert snapshot(widget) == before
    monkeypatch.undo()
    rid = fe.request({"selection": [[0, 0]], "focus": [0, 0]}, CLICK)
    assert widget.status["state"] == "done" and fe.result(rid)["ablation"]["heads"] == [[0, 0]]


def test_the_kernel_pushes_the_best_heads_patterns_within_the_budget(widget, llama):
    fe = FakeFrontEnd(widget)
    fe.request(want=ALL, new_view=True)
    (push,) = fe.pushes()
    T = len(llama.to_str_tokens(TEXT))
    grid = widget.scores
    everything = llama.n_layers * llama.n_heads
    assert len(push["heads"]) == min(everything, widget.prefetch_bytes // (2 * T * T))
    order = [grid[layer, head] for layer, head in push["heads"]]
    assert order == sorted(order, reverse=True) and push["text"] == TEXT  # best first
    for (layer, head), values in zip(push["heads"], push["patterns"], strict=True):
        assert values.dtype == np.float16
        np.testing.assert_allclose(values, head_pattern(llama, TEXT, layer, head), atol=F16)
    fe.request({"focus": [1, 1]}, [])  # nothing new to push for this text
    assert len(fe.pushes()) == 1
    widget.prefetch_bytes = 2 * T * T * 3  # room for three heads
    fe.request(want=ALL, new_view=True)  # a new view has none: the three best again
    assert fe.pushes()[-1]["heads"] == push["heads"][:3]
    fe.request({"kind": "previous_token"}, ["grid"])  # another ranking, but the budget is spent
    assert len(fe.pushes()) == 2
    fe.request({"text": OTHER}, ALL)  # a new text: its best heads, as many as fit
    n = widget.prefetch_bytes // (2 * len(llama.to_str_tokens(OTHER)) ** 2)
    best = [list(h) for h in wire.best_heads(score_grid(llama, OTHER, "previous_token"), n)]
    assert fe.pushes()[-1]["text"] == OTHER and fe.pushes()[-1]["heads"] == best
    widget.prefetch_bytes = 0
    fe.request(want=ALL, new_view=True)
    assert len(fe.pushes()) == 3


def test_each_request_is_answered_with_its_id(widget):
    fe = FakeFrontEnd(widget)
    rid = fe.request()  # nothing changed, nothing wanted: still answered
    assert fe.answer(rid) == {**fe.answer(rid), "id": rid, "ok": True, "result": {}}


def test_a_long_scan_reports_its_progress(widget, llama):
    fe = FakeFrontEnd(widget)
    rid = fe.request({"kind": "previous_token"}, ["grid"])
    messages = fe.about(rid)
    progress = [m["progress"]["done"] for m in messages if "progress" in m]
    assert progress[0] == 0.0 and progress[-1] == 1.0, messages
    assert progress == sorted(progress)
    assert all(m["progress"]["message"] == "scoring 8 heads: previous_token" for m in messages[:-1])
    assert messages[-1]["ok"] and "progress" not in messages[-1]
    rid = fe.request({"kind": "previous_token"}, ["grid"])  # cached: no progress to report
    assert [m for m in fe.about(rid) if "progress" in m] == []


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_reply_timeout_must_be_positive(llama, timeout):
    with pytest.raises(WidgetInputError, match="reply_timeout must be > 0"):
        HeadWidget(llama, text=TEXT, reply_timeout=timeout)


# ---- training steps ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_steps() -> list[Checkpoint]:
    """The bundled model's first checkpoint, and its last step: the bundled model itself."""
    checkpoints = bundled_checkpoints()
    return [checkpoints[0], checkpoints[-1]]


def test_every_part_at_a_step_comes_from_that_steps_weights(two_steps, monkeypatch):
    w = HeadWidget(text=TEXT, checkpoints=two_steps)
    (first, last), ids = [c.step for c in two_steps], w.model.to_tokens(TEXT)
    assert (w.steps, w.step) == ([first, last], last)
    fe = FakeFrontEnd(w)
    fe.request({"selection": [[1, 2]], "focus": [1, 2]}, ALL, new_view=True)
    rid = fe.request({"step": first}, CLICK + ("grid",))
    got, early = fe.result(rid), load_checkpoint(w.model, two_steps[0])
    grid_early = score_grid(early, ids, "induction").astype(np.float32)  # as the widget sends it
    assert got["grid"]["step"] == got["pattern"]["step"] == got["ablation"]["step"] == first
    # the same computation on the same weights: exactly equal
    np.testing.assert_array_equal(got["grid"]["values"], grid_early)
    assert not np.allclose(got["grid"]["values"], score_grid(w.model, ids, "induction"))
    np.testing.assert_allclose(got["pattern"]["values"], head_pattern(early, TEXT, 1, 2), atol=F16)
    effect = ablation_effect(early, TEXT, [(1, 2)])
    assert (got["ablation"]["loss_before"], got["ablation"]["loss_after"]) == (
        effect.loss_before,
        effect.loss_after,
    )
    assert (w.step, w.selected, w.focus) == (first, [(1, 2)], [1, 2])  # the selection stays
    np.testing.assert_array_equal(w.scores, grid_early)
    push = fe.pushes()[-1]  # the best heads at that step, ahead of clicks
    assert push["step"] == first
    (layer, head), values = push["heads"][0], push["patterns"][0]
    np.testing.assert_allclose(values, head_pattern(early, TEXT, layer, head), atol=F16)
    calls = counting(monkeypatch, "score_grid")
    for step in (last, first, last):  # back and forth: every grid is cached
        rid = fe.request({"step": step}, ["grid"])
    assert calls == [] and fe.result(rid)["grid"]["step"] == last
    grid_last = score_grid(w.model, ids, "induction").astype(np.float32)
    np.testing.assert_array_equal(fe.result(rid)["grid"]["values"], grid_last)


def test_a_bad_step_is_refused_naming_the_steps(two_steps):
    w = HeadWidget(text=TEXT, checkpoints=two_steps)
    last, steps = w.step, ", ".join(str(c.step) for c in two_steps)
    fe = FakeFrontEnd(w)
    for bad in (300, "250", True, None, 2.5):
        rid = fe.request({"step": bad}, ["grid"])
        error = f"unknown training step {bad!r}; the steps are {steps}"
        assert fe.answer(rid) == {"id": rid, "ok": False, "error": error}
        assert w.step == last and w.status == {"state": "error", "message": error}
    with pytest.raises(WidgetInputError, match=f"unknown training step 300; the steps are {steps}"):
        w.step = 300
    with pytest.raises(WidgetInputError, match="unknown training step 1"):
        HeadWidget(text=TEXT, checkpoints=two_steps, step=1)
    with pytest.raises(TypeError, match="timeline.Checkpoint objects, got 'step_250'"):
        HeadWidget(text=TEXT, checkpoints=["step_250"])


def test_a_model_without_checkpoints_has_no_steps(widget, bundled):
    assert (widget.steps, widget.step) == ([], None)
    fe = FakeFrontEnd(widget)
    got = fe.result(fe.request({"selection": [[1, 2]], "focus": [1, 2]}, ALL))
    assert got["grid"]["step"] is got["pattern"]["step"] is got["ablation"]["step"] is None
    with pytest.raises(WidgetInputError, match="no training checkpoints: step must be None"):
        widget.step = 0
    steps = [c.step for c in bundled_checkpoints()]
    assert HeadWidget(text=TEXT).steps == steps
    assert HeadWidget(bundled, text=TEXT).steps == steps  # InterpretableModel(): the same model


def test_which_heads_look_here_is_the_captured_attention_to_the_token(widget, llama):
    from mlx_headwidget.capture import capture_attention

    ids = widget.session.ids(TEXT)
    T = ids.shape[1]
    full = np.zeros((llama.n_layers, llama.n_heads, T, T), np.float32)

    def keep(layer, pattern):
        full[layer] = np.array(pattern[0], dtype=np.float32)

    capture_attention(llama, ids, on_pattern=keep, logits=False)  # the session's forward
    fe = FakeFrontEnd(widget)
    rid = fe.request({"kind": "attention_to_token", "attend_to": [T - 1, 2]}, ["grid"])
    grid = fe.result(rid)["grid"]
    assert grid["kind"] == "attention_to_token" and grid["attend_to"] == [T - 1, 2]
    assert grid["text"] == TEXT
    np.testing.assert_array_equal(grid["values"], full[:, :, T - 1, 2])
    assert widget.attend_to == [T - 1, 2] and widget.kind == "attention_to_token"
    np.testing.assert_array_equal(widget.scores, full[:, :, T - 1, 2])
    # no progress for one forward: the part, then the answer
    assert [m for m in fe.about(rid) if "progress" in m] == []
    widget.look_here(5)  # from the last token
    assert widget.attend_to == [T - 1, 5]
    np.testing.assert_array_equal(widget.scores, full[:, :, T - 1, 5])
    widget.look_here(1, query=3)
    np.testing.assert_array_equal(widget.scores, full[:, :, 3, 1])
    with pytest.raises(Exception, match=rf"query token {T + 4} is out of range"):
        widget.look_here(0, query=T + 4)
    assert widget.attend_to == [3, 1] and widget.status["state"] == "error"


def test_attention_to_token_without_a_token_or_past_the_text_is_an_error(widget):
    fe = FakeFrontEnd(widget)
    rid = fe.request({"kind": "attention_to_token"}, ["grid"])
    assert "alt-click a token in the token view" in fe.answer(rid)["error"]
    rid = fe.request({"kind": "attention_to_token", "attend_to": [90, 0]}, ["grid"])
    assert "query token 90 is out of range: the text has tokens 0.." in fe.answer(rid)["error"]
    assert widget.kind == "induction" and widget.attend_to == []


def test_who_feeds_this_head_is_the_librarys_composition_into_the_head_in_view(widget, llama):
    from mlx_headwidget.composition import composition_scores

    L = llama.n_layers
    fe = FakeFrontEnd(widget)
    rid = fe.request({"kind": "k_composition"}, ["grid"])  # no head in view: nothing feeds it
    grid = fe.result(rid)["grid"]
    assert grid["into"] == [] and np.isnan(grid["values"]).all()
    for kind in ("k", "v"):
        rid = fe.request({"kind": f"{kind}_composition", "focus": [L - 1, 1]}, ["grid"])
        grid = fe.result(rid)["grid"]
        want = composition_scores(llama, kind, layers=[L - 1])[:, :, L - 1, 1]
        np.testing.assert_array_equal(grid["values"], want.astype(np.float32))
        assert grid["into"] == [L - 1, 1] and grid["text"] is None  # weights: any text
        np.testing.assert_array_equal(widget.scores, want.astype(np.float32))
    widget.select(L - 1, 0)  # another head in view: its own feeders
    want = composition_scores(llama, "v", layers=[L - 1])[:, :, L - 1, 0]
    np.testing.assert_array_equal(widget.scores, want.astype(np.float32))


PROMPT = "The cat sat on the mat. The cat sat on the"  # answer " m" (of "mat"), distractor " c"
CONTRAST = {
    "corrupted": "The mat sat on the cat. The mat sat on the",
    "answer": " m",
    "distractor": " c",
}


def test_patching_and_dla_grids_are_the_librarys_with_progress(widget, llama):
    from mlx_headwidget.attribution import head_logit_attribution
    from mlx_headwidget.patching import patch_heads

    fe = FakeFrontEnd(widget)
    changes = {"text": PROMPT, "kind": "patching", "contrast": CONTRAST}
    rid = fe.request(changes, ["grid"])
    grid = fe.result(rid)["grid"]
    want = patch_heads(llama, PROMPT, CONTRAST["corrupted"], " m", " c").astype(np.float32)
    np.testing.assert_array_equal(grid["values"], want)  # the same computation
    assert grid["contrast"] == CONTRAST and grid["text"] == PROMPT
    progress = [m["progress"] for m in fe.about(rid) if "progress" in m]
    assert progress[0]["done"] == 0 and progress[-1]["done"] == 1
    assert progress[0]["message"] == f"patching {llama.n_layers * llama.n_heads} heads"
    assert widget.contrast == CONTRAST and widget.kind == "patching"
    rid = fe.request({"kind": "logit_attribution"}, ["grid"])
    want = head_logit_attribution(llama, PROMPT, " m", " c").astype(np.float32)
    np.testing.assert_array_equal(fe.result(rid)["grid"]["values"], want)
    assert [m for m in fe.about(rid) if "progress" in m] == []  # one forward
    np.testing.assert_array_equal(widget.scores, want)


@pytest.mark.parametrize(
    ("kind", "contrast", "message"),
    [
        ("patching", {}, "the patching grid needs a corrupted text, answer and distractor tokens"),
        ("logit_attribution", {"distractor": " c"}, "the logit_attribution grid needs an answer"),
        ("patching", {**CONTRAST, "corrupted": "The cat."}, "clean has 19 tokens, corrupted has 5"),
        ("patching", {**CONTRAST, "answer": " mat"}, "answer ' mat' is 2 tokens"),
        ("logit_attribution", {"answer": " c", "distractor": " c"}, "are the same token"),
        ("patching", {"answer": 3}, "contrast must be an object with string values"),
        ("patching", {"clean": "x"}, "some of corrupted, answer, distractor"),
    ],
)
def test_bad_patching_input_is_an_error_naming_it(widget, kind, contrast, message):
    fe = FakeFrontEnd(widget)
    rid = fe.request({"text": PROMPT, "kind": kind, "contrast": contrast}, ["grid"])
    assert message in fe.answer(rid)["error"]
    assert widget.kind == "induction" and widget.contrast == {} and widget.text == TEXT
