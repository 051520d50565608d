"""The phase-change timeline: checkpoints load as the model they hold, and every measure on them is
the library's own computation on that model (score_grid, losses from its logits)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_headwidget import InterpretableModel, plots
from mlx_headwidget.detect import random_repeated_tokens, score_grid
from mlx_headwidget.errors import ModelLoadError
from mlx_headwidget.model import DEFAULT_MODEL_DIR
from mlx_headwidget.testing import make_checkpoint
from mlx_headwidget.timeline import (
    Checkpoint,
    StepSessions,
    Timeline,
    bundled_checkpoints,
    bundled_training_log,
    icl_score,
    load_checkpoint,
    scan_checkpoints,
    second_copy_loss,
    text_windows,
)

pytestmark = pytest.mark.blas  # numbers MLX computes: checked under several BLAS

TRAINING_SCRIPT = Path(__file__).resolve().parents[1] / "training" / "train_default_model.py"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> InterpretableModel:
    return InterpretableModel(str(make_checkpoint("llama", tmp_path_factory.mktemp("base"))))


@pytest.fixture(scope="module")
def checkpoints(base, tmp_path_factory) -> list[Checkpoint]:
    """Two checkpoints: another random init (step 10) and the base's own weights (step 20)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    other = InterpretableModel(str(make_checkpoint("llama", folder / "other", seed=7)))
    out = []
    for step, model in ((20, base), (10, other)):  # out of order on purpose
        path = folder / f"step_{step}.safetensors"
        mx.save_safetensors(str(path), dict(tree_flatten(model.model.parameters())))
        out.append(Checkpoint(step, path))
    return out


