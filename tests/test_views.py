"""Really stale views (``perception.sampling: sub_epoch``): messages carry the status of
the moment they were sent, views carry the network and popularity as broadcast, and the
epoch report gives the view's error against the truth."""

import gymnasium as gym
import numpy as np
import pytest

import coel_env  # noqa: F401  (registers the ids)
from coel_env.core.observation import Observation
from coel_env.core.perception import Perception, PerceptionConfig
from coel_env.core.scenario import LEGACY_FIDELITY, load_scenario
from coel_env.core.world import STATUS_FIELDS, World


def _pair(sampling: str) -> Perception:
    lat = np.array([[0.0, 5.0], [5.0, 0.0]])  # ms
    cfg = PerceptionConfig(period_s=2.0, hops=1, sampling=sampling)
    return Perception(cfg, lat, np.array([[0, 1], [1, 0]]), 2, 8)


def test_a_message_carries_the_status_of_the_moment_it_was_sent():
    a = np.array([[0.0, 1.0], [10.0, 20.0]])  # status at the end of epoch 0 (t = 0)
    b = np.array([[1.0, 1.0], [30.0, 40.0]])  # at the end of epoch 1 (t = 10 s)
    rng = np.random.default_rng(0)
    views = {}
    for sampling in ("epoch_end", "sub_epoch"):
        p = _pair(sampling)
        p.advance(0.0, a, rng)
        p.advance(10.0, b, rng)
        views[sampling] = p.view(0, 10.0)
    # the newest message that arrived by 10 s was sent at 8 s
    status, age = views["epoch_end"]
    assert status[1].tolist() == [30.0, 40.0] and age[1] == pytest.approx(2.0)
    status, age = views["sub_epoch"]
    assert status[1] == pytest.approx([10.0 + 0.8 * 20.0, 20.0 + 0.8 * 20.0])
    assert age[1] == pytest.approx(2.0)
    assert status[0].tolist() == b[0].tolist()  # a server knows itself
    p = _pair("sub_epoch")
    p.advance(0.0, a, rng)
    p.advance(10.0, b, rng)
    assert p.view_error(0, b) == pytest.approx(np.abs(status[1] - b[1]).mean())


def test_the_epoch_report_gives_the_error_of_the_controllers_view():
    def maes(sampling):
        w = World("default", {"perception.sampling": sampling, "perception.loss_prob": 0.0})
        w.reset(0)
        return [w.step().view_mae for _ in range(8)]

    end, sub = maes("epoch_end"), maes("sub_epoch")
    assert end == [0.0] * 8  # every message of an epoch carries its end: the truth
    assert all(m > 0.005 for m in sub[1:])


def test_a_view_sees_the_network_and_popularity_as_broadcast_the_oracle_the_truth():
    # news every 30 s, epochs of 10 s: the controller's news is up to 3 epochs old while
    # link bandwidth is re-sampled and popularity refreshed every 5 epochs
    w = World("default", {"perception.sampling": "sub_epoch", "perception.period_s": 30.0})
    w.reset(1)
    bw_differs = pop_differs = False
    for _ in range(25):
        w.step()
        view = Observation.from_view(w)
        truth = Observation.from_truth(w)
        assert np.array_equal(truth.latency_ms, w.paths.latency_ms)
        assert np.array_equal(truth.bandwidth_gbit_s, w.paths.bottleneck_gbit_s)
        bw_differs |= not np.array_equal(view.bandwidth_gbit_s, truth.bandwidth_gbit_s)
        pop_differs |= any(
            not np.array_equal(view.popularity[k], truth.popularity[k]) for k in truth.popularity
        )
    assert bw_differs and pop_differs
    # with epoch_end sampling the view takes the network from the truth, as before
    w = World("default", {"perception.sampling": "epoch_end", "perception.period_s": 30.0})
    w.reset(1)
    for _ in range(6):
        w.step()
    view = Observation.from_view(w)
    assert np.array_equal(view.bandwidth_gbit_s, w.paths.bottleneck_gbit_s)


