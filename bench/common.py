"""Shared benchmark helpers: timing, memory, the machine, and markdown tables.

Time is the median of `repeats` runs after one warm-up. Memory is measured two ways:
  - process peak: the kernel's resident-set high-water mark (VmHWM, reset through
    /proc/self/clear_refs) minus the resident set just before the run. It counts everything
    the run allocates: MLX buffers, numpy copies and torch tensors alike;
  - MLX peak: mx.get_peak_memory() after mx.reset_peak_memory(), minus mx.get_active_memory()
    before the run. MLX buffers only.
Both are taken after mx.clear_cache() and gc.collect(), so buffers cached by an earlier run are
not reused unseen.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import mlx.core as mx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))

OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"
MIB = 2**20
LONG_ROUND = 30.0  # seconds: rounds at least this long are measured once, without a warm-up


class BenchSetupError(ValueError):
    """An unknown model name, a size the benchmark cannot run, or a bad option value."""


# Machine -----------------------------------------------------------------------------------------
def blas() -> str:
    """Which BLAS MLX's matmuls use in this process (read from the loaded libraries)."""
    if sys.platform == "darwin":
        return "Apple Accelerate (macOS)"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    if "libopenblas" in maps:
        return f"OpenBLAS, preloaded (LD_PRELOAD={os.environ.get('LD_PRELOAD', '')})"
    return "MLX's bundled reference BLAS (no OpenBLAS preloaded; matmuls ~13x slower)"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    """Description of this machine and of the software versions that matter for the timings."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
        ram = f"{int(mem) / MIB:.1f} GiB"
    except OSError:
        ram = "unknown"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "ram": ram,
        "load average (1, 5, 15 min) at start": load,
        "python": platform.python_version(),
        "packages": ", ".join(
            f"{p} {_version(p)}" for p in ("mlx", "mlx-lm", "numpy", "torch", "transformer-lens")
        ),
        "MLX device": str(mx.default_device()),
        "BLAS": blas(),
    }


# Timing and memory -------------------------------------------------------------------------------
def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def settle() -> None:
    """Free what earlier runs left: Python garbage and MLX's buffer cache."""
    gc.collect()
    mx.clear_cache()


@dataclass
class Run:
    """One measured call: wall seconds, process peak and MLX peak above the start (bytes)."""

    seconds: float
    rss_extra: int | None
    mlx_extra: int


def measure(fn: Callable[[], Any]) -> Run:
    """Run `fn` once and measure its time and peak memory (see the module docstring)."""
    settle()
    rss0 = _status_kib("VmRSS") if _reset_rss_peak() else None
    mlx0 = mx.get_active_memory()
    mx.reset_peak_memory()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    mlx_extra = mx.get_peak_memory() - mlx0
    hwm = _status_kib("VmHWM")
    del result
    rss_extra = (hwm - rss0) * 1024 if rss0 is not None and hwm is not None else None
    return Run(seconds, rss_extra, mlx_extra)


@dataclass
class Measured:
    """Medians over repeats: seconds, process peak extra bytes, MLX peak extra bytes."""

    seconds: float
    rss_extra: int | None
    mlx_extra: int
    runs: list[Run] = field(default_factory=list)


def _median(values: Sequence[float | None]) -> Any:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def compare(fns: dict[str, Callable[[], Any]], args: argparse.Namespace) -> dict[str, Measured]:
    """Measure each of `fns`, interleaved (a, b, c, a, b, c, ...) so that load from other
    processes falls on all alike. The first round is a warm-up unless it took over 30 s (then it
    is the one measurement); then --repeats rounds, or as many as `repeats_for` its time."""
    # Objects alive now are frozen out of the collections `measure` runs: a full collection over
    # what transformers and torch create at import takes ~0.2 s on this machine.
    gc.collect()
    gc.freeze()
    try:
        first = {name: measure(fn) for name, fn in fns.items()}
        total = sum(r.seconds for r in first.values())
        if args.repeats is None and total >= LONG_ROUND:
            runs = {name: [r] for name, r in first.items()}
        else:
            runs = {name: [] for name in fns}
            for _ in range(repeats_for(args, total)):
                for name, fn in fns.items():
                    runs[name].append(measure(fn))
    finally:
        gc.unfreeze()
    return {
        name: Measured(
            _median([r.seconds for r in rs]),
            _median([r.rss_extra for r in rs]),
            int(_median([r.mlx_extra for r in rs])),
            rs,
        )
        for name, rs in runs.items()
    }


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is unknown or b is 0."""
    return None if a is None or b is None or b == 0 else a / b


def pattern_bytes(n_heads: int, T: int, batch: int = 1) -> int:
    """Bytes of one layer's float32 patterns (batch, n_heads, T, T)."""
    return 4 * batch * n_heads * T * T


