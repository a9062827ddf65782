"""Continuous batching (``serving.batching: continuous``): the kernel against hand
computations, the batch and KV limits, timeouts, and a one-server world under rising load."""

import numpy as np
import pytest

from coel_env.catalog import get_model
from coel_env.core.batching import batch_points, kv_bytes_per_token
from coel_env.core.kernels.batching import DECODE, WAIT, batch_kernel
from coel_env.core.scenario import LEGACY_FIDELITY, load_scenario
from coel_env.core.world import World

A0, A1 = 10.0, 0.1  # prefill line [ms], [ms per token]
DEC = np.array([[5.0, 8.0, 12.0]])  # decode step of 1, 2, 4 sequences [ms]


def _one_home(arr, prompt, out, *, kv_cap=1e9, max_batch=4, step_tokens=4096, limit_ms=1e9,
              avail=1.0, kv=None, carried=0):  # fmt: skip
    """Run the kernel for one home and one model; ``carried`` leading sequences are
    carried ones, already running."""
    k = len(arr)
    kv = np.asarray(prompt, float) + np.asarray(out) if kv is None else np.asarray(kv, float)
    state = np.array([DECODE] * carried + [WAIT] * (k - carried), np.int8)
    req = np.array([-1] * carried + list(range(k - carried)), np.int64)
    return batch_kernel(
        np.zeros(k, np.int64), np.zeros(k, np.int64), np.asarray(arr, float),
        np.where(state == DECODE, 0.0, np.asarray(prompt, float)),
        np.maximum(np.asarray(out, np.int64) - 1, 0), state, kv, req, np.array([0, k]),
        np.zeros(1), np.array([A0]), np.array([A1]), DEC, np.array([kv_cap]),
        np.array([avail]), max_batch, float(step_tokens), limit_ms, 10_000.0, k - carried,
    )  # fmt: skip


def test_two_requests_join_and_leave_the_batch_at_step_boundaries():
    # r0 at 0 ms: prompt 100, 11 tokens; r1 at 50 ms: prompt 100, 3 tokens.
    status, first, done, dropped, work, w_dec, dec_tok, *_ = _one_home(
        [0.0, 50.0], [100, 100], [11, 3]
    )
    # r0: prefill 10 + 0.1 * 100 = 20 ms (first token), then single decode steps of 5 ms
    # up to r1's arrival at 50 ms (6 steps, 4 tokens left); r1 joins: one pass over its
    # prompt and r0's token, max(5, 10 + 0.1 * 101) = 20.1 ms; two steps of 8 ms (r1
    # done at 86.1); one step of 5 ms (r0 done at 91.1).
    assert status.tolist() == [1, 1]
    assert first == pytest.approx([20.0, 70.1])
    assert done == pytest.approx([91.1, 86.1])
    assert work[0] == pytest.approx(91.1)
    assert w_dec[0] == pytest.approx([8.0, 2.0, 0.0])  # steps at batch 1 and 2
    assert dec_tok[0] == pytest.approx(12.0)
    assert dropped[0] == 0


def test_a_long_prompt_is_prefilled_in_chunks_of_the_step_budget():
    _, first, done, *_ = _one_home([0.0], [300], [1], step_tokens=128)
    # chunks of 128, 128 and 44 tokens: 3 * 10 + 0.1 * 300 = 60 ms
    assert first == pytest.approx([60.0])
    assert done == pytest.approx([60.0])


def test_the_batch_limit_and_the_kv_pool_make_later_requests_wait():
    free = _one_home([0.0, 0.0], [100, 100], [3, 3])[1]
    one_slot = _one_home([0.0, 0.0], [100, 100], [3, 3], max_batch=1)[1]
    small_kv = _one_home([0.0, 0.0], [100, 100], [3, 3], kv_cap=150.0)[1]
    # together: one pass over both prompts (10 + 0.1 * 200 = 30 ms)
    assert free == pytest.approx([30.0, 30.0])
    # one at a time: r1 joins when r0 leaves (20 + 2 * 5 = 30 ms), then its prefill
    for first in (one_slot, small_kv):
        assert first == pytest.approx([20.0, 50.0])


def test_a_request_whose_kv_never_fits_or_that_waits_too_long_is_dropped():
    status, *_ = _one_home([0.0], [100], [3], kv_cap=50.0)
    assert status.tolist() == [2]
    # r1 waits behind r0 (one slot) for 20 + 99 * 5 = 515 ms > 100 ms
    status, _, _, dropped, *_ = _one_home([0.0, 0.0], [100, 100], [100, 3], max_batch=1,
                                          limit_ms=100.0)  # fmt: skip
    assert status.tolist() == [1, 2]
    assert dropped[0] == 1


