"""The evaluation harness: same instances, same metrics, comparable returns."""

import numpy as np
import pytest

from agents import harness
from coel_env.core.rewards import reward_terms, total_reward
from coel_env.core.world import World
from coel_env.envs import CoELEnv


class Keep:
    name = "keep"
    sees = "view"

    def reset(self, world, seed):
        self.seen = []

    def act(self, world, obs):
        self.seen.append(obs.epoch)
        return None


class Oracle(Keep):
    name = "keep-oracle"
    sees = "oracle"


def test_return_is_the_envs_reward_summed_over_the_episode():
    res = harness.run_episode(Keep(), "static", 3, 12)
    w = World("static")
    w.reset(3)
    cfg = CoELEnv.default_config()
    expect = sum(
        total_reward(reward_terms(r, w, cfg, not r.feasible), cfg)
        for r in (w.step() for _ in range(12))
    )
    assert res.metrics["return"] == pytest.approx(expect)


def test_same_seed_same_metrics_and_policies_see_the_same_instances():
    a = harness.run_episode(Keep(), "default", 1, 10)
    b = harness.run_episode(Keep(), "default", 1, 10)
    c = harness.run_episode(Oracle(), "default", 1, 10)
    drop = ("decision_ms",)
    assert {k: v for k, v in a.metrics.items() if k not in drop} == {
        k: v for k, v in b.metrics.items() if k not in drop
    }
    # a policy that never acts gets the same episode whatever it sees
    assert a.metrics["return"] == c.metrics["return"]


def test_policy_is_asked_once_per_epoch_in_order():
    p = Keep()
    harness.run_episode(p, "static", 0, 7)
    assert p.seen == list(range(7))


def test_mean_ci95_matches_student_t():
    m, h = harness.mean_ci95([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5
    assert h == pytest.approx(3.182446305 * np.std([1, 2, 3, 4], ddof=1) / 2, rel=1e-6)
    assert harness.mean_ci95([5.0]) == (5.0, 0.0)


def test_summary_has_a_row_per_policy_with_score_against_the_reference():
    res = harness.evaluate([Keep(), Oracle()], "static", [0, 1], 5)
    rows = harness.summarize(res, reference="keep-oracle")
    assert [r["policy"] for r in rows] == ["keep", "keep-oracle"]
    for r in rows:
        for m in harness.METRICS:
            assert np.isfinite(r[f"{m}_mean"]) and r[f"{m}_ci95"] >= 0
    assert rows[1]["score"] == pytest.approx(1.0)


def test_bad_epochs():
    with pytest.raises(ValueError, match="epochs=0 is not allowed"):
        harness.run_episode(Keep(), "static", 0, 0)
