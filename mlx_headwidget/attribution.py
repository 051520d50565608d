"""Direct logit attribution: each head's own term in the logit (difference) at the last position.

In a pre-norm transformer the final residual at the last position is a sum of what every part wrote,

    x_final = x_0 + sum_l (sum_h W_O[l, h] z[l, h] + b_O[l] + mlp_l)

with x_0 the input of the first layer (token and position embeddings), z[l, h] (d_head,) head h's
output before the output projection, W_O[l, h] (d_model, d_head) its columns of the output
projection, b_O[l] that projection's bias and mlp_l the MLP's output. With the final norm's scale s
frozen at its value in the run, the logit difference is linear in the residual:

    RMSNorm:    n(x) = g * x / s,                  s = sqrt(mean(x_final^2) + eps)
    LayerNorm:  n(x) = g * (x - mean(x)) / s + b,  s = sqrt(var(x_final) + eps)
    logit(answer) - logit(distractor) = u . n(x_final) + u_b,   u = W_U[answer] - W_U[distractor]

so each term c of the sum contributes u . (g * P(c)) / s (P = identity, or the mean subtraction of a
LayerNorm, which is linear), and u . b + u_b (the final norm's and the unembedding's biases) is a
constant term. Without a distractor, u = W_U[answer]. The terms add up to the model's own logit
(difference): `LogitAttribution.total()`. Refused: models whose residual stream is not that sum
(norms after attention or MLP outputs, as in gemma2), whose logits are not the unembedding of the
final norm's output (soft-capped as in gemma2, or scaled), or whose final norm is neither
`nn.RMSNorm` nor `nn.LayerNorm`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from . import interventions as iv
from .capture import capture_attention
from .errors import InputError, UnsupportedArchitectureError
from .tokens import prepare_inputs, single_token
from .weights import bias, dense, unembedding

_FINAL_NORMS = ("norm", "ln_f", "final_layernorm", "norm_f")
_MLPS = ("mlp", "feed_forward")
RESIDUAL_RTOL = 1e-3
"""The recorded final residual and the sum of its recorded terms (float32 sums in another order)
agree within 1.8e-7 of its norm on the test models; gemma2, whose blocks normalise what they add,
misses by more than its norm."""


@dataclass
class LogitAttribution:
    """The direct terms of the logit (difference) at the last position; `total()` adds them.

    heads (n_layers, n_heads), attention_bias (n_layers,) (the output projections' biases), mlps
    (n_layers,), embeddings (the first layer's input), constant (the final norm's and the
    unembedding's biases) and logit, the model's own logit (difference), float64.
    """

    heads: np.ndarray
    attention_bias: np.ndarray
    mlps: np.ndarray
    embeddings: float
    constant: float
    logit: float

    def total(self) -> float:
        """Sum of every term: equals `logit` up to float rounding."""
        parts = (self.heads.sum(), self.attention_bias.sum(), self.mlps.sum())
        return float(sum(parts) + self.embeddings + self.constant)


def _path_of(model, module: nn.Module) -> str:
    for name, m in model.model.named_modules():
        if m is module:
            return f"model.{name}"
    raise UnsupportedArchitectureError(f"{type(module).__name__} is not a module of this model")


def _child(parent: Any, names: tuple[str, ...], what: str, model) -> nn.Module:
    for name in names:
        found = getattr(parent, name, None)
        if isinstance(found, nn.Module):
            return found
    raise UnsupportedArchitectureError(
        f"cannot find the {what} of this {model.architecture!r} model (looked for "
        f"{', '.join(names)} on {type(parent).__name__})"
    )


def _refuse_softcap(model) -> None:
    cap = model.config.get("final_logit_softcapping") or getattr(
        model.model, "final_logit_softcapping", None
    )
    if cap:
        raise UnsupportedArchitectureError(
            f"this {model.architecture!r} model soft-caps its logits (cap * tanh(logits / cap), "
            f"cap {cap}): a logit is not a sum of direct terms, so direct logit attribution "
            "refuses it"
        )


def _record(model, ids: mx.array) -> tuple[dict[str, Any], mx.array]:
    """One forward recording the last position's first-layer input, final residual, every
    layer's heads z (n_heads, d_head) and MLP output: (records, logits)."""
    seen: dict[str, Any] = {}

    def keep(key: str):
        def f(x: mx.array) -> mx.array:
            seen[key] = x[0, -1]
            return x

        return f

    norm = _child(model.model.model, _FINAL_NORMS, "final norm", model)
    ivs: dict[str, Any] = {
        _path_of(model, model.layers[0]): iv.on_input(keep("embeddings")),
        _path_of(model, norm): iv.on_input(keep("final")),
    }
    for layer in range(model.n_layers):
        ivs[f"model.model.layers.{layer}.self_attn"] = iv.on_heads(keep(f"z{layer}"))
        mlp = _child(model.layers[layer], _MLPS, f"MLP of layer {layer}", model)
        ivs[_path_of(model, mlp)] = keep(f"mlp{layer}")
    logits = capture_attention(model, ids, layers=[], interventions=ivs)
    seen = {k: np.array(v.astype(mx.float32), dtype=np.float64) for k, v in seen.items()}
    seen["norm"] = norm
    return seen, logits


def _terms(model, seen: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What each part wrote into the last position's residual: heads W_O[l, h] z[l, h]
    (n_layers, n_heads, d_model), output projection biases and MLP outputs (n_layers, d_model);
    refused unless embeddings + all of them make the final residual."""
    L, H = model.n_layers, model.n_heads
    written, biases = [], []
    for layer in range(L):
        attn = model.attention(layer)
        out_proj = attn[iv.out_projection_name(attn)]
        w_o = dense(out_proj).astype(np.float64).reshape(-1, H, model.d_head)  # (d, H, D)
        written.append(np.einsum("dhk,hk->hd", w_o, seen[f"z{layer}"]))
        b_o = bias(out_proj)
        biases.append(np.zeros(w_o.shape[0]) if b_o is None else b_o.astype(np.float64))
    written, biases = np.stack(written), np.stack(biases)
    mlps = np.stack([seen[f"mlp{layer}"] for layer in range(L)])
    x_final = seen["final"]
    miss = np.linalg.norm(
        seen["embeddings"] + written.sum((0, 1)) + (biases + mlps).sum(0) - x_final
    )
    if miss > RESIDUAL_RTOL * max(1.0, np.linalg.norm(x_final)):
        raise UnsupportedArchitectureError(
            f"the final residual of this {model.architecture!r} model is not embeddings + heads "
            f"+ attention biases + MLP outputs (off by {miss:.3g}, its norm is "
            f"{np.linalg.norm(x_final):.3g}): its blocks do more than add them (e.g. norms after "
            "attention, as in gemma2)"
        )
    return written, biases, mlps


def _readout(model, norm: nn.Module, x_final: np.ndarray, rows: list[int]):
    """(read (d_model,), center, constant): a residual term c adds read . P(c) to the logit
    (difference), P centring when `center`; constant = the final norm's and unembedding's biases."""
    unembed = unembedding(model)
    w_u = dense(unembed, rows).astype(np.float64)  # (1 or 2, d_model)
    b_u = bias(unembed, rows)
    u = w_u[0] - (w_u[1] if len(rows) == 2 else 0.0)
    constant = 0.0 if b_u is None else float(b_u[0] - (b_u[1] if len(rows) == 2 else 0.0))
    if isinstance(norm, nn.RMSNorm):
        center, g, b = False, norm.weight, None
        s = np.sqrt(np.mean(x_final**2) + norm.eps)
    elif isinstance(norm, nn.LayerNorm):
        center, g, b = True, norm.get("weight"), norm.get("bias")
        s = np.sqrt(np.var(x_final) + norm.eps)
    else:
        raise UnsupportedArchitectureError(
            f"the final norm is {type(norm).__module__}.{type(norm).__name__}; direct logit "
            "attribution knows mlx.nn.RMSNorm and mlx.nn.LayerNorm"
        )
    g = np.ones_like(u) if g is None else np.array(g.astype(mx.float32), dtype=np.float64)
    if b is not None:
        constant += float(u @ np.array(b.astype(mx.float32), dtype=np.float64))
    return u * g / s, center, constant


def logit_attribution(
    model, text: Any, answer: Any, distractor: Any | None = None
) -> LogitAttribution:
    """Every direct term of logit(answer) (- logit(distractor)) at the last position of `text`
    (module docstring for the formulas): a `LogitAttribution` whose terms add up to the model's
    own value, `.logit`.

    `text`: a text or ids of one sequence (as `trace` takes them); `answer`, `distractor`: token ids
    or one-token texts.
    """
    _refuse_softcap(model)
    ids = prepare_inputs(model, text)[0]
    if ids.shape[0] != 1:
        raise InputError(f"text must be one sequence, got a batch of {ids.shape[0]}")
    rows = [single_token(model, answer, "answer")]
    if distractor is not None:
        rows.append(single_token(model, distractor, "distractor"))
        if rows[1] == rows[0]:
            raise InputError(f"answer and distractor are the same token ({rows[0]})")
    seen, logits = _record(model, ids)
    last = np.array(logits[0, -1], dtype=np.float64)
    logit = last[rows[0]] - (last[rows[1]] if len(rows) == 2 else 0.0)

    written, biases, mlps = _terms(model, seen)
    read, center, constant = _readout(model, seen["norm"], seen["final"], rows)

    def direct(c: np.ndarray) -> np.ndarray:
        """Contribution of residual vectors c (..., d_model): read . P(c)."""
        return (c - c.mean(axis=-1, keepdims=True) if center else c) @ read

    rebuilt = float(direct(seen["final"])) + constant
    if abs(rebuilt - logit) > RESIDUAL_RTOL * max(1.0, abs(logit)):
        raise UnsupportedArchitectureError(
            f"the logits of this {model.architecture!r} model are not the unembedding of its final "
            f"norm's output ({rebuilt:.6g} rebuilt against {logit:.6g}): scaled or capped logits "
            "are not supported"
        )
    return LogitAttribution(
        direct(written),
        direct(biases),
        direct(mlps),
        float(direct(seen["embeddings"])),
        constant,
        float(logit),
    )


def head_logit_attribution(
    model, text: Any, answer: Any, distractor: Any | None = None
) -> np.ndarray:
    """Each head's direct contribution to logit(answer) (- logit(distractor)) at the last position
    of `text`: (n_layers, n_heads) float64,

        dla[l, h] = u . (g * P(W_O[l, h] z[l, h])) / s

    through the output projection, the final norm with its scale s frozen as computed in the run
    (P: the mean subtraction of a LayerNorm, identity for an RMSNorm) and the unembedding,
    u = W_U[answer] (- W_U[distractor]). The other direct terms: `logit_attribution`.
    """
    return logit_attribution(model, text, answer, distractor).heads
