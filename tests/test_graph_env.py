"""CoEL-Graph-v0: the size-invariant edit env (checkers, determinism, pickling, padding,
exact masks against the world's own check, bad input)."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import coel_env  # noqa: F401 - registers the ids
from coel_env.envs.graph_edits import EditLayout

ENV = "CoEL-Graph-v0"
# the public data sets, read through COEL_DATA as the package reads them (conftest sets it)
SHARED = Path(os.environ.get("COEL_DATA", "/nonexistent")) / "topologies"
ZOO = SHARED / "topology_zoo"


def _zoo(name: str) -> str:
    path = ZOO / f"{name}.graphml"
    if not path.is_file():
        pytest.skip(f"{path} is not there (../shared is absent)")
    return str(path)


def _make(**config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Topology Zoo files warn about missing link data
        return gym.make(ENV, config=config)


def _masked_steps(env, steps: int, seed: int, commit_p: float = 0.15):
    """Random masked actions (commit with probability ``commit_p``); yields each step."""
    rng = np.random.default_rng(seed)
    u = env.unwrapped
    for _ in range(steps):
        allowed = np.flatnonzero(u.action_masks())
        a = 0 if (len(allowed) == 1 or rng.random() < commit_p) else int(rng.choice(allowed[1:]))
        out = env.step(a)
        yield a, out
        if out[3]:
            env.reset(seed=int(rng.integers(1000)))


def test_checker_passes_without_warnings():
    env = gym.make(ENV)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_registered_without_a_step_limit_and_with_its_own_class():
    from coel_env.envs.graph import GraphEnv

    spec = gym.spec(ENV)
    assert spec.max_episode_steps is None
    env = gym.make(ENV)
    assert type(env.unwrapped) is GraphEnv
    assert env.unwrapped.config == coel_env.envs.env_config(ENV)
    assert env.unwrapped.config["max_steps"] == 200


def _rollout(env, seed: int, steps: int) -> list:
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a, (obs, r, _, trunc, info) in _masked_steps(env, steps, seed):
        out.append((a, obs, r, trunc, info["invalid_action"]))
    return out


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def test_same_seed_same_episode_and_another_seed_differs():
    a = _rollout(gym.make(ENV), 3, 150)
    b = _rollout(gym.make(ENV), 3, 150)
    c = _rollout(gym.make(ENV), 4, 150)
    assert _same(a, b)
    assert not _same(a, c)


def test_pickled_env_continues_the_same_episode():
    env = gym.make(ENV).unwrapped
    env.reset(seed=5)
    for _ in _masked_steps(env, 40, 1):
        pass
    copy = pickle.loads(pickle.dumps(env))
    rest_a = [(a, o, r) for a, (o, r, *_) in _masked_steps(env, 60, 2)]
    rest_b = [(a, o, r) for a, (o, r, *_) in _masked_steps(copy, 60, 2)]
    assert _same(rest_a, rest_b)


def test_padding_is_flagged_and_never_allowed():
    env = _make(scenario="default", max_servers=16, max_models=3)
    obs, _ = env.reset(seed=0)
    u = env.unwrapped
    n, m = u.world.n, len(u.world.models)
    assert obs["server_mask"].tolist() == [1] * n + [0] * (16 - n)
    assert obs["model_mask"].tolist() == [1] * m + [0] * (3 - m)
    assert not obs["server"][n:].any() and not obs["latency"][n:].any()
    assert not obs["latency"][:, n:].any() and not obs["placement"][:, :, n:].any()
    assert not obs["model"][m:].any() and not obs["pair"][m:].any()
    for _ in _masked_steps(env, 100, 0):
        v = u.layout.views(np.array(u.action_masks()))
        for kind in ("home_add", "home_drop"):
            assert not v[kind][m:].any() and not v[kind][:, n:].any()
        for kind in ("move", "replicate", "drop"):
            assert not v[kind][m:].any() and not v[kind][:, :, n:].any()
        assert not v["bits"][m:].any() and not v["keep"][m:].any()


@pytest.mark.parametrize(
    "config",
    [
        {"scenario": "default"},
        {"scenario": "large"},
        {"topology": "Abilene"},
        {"topology": "Cernet"},
    ],
    ids=["default", "large", "Abilene", "Cernet"],
)
def test_no_invalid_action_over_masked_random_steps(config):
    if "topology" in config:
        config = {"topology": _zoo(config["topology"])}
    env = _make(**config)
    env.reset(seed=11)
    steps = 1000 if config.get("scenario") == "large" else 2000
    invalid = commits = 0
    for a, (_, _, _, _, info) in _masked_steps(env, steps, 11):
        invalid += info["invalid_action"]
        commits += a == 0
    assert invalid == 0
    assert 0 < commits < steps


@pytest.mark.parametrize(
    "config",
    [{"scenario": "default"}, {"scenario": "large"}, {"scenario": "large", "home_move": True}],
    ids=["default", "large", "large-home_move"],
)
def test_every_applied_edit_gives_a_draft_the_world_accepts(config):
    """The editor accepts an unmasked edit away from the border without calling the
    world's check (its slack is exact there): the world's own check must accept every
    draft so made, and agree with the editor's verdict."""
    env = _make(**config)
    env.reset(seed=4)
    ed, w = env.unwrapped.editor, env.unwrapped.world
    edits = 0
    for a, (_, _, _, _, info) in _masked_steps(env, 600 if "large" in str(config) else 1500, 4):
        assert not info["invalid_action"]
        if a != 0:
            edits += 1
            w._checked = None  # no cached answer: the world checks the draft anew
            assert w.check(ed.draft).feasible, env.unwrapped.action_label(a)
    assert edits > 100


