"""Atomic file writes: a reader, or a crash half-way, never sees a half-written file.

Every file the package writes goes through here, and only to paths the caller passed. The new
content is written to a temporary name in the destination's own folder (same file system), then
moved over the destination with `os.replace`, which is atomic. If writing fails, the old file is
left as it was and the temporary file is removed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], Any]) -> Path:
    """Call `write_fn(tmp)` to write the new content to `tmp`, then `os.replace(tmp, path)`.

    `tmp` is a fresh name in `path`'s folder ending in `path`'s own name, so writers that add or
    check a suffix (e.g. ".safetensors") keep working. The folder must exist. Returns `path`.
    The result gets the old file's permissions, or the default ones for a new file.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    tmp = path.parent / f".tmp-{secrets.token_hex(6)}-{path.name}"
    try:
        write_fn(tmp)
        if not tmp.is_file():
            raise FileNotFoundError(f"the writer for {path} wrote nothing to {tmp}")
        mode = path.stat().st_mode & 0o777 if path.is_file() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_files(folder: str | os.PathLike, write_fn: Callable[[Path], Any]) -> list[Path]:
    """Call `write_fn(staging)` to write files into an empty folder, then move each one over its
    namesake in `folder` with `os.replace`. Returns the paths written, sorted.

    For writers that produce several files at once (e.g. mlx-lm's `save_model`). Each file is
    replaced atomically; if `write_fn` fails, `folder` is left untouched and the staging folder
    removed. `folder` must exist; sub-folders written by `write_fn` are refused.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write into {folder}: it is not an existing folder")
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
    try:
        write_fn(staging)
        written = sorted(staging.iterdir())
        nested = [p.name for p in written if not p.is_file()]
        if nested:
            raise IsADirectoryError(f"the writer made folders {nested}; only files can be moved")
        umask = _umask()
        for file in written:
            os.chmod(file, 0o666 & ~umask)
            os.replace(file, folder / file.name)
        return [folder / file.name for file in written]
    finally:
        shutil.rmtree(staging, ignore_errors=True)
