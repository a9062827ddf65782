"""Multi-agent CoEL (coel_env.parallel_env): PettingZoo's API and seed tests, the
combination rule, rewards, the harness policy, training and `coel compare`."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import yaml
from pettingzoo.test import parallel_api_test, parallel_seed_test

import coel_env
from coel_env.core.groups import group_of
from coel_env.core.rewards import REWARD_TERMS
from coel_env.core.world import STATUS_FIELDS
from coel_env.envs.actions import N_NEAREST
from coel_env.envs.multiagent import (
    ADJUST,
    KEEP,
    LOCAL_TERMS,
    REDEPLOY,
    WITHDRAW,
    ServerActions,
    agent_name,
    agent_views,
    combine,
    edge_servers,
    nearest,
    parallel_env,
)

SHORT = {"max_cycles": 12}
#: Three 8 GB unified-memory servers: memory is scarce, so proposals conflict.
SMALL = {
    "max_cycles": 12,
    "overrides": {
        "topology.n_servers": 3,
        "topology.device_mix": {
            "l4": 0.0,
            "rtx-4090": 0.0,
            "jetson-agx-orin-64gb": 0.0,
            "jetson-orin-nano-8gb": 1.0,
        },
        "dynamics.links": False,
    },
}


def test_parallel_api_test_passes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PettingZoo reports API slips as warnings
        parallel_api_test(parallel_env(config=SHORT), num_cycles=15)


def test_parallel_seed_test_passes():
    parallel_seed_test(lambda: parallel_env(config=SHORT), num_cycles=12)


def test_exported_from_the_package_and_agents_are_the_edge_servers():
    env = coel_env.parallel_env(config=SHORT)
    assert env.possible_agents == [f"server_{i}" for i in range(env.world.n)]
    with_cloud = parallel_env(config={"overrides": {"cloud.enabled": True}, **SHORT})
    cloud = [i for i in range(with_cloud.world.n) if with_cloud.world.is_cloud[i]]
    assert cloud and all(f"server_{c}" not in with_cloud.possible_agents for c in cloud)


def test_observations_in_space_same_shape_and_agent_centric():
    env = parallel_env(config=SHORT)
    obs, _ = env.reset(seed=1)
    shapes = {env.observation_space(a).shape for a in env.agents}
    nvecs = {tuple(env.action_space(a).nvec) for a in env.agents}
    assert len(shapes) == 1 and len(nvecs) == 1  # one parameter-shared policy fits all
    per = env.observation_type.per_server
    lat = len(STATUS_FIELDS) + len(env.world.models) + 2  # latency feature in a block
    for _ in range(3):
        for a in env.agents:
            assert env.observation_space(a).contains(obs[a]), a
            assert obs[a][lat] == 0.0  # block 0 is the agent itself (latency 0)
            s = int(a.split("_")[1])
            other = nearest(env.world, s)[1]
            want = min(env.world.paths.latency_ms[s, other] / 100.0, 1.0)
            assert obs[a][per + lat] == pytest.approx(want, abs=1e-6)
        obs, *_ = env.step({a: env.action_space(a).sample() for a in env.agents})


def test_all_keep_leaves_the_plan_in_force_untouched():
    env = parallel_env(config=SHORT)
    env.reset(seed=0)
    before = env.world.plan
    keep = {a: np.zeros(env.action_space(a).shape, np.int64) for a in env.agents}
    _, rewards, _, _, infos = env.step(keep)
    assert env.world.plan is before
    a = env.agents[0]
    assert infos[a]["rewards"]["migration_reward"] == 0.0
    assert set(infos[a]["rewards"]) == set(REWARD_TERMS) | set(LOCAL_TERMS)
    assert len(set(rewards.values())) == 1  # nothing refused, nothing dropped: team reward


def test_all_withdraw_undeploys_and_drops_requests():
    env = parallel_env(config=SHORT)
    env.reset(seed=0)
    enc = ServerActions(env.world, env.config["n_groups"])
    k = len(enc.fields())
    act = np.zeros(env.action_space(env.agents[0]).shape, np.int64)
    act[::k] = WITHDRAW
    for _ in range(3):
        _, _, _, _, infos = env.step({a: act for a in env.agents})
    assert not env.world.plan.models
    assert infos[env.agents[0]]["rewards"]["dropped_reward"] <= 0.0


def _redeploy(enc: ServerActions, model: int, place: int, bits_idx: int, spread: int = 1):
    """One agent's action: redeploy ``model`` with every group on ``place`` (its k-th
    nearest server) at ``BITS[bits_idx]``; withdraw from every other model."""
    g = enc.n_groups
    k = len(enc.fields())
    a = np.zeros(k * len(enc.models), np.int64)
    a[::k] = WITHDRAW
    block = [REDEPLOY, spread] + [place] * g + [0] + [bits_idx] * g + [0, 0]
    a[model * k : (model + 1) * k] = block
    return a


@pytest.mark.parametrize("first", ["host", "guest"])
def test_conflicting_proposals_admitted_by_demand(first, monkeypatch):
    """Server c redeploys model 0 on itself; server b puts model 1's experts on c. Both do
    not fit c's 8 GB: the server with more demand wins, the other is refused."""
    env = parallel_env(config=SMALL)
    env.reset(seed=0)
    w = env.world
    enc = ServerActions(w, env.config["n_groups"])
    c = 0
    b = next(s for s in range(1, w.n) if c in list(nearest(w, s)[:4]))
    k_of_c = list(nearest(w, b)).index(c)
    actions = {c: _redeploy(enc, 0, 0, 2), b: _redeploy(enc, 1, k_of_c, 2)}  # 4 bits
    out = np.tile([WITHDRAW] + [0] * (len(enc.fields()) - 1), len(enc.models))
    others = {s: out for s in range(w.n) if s not in (b, c)}
    actions.update(others)
    status = w.true_status()
    demand = status.copy()
    col = len(STATUS_FIELDS)
    demand[:, col:] = 0.0
    winner, loser = (c, b) if first == "host" else (b, c)
    demand[winner, col + (0 if winner == c else 1)] = 2.0
    demand[loser, col + (0 if loser == c else 1)] = 1.0
    monkeypatch.setattr(w, "true_status", lambda: demand)
    comb = combine(w, actions, env.config["n_groups"])
    won = w.models[0] if winner == c else w.models[1]
    lost = w.models[1] if winner == c else w.models[0]
    assert comb.refused[loser] == [lost] and comb.refused[winner] == []
    assert set(comb.plan.models) == {won} and comb.lead[won] == winner
    assert w.check(comb.plan).feasible


