"""The built wheel carries the bundled model and the front end, and works installed on its own."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_model_and_the_front_end(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".*"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("mlx_headwidget-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "mlx_headwidget"
    model_files = {  # the model, its card and log, and its training checkpoints
        p.relative_to(ROOT).as_posix()
        for p in (package / "default_model").rglob("*")
        if p.is_file()
    }
    assert any("/checkpoints/step_" in n for n in model_files) and model_files <= names
    front_end = {"widget.js", "widget.css", "static.js"}
    assert {f"mlx_headwidget/static/{n}" for n in front_end} <= names

    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)  # a wheel is a zip of the installed files
    code = (
        "import mlx_headwidget, pathlib; from mlx_headwidget import InterpretableModel; "
        "from mlx_headwidget.widget import asset; m = InterpretableModel(); "
        "print(pathlib.Path(mlx_headwidget.__file__).parent); print(asset('widget.js')); "
        "print(m.n_layers, m.to_str_tokens('The cat')[-1])"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    package, js, model = run.stdout.splitlines()
    assert package == str(target / "mlx_headwidget")  # not the source tree
    assert js == str(target / "mlx_headwidget" / "static" / "widget.js")
    assert model == "4  cat"
