"""What `HeadWidget` and its front end (js/widget.js) say to each other: the messages, and each
part of the state as it travels. Arrays travel as binary buffers; in the JSON they are
{"shape", "dtype", "buffer": index into the message's buffers}, little-endian float16 or float32.

  front end -> kernel  {"id", "op": "set", "args": {"changes": {text?, kind?, selection?, focus?,
                        step?, attend_to?, contrast?}, "want": [part, ...], "new_view": bool}}
  kernel -> front end  {"id", "progress": {"done": 0..1, "message"}}      while a grid is scored
                       {"id", "ok": true, "part": true, "result": {part}}  sent as soon as computed
                       {"id", "ok": true, "result": {part, ...}, "seconds"} the answer (last part;
                        "seconds": null from a saved page's stand-in, js/static.js)
                       {"id", "ok": false, "error": message}               nothing was applied
                       {"push": "patterns", "text", "step", "heads", "patterns"}  ahead of clicks

Parts, in the order they are computed and drawn; `step` is the training step whose weights computed
it (None for a model without checkpoints), so a view never draws one step's data for another:
  "tokens"   {text, tokens: [str]}
  "grid"     {kind, text (None: the same for every text), step, values (n_layers, n_heads) float32,
              attend_to: [query, key] for kind "attention_to_token" (else []),
              into: [layer, head] (the head in view) for a composition kind (else []),
              contrast: {corrupted, answer, distractor} for patching and DLA (else {})}
  "pattern"  {text, step, layer, head, values (T, T) float16}, or {} with no head in view
  "ablation" {text, step, heads, top_before, top_after: [[token, p]], loss_before, loss_after,
              token_loss_before, token_loss_after (T-1,) float32}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any

import numpy as np

from .detect import GRID_KINDS
from .errors import WidgetInputError, is_int
from .session import HeadSession
from .timeline import StepSessions

PARTS = ("tokens", "grid", "pattern", "ablation")
# what a request may change
STATE = ("text", "kind", "selection", "focus", "step", "attend_to", "contrast")
# the grid kinds of the view: the scores of `detect`, and every head's attention from token
# `attend_to[0]` (the query) to token `attend_to[1]` (the key): "which heads look here"
ATTENTION_TO = "attention_to_token"
# and the weight-based composition scores of every earlier head into the head in view (`focus`):
# "who feeds this head"
COMPOSITION = {"k_composition": "k", "q_composition": "q", "v_composition": "v"}
# and, with `contrast` {corrupted, answer, distractor} (one-token texts), each head's recovered
# share of logit(answer) - logit(distractor) when patched from the text into the corrupted text,
# and each head's direct logit attribution on the text
PATCHING, DLA = "patching", "logit_attribution"
VIEW_KINDS = (*GRID_KINDS, ATTENTION_TO, *COMPOSITION, PATCHING, DLA)
CONTRAST = ("corrupted", "answer", "distractor")
TEXT_FREE = ("induction", *COMPOSITION)  # grids the same for every text


def error_text(err: BaseException) -> str:
    """What the front end shows of an error: its message (a KeyError's without quotes)."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return text or type(err).__name__


def arguments(request: dict, check: Callable[[str, Any], Any]) -> tuple[dict, list, bool]:
    """(changes, wanted parts, new_view) of a request {id, op, args}, each change checked by
    `check(name, value)`; or WidgetInputError naming what is wrong and what is valid."""
    if request.get("op") != "set":
        raise WidgetInputError(f"unknown request {request.get('op')!r}; the kernel answers 'set'")
    args = request.get("args")
    if not isinstance(args, dict):
        raise WidgetInputError(f"request args must be an object, got {args!r:.80}")
    changes, want = args.get("changes", {}), args.get("want", [])
    if not isinstance(changes, dict) or not set(changes) <= set(STATE):
        got = sorted(changes) if isinstance(changes, dict) else changes
        raise WidgetInputError(f"a request changes {', '.join(STATE)}; got {got!r}")
    if not isinstance(want, list) or not set(want) <= set(PARTS):
        raise WidgetInputError(f"a request wants some of {', '.join(PARTS)}; got {want!r}")
    checked = {name: check(name, changes[name]) for name in STATE if name in changes}
    return checked, want, bool(args.get("new_view"))


def pack(value: Any, buffers: list) -> Any:
    """`value` with each numpy array replaced by {"shape", "dtype", "buffer"}, its bytes appended
    to `buffers`."""
    if isinstance(value, np.ndarray):
        dtype = "float16" if value.dtype == np.float16 else "float32"
        data = np.ascontiguousarray(value, dtype="<f2" if dtype == "float16" else "<f4")
        buffers.append(data.tobytes())
        return {"shape": list(data.shape), "dtype": dtype, "buffer": len(buffers) - 1}
    if isinstance(value, dict):
        return {k: pack(v, buffers) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [pack(v, buffers) for v in value]
    return value


def part(
    session: HeadSession, name: str, state: dict, progress: Callable[[int, int], Any] | None = None
) -> dict:
    """Part `name` of `state` {text, kind, selection, focus, step?}, computed (or found) by
    `session` (the one of that step); `progress(done, total)` hears a grid being scored."""
    text, step = state["text"], state.get("step")
    if name == "tokens":
        return {"text": text, "tokens": session.tokens(text)}
    if name == "grid":
        kind, attend_to = state["kind"], list(state.get("attend_to") or [])
        values = grid_values(session, state, progress)
        text = None if kind in TEXT_FREE else text
        attend_to = attend_to if kind == ATTENTION_TO else []
        into = list(state["focus"]) if kind in COMPOSITION else []
        contrast = dict(state.get("contrast") or {}) if kind in (PATCHING, DLA) else {}
        grid = {"kind": kind, "text": text, "step": step, "values": values}
        return {**grid, "attend_to": attend_to, "into": into, "contrast": contrast}
    if name == "pattern":
        if not state["focus"]:
            return {}
        layer, head = state["focus"]
        values = session.patterns(text, [(layer, head)])[(layer, head)]
        return {"text": text, "step": step, "layer": layer, "head": head, "values": values}
    if name == "ablation":
        result = session.ablation(text, [tuple(h) for h in state["selection"]])
        return {
            "text": text,
            "step": step,
            "heads": [list(h) for h in result.heads],
            "top_before": [[tok, float(p)] for tok, p in result.top_before],
            "top_after": [[tok, float(p)] for tok, p in result.top_after],
            "loss_before": float(result.loss_before),
            "loss_after": float(result.loss_after),
            "token_loss_before": result.token_loss_before.astype(np.float32),
            "token_loss_after": result.token_loss_after.astype(np.float32),
        }
    raise ValueError(f"unknown part {name!r}; the parts are {', '.join(PARTS)}")


def parts(
    sessions: StepSessions,
    state: dict,
    want: Container,
    send: Callable[[dict], Any] | None = None,
    rid: Any = None,
) -> dict:
    """The wanted parts of `state`, in drawing order (PARTS), each computed (or found) by the
    session of `state`'s step. For a request (`send`, its id `rid`): each part but the last is
    sent as soon as it is computed, {id, ok, part: true, result}, and so is a long grid's
    progress; the last is returned (the answer)."""
    session = sessions.at(state.get("step"))
    out: dict = {}
    for name in (n for n in PARTS if n in want):
        if out and send is not None:
            send({"id": rid, "ok": True, "part": True, "result": out})
            out = {}
        message = progress_message(session, state) if send and name == "grid" else None
        progress = None if message is None else progress_sender(send, rid, message)
        out[name] = part(session, name, state, progress)
    return out


def asset(name: str) -> Path:
    """A front-end file: in the installed package (static/) or in the source tree (js/)."""
    here = Path(__file__).resolve().parent
    for path in (here / "static" / name, here.parent / "js" / name):
        if path.is_file():
            return path
    raise FileNotFoundError(f"{name} is in neither {here / 'static'} nor {here.parent / 'js'}")


def grid_values(
    session: HeadSession, state: dict, progress: Callable[[int, int], Any] | None = None
) -> np.ndarray:
    """The grid (n_layers, n_heads) float32 of `state`'s text and kind, and what that kind
    depends on: `attend_to` (attention_to_token), `focus` (compositions), `contrast` (patching,
    logit_attribution)."""
    if state["kind"] in COMPOSITION:
        if not state["focus"]:  # no head in view: no head feeds it (NaN, grey)
            return np.full((session.model.n_layers, session.model.n_heads), np.nan, np.float32)
        return session.composition_into(COMPOSITION[state["kind"]], *state["focus"])
    if state["kind"] in (PATCHING, DLA):
        return _contrast_grid(session, state, progress)
    if state["kind"] != ATTENTION_TO:
        return session.grid(state["text"], state["kind"], progress=progress)
    if not state.get("attend_to"):
        raise WidgetInputError(
            f"the {ATTENTION_TO} grid needs a token: alt-click a token in the token view "
            "(or call w.look_here(key))"
        )
    query, key = state["attend_to"]
    return session.attention_to(state["text"], query, key)


def _contrast_grid(
    session: HeadSession, state: dict, progress: Callable[[int, int], Any] | None
) -> np.ndarray:
    """The patching or direct logit attribution grid of `state`'s text and `contrast`."""
    c, kind = state.get("contrast") or {}, state["kind"]
    need = ("answer",) if kind == DLA else CONTRAST
    if not all(c.get(k) for k in need):
        what = (
            "an answer token" if kind == DLA else "a corrupted text, answer and distractor tokens"
        )
        raise WidgetInputError(f"the {kind} grid needs {what}: fill them in above the grid")
    if kind == DLA:
        return session.logit_attribution(state["text"], c["answer"], c.get("distractor") or None)
    return session.patching(state["text"], c["corrupted"], c["answer"], c["distractor"], progress)


def progress_message(session: HeadSession, state: dict) -> str | None:
    """What the front end shows while `state`'s grid is computed, when that is long (a scan of
    every head, patching every head) and not cached; else None."""
    kind, (L, H) = state["kind"], (session.model.n_layers, session.model.n_heads)
    if kind in GRID_KINDS and not session.cached(session.grid_key(state["text"], kind)):
        return f"scoring {L * H} heads: {kind}"
    c = state.get("contrast") or {}
    key = session.patching_key(state["text"], *(c.get(k) for k in CONTRAST))
    if kind == PATCHING and not session.cached(key):
        return f"patching {L * H} heads"
    return None


def best_heads(grid: np.ndarray, n: int, skip: Container = ()) -> list[tuple[int, int]]:
    """The `n` heads with the highest scores in `grid` (n_layers, n_heads), best first (ties in
    layer, head order; NaN last), leaving out those in `skip`."""
    order = np.argsort(-np.nan_to_num(grid, nan=-np.inf), axis=None, kind="stable")
    heads = (divmod(int(i), grid.shape[1]) for i in order)
    return [h for h in heads if h not in skip][: max(0, n)]


def push(
    session: HeadSession, text: str, kind: str, budget: int, pushed: set, step: int | None = None
) -> dict | None:
    """The push of the patterns of the best heads of the (text, kind) grid not in `pushed`, best
    first, as many as keep all pushed patterns (float16 (T, T)) within `budget` bytes; they are
    added to `pushed`. None when the grid is not computed yet (no ranking) or none is left.
    `session` is the one of training step `step`, which the message carries."""
    if not session.cached(session.grid_key(text, kind)):
        return None
    T = session.ids(text).shape[1]
    heads = best_heads(session.grid(text, kind), budget // (2 * T * T) - len(pushed), pushed)
    if not heads:
        return None
    patterns = session.patterns(text, heads)
    pushed.update(heads)
    message = {"push": "patterns", "text": text, "step": step, "heads": [list(h) for h in heads]}
    return {**message, "patterns": [patterns[h] for h in heads]}


class Pushed:
    """The heads whose patterns went out for the (text, step) in view; another text or step, or
    a new view, starts again."""

    def __init__(self) -> None:
        self.view: tuple | None = None
        self.heads: set = set()

    def next(
        self, session: HeadSession, text: str, kind: str, step: Any, budget: int, new_view: bool
    ) -> dict | None:
        """The next push (`push`) for the view, or None."""
        if self.view != (text, step) or new_view:
            self.view, self.heads = (text, step), set()
        return push(session, text, kind, budget, self.heads, step)


def progress_sender(
    send: Callable[[dict], Any], rid: Any, message: str, every: float = 0.1
) -> Callable[[int, int], None]:
    """progress(done, total) for a request `rid`: sends {"id", "progress"} at once, then at most
    once per `every` seconds, and always at the end."""
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if done == total or time.perf_counter() - last[0] >= every:
            last[0] = time.perf_counter()
            send({"id": rid, "progress": {"done": done / total, "message": message}})

    progress(0, 1)
    return progress


def click(selected: list[tuple[int, int]], head: tuple[int, int], add: bool) -> dict:
    """The changes {selection, focus} of a click on `head`: it alone is selected, or with `add`
    it joins the selection (or leaves it, if in it); the view shows it, or once it left, the last
    selected head (none: no head)."""
    if not add:
        new = [head]
    else:
        new = [h for h in selected if h != head] if head in selected else [*selected, head]
    focus = list(head) if head in new else list(new[-1]) if new else []
    return {"selection": [list(h) for h in new], "focus": focus}


def pair(value: Any, what: str, shape: list[int]) -> list[int]:
    """[layer, head] of `value`, or WidgetInputError naming `what` and the valid ranges."""
    L, H = shape
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(map(is_int, value))):
        raise WidgetInputError(f"{what} must be a pair [layer, head] of integers, got {value!r}")
    layer, head = int(value[0]), int(value[1])
    if not (0 <= layer < L and 0 <= head < H):
        raise WidgetInputError(
            f"{what} {[layer, head]} is out of range: layers are 0..{L - 1}, heads 0..{H - 1}"
        )
    return [layer, head]


def check(name: str, value: Any, shape: list[int], sessions: StepSessions) -> Any:
    """The value the widget's trait `name` takes for `value` (from Python or a request), or
    WidgetInputError naming what is wrong and what is valid. `shape` is [n_layers, n_heads];
    `sessions` the widget's, which know the training steps and tokenize."""
    if name == "step":
        try:
            return sessions.check(value)
        except ValueError as err:
            raise WidgetInputError(str(err)) from None
    if name == "text":
        if not isinstance(value, str):
            raise WidgetInputError(f"text must be a string, got {value!r:.80}")
        try:
            n_tokens = sessions.own.ids(value).shape[1]
        except (ValueError, TypeError) as err:
            raise WidgetInputError(f"text not accepted: {err}") from None
        if n_tokens < 2:
            raise WidgetInputError(
                f"text not accepted: it gives {n_tokens} token; scoring needs at least 2"
            )
    elif name == "kind" and value not in VIEW_KINDS:
        choices = ", ".join(VIEW_KINDS)
        raise WidgetInputError(f"unknown score kind {value!r}; choose one of {choices}")
    elif name == "selection":
        if not isinstance(value, (list, tuple)):
            what = "a list, each a pair [layer, head] of integers"
            raise WidgetInputError(f"selection must be {what}, got {value!r}")
        value = [pair(h, "selected head", shape) for h in value]
        for i, (layer, head) in enumerate(value):
            if [layer, head] in value[:i]:
                raise WidgetInputError(f"head L{layer}H{head} is selected twice")
    elif name == "focus":
        value = pair(value, "focus", shape) if value else []
    elif name == "attend_to" and value:
        what = "attend_to must be [] or [query, key], token positions with key <= query"
        ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(map(is_int, value))
        if not ok or not 0 <= value[1] <= value[0]:
            raise WidgetInputError(f"{what}, got {value!r:.80}")
        value = [int(value[0]), int(value[1])]
    elif name == "attend_to":
        value = []
    elif name == "contrast":
        what = f"contrast must be an object with string values for some of {', '.join(CONTRAST)}"
        if not isinstance(value, dict) or not set(value) <= set(CONTRAST):
            raise WidgetInputError(f"{what}, got {value!r:.80}")
        if not all(isinstance(v, str) for v in value.values()):
            raise WidgetInputError(f"{what}, got {value!r:.80}")
        value = {k: value[k] for k in CONTRAST if value.get(k)}
    elif name == "reply_timeout" and not value > 0:
        raise WidgetInputError(f"reply_timeout must be > 0 seconds, got {value!r}")
    return value
