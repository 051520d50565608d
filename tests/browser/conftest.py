"""Fixtures for the end-to-end widget tests: one Jupyter server and one chromium per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness import Lab, launched_browser, running_lab
from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory.mktemp("lab")) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_browser() as b:
        yield b
