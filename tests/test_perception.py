"""Perception: broadcast views are stale, lossy and bounded in age."""

import networkx as nx
import numpy as np
import pytest

from coel_env.core.perception import Perception, PerceptionConfig


def _line(n=5, link_ms=2.0):
    g = nx.path_graph(n)
    hops = np.array([[nx.shortest_path_length(g, a, b) for b in range(n)] for a in range(n)], float)
    return hops * link_ms, hops


def _run(cfg, epochs=20, dt=0.7, seed=0, n=5):
    lat, hops = _line(n)
    p = Perception(cfg, lat, hops, n_fields=2, field_bytes=16)
    rng = np.random.default_rng(seed)
    ages, sent = [], 0.0
    for k in range(epochs):
        truth = np.stack([np.arange(n) + 100 * k, np.full(n, k)], axis=1).astype(float)
        sent += p.advance((k + 1) * dt, truth, rng)
        ages.append(p.age_s((k + 1) * dt))
    return p, np.array(ages), sent


def test_staleness_never_exceeds_period_plus_path_latency_without_loss():
    cfg = PerceptionConfig(period_s=1.0, hops=4, loss_prob=0.0)
    p, ages, _ = _run(cfg)
    lat_s = _line()[0] / 1000
    steady = ages[5:]
    assert np.isfinite(steady).all()
    assert (steady <= cfg.period_s + lat_s[None] + 1e-12).all()
    assert (steady >= 0).all()


def test_views_are_stale_not_the_truth():
    cfg = PerceptionConfig(period_s=1.0, hops=4)
    p, _, _ = _run(cfg, epochs=7, dt=0.7)
    # the last truth had field 1 == 6; other servers' views lag behind
    seen = p.status[0, 1:, 1]
    assert (seen < 6).all() and (seen >= 4).all()
    assert p.status[0, 0, 1] == 6  # a server knows itself


def test_hop_radius_limits_who_hears_whom():
    p, ages, _ = _run(PerceptionConfig(period_s=0.5, hops=1))
    assert np.isinf(ages[-1][0, 2:]).all()  # 2+ hops away on a line: never heard
    assert np.isfinite(ages[-1][0, :2]).all()


def test_losses_make_views_older_and_are_reproducible():
    lossy = PerceptionConfig(period_s=0.5, hops=4, loss_prob=0.5)
    _, a1, b1 = _run(lossy, seed=3)
    _, a2, b2 = _run(lossy, seed=3)
    _, clean, _ = _run(PerceptionConfig(period_s=0.5, hops=4), seed=3)
    assert np.array_equal(a1, a2) and b1 == b2
    assert a1[5:].mean() > clean[5:].mean()


def test_broadcast_bytes_count_every_link_a_message_crosses():
    cfg = PerceptionConfig(period_s=1.0, hops=4, header_bytes=40)
    lat, hops = _line()
    p = Perception(cfg, lat, hops, n_fields=2, field_bytes=16)
    sent = p.advance(1.0, np.zeros((5, 2)), np.random.default_rng(0))  # one round at t=0
    assert sent == 56 * hops.sum()


def test_absent_servers_neither_send_nor_receive():
    lat, hops = _line()
    p = Perception(PerceptionConfig(period_s=1.0, hops=4), lat, hops, 2, 16)
    up = np.array([True, True, False, True, True])
    p.advance(3.0, np.ones((5, 2)), np.random.default_rng(0), up=up)
    assert np.isinf(p.age_s(3.0)[0, 2]) and np.isinf(p.age_s(3.0)[2, 0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(period_s=0), "period_s=0 is not allowed"),
        (dict(hops=0), "hops=0 is not allowed"),
        (dict(loss_prob=1.0), "loss_prob=1.0 is not allowed; must be in [0, 1)"),
        (dict(header_bytes=-1), "header_bytes=-1 is not allowed"),
    ],
)
def test_bad_config_names_field_value_and_rule(kwargs, message):
    with pytest.raises(ValueError) as exc:
        PerceptionConfig(**kwargs)
    assert message in str(exc.value)