def _exhaustive(env) -> tuple[int, int]:
    """Compare the mask with the world's check of every candidate's plan: (candidates,
    disagreements). A no-op (nothing but tiers would change) must be masked."""
    u = env.unwrapped
    ed, lay, w = u.editor, u.layout, u.world
    mask = u.action_masks()
    checked = wrong = 0
    for a in range(1, lay.n):
        kind, idx = lay.decode(a)
        if idx[0] >= len(w.models):
            wrong += bool(mask[a])
            continue
        homes = ("home_add", "home_drop", "home_move")
        server = idx[1] if kind in homes else idx[-1]
        if kind in (*homes, "move", "replicate", "drop") and server >= w.n:
            wrong += bool(mask[a])
            continue
        name = w.models[idx[0]]
        old = ed.draft.models.get(name)
        try:
            plan = ed.candidate(kind, idx)
        except ValueError:  # home_drop of a server that is no home, edits of no model
            wrong += bool(mask[a])
            continue
        new = plan.models[name]
        changed = old is None or not (
            np.array_equal(new.location > 0, old.location > 0)
            and np.array_equal(new.bits, old.bits)
            and new.home == old.home
            and new.keep_ratio == old.keep_ratio
            and np.array_equal(new.host_policy, old.host_policy)
        )
        ok = changed and len(set(new.home)) == len(new.home) and w.check(plan).feasible
        checked += 1
        wrong += ok != bool(mask[a])
    return checked, wrong


@pytest.mark.parametrize(
    "config",
    [
        {"scenario": "default"},
        {"scenario": "large"},
        {"topology": "Cernet"},
        {"scenario": "default", "home_move": True},
        {"scenario": "large", "home_move": True},
    ],
    ids=["default", "large", "Cernet", "default-home_move", "large-home_move"],
)
def test_mask_equals_the_worlds_check_of_every_candidate(config):
    if "topology" in config:
        config = {"topology": _zoo(config["topology"])}
    env = _make(**config, max_edits=1000)
    env.reset(seed=2)
    total = 0
    for k, _ in enumerate(_masked_steps(env, 40, 2, commit_p=0.05)):
        if k % 20 == 0:
            checked, wrong = _exhaustive(env)
            assert wrong == 0
            total += checked
    assert total > 100


def test_edit_cap_leaves_only_commit():
    env = _make(max_edits=2)
    env.reset(seed=0)
    u = env.unwrapped
    for _ in range(2):
        a = int(np.flatnonzero(u.action_masks())[1])
        _, r, _, _, info = env.step(a)
        assert r == 0.0 and not info["committed"]
    assert np.flatnonzero(u.action_masks()).tolist() == [0]
    _, _, _, _, info = env.step(0)
    assert info["committed"] and info["edits"] == 2
    assert len(np.flatnonzero(u.action_masks())) > 1