def test_a_carried_sequence_takes_its_slot_and_the_epoch_end_is_carried_on():
    # a carried sequence with 9 tokens left holds the only slot: r0 waits 9 * 5 = 45 ms
    _, first, *_ = _one_home([-100.0, 0.0], [0, 100], [10, 2], max_batch=1, carried=1)
    assert first == pytest.approx([45.0 + 20.0])
    # a request still decoding at the epoch's end (10 s) is carried, tokens left counted
    *_, carry, free_next = _one_home([9_990.0], [100], [101])
    home, model, arr, prompt, left, state, kv = carry
    assert state.tolist() == [DECODE]
    assert arr.tolist() == [-10.0]
    # its prefill step ends at 10,010 ms, the first boundary >= 10 s: 100 tokens to go
    assert left.tolist() == [100]
    assert free_next[0] == pytest.approx(10.0)


def test_avail_slows_every_step_and_none_drops_arrivals():
    _, first, done, *_ = _one_home([0.0], [100], [2], avail=0.5)
    assert first == pytest.approx([40.0])
    assert done == pytest.approx([50.0])
    status, *_ = _one_home([0.0], [100], [2], avail=0.0)
    assert status.tolist() == [2]


def test_kv_bytes_from_the_catalog_attention_shapes_and_batch_points():
    olmoe = get_model("olmoe-1b-7b")  # 16 layers, 16 KV heads of 128: K and V in bf16
    assert kv_bytes_per_token(olmoe) == 16 * 2 * 16 * 128 * 2
    ds = get_model("deepseek-v2-lite")  # MLA: latent 512 + RoPE key 64 per layer
    assert kv_bytes_per_token(ds) == ds.n_layers * (512 + 64) * 2
    assert batch_points(32) == (1, 2, 4, 8, 16, 32)
    assert batch_points(20) == (1, 2, 4, 8, 16, 32)
    assert batch_points(1) == (1,)


def _one_server(rate: float, **over) -> tuple[float, float, int, int]:
    """Output tokens/s, p50 latency [ms], arrived and dropped over 30 epochs of one L4
    serving OLMoE with nothing else going on, its other fidelity keys at their legacy
    values (eager PyTorch kernels: the loads below are sized to their limit)."""
    w = World(
        "static",
        {
            **LEGACY_FIDELITY, "models": ["olmoe-1b-7b"], "topology.n_servers": 1,
            "topology.device_mix": {"l4": 1.0}, "workload.rate_per_s": rate,
            "serving.batching": "continuous", **over,
        },
    )  # fmt: skip
    w.reset(0)
    tok, lat, arrived, dropped = 0.0, [], 0, 0
    for _ in range(30):
        r = w.step()
        tok += r.throughput_tok_s / 30
        lat.append(w.last_latency_ms)
        arrived += r.requests_arrived
        dropped += r.requests_dropped
        assert r.requests_served + r.requests_dropped == r.requests_arrived
    return tok, float(np.median(np.concatenate(lat))), arrived, dropped


def test_served_tokens_per_server_rise_with_load_until_the_limit_then_requests_queue():
    curve = [_one_server(rate) for rate in (0.05, 0.2, 0.8, 1.6, 3.2)]
    tok = [c[0] for c in curve]
    lat = [c[1] for c in curve]
    # below the limit every request is served and the tokens served grow with the load
    for _, _, arrived, dropped in curve[:3]:
        assert dropped == 0 and arrived > 0
    assert tok[0] < tok[1] < tok[2]
    assert tok[2] > 3 * tok[0]
    # past it the tokens served level off while requests queue (latency) and are dropped
    assert tok[4] == pytest.approx(tok[3], rel=0.1)
    assert tok[3] < 1.5 * tok[2]
    assert lat[3] > 1.5 * lat[2] and lat[4] >= 0.9 * lat[3]
    assert curve[3][3] > 0.2 * curve[3][2] and curve[4][3] > 0.5 * curve[4][2]
    # a batch limit of one sequence serves far fewer tokens at the same load
    assert _one_server(1.6, **{"serving.max_batch": 1})[0] < 0.6 * tok[3]


def test_continuous_batching_conserves_requests_and_is_deterministic():
    def run(seed):
        w = World("large", {"serving.batching": "continuous"})
        w.reset(seed)
        out = []
        for _ in range(8):
            r = w.step()
            assert r.requests_served + r.requests_dropped == r.requests_arrived
            assert r.dropped_no_model + r.dropped_overload == r.requests_dropped
            out.append(r.as_dict())
        return out

    a = run(3)
    assert a == run(3)
    assert sum(r["requests_served"] for r in a) > 0


def test_the_default_is_continuous_batching_and_bad_values_are_refused():
    assert load_scenario("default").serving.batching == "continuous"
    assert load_scenario("default", LEGACY_FIDELITY).serving.batching == "offered"
    with pytest.raises(ValueError, match=r"serving.batching='batched'.*'continuous', 'offered'"):
        load_scenario("default", {"serving.batching": "batched"})
    for key in ("max_batch", "step_tokens"):
        with pytest.raises(ValueError, match=rf"serving.{key}=0 .*integer > 0"):
            load_scenario("default", {f"serving.{key}": 0})
