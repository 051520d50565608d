"""`HeadWidget`: every head of a model scored on a clickable layer x head grid, the selected head's
attention on a text, and the effect of zero-ablating the selected heads, in one anywidget.

Synced traits hold the state, each value checked (`wire.check`). The front end's requests (custom
messages, `wire`) are answered one at a time: the parts, computed by the step's `HeadSession`, are
sent, then the changes applied (on_select callbacks run after the reply); then the kernel pushes
the best heads' patterns ahead of clicks, within `prefetch_bytes` per text and training step.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from . import analysis, timeline, wire
from .distributed import refuse_sharded_widget
from .errors import WidgetInputError
from .model import InterpretableModel
from .session import HeadSession
from .wire import asset

__all__ = ["HeadWidget", "WidgetInputError", "asset"]
DEFAULT_TEXT = "The cat sat on the mat. The cat sat on the mat."
PATTERN_ABLATION = ("pattern", "ablation")  # what a click computes


class Step(t.TraitType):
    """A training step: an int, or None for a model without checkpoints. A trait that allows None
    would take None unchecked; this one has every value checked by the widget (`_valid`)."""

    default_value = None
    info_text = "a training step"


class HeadWidget(anywidget.AnyWidget):
    """Score grid, token attention view and zero-ablation of the selected heads.

    `HeadWidget(model=None, text=..., kind="induction", checkpoints=None)`: `model` is an
    `InterpretableModel` or anything it loads (None = the bundled model). `checkpoints`:
    `timeline.Checkpoint`s of the model's training, the last being the model itself (None: the
    bundled model's own for the bundled model, else none); a slider then picks the step (`w.step`,
    one of `w.steps`) whose weights the view shows. Drive it from Python with `w.text`, `w.kind`,
    `w.step`, `w.select(layer, head, add=False)`, `w.selection`, `w.look_here(key, query=None)`,
    `w.contrast` ({corrupted, answer, distractor} of kinds "patching" and "logit_attribution");
    read `w.scores` (layers, heads), `w.selected`, `w.ablation_result`, `w.focused_pattern`
    (T, T); `w.on_select(cb)`.
    """

    _esm = asset("widget.js")
    _css = asset("widget.css")

    text = t.Unicode(DEFAULT_TEXT).tag(sync=True)
    kind = t.Unicode("induction").tag(sync=True)
    selection = t.List().tag(sync=True)  # [[layer, head], ...], the heads zero-ablated
    focus = t.List().tag(sync=True)  # [layer, head] shown in the view, or []
    attend_to = t.List().tag(sync=True)  # [query, key] token positions of kind attention_to_token
    contrast = t.Dict().tag(sync=True)  # {corrupted, answer, distractor} of patching and DLA
    status = t.Dict({"state": "done", "message": ""}).tag(sync=True)  # the last answer
    kinds = t.List(t.Unicode(), default_value=list(wire.VIEW_KINDS)).tag(sync=True)
    shape = t.List(t.Int()).tag(sync=True)  # [n_layers, n_heads]
    steps = t.List(t.Int()).tag(sync=True)  # training steps with weights, ascending; [] = none
    step = Step().tag(sync=True)  # the one shown: its weights give every part of the view
    # seconds of silence about a request before the view says the kernel may be busy or gone
    reply_timeout = t.Float(15.0).tag(sync=True)
    prefetch_bytes = t.Int(8_000_000)  # float16 patterns of the best heads pushed per text

    def __init__(
        self,
        model: Any = None,
        text: str = DEFAULT_TEXT,
        kind: str = "induction",
        checkpoints: list[timeline.Checkpoint] | None = None,
        **kw,
    ):
        self.model = model if isinstance(model, InterpretableModel) else InterpretableModel(model)
        if checkpoints is None:
            checkpoints = timeline.bundled_checkpoints() if self.model.bundled else []
        refuse_sharded_widget(self.model)
        self.sessions = timeline.StepSessions(self.model, checkpoints)
        self._callbacks: list[Callable[[list[tuple[int, int]]], Any]] = []
        self._requests: deque[dict] = deque()  # arrived, not yet answered
        self._answering = threading.Lock()  # held by the thread answering them
        self._pushed = wire.Pushed()  # the heads whose patterns went out
        shape = [self.model.n_layers, self.model.n_heads]
        steps, step = self.sessions.steps, kw.pop("step", self.sessions.last)
        super().__init__(shape=shape, text=text, kind=kind, steps=steps, step=step, **kw)
        self.on_msg(self._on_msg)

    # ---- Python API ------------------------------------------------------------------------
    @property
    def session(self) -> HeadSession:
        """The computations and caches of the training step shown (`step`)."""
        return self.sessions.at(self.step)

    @property
    def selected(self) -> list[tuple[int, int]]:
        """The selected (zero-ablated) heads as (layer, head) tuples."""
        return [(int(layer), int(head)) for layer, head in self.selection]

    @property
    def scores(self) -> np.ndarray:
        """The current grid: float32 (n_layers, n_heads) of score `kind`."""
        return wire.grid_values(self.session, self._state()).copy()

    @property
    def text_tokens(self) -> dict:
        """{"text", "tokens": one string per token of the text}."""
        return {"text": self.text, "tokens": self.session.tokens(self.text)}

    @property
    def ablation_result(self) -> analysis.AblationResult:
        """The ablation of the current selection on the current text (no heads: before == after)."""
        return self.session.ablation(self.text, self.selected)

    @property
    def focused_pattern(self) -> np.ndarray | None:
        """The pattern (T, T) float32 of the head in view (rows = queries), or None."""
        if not self.focus:
            return None
        head = tuple(self.focus)
        return self.session.patterns(self.text, [head])[head].astype(np.float32)

    def select(self, layer: int, head: int, add: bool = False) -> None:
        """What a click does: select head (layer, head) alone, or with `add=True` add it to /
        remove it from the selection; the view shows it (or, once removed, the last selected
        head). Its pattern and ablation are computed first: a failure raises, nothing changes."""
        pair = tuple(self._python(wire.pair, [layer, head], "head", self.shape))
        changes, started = wire.click(self.selected, pair, add), time.perf_counter()
        self._python(wire.parts, self.sessions, {**self._state(), **changes}, PATTERN_ABLATION)
        self._apply(changes, started)

    def look_here(self, key: int, query: int | None = None) -> None:
        """Which heads look here: the grid shows every head's attention from token `query`
        (None: the last) to token `key` of the text (kind "attention_to_token"). Computed first:
        a failure raises, nothing changes."""
        if query is None:
            query = self.session.ids(self.text).shape[1] - 1
        changes = {"kind": wire.ATTENTION_TO, "attend_to": [query, key]}
        changes = {k: self._python(self._checked, k, v) for k, v in changes.items()}
        started = time.perf_counter()
        self._python(wire.parts, self.sessions, {**self._state(), **changes}, ("grid",))
        self._apply(changes, started)

    def on_select(self, callback: Callable[[list[tuple[int, int]]], Any]) -> Callable:
        """Call `callback(selected)` after every change of the selection; returns `callback`."""
        if not callable(callback):
            raise TypeError(f"on_select takes a callable(selected), got {callback!r}")
        self._callbacks.append(callback)
        return callback

    def save_html(self, path: str | Path, heads: list | None = None, **kw: Any):
        """The widget as one HTML file that opens with no kernel (`export.save_html`: its text,
        kind, selection, step; the patterns of `heads`, None: the selection then the best)."""
        from .export import save_html

        state = dict(kind=self.kind, selection=self.selection, heads=heads, session=self.session)
        state["step"] = self.step  # the page shows this step's data, without a slider
        return save_html(self.model, path, self.text, **state, **kw)

    # ---- checks ------------------------------------------------------------------------------
    def _python(self, fn: Callable, *args: Any) -> Any:
        """fn(*args) for a Python caller: an error also goes to `status`, then is raised."""
        try:
            return fn(*args)
        except Exception as err:
            self._set_status("error", wire.error_text(err))
            raise

    def _checked(self, name: str, value: Any) -> Any:
        """The value trait `name` takes for `value`, or WidgetInputError (`wire.check`)."""
        return wire.check(name, value, self.shape, self.sessions)

    @t.validate(*wire.STATE, "reply_timeout")
    def _valid(self, proposal: Any) -> Any:
        return self._python(self._checked, proposal["trait"].name, proposal["value"])

    @t.observe("selection")
    def _selection_changed(self, _change: Any) -> None:
        for callback in self._callbacks:
            try:
                callback(self.selected)
            except Exception as err:
                self._set_status("error", f"on_select callback failed: {wire.error_text(err)}")
                raise

    # ---- requests ----------------------------------------------------------------------------
    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """Queue a request; answer the queue in arrival order, one at a time: one arriving meanwhile
        (from inside a forward, or another thread) is answered next by the thread answering."""
        if not isinstance(content, dict) or "id" not in content:
            return
        self._requests.append(content)
        while self._requests and self._answering.acquire(blocking=False):
            try:
                while self._requests:
                    self._answer(self._requests.popleft())
            finally:
                self._answering.release()

    def _answer(self, request: dict) -> None:
        """The dispatcher: run the op, reply, then apply its changes and push patterns."""
        started, rid = time.perf_counter(), request["id"]
        try:
            changes, want, new_view = wire.arguments(request, self._checked)
            state = {**self._state(), **changes}
            result = wire.parts(self.sessions, state, want, self._reply, rid)
        except Exception as err:
            self._set_status("error", wire.error_text(err))
            self._reply({"id": rid, "ok": False, "error": wire.error_text(err)})
            return
        seconds = round(time.perf_counter() - started, 4)
        self._reply({"id": rid, "ok": True, "result": result, "seconds": seconds})
        try:
            self._apply(changes, started)
        except Exception:  # an on_select callback failed: said in status, the next request goes on
            return
        self._push(new_view)

    def _state(self) -> dict:
        return {name: getattr(self, name) for name in wire.STATE}

    def _apply(self, changes: dict, started: float) -> None:
        """Set the (checked) changes and the done status, in one message to every view."""
        with self.hold_sync():
            for name, value in changes.items():
                setattr(self, name, value)
            self._set_status("done", f"done in {time.perf_counter() - started:.2f} s")

    def _push(self, new_view: bool) -> None:
        """Send the best heads' patterns not sent yet, until `prefetch_bytes` (float16) went out
        for this text at this step (`wire.Pushed`); a new view gets them again."""
        try:
            view = (self.text, self.kind, self.step)
            message = self._pushed.next(self.session, *view, self.prefetch_bytes, new_view)
        except Exception as err:  # optional: a click computes its pattern anyway
            self._set_status("error", f"patterns ahead of clicks failed: {wire.error_text(err)}")
            return
        if message is not None:
            self._reply(message)

    def _reply(self, message: dict) -> None:
        """Send `message`, arrays as buffers, and get it out of the kernel at once: ipykernel sends
        comm messages and stdout from one IO thread; `sys.stdout.flush()` waits until all queued
        before it has gone (else a click's pattern waited behind the next ablation: +10-50 ms)."""
        buffers: list = []
        self.send(wire.pack(message, buffers), buffers)
        if sys.stdout is not None:
            sys.stdout.flush()

    def _set_status(self, state: str, message: str) -> None:
        self.status = {"state": state, "message": message}
