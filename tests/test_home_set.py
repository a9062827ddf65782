"""Version-1 encodings: a set of homes per model (CoEL-v1, CoEL-InterDevice-v1)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import coel_env  # noqa: F401  (registers the ids)
from agents.base import observe
from agents.harness import run_episode
from agents.registry import make_policy
from coel_env.core.plan import InfeasibilityReport, Plan


def _masked_random(env, rng):
    u = env.unwrapped
    mask = u.action_masks()
    parts = np.split(mask, np.cumsum(env.action_space.nvec)[:-1])
    return np.array([rng.choice(np.flatnonzero(p)) for p in parts])


def _fields(u):
    return len(u.action_type.fields())


def test_flagged_servers_become_the_homes_and_hold_the_model():
    env = gym.make("CoEL-v1")
    env.reset(seed=0)
    u = env.unwrapped
    n, k = u.world.n, _fields(u)
    a = np.zeros(env.action_space.shape, np.int64)
    homes = {0: [1, 3], 1: [0, 2, 4]}
    for i, hs in homes.items():
        a[i * k] = 2  # redeploy
        a[i * k + 1 + np.asarray(hs)] = 1
    _, _, _, _, info = env.step(a)
    assert not info["invalid_action"], info["infeasibility"]
    for i, name in enumerate(u.world.models):
        mp = u.world.plan.models[name]
        assert list(mp.home) == homes[i]
        held = mp.location > 0
        assert held[:, :, homes[i]].all()  # spread 0: every home holds every expert
        others = [s for s in range(n) if s not in homes[i]]
        assert not held[:, :, others].any()


def test_no_home_is_an_invalid_action_and_keeps_the_plan():
    env = gym.make("CoEL-v1")
    env.reset(seed=0)
    u = env.unwrapped
    before = u.world.plan
    k = _fields(u)
    a = np.zeros(env.action_space.shape, np.int64)
    a[k] = 2  # redeploy the second model with no home flagged
    _, r, _, _, info = env.step(a)
    assert info["invalid_action"]
    assert "no server is chosen as a home" in info["infeasibility"]
    assert info["rewards"]["invalid_reward"] == -1.0
    assert u.world.plan is before


def test_home_flags_are_masked_where_the_dense_part_cannot_fit():
    env = gym.make("CoEL-v1")
    env.reset(seed=0)
    u = env.unwrapped
    w = u.world
    w.gpu_capacity_gb = w.gpu_capacity_gb.copy()
    w.gpu_capacity_gb[2] = 0.1  # no dense part fits in 100 MB
    parts = np.split(u.action_masks(), np.cumsum(env.action_space.nvec)[:-1])
    n, k = w.n, _fields(u)
    for i in range(len(w.models)):
        flags = parts[i * k + 1 : i * k + 1 + n]
        assert all(f[0] for f in flags)  # "not a home" is always allowed
        assert [bool(f[1]) for f in flags] == [s != 2 for s in range(n)]


@pytest.mark.parametrize("seed", range(4))
def test_encode_inverts_decode(seed):
    env = gym.make("CoEL-v1")
    env.reset(seed=seed)
    u = env.unwrapped
    rng = np.random.default_rng(seed)
    k = _fields(u)
    for _ in range(20):
        a = _masked_random(env, rng)
        a[::k] = 2
        plan = u.action_type.decode(a, u.world.plan, u._pop)
        if isinstance(plan, InfeasibilityReport):
            continue
        again = u.action_type.decode(u.action_type.encode(plan, Plan({}), u._pop), Plan({}),
                                     u._pop)  # fmt: skip
        for name, mp in plan.models.items():
            if len(mp.home) == 1 or not np.any(a[1 + u.world.n :: k]):  # exact cases
                assert again.models[name] == mp


def test_keeping_encodes_as_update_keep():
    env = gym.make("CoEL-v1")
    env.reset(seed=0)
    u = env.unwrapped
    at = u.action_type
    a = at.encode(u.world.plan, u.world.plan, u._pop)
    k = len(at.fields())
    assert not a[::k].any()  # update = keep for every model
    # the other fields name the plan in force: as a redeploy they give it back
    redeploy = a.copy()
    redeploy[::k] = at.REDEPLOY
    again = at.decode(redeploy, u.world.plan, u._pop)
    for name, mp in u.world.plan.models.items():
        assert again.models[name].home == mp.home
        assert np.array_equal(again.models[name].location > 0, mp.location > 0)


@pytest.mark.parametrize("expert", ["greedy", "naive"])
def test_an_experts_plans_replayed_as_actions_give_its_return(expert):
    """Imitation needs the encoding to express other policies' plans: replaying the
    encoded plans in CoEL-v1 gives (nearly) the expert's own return on the same world."""
    cfg = {"scenario": "static"}
    a_env, b_env = gym.make("CoEL-v1", config=cfg), gym.make("CoEL-v1", config=cfg)
    a_env.reset(seed=1)
    b_env.reset(seed=1)
    ua, ub = a_env.unwrapped, b_env.unwrapped
    pa, pb = make_policy(expert), make_policy(expert)
    pa.reset(ua.world, 1)
    pb.reset(ub.world, 1)
    ret_a = ret_b = 0.0
    from coel_env.core.plan import reuse_unchanged
    from coel_env.core.rewards import reward_terms, total_reward

    for _ in range(15):
        plan = pa.act(ua.world, observe(pa, ua.world, 0))
        ret_a += a_env.step(ua.action_type.encode(plan, ua.world.plan, ua._pop))[1]
        p = pb.act(ub.world, observe(pb, ub.world, 0))
        rep = ub.world.step(None if p is None else reuse_unchanged(p, ub.world.plan))
        ret_b += total_reward(reward_terms(rep, ub.world, ub.config, False), ub.config)
    assert ret_a == pytest.approx(ret_b, rel=0.02)


def test_harness_counts_a_plan_less_decision_as_invalid():
    class NoHome:
        name, sees = "nohome", "view"

        def reset(self, world, seed):
            pass

        def act(self, world, obs):
            return InfeasibilityReport()

    out = run_episode(NoHome(), scenario="default", seed=0, epochs=3)
    assert out.metrics["invalid_epochs"] == 3.0


def test_encode_plan_is_refused_before_reset_and_on_version_0():
    env = gym.make("CoEL-v1").unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.encode_plan(None)
    v0 = gym.make("CoEL-v0").unwrapped
    v0.reset(seed=0)
    with pytest.raises(ValueError, match="CoEL-v1"):
        v0.encode_plan(None)
    inter = gym.make("CoEL-InterDevice-v1")
    inter.reset(seed=0)
    u = inter.unwrapped
    a = u.encode_plan(None)  # the plan in force, as an action that redeploys it
    _, _, _, _, info = inter.step(a)
    assert not info["invalid_action"] and info["migration_bytes"] == 0.0