def numpy_losses(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Next-token cross-entropy (n, T - 1) in float64."""
    x = logits[:, :-1].astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]


def test_a_checkpoint_loads_as_the_model_it_holds(base, checkpoints):
    loaded = load_checkpoint(base, checkpoints[0])
    assert loaded is not base and loaded.model is not base.model
    mine = dict(tree_flatten(loaded.model.parameters()))
    for name, value in tree_flatten(base.model.parameters()):
        assert mine[name].dtype == mx.float32
        np.testing.assert_array_equal(np.array(mine[name]), np.array(value))  # the same numbers
    tokens = base.to_tokens("The cat sat on the mat. The cat")
    a, b = loaded.run(tokens, capture=False), base.run(tokens, capture=False)
    np.testing.assert_array_equal(np.array(a.logits), np.array(b.logits))  # the same forward


def test_bad_checkpoints_are_refused(base, tmp_path):
    with pytest.raises(ModelLoadError, match="no checkpoint file"):
        load_checkpoint(base, tmp_path / "missing.safetensors")
    wrong = tmp_path / "wrong.safetensors"
    mx.save_safetensors(str(wrong), {"model.embed_tokens.weight": mx.zeros((3, 3))})
    with pytest.raises(ModelLoadError, match="does not hold the weights"):
        load_checkpoint(base, wrong)
    with pytest.raises(ValueError, match="no checkpoints"):
        scan_checkpoints([], base)
    with pytest.raises(ValueError, match="unknown score kind"):
        scan_checkpoints([Checkpoint(1, wrong)], base, kind="inductive")


def test_scan_is_score_grid_and_losses_of_each_checkpoint(base, checkpoints):
    calls = []
    timeline = scan_checkpoints(
        checkpoints, base, n_random_tokens=20, n_samples=2, icl_positions=(10, 40),
        progress=lambda done, total: calls.append((done, total)),
    )  # fmt: skip
    assert calls == [(1, 2), (2, 2)]
    assert timeline.steps.tolist() == [10, 20] and timeline.kind == "induction"
    assert timeline.scores.shape == (2, base.n_layers, base.n_heads)
    windows = text_windows(base, 45, 64)
    for i, checkpoint in enumerate(sorted(checkpoints, key=lambda c: c.step)):
        model = load_checkpoint(base, checkpoint)
        # the same computation as a scan of that model: exactly equal
        grid = score_grid(model, kind="induction", n_random_tokens=20, n_samples=2)
        np.testing.assert_array_equal(timeline.scores[i], grid)
        # the losses recomputed in numpy from the model's own logits
        copies = []
        for seed in (42, 43):
            ids = random_repeated_tokens(model, 20, 2, seed)
            nll = numpy_losses(np.array(model.model(ids)), np.array(ids))
            copies.append(nll[0, 20:].mean())
        assert timeline.second_copy_loss[i] == pytest.approx(np.mean(copies), rel=1e-5)
        nll = numpy_losses(np.array(model.model(windows)), np.array(windows))
        # loss of predicting token t is nll[:, t - 1]; bands of 10 tokens around 40 and 10
        expected = nll[:, 34:44].mean() - nll[:, 4:14].mean()
        assert timeline.icl_score[i] == pytest.approx(expected, abs=1e-4)
    assert timeline.second_copy_loss[0] != timeline.second_copy_loss[1]


def test_step_sessions_load_each_step_once_and_the_last_is_the_model(base, checkpoints):
    sessions = StepSessions(base, checkpoints)
    assert sessions.steps == [10, 20] and sessions.last == 20
    assert sessions.at(20) is sessions.own and sessions.own.model is base  # not loaded again
    early = sessions.at(10)
    assert sessions.at(10) is early  # made on first use, then kept with its cache
    ids = base.to_tokens("The cat sat on the mat. The cat")
    want = load_checkpoint(base, checkpoints[1]).run(ids, capture=False).logits  # step 10
    got = early.model.run(ids, capture=False).logits
    np.testing.assert_array_equal(np.array(got), np.array(want))  # the same weights and forward
    for bad in (15, None, "10", True):
        with pytest.raises(ValueError, match=r"unknown training step .*; the steps are 10, 20$"):
            sessions.at(bad)
    assert StepSessions(base).steps == [] and StepSessions(base).at(None).model is base
    # the `keep` most recently used other steps stay; the model's own always
    three = [Checkpoint(5, checkpoints[0].path), *checkpoints]
    one = StepSessions(base, three, keep=1)
    first = one.at(5)
    assert one.at(10) is not first and one.at(20) is one.own and one.at(5) is not first
    two = StepSessions(base, three, keep=2)
    assert two.at(5) is two.at(5) and two.at(10) is two.at(10)
    again = two.at(5)
    two.at(10)
    assert two.at(5) is again  # 5 and 10 both kept
    with pytest.raises(ValueError, match="keep must be a positive integer, got 0"):
        StepSessions(base, three, keep=0)
    with pytest.raises(ValueError, match="no training checkpoints: step must be None, not 0"):
        StepSessions(base).at(0)
    with pytest.raises(ValueError, match="two checkpoints of the same step"):
        StepSessions(base, [checkpoints[0], Checkpoint(20, checkpoints[1].path)])
    with pytest.raises(TypeError, match="timeline.Checkpoint objects"):
        StepSessions(base, [(10, checkpoints[1].path)])


def test_second_copy_loss_and_icl_score_read_the_right_positions(base):
    ids = random_repeated_tokens(base, 10, 2, 0)
    trace = base.run(ids, capture=False)
    nll = numpy_losses(np.array(trace.logits), np.array(ids))
    # ids: [BOS] x1..x10 x1..x10; the second copy is predicted from position 10 on
    assert second_copy_loss(base, ids, 10) == pytest.approx(nll[0, 10:].mean(), rel=1e-5)
    windows = text_windows(base, 30, 4, seed=3)
    assert windows.shape == (4, 30) and (np.array(windows[:, 0]) == base.bos_token_id).all()
    nll_w = numpy_losses(np.array(base.model(windows)), np.array(windows))
    expected = nll_w[:, 16:22].mean() - nll_w[:, 2:8].mean()
    assert icl_score(base, windows, 6, 20, band=3) == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="need 3 < early"):
        icl_score(base, windows, 3, 20, band=3)
    with pytest.raises(ValueError, match="windows' length"):
        icl_score(base, windows, 6, 28, band=3)


def test_phase_change_is_the_largest_rise_of_the_best_head():
    scores = np.zeros((5, 2, 2))
    scores[:, 1, 0] = [0.0, 0.1, 0.2, 0.9, 0.95]  # jumps between steps 300 and 400
    scores[:, 0, 1] = [0.3, 0.3, 0.5, 0.5, 0.5]  # the best head until step 300
    timeline = Timeline(np.array([100, 200, 300, 400, 500]), scores, np.ones(5), np.ones(5), "x")
    assert timeline.phase_change() == (300, 400)
    with pytest.raises(ValueError, match="at least two"):
        Timeline(np.array([1]), scores[:1], np.ones(1), np.ones(1), "x").phase_change()


def test_phase_change_figure():
    scores = np.random.default_rng(0).random((4, 2, 3))
    scores[-1] = [[0.1, 0.9, 0.2], [0.8, 0.3, 0.7]]
    steps, copy, icl = [10, 20, 30, 40], [5.0, 4.0, 1.0, 0.5], [0.1, 0.0, -0.2, -0.3]
    fig = plots.phase_change(steps, scores, copy, icl, phase=(20, 30), top=2)
    heads = [t for t in fig.data if t.name.startswith("L")]
    assert len(heads) == 6 and len(fig.data) == 8
    assert [t.name for t in heads if t.showlegend] == ["L0H1", "L1H0"]  # the top 2 at step 40
    l1h2 = next(t for t in heads if t.name == "L1H2")
    np.testing.assert_array_equal(np.asarray(l1h2.y, dtype=float), scores[:, 1, 2])
    losses = {t.name: np.asarray(t.y, dtype=float) for t in fig.data[6:]}
    np.testing.assert_array_equal(losses["second-copy loss"], copy)
    np.testing.assert_array_equal(losses["in-context learning score"], icl)
    assert fig.data[6].yaxis == "y2"
    shape = fig.layout.shapes[0]
    assert (shape.x0, shape.x1) == (20, 30)
    with pytest.raises(ValueError, match="3 steps"):
        plots.phase_change(steps[:3], scores, copy[:3], icl[:3])


def test_the_bundled_checkpoints_are_its_training_run():
    """Each shipped checkpoint is an evaluation step of the log of the run that kept it, the bundled
    model itself is the last, and measured as the training script measured it at that step (its own
    probe, seeds and vocabulary), each gives the logged second-copy loss and induction scores, up to
    the float16 rounding of the stored weights (the log measured the float32 weights)."""
    spec = importlib.util.spec_from_file_location("train_default_model", TRAINING_SCRIPT)
    training = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(training)
    log = bundled_training_log()
    settings = log["final"]["settings"]
    found = bundled_checkpoints()
    steps = [c.step for c in found]
    assert steps == sorted(steps) and len(steps) >= 8
    model_log = json.loads((DEFAULT_MODEL_DIR / "training_log.json").read_text())
    assert steps[-1] == model_log["final"]["steps"] and found[-1].path.name == "model.safetensors"
    # the same recipe as the bundled model's run (only where the files and when to stop differ)
    trained = model_log["final"]["settings"]
    recipe = (set(settings) & set(trained)) - {"out", "overwrite", "keep_checkpoints", "stop_after"}
    assert {"seed", "lr", "batch", "warmup_steps", "warmup_vocab", "layers", "heads"} <= recipe
    assert {k: settings[k] for k in recipe} == {k: trained[k] for k in recipe}
    base = InterpretableModel()
    names = {k for k, _ in tree_flatten(base.model.parameters())}
    for checkpoint in found[:-1]:
        assert f"checkpoints/{checkpoint.path.name}" in log["checkpoints"]
        weights = mx.load(str(checkpoint.path))
        assert set(weights) == names and {v.dtype for v in weights.values()} == {mx.float16}
        i = log["steps"].index(checkpoint.step)
        warming = log["phase"][i] == 1 and checkpoint.step <= settings["warmup_steps"]
        vocab = settings["warmup_vocab"] if warming else settings["vocab"]
        model = load_checkpoint(base, checkpoint).model
        ind, _, loss = training.measure_heads(
            model,
            vocab,
            len(training.SPECIAL_TOKENS),
            settings["eval_block"],
            log["final"]["eval_seeds"],
        )
        # measured (OpenBLAS and MLX's BLAS): float16 weights and the log's 4 decimals move the
        # scores by up to 1.4e-4 and the loss by up to 1.4e-3; another run's weights move them
        # by far more (the same steps of the bundled model's own run: 0.16 in the loss at 1150)
        np.testing.assert_allclose(ind, np.array(log["induction"][i], float), atol=1e-3)
        assert loss == pytest.approx(log["repeat_loss"][i], abs=1e-2)