def test_the_default_samples_within_the_epoch_and_bad_values_are_refused():
    assert load_scenario("default").perception.sampling == "sub_epoch"
    assert load_scenario("default", LEGACY_FIDELITY).perception.sampling == "epoch_end"
    with pytest.raises(ValueError, match=r"perception.sampling='often'.*'sub_epoch', 'epoch_end'"):
        load_scenario("default", {"perception.sampling": "often"})


def test_the_envs_decide_from_the_view_under_sub_epoch_and_from_the_truth_otherwise():
    over = {"perception.sampling": "sub_epoch", "perception.period_s": 30.0}
    cfg = {"scenario": "default", "overrides": over}
    env = gym.make("CoEL-v2", config=cfg)
    env.reset(seed=1)
    u = env.unwrapped
    w = u.world
    pop_differs = False
    for _ in range(25):
        env.step(env.action_space.sample())
        lat, bw, pop = w.view_network(u.config["controller"])
        assert w.view_paths(0).latency_ms is lat and w.view_paths(0).bottleneck_gbit_s is bw
        assert all(np.array_equal(u._pop[k], pop[k]) for k in pop)  # what actions decode with
        truth = w.popularity_estimate()
        pop_differs |= any(not np.array_equal(pop[k], truth[k]) for k in truth)
    assert pop_differs
    # epoch_end sampling: the env reads the world's own estimate and paths
    over = {"perception.sampling": "epoch_end"}
    env = gym.make("CoEL-v2", config={"scenario": "default", "overrides": over})
    env.reset(seed=1)
    u = env.unwrapped
    for _ in range(3):
        env.step(env.action_space.sample())
        assert u._pop is u.world.popularity_estimate()
        assert u.world.view_paths(0) is u.world.paths


def _leaver(timeout_periods):
    """A world on ``default`` whose servers leave (none joins) run until a server other
    than the controller has left, then two epochs on: (world, that server)."""
    over = {
        "dynamics.servers": True,
        "dynamics.server_leave_prob": 0.2,
        "dynamics.server_join_prob": 0.0,
        "perception.timeout_periods": timeout_periods,
    }
    w = World(load_scenario("default", over))
    w.reset(3)
    for _ in range(100):
        w.step(None)
        gone = np.flatnonzero(~w.dyn.server_up[1:]) + 1
        if len(gone):
            break
    assert len(gone), "no server left in 100 epochs"
    for _ in range(2):
        w.step(None)
    return w, int(gone[0])


def test_a_server_silent_past_the_heartbeat_timeout_is_believed_absent():
    """A server that left sends nothing: once its last message is older than
    ``timeout_periods`` broadcast periods the controller's view says it is absent (its
    other fields kept), and the observation the baselines decide from follows; without a
    timeout (the world before) it stayed "up" for good."""
    w, s = _leaver(5.0)
    status, age = w.view(0)
    timeout = 5.0 * w.scenario.perception.period_s
    assert age[s] > timeout
    up = STATUS_FIELDS.index("up")
    assert status[s, up] == 0.0
    assert not Observation.from_view(w, 0).up[s]
    assert not status.flags.writeable  # the view is not the perception's state to change
    raw, _ = w.perception.view(0, w.t_s)
    assert raw[s, up] == 1.0  # the last message said "up"; only the belief changed
    heard = np.isfinite(age) & (age <= timeout)
    assert (status[heard, up] == raw[heard, up]).all()

    w_old, s_old = _leaver(None)
    assert s_old == s  # the same draws: the detector changes only the view
    assert Observation.from_view(w_old, 0).up[s_old]


@pytest.mark.parametrize("value", [0.5, 0, -1, float("nan"), "5", True])
def test_a_bad_heartbeat_timeout_is_refused(value):
    with pytest.raises(ValueError, match=r"perception.timeout_periods=.* is not allowed"):
        PerceptionConfig(timeout_periods=value)
