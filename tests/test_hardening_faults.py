"""Faults injected into a widget request: a model forward that raises, a second request arriving
while the first computes (re-entrant and from another thread), one widget shown twice; and the
atomic file writes of `mlx_headwidget.files`."""

from __future__ import annotations

import json
import os
import threading

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from helpers import FakeFrontEnd

from mlx_headwidget import InterpretableModel
from mlx_headwidget.analysis import ablation_effect, head_pattern
from mlx_headwidget.files import atomic_write, atomic_write_files, atomic_write_text
from mlx_headwidget.testing import make_checkpoint
from mlx_headwidget.widget import HeadWidget

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

TEXT = "The cat sat on the mat. The cat sat on the mat."
STATE = ("text", "kind", "selection", "focus")
CLICK = ("pattern", "ablation")


class Fault(nn.Module):
    """Stands in for a layer's MLP: runs it, but first calls `action()` once if it is set (which
    may raise, or send another request), and while `poison` is set returns NaN."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.action = None
        self.poison = False

    def __call__(self, x):
        action, self.action = self.action, None  # one shot
        if action is not None:
            action()
        out = self.inner(x)
        return out * mx.nan if self.poison else out


@pytest.fixture(scope="module")
def clean(checkpoint) -> InterpretableModel:
    return InterpretableModel(str(checkpoint("llama")))


@pytest.fixture
def faulty(checkpoint):
    """(model, fault): a fresh llama whose layer-1 MLP is a `Fault` (the model is not shared)."""
    model = InterpretableModel(str(checkpoint("llama")))
    fault = Fault(model.layers[1].mlp)
    model.layers[1].mlp = fault
    return model, fault


def snapshot(w: HeadWidget) -> dict:
    return {k: getattr(w, k) for k in STATE}


def assert_answers(w: HeadWidget, model: InterpretableModel, focus: tuple[int, int] | None) -> None:
    """The widget has head `focus` in view (None: no head), and the pattern and ablation a view
    asking now gets are what the library computes for its current state. The caller states the
    focus, so which checks run is fixed by the test, never by what the widget happens to hold."""
    assert w.status["state"] == "done"
    page = w.comm  # the test's FakeFrontEnd: one more view asks
    got = page.result(page.request(want=["pattern", "ablation"]))
    if focus is None:
        assert w.focus == [] and got["pattern"] == {} and w.focused_pattern is None
    else:
        layer, head = focus
        assert w.focus == [layer, head]
        assert [got["pattern"]["text"], got["pattern"]["layer"], got["pattern"]["head"]] == [
            w.text,
            layer,
            head,
        ]
        expected = head_pattern(model, w.text, layer, head)
        np.testing.assert_allclose(w.focused_pattern, expected, atol=1e-3)
    expected = ablation_effect(model, w.text, w.selected)
    ab = got["ablation"]
    assert ab["text"] == w.text and ab["heads"] == [list(h) for h in expected.heads]
    np.testing.assert_array_equal(w.ablation_result.token_loss_after, expected.token_loss_after)


def _boom():
    raise RuntimeError("injected fault in layer 1")


def test_a_forward_that_raises_becomes_an_error_and_the_widget_recovers(faulty, clean):
    model, fault = faulty
    w = HeadWidget(model, text=TEXT)
    page = FakeFrontEnd(w)
    page.request({"selection": [[1, 1]], "focus": [1, 1]}, CLICK)
    before = snapshot(w)
    fault.action = _boom
    rid = page.request({"selection": [[0, 0]], "focus": [0, 0]}, CLICK)
    assert page.answer(rid)["ok"] is False and w.status["state"] == "error"
    assert "injected fault in layer 1" in w.status["message"] == page.answer(rid)["error"]
    assert snapshot(w) == before and page.states("focus") == [[1, 1]]
    assert model._trace is None and not model._forward_active
    assert model.layers[1].mlp is fault  # the model's own modules are back in place
    fault.action = _boom
    with pytest.raises(RuntimeError, match="injected fault"):  # from Python: raised
        w.select(0, 0)
    assert snapshot(w) == before and w.status["state"] == "error"
    rid = page.request({"selection": [[0, 0]], "focus": [0, 0]}, CLICK)
    assert page.answer(rid)["ok"] and w.selected == [(0, 0)]
    assert_answers(w, clean, focus=(0, 0))  # nothing half-computed was kept


def test_a_model_that_returns_nan_is_an_error_not_a_nan_result(faulty, clean):
    model, fault = faulty
    w = HeadWidget(model, text=TEXT)
    page = FakeFrontEnd(w)
    page.request({"selection": [[1, 1]]}, ["ablation"])
    assert_answers(w, clean, focus=None)  # no head in view yet
    before = snapshot(w)
    fault.poison = True
    rid = page.request({"selection": [[0, 3]], "focus": [0, 3]}, CLICK)
    assert page.answer(rid)["ok"] is False and w.status["state"] == "error"
    assert "the next-token loss after ablating [(0, 3)] is NaN or infinite" in w.status["message"]
    assert snapshot(w) == before
    with pytest.raises(ValueError, match="the model's logits are not finite on this text"):
        ablation_effect(model, TEXT, [])
    fault.poison = False
    rid = page.request({"selection": [[0, 3]], "focus": [0, 3]}, CLICK)
    assert page.answer(rid)["ok"] and w.selected == [(0, 3)]
    assert_answers(w, clean, focus=(0, 3))


def done_ids(page: FakeFrontEnd) -> list[str]:
    """The ids of the requests answered without error, in the order of their answers."""
    return [
        m["custom"]["id"]
        for m in page.received
        if m.get("custom", {}).get("ok") is True and not m["custom"].get("part")
    ]


def test_a_request_arriving_while_one_computes_is_answered_after_it(faulty, clean):
    model, fault = faulty
    w = HeadWidget(model, text=TEXT)
    page = FakeFrontEnd(w)
    page.request({"selection": [[0, 1]], "focus": [0, 1]}, CLICK)
    page.received.clear()
    seen = {}

    # While request 2's forward runs, request 3 arrives on the same thread.
    def interrupt():
        seen["id"] = page.request({"selection": [[1, 2]], "focus": [1, 2]}, CLICK)
        seen["answered then"] = list(page.received)

    fault.action = interrupt
    other = "Return the number of items in a list."
    first = page.request({"text": other, "selection": [[0, 3]]}, ["tokens", "grid", *CLICK])
    assert fault.action is None  # the fault fired
    assert seen["answered then"] == [] or all(
        m.get("custom", {}).get("id") != seen["id"] for m in seen["answered then"]
    )
    assert done_ids(page) == [first, seen["id"]]
    assert w.selected == [(1, 2)] and w.focus == [1, 2] and w.text == other
    assert page.result(seen["id"])["pattern"]["layer"] == 1  # the last pattern drawn is 3's
    assert all(m["custom"].get("ok") is not False for m in page.received if "custom" in m)
    assert_answers(w, clean, focus=(1, 2))


def test_a_request_from_another_thread_waits_for_the_running_one(faulty, clean):
    model, fault = faulty
    w = HeadWidget(model, text=TEXT)
    page = FakeFrontEnd(w)
    errors: list[BaseException] = []
    seen: dict = {}

    def second_request():
        try:
            seen["id"] = page.request({"selection": [[1, 3]], "focus": [1, 3]}, CLICK)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    thread = threading.Thread(target=second_request)

    def start_and_let_it_wait():
        thread.start()
        # the other thread's request arrives while request 2's forward runs: it is queued, and
        # the thread answering request 2 answers it next (the timeout only keeps a broken queue
        # from hanging the suite)
        thread.join(timeout=30)
        seen["queued"] = len(w._requests)
        seen["answered then"] = done_ids(page)

    fault.action = start_and_let_it_wait
    first = page.request({"selection": [[0, 2]], "focus": [0, 2]}, CLICK)
    assert not thread.is_alive() and errors == []
    assert seen["queued"] == 1 and seen["answered then"] == []  # nothing of it ran then
    assert done_ids(page) == [first, seen["id"]]
    assert w.status["state"] == "done"
    assert w.selected == [(1, 3)] and w.focus == [1, 3]
    assert_answers(w, clean, focus=(1, 3))


def test_one_widget_shown_twice_answers_both_views(clean):
    w = HeadWidget(clean, text=TEXT)
    page = FakeFrontEnd(w)  # two views of one widget share its comm; their ids differ
    a = page.request({"focus": [0, 1]}, ["pattern"])  # view A
    b = page.request({"selection": [[1, 0]]}, ["ablation"])  # view B
    assert page.answer(a)["ok"] and page.answer(b)["ok"] and w.focus == [0, 1]
    assert_answers(w, clean, focus=(0, 1))
    page.request({"kind": "previous_token"}, ["grid"])  # view A
    page.request({"selection": [[1, 0]], "focus": [1, 0]}, CLICK)  # view B
    assert w.status["state"] == "done"
    assert w.kind == "previous_token" and w.focus == [1, 0]
    assert_answers(w, clean, focus=(1, 0))
    expected = np.asarray(w.scores)
    rid = page.request({"kind": "previous_token"}, ["grid"])  # the same question again
    np.testing.assert_array_equal(page.result(rid)["grid"]["values"], expected)


# ---- atomic writes ------------------------------------------------------------------------------
def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


def test_atomic_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "scores.json"
    atomic_write_text(path, json.dumps({"a": 1}))
    assert json.loads(path.read_text()) == {"a": 1}
    os.chmod(path, 0o640)
    atomic_write(path, lambda tmp: tmp.write_bytes(b'{"a": 2}'))
    assert json.loads(path.read_text()) == {"a": 2} and path.stat().st_mode & 0o777 == 0o640
    assert _leftovers(tmp_path) == []


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"old")

    def half_then_fail(tmp):
        tmp.write_bytes(b"new but incomplete")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    with pytest.raises(FileNotFoundError, match="wrote nothing"):
        atomic_write(path, lambda tmp: None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write(tmp_path / "no" / "file.txt", lambda tmp: tmp.write_text("x"))
    assert path.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_a_writer_of_several_files_is_staged(tmp_path):
    (tmp_path / "config.json").write_text("old")

    def write(staging):
        (staging / "config.json").write_text("new")
        (staging / "weights.bin").write_bytes(b"w")

    assert atomic_write_files(tmp_path, write) == [
        tmp_path / "config.json",
        tmp_path / "weights.bin",
    ]
    assert (tmp_path / "config.json").read_text() == "new"

    def fail(staging):
        (staging / "config.json").write_text("newer")
        raise RuntimeError("crashed half-way")

    with pytest.raises(RuntimeError, match="crashed half-way"):
        atomic_write_files(tmp_path, fail)
    assert (tmp_path / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "weights.bin"]


def test_make_checkpoint_writes_atomically_and_only_into_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    make_checkpoint("llama", folder, num_hidden_layers=1)
    names = sorted(p.name for p in folder.iterdir())
    assert "config.json" in names and "model.safetensors" in names and _leftovers(folder) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    old = {name: (folder / name).read_bytes() for name in names}
    from mlx_headwidget import testing

    def crash(*_, **__):
        raise OSError("disk full while saving the config")

    monkeypatch.setattr(testing, "save_config", crash)
    with pytest.raises(OSError, match="disk full"):
        make_checkpoint("llama", folder, num_hidden_layers=1, seed=1)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == old