def test_episode_truncates_at_the_last_commit():
    env = _make(max_steps=3)
    env.reset(seed=0)
    flags = [env.step(0)[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_commit_reward_is_the_named_terms():
    env = _make()
    env.reset(seed=0)
    _, r, _, _, info = env.step(0)
    cfg = env.unwrapped.config
    assert r == pytest.approx(sum(cfg[k] * v for k, v in info["rewards"].items()))
    assert info["slo_attainment"] >= 0.0 and not info["plan_refused"]


def test_masked_edit_is_penalised_and_not_applied():
    env = _make()
    env.reset(seed=0)
    u = env.unwrapped
    masked = int(np.flatnonzero(~np.asarray(u.action_masks()))[0])
    before = u.editor.draft
    _, r, term, trunc, info = env.step(masked)
    assert r == -1.0 and info["invalid_action"] and not term and not trunc
    assert "masked edit" in info["infeasibility"]
    assert u.editor.draft is before


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (np.array([1, 2]), "shape"),
        (-1, "not allowed"),
        (10**6, "not allowed"),
        (1.5, "not an integer"),
        ("commit", "not an integer"),
    ],
)
def test_action_outside_the_space_is_a_value_error(action, match):
    env = _make()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


def test_topology_above_max_servers_names_both_numbers():
    with pytest.raises(ValueError, match=r"33 servers, above max_servers=16"):
        _make(scenario="large", max_servers=16)
    with pytest.raises(ValueError, match=r"4 models, above max_models=2"):
        _make(scenario="large", max_models=2)


def test_topology_zoo_graph_above_64_servers_is_refused():
    with pytest.raises(ValueError, match=r"74 servers, above max_servers=64"):
        _make(topology=_zoo("Uninett2010"))


def test_eua_sites_run():
    path = SHARED / "eua" / "site-optus-melbCBD.csv"
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    env = _make(topology=str(path))
    env.reset(seed=0)
    assert sum(info["invalid_action"] for _, (*_, info) in _masked_steps(env, 200, 0)) == 0


@pytest.mark.parametrize("home_move", [False, True])
def test_layout_round_trips(home_move):
    lay = EditLayout(8, 3, 4, home_move)
    for a in range(lay.n):
        kind, idx = lay.decode(a)
        assert lay.index(kind, *idx) == a
    assert lay.label(lay.index("move", 1, 2, 3), ("a", "b", "c")) == "move[b, g2, s3]"
    plain = EditLayout(8, 3, 4)
    # the home_move block follows the others, which keep their indices
    assert lay.n == plain.n + (3 * 8 if home_move else 0)
    assert {k: lay.offsets[k] for k in plain.kinds} == plain.offsets
    if home_move:
        assert lay.label(lay.index("home_move", 2, 5), ("a", "b", "c")) == "home_move[c, s5]"
        assert lay.decode(plain.n) == ("home_move", (0, 0))


def test_home_move_leaves_one_home_in_one_edit():
    env = _make(home_move=True)
    env.reset(seed=0)
    u = env.unwrapped
    lay, ed = u.layout, u.editor
    name = u.world.models[1]
    assert len(ed.draft.models[name].home) == u.world.n  # the naive plan: every server
    move = lay.views(u.action_masks())["home_move"]
    assert move[1, : u.world.n].all() and not move[:, u.world.n :].any()
    _, r, _, _, info = env.step(lay.index("home_move", 1, 3))
    assert not info["invalid_action"] and r == 0.0 and ed.edits == 1
    assert ed.draft.models[name].home == (3,)
    assert u.world.check(ed.draft).feasible
    move = lay.views(u.action_masks())["home_move"]
    assert not move[1, 3]  # already the only home: no change
    assert move[1, [0, 1, 2, 4]].all()
    _, r, _, _, info = env.step(lay.index("home_move", 1, 3))  # a masked edit: penalised
    assert info["invalid_action"] and r == -1.0 and ed.draft.models[name].home == (3,)
    env.step(0)  # the commit deploys it
    assert u.world.plan.models[name].home == (3,)
    assert "home_move" not in _make().unwrapped.layout.offsets