def test_random_actions_always_combine_into_a_feasible_plan():
    env = parallel_env(config={**SMALL, "overrides": {**SMALL["overrides"],
                                                      "dynamics.servers": True}})  # fmt: skip
    env.reset(seed=2)
    for a in env.agents:
        env.action_space(a).seed(7)
    for _ in range(10):
        acts = {a: env.action_space(a).sample() for a in env.agents}
        by_server = {int(a.split("_")[1]): v for a, v in acts.items()}
        comb = combine(env.world, by_server, env.config["n_groups"])
        assert comb.feasible and env.world.check(comb.plan).feasible
        for s, refused in comb.refused.items():
            for name in refused:
                mp = comb.plan.models.get(name)
                assert mp is None or s not in mp.home
        for name, lead in comb.lead.items():
            assert lead in comb.plan.models[name].home
        _, rewards, _, _, infos = env.step(acts)
        for a in env.agents:
            local = infos[a]["rewards"]
            want = infos[a]["team_reward"] + sum(env.config[t] * local[t] for t in LOCAL_TERMS)
            assert rewards[a] == pytest.approx(want)
            assert -1.0 <= local["rejected_reward"] <= 0.0


def test_adjust_by_the_lead_changes_bits_only():
    env = parallel_env(config=SHORT)
    env.reset(seed=0)
    w = env.world
    enc = ServerActions(w, env.config["n_groups"])
    k = len(enc.fields())
    g = enc.n_groups
    act = np.zeros(k * len(w.models), np.int64)
    act[::k] = ADJUST
    for i in range(len(w.models)):
        act[i * k + 3 + g : i * k + 3 + 2 * g] = 2  # 4 bits everywhere
    before = w.plan
    comb = combine(w, {s: act for s in range(w.n)}, g)
    for name, mp in comb.plan.models.items():
        assert np.array_equal(mp.location, before.models[name].location)
        assert (mp.bits == 4).all() and mp.home == before.models[name].home


