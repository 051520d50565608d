"""Smoke test of the benchmarks: `bench/run_all.py --quick` runs them all on tiny models.

It runs in a subprocess, as a user would run it, and must print every benchmark's tables, a
targets summary with a row per target, and write them into a results file between its markers.
The widget benchmark is left out: it drives a real browser and has its own browser tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TITLES = {
    "tracing": "## Tracing overhead",
    "memory": "## Scan memory",
    "ablation": "## Ablation cost",
    "peer": "## Peer comparison with TransformerLens",
    "scaling": "## Scan scaling with T",
    "dequantize": "## Quantized vs dequantized weights on a CPU",
    "patching": "## Activation patching",
}
# benchmarks with targets print a results table and a targets table; scaling, dequantize and
# patching have no target (dequantize and patching print two tables of their own)
MIN_TABLES = {
    "tracing": 2,
    "memory": 3,
    "ablation": 2,
    "peer": 2,
    "scaling": 1,
    "dequantize": 2,
    "patching": 1,
}
WITH_TARGETS = {"tracing", "memory", "ablation", "peer"}
ROW = re.compile(r"^\| .+ \|$", re.MULTILINE)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, str]:
    tmp = tmp_path_factory.mktemp("bench")
    results = tmp / "RESULTS.md"
    results.write_text(
        "Hand-written analysis.\n\n<!-- run_all: begin -->\nold\n<!-- run_all: end -->\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "bench/run_all.py",
            "--quick",
            "--skip",
            "widget",
            "--results",
            str(results),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "MLX_HEADWIDGET_BENCH_CACHE": str(tmp / "models"),
        },
    )
    return proc, results.read_text()


def test_every_benchmark_prints_its_tables(quick_run):
    proc, _ = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    positions = [out.find(title) for title in TITLES.values()]
    assert min(positions) >= 0, dict(zip(TITLES, positions, strict=True))
    assert positions == sorted(positions)
    for name, title in TITLES.items():
        section = out[out.find(title) :].split("\n## ", 1)[0]
        tables = section.count("\n### ")
        assert tables >= MIN_TABLES[name], f"{name}: {tables} tables"
        assert len(ROW.findall(section)) >= 5, f"{name}: too few table rows"
    assert "BLAS: OpenBLAS" in out or "BLAS: MLX's" in out or "Accelerate" in out


def test_summary_lists_every_target_with_a_verdict(quick_run):
    proc, _ = quick_run
    summary = proc.stdout.split("## Summary of targets", 1)[1]
    rows = [r for r in ROW.findall(summary) if not r.startswith("| benchmark")]
    rows = [r for r in rows if not set(r) <= set("|-: ")]
    benches = {r.split("|")[1].strip() for r in rows}
    assert benches == WITH_TARGETS
    for row in rows:
        assert row.rstrip(" |").endswith(("met", "**missed**", "n/a")), row


def test_results_file_keeps_the_text_outside_the_markers(quick_run):
    proc, text = quick_run
    assert text.startswith("Hand-written analysis.\n\n<!-- run_all: begin -->\n# Benchmark run")
    assert "\nold\n" not in text
    assert text.rstrip().endswith("<!-- run_all: end -->")
    for title in TITLES.values():
        assert title in text
    assert "## Summary of targets" in text


def test_float_error_measures_every_setting_asked_for():
    """bench/float_error.py on one test model under two BLAS settings: both tables, and the
    differences it reports are small float32 ones (the tests' tolerances come from its output)."""
    openblas = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0").is_file()
    settings = ["OpenBLAS", "bundled BLAS"] if openblas else ["bundled BLAS"]
    proc = subprocess.run(
        [sys.executable, "bench/float_error.py", "--cases", "llama", "--settings", *settings],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "## Within one process" in proc.stdout and "## Across settings" in proc.stdout
    rows = [r for r in ROW.findall(proc.stdout) if not r.startswith(("| largest", "| quantity"))]
    assert len(rows) >= 10
    numbers = [float(x) for r in rows for x in re.findall(r"\d\.\de[-+]\d\d", r)]
    assert len(numbers) >= 2 * len(rows) - 4 and max(numbers) < 1e-4


def test_smollm2_run_writes_between_its_own_markers(tmp_path):
    """`run_all.py --smollm2 --results F` adds its markers to F and fills them; the main run's
    section and the text around both are kept, whichever run writes."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from run_all import write_results
    finally:
        sys.path.remove(str(REPO / "bench"))
    path = tmp_path / "RESULTS.md"
    path.write_text("Notes.\n\n<!-- run_all: begin -->\nmain\n<!-- run_all: end -->\n")
    write_results(path, "small model", smollm2=True)
    write_results(path, "smollm2 run", smollm2=True)
    write_results(path, "main again")
    assert path.read_text() == (
        "Notes.\n\n<!-- run_all: begin -->\nmain again\n<!-- run_all: end -->\n\n"
        "<!-- run_all --smollm2: begin -->\nsmollm2 run\n<!-- run_all --smollm2: end -->\n"
    )
