"""Token pruning as pruning (``serving.pruning: prompt``): the keep ratio drops prompt
tokens (prefill compute, KV, bytes) and costs its published quality loss."""

import numpy as np
import pytest

from coel_env.core.plan import ModelPlan, Plan
from coel_env.core.scenario import LEGACY_FIDELITY, load_scenario
from coel_env.core.world import World
from coel_env.quality import token_keep_loss

OLMOE = "olmoe-1b-7b"


def _first_request(pruning: str, keep: float, batching: str = "offered"):
    """TTFT of the episode's first request (at an idle home, on the server it arrived
    at) and the first epoch's quality loss, on one L4 serving OLMoE with ``keep``."""
    w = World(
        "static",
        {
            "models": [OLMOE], "topology.n_servers": 1, "topology.device_mix": {"l4": 1.0},
            "workload.rate_per_s": 0.2, "serving.pruning": pruning,
            "serving.batching": batching,
        },
    )  # fmt: skip
    w.reset(0)
    mp = w.plan.models[OLMOE]
    plan = Plan({OLMOE: ModelPlan(OLMOE, mp.location, mp.bits, mp.home, mp.host_policy, keep)})
    r = w.step(plan)
    while not r.requests_served:
        r = w.step()
    return float(w.last_ttft_ms[0]), r.quality_loss


def test_the_keep_ratio_prunes_prompt_tokens_and_costs_their_quality():
    t = {k: _first_request("prompt", k) for k in (1.0, 0.5, 0.25)}
    # prefill a0 + a1 * keep * input_tokens: linear in the keep ratio
    (t1, q1), (t5, q5), (t25, q25) = t[1.0], t[0.5], t[0.25]
    assert t1 > t5 > t25
    assert t1 - t5 == pytest.approx(2 * (t5 - t25), rel=1e-9)
    assert q1 == 0.0
    assert q5 == pytest.approx(float(token_keep_loss(0.5)))
    assert q25 == pytest.approx(float(token_keep_loss(0.25)))


def test_bytes_pruning_leaves_an_all_local_model_alone():
    assert _first_request("bytes", 0.5) == _first_request("bytes", 1.0)


def test_continuous_batching_prefills_and_caches_only_the_kept_tokens():
    full, _ = _first_request("prompt", 1.0, "continuous")
    half, q = _first_request("prompt", 0.5, "continuous")
    assert half < full
    assert q == pytest.approx(float(token_keep_loss(0.5)))


def test_the_default_is_prompt_pruning_and_bad_values_are_refused():
    assert load_scenario("default").serving.pruning == "prompt"
    assert load_scenario("default", LEGACY_FIDELITY).serving.pruning == "bytes"
    with pytest.raises(ValueError, match=r"serving.pruning='tokens'.*'prompt', 'bytes'"):
        load_scenario("default", {"serving.pruning": "tokens"})
    assert np.isclose(float(token_keep_loss(1.0)), 0.0)