def test_missing_agents_keep_and_bad_actions_are_refused():
    env = parallel_env(config=SHORT)
    env.reset(seed=0)
    before = env.world.plan
    env.step({})  # nobody acts: everyone keeps
    assert env.world.plan is before
    a = env.agents[0]
    shape = env.action_space(a).shape
    with pytest.raises(ValueError, match="unknown agent 'server_99'"):
        env.step({"server_99": np.zeros(shape, int)})
    with pytest.raises(ValueError, match=r"server_0: action has shape \(3,\)"):
        env.step({a: np.zeros(3, int)})
    bad = np.zeros(shape, int)
    bad[0] = KEEP + 7
    with pytest.raises(ValueError, match=r"server_0: action\[0\]=7 is not allowed; field 0 "
                                         r"takes 0..3"):  # fmt: skip
        env.step({a: bad})


def test_bad_config_names_the_key():
    with pytest.raises(
        ValueError, match="unknown config key 'controler'; valid keys: .*max_cycles"
    ):
        parallel_env(config={"controler": 1})
    with pytest.raises(ValueError, match="max_cycles=0 is not allowed"):
        parallel_env(config={"max_cycles": 0})
    with pytest.raises(ValueError, match="rejected_reward='x' is not allowed"):
        parallel_env(config={"rejected_reward": "x"})


def test_truncation_after_max_cycles_and_render():
    env = parallel_env(config={"max_cycles": 3}, render_mode="ansi")
    env.reset(seed=0)
    for i in range(3):
        _, _, term, trunc, _ = env.step({})
        assert not any(term.values()) and all(trunc.values()) == (i == 2)
    assert env.agents == []
    assert "epoch 3" in env.render()
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})


def _untrained_model(config, seed=0):
    from stable_baselines3 import PPO

    from agents.multiagent import make_vec_env

    venv = make_vec_env(config, 1, seed)
    return PPO("MlpPolicy", venv, n_steps=8, batch_size=40, seed=seed, device="cpu",
               policy_kwargs={"net_arch": [16]})  # fmt: skip


def test_harness_policy_returns_equal_the_env_team_return():
    from agents import harness
    from agents.multiagent import MAPolicy

    cfg = dict(SHORT)
    model = _untrained_model(cfg)
    env = parallel_env(config=cfg, version=0)  # v0: the world is reset with the seed itself
    obs, _ = env.reset(seed=4)
    team = 0.0
    while env.agents:
        batch = np.stack([obs[a] for a in env.agents])
        act, _ = model.predict(batch, deterministic=True)
        obs, _, _, _, infos = env.step(dict(zip(env.agents, act, strict=True)))
        team += infos[env.possible_agents[0]]["team_reward"]
    res = harness.run_episode(MAPolicy(model, cfg), "default", 4, cfg["max_cycles"])
    assert res.metrics["return"] == pytest.approx(team, rel=1e-12, abs=1e-12)
    other = parallel_env(config={"overrides": {"topology.n_servers": 3}, **SHORT})
    with pytest.raises(ValueError, match="trained on observations of shape"):
        harness.run_episode(MAPolicy(model, cfg), "default", 0, 2, world=other.world)


def test_v1_seeds_the_world_as_the_single_agent_envs_do_and_v0_with_the_seed():
    from gymnasium.utils import seeding

    from coel_env.core.world import World

    def first_report(world):
        return world.step(None).as_dict()

    drawn = int(seeding.np_random(7)[0].integers(2**63 - 1))  # what CoELEnv.reset(seed=7) draws
    for version, world_seed in ((1, drawn), (0, 7)):
        env = parallel_env(config=SHORT, version=version)
        env.reset(seed=7)
        assert env.metadata["name"] == f"coel_parallel_v{version}"
        w = World("default")
        w.reset(world_seed)
        assert first_report(env.world) == first_report(w)
    assert coel_env.parallel_env(config=SHORT).version == 1
    assert coel_env.parallel_env(config=SHORT, version=0).version == 0
    with pytest.raises(ValueError, match=r"version=2 is not allowed; versions: \[0, 1\]"):
        parallel_env(config=SHORT, version=2)


