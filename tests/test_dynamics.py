"""Dynamics: seeded, switchable processes."""

import numpy as np
import pytest

from coel_env.core.dynamics import Dynamics, DynamicsConfig

MIX = np.full((4, 3), 1 / 3)
PINNED = np.array([False, False, False, True])


def _run(cfg, seed=0, steps=200):
    d = Dynamics(cfg, 4, 5, PINNED)
    s = d.initial(MIX, np.random.default_rng(seed))
    out = [s]
    for _ in range(steps):
        s = d.step(s)
        out.append(s)
    return out


def _same(a, b):
    return all(
        np.array_equal(getattr(x, k), getattr(y, k))
        for x, y in zip(a, b, strict=True)
        for k in vars(x)
    )


def test_same_seed_same_trajectory_and_different_seed_differs():
    cfg = DynamicsConfig(servers=True, server_leave_prob=0.05, link_fail_prob=0.05)
    assert _same(_run(cfg, 1), _run(cfg, 1))
    assert not _same(_run(cfg, 1), _run(cfg, 2))


def test_off_means_static():
    traj = _run(DynamicsConfig.off())
    assert _same(traj[:1], traj[-1:])


def test_switching_one_process_off_leaves_the_others_unchanged():
    a = _run(DynamicsConfig(links=True), seed=5)
    b = _run(DynamicsConfig(links=False), seed=5)
    assert np.array_equal(a[-1].demand, b[-1].demand)
    assert np.array_equal(a[-1].background, b[-1].background)
    assert not np.array_equal(a[-1].link_scale, b[-1].link_scale)


def test_processes_stay_in_range_and_cloud_never_leaves():
    cfg = DynamicsConfig(servers=True, server_leave_prob=0.3, link_fail_prob=0.3)
    traj = _run(cfg, steps=300)
    bg = np.array([s.background for s in traj])
    assert (bg >= 0).all() and (bg <= cfg.background_max).all()
    assert all(s.server_up[3] for s in traj)
    assert any(not s.server_up[:3].all() for s in traj)  # servers do leave
    assert any(not s.link_up.all() for s in traj)
    for s in traj:
        assert np.allclose(s.task_mix.sum(axis=1), 1.0)
    # the task mix drifts: the top task of some server changes over the run
    assert any(
        np.argmax(traj[0].task_mix[i] + [1e-9, 0, 0]) != np.argmax(traj[-1].task_mix[i])
        for i in range(3)
    )


def test_ou_has_its_stationary_spread():
    cfg = DynamicsConfig(demand_sigma=0.2, theta=0.2)
    traj = _run(cfg, steps=3000)
    logd = np.log([s.demand for s in traj[500:]])
    assert 0.15 < logd.std() < 0.25


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(background="yes"), "dynamics.background='yes' is not allowed"),
        (dict(link_fail_prob=1.5), "dynamics.link_fail_prob=1.5 is not allowed; must be in [0, 1)"),
        (dict(demand_sigma=-1), "dynamics.demand_sigma=-1 is not allowed; must be >= 0"),
        (dict(theta=0), "dynamics.theta=0 is not allowed"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError) as exc:
        DynamicsConfig(**kwargs)
    assert message in str(exc.value)
