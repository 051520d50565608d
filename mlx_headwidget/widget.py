"""`HeadWidget`: every head of a model scored on a clickable layer x head grid, the selected head's
attention on a text, and the effect of zero-ablating the selected heads, in one Jupyter widget.

The class holds synced traitlets and calls the library (`analysis.score_grid`,
`capture_attention`, `analysis.ablation_effect`); the front end (`js/widget.js`) only draws and
reports clicks. Arrays cross as little-endian bytes beside their shape and dtype: the grid
(n_layers, n_heads) float32, one head's pattern (T, T) float16, per-token losses (T-1,) float32.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anywidget
import mlx.core as mx
import numpy as np
import traitlets as t

from . import analysis
from .capture import capture_attention
from .model import InterpretableModel

DEFAULT_TEXT = "The cat sat on the mat. The cat sat on the mat."
KERNEL_KEYS = ("kinds", "shape", "grid", "text_tokens", "pattern", "ablation", "status")
_STATE = ("text", "kind", "selection", "focus", "grid", "text_tokens", "pattern", "ablation")
_CACHE_BYTES = 256 * 2**20  # patterns kept in the kernel, float16
_LAYER_BYTES = 16 * 2**20  # below this, one click keeps every head of its layer (or of all)


def asset(name: str) -> Path:
    """A front-end file: in the installed package (static/) or in the source tree (js/)."""
    here = Path(__file__).resolve().parent
    for path in (here / "static" / name, here.parent / "js" / name):
        if path.is_file():
            return path
    raise FileNotFoundError(f"{name} is in neither {here / 'static'} nor {here.parent / 'js'}")


class WidgetInputError(t.TraitError, ValueError):
    """A value the widget cannot take: bad selection or focus, unknown kind, unusable text."""


def _array(values: np.ndarray, dtype: str) -> dict:
    """{"shape", "dtype", "data": little-endian bytes}, the form the front end decodes."""
    a = np.ascontiguousarray(values, dtype="<f2" if dtype == "float16" else "<f4")
    return {"shape": list(a.shape), "dtype": dtype, "data": a.tobytes()}


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _send_now() -> None:
    """Get the messages queued so far out of the kernel before a long computation starts.

    ipykernel sends comm messages and stdout from one IO thread, and `sys.stdout.flush()` waits
    until everything queued before it has gone; without this a click's pattern waited behind
    the ablation computed next (+10 to +50 ms measured)."""
    if sys.stdout is not None:
        sys.stdout.flush()


def _message(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return text or type(err).__name__


class HeadWidget(anywidget.AnyWidget):
    """Score grid, token attention view and zero-ablation of the selected heads.

    `HeadWidget(model=None, text=..., kind="induction")`: `model` is an `InterpretableModel` or
    anything it loads (None = the bundled model). Drive it from Python with `w.text`, `w.kind`,
    `w.select(layer, head, add=False)`, `w.selection`; read `w.scores` (n_layers, n_heads),
    `w.selected`, `w.ablation_result`, `w.focused_pattern` (T, T); `w.on_select(cb)`.
    """

    _esm = asset("widget.js")
    _css = asset("widget.css")

    text = t.Unicode(DEFAULT_TEXT).tag(sync=True)
    kind = t.Unicode("induction").tag(sync=True)
    selection = t.List().tag(sync=True)  # [[layer, head], ...], the heads zero-ablated
    focus = t.List().tag(sync=True)  # [layer, head] shown in the view, or []
    request = t.Int(0).tag(sync=True)  # id of the newest front-end request, echoed in status
    prefetch_bytes = t.Int(8_000_000).tag(sync=True)  # budget for patterns sent ahead of clicks
    # seconds without any message from the kernel about a pending request before the front end
    # says the kernel may be busy, restarted or gone (it keeps waiting; an answer still shows)
    reply_timeout = t.Float(15.0).tag(sync=True)

    kinds = t.List(t.Unicode(), default_value=list(analysis.GRID_KINDS)).tag(sync=True)
    shape = t.List(t.Int()).tag(sync=True)  # [n_layers, n_heads]
    grid = t.Dict().tag(sync=True)  # {"kind", "text" (None if text-independent), array}
    text_tokens = t.Dict().tag(sync=True)  # {"text", "tokens": [str, ...]}
    pattern = t.Dict().tag(sync=True)  # {"text", "layer", "head", array (T, T) float16}
    ablation = t.Dict().tag(sync=True)  # {"text", "heads", "top_before", ..., token losses}
    status = t.Dict().tag(sync=True)  # {"state", "message", "request", "seconds"}

    def __init__(self, model: Any = None, text: str = DEFAULT_TEXT, kind: str = "induction", **kw):
        self.model = model if isinstance(model, InterpretableModel) else InterpretableModel(model)
        if self.model.group is not None:  # every process would have to answer every click
            raise ValueError(
                "HeadWidget runs on a model in one process, not on one sharded over "
                f"{self.model.group.size()} processes. Run the scan under mlx.launch "
                "(python -m mlx_headwidget MODEL --save scan.npz) and draw it in a notebook with "
                "mlx_headwidget.gridfile.load_grid('scan.npz').figure(); see docs/scale-out.md"
            )
        self._grids: OrderedDict = OrderedDict()
        self._patterns: OrderedDict = OrderedDict()
        self._ablations: OrderedDict = OrderedDict()
        self._callbacks: list[Callable[[list[tuple[int, int]]], Any]] = []
        self._changed: set[str] = set()
        self._collecting = 0
        self._good: dict[str, Any] = {}  # the state after the last successful update
        self._lock = threading.RLock()  # one request at a time, whichever thread sends it
        self._busy = False  # a front-end request is being answered
        self._pending: list[dict] = []  # requests that arrived meanwhile, answered next
        with self._batch():  # one update for everything set here
            super().__init__(shape=[self.model.n_layers, self.model.n_heads], **kw)
            self.text, self.kind = text, kind
            self._changed |= {"text", "kind"}
        self.on_msg(self._on_custom_msg)

    # ---- Python API ------------------------------------------------------------------------
    @property
    def selected(self) -> list[tuple[int, int]]:
        """The selected (zero-ablated) heads as (layer, head) tuples."""
        return [(int(layer), int(head)) for layer, head in self.selection]

    @property
    def scores(self) -> np.ndarray:
        """The current grid: float32 (n_layers, n_heads) of score `kind`."""
        return self._grids[self._grid_key(self.text, self.kind)].astype(np.float32, copy=True)

    @property
    def ablation_result(self) -> analysis.AblationResult | None:
        """The ablation of the current selection on the current text (no heads: before == after)."""
        return self._ablations.get((self.text, tuple(sorted(self.selected))))

    @property
    def focused_pattern(self) -> np.ndarray | None:
        """The pattern (T, T) float32 of the head in view (rows = queries), or None."""
        if not self.focus:
            return None
        layer, head = self.focus
        return self._head_patterns(self.text, [(layer, head)])[(layer, head)].astype(np.float32)

    def select(self, layer: int, head: int, add: bool = False) -> None:
        """Select head (layer, head) alone, or with `add=True` add it to / remove it from the
        selection; the view shows it (or, once removed, the last selected head)."""
        head_ = self._pair([layer, head], "head")
        old = self.selected
        if not add:
            new = [head_]
        else:
            new = [h for h in old if h != head_] if head_ in old else [*old, head_]
        with self._batch():
            self.selection = [list(h) for h in new]
            self.focus = list(head_) if head_ in new else list(new[-1]) if new else []

    def on_select(self, callback: Callable[[list[tuple[int, int]]], Any]) -> Callable:
        """Call `callback(selected)` after every change of the selection; returns `callback`."""
        if not callable(callback):
            raise TypeError(f"on_select takes a callable(selected), got {callback!r}")
        self._callbacks.append(callback)
        return callback

    # ---- validation --------------------------------------------------------------------------
    def _reject(self, message: str) -> WidgetInputError:
        self._set_status("error", message)
        return WidgetInputError(message)

    def _pair(self, value: Any, what: str) -> tuple[int, int]:
        L, H = self.shape
        pair = isinstance(value, (list, tuple)) and len(value) == 2
        if not pair or not all(_is_int(v) for v in value):
            raise self._reject(f"{what} must be a pair [layer, head] of integers, got {value!r}")
        layer, head = int(value[0]), int(value[1])
        if not (0 <= layer < L and 0 <= head < H):
            raise self._reject(
                f"{what} {[layer, head]} is out of range: layers are 0..{L - 1}, heads 0..{H - 1}"
            )
        return layer, head

    @t.validate("text")
    def _valid_text(self, proposal: Any) -> str:
        try:
            n_tokens = self.model.to_tokens(proposal["value"]).shape[1]
        except (ValueError, TypeError) as err:
            raise self._reject(f"text not accepted: {_message(err)}") from None
        if n_tokens < 2:
            raise self._reject(
                f"text not accepted: it gives {n_tokens} token; scoring needs at least 2"
            )
        return proposal["value"]

    @t.validate("reply_timeout")
    def _valid_timeout(self, proposal: Any) -> float:
        value = proposal["value"]
        if not value > 0:
            raise self._reject(f"reply_timeout must be > 0 seconds, got {value!r}")
        return float(value)

    @t.validate("kind")
    def _valid_kind(self, proposal: Any) -> str:
        if proposal["value"] not in analysis.GRID_KINDS:
            choices = ", ".join(analysis.GRID_KINDS)
            raise self._reject(f"unknown score kind {proposal['value']!r}; choose one of {choices}")
        return proposal["value"]

    @t.validate("selection")
    def _valid_selection(self, proposal: Any) -> list:
        heads = [self._pair(h, "selected head") for h in proposal["value"]]
        if len(set(heads)) < len(heads):
            layer, head = next(h for i, h in enumerate(heads) if h in heads[:i])
            raise self._reject(f"head L{layer}H{head} is selected twice")
        return [list(h) for h in heads]

    @t.validate("focus")
    def _valid_focus(self, proposal: Any) -> list:
        if not proposal["value"]:
            return []
        focus = self._pair(proposal["value"], "focus")
        return list(focus)

    # ---- updates -----------------------------------------------------------------------------
    @t.observe("text", "kind", "selection", "focus", "request")
    def _on_change(self, change: Any) -> None:
        self._changed.add(change["name"])
        if not self._collecting:
            self._update(from_front=False)

    @contextmanager
    def _batch(self) -> Iterator[None]:
        """Collect trait changes and answer them with one update at the end."""
        self._collecting += 1
        try:
            yield
        except BaseException:
            self._changed.clear()
            raise
        finally:
            self._collecting -= 1
        if not self._collecting:
            self._update(from_front=False)

    def set_state(self, sync_data: dict) -> None:
        """A change from the front end: a bad value is shown in `status`, never raised.

        Requests are answered one at a time, in order: one arriving while another computes (from
        inside it, or from another thread) is answered right after it.
        """
        with self._lock:
            if self._busy:
                self._pending.append(sync_data)
                return
            self._busy = True
            try:
                self._apply_front(sync_data)
                while self._pending:
                    self._apply_front(self._pending.pop(0))
            finally:
                self._busy = False

    def _apply_front(self, sync_data: dict) -> None:
        request = sync_data.get("request")
        self._collecting += 1
        try:
            bad = sorted(set(sync_data) & set(KERNEL_KEYS))
            if bad:
                raise self._reject(f"{', '.join(bad)} can only be set by the kernel")
            behind = isinstance(request, int) and request < self.request
            if behind:  # ids only grow: a view behind the others never rewinds them
                sync_data = {**sync_data, "request": self.request}
            super().set_state(sync_data)
            if behind:
                self.send_state("request")  # and it learns the newest id
        except Exception as err:
            self._restore()
            if isinstance(request, int) and request > self.request:
                self.request = request
            self._changed.clear()
            self._collecting -= 1
            self.send_state([k for k in sync_data if k in self.keys])
            self._set_status("error", _message(err))
            return
        self._collecting -= 1
        self._update(from_front=True)

    def _update(self, from_front: bool) -> None:
        """Recompute what the changed traits affect, in the order the front end draws it."""
        with self._lock:
            self._recompute(from_front)

    def _recompute(self, from_front: bool) -> None:
        """Each part goes out as soon as it is computed; the last goes out in one message with
        the "done" status, so the front end hears the answer in one piece."""
        changed, self._changed = self._changed, set()
        if not changed:
            return
        started = time.perf_counter()
        text, kind = self.text, self.kind
        parts: list[tuple[str, Callable[[], dict]]] = []
        if "text" in changed:
            tokens = self.model.to_str_tokens
            parts.append(("text_tokens", lambda: {"text": text, "tokens": tokens(text)}))
        if changed & {"text", "kind"}:
            parts.append(("grid", lambda: self._grid_state(text, kind)))
        if changed & {"text", "focus"}:
            parts.append(("pattern", lambda: self._pattern_state(text, self.focus)))
        if changed & {"text", "selection"}:
            parts.append(("ablation", lambda: self._ablation_state(text, self.selected)))
        last: dict = {}
        self._collecting += 1
        try:
            for name, compute in parts:
                if last:
                    self.set_trait(*last.popitem())
                    _send_now()
                last[name] = compute()
        except Exception as err:
            self._restore()
            self._set_status("error", _message(err))
            if not from_front:
                raise
            return
        finally:
            self._changed.clear()
            self._collecting -= 1
        with self.hold_sync():
            for name, value in last.items():
                self.set_trait(name, value)
            self._good = {k: getattr(self, k) for k in _STATE}
            self._set_status("done", f"done in {time.perf_counter() - started:.2f} s", started)
        if "selection" in changed:
            for callback in self._callbacks:
                try:
                    callback(self.selected)
                except Exception as err:
                    self._set_status("error", f"on_select callback failed: {_message(err)}")
                    if not from_front:
                        raise

    def _restore(self) -> None:
        """Back to the last good state."""
        for key, value in self._good.items():
            setattr(self, key, value)

    def _set_status(
        self,
        state: str,
        message: str,
        started: float | None = None,
        progress: float | None = None,
    ) -> None:
        seconds = None if started is None else round(time.perf_counter() - started, 4)
        request = self.request
        status = {"state": state, "message": message, "request": request, "seconds": seconds}
        if progress is not None:
            status["progress"] = round(progress, 4)  # 0..1, shown as a percentage
        self.status = status

    # ---- library calls, cached ---------------------------------------------------------------
    @staticmethod
    def _keep(cache: OrderedDict, key: Any, value: Any, limit: int) -> Any:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > limit:
            cache.popitem(last=False)
        return value

    def _grid_key(self, text: str, kind: str) -> tuple[str | None, str]:
        return (None if kind == "induction" else text, kind)  # "induction" ignores the text

    def _grid_state(self, text: str, kind: str) -> dict:
        key = self._grid_key(text, kind)
        grid = self._grids.get(key)
        if grid is None:
            message = f"scoring {self.shape[0] * self.shape[1]} heads: {kind}"
            self._set_status("computing", message, progress=0.0)
            shown = [time.perf_counter()]

            def progress(done: int, total: int) -> None:  # at most ~10 status messages a second
                if done < total and time.perf_counter() - shown[0] < 0.1:
                    return
                shown[0] = time.perf_counter()
                self._set_status("computing", message, progress=done / total)
                _send_now()

            grid = analysis.score_grid(self.model, text, kind, progress=progress)
            grid = np.asarray(grid, dtype=np.float32)
        self._keep(self._grids, key, grid, 64)
        return {"kind": kind, "text": key[0], **_array(grid, "float32")}

    def _head_patterns(self, text: str, heads: list[tuple[int, int]]) -> dict:
        """{(layer, head): float16 (T, T)}, from the cache or computed in one forward pass.

        A forward runs every layer anyway, so it keeps every head of the model when they fit in
        `_LAYER_BYTES` (float16), else every head of the layers asked for when those fit."""
        found = {h: self._patterns.get((text, *h)) for h in heads}
        wanted: dict[int, set[int]] = {}
        for layer, head in (h for h, p in found.items() if p is None):
            wanted.setdefault(layer, set()).add(head)
        if wanted:
            T = self.model.to_tokens(text).shape[1]
            L, H = self.shape
            if L * H * T * T * 2 <= _LAYER_BYTES:
                wanted = {layer: set(range(H)) for layer in range(L)}
            elif H * T * T * 2 <= _LAYER_BYTES:
                wanted = {layer: set(range(H)) for layer in wanted}

            def keep(layer: int, pattern: Any) -> None:  # pattern (1, n_heads, T, T) float32
                values = np.asarray(pattern[0].astype(mx.float16))
                for head in wanted[layer]:
                    value = values[head].copy()  # not a view: the cache frees heads one by one
                    self._patterns[(text, layer, head)] = value
                    if (layer, head) in found:
                        found[(layer, head)] = value

            capture_attention(self.model, text, layers=sorted(wanted), on_pattern=keep)
        for h in heads:
            self._patterns.move_to_end((text, *h))
        total = sum(p.nbytes for p in self._patterns.values())
        while total > _CACHE_BYTES:
            total -= self._patterns.popitem(last=False)[1].nbytes
        return found

    def _pattern_state(self, text: str, focus: list) -> dict:
        if not focus:
            return {}
        layer, head = focus
        values = self._head_patterns(text, [(layer, head)])[(layer, head)]
        return {"text": text, "layer": layer, "head": head, **_array(values, "float16")}

    def _ablation_state(self, text: str, heads: list[tuple[int, int]]) -> dict:
        key = (text, tuple(sorted(heads)))
        result = self._ablations.get(key)
        if result is None:
            baseline = self._ablations.get((text, ())) if key[1] else None
            result = analysis.ablation_effect(self.model, text, list(key[1]), baseline=baseline)
        self._keep(self._ablations, key, result, 64)
        return {
            "text": text,
            "heads": [list(h) for h in result.heads],
            "top_before": [[tok, float(p)] for tok, p in result.top_before],
            "top_after": [[tok, float(p)] for tok, p in result.top_after],
            "loss_before": float(result.loss_before),
            "loss_after": float(result.loss_after),
            "token_loss_before": _array(result.token_loss_before, "float32"),
            "token_loss_after": _array(result.token_loss_after, "float32"),
        }

    def _on_custom_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """{"type": "prefetch", "text", "heads"}: reply with those heads' patterns, if they fit."""
        if not isinstance(content, dict) or content.get("type") != "prefetch":
            return
        with self._lock:
            if not self._busy:  # prefetching is optional: skipped while a request computes
                self._prefetch(content)

    def _prefetch(self, content: dict) -> None:
        text = content.get("text")
        if text != self.text:
            return  # asked for an older text: the front end no longer needs it
        try:
            asked = content.get("heads")
            if not isinstance(asked, list):
                raise self._reject(f"prefetch heads must be a list of [layer, head], got {asked!r}")
            T = len(self.text_tokens["tokens"])
            room = max(0, self.prefetch_bytes // (2 * T * T))
            heads = list(dict.fromkeys(self._pair(h, "prefetch head") for h in asked))[:room]
            patterns = self._head_patterns(text, heads)
        except Exception as err:
            self._set_status("error", f"prefetch failed: {_message(err)}")
            return
        buffers = [np.ascontiguousarray(patterns[h], dtype="<f2").tobytes() for h in heads]
        reply = {"type": "patterns", "text": text, "dtype": "float16", "shape": [T, T]}
        self.send({**reply, "heads": [list(h) for h in heads]}, buffers)
