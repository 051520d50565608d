"""The induction phase change across training: every head scored on checkpoints of one run.

Olsson et al. (2022) found that induction heads form in a sudden phase change early in training,
seen at the same steps as a jump of the induction scores, a drop of the loss on the second copy
of a repeated sequence, and a rise of in-context learning. `scan_checkpoints` measures the three on
each checkpoint:

    scores[c]            score_grid(kind) of checkpoint c: (n_layers, n_heads), mean over seeds
    second_copy_loss[c]  mean next-token loss on the second copy of [BOS] + x + x, x uniform random
                         tokens, |x| = n_random_tokens (the sequences induction is scored on)
    icl_score[c]         mean loss near token `late` minus near token `early` (10-token bands) of
                         64 English text windows (Python's documentation, `pydoc_data.topics`).
                         The paper's in-context learning score is loss(500th token) - loss(50th);
                         the bundled model was trained on 128-token sequences, so the default is
                         100 vs 10. Negative: later tokens are predicted better, from the context.

The bundled model ships checkpoints of its own training run (`bundled_checkpoints`), kept by
`training/train_default_model.py --keep-checkpoints`, with that run's log
(`bundled_training_log`), so the timeline works offline. `StepSessions` gives the widget one
`HeadSession` per step, so its grid, patterns and ablations at a step come from that step's weights.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_map

from .analysis import token_losses
from .detect import GRID_KINDS, random_repeated_tokens, score_grid
from .errors import ModelLoadError, is_int
from .model import DEFAULT_MODEL_DIR, InterpretableModel
from .progress import Progress, ticker
from .session import HeadSession

CHECKPOINTS_DIR = DEFAULT_MODEL_DIR / "checkpoints"


@dataclass(frozen=True)
class Checkpoint:
    """The weights of one training step: a safetensors file of the model's parameters."""

    step: int
    path: Path


@dataclass
class Timeline:
    """What `scan_checkpoints` measured. steps (C,); scores (C, n_layers, n_heads);
    second_copy_loss (C,); icl_score (C,); kind: the score kind of `scores`."""

    steps: np.ndarray
    scores: np.ndarray
    second_copy_loss: np.ndarray
    icl_score: np.ndarray
    kind: str

    def phase_change(self) -> tuple[int, int]:
        """(step before, step after): the interval between consecutive checkpoints over which the
        best head's score rises the most, where the data puts the phase change."""
        if len(self.steps) < 2:
            raise ValueError("a phase change needs at least two checkpoints")
        best = np.nanmax(self.scores.reshape(len(self.steps), -1), axis=1)
        i = int(np.argmax(np.diff(best)))
        return int(self.steps[i]), int(self.steps[i + 1])


def bundled_training_log() -> dict:
    """training_log.json of the run that made the bundled checkpoints (the first steps of the
    bundled model's training, repeated with `--keep-checkpoints`): an evaluation every 50 steps."""
    return json.loads((CHECKPOINTS_DIR / "training_log.json").read_text())


def bundled_checkpoints() -> list[Checkpoint]:
    """Checkpoints of the bundled model's training run, by step, the bundled model itself last
    (its final step, from training_log.json)."""
    log = json.loads((DEFAULT_MODEL_DIR / "training_log.json").read_text())
    found = [
        Checkpoint(int(p.stem.removeprefix("step_")), p)
        for p in sorted(CHECKPOINTS_DIR.glob("step_*.safetensors"))
    ]
    final = Checkpoint(int(log["final"]["steps"]), DEFAULT_MODEL_DIR / "model.safetensors")
    return sorted(found, key=lambda c: c.step) + [final]


