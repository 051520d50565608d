"""How far two computations of the same float32 quantity drift apart, per BLAS and CPU kernels.

    python bench/float_error.py               every BLAS setting below, one process each: tables
    python bench/float_error.py --notebooks   instead re-run notebooks/*.ipynb under each setting
                                              and compare them with their stored outputs
    python bench/float_error.py --child OUT   measure in this process only (its own BLAS), as JSON

The tests compare different computations of one quantity (whole attention vs attention by blocks of
query rows, a traced forward vs the plain one, a capture of some layers vs all, the MLX scorer vs
the numpy reference), and the notebooks and browser tests compare a result computed under one BLAS
with one stored or computed under another. Their tolerances (`mlx_headwidget.testing`,
`notebooks/nbval_plotly.py`) are chosen from the largest differences this script prints.

Settings (Linux): OpenBLAS preloaded with this CPU's kernels and with those of other CPUs
(OPENBLAS_CORETYPE: Haswell = AVX2 only, as on AMD Zen 2/3 and older Intel; SkylakeX = AVX-512;
Sandybridge = AVX), and MLX's bundled BLAS (no preload). Differences are:
- logits: max |a - b| / max(1, max |b|), relative to the logits' size;
- patterns and scores: max |a - b| (they lie in [0, 1]).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"
SETTINGS: dict[str, dict[str, str | None]] = {
    "OpenBLAS": {"LD_PRELOAD": OPENBLAS, "OPENBLAS_CORETYPE": None},
    "OpenBLAS Haswell": {"LD_PRELOAD": OPENBLAS, "OPENBLAS_CORETYPE": "Haswell"},
    "OpenBLAS SkylakeX": {"LD_PRELOAD": OPENBLAS, "OPENBLAS_CORETYPE": "SkylakeX"},
    "OpenBLAS Sandybridge": {"LD_PRELOAD": OPENBLAS, "OPENBLAS_CORETYPE": "Sandybridge"},
    "bundled BLAS": {"LD_PRELOAD": None, "OPENBLAS_CORETYPE": None},
}
BLOCKS = (1, 3, 16)
WIDGET = "application/vnd.jupyter.widget-view+json"  # random model ids; nbval skips them too


def logits_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def abs_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.nanmax(np.abs(a - b))) if a.size else 0.0


def measure_model(model, tokens) -> dict[str, float]:
    """Within-process differences between computations of the same logits and patterns."""
    from mlx_headwidget.capture import capture_attention

    whole: dict = {}
    logits = capture_attention(model, tokens, on_pattern=lambda i, p: whole.update({i: p}))
    out = {"traced vs plain logits": logits_diff(logits, model.model(tokens))}
    for block in BLOCKS:
        rows: dict = {}
        by_rows = capture_attention(
            model,
            tokens,
            on_rows=lambda i, s, r, rows=rows: rows.setdefault(i, []).append(np.array(r)),
            row_block=block,
        )
        out[f"by rows of {block} vs whole: logits"] = logits_diff(by_rows, logits)
        out[f"by rows of {block} vs whole: patterns"] = max(
            abs_diff(np.concatenate(parts, axis=2), whole[i]) for i, parts in rows.items()
        )
    texts = [model.tokenizer.decode(tokens[0, 1:].tolist()), "The cat"]
    batch = model.run(texts)
    single = model.run(texts[1])
    n = single.tokens.shape[1]
    out["batched vs single: logits"] = logits_diff(batch.logits[1, :n], single.logits[0])
    out["batched vs single: patterns"] = max(
        abs_diff(batch.attention[i][1, :, :n, :n], single.attention[i][0]) for i in whole
    )
    some: dict = {}
    one = capture_attention(model, tokens, [1], on_pattern=lambda i, p: some.update({i: p}))
    out["layer 1 vs all layers: logits"] = logits_diff(one, logits)
    out["layer 1 vs all layers: patterns"] = abs_diff(some[1], whole[1])
    return out


def measure_scorers(model) -> dict[str, float]:
    """MLX scorer (score_heads) vs the float64 numpy reference (score), every kind."""
    from mlx_headwidget import scores
    from mlx_headwidget.capture import capture_attention
    from mlx_headwidget.detect import random_repeated_tokens

    ids = random_repeated_tokens(model, 50, 2, 42, True)
    whole: dict = {}
    capture_attention(model, ids, on_pattern=lambda i, p: whole.update({i: p}))
    worst = 0.0
    for pattern in whole.values():
        for kind in ("induction", "previous_token", "first_token", "current_token"):
            opts = {"seq_len": 50, "prepend_bos": True} if kind == "induction" else {}
            fast = scores.score_heads(kind, pattern[0], **opts)
            slow = scores.score(kind, np.array(pattern[0]), **opts)
            worst = max(worst, abs_diff(fast, slow))
    return {"MLX scorer vs numpy scorer": worst}


def bundled_results(model) -> dict[str, np.ndarray]:
    """What the notebooks and the widget show of the bundled model, to compare across settings."""
    from mlx_headwidget.analysis import score_grid

    text = "The cat sat on the mat. The cat"
    trace = model.run(text)
    return {
        "logits": np.array(trace.logits),
        "patterns": np.stack([np.array(trace.attention[i]) for i in sorted(trace.attention)]),
        "induction grid": score_grid(model, kind="induction", n_samples=2),
        "previous-token grid": score_grid(model, text, kind="previous_token"),
    }


def child(out: Path, cases: list[str] | None = None) -> None:
    """Measure under this process's BLAS; write differences (JSON) and arrays (npz).
    `cases`: the test cases to measure (default all of `testing.CASES`)."""
    import mlx.core as mx

    from mlx_headwidget import InterpretableModel
    from mlx_headwidget.testing import CASE_TEXT, CASES, MAX_TOKENS, make_checkpoint

    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases or list(CASES):
            arch, kwargs = CASES[case]
            folder = make_checkpoint(arch, Path(tmp) / case, **kwargs)
            # as the tests load them: the 4-bit cases keep their quantized layers
            model = InterpretableModel(str(folder), dequantize="quantize_bits" not in kwargs)
            tokens = model.to_tokens(CASE_TEXT)[:, : MAX_TOKENS.get(case, 10_000)]
            rows[case] = measure_model(model, tokens)
    bundled = InterpretableModel()
    rows["bundled"] = {**measure_model(bundled, bundled.to_tokens(CASE_TEXT))}
    rows["bundled"].update(measure_scorers(bundled))
    np.savez(out.with_suffix(".npz"), **bundled_results(bundled))
    out.write_text(json.dumps({"rows": rows, "device": str(mx.default_device())}))


def run_setting(name: str, folder: Path, cases: list[str] | None = None) -> Path:
    env = dict(os.environ)
    for key, value in SETTINGS[name].items():
        env.pop(key, None) if value is None else env.__setitem__(key, value)
    out = folder / (name.replace(" ", "_") + ".json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(out)]
    cmd += ["--cases", *cases] if cases else []
    subprocess.run(cmd, env=env, check=True, cwd=REPO)
    return out


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def notebook_drift(settings: list[str]) -> str:
    """Re-run each stored notebook under each setting: the largest differences to its outputs."""
    import nbformat
    from nbclient import NotebookClient

    sys.path.insert(0, str(REPO / "notebooks"))
    from nbval_plotly import SANITIZE, merge_streams, number_drift

    patterns = re.findall(r"^regex: (.*)\nreplace: (.*)$", SANITIZE.read_text(), re.MULTILINE)

    def sanitize(value):
        if not isinstance(value, str):
            return value
        for regex, replace in patterns:
            value = re.sub(regex, replace, value)
        return value

    rows = []
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        stored = nbformat.read(path, as_version=4)
        for name in settings:
            env = dict(os.environ)
            for key, value in SETTINGS[name].items():
                env.pop(key, None) if value is None else env.__setitem__(key, value)
            rerun = nbformat.read(path, as_version=4)
            old_env = dict(os.environ)
            os.environ.clear()
            os.environ.update(env)  # the kernel inherits this process's environment
            try:
                NotebookClient(
                    rerun, timeout=600, resources={"metadata": {"path": str(path.parent)}}
                ).execute()
            finally:
                os.environ.clear()
                os.environ.update(old_env)
            worst = {"abs": (0.0, ""), "share": (0.0, ""), "digits": (0.0, "")}
            for i, (a, b) in enumerate(zip(rerun.cells, stored.cells, strict=True)):
                if a.cell_type != "code":
                    continue
                for new, old in zip(
                    merge_streams(a.outputs), merge_streams(b.outputs), strict=False
                ):
                    pairs = [(new.get("text"), old.get("text"))]
                    pairs += [
                        (v, old.get("data", {}).get(k))
                        for k, v in new.get("data", {}).items()
                        if k != WIDGET
                    ]
                    for x, y in pairs:
                        x, y = (sanitize("".join(v) if isinstance(v, list) else v) for v in (x, y))
                        for key, value in zip(worst, number_drift(x, y), strict=True):
                            if value > worst[key][0]:
                                worst[key] = (value, f" (cell {i})")
            rows.append(
                [
                    path.name,
                    name,
                    "{:.1e}{}".format(*worst["abs"]),
                    "{:.2f}{}".format(*worst["share"]),
                    "{:g}{}".format(*worst["digits"]),
                ]
            )
    return table(
        [
            "notebook",
            "setting",
            "figure numbers: largest abs diff",
            "largest share of the plugin's allowance",
            "printed numbers: largest diff in last digits",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", type=Path, help="measure in this process, write JSON here")
    parser.add_argument("--notebooks", action="store_true", help="re-run the notebooks instead")
    parser.add_argument("--settings", nargs="*", default=None, help=f"of {list(SETTINGS)}")
    parser.add_argument("--cases", nargs="*", default=None, help="test models (default all)")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.cases)
        return
    unknown = sorted(set(args.settings or []) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    available = [n for n in SETTINGS if Path(OPENBLAS).is_file() or "OpenBLAS" not in n]
    if set(args.settings or []) - set(available):
        parser.error(f"OpenBLAS is not installed at {OPENBLAS}: settings {available} only")
    names = args.settings or available
    if args.notebooks:
        print("## Notebooks re-run against their stored outputs\n")
        print(notebook_drift(names))
        return
    with tempfile.TemporaryDirectory() as tmp:
        results = {n: json.loads(run_setting(n, Path(tmp), args.cases).read_text()) for n in names}
        arrays = {n: np.load(Path(tmp) / (n.replace(" ", "_") + ".npz")) for n in names}
        first = results[names[0]]["rows"]
        print("## Within one process: two computations of one quantity\n")
        print(f"Random-weight test models ({', '.join(m for m in first if m != 'bundled')})")
        print("and, after the slash, the bundled (trained) model.\n")
        rows = []
        for measure in first["bundled"]:
            cells = []
            for n in names:
                r = results[n]["rows"]
                tiny = max(v.get(measure, 0.0) for m, v in r.items() if m != "bundled")
                cells.append(f"{tiny:.1e} / {r['bundled'].get(measure, 0.0):.1e}")
            rows.append([measure, *cells])
        print(table(["largest difference", *names], rows))
        ref = names[0]
        print(f"\n## Across settings: the bundled model's results against {ref}\n")
        rows = []
        for key in arrays[ref].files:
            diff = logits_diff if key == "logits" else abs_diff
            rows.append([key, *(f"{diff(arrays[n][key], arrays[ref][key]):.1e}" for n in names)])
        print(table(["quantity", *names], rows))


if __name__ == "__main__":
    main()
