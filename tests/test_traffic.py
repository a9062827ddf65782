"""Activation traffic per remote server (``serving.activation_traffic: per_server``)
against hand computations on known placements."""

import numpy as np
import pytest

from coel_env.catalog import get_model
from coel_env.core.plan import GPU, ModelPlan
from coel_env.core.scenario import LEGACY_FIDELITY, load_scenario
from coel_env.core.world import World

OLMOE = "olmoe-1b-7b"
M = get_model(OLMOE)  # 16 MoE layers of 64 experts, top-8, d_model 2048
ACT = M.d_model * 2  # bf16 activations of one token [bytes]


def _world(traffic: str, pruning: str) -> World:
    return World(
        "static",
        {
            "models": [OLMOE], "topology.n_servers": 2, "topology.device_mix": {"l4": 1.0},
            "serving.activation_traffic": traffic, "serving.pruning": pruning,
        },
    )  # fmt: skip


def _plan(remote: np.ndarray, keep: float = 1.0) -> ModelPlan:
    """Home 0 holds every expert except those flagged in ``remote`` [L, E], on server 1."""
    loc = np.zeros((M.n_moe_layers, M.n_experts, 2), np.int8)
    loc[:, :, 0] = np.where(remote, 0, GPU)
    loc[:, :, 1] = np.where(remote, GPU, 0)
    bits = np.full((M.n_moe_layers, M.n_experts), 16, np.int8)
    return ModelPlan(OLMOE, loc, bits, (0,), np.zeros(M.n_moe_layers, np.int8), keep)


def _net_bytes(traffic: str, mp: ModelPlan, n: int, pruning: str = "prompt") -> float:
    """Bytes one decode step of ``n`` sequences at home 0 sends to and from server 1."""
    w = _world(traffic, pruning)
    paths = w.topology.paths
    uniform = np.full((M.n_moe_layers, M.n_experts), 1.0 / M.n_experts)
    step = w.serving.step(
        mp, 0, uniform, n, paths.latency_ms, paths.bottleneck_gbit_s, np.ones(2, bool)
    )
    return step.net_bytes


@pytest.mark.parametrize("n", [1, 16])
def test_a_layer_held_by_one_remote_server_sends_each_token_once(n):
    remote = np.zeros((M.n_moe_layers, M.n_experts), bool)
    remote[0] = True  # all of layer 0 on server 1: every token goes there, once
    per_server = _net_bytes("per_server", _plan(remote), n)
    per_expert = _net_bytes("per_expert", _plan(remote), n)
    assert per_server == pytest.approx(2 * n * ACT, rel=1e-9)  # there and back
    assert per_expert == pytest.approx(2 * n * M.top_k * ACT, rel=1e-9)  # once per expert
    # bytes pruning sends the kept tokens only (keep ratio 0.5): half of each
    half = _net_bytes("per_server", _plan(remote, keep=0.5), n, "bytes")
    assert half == pytest.approx(n * ACT, rel=1e-9)
    # prompt pruning keeps every decode token: a decode step sends them all
    whole = _net_bytes("per_server", _plan(remote, keep=0.5), n, "prompt")
    assert whole == pytest.approx(per_server, rel=1e-9)


def test_one_remote_expert_gets_the_tokens_that_pick_it():
    remote = np.zeros((M.n_moe_layers, M.n_experts), bool)
    remote[3, 5] = True
    remote[7, 0] = True
    n = 4
    # uniform popularity: a token picks each expert with probability k / E; under
    # per_server a token reaches server 1 in a layer when one of its k picks (each on
    # server 1 with probability 1 / E) is there
    p_pick = 1.0 - (1.0 - 1.0 / M.n_experts) ** M.top_k
    per_server = _net_bytes("per_server", _plan(remote), n)
    per_expert = _net_bytes("per_expert", _plan(remote), n)
    assert per_server == pytest.approx(2 * 2 * n * p_pick * ACT, rel=1e-9)
    assert per_expert == pytest.approx(2 * 2 * n * (M.top_k / M.n_experts) * ACT, rel=1e-9)


def test_the_default_is_per_server_traffic_and_bad_values_are_refused():
    assert load_scenario("default").serving.activation_traffic == "per_server"
    assert load_scenario("default", LEGACY_FIDELITY).serving.activation_traffic == "per_expert"
    with pytest.raises(
        ValueError, match=r"serving.activation_traffic='per_token'.*'per_server', 'per_expert'"
    ):
        load_scenario("default", {"serving.activation_traffic": "per_token"})