def load_checkpoint(base: InterpretableModel, checkpoint: Checkpoint | str | Path):
    """A new InterpretableModel: `base`'s architecture and tokenizer with the checkpoint's
    weights, in float32 (`base` is not changed)."""
    path = Path(checkpoint.path if isinstance(checkpoint, Checkpoint) else checkpoint)
    if not path.is_file():
        raise ModelLoadError(f"no checkpoint file {str(path)!r}")
    model = type(base.model)(base.model.args)
    try:
        model.load_weights(str(path))
    except ValueError as err:
        raise ModelLoadError(
            f"{path} does not hold the weights of this {base.architecture!r} model: {err}"
        ) from None
    model.update(tree_map(lambda p: p.astype(mx.float32), model.parameters()))
    mx.eval(model.parameters())
    return InterpretableModel((model, base.tokenizer))


class StepSessions:
    """One `HeadSession` per training step of `model`, each made on first use from its checkpoint
    (`load_checkpoint`) and kept with its cache; no checkpoints: the model's own session alone.

    The last step is `model` itself (as in `bundled_checkpoints`, whose last checkpoint is the
    bundled model), so its checkpoint is not loaded again and its session always stays. Each
    other step visited holds its weights in float32 and its own cache: the `keep` most recently
    used of them stay, an older one is loaded again when visited again.
    """

    def __init__(
        self, model: InterpretableModel, checkpoints: Sequence[Checkpoint] = (), keep: int = 4
    ):
        if not (is_int(keep) and keep >= 1):
            raise ValueError(f"keep must be a positive integer, got {keep!r}")
        for c in checkpoints:
            if not isinstance(c, Checkpoint):
                raise TypeError(f"checkpoints must be timeline.Checkpoint objects, got {c!r:.80}")
        ordered = sorted(checkpoints, key=lambda c: c.step)
        self.model = model
        self.steps = [c.step for c in ordered]
        if len(set(self.steps)) < len(self.steps):
            raise ValueError(f"two checkpoints of the same step among steps {self.steps}")
        self._checkpoints = {c.step: c for c in ordered}
        self.own = HeadSession(model)  # the model itself: the last step
        self.keep = int(keep)
        self._visited: OrderedDict[int, HeadSession] = OrderedDict()  # other steps, oldest first
        self._lock = threading.Lock()

    @property
    def last(self) -> int | None:
        """The model's own step (the last), or None without checkpoints."""
        return self.steps[-1] if self.steps else None

    def check(self, step: object) -> int | None:
        """`step` as an int, or ValueError naming the valid steps (None alone without any)."""
        if not self.steps:
            if step is None:
                return None
            raise ValueError(
                f"this model has no training checkpoints: step must be None, not {step!r}"
            )
        if not (is_int(step) and int(step) in self._checkpoints):
            steps = ", ".join(map(str, self.steps))
            raise ValueError(f"unknown training step {step!r:.40}; the steps are {steps}")
        return int(step)

    def at(self, step: object) -> HeadSession:
        """The session of training step `step` (checked as `check` does)."""
        step = self.check(step)
        if step == self.last:
            return self.own
        with self._lock:
            if step in self._visited:
                self._visited.move_to_end(step)
            else:
                weights = load_checkpoint(self.model, self._checkpoints[step])
                self._visited[step] = HeadSession(weights)
                while len(self._visited) > self.keep:
                    self._visited.popitem(last=False)
            return self._visited[step]


