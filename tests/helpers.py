"""Helpers the tests import (`from helpers import ...`): the core tests' text and head arithmetic,
and, for the widget, a fake front end that speaks the widget's message protocol and the decoders
of what the kernel sends.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from mlx_headwidget import InterpretableModel
from mlx_headwidget.testing import CASE_TEXT, MAX_TOKENS

TEXT = CASE_TEXT


def case_tokens(model: InterpretableModel, case: str) -> mx.array:
    """(1, T) ids of TEXT for `case`, cut to MAX_TOKENS where forwards are expensive."""
    return model.to_tokens(TEXT)[:, : MAX_TOKENS.get(case, 10_000)]


def state(model: InterpretableModel) -> tuple:
    """Identity of every module and parameter array, and of the shared attention function."""
    modules = [(name, id(m)) for name, m in model.model.named_modules()]
    params = [(name, id(p)) for name, p in tree_flatten(model.model.parameters())]
    modules_sdpa = [
        (name, id(getattr(mod, "scaled_dot_product_attention", None)))
        for name, mod in sorted(sys.modules.items())
        if name.startswith("mlx_lm.models.")
    ]
    return modules, params, modules_sdpa, model._trace is None, model._forward_active


def _values(model: InterpretableModel, attn: nn.Module, x: mx.array) -> mx.array:
    """V (B, n_kv_heads, T, d_head) from the attention input, with the module's own projection."""
    B, T, _ = x.shape
    if "v_proj" in attn:
        v = attn.v_proj(x)
    elif "qkv_proj" in attn:  # phi3: [q | k | v]
        v = attn.qkv_proj(x)[..., (model.n_heads + model.n_kv_heads) * model.d_head :]
    else:  # gpt2: c_attn = [q | k | v]
        v = mx.split(attn.c_attn(x), 3, axis=-1)[2]
    return v.reshape(B, T, model.n_kv_heads, model.d_head).transpose(0, 2, 1, 3)


def head_outputs(model: InterpretableModel, layer: int, pattern, x) -> mx.array:
    """pattern (B, H, T, T) @ V, head h reading KV group h // (H / n_kv): (B, T, H, d_head)."""
    v = _values(model, model.attention(layer), mx.array(x))
    v = mx.repeat(v, model.n_heads // model.n_kv_heads, axis=1)
    return (mx.array(pattern) @ v).transpose(0, 2, 1, 3)


def out_proj(model: InterpretableModel, layer: int) -> nn.Module:
    attn = model.attention(layer)
    return attn.o_proj if "o_proj" in attn else attn.c_proj


# ---- the widget's front end, without a browser ------------------------------------------------
def unpack(value: Any, buffers: list) -> Any:
    """A message from the kernel with each {"shape", "dtype", "buffer"} replaced by the numpy
    array it describes (float16 or float32), as js/widget.js decodes it."""
    if isinstance(value, list):
        return [unpack(v, buffers) for v in value]
    if not isinstance(value, dict):
        return value
    if {"shape", "dtype", "buffer"} <= set(value):
        dtype = {"float16": "<f2", "float32": "<f4"}[value["dtype"]]
        data = np.frombuffer(bytes(buffers[value["buffer"]]), dtype=dtype)
        return data.reshape(value["shape"])
    return {k: unpack(v, buffers) for k, v in value.items()}


class FakeFrontEnd:
    """The browser's end of a widget's comm: sends requests {id, op, args} as custom messages the
    way js/widget.js does, and keeps every message the kernel sends, in order, decoded: custom
    messages as {"custom": content}, state updates as {"state": {trait: value}}. Every view of a
    widget shares its comm, so one FakeFrontEnd also stands for several views."""

    kernel = "test"
    comm_id = "test-comm"

    def __init__(self, widget: Any):
        self.received: list[dict] = []
        self.count = 0
        widget.comm = self  # the widget registers its message handler through on_msg

    def on_msg(self, handler: Callable) -> None:
        self.handler = handler

    def send(self, data: Any = None, buffers: Any = None, **_: Any) -> None:
        buffers = list(buffers or [])
        if data["method"] == "custom":
            self.received.append({"custom": unpack(data["content"], buffers)})
        else:
            self.received.append({"state": data["state"]})

    def close(self, *_: Any, **__: Any) -> None:
        pass

    def custom(self, content: Any) -> None:
        """Send one custom message, as anywidget's model.send does."""
        self.handler({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})

    def request(
        self, changes: dict | None = None, want: Any = (), new_view: bool = False, **extra: Any
    ) -> str:
        """Send a "set" request; returns its id."""
        self.count += 1
        rid = f"test-{self.count}"
        args = {"changes": changes or {}, "want": list(want), "new_view": new_view}
        self.custom({"id": rid, "op": "set", "args": args, **extra})
        return rid

    def about(self, rid: str) -> list[dict]:
        """What the kernel said about request `rid`: progress, parts, then the answer."""
        return [m["custom"] for m in self.received if m.get("custom", {}).get("id") == rid]

    def answer(self, rid: str) -> dict:
        """The answer to `rid` (the one message with "ok" and no "part")."""
        (final,) = [m for m in self.about(rid) if "ok" in m and not m.get("part")]
        return final

    def result(self, rid: str) -> dict:
        """Every part the kernel sent for `rid`, merged (parts, then the answer's)."""
        out: dict = {}
        for m in self.about(rid):
            if m.get("ok"):
                out.update(m["result"])
        return out

    def pushes(self) -> list[dict]:
        return [m["custom"] for m in self.received if "push" in m.get("custom", {})]

    def states(self, key: str) -> list:
        """Every value the kernel sent for trait `key`, in order."""
        return [m["state"][key] for m in self.received if key in m.get("state", {})]
