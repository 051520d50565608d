"""Sharding checks and the single-process side of `mlx_headwidget.distributed`.

The sharded runs themselves (2 processes started by mlx.launch) are in test_distributed_launch.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest

from mlx_headwidget import InterpretableModel
from mlx_headwidget import distributed as dist
from mlx_headwidget import interventions as iv
from mlx_headwidget.detect import score_grid
from mlx_headwidget.errors import UnsupportedArchitectureError

pytestmark = pytest.mark.blas  # compares a scan of two models (the same computation: exactly)


@pytest.fixture(scope="module")
def bundled() -> InterpretableModel:
    return InterpretableModel()


def test_kv_heads_not_divisible_is_refused_with_the_sizes_that_work(bundled):
    assert (bundled.n_heads, bundled.n_kv_heads) == (8, 2)
    assert dist.shard_sizes(bundled) == [1, 2]
    dist.check_shardable(bundled, 2)
    with pytest.raises(UnsupportedArchitectureError) as err:
        dist.check_shardable(bundled, 4)
    message = str(err.value)
    assert "cannot be split over 4 processes" in message
    assert "8 query heads, 2 KV heads and MLP width 256" in message
    assert message.endswith("Group sizes that work: 1, 2.")


def test_quantized_shares_are_whole_groups(models):
    q4 = models("llama-4bit")  # 4 heads x 16 = 64 inputs of o_proj: one group of 64
    assert dist.quantization_group(q4) == 64 and dist.quantization_group(models("llama")) is None
    assert dist.shard_sizes(q4) == [1]
    with pytest.raises(UnsupportedArchitectureError) as err:
        dist.check_shardable(q4, 2)
    assert str(err.value).endswith(
        "must each divide by the group size, and o_proj's 64 and down_proj's 128 inputs into "
        "whole quantization groups of 64. Group sizes that work: 1."
    )


def test_mlp_width_limits_the_sizes_too():
    facts = SimpleNamespace(n_heads=8, n_kv_heads=4, config={"intermediate_size": 6})
    facts.attention = lambda layer: None  # no quantized projection
    assert dist.shard_sizes(facts) == [1, 2]
    facts.config["intermediate_size"] = 3
    assert dist.shard_sizes(facts) == [1]
    facts.config = {}  # no MLP width known (e.g. a pair without one): heads decide
    assert dist.shard_sizes(facts) == [1, 2, 4]


def test_architecture_without_shard_is_refused_naming_those_with_it(models):
    gpt2 = models("gpt2")
    with pytest.raises(UnsupportedArchitectureError) as err:
        dist.check_shardable(gpt2, 2)
    message = str(err.value)
    assert "'gpt2' model cannot be sharded" in message
    listed = message.split("shard(): ")[1].split(".")[0].split(", ")
    assert {"llama", "qwen2", "qwen3"} <= set(listed) and "gpt2" not in listed


def test_a_model_sharded_already_is_refused(checkpoint):
    model, tokenizer = mlx_lm.load(str(checkpoint("llama")))
    for layer in model.layers:  # what mlx-lm's shard() does to each attention for 2 processes
        layer.self_attn.n_heads //= 2
        layer.self_attn.n_kv_heads //= 2
    with pytest.raises(UnsupportedArchitectureError, match="it looks sharded already"):
        dist.check_shardable(InterpretableModel((model, tokenizer)), 2)


def test_one_process_is_the_plain_model(bundled):
    assert dist.launched_group() is None  # this process was not started by mlx.launch
    alone = InterpretableModel(distributed=True)  # a group of 1: nothing to shard
    assert alone.group is None and alone.rank == 0 and alone.local_heads == range(8)
    assert "sharded" not in repr(alone)
    np.testing.assert_array_equal(score_grid(alone), score_grid(bundled))
    grid = np.arange(6.0).reshape(2, 3)
    assert dist.gather_heads(alone, grid) is grid
    with pytest.raises(TypeError, match="mx.distributed.Group"):
        dist.group_of(False, group="two processes")
    assert dist.group_of(False, mx.distributed.init()) is None


def test_head_intervention_on_a_share_of_the_heads():
    chosen = iv.zero_heads([1, 5, 6])
    assert chosen.on(range(0, 4), 8) == iv.zero_heads([1])
    assert chosen.on(range(4, 8), 8) == iv.zero_heads([1, 2])
    assert chosen.on(range(8), 8) == chosen
    assert iv.mean_heads([7]).on(range(4, 8), 8) == iv.mean_heads([3])
    assert iv.mean_heads([7]).on(range(0, 4), 8).heads == ()
    double = iv.on_heads(lambda h: 2 * h)  # no share of it is defined: refused when sharded
    assert double.on(range(8), 8) is double
    with pytest.raises(UnsupportedArchitectureError, match="cannot run on a model sharded"):
        double.on(range(4, 8), 8)


def test_head_of_a_plain_trace(bundled):
    with bundled.trace("The cat sat on the mat", capture=[2]) as trace:
        pass
    one = dist.head_of(trace.attention, 2, 3)
    np.testing.assert_array_equal(np.array(one), np.array(trace.attention[2][:, 3]))