# Output ------------------------------------------------------------------------------------------
def fmt(value: Any, unit: str = "") -> str:
    """A table cell: seconds as 3 significant digits, bytes (unit "MiB") in MiB, ratios as 1.23x."""
    if value is None:
        return "n/a"
    if unit == "MiB":
        return f"{value / MIB:,.1f}"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "s":
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    return str(value)


@dataclass
class Target:
    """One target of issue 8: `measured` against `limit` (met when measured <= limit)."""

    name: str
    measured: float | None
    limit: float | None
    unit: str = "x"
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None or self.limit is None:
            return None
        return self.measured <= self.limit


def _cell(value: float | None, unit: str) -> str:
    return fmt(value, unit) + (" MiB" if unit == "MiB" and value is not None else "")


def _is_number(cell: Any) -> bool:
    text = str(cell).replace(",", "").removesuffix("x")
    try:
        float(text)
    except ValueError:
        return text in ("", "n/a")
    return True


class Report:
    """Tables and targets of one benchmark; printed as markdown as they come, saved as JSON."""

    def __init__(self, title: str, args: argparse.Namespace):
        self.title, self.args = title, args
        self.tables: list[dict] = []
        self.targets: list[Target] = []
        print(f"## {title}\n", flush=True)

    def note(self, text: str) -> None:
        print(f"{text}\n", flush=True)

    def table(self, title: str, columns: list[str], rows: list[list[Any]], note: str = "") -> None:
        lines = [f"### {title}", "", "| " + " | ".join(columns) + " |"]
        numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(columns))]
        lines.append("|" + "|".join("---:" if num else "---" for num in numeric) + "|")
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        if note:
            lines += ["", note]
        print("\n".join(lines) + "\n", flush=True)
        self.tables.append({"title": title, "columns": columns, "rows": rows, "note": note})

    def target(
        self, name: str, measured: float | None, limit: float | None, unit: str = "x", note=""
    ):
        self.targets.append(Target(name, measured, limit, unit, note))

    def finish(self) -> None:
        """Print the targets table; write everything to --json if given."""
        if self.targets:
            rows = [
                [
                    t.name,
                    _cell(t.measured, t.unit),
                    f"<= {_cell(t.limit, t.unit)}",
                    {True: "met", False: "**missed**", None: "n/a"}[t.met],
                    t.note,
                ]
                for t in self.targets
            ]
            self.table(f"Targets: {self.title}", ["target", "measured", "limit", "", "note"], rows)
        if getattr(self.args, "json", None):
            data = {
                "title": self.title,
                "tables": self.tables,
                "targets": [{**asdict(t), "met": t.met} for t in self.targets],
            }
            Path(self.args.json).write_text(json.dumps(data, indent=1, default=str))


def parser(description: str) -> argparse.ArgumentParser:
    """Arguments every benchmark takes: --quick (tiny models and sizes), --repeats, --json."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny models and sizes: a smoke run")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per case (median)")
    p.add_argument("--json", default=None, help="also write the tables and targets here")
    return p


def repeats_for(args: argparse.Namespace, seconds_hint: float) -> int:
    """--repeats if given, else by the time of one round: 5 under 2 s, 3 under 30 s, 1 beyond."""
    if args.repeats is not None:
        if args.repeats < 1:
            raise BenchSetupError(f"--repeats must be >= 1, got {args.repeats}")
        return args.repeats
    return 5 if seconds_hint < 2 else 3 if seconds_hint < LONG_ROUND else 1