def test_train_ma_is_deterministic_and_compare_takes_it(tmp_path):
    import torch

    from agents.compare_cli import compare
    from agents.multiagent import is_multiagent_run, load_ma_policy, train_ma
    from agents.registry import make_policy

    hp = {"n_steps": 8, "batch_size": 40, "n_epochs": 1, "policy_kwargs": {"net_arch": [16]}}
    runs = []
    before = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(True)
    try:  # "b" keeps torch's distribution checks: the checks change nothing
        for name in ("a", "b"):
            runs.append(train_ma(timesteps=80, seed=5, run_dir=tmp_path / name, hyperparams=hp,
                                 env_config={"max_cycles": 6}, eval_seeds=[0], eval_epochs=3,
                                 distribution_checks=name == "b"))  # fmt: skip
        assert torch.distributions.Distribution._validate_args is True  # restored
    finally:
        torch.distributions.Distribution.set_default_validate_args(before)
    pa, pb = (load_ma_policy(r).model.policy.state_dict() for r in runs)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    checks = [yaml.safe_load((r / "args.yml").read_text())["distribution_checks"] for r in runs]
    assert checks == [False, True]
    assert is_multiagent_run(runs[0]) and not is_multiagent_run(tmp_path)
    for f in ("args.yml", "config.yml", "hyperparams.yml", "model.zip", "evaluations.npz",
              "versions.yml", "seed", "command.txt"):  # fmt: skip
        assert (runs[0] / f).is_file(), f
    assert make_policy(f"ma:{runs[0]}").name == "ma:a"
    rows = compare("CoEL-v0", [runs[0]], ["naive"], 1, 3, tmp_path / "cmp")
    assert [r["policy"] for r in rows] == ["ma:a", "naive"]
    assert "ma:a" in (tmp_path / "cmp" / "table.md").read_text()
    with pytest.raises(ValueError, match="normalize is not supported"):
        train_ma(timesteps=8, run_dir=tmp_path / "n", hyperparams={"normalize": True})
    with pytest.raises(ValueError, match="unknown hyperparameter 'n_step' for ppo"):
        train_ma(timesteps=8, run_dir=tmp_path / "h", hyperparams={"n_step": 8})
    with pytest.raises(ValueError, match="not a run folder of coel train-ma"):
        load_ma_policy(tmp_path)


def test_two_envs_with_one_seed_play_the_same_episode():
    """Stronger than parallel_seed_test (which stops after one step): a whole episode."""
    envs = [parallel_env(config=SHORT) for _ in range(2)]
    outs = [[], []]
    for env, out in zip(envs, outs, strict=True):
        obs, _ = env.reset(seed=9)
        for i, a in enumerate(env.agents):
            env.action_space(a).seed(100 + i)
        out.append(obs)
        while env.agents:
            out.append(env.step({a: env.action_space(a).sample() for a in env.agents})[:2])
    assert len(outs[0]) == SHORT["max_cycles"] + 1
    for x, y in zip(*outs, strict=True):
        if isinstance(x, tuple):
            for d1, d2 in zip(x, y, strict=True):
                assert d1.keys() == d2.keys()
                assert all(np.array_equal(d1[k], d2[k]) for k in d1)
        else:
            assert all(np.array_equal(x[k], y[k]) for k in x)


def test_a_multiagent_run_without_config_yml_is_refused(tmp_path):
    """The env's defaults would evaluate it with other reward weights, without a word."""
    import yaml

    from agents.multiagent import KIND, load_ma_policy

    run = tmp_path / "ma"
    run.mkdir()
    (run / "args.yml").write_text(yaml.safe_dump({"kind": KIND}))
    (run / "model.zip").write_bytes(b"never read: the config is checked first")
    with pytest.raises(ValueError, match=r"config.yml' is missing or not a mapping.*restore it"):
        load_ma_policy(run)