def test_generator_draws_seeded_instances_within_its_ranges():
    from coel_env.core.generator import GeneratorConfig, generate_overrides

    cfg = GeneratorConfig(n_servers=(3, 6), n_models=(1, 2))
    a = [generate_overrides(np.random.default_rng(7), cfg) for _ in range(2)]
    assert a[0] == a[1]
    many = [generate_overrides(np.random.default_rng(s), cfg) for s in range(30)]
    assert {o["topology.kind"] for o in many} == {"random_geometric", "waxman"}
    assert all(3 <= o["topology.n_servers"] <= 6 and 1 <= len(o["models"]) <= 2 for o in many)
    assert len({o["instance_seed"] for o in many}) == 30


def test_generated_env_is_seeded_and_changes_instance_at_reset():
    def sizes(seed):
        env = _make(generator={"n_servers": [3, 8]}, max_steps=2)
        out = []
        for k in range(4):
            env.reset(seed=seed + k)
            u = env.unwrapped
            out.append((u.world.n, u.world.models, u.world.scenario.instance_seed))
            for _, (*_, info) in _masked_steps(env, 6, k, commit_p=0.5):
                assert not info["invalid_action"]
        return out

    a, b = sizes(0), sizes(0)
    assert a == b
    assert len(set(a)) > 1


@pytest.mark.parametrize(
    ("generator", "match"),
    [
        ({"servers": 3}, "unknown generator key 'servers'"),
        ({"n_servers": [5, 3]}, r"generator.n_servers=\(5, 3\) is not allowed"),
        ({"models": ["gpt-9"]}, "generator.models: 'gpt-9' is not allowed"),
        ({"n_servers": [3, 80]}, "above max_servers=64"),
    ],
)
def test_bad_generator_config_names_the_key(generator, match):
    with pytest.raises(ValueError, match=match):
        _make(generator=generator)


def test_sub_actions_are_the_small_layouts_edits_in_order():
    lay = EditLayout(8, 3, 4)
    small = EditLayout(5, 2, 4)
    sub = lay.sub_actions(5, 2)
    assert len(sub) == small.n and (np.diff(sub) > 0).all()
    for j, a in enumerate(sub.tolist()):
        assert lay.decode(a) == small.decode(j)
    assert (lay.sub_actions(8, 3) == np.arange(lay.n)).all()
    with pytest.raises(ValueError, match=r"n_servers=9 is not allowed; must be in 1..8"):
        lay.sub_actions(9, 3)
    with pytest.raises(ValueError, match=r"n_models=0 is not allowed; must be in 1..3"):
        lay.sub_actions(8, 0)


def test_exploring_starts_edit_the_first_draft_seeded_and_uncounted():
    kinds = ["home_drop", "bits"]
    env = _make(start_edits=8, start_kinds=kinds)
    u = env.unwrapped
    drawn = []
    for seed in range(6):
        obs, info = env.reset(seed=seed)
        again, info2 = env.reset(seed=seed)
        assert info2 == info and _same(obs, again)  # seeded
        labels = info["start_edits"]
        assert len(labels) <= 8
        assert all(lab.split("[")[0] in kinds for lab in labels)
        assert u.editor.edits == 0  # the cap is the agent's alone
        # the draft is the naive plan with those edits, and the world accepts it
        assert bool(labels) == (u.editor.draft is not u.world.plan)
        assert u.world.check(u.editor.draft).feasible
        drawn.append(len(labels))
    assert max(drawn) > 0
    env.step(0)  # the first commit deploys the edited draft
    assert u.world.plan is not None
    plain = _make()
    _, info = plain.reset(seed=0)
    assert "start_edits" not in info


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"start_edits": -1}, r"start_edits=-1 is not allowed; must be an integer >= 0"),
        ({"start_edits": 2.5}, r"start_edits=2.5 is not allowed"),
        ({"start_kinds": ["commit"]}, r"start_kinds has 'commit', which is not allowed; edit"),
        ({"start_kinds": "bits"}, r"start_kinds='bits' is not allowed; must be None or a"),
        ({"start_kinds": []}, r"start_kinds=\[\] is not allowed"),
        ({"start_kinds": ["home_move"]}, r"'home_move', which is not allowed.*home_move=True"),
        ({"home_move": "yes"}, r"home_move='yes' is not allowed; must be true or false"),
    ],
)
def test_bad_exploring_start_config_names_the_key(config, match):
    with pytest.raises(ValueError, match=match):
        _make(**config)