def text_windows(model: InterpretableModel, length: int, n: int, seed: int = 0) -> mx.array:
    """(n, length) token ids: [BOS] (if the model has one) + windows of Python's documentation
    (`pydoc_data.topics`, about 40,000 characters of it), drawn at random starts with a numpy
    Generator seeded by `seed`."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))[:40_000]
    ids = []
    for paragraph in text.split("\n\n"):  # by paragraphs: tokenizers warn about long texts
        ids += [i for i in model.tokenizer.encode(paragraph + "\n\n") if i != model.bos_token_id]
    bos = [] if model.bos_token_id is None else [model.bos_token_id]
    width = length - len(bos)
    if len(ids) <= width:
        raise ValueError(f"the text has {len(ids)} tokens, too few for windows of {length}")
    starts = np.random.default_rng(seed).integers(0, len(ids) - width, size=n)
    return mx.array([bos + ids[s : s + width] for s in starts], dtype=mx.int32)


def icl_score(
    model: InterpretableModel, windows: mx.array, early: int, late: int, band: int = 5
) -> float:
    """Mean next-token loss at tokens late - band .. late + band - 1 minus at early - band ..
    early + band - 1, over text `windows` (n, T) (see `text_windows` and the module docstring);
    token 0 is the first of a window. The bands average out the noise of single positions."""
    T = windows.shape[1]
    if not (band < early and early + band <= late - band and late + band <= T):
        raise ValueError(
            f"need {band} < early, early + {band} <= late - {band} and late + {band} <= {T} "
            f"(the windows' length), got early={early}, late={late}"
        )
    trace = model.run(windows, capture=False)
    rows = range(windows.shape[0])
    losses = np.stack([token_losses(trace.logits[i : i + 1], windows[i : i + 1]) for i in rows])
    # losses[:, t - 1] is the loss of predicting token t
    at_late = losses[:, late - band - 1 : late + band - 1].mean()
    return float(at_late - losses[:, early - band - 1 : early + band - 1].mean())


def second_copy_loss(model: InterpretableModel, tokens: mx.array, n_random_tokens: int) -> float:
    """Mean next-token loss over the second copy of [BOS] + x + x (`tokens`, (1, 1 + 2n))."""
    trace = model.run(tokens, capture=False)
    losses = token_losses(trace.logits, tokens)  # losses[t]: predicting token t + 1
    return float(losses[n_random_tokens:].mean())


def scan_checkpoints(
    checkpoints: Sequence[Checkpoint],
    base: InterpretableModel | None = None,
    *,
    kind: str = "induction",
    n_random_tokens: int = 50,
    n_samples: int = 2,
    seed: int = 42,
    icl_positions: tuple[int, int] = (10, 100),
    progress: Progress = False,
) -> Timeline:
    """Score every head of every checkpoint (see the module docstring).

    `base`: the model whose architecture and tokenizer the checkpoints share (None: the bundled
    model). `kind`: a score_grid kind; induction and its second-copy loss use [BOS] + x + x with
    |x| = n_random_tokens, for seeds seed .. seed + n_samples - 1. Other kinds are scored on the
    first sample's tokens. `progress`: True for a tqdm bar over checkpoints, or a callable
    progress(done, total).
    """
    if kind not in GRID_KINDS:
        raise ValueError(f"unknown score kind {kind!r}; choose one of {', '.join(GRID_KINDS)}")
    if not checkpoints:
        raise ValueError("no checkpoints to scan")
    base = base if base is not None else InterpretableModel()
    bos = base.bos_token_id is not None
    samples = [
        random_repeated_tokens(base, n_random_tokens, 2, seed + i, bos) for i in range(n_samples)
    ]
    early, late = icl_positions
    windows = text_windows(base, late + 5, 64)
    steps, grids, copy_losses, icl = [], [], [], []
    tick, close = ticker(progress, len(checkpoints), "checkpoints")
    try:
        for checkpoint in sorted(checkpoints, key=lambda c: c.step):
            model = load_checkpoint(base, checkpoint)
            if kind == "induction":
                grid = score_grid(
                    model, kind=kind, n_random_tokens=n_random_tokens, seed=seed,
                    n_samples=n_samples,
                )  # fmt: skip
            else:
                grid = score_grid(model, samples[0], kind=kind)
            steps.append(checkpoint.step)
            grids.append(grid)
            copy_losses.append(
                np.mean([second_copy_loss(model, t, n_random_tokens) for t in samples])
            )
            icl.append(icl_score(model, windows, early, late))
            tick()
    finally:
        close()
    return Timeline(np.array(steps), np.stack(grids), np.array(copy_losses), np.array(icl), kind)
