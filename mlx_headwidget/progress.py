"""Progress of long computations: a tqdm bar, a callback, or nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Progress = bool | Callable[[int, int], Any]
"""True: a tqdm bar; a callable: called as progress(done, total) after each step; False: none."""


def ticker(
    progress: Progress, total: int, desc: str
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(tick, close): tick() after each of `total` steps, close() at the end (in a finally)."""
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, leave=False)
        return (lambda: bar.update()), bar.close
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if callable(progress):
            progress(done, total)

    return tick, lambda: None
