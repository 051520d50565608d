"""The front end's side of the message protocol, in chromium without Jupyter or a kernel.

js/widget.js is rendered with a stand-in for anywidget's model written in the page: the test reads
the requests the view sends and answers them itself, as the kernel would (`mlx_headwidget.wire`),
or answers late, wrongly, or never. What the view then shows is read as in the other browser
tests: through its test hooks, its text and its canvas pixels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from harness import launched_browser
from playwright.sync_api import Browser, Page, expect

REPO = Path(__file__).resolve().parents[2]
SHAPE = [2, 3]  # layers, heads
TOKENS = ["<s>", "The", " <b>cat</b>", " sat", " The", " cat"]
expect.set_options(timeout=10_000)

# anywidget's model, as far as the widget uses it; `sent` keeps what the view sends, `deliver`
# hands the view a custom message (buffers as arrays of bytes), `update` traits the kernel set.
FAKE_MODEL = """(state) => {
  const handlers = {};
  const model = {
    state, sent: [],
    get: (k) => model.state[k],
    set: (k, v) => { model.state[k] = v; },
    save_changes: () => {},
    on: (e, cb) => { (handlers[e] = handlers[e] || []).push(cb); },
    off: (e, cb) => { handlers[e] = (handlers[e] || []).filter((f) => f !== cb); },
    send: (content) => { model.sent.push(JSON.parse(JSON.stringify(content))); },
    emit: (e, ...args) => { for (const cb of [...(handlers[e] || [])]) cb(...args); },
    deliver: (msg, buffers) => model.emit("msg:custom", msg,
      buffers.map((b) => new DataView(new Uint8Array(b).buffer))),
    update: (values) => { // as Backbone does: every value set, then one event per key
      Object.assign(model.state, values);
      for (const k of Object.keys(values)) model.emit(`change:${k}`);
    },
  };
  return model;
}"""

RENDER = """async ([src, state, makeModel]) => {
  const url = URL.createObjectURL(new Blob([src], {type: "text/javascript"}));
  const widget = (await import(url)).default;
  const el = document.createElement("div"); el.id = "host"; document.body.appendChild(el);
  window.model = eval(makeModel)(state);
  window.cleanup = widget.render({model: window.model, el});
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_browser() as b:
        yield b


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.set_content("<!doctype html><html><body></body></html>")
    css = (REPO / "js" / "widget.css").read_text()
    page.add_style_tag(content=css)
    yield page
    page.close()


def render(page: Page, **state) -> None:
    base = {"text": "The cat sat. The cat", "kind": "induction", "selection": [], "focus": []}
    base |= {"status": {"state": "done", "message": ""}, "kinds": ["induction", "first_token"]}
    base |= {"shape": SHAPE, "reply_timeout": 15.0}
    src = (REPO / "js" / "widget.js").read_text()
    page.evaluate(RENDER, [src, base | state, FAKE_MODEL])


def sent(page: Page) -> list[dict]:
    return page.evaluate("() => window.model.sent")


def hooks(page: Page, expression: str):
    return page.evaluate(
        f"() => {{ const h = document.querySelector('.hw-root').hooks; return {expression}; }}"
    )


def array(values: np.ndarray, buffers: list) -> dict:
    """{"shape", "dtype", "buffer"} as the kernel sends it, its bytes appended to `buffers`."""
    dtype = "float16" if values.dtype == np.float16 else "float32"
    buffers.append(
        list(np.ascontiguousarray(values, dtype="<f2" if dtype == "float16" else "<f4").tobytes())
    )
    return {"shape": list(values.shape), "dtype": dtype, "buffer": len(buffers) - 1}


def deliver(page: Page, message: dict, buffers: list | None = None) -> None:
    page.evaluate("([m, b]) => window.model.deliver(m, b)", [message, buffers or []])


GRID = np.array([[0.1, 0.9, 0.4], [np.nan, 0.2, 0.7]], dtype=np.float32)
T = len(TOKENS)


def pattern(layer: int, head: int) -> np.ndarray:
    """A causal (T, T) float16 pattern that differs per head."""
    rng = np.random.default_rng(10 * layer + head)
    a = np.tril(rng.random((T, T))) + np.eye(T)
    return (a / a.sum(-1, keepdims=True)).astype(np.float16)


def ablation(heads: list, text: str, step: int | None = None) -> tuple[dict, list]:
    buffers: list = []
    losses = np.linspace(1.0, 2.0, T - 1, dtype=np.float32)
    part = {
        "text": text, "step": step, "heads": heads,
        "top_before": [[" sat", 0.5]], "top_after": [[" ran", 0.4]],
        "loss_before": 1.5, "loss_after": 1.75,
        "token_loss_before": array(losses, buffers),
        "token_loss_after": array(losses + 0.25, buffers),
    }  # fmt: skip
    return part, buffers


def answer_first_request(page: Page) -> dict:
    """Answer the view's first request, as the kernel does: tokens and grid as parts, then the
    ablation of no heads; returns the request."""
    (request,) = sent(page)
    text, step = page.evaluate("() => [window.model.state.text, window.model.state.step ?? null]")
    deliver(
        page,
        {
            "id": request["id"],
            "ok": True,
            "part": True,
            "result": {"tokens": {"text": text, "tokens": TOKENS}},
        },
    )
    buffers: list = []
    grid = {"kind": "induction", "text": None, "step": step, "values": array(GRID, buffers)}
    deliver(
        page, {"id": request["id"], "ok": True, "part": True, "result": {"grid": grid}}, buffers
    )
    part, buffers = ablation([], text, step)
    deliver(
        page,
        {"id": request["id"], "ok": True, "result": {"ablation": part}, "seconds": 0.25},
        buffers,
    )
    return request


def push(page: Page, heads: list[tuple[int, int]]) -> None:
    buffers: list = []
    text, step = page.evaluate("() => [window.model.state.text, window.model.state.step ?? null]")
    patterns = [array(pattern(*h), buffers) for h in heads]
    heads_sent = [list(h) for h in heads]
    message = {"push": "patterns", "text": text, "step": step, "heads": heads_sent}
    deliver(page, {**message, "patterns": patterns}, buffers)


def click(page: Page, layer: int, head: int, shift: bool = False) -> None:
    g = hooks(page, "h.geometry")
    x, y = g["left"] + (head + 0.5) * g["cell"], g["top"] + (layer + 0.5) * g["cell"]
    page.locator(".hw-grid").click(position={"x": x, "y": y}, modifiers=["Shift"] if shift else [])


# ---- tests ----------------------------------------------------------------------------------
def test_a_new_view_asks_for_what_it_lacks_and_draws_each_part(page):
    render(page)
    (request,) = sent(page)
    assert request["op"] == "set" and re.fullmatch(r"\w+-1", request["id"])
    assert request["args"] == {
        "changes": {},
        "want": ["tokens", "grid", "ablation"],
        "new_view": True,
    }
    expect(page.locator(".hw-status")).to_have_text(re.compile(r"^computing"))
    deliver(
        page,
        {"id": request["id"], "progress": {"done": 0.5, "message": "scoring 6 heads: induction"}},
    )
    expect(page.locator(".hw-status")).to_have_text(
        re.compile(r"^computing: scoring 6 heads: induction 50% \(")
    )
    answer_first_request(page)
    expect(page.locator(".hw-status")).to_have_text("done in 0.25 s")
    assert hooks(page, "h.state") == "done"
    assert hooks(page, "[h.drawn.grid.kind, h.drawn.grid.shape]") == ["induction", SHAPE]
    drawn = hooks(page, "Array.from(h.drawn.grid.values)")
    np.testing.assert_array_equal(np.array(drawn, dtype=np.float32), GRID.ravel())
    # token text is shown as text, never parsed as HTML
    expect(page.locator(".hw-view .hw-chip")).to_have_text(
        ["<s>", "The", "\u00b7<b>cat</b>", "\u00b7sat", "\u00b7The", "\u00b7cat"]
    )
    assert page.locator(".hw-root b").count() == 0
    expect(page.locator(".hw-loss")).to_have_text("mean next-token loss 1.500")
    assert len(sent(page)) == 1  # it has all it needs: no more requests


def test_a_click_is_one_request_and_a_pushed_pattern_is_drawn_at_once(page):
    render(page)
    answer_first_request(page)
    push(page, [(1, 2), (0, 1)])
    assert hooks(page, "h.prefetched") == 2
    click(page, 1, 2)
    # drawn from the browser's cache before any answer
    assert hooks(page, "[h.drawn.pattern.layer, h.drawn.pattern.head, h.counts.pattern]") == [
        1,
        2,
        1,
    ]
    request = sent(page)[-1]
    assert len(sent(page)) == 2 and request["args"]["changes"] == {
        "selection": [[1, 2]],
        "focus": [1, 2],
    }
    assert request["args"]["want"] == ["ablation"]  # the pattern is not asked for again
    expect(page.locator(".hw-view-title")).to_have_text("L1H2 induction 0.700")
    # a head that was not pushed: its pattern is asked for, and drawn when it comes as a part
    part, buffers = ablation([[1, 2]], "The cat sat. The cat")
    deliver(page, {"id": request["id"], "ok": True, "result": {"ablation": part}}, buffers)
    click(page, 0, 2)
    request = sent(page)[-1]
    assert request["args"]["want"] == ["pattern", "ablation"]
    expect(page.locator(".hw-view-title")).to_have_text("L0H2 induction 0.400 (loading pattern)")
    buffers = []
    p = {
        "text": "The cat sat. The cat",
        "layer": 0,
        "head": 2,
        "values": array(pattern(0, 2), buffers),
    }
    deliver(
        page, {"id": request["id"], "ok": True, "part": True, "result": {"pattern": p}}, buffers
    )
    assert hooks(page, "[h.drawn.pattern.layer, h.drawn.pattern.head]") == [0, 2]
    expect(page.locator(".hw-view-title")).to_have_text("L0H2 induction 0.400")


def test_clicks_while_a_request_is_out_leave_as_one_request(page):
    render(page)
    answer_first_request(page)
    push(page, [(0, 0), (0, 1), (0, 2), (1, 1)])
    for layer, head in [(0, 0), (0, 1), (0, 2), (1, 1)]:
        click(page, layer, head)
    requests = sent(page)[1:]
    assert len(requests) == 1  # one out; the three later clicks wait, merged
    part, buffers = ablation([[0, 0]], "The cat sat. The cat")
    deliver(page, {"id": requests[0]["id"], "ok": True, "result": {"ablation": part}}, buffers)
    requests = sent(page)[1:]
    assert len(requests) == 2 and requests[1]["args"]["changes"] == {
        "selection": [[1, 1]],
        "focus": [1, 1],
    }


def test_replies_the_view_does_not_wait_for_are_dropped(page):
    render(page)
    answer_first_request(page)
    click(page, 0, 1)
    request = sent(page)[-1]
    before = hooks(page, "h.counts.dropped")
    # another view's request, then an answer to the first request, which was answered already
    buffers = []
    other = {
        "text": "The cat sat. The cat",
        "layer": 0,
        "head": 1,
        "values": array(pattern(1, 1), buffers),
    }
    deliver(page, {"id": "another-view-7", "ok": True, "result": {"pattern": other}}, buffers)
    part, buffers = ablation([[1, 1]], "The cat sat. The cat")
    deliver(page, {"id": sent(page)[0]["id"], "ok": True, "result": {"ablation": part}}, buffers)
    assert hooks(page, "h.counts.dropped") == before + 2
    assert hooks(page, "h.drawn.pattern") is None and hooks(page, "h.state") == "computing"
    expect(page.locator(".hw-ablation-title")).to_have_text("zero-ablating L0H1: computing")
    # its own answer is shown
    buffers = []
    mine = {
        "text": "The cat sat. The cat",
        "layer": 0,
        "head": 1,
        "values": array(pattern(0, 1), buffers),
    }
    deliver(
        page, {"id": request["id"], "ok": True, "part": True, "result": {"pattern": mine}}, buffers
    )
    part, buffers = ablation([[0, 1]], "The cat sat. The cat")
    deliver(page, {"id": request["id"], "ok": True, "result": {"ablation": part}}, buffers)
    expect(page.locator(".hw-ablation-title")).to_have_text("zero-ablating L0H1")
    shown = np.array(hooks(page, "Array.from(h.drawn.pattern.values)"), dtype=np.float32)
    np.testing.assert_array_equal(shown, pattern(0, 1).astype(np.float32).ravel())


def test_a_view_the_kernel_cannot_answer_says_so_and_does_not_ask_again(page):
    render(page, selection=[[0, 0]], focus=[0, 0])
    request = sent(page)[0]
    assert request["args"]["want"] == ["tokens", "grid", "pattern", "ablation"]
    deliver(page, {"id": request["id"], "ok": False, "error": "injected: the forward failed"})
    expect(page.locator(".hw-status")).to_have_text("error: injected: the forward failed")
    assert hooks(page, "h.state") == "error" and len(sent(page)) == 1


def test_an_error_answer_is_shown_and_the_view_goes_back(page):
    render(page)
    answer_first_request(page)
    click(page, 1, 1)
    request = sent(page)[-1]
    deliver(page, {"id": request["id"], "ok": False, "error": "injected: the forward failed"})
    expect(page.locator(".hw-status")).to_have_text("error: injected: the forward failed")
    assert hooks(page, "h.state") == "error"
    expect(page.locator(".hw-ablation-title")).to_have_text(re.compile("^no heads ablated"))
    assert len(sent(page)) == 2  # what the view shows again, it has: nothing asked
    page.locator(".hw-text").fill("   ")
    page.locator(".hw-apply").click()
    request = sent(page)[-1]
    assert request["args"]["changes"] == {"text": "   "}
    deliver(page, {"id": request["id"], "ok": False, "error": "text not accepted: empty"})
    expect(page.locator(".hw-status")).to_have_text("error: text not accepted: empty")
    expect(page.locator(".hw-text")).to_have_value("The cat sat. The cat")  # the kernel's text


# The row labels' strip of the grid (left of the cells), once the frames the view asked for are
# drawn (two animation frames later): the pixels as one string.
LABEL_STRIP = """async (settle) => {
  if (settle) for (let i = 0; i < 2; i++) await new Promise((done) => requestAnimationFrame(done));
  const canvas = document.querySelector('.hw-grid');
  const {left} = document.querySelector('.hw-root').hooks.geometry;
  const strip = canvas.getContext('2d').getImageData(0, 0, left, canvas.height).data;
  return Array.from(strip).join(','); }"""


def test_a_redraw_draws_the_row_labels_as_the_first_draw(page):
    """The grid's canvas is reused between draws (resized only when its size changes): nothing
    of a draw's settings may carry over to the next (the row labels once came out centred on x=2,
    half cut off, from the second draw on)."""
    render(page)
    first = page.evaluate(LABEL_STRIP, False)  # the view's first draw, made while rendering
    answer_first_request(page)
    click(page, 1, 0)
    click(page, 1, 0, shift=True)
    assert hooks(page, "h.counts.grid") >= 3
    assert page.evaluate(LABEL_STRIP, True) == first


# Every text the view title and the status line take, in order (a MutationObserver in the page).
WATCH_TEXTS = """() => { window.seen = []; for (const sel of ['.hw-view-title', '.hw-status']) {
  const node = document.querySelector(sel);
  new MutationObserver(() => window.seen.push([sel, node.textContent]))
    .observe(node, {childList: true, characterData: true, subtree: true}); } }"""


# A click on a grid cell and the kernel's answer to it, in one task of the page: no timer of the
# view (QUIET_MS) can run in between, whatever the machine's speed.
CLICK_AND_ANSWER = """([layer, head, part, answer, partBuffers, answerBuffers]) => {
  const grid = document.querySelector('.hw-grid'); const r = grid.getBoundingClientRect();
  const {cell, left, top} = document.querySelector('.hw-root').hooks.geometry;
  grid.dispatchEvent(new MouseEvent('click', {bubbles: true,
    clientX: r.left + left + (head + 0.5) * cell, clientY: r.top + top + (layer + 0.5) * cell}));
  const request = window.model.sent[window.model.sent.length - 1];
  window.model.deliver({...part, id: request.id}, partBuffers);
  window.model.deliver({...answer, id: request.id}, answerBuffers);
  return request.args.want; }"""


def test_a_click_answered_quickly_shows_no_interim_state_a_slow_one_does(page):
    render(page)
    answer_first_request(page)
    page.evaluate(WATCH_TEXTS)
    part_buffers: list = []
    values = array(pattern(1, 0), part_buffers)
    p = {"text": "The cat sat. The cat", "layer": 1, "head": 0, "values": values}
    part = {"ok": True, "part": True, "result": {"pattern": p}}
    abl, answer_buffers = ablation([[1, 0]], "The cat sat. The cat")
    answer = {"ok": True, "result": {"ablation": abl}, "seconds": 0.01}
    args = [1, 0, part, answer, part_buffers, answer_buffers]
    assert page.evaluate(CLICK_AND_ANSWER, args) == ["pattern", "ablation"]  # not in the browser
    expect(page.locator(".hw-status")).to_have_text("done in 0.01 s")
    seen = page.evaluate("() => window.seen")
    # the page did not change between the click and the answer: no "loading", no "computing"
    assert not [text for _, text in seen if "loading" in text or "computing" in text], seen
    assert hooks(page, "[h.drawn.pattern.layer, h.drawn.pattern.head]") == [1, 0]
    # an answer slower than QUIET_MS: the view says what it is waiting for; the hooks at once
    click(page, 0, 2)
    assert hooks(page, "h.state") == "computing"
    expect(page.locator(".hw-view-title")).to_have_text("L0H2 induction 0.400 (loading pattern)")
    expect(page.locator(".hw-status")).to_have_text(re.compile(r"^computing \("))


def test_no_answer_is_said_after_reply_timeout_and_a_late_answer_still_shows(page):
    render(page, reply_timeout=0.3)
    answer_first_request(page)
    click(page, 1, 0)
    said = r"^no answer from the kernel for \d+ s: it may still be computing, or it was restarted"
    expect(page.locator(".hw-status")).to_have_text(re.compile(said))
    assert hooks(page, "h.state") == "stalled"
    request = sent(page)[-1]
    buffers = []
    p = {
        "text": "The cat sat. The cat",
        "layer": 1,
        "head": 0,
        "values": array(pattern(1, 0), buffers),
    }
    deliver(
        page, {"id": request["id"], "ok": True, "part": True, "result": {"pattern": p}}, buffers
    )
    part, buffers = ablation([[1, 0]], "The cat sat. The cat")
    deliver(page, {"id": request["id"], "ok": True, "result": {"ablation": part}}, buffers)
    expect(page.locator(".hw-status")).to_have_text(re.compile(r"^done in"))
    expect(page.locator(".hw-ablation-title")).to_have_text("zero-ablating L1H0")


def test_a_kernel_restart_disconnects_the_view(page):
    render(page)
    answer_first_request(page)
    click(page, 1, 1)
    # Jupyter's widget manager marks a view whose kernel restarted or died, then says so
    page.evaluate("""() => {
      document.querySelector('#host').classList.add('jupyter-widgets-disconnected');
      window.model.emit('comm_live_update'); }""")
    expect(page.locator(".hw-status")).to_have_text(
        "disconnected: the kernel was restarted or shut down; re-run the cell"
    )
    assert hooks(page, "h.state") == "disconnected"
    expect(page.locator(".hw-apply")).to_be_disabled()
    count = len(sent(page))
    click(page, 0, 2)
    assert len(sent(page)) == count  # nothing is sent to a kernel that is gone


def test_a_state_change_from_the_kernel_is_shown_and_its_data_asked_for(page):
    render(page)
    answer_first_request(page)
    push(page, [(1, 2)])
    # another view (or Python) selected a head: the kernel's traits change
    page.evaluate("() => window.model.update({selection: [[1, 2]], focus: [1, 2]})")
    page.wait_for_function(
        "() => document.querySelector('.hw-root').hooks.drawn.pattern?.head === 2"
    )
    request = sent(page)[-1]
    assert request["args"] == {"changes": {}, "want": ["ablation"], "new_view": False}
    page.evaluate("() => window.model.update({status: {state: 'error', message: 'from Python'}})")
    expect(page.locator(".hw-status")).to_have_text(re.compile("^computing"))  # a request is out
    part, buffers = ablation([[1, 2]], "The cat sat. The cat")
    deliver(page, {"id": request["id"], "ok": True, "result": {"ablation": part}}, buffers)
    expect(page.locator(".hw-ablation-title")).to_have_text("zero-ablating L1H2")
    page.evaluate("() => window.model.update({status: {state: 'error', message: 'from Python'}})")
    expect(page.locator(".hw-status")).to_have_text("error: from Python")


# ---- the training-step slider -----------------------------------------------------------------
STEPS = [100, 200, 300]
GRID_100 = np.array([[0.8, 0.1, 0.3], [0.5, 0.05, 0.6]], dtype=np.float32)


def frame(page: Page) -> None:
    """Wait until the view has drawn what it was given (it draws in an animation frame)."""
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")


def answer_step(page: Page, request: dict, step: int, heads: list, grid: np.ndarray) -> None:
    """Answer `request` as the kernel does at training `step`: the grid and the pattern of the
    last of `heads` as parts if wanted, then the ablation of `heads` (every part carries the
    step); then the kernel's traits take the request's changes."""
    text, want = "The cat sat. The cat", request["args"]["want"]
    buffers: list = []
    result: dict = {}
    if "grid" in want:
        values = array(grid, buffers)
        result["grid"] = {"kind": "induction", "text": None, "step": step, "values": values}
    if "pattern" in want:
        layer, head = heads[-1]
        values = array(pattern(layer + step, head), buffers)  # another pattern per step
        result["pattern"] = {"text": text, "step": step, "layer": layer, "head": head}
        result["pattern"]["values"] = values
    if result:
        message = {"id": request["id"], "ok": True, "part": True, "result": result}
        deliver(page, message, buffers)
    part, buffers = ablation(heads, text, step)
    deliver(page, {"id": request["id"], "ok": True, "result": {"ablation": part}}, buffers)
    page.evaluate("(changes) => window.model.update(changes)", request["args"]["changes"])
    frame(page)


@pytest.mark.parametrize(
    "state", [{}, {"steps": [], "step": None}, {"steps": [300], "step": 300}], ids=str
)
def test_no_slider_without_two_steps(page, state):
    render(page, **state)
    answer_first_request(page)
    frame(page)
    assert hooks(page, "h.drawn.grid.shape") == SHAPE  # drawn: the view is ready
    expect(page.locator(".hw-steps")).to_be_hidden()


def test_moving_the_slider_asks_for_that_step_and_the_selection_stays(page):
    render(page, steps=STEPS, step=300)
    answer_first_request(page)
    expect(page.locator(".hw-steps")).to_be_visible()
    expect(page.locator(".hw-steps")).to_have_text("training step 300")
    push(page, [(1, 2)])
    click(page, 1, 2)
    answer_step(page, sent(page)[-1], 300, [[1, 2]], GRID)
    expect(page.locator(".hw-ablation-title")).to_have_text("zero-ablating L1H2")
    page.locator(".hw-step").focus()
    page.keyboard.press("Home")  # to the first step
    expect(page.locator(".hw-steps")).to_have_text("training step 100")
    (request,) = sent(page)[2:]
    assert request["args"]["changes"] == {"step": 100}
    assert request["args"]["want"] == ["grid", "pattern", "ablation"]
    # step 300's data is not drawn for step 100: the grid waits, the view says it is loading
    assert hooks(page, "[h.drawn.grid, h.drawn.pattern]") == [None, None]
    expect(page.locator(".hw-view-title")).to_have_text("L1H2 induction (loading pattern)")
    answer_step(page, request, 100, [[1, 2]], GRID_100)
    drawn = hooks(page, "[h.drawn.grid.step, Array.from(h.drawn.grid.values)]")
    assert drawn[0] == 100
    np.testing.assert_array_equal(np.array(drawn[1], dtype=np.float32), GRID_100.ravel())
    shown = hooks(page, "[h.drawn.pattern.step, Array.from(h.drawn.pattern.values)]")
    assert shown[0] == 100
    np.testing.assert_array_equal(shown[1], pattern(101, 2).astype(np.float32).ravel())
    expect(page.locator(".hw-view-title")).to_have_text("L1H2 induction 0.600")
    expect(page.locator(".hw-ablation-title")).to_have_text("zero-ablating L1H2")
    assert len(sent(page)) == 3  # it has all it needs


def test_an_answer_for_a_step_the_view_left_is_not_drawn(page):
    render(page, steps=STEPS, step=300)
    answer_first_request(page)
    page.locator(".hw-step").focus()
    page.keyboard.press("ArrowLeft")  # to 200: one request out
    page.keyboard.press("ArrowLeft")  # to 100: waits for it
    (first,) = sent(page)[1:]
    assert first["args"]["changes"] == {"step": 200}
    answer_step(page, first, 200, [], GRID)
    assert hooks(page, "h.drawn.grid") is None  # the view shows step 100 now
    (second,) = sent(page)[2:]
    assert second["args"] == {
        "changes": {"step": 100},
        "want": ["grid", "ablation"],
        "new_view": False,
    }
    answer_step(page, second, 100, [], GRID_100)
    assert hooks(page, "h.drawn.grid.step") == 100


def drawn_grid_pair(page: Page, pair: list | None) -> None:
    """Wait until the grid drawn (at the next animation frame) is the one of token pair `pair`
    (None: no grid drawn)."""
    wanted = (
        "g === null"
        if pair is None
        else f"g && JSON.stringify(g.attend_to) === '{json.dumps(pair, separators=(',', ':'))}'"
    )
    root = "document.querySelector('.hw-root')"
    page.wait_for_function(f"() => {{ const g = {root}.hooks.drawn.grid; return {wanted}; }}")


def test_alt_click_on_a_token_asks_which_heads_look_there(page):
    render(page, kinds=["induction", "first_token", "attention_to_token"])
    answer_first_request(page)
    chips = page.locator(".hw-view .hw-chip")
    chips.nth(2).click(modifiers=["Alt"])  # from the last token (no query pinned)
    request = sent(page)[-1]
    assert request["args"]["changes"] == {"kind": "attention_to_token", "attend_to": [T - 1, 2]}
    assert request["args"]["want"] == ["grid"]
    buffers: list = []
    values = np.array([[0.25, 0.5, 0.0], [1.0, 0.125, 0.75]], dtype=np.float32)
    grid = {"kind": "attention_to_token", "text": "The cat sat. The cat", "step": None}
    grid |= {"attend_to": [T - 1, 2], "values": array(values, buffers)}
    deliver(page, {"id": request["id"], "ok": True, "result": {"grid": grid}}, buffers)
    drawn_grid_pair(page, [T - 1, 2])
    drawn = hooks(
        page, "[h.drawn.grid.kind, h.drawn.grid.attend_to, Array.from(h.drawn.grid.values)]"
    )
    assert drawn[:2] == ["attention_to_token", [T - 1, 2]]
    np.testing.assert_array_equal(np.array(drawn[2], dtype=np.float32), values.ravel())
    # the tokens named as text, the key token marked
    expect(page.locator(".hw-legend-name")).to_have_text(
        "attention from \u00b7cat (#5) to \u00b7<b>cat</b> (#2)"
    )
    assert page.locator(".hw-root b").count() == 0
    expect(page.locator(".hw-view .hw-chip.hw-key")).to_have_count(1)
    expect(chips.nth(2)).to_have_class(re.compile("hw-key"))
    # a pinned query at or after the key is the query; a grid for another pair is not drawn
    chips.nth(3).click()
    chips.nth(1).click(modifiers=["Alt"])
    request = sent(page)[-1]
    assert request["args"]["changes"] == {"kind": "attention_to_token", "attend_to": [3, 1]}
    drawn_grid_pair(page, None)
    # another text: positions of the old one mean nothing, the score shown before comes back
    grid["attend_to"] = [3, 1]
    deliver(page, {"id": request["id"], "ok": True, "result": {"grid": grid}}, buffers)
    drawn_grid_pair(page, [3, 1])
    page.locator(".hw-text").fill("Another text")
    page.locator(".hw-apply").click()
    request = sent(page)[-1]
    assert request["args"]["changes"] == {
        "text": "Another text",
        "kind": "induction",
        "attend_to": [],
    }


def kernel_sets(page: Page, **values) -> None:
    """The kernel's echo of applied changes: the traits set, one change event each."""
    page.evaluate("(v) => window.model.update(v)", values)


def drawn_grid_into(page: Page, kind: str, into: list) -> None:
    """Wait until the grid drawn is the `kind` composition grid into head `into`."""
    pair = json.dumps(into, separators=(",", ":"))
    check = f"g && g.kind === '{kind}' && JSON.stringify(g.into) === '{pair}'"
    root = "document.querySelector('.hw-root')"
    page.wait_for_function(f"() => {{ const g = {root}.hooks.drawn.grid; return {check}; }}")


def test_the_composition_grid_follows_the_head_in_view(page):
    render(page, kinds=["induction", "k_composition", "v_composition"])
    answer_first_request(page)
    push(page, [(1, 2), (1, 0)])
    click(page, 1, 2)
    part, buffers = ablation([[1, 2]], "The cat sat. The cat")
    deliver(page, {"id": sent(page)[-1]["id"], "ok": True, "result": {"ablation": part}}, buffers)
    kernel_sets(page, selection=[[1, 2]], focus=[1, 2])
    page.locator(".hw-kind").select_option("k_composition")
    request = sent(page)[-1]
    assert request["args"]["changes"] == {"kind": "k_composition"}
    assert request["args"]["want"] == ["grid"]
    values = np.array([[0.25, 0.5, 0.0], [np.nan] * 3], dtype=np.float32)
    buffers = []
    grid = {"kind": "k_composition", "text": None, "step": None, "into": [1, 2]}
    grid["values"] = array(values, buffers)
    deliver(page, {"id": request["id"], "ok": True, "result": {"grid": grid}}, buffers)
    kernel_sets(page, kind="k_composition")
    drawn_grid_into(page, "k_composition", [1, 2])
    drawn = np.array(hooks(page, "Array.from(h.drawn.grid.values)"), dtype=np.float32)
    np.testing.assert_array_equal(drawn, values.ravel())
    expect(page.locator(".hw-legend-name")).to_have_text("K-composition into L1H2")
    # another head in view: the grid of the first is not drawn for it, and its own is asked for
    click(page, 1, 0)
    request = sent(page)[-1]
    assert request["args"]["changes"] == {"selection": [[1, 0]], "focus": [1, 0]}
    assert request["args"]["want"] == ["grid", "ablation"]
    page.wait_for_function("() => document.querySelector('.hw-root').hooks.drawn.grid === null")
    expect(page.locator(".hw-legend-name")).to_have_text("K-composition into L1H0")


def test_patching_inputs_ask_for_the_patching_grid_and_dla_is_coloured_by_its_range(page):
    render(page, kinds=["induction", "patching", "logit_attribution"])
    answer_first_request(page)
    page.locator(".hw-corrupted").fill("The dog sat. The dog")
    page.locator(".hw-answer").fill(" cat")
    page.locator(".hw-distractor").fill(" dog")
    page.locator(".hw-patch").click()
    request = sent(page)[-1]
    contrast = {"corrupted": "The dog sat. The dog", "answer": " cat", "distractor": " dog"}
    assert request["args"]["changes"] == {"contrast": contrast, "kind": "patching"}
    assert request["args"]["want"] == ["grid"]
    message = {"done": 0.5, "message": "patching 6 heads"}
    deliver(page, {"id": request["id"], "progress": message})
    expect(page.locator(".hw-status")).to_have_text(re.compile(r"^computing: patching 6 heads 50%"))
    # an error (here: another length) is shown, and the view goes back to the kernel's kind
    error = "clean has 6 tokens, corrupted has 7"
    deliver(page, {"id": request["id"], "ok": False, "error": error})
    expect(page.locator(".hw-status")).to_have_text(f"error: {error}")
    assert page.locator(".hw-kind").input_value() == "induction"
    expect(page.locator(".hw-corrupted")).to_have_value("The dog sat. The dog")  # to correct
    # direct logit attribution: signed logits on a scale from -max|v| to max|v|
    page.locator(".hw-kind").select_option("logit_attribution")
    request = sent(page)[-1]
    assert request["args"]["changes"] == {"kind": "logit_attribution"}  # the contrast as typed
    page.locator(".hw-patch").click()  # sends the contrast with the kind shown
    buffers: list = []
    values = np.array([[-2.0, 0.5, 0.0], [4.0, np.nan, 1.0]], dtype=np.float32)
    grid = {"kind": "logit_attribution", "text": "The cat sat. The cat", "step": None}
    grid |= {"contrast": contrast, "values": array(values, buffers)}
    deliver(page, {"id": request["id"], "ok": False, "error": "the grid needs an answer"})
    request = sent(page)[-1]
    assert request["args"]["changes"] == {"contrast": contrast, "kind": "logit_attribution"}
    deliver(page, {"id": request["id"], "ok": True, "result": {"grid": grid}}, buffers)
    kernel_sets(page, kind="logit_attribution", contrast=contrast)
    page.wait_for_function("() => document.querySelector('.hw-root').hooks.drawn.grid !== null")
    drawn = np.array(hooks(page, "Array.from(h.drawn.grid.values)"), dtype=np.float32)
    np.testing.assert_array_equal(drawn, values.ravel())
    expect(page.locator(".hw-legend-lo")).to_have_text("-4")
    expect(page.locator(".hw-legend-hi")).to_have_text("4")
    # a new text goes with the corrupted text typed beside it (they need as many tokens)
    page.locator(".hw-corrupted").fill("The dog sat. The cat")
    page.locator(".hw-text").fill("The cat sat. The dog")
    page.locator(".hw-apply").click()
    changes = sent(page)[-1]["args"]["changes"]
    contrast["corrupted"] = "The dog sat. The cat"
    assert changes == {"text": "The cat sat. The dog", "contrast": contrast}
