"""Durable migration (``updating.migration: durable``): moves that take their time, share
bandwidth, and serve from the old place until they land."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coel_env.core.kernels.migration import consume_kernel, stream_left_kernel, streams_kernel
from coel_env.core.plan import GB, GPU, Plan, dense_gb, expert_gb_table, single_server_plan
from coel_env.core.scenario import LEGACY_FIDELITY, load_scenario
from coel_env.core.topology import Server, Topology
from coel_env.core.updating import Moves, _max_min
from coel_env.core.world import World

OLMOE = "olmoe-1b-7b"
#: OLMoE at 16 bits: the dense part and 16 x 64 experts [bytes].
OLMOE_BYTES = (dense_gb(OLMOE) + 16 * 64 * expert_gb_table(OLMOE)[16]) * GB


def _two_servers(migration: str, **over) -> World:
    """Two L4s joined by one 1 Gbit/s link, OLMoE only, nothing dynamic."""
    return World(
        "static",
        {
            "models": [OLMOE], "topology.n_servers": 2, "topology.device_mix": {"l4": 1.0},
            "topology.link_gbit_s": [1.0, 1.0], "workload.rate_per_s": 0.1,
            "updating.migration": migration, **over,
        },
    )  # fmt: skip


def _decode_step(w: World, home: int):
    """The cost of a one-sequence decode step of OLMoE at ``home`` under the plan in
    force (no home there yet: the server's old home 0)."""
    mp = w.plan.models[OLMOE]
    h = home if home in mp.home else mp.home[0]
    pop = w.popularity_estimate()[OLMOE]
    p = w.paths
    return w.serving.step(mp, h, pop, 1, p.latency_ms, p.bottleneck_gbit_s, w.dyn.server_up)


def _on(server: int, n: int = 2) -> Plan:
    """OLMoE whole at 16 bits on ``server`` (every expert on its GPU)."""
    mp = single_server_plan(OLMOE, server, n, 100.0)
    return Plan({OLMOE: mp})


def test_a_whole_model_over_a_slow_link_takes_several_epochs_and_serves_remotely_meanwhile():
    w = _two_servers("durable")
    w.reset(0)
    w.step(_on(0))  # from the naive plan (both servers) only copies are dropped: at once
    assert w.plan.models[OLMOE].home == (0,)
    reports = [w.step(_on(1))]
    cost = []  # a decode step at the new home, every epoch
    while reports[-1].moves_in_flight and len(reports) < 40:
        cost.append(_decode_step(w, 1))
        reports.append(w.step())
    seconds = OLMOE_BYTES * 8 / 1e9  # 1 Gbit/s
    in_flight = [r for r in reports if r.moves_in_flight]
    assert len(in_flight) == int(seconds // 10)  # ~110 s: 11 epochs of 10 s
    assert sum(r.migration_bytes for r in reports) == pytest.approx(OLMOE_BYTES, rel=1e-9)
    assert w.last_move_s.tolist() == pytest.approx([seconds], rel=1e-6)
    assert in_flight[0].migration_bytes_left > in_flight[-1].migration_bytes_left > 0
    # while in flight the experts not landed are served from server 0: each token's
    # activations cross the link; once all has landed everything is local
    landed = _decode_step(w, 1)
    assert landed.net_bytes == 0
    assert all(c.net_bytes > 0 and c.ms > landed.ms for c in cost)
    assert cost[0].ms > 1.3 * landed.ms
    assert [c.ms for c in cost] == sorted((c.ms for c in cost), reverse=True)  # as they land
    final = w.plan.models[OLMOE]
    assert (final.location[:, :, 1] == GPU).all() and not final.location[:, :, 0].any()
    assert final.home == (1,)


def test_one_epoch_migration_lands_at_once():
    w = _two_servers("one_epoch")
    w.reset(0)
    w.step(_on(0))
    r = w.step(_on(1))
    assert r.migration_bytes == pytest.approx(OLMOE_BYTES, rel=1e-9)
    assert r.moves_in_flight == 0 and r.migration_s > 100
    assert w.step().activation_bytes == 0


def test_two_moves_from_the_store_each_take_twice_as_long_as_one():
    def landing(targets) -> float:
        w = _two_servers("durable", **{"serving.store_gbit_s": 4.0})
        w.reset(0)
        w.step(Plan({}))  # nothing deployed: every byte comes from the store
        plans = [single_server_plan(OLMOE, s, 2, 100.0) for s in targets]
        loc = sum(mp.location for mp in plans).astype(np.int8)
        homes = tuple(targets)
        w.step(Plan({OLMOE: plans[0].__class__(OLMOE, loc, plans[0].bits, homes,
                                                 plans[0].host_policy)}))  # fmt: skip
        while w.last_move_s.size == 0:
            w.step()
        return float(w.last_move_s[0])

    one, two = landing([0]), landing([0, 1])
    assert one == pytest.approx(OLMOE_BYTES * 8 / 4e9, rel=1e-6)
    assert two == pytest.approx(2 * one, rel=1e-6)


def _line() -> Topology:
    servers = [Server(i, f"s{i}", "l4") for i in range(3)]
    return Topology.from_links(servers, [(0, 1, 1.0, 1.0), (1, 2, 8.0, 1.0)])


def test_two_moves_over_one_link_share_it():
    t = _line()
    n = 3
    mp0 = single_server_plan(OLMOE, 0, n, 100.0)
    start = Plan({OLMOE: mp0})

    def landing(dsts) -> float:
        mv = Moves(n, t.edges, t.edge_bandwidth_gbit_s, np.full(n, 25.0), 1.0)
        mv.reset(start)
        loc = mp0.location.copy()
        loc[:, :, list(dsts)] = GPU
        target = Plan({OLMOE: type(mp0)(OLMOE, loc, mp0.bits, (0,), mp0.host_policy)})
        mv.retarget(start, target, t.paths.latency_ms, np.ones(n, bool), 0.0)
        ones = np.ones(len(t.edges))
        elapsed = 0.0
        while mv.in_flight:
            step = mv.advance(10.0, t.paths, ones, ones.astype(bool), elapsed)
            elapsed += 10.0
        return step.done_s

    experts = 16 * 64 * expert_gb_table(OLMOE)[16] * GB
    alone = landing([1])
    assert alone == pytest.approx(experts * 8 / 1e9, rel=1e-6)  # the 1 Gbit/s link
    # to 1 and to 2 (through 1): both cross link 0-1, each at half its bandwidth
    assert landing([1, 2]) == pytest.approx(2 * alone, rel=1e-6)


def test_max_min_fair_rates():
    # resources: a (cap 10), b (cap 4); flows: x on a, y on a and b, z on b
    uses = [np.array([0]), np.array([0, 1]), np.array([1])]
    rate = _max_min(uses, np.array([10.0, 4.0]), np.ones(3, bool))
    assert rate.tolist() == pytest.approx([8.0, 2.0, 2.0])
    # a stream without a path waits; one on unlimited resources is instant
    rate = _max_min([None, np.array([2])], np.array([1.0, 1.0, np.inf]), np.ones(2, bool))
    assert rate[0] == 0 and np.isinf(rate[1])


def test_a_moved_expert_is_unavailable_when_its_only_old_copy_left():
    t = _line()
    n = 3
    mp0 = single_server_plan(OLMOE, 0, n, 100.0)
    mv = Moves(n, t.edges, t.edge_bandwidth_gbit_s, np.full(n, 25.0), 1.0)
    mv.reset(Plan({OLMOE: mp0}))
    target = Plan({OLMOE: single_server_plan(OLMOE, 1, n, 100.0)})
    up = np.array([False, True, True])  # server 0 left: everything comes from the store
    gone = Plan({})
    mv.retarget(gone, target, t.paths.latency_ms, up, 0.0)
    eff = mv.effective()
    assert OLMOE not in eff.models  # no home until the dense part lands
    step = mv.advance(10.0, t.paths, np.ones(2), np.ones(2, bool), 0.0)
    assert step.landed >= 1 and step.in_flight > 0
    eff = mv.effective()
    assert eff.models[OLMOE].home == (1,)
    assert (eff.models[OLMOE].location[:, :, 1] == GPU).sum() == step.landed - 1
    assert dense_gb(OLMOE) * GB < 10.0 * 1e9 / 8  # the dense part fits in one epoch


def test_the_default_is_durable_and_bad_values_are_refused():
    assert load_scenario("default").updating.migration == "durable"
    assert load_scenario("default", LEGACY_FIDELITY).updating.migration == "one_epoch"
    with pytest.raises(ValueError, match=r"updating.migration='slow'.*'durable', 'one_epoch'"):
        load_scenario("default", {"updating.migration": "slow"})


def test_durable_moves_conserve_requests_and_are_deterministic():
    from agents.base import observe
    from agents.baselines import make_policy

    def run():
        w = World("large", {"updating.migration": "durable"})
        w.reset(2)
        pol = make_policy("greedy")
        pol.reset(w, 2)
        out = []
        for _ in range(6):
            r = w.step(pol.act(w, observe(pol, w)))
            assert r.requests_served + r.requests_dropped == r.requests_arrived
            out.append(r.as_dict())
        return out

    a = run()
    assert a == run()
    assert any(r["moves_in_flight"] for r in a)


@pytest.mark.slow
def test_greedys_moves_land_within_an_episode_on_large():
    """``large``'s model store (10 Gbit/s) lets greedy's plan land: at 1 Gbit/s its first
    plan's ~300 GB of new weights were still in flight after 40 epochs."""
    from agents.harness import play
    from agents.registry import make_policy

    w = World("large")
    w.reset(0)
    pol = make_policy("greedy")
    pol.reset(w, 0)
    in_flight = [r.moves_in_flight for r, _, _ in play(w, 25, pol, 0)]
    assert in_flight[0] > 0  # the first plan moves weights
    assert in_flight[-1] == 0 and min(in_flight[10:]) == 0  # and they land
    slow = World("large", {"serving.store_gbit_s": 1.0})
    slow.reset(0)
    pol.reset(slow, 0)
    assert all(r.moves_in_flight > 0 for r, _, _ in play(slow, 25, pol, 0))


# ------------------------------------------------- the compiled kernels against plain Python


def _ref_max_min(uses, cap, live):
    """Progressive filling written out in Python (the reference for the kernel)."""
    rate = np.zeros(len(uses))
    free = cap.astype(float).copy()
    todo = [j for j in range(len(uses)) if live[j] and uses[j] is not None]
    while todo:
        count = np.zeros(free.size)
        for j in todo:
            count[uses[j]] += 1
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(count > 0, free / count, np.inf)
        r = int(np.argmin(share))
        s = float(share[r])
        if not np.isfinite(s):
            for j in todo:
                rate[j] = np.inf
            break
        s = max(s, 0.0)
        rest = []
        for j in todo:
            if r in uses[j]:
                rate[j] = s
                free[uses[j]] -= s
            else:
                rest.append(j)
        todo = rest
    return rate


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_max_min_kernel_equals_progressive_filling_in_python(data):
    n_res = data.draw(st.integers(1, 6))
    caps = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0, 10.0, np.inf]),
                              min_size=n_res, max_size=n_res))  # fmt: skip
    k = data.draw(st.integers(1, 8))
    uses, live = [], []
    for _ in range(k):
        if data.draw(st.booleans()) and data.draw(st.booleans()):
            uses.append(None)  # no path
        else:
            res = data.draw(st.sets(st.integers(0, n_res - 1), min_size=1, max_size=n_res))
            uses.append(np.array(sorted(res), np.int64))
        live.append(data.draw(st.booleans()) or data.draw(st.booleans()))
    cap, live = np.array(caps), np.array(live)
    assert np.array_equal(_max_min(uses, cap, live), _ref_max_min(uses, cap, live))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_streams_and_landing_kernels_equal_the_copy_by_copy_rule(data):
    """Streams are (source, destination, model) in the order of their first copy; a step's
    bytes go to a stream's copies one after the other, and a copy lands within 1e-6."""
    n, n_models = 3, 2
    k = data.draw(st.integers(1, 12))
    src = np.array(data.draw(st.lists(st.integers(-1, n - 1), min_size=k, max_size=k)))
    dst = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k)))
    model = np.array(data.draw(st.lists(st.integers(0, n_models - 1), min_size=k, max_size=k)))
    size = np.array(data.draw(st.lists(st.sampled_from([1.0, 2.5, 3e9, 7.25e8]), min_size=k,
                                       max_size=k)))  # fmt: skip
    frac = np.array(data.draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]), min_size=k,
                                       max_size=k)))  # fmt: skip
    sent = size * frac
    heads, starts, members = streams_kernel(src, dst, model, n, n_models)
    ref: dict = {}
    for i in range(k):
        ref.setdefault((int(src[i]), int(dst[i]), int(model[i])), []).append(i)
    assert [ref_k[0] for ref_k in ref.values()] == heads.tolist()
    assert [members[starts[j] : starts[j + 1]].tolist() for j in range(heads.size)] == list(
        ref.values()
    )
    left = stream_left_kernel(starts, members, size, sent)
    assert left.tolist() == [float(sum(size[i] - sent[i] for i in c)) for c in ref.values()]
    # one step: each stream sends some of what it has left
    amounts = np.array([left[j] * data.draw(st.sampled_from([0.0, 0.3, 1.0]))
                        for j in range(heads.size)])  # fmt: skip
    is_pcie = src[heads] == dst[heads]
    got_sent, got_done, got_load = sent.copy(), np.zeros(k, bool), np.zeros(n)
    net, pcie, landed = consume_kernel(amounts, is_pcie, starts, members, size, got_sent,
                                       got_done, dst, got_load, 0.0, 0.0)  # fmt: skip
    ref_sent, ref_load, ref_net, ref_pcie, ref_landed = sent.copy(), np.zeros(n), 0.0, 0.0, 0
    ref_done = np.zeros(k, bool)
    for j, copies in enumerate(ref.values()):
        amount = float(amounts[j])
        if not amount > 0:
            continue
        if is_pcie[j]:
            ref_pcie += amount
        else:
            ref_net += amount
        for i in copies:
            take = min(amount, size[i] - ref_sent[i])
            ref_sent[i] += take
            amount -= take
            if size[i] - ref_sent[i] <= 1e-6:
                ref_load[dst[i]] += size[i]
                ref_done[i] = True
                ref_landed += 1
            if amount <= 0:
                break
    assert (net, pcie, landed) == (ref_net, ref_pcie, ref_landed)
    assert np.array_equal(got_sent, ref_sent) and np.array_equal(got_done, ref_done)
    assert np.array_equal(got_load, ref_load)
