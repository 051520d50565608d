"""Run every benchmark, each in its own process, and print their tables and a targets summary.

  python bench/run_all.py                      the full run (about 20 minutes on 2 CPU cores)
  python bench/run_all.py --quick              tiny models and sizes, all in this process: a
                                               smoke run (seconds)
  python bench/run_all.py --results bench/RESULTS.md
                                               also write the output between the markers of that
                                               file (text outside them is kept)
  python bench/run_all.py --smollm2 [--results bench/RESULTS.md]
                                               the real model's run: the benchmarks that take a
                                               model, on SmolLM2-135M at T = 101 and 512 (its own
                                               markers in the results file)
The full run starts each benchmark in its own process, so that its memory figures start clean, and
on Linux preloads Debian's OpenBLAS into it when installed (--blas bundled: MLX's own BLAS). The
quick run shares this process's imports and BLAS instead. bench_widget.py, when present, runs
last (it needs chromium and JupyterLab; --skip widget leaves it out).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"
BENCHES = (
    "tracing",
    "memory",
    "ablation",
    "peer",
    "scaling",
    "dequantize",
    "patching",
    "widget",
)
BEGIN, END = "<!-- run_all: begin -->", "<!-- run_all: end -->"
SMOLLM2_BEGIN, SMOLLM2_END = "<!-- run_all --smollm2: begin -->", "<!-- run_all --smollm2: end -->"
# --smollm2: each benchmark that takes a model, with SmolLM2-135M-Instruct (bench/models.py)
SMOLLM2_ARGS = {
    "tracing": ["--models", "smollm2", "--T", "101", "512"],
    "peer": ["--model", "smollm2", "--T", "101", "512"],
    "dequantize": ["--models", "smollm2-q4:smollm2", "--T", "101", "512"],
    "widget": ["--model", "smollm2-135m"],
}


class RunAllError(ValueError):
    """A benchmark name or results file that run_all cannot use."""


def child_env(blas: str) -> tuple[dict[str, str], str]:
    """Environment for the benchmarks and a sentence saying which BLAS it selects."""
    env = dict(os.environ)
    if blas == "bundled":
        env.pop("LD_PRELOAD", None)
        return env, "MLX's bundled BLAS (--blas bundled)"
    if sys.platform.startswith("linux") and Path(OPENBLAS).is_file():
        env["LD_PRELOAD"] = OPENBLAS
        return env, f"OpenBLAS preloaded into every benchmark (LD_PRELOAD={OPENBLAS})"
    return env, "no OpenBLAS to preload: MLX's own BLAS (Accelerate on macOS)"


def _maps() -> str:
    try:
        return Path("/proc/self/maps").read_text()
    except OSError:
        return ""


def markers(smollm2: bool) -> tuple[str, str]:
    """The markers a run writes between: the main run's, or the SmolLM2 run's."""
    return (SMOLLM2_BEGIN, SMOLLM2_END) if smollm2 else (BEGIN, END)


def command(name: str, quick: bool, json_path: Path, smollm2: bool = False) -> list[str] | None:
    """The command line of one benchmark, or None when its script is absent."""
    script = HERE / f"bench_{name}.py"
    if not script.is_file():
        return None
    if smollm2:
        extra = ["--json", str(json_path)] if name != "widget" else []
        return [sys.executable, str(script), *SMOLLM2_ARGS[name], *extra]
    if name == "widget":  # its own options: a tiny model and few clicks for a smoke run
        bundled = (HERE.parent / "mlx_headwidget" / "default_model" / "config.json").is_file()
        extra = ["--model", "tiny", "--clicks", "2"] if quick or not bundled else []
        return [sys.executable, str(script), *extra]
    return [sys.executable, str(script), *(["--quick"] if quick else []), "--json", str(json_path)]


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def run_here(cmd: list[str]) -> tuple[int, str, str]:
    """Run a benchmark's main() in this process: (exit code, stdout, traceback if it failed)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    module = importlib.import_module(Path(cmd[1]).stem)
    out = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, out)):
        try:
            module.main(cmd[2:])
        except Exception:
            return 1, out.getvalue(), traceback.format_exc()[-4000:]
    return 0, out.getvalue(), ""