#: Stale views: news every 30 s (3 epochs), links that fail and recover (the paths, so
#: the latency and nearest servers, change) and popularity refreshed every 5 epochs.
STALE = {
    "perception.period_s": 30.0,
    "dynamics.link_fail_prob": 0.3,
    "dynamics.link_recover_prob": 0.3,
}


def _truth_views(w):
    truth = (w.paths.latency_ms, w.paths.bottleneck_gbit_s, w.popularity_estimate())
    return {s: truth for s in edge_servers(w)}


def _shares(pop, g, n_layers):
    groups = group_of(pop, g)
    return np.array([pop[groups == k].sum() for k in range(g)]) / n_layers


def test_under_sub_epoch_each_agent_observes_its_own_view_once_per_step(monkeypatch):
    cfg = {"max_cycles": 14, "overrides": {"perception.sampling": "sub_epoch", **STALE}}
    env = parallel_env(config=cfg)
    w = env.world
    calls = []
    real = type(w).view_network
    monkeypatch.setattr(w, "view_network", lambda s: calls.append(s) or real(w, s))
    obs, _ = env.reset(seed=1)
    assert sorted(calls) == list(env.servers)  # once per agent
    ot, g = env.observation_type, env.config["n_groups"]
    lat_col = len(STATUS_FIELDS) + len(w.models) + 2  # latency feature in a block
    n_lat = n_order = n_pop = n_obs = 0
    for a in env.possible_agents:
        env.action_space(a).seed(3)
    for _ in range(13):
        views = {s: real(w, s) for s in env.servers}
        truth = ot.observe_all(w.popularity_estimate(), env._lead, _truth_views(w))
        assert all(np.array_equal(o, ot.observe_all(env._pop, env._lead, views)[int(a[7:])])
                   for a, o in obs.items())  # fmt: skip
        for a, o in obs.items():
            s = int(a.split("_")[1])
            lat, _, pop = views[s]
            order = nearest(w, s, lat)
            want = np.minimum(lat[s, order] / 100.0, 1.0)
            assert o[lat_col :: ot.per_server][: w.n] == pytest.approx(want, abs=1e-6)
            n_lat += not np.array_equal(lat[s], w.paths.latency_ms[s])
            n_order += not np.array_equal(order, nearest(w, s))
            for i, (name, m) in enumerate(zip(w.models, w.specs, strict=True)):
                at = w.n * ot.per_server + i * ot.per_model
                share = _shares(pop[name], g, m.n_moe_layers)
                assert o[at : at + g] == pytest.approx(share, abs=1e-6)
                est = w.popularity_estimate()[name]
                n_pop += not np.allclose(share, _shares(est, g, m.n_moe_layers), atol=1e-6)
            n_obs += not np.array_equal(o, truth[s])
        calls.clear()
        obs, *_ = env.step({a: env.action_space(a).sample() for a in env.agents})
        assert sorted(calls) == list(env.servers)  # once per agent per step
    # the views were stale: each part of the observation differed from the truth's
    assert n_lat and n_order and n_pop and n_obs


def _spread(enc: ServerActions, model: int):
    """An action that redeploys ``model`` with group k on the agent's k-th nearest server
    (no copy at home), withdrawing from every other model."""
    a = _redeploy(enc, model, 0, 0)
    k, g = len(enc.fields()), enc.n_groups
    a[model * k + 2 : model * k + 2 + g] = np.arange(g) % N_NEAREST
    return a


def _held(w, s, lat, pop, g):
    """Where the part of :func:`_spread` of model 0 by ``s`` puts each expert, decoded with
    path latency ``lat`` and popularity ``pop``."""
    m = w.specs[0]
    near = nearest(w, s, lat)[np.minimum(np.arange(N_NEAREST), w.n - 1)]
    groups = group_of(pop[w.models[0]], g)
    hold = np.zeros((m.n_moe_layers, m.n_experts, w.n), bool)
    for k in range(g):
        hold[groups == k, near[k % N_NEAREST]] = True
    return hold


