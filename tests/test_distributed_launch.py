"""A model sharded over 2 processes gives the numbers of one process, with global head numbers.

One `mlx.launch -n 2 --backend ring` run on localhost (tests/distributed_program.py) covers the
bundled model (8 query heads, 2 KV heads), a tiny llama (4 heads, 2 KV; MLP 1024 wide, so its
layers hold most of its weights) and a 4-bit one (8 heads, 2 KV; each rank's share of o_proj's and
down_proj's inputs is whole quantization groups): scans, patterns, ablations, memory, the command
line and the refusals. The ranks inherit this process's environment (LD_PRELOAD, OPENBLAS_CORETYPE).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from distributed_program import heads_to_check, results

from mlx_headwidget import InterpretableModel
from mlx_headwidget.detect import score_grid
from mlx_headwidget.gridfile import load_grid
from mlx_headwidget.testing import assert_logits_close, make_checkpoint

# Not marked `blas`: one launch costs ~45 s, and make test's two extra BLAS passes would triple it.
# The sharded-vs-one-process differences were measured under OpenBLAS with this CPU's, Haswell's,
# SkylakeX's and Sandybridge's kernels and MLX's bundled BLAS (docs/scale-out.md); the tolerances
# below come from those runs.

PROGRAM = Path(__file__).with_name("distributed_program.py")
RANKS = 2
# A sharded forward sums o_proj and down_proj as two partial products added by all_sum, and its
# q/k/v and MLP matmuls have other shapes (so other BLAS blockings): float32 sums in another order.
# Largest differences from one process, measured on both ranks of the three models under OpenBLAS
# with this CPU's (Zen 4), Haswell's, SkylakeX's and Sandybridge's kernels and MLX's bundled BLAS:
# scores 8.5e-7; patterns 1.8e-5 (the trained bundled model's sharp last layer under Haswell; the
# random llamas 3.9e-6); logits 3.2e-5 on logits up to 8.1 (4e-6 relative); per-token losses
# 3.5e-5 on losses up to 11 (3.2e-6 relative). A wrong head or mask moves them by 1e-3 and more.
SCORE_ATOL = 1e-5
PATTERN_ATOL = 5e-5
# logits and losses: LOGITS_RTOL (1e-5) of max(1, max |value|), as testing.assert_logits_close


def free_ports(n: int) -> int:
    """A port p with p .. p + n - 1 free now (the ring backend listens on p + rank)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            start = probe.getsockname()[1]
        sockets: list[socket.socket] = []
        try:
            for port in range(start, start + n):
                sockets.append(socket.socket())
                sockets[-1].bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"found no {n} free consecutive ports")


def launch(out: Path, *args: str, timeout: float = 400) -> None:
    """mlx.launch -n RANKS --backend ring PROGRAM OUT ARGS; its process group killed on timeout."""
    launcher = shutil.which("mlx.launch", path=str(Path(sys.executable).parent))
    assert launcher, f"mlx.launch is not installed beside {sys.executable}"
    command = [launcher, "-n", str(RANKS), "--backend", "ring", "-p", str(free_ports(RANKS))]
    command += ["--python", sys.executable, str(PROGRAM), str(out), *args]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise AssertionError(f"the ranks did not finish in {timeout} s:\n{output}") from None
    # mlx.launch exits 0 even when a rank fails: each rank's file is the proof it finished
    missing = [r for r in range(RANKS) if not (out / f"rank{r}.json").is_file()]
    assert not missing, f"ranks {missing} wrote no results:\n{output}"


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """(the ranks' reports, {case: model folder or None: bundled}, the output folder)."""
    root = tmp_path_factory.mktemp("distributed")
    llama = make_checkpoint("llama", root / "llama", num_hidden_layers=4, intermediate_size=1024)
    llama4bit = make_checkpoint(
        "llama", root / "llama-4bit", quantize_bits=4, num_attention_heads=8, intermediate_size=256
    )
    kv1 = make_checkpoint("llama", root / "kv1", num_key_value_heads=1)
    gpt2 = make_checkpoint("gpt2", root / "gpt2")
    out = root / "out"
    out.mkdir()
    launch(out, str(llama), str(llama4bit), str(kv1), str(gpt2))
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(RANKS)]
    return reports, {"bundled": None, "llama": str(llama), "llama-4bit": str(llama4bit)}, out


def close(a, b, atol: float) -> None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def scored(heads: list, n: int = 3) -> dict[tuple[int, int], list[float]]:
    """[[layer, head, value, ...], ...] -> {(layer, head): [value, ...]}."""
    return {(h[0], h[1]): h[2 : 2 + n] for h in heads}


