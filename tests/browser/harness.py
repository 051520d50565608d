"""A real Jupyter server and Debian's chromium (through Playwright), for widget tests and benches.

`running_lab(folder)` starts `jupyter lab` on a free port with a token and temporary root,
settings, workspace and runtime folders; `running_marimo(app)` serves a marimo app file with
`marimo run`; `launched_browser()` starts /usr/bin/chromium headless.
`open_and_run` opens a notebook, waits for its kernel, runs all cells; `diagnose` saves a
screenshot and a state dump when a test fails; `restart_kernel` and `shut_down_kernel`
act on a notebook's kernel through the server's REST API.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

from mlx_headwidget.server import SETTING

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OPENBLAS = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0")


@dataclass
class Lab:
    """A running Jupyter server: `root` holds the notebooks, `url(path)` adds the token."""

    port: int
    token: str
    root: Path
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}?token={self.token}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: Path, cells: list[str]) -> Path:
    """An nbformat-4 notebook of code `cells`, on the python3 kernel (no kernel picker)."""
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "source": src,
                "outputs": [],
                "execution_count": None,
            }
            for src in cells
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1))
    return path


def _server_env() -> dict:
    """This repository first on the path, and OpenBLAS preloaded for the kernel where present."""
    env = dict(os.environ)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
    )
    if OPENBLAS.is_file():  # the kernel inherits it: MLX matmuls ~13x faster on Linux CPU
        env["LD_PRELOAD"] = str(OPENBLAS)
    return env


def _wait_until_up(url: str, server: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()


@contextmanager
def running_marimo(app: Path) -> Iterator[str]:
    """`marimo run app` (read-only app mode, the way an app is served) on a free port; yields its
    URL. The server's output goes to app's folder, server.log."""
    port, log = _free_port(), app.parent / "server.log"
    cmd = [sys.executable, "-m", "marimo", "run", str(app), "--headless", "--no-token"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--no-sandbox", "--no-skew-protection"]
    env = _server_env() | {"MARIMO_SKIP_UPDATE_CHECK": "1"}
    with log.open("w") as out:
        server = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=app.parent
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_until_up(url, server, log, "marimo run")
        yield url
    finally:
        _stop(server)


@contextmanager
def running_lab(base: Path, nodelay: bool = False) -> Iterator[Lab]:
    """A Jupyter server (JupyterLab and, if installed, Notebook 7) with its state under `base`;
    `nodelay` starts it with `mlx_headwidget.server.NoDelayKernelConnection`."""
    root, settings = base / "root", base / "settings"
    root.mkdir()
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}))
    env = _server_env()
    env.update(
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
    )
    lab = Lab(_free_port(), secrets.token_hex(16), root, base / "server.log")
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        f"--port={lab.port}",
        "--ip=127.0.0.1",
        f"--ServerApp.token={lab.token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        *([SETTING] if nodelay else []),
    ]
    with lab.log.open("w") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(lab.url("api/status"), server, lab.log, "jupyter lab")
        yield lab
    finally:
        _stop(server)


@contextmanager
def launched_browser() -> Iterator[Browser]:
    """Debian's chromium, headless, with the flags that keep it offline and quiet."""
    # Playwright's node driver fails to start threads with OpenBLAS preloaded: start it without.
    preload = os.environ.pop("LD_PRELOAD", None)
    try:
        pw = sync_playwright().start()
    finally:
        if preload is not None:
            os.environ["LD_PRELOAD"] = preload
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


def open_and_run(page: Page, url: str, timeout: float = 60_000) -> None:
    """Open a notebook, wait until its kernel is named and idle, run all cells, wait for [1]."""
    page.goto(url)
    kernel = page.locator(".jp-NotebookPanel-toolbar .jp-KernelName").first
    page.wait_for_function(
        """() => {
          const k = document.querySelector('.jp-NotebookPanel-toolbar .jp-KernelName');
          const i = document.querySelector('.jp-Notebook-ExecutionIndicator');
          return k && !/no kernel/i.test(k.textContent) && k.textContent.trim() !== ''
            && i && /idle/i.test(i.getAttribute('data-status') || '');
        }""",
        timeout=timeout,
    )
    assert "Python" in kernel.inner_text()
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    prompt = page.locator(".jp-InputPrompt").first
    page.wait_for_function(
        "el => /\\[1\\]/.test(el.textContent)", arg=prompt.element_handle(), timeout=timeout
    )


@contextmanager
def diagnose(page: Page, folder: Path, lab: Lab) -> Iterator[None]:
    """On failure, save a screenshot and a dump of prompts, kernel, widget status and server log."""
    try:
        yield
    except BaseException:
        folder.mkdir(parents=True, exist_ok=True)
        shot = folder / "failure.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            dump = page.evaluate(
                """() => ({
                  prompts: [...document.querySelectorAll('.jp-InputPrompt')]
                    .map(e => e.textContent),
                  kernel: document.querySelector('.jp-KernelName')?.textContent,
                  indicator: document.querySelector('.jp-Notebook-ExecutionIndicator')
                    ?.getAttribute('data-status'),
                  status: document.querySelector('.hw-status')?.textContent,
                  outputs: [...document.querySelectorAll('.jp-OutputArea-output')]
                    .map(e => e.textContent.slice(0, 2000)),
                })"""
            )
        except Exception as err:  # the page itself may be gone
            dump = {"dump failed": repr(err)}
        (folder / "failure.json").write_text(json.dumps(dump, indent=1))
        print(f"\nbrowser failure: screenshot {shot}, state {folder / 'failure.json'}")
        print(json.dumps(dump, indent=1)[:4000])
        print("server log tail:\n" + lab.log.read_text()[-2000:])
        raise


def _kernel_id(lab: Lab, notebook: str) -> str:
    with urllib.request.urlopen(lab.url("api/sessions"), timeout=10) as r:
        sessions = json.load(r)
    ids = [x["kernel"]["id"] for x in sessions if x.get("path", "").endswith(notebook)]
    if len(ids) != 1:
        raise RuntimeError(f"expected one session for {notebook}, found {sessions}")
    return ids[0]


def _kernel_call(lab: Lab, notebook: str, action: str, method: str = "POST") -> None:
    kernel = f"api/kernels/{_kernel_id(lab, notebook)}"
    request = urllib.request.Request(lab.url(f"{kernel}/{action}".rstrip("/")), method=method)
    with urllib.request.urlopen(request, timeout=60) as r:
        r.read()


def restart_kernel(lab: Lab, notebook: str) -> None:
    """Restart, through the server's REST API, the kernel of the session running `notebook`."""
    _kernel_call(lab, notebook, "restart")


def shut_down_kernel(lab: Lab, notebook: str) -> None:
    """Shut down the kernel of the session running `notebook`."""
    _kernel_call(lab, notebook, "", method="DELETE")
