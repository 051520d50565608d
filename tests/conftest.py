"""Fixtures: tiny random-weight checkpoints, built once per session, and models loaded from them.

A test that takes the `case` fixture runs once per entry of CASES. Helpers tests import live in
`helpers.py`.
"""

from __future__ import annotations

import pytest
from helpers import case_tokens, state

from mlx_headwidget import InterpretableModel
from mlx_headwidget.testing import CASES, make_checkpoint


@pytest.fixture(params=list(CASES))
def case(request) -> str:
    """Each case name in turn; a test's own parametrize of `case` takes precedence."""
    return request.param


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """checkpoint(case) -> folder of that case's checkpoint (built on first use)."""
    built = {}

    def get(case: str):
        if case not in built:
            arch, kwargs = CASES[case]
            built[case] = make_checkpoint(arch, tmp_path_factory.mktemp(case), **kwargs)
        return built[case]

    return get


@pytest.fixture(scope="session")
def models(checkpoint):
    """models(case) -> InterpretableModel of that case (loaded once)."""
    loaded = {}

    def get(case: str) -> InterpretableModel:
        if case not in loaded:
            # the 4-bit cases test quantized layers: keep them (on a CPU the default dequantizes)
            quantized = "quantize_bits" in CASES[case][1]
            loaded[case] = InterpretableModel(str(checkpoint(case)), dequantize=not quantized)
        return loaded[case]

    return get


@pytest.fixture(scope="session")
def llama(models) -> InterpretableModel:
    return models("llama")


@pytest.fixture(scope="session")
def tokens_of():
    return case_tokens


@pytest.fixture(scope="session")
def model_state():
    """model_state(model) -> a snapshot that is equal before and after a trace or an error."""
    return state


@pytest.fixture(scope="session")
def bundled() -> InterpretableModel:
    """The bundled default model (trained: real previous-token and induction heads)."""
    return InterpretableModel()