def run(cmd: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run one benchmark, echoing its output as it comes: (exit code, stdout, stderr tail)."""
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE.parent
    )
    out = []
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        out.append(line)
    err = proc.stderr.read() if proc.stderr is not None else ""
    return proc.wait(), "".join(out), err[-4000:]


def summary(results: dict[str, dict]) -> str:
    """Markdown table of every target of every benchmark."""
    lines = [
        "## Summary of targets",
        "",
        "| benchmark | target | measured | limit | |",
        "|---|---|---|---|---|",
    ]
    for name, data in results.items():
        for t in data.get("targets", []):
            unit = t["unit"]

            def cell(v, unit=unit):
                if v is None:
                    return "n/a"
                return f"{v:.2f}x" if unit == "x" else f"{v / 2**20:,.1f} MiB"

            verdict = {True: "met", False: "**missed**", None: "n/a"}[t["met"]]
            row = [name, t["name"], cell(t["measured"]), f"<= {cell(t['limit'])}", verdict]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_results(path: Path, text: str, smollm2: bool = False) -> None:
    """Put `text` between the markers of `path` (the main run's, or with `smollm2` the SmolLM2
    run's): the file is created with just the markers if absent, and markers missing from an
    existing file are added at its end."""
    begin, end = markers(smollm2)
    old = path.read_text() if path.is_file() else ""
    if begin not in old and end not in old:
        old = f"{old.rstrip()}\n\n{begin}\n{end}\n".lstrip()
    if old.count(begin) != 1 or old.count(end) != 1 or old.index(begin) > old.index(end):
        raise RunAllError(f"{path} must contain the lines {begin} and {end} once each, in order")
    head, rest = old.split(begin, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny models and sizes: a smoke run")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help=", ".join(BENCHES))
    p.add_argument("--skip", nargs="+", default=[], metavar="NAME", help="benchmarks to leave out")
    p.add_argument("--blas", choices=("openblas", "bundled"), default="openblas")
    p.add_argument("--results", type=Path, default=None, help="markdown file to write into")
    p.add_argument(
        "--smollm2",
        action="store_true",
        help=f"SmolLM2-135M at T = 101 and 512 in {', '.join(SMOLLM2_ARGS)}",
    )
    args = p.parse_args(argv)
    if args.smollm2 and args.quick:
        raise RunAllError("--smollm2 runs the real model; it has no --quick form")
    for name in [*(args.only or []), *args.skip]:
        if name not in BENCHES:
            raise RunAllError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHES)}")
        if args.smollm2 and name not in SMOLLM2_ARGS:
            raise RunAllError(f"{name!r} is not in the SmolLM2 run: {', '.join(SMOLLM2_ARGS)}")
    names = [n for n in (args.only or BENCHES) if n not in args.skip]
    if args.smollm2:
        names = [n for n in names if n in SMOLLM2_ARGS]
    env, blas = child_env(args.blas)
    if args.quick:
        here = "this process (quick run): "
        blas = here + ("OpenBLAS preloaded" if "openblas" in _maps() else "MLX's own BLAS")
    shown = " ".join(["python bench/run_all.py", *(argv if argv is not None else sys.argv[1:])])
    header = (
        f"# Benchmark run: `{shown}`\n\n"
        f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}\n- BLAS: {blas}\n"
    )
    print(header, flush=True)
    parts, results, failed, timings = [header], {}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            json_path = Path(tmp) / f"{name}.json"
            cmd = command(name, args.quick, json_path, args.smollm2)
            if cmd is None:
                print(f"(bench_{name}.py is not present: skipped)\n", flush=True)
                continue
            t0 = time.perf_counter()
            inline = args.quick and name != "widget"
            code, out, err = run_here(cmd) if inline else run(cmd, env)
            timings.append((name, time.perf_counter() - t0, code))
            parts.append(out if name != "widget" else f"## Widget\n\n```\n{out}```\n")
            if code != 0:
                failed.append(name)
                msg = f"bench_{name}.py failed (exit code {code}):\n{err}"
                print(msg, file=sys.stderr, flush=True)
                parts.append(f"**bench_{name}.py failed (exit code {code})**\n\n```\n{err}\n```\n")
            if json_path.is_file():
                results[name] = json.loads(json_path.read_text())
    parts.append(summary(results))
    parts.append(
        "Wall time per benchmark: "
        + ", ".join(f"{n} {s:.0f} s" + ("" if c == 0 else " (failed)") for n, s, c in timings)
        + f"; total {sum(s for _, s, _ in timings):.0f} s.\n"
    )
    print(parts[-2] + "\n" + parts[-1], flush=True)
    if args.results is not None:
        write_results(args.results, "\n".join(parts), args.smollm2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