def test_under_sub_epoch_an_action_is_decoded_with_the_agents_own_view():
    # one-epoch migrations: the plan in force after a step is the plan decoded
    over = {"perception.sampling": "sub_epoch", "updating.migration": "one_epoch", **STALE}
    cfg = {"max_cycles": 14, "overrides": over}
    env = parallel_env(config=cfg)
    env.reset(seed=1)
    w = env.world
    g = env.config["n_groups"]
    enc = ServerActions(w, g)
    out = np.tile([WITHDRAW] + [0] * (len(enc.fields()) - 1), len(enc.models))
    admitted = differs = 0
    for t in range(13):
        s = env.servers[t % len(env.servers)]
        actions = {r: out for r in env.servers} | {s: _spread(enc, 0)}
        comb = combine(w, actions, g)  # default: each agent's view_network
        lat, _, pop = w.view_network(s)
        if w.models[0] not in comb.refused[s]:
            admitted += 1
            held = comb.plan.models[w.models[0]].location != 0
            assert np.array_equal(held, _held(w, s, lat, pop, g))
            est = w.popularity_estimate()
            differs += not np.array_equal(held, _held(w, s, w.paths.latency_ms, est, g))
        env.step({agent_name(r): a for r, a in actions.items()})  # the env decodes alike
        assert env.world.plan.models.keys() == comb.plan.models.keys()
        for name, mp in comb.plan.models.items():
            assert np.array_equal(env.world.plan.models[name].location, mp.location)
    assert admitted >= 6 and differs


def test_combine_decodes_with_the_views_it_is_given():
    """A made-up view (the far servers nearest, popularity reversed) moves the part."""
    env = parallel_env(config=SHORT)
    env.reset(seed=0)
    w = env.world
    g = env.config["n_groups"]
    enc = ServerActions(w, g)
    s = env.servers[0]
    lat = np.asarray(w.paths.latency_ms, float).copy()
    lat[s] = np.where(np.arange(w.n) == s, 0.0, 1000.0 - lat[s])  # far is near
    pop = {k: v[:, ::-1].copy() for k, v in w.popularity_estimate().items()}
    out = np.tile([WITHDRAW] + [0] * (len(enc.fields()) - 1), len(enc.models))
    actions = {r: out for r in env.servers} | {s: _spread(enc, 0)}
    views = _truth_views(w) | {s: (lat, w.paths.bottleneck_gbit_s, pop)}
    mine = combine(w, actions, g, views=views)
    plain = combine(w, actions, g)  # epoch_end: the truth
    assert not mine.refused[s] and not plain.refused[s]
    held = mine.plan.models[w.models[0]].location != 0
    assert np.array_equal(held, _held(w, s, lat, pop, g))
    truth = _held(w, s, w.paths.latency_ms, w.popularity_estimate(), g)
    assert np.array_equal(plain.plan.models[w.models[0]].location != 0, truth)
    assert not np.array_equal(held, truth)


def test_without_sub_epoch_every_agent_decides_from_the_truth(monkeypatch):
    over = {**STALE, "perception.sampling": "epoch_end"}
    env = parallel_env(config={"max_cycles": 8, "overrides": over})
    w = env.world

    def refuse(server):
        raise AssertionError("view_network read without sub_epoch")

    monkeypatch.setattr(w, "view_network", refuse)
    obs, _ = env.reset(seed=1)
    assert agent_views(w) is None and env._views is None
    ot, g = env.observation_type, env.config["n_groups"]
    for a in env.possible_agents:
        env.action_space(a).seed(5)
    for _ in range(7):
        truth = ot.observe_all(w.popularity_estimate(), env._lead, _truth_views(w))
        assert all(np.array_equal(o, truth[int(a.split("_")[1])]) for a, o in obs.items())
        acts = {a: env.action_space(a).sample() for a in env.agents}
        by_server = {int(a.split("_")[1]): v for a, v in acts.items()}
        plain = combine(w, by_server, g)
        given = combine(w, by_server, g, views=_truth_views(w))
        assert plain.refused == given.refused
        assert plain.plan.models.keys() == given.plan.models.keys()
        for name, mp in plain.plan.models.items():
            assert np.array_equal(mp.location, given.plan.models[name].location)
        obs, *_ = env.step(acts)