@pytest.mark.parametrize("case", ["bundled", "llama", "llama-4bit"])
def test_sharded_results_equal_one_process(launched, case):
    reports, sources, _ = launched
    model = InterpretableModel(sources[case])
    expected = results(model)
    H = model.n_heads
    for rank, report in enumerate(reports):
        got = report[case]
        assert got["size"] == RANKS and got["rank"] == rank
        assert got["local_heads"] == [rank * H // RANKS, (rank + 1) * H // RANKS]
        r = got["results"]
        assert r["captured_shape"][1] == H // RANKS  # each process captured its own heads
        for key in ("induction_grid", "previous_token_grid"):
            close(r[key], expected[key], SCORE_ATOL)
        for kind, heads in expected["head_types"].items():
            want, have = scored(heads), scored(r["head_types"][kind])
            assert have.keys() == want.keys()
            close([have[k] for k in want], list(want.values()), SCORE_ATOL)
        want, have = scored(expected["induction_heads"], 2), scored(r["induction_heads"], 2)
        assert list(have) == list(want)  # same heads in the same order (no near ties here)
        close(list(have.values()), list(want.values()), SCORE_ATOL)
        assert list(r["patterns"]) == list(expected["patterns"])
        for layer, pattern in expected["patterns"].items():
            close(r["patterns"][layer], pattern, PATTERN_ATOL)
        assert list(r["head_patterns"]) == [f"{la},{h}" for la, h in heads_to_check(model)]
        for key, pattern in expected["head_patterns"].items():
            close(r["head_patterns"][key], pattern, PATTERN_ATOL)
        assert_logits_close(r["logits_last"], expected["logits_last"])
        assert_logits_close(r["mean_ablated_logits_last"], expected["mean_ablated_logits_last"])
        a, b = r["ablation"], expected["ablation"]
        losses = ("loss_before", "loss_after")
        assert_logits_close([a[k] for k in losses], [b[k] for k in losses])
        assert_logits_close(a["token_loss_after"], b["token_loss_after"])
        assert [t for t, _ in a["top_after"]] == [t for t, _ in b["top_after"]]
        close([p for _, p in a["top_after"]], [p for _, p in b["top_after"]], SCORE_ATOL)


def test_each_rank_holds_half_of_the_layers(launched):
    reports, _, _ = launched
    for report in reports:
        for case in ("bundled", "llama", "llama-4bit"):
            sharded, whole = report[case]["memory"], report[case]["memory_unsharded"]
            # q/k/v/o and the MLP are split in two; only the layers' two norm vectors are whole
            assert 0.5 <= sharded["layers"] / whole["layers"] < 0.51, (case, sharded, whole)
            # weights are read tensor by tensor: beside this rank's share, about one whole tensor
            # in memory (float16 and float32 for the bundled model; mlx-lm's sharded 4-bit layers
            # add their own init), never every weight. Reading everything first breaks the bound
            # on the llamas, whose layers hold most weights (measured 3.07 MB > 2.46 MB).
            bound = sharded["all"] + 2 * whole["largest"]
            assert sharded["peak"] <= bound, (case, sharded, whole)
            assert sharded["peak"] < whole["all"], (case, sharded, whole)
    assert reports[0]["LD_PRELOAD"] == os.environ.get("LD_PRELOAD", "")  # the ranks' BLAS is ours


def test_refusals_name_what_works(launched):
    reports, _, _ = launched
    for report in reports:
        kv1, gpt2 = report["refusals"]["kv1"], report["refusals"]["gpt2"]
        assert "cannot be split over 2 processes" in kv1
        assert "1 KV heads" in kv1 and "Group sizes that work: 1." in kv1
        assert "'gpt2' model cannot be sharded" in gpt2
        assert "llama" in gpt2 and "qwen3" in gpt2  # the architectures that can
        for case in ("bundled", "llama"):
            assert "not on one sharded over 2 processes" in report[case]["widget"]
            assert "load_grid('scan.npz').figure()" in report[case]["widget"]


def test_command_prints_and_saves_on_rank_0_only(launched):
    reports, sources, out = launched
    first, second = (r["command"] for r in reports)
    assert first["code"] == second["code"] == 0
    assert second["stdout"] == ""
    assert "sharded over 2 processes" in first["stdout"]
    saved = load_grid(out / "scan.npz")
    rows = [line.split() for line in first["stdout"].splitlines() if line.strip()[:2] == "L0"]
    assert [float(v) for v in rows[0][1:]] == [round(v, 2) for v in saved.grid[0]]
    model = InterpretableModel(sources["llama"])
    expected = score_grid(model, kind="induction", n_samples=2)
    close(saved.grid, expected, SCORE_ATOL)
    assert saved.kind == "induction" and saved.settings["n_samples"] == 2
