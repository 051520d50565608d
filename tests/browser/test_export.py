"""A page saved by `export.save_html`, opened from a file:// URL in chromium with every request
outside the file refused: it draws the saved numbers, answers clicks from what it holds, says
when it does not hold something, and shows token text as text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from harness import launched_browser
from playwright.sync_api import Browser, Page, expect

from mlx_headwidget import InterpretableModel, export
from mlx_headwidget.session import HeadSession

expect.set_options(timeout=15_000)
TEXT = 'The cat sat. <img src=x onerror="window.pwned=1"><b>bold</b> The cat sat.'
SAVED = [(2, 3), (2, 2), (1, 0)]


@pytest.fixture(scope="module")
def session() -> HeadSession:
    return HeadSession(InterpretableModel())


@pytest.fixture(scope="module")
def saved(session, tmp_path_factory) -> export.SavedPage:
    path = tmp_path_factory.mktemp("page") / "heads.html"
    return export.save_html(
        session.model, path, TEXT, selection=[[2, 3]], heads=SAVED, session=session
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_browser() as b:
        yield b


@pytest.fixture
def page(browser: Browser, saved) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    page.outside = []  # requests that tried to leave the file
    page.errors = []

    def route(r):
        if r.request.url.startswith(("file://", "blob:", "data:")):
            r.continue_()
        else:
            page.outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(saved.path.as_uri())
    expect(page.locator(".hw-status")).to_have_text(re.compile("^done"))
    yield page
    assert page.outside == [] and page.errors == []
    page.close()


def hooks(page: Page, expression: str):
    return page.evaluate(
        f"() => {{ const h = document.querySelector('.hw-root').hooks; return {expression}; }}"
    )


def answered(page: Page) -> None:
    """Wait for the answer to the view's request (its hooks say "computing" from the request on;
    the status line may keep the last answer's text for a quick one)."""
    page.wait_for_function("() => document.querySelector('.hw-root').hooks.state === 'done'")


def click(page: Page, layer: int, head: int) -> None:
    g = hooks(page, "h.geometry")
    x, y = g["left"] + (head + 0.5) * g["cell"], g["top"] + (layer + 0.5) * g["cell"]
    page.locator(".hw-grid").click(position={"x": x, "y": y})


def drawn_pattern(page: Page) -> tuple[list, np.ndarray]:
    p = hooks(
        page, "[[h.drawn.pattern.layer, h.drawn.pattern.head], Array.from(h.drawn.pattern.values)]"
    )
    return p[0], np.array(p[1], dtype=np.float32)


def test_the_page_shows_the_saved_numbers_offline(page, session):
    values = np.array(hooks(page, "Array.from(h.drawn.grid.values)"), dtype=np.float32)
    # the page's numbers are the session's own, sent as float32 bytes: exactly equal
    np.testing.assert_array_equal(values, session.grid(TEXT, "induction").ravel())
    head, pattern = drawn_pattern(page)
    assert head == [2, 3]  # the selected head is in view
    expected = session.patterns(TEXT, [(2, 3)])[(2, 3)].astype(np.float32)
    np.testing.assert_array_equal(pattern, expected.ravel())
    loss = session.ablation(TEXT, [(2, 3)])
    expect(page.locator(".hw-loss")).to_contain_text(f"{loss.loss_before:.3f}")
    expect(page.locator(".hw-loss")).to_contain_text(f"{loss.loss_after:.3f}")


def test_token_text_is_text(page, session):
    chips = page.locator(".hw-view .hw-chip")
    expect(chips).to_have_count(len(session.tokens(TEXT)))
    assert "".join(chips.all_text_contents()).replace("\u00b7", " ") == "".join(
        session.tokens(TEXT)
    ).replace("\n", "\u21b5")
    assert page.locator(".hw-root img, .hw-root b").count() == 0
    assert page.evaluate("() => window.pwned") is None


def test_clicks_answer_from_the_page_and_a_missing_head_says_so(page, session):
    click(page, 1, 0)
    answered(page)
    # no kernel timed it: the status says where the answer came from, not "done in 0.00 s"
    expect(page.locator(".hw-status")).to_have_text("done (saved page: no kernel)")
    head, pattern = drawn_pattern(page)
    assert head == [1, 0]
    expected = session.patterns(TEXT, [(1, 0)])[(1, 0)].astype(np.float32)
    np.testing.assert_array_equal(pattern, expected.ravel())
    click(page, 0, 5)  # not saved
    expect(page.locator(".hw-status")).to_contain_text("L0H5's pattern is not saved in this page")
    assert drawn_pattern(page)[0] == [1, 0]  # the view went back to what it showed
    page.locator(".hw-kind").select_option("previous_token")
    answered(page)
    expect(page.locator(".hw-status")).to_have_text(re.compile("^done"))
    values = np.array(hooks(page, "Array.from(h.drawn.grid.values)"), dtype=np.float32)
    np.testing.assert_array_equal(values, session.grid(TEXT, "previous_token").ravel())


def test_another_text_is_refused_in_the_view(page):
    page.locator(".hw-text").fill("Another text")
    page.locator(".hw-apply").click()
    expect(page.locator(".hw-status")).to_contain_text("holds the text it was saved with")


def test_page_size_for_the_bundled_model(session, tmp_path):
    """Target: the bundled model, T = 64, every head's pattern, under 2 MB."""
    ids = session.model.to_tokens("The cat sat on the mat. " * 20)[0, :64]
    text = session.model.tokenizer.decode([int(i) for i in ids[1:]])
    assert len(session.tokens(text)) == 64
    L, H = session.model.n_layers, session.model.n_heads
    heads = [(layer, head) for layer in range(L) for head in range(H)]
    page = export.save_html(
        session.model, tmp_path / "all.html", text, heads=heads, session=session
    )
    print(f"bundled model, T = 64, {len(heads)} heads: {page.nbytes:,} bytes")
    assert page.nbytes < 2_000_000 and page.heads == heads
    assert Path(page.path).read_text().count("<script") == 3  # data, front end, stand-in: no src=


def test_a_widget_saves_its_own_state(session, tmp_path):
    from mlx_headwidget import HeadWidget

    w = HeadWidget(session.model, text=TEXT, kind="previous_token")
    w.select(2, 3)
    page = w.save_html(tmp_path / "w.html")
    text = page.path.read_text()
    assert page.heads[0] == (2, 3) and len(page.heads) == 32  # all fit in the default budget
    for key in ('"kind":"previous_token"', '"selection":[[2,3]]', '"focus":[2,3]'):
        assert key in text
