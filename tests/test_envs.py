"""Gymnasium environments: generated from the registry (check_env, determinism, pickling,
vector envs, observations, masks, rewards, bad input)."""

import pickle
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import coel_env

IDS = sorted(
    k
    for k in gym.registry
    if k.startswith(f"{coel_env.NAMESPACE}/") and k.split("/")[1] not in coel_env.ENTRY_POINTS
)  # the ids of CoELEnv (ids with their own class have their own tests)


def masked_sample(env, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random action among the choices action_masks() allows, per field."""
    mask = env.unwrapped.action_masks()
    out, off = [], 0
    for k in env.action_space.nvec:
        allowed = np.flatnonzero(mask[off : off + k])
        out.append(rng.choice(allowed))
        off += k
    return np.array(out, dtype=np.int64)


def rollout(env, seed: int, steps: int):
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    out = [(obs, info)]
    for _ in range(steps):
        obs, r, term, trunc, info = env.step(masked_sample(env, rng))
        out.append((obs, r, term, trunc, info))
        if term or trunc:
            obs, info = env.reset()
    return out


def test_registry_has_every_id_under_its_namespace():
    assert IDS == [
        f"coel_env/{i}"
        for i in (
            "CoEL-InterDevice-v0",
            "CoEL-InterDevice-v1",
            "CoEL-IntraDevice-v0",
            "CoEL-v0",
            "CoEL-v1",
            "CoEL-v2",
        )
    ]
    for full in IDS:
        assert gym.spec(full).max_episode_steps in (100, 200)


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_and_sb3_checkers_pass_without_warnings(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=False)
        sb3_check_env(env.unwrapped, warn=True)


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_episode(env_id):
    a = rollout(gym.make(env_id), 123, 200)
    b = rollout(gym.make(env_id), 123, 200)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x[0], y[0])
        assert x[1:] == y[1:]


@pytest.mark.parametrize("env_id", IDS)
def test_pickle_round_trip_keeps_the_episode(env_id):
    env = gym.make(env_id)
    rng = np.random.default_rng(0)
    env.reset(seed=5)
    for _ in range(5):
        env.step(masked_sample(env, rng))
    clone = pickle.loads(pickle.dumps(env))
    rng2 = np.random.default_rng(1)
    actions = [masked_sample(env, rng2) for _ in range(10)]
    for a in actions:
        o1, r1, *_, i1 = env.step(a)
        o2, r2, *_, i2 = clone.step(a)
        assert np.array_equal(o1, o2) and r1 == r2 and i1 == i2


@pytest.mark.parametrize("env_id", IDS)
def test_observations_stay_in_the_space_and_finite(env_id):
    env = gym.make(env_id)
    for step in rollout(env, 0, 300):
        obs = step[0]
        assert env.observation_space.contains(obs)
        assert np.isfinite(obs).all()


@pytest.mark.slow
@pytest.mark.parametrize("env_id", IDS)
def test_observations_stay_in_the_space_over_10k_steps(env_id):
    env = gym.make(env_id)
    for step in rollout(env, 1, 10_000):
        assert env.observation_space.contains(step[0])


@pytest.mark.parametrize("env_id", IDS)
def test_reward_is_the_weighted_sum_of_named_terms(env_id):
    env = gym.make(env_id)
    cfg = env.unwrapped.config
    env.reset(seed=0)
    _, r, _, _, info = env.step(masked_sample(env, np.random.default_rng(0)))
    terms = info["rewards"]
    assert set(terms) == set(coel_env.core.rewards.REWARD_TERMS)
    assert r == pytest.approx(sum(cfg[k] * v for k, v in terms.items()))


def test_invalid_action_is_penalised_and_keeps_the_plan():
    env = gym.make("CoEL-IntraDevice-v0")
    env.reset(seed=0)
    before = env.unwrapped.world.plan
    # everything resident on the GPU at 16 bits cannot fit a 24 GB L4
    action = np.array([8, 0, 0, 0, 0, 0])
    _, r, _, _, info = env.step(action)
    assert info["invalid_action"] and "GPU memory" in info["infeasibility"]
    assert info["rewards"]["invalid_reward"] == -1.0
    assert env.unwrapped.world.plan is before


def test_quantising_lets_the_whole_model_fit_the_gpu():
    env = gym.make("CoEL-IntraDevice-v0")
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([8, 2, 2, 2, 2, 0]))  # all resident at 4 bits
    assert not info["invalid_action"]
    mp = env.unwrapped.world.plan.models["qwen1.5-moe-a2.7b"]
    assert (mp.bits == 4).all() and (mp.location[:, :, 0] == 1).all()


def test_masks_cover_every_choice_and_allow_something_in_every_field():
    for env_id in IDS:
        env = gym.make(env_id)
        env.reset(seed=0)
        m = env.unwrapped.action_masks()
        nvec = env.action_space.nvec
        assert m.shape == (int(nvec.sum()),) and m.dtype == bool
        off = 0
        for k in nvec:
            assert m[off : off + k].any()
            off += k


def test_sync_vector_env_steps_like_single_envs():
    """Sub-env i of a vector env reset with seed=0 is the single env reset with seed i."""
    env_id = "CoEL-IntraDevice-v0"
    sync = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(2)])
    obs, _ = sync.reset(seed=0)
    sync.action_space.seed(0)
    actions = sync.action_space.sample()
    obs2, rew, term, trunc, _ = sync.step(actions)
    sync.close()
    assert obs.shape == (2, *gym.make(env_id).observation_space.shape)
    for i in range(2):
        single = gym.make(env_id)
        o, _ = single.reset(seed=i)
        np.testing.assert_array_equal(obs[i], o)
        o2, r, *_ = single.step(actions[i])
        np.testing.assert_array_equal(obs2[i], o2)
        assert rew[i] == r and np.isfinite(r)


@pytest.mark.slow
def test_sb3_spawn_subprocess_vec_env_runs():
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    # spawned workers start a fresh interpreter: the module form imports coel_env there
    venv = make_vec_env(
        "coel_env:CoEL-IntraDevice-v0",
        n_envs=2,
        seed=0,
        vec_env_cls=SubprocVecEnv,
        vec_env_kwargs={"start_method": "spawn"},
    )
    venv.reset()
    obs, rew, done, info = venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
    assert obs.shape[0] == 2 and np.isfinite(rew).all()
    venv.close()


def test_module_form_and_plain_id_work_in_a_fresh_interpreter():
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('coel_env:CoEL-v0'); env.reset(seed=0)\n"
        "import coel_env\n"
        "env = gym.make('CoEL-v0'); env.reset(seed=0)\n"
        "env = gym.make('coel_env/CoEL-IntraDevice-v0'); env.reset(seed=0)\n"
        "gym.pprint_registry()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "coel_env" in out.stdout and "CoEL-v0" in out.stdout


def test_registration_is_idempotent():
    before = len(gym.registry)
    coel_env.register_envs()
    assert len(gym.registry) == before


def test_render_modes():
    env = gym.make("CoEL-v0", render_mode="ansi")
    env.reset(seed=0)
    env.step(masked_sample(env, np.random.default_rng(0)))
    text = env.render()
    assert "SLO" in text and "l4" in text
    env = gym.make("CoEL-IntraDevice-v0", render_mode="rgb_array")
    env.reset(seed=0)
    img = env.render()
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 and img.std() > 0


@pytest.mark.parametrize(
    "config, message",
    [
        ({"nope": 1}, "unknown config key 'nope'; valid keys: action, broadcast_ref_mb"),
        ({"action": "teleport"}, "action='teleport' is not allowed; known encodings: intra-device"),
        ({"observation": 3}, "observation=3 is not allowed; known encodings: view, home-set"),
        ({"n_groups": 0}, "n_groups=0 is not allowed"),
        ({"controller": 99}, "controller=99 is not allowed; servers are 0..4"),
        ({"latency_ref_ms": -5}, "latency_ref_ms=-5 is not allowed; must be > 0"),
        ({"slo_reward": "high"}, "slo_reward='high' is not allowed"),
        ({"overrides": {"workload.rat": 1}}, "unknown scenario key 'workload.rat'"),
        ({"scenario": "nowhere"}, "neither a preset"),
    ],
)
def test_bad_config_raises_naming_key_value_and_allowed(config, message):
    with pytest.raises(ValueError) as exc:
        gym.make("CoEL-v0", config=config)
    assert message in str(exc.value)


@pytest.mark.parametrize("config", ["default", ["scenario"], 3])
def test_a_config_that_is_not_a_dict_is_a_type_error_naming_it(config):
    with pytest.raises(TypeError, match=f"config must be a dict of config keys.*{config!r}"):
        gym.make("CoEL-v2", config=config)


def test_every_id_is_the_one_class_with_its_row_of_the_table():
    for env_id, defaults, steps in coel_env.ENV_IDS:
        if env_id in coel_env.ENTRY_POINTS:  # its own class (tests/test_graph_env.py)
            continue
        env = gym.make(env_id)
        assert type(env.unwrapped) is coel_env.envs.CoELEnv
        assert env.spec.max_episode_steps == steps == env.unwrapped.config["max_steps"]
        assert {k: env.unwrapped.config[k] for k in defaults} == defaults
        assert env.unwrapped.config == coel_env.envs.env_config(env_id)
        # the user's config wins over the id's defaults
        other = gym.make(env_id, config={"scenario": "static"}).unwrapped.config
        assert other["scenario"] == "static" and other["action"] == defaults["action"]


def test_bad_render_mode():
    with pytest.raises(ValueError, match="render_mode='video' is not allowed; allowed: "):
        coel_env.envs.CoELEnv(render_mode="video")


def test_human_render_mode_is_the_envs_own(monkeypatch, capsys):
    """``gym.make(..., render_mode="human")`` used to wrap the env in Gymnasium's
    HumanRendering, which needs pygame: the env draws its frames with matplotlib."""
    from coel_env.envs import human

    env = gym.make("CoEL-v2", render_mode="human")
    assert type(env.unwrapped) is coel_env.envs.CoELEnv and env.unwrapped.render_mode == "human"
    assert "HumanRendering" not in str(env)
    # headless (no display: a non-interactive backend): one notice, then nothing
    monkeypatch.setattr(human, "interactive_backend", lambda: None)
    env.reset(seed=0)
    assert env.render() is None
    env.step(masked_sample(env, np.random.default_rng(0)))
    err = capsys.readouterr().err
    assert err.count("notice: render_mode='human' cannot open a window") == 1
    env.close()
    # with a window: every reset and step redraws it with the rgb_array frame
    monkeypatch.setattr(human, "interactive_backend", lambda: "a window")
    shown = []
    real_show = human.HumanWindow.show
    monkeypatch.setattr(human.HumanWindow, "show", lambda w, f: (shown.append(f), real_show(w, f)))
    env.reset(seed=0)
    env.step(masked_sample(env, np.random.default_rng(0)))
    window = env.unwrapped._window
    assert len(shown) == 2 and np.array_equal(window._image.get_array(), shown[-1])
    same = gym.make("CoEL-v2", render_mode="rgb_array")
    same.reset(seed=0)
    same.step(masked_sample(same, np.random.default_rng(0)))
    assert np.array_equal(shown[-1], same.render())
    env.close()
    assert env.unwrapped._window is None and "notice" not in capsys.readouterr().err


def test_step_before_reset_raises_a_clear_error():
    env = gym.make("CoEL-v2").unwrapped
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        env.step(env.action_space.sample())


@pytest.mark.parametrize(
    "action, message",
    [
        (np.zeros(3, np.int64), "action has shape (3,)"),
        (np.array([9, 0, 0, 0, 0, 0]), "action[0]=9 is not allowed; field 0 takes 0..8"),
        (np.array([-1, 0, 0, 0, 0, 0]), "action[0]=-1 is not allowed"),
        (np.array([np.nan, 0, 0, 0, 0, 0]), "must be finite integers"),
        (np.array([0.5, 0, 0, 0, 0, 0]), "action[0]=0.5 is not allowed"),
    ],
)
def test_bad_actions_raise(action, message):
    env = gym.make("CoEL-IntraDevice-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError) as exc:
        env.step(action)
    assert message in str(exc.value)


def test_reset_options_that_change_shapes_raise():
    env = gym.make("CoEL-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="would change the spaces' shapes"):
        env.reset(seed=0, options={"overrides": {"topology.n_servers": 7}})
    with pytest.raises(ValueError, match="unknown reset option 'foo'"):
        env.reset(seed=0, options={"foo": 1})
    obs, _ = env.reset(seed=0, options={"overrides": {"workload.rate_per_s": 0.1}})
    assert env.observation_space.contains(obs)


def test_placement_cache_leak_regression():
    """Every new plan used to leave its placements cached forever (33 MB / 1000 steps)."""
    env = gym.make("CoEL-v0")
    rollout(env, 0, 150)
    world = env.unwrapped.world
    assert len(world.serving._placements) <= len(world.models) * world.n


def test_action_masks_before_reset_raise_a_clear_error():
    with pytest.raises(RuntimeError, match="reset"):
        gym.make("CoEL-v0").unwrapped.action_masks()


def test_coel_masks_of_every_model_are_aligned_regression():
    """CoEL-v0 used to shift the masks of the second and later models by one home field
    (their home was never masked and the masked homes landed on later fields)."""
    env = gym.make("CoEL-v0").unwrapped
    env.reset(seed=0)
    env.world.dyn.server_up[2] = False  # a server that left cannot be a home
    mask = env.action_masks()
    nvec = env.action_space.nvec
    k = len(nvec) // len(env.world.models)
    at = 0
    for _ in env.world.models:
        fields = nvec[at : at + k]
        part = mask[int(nvec[:at].sum()) : int(nvec[: at + k].sum())]
        home = part[fields[0] : fields[0] + fields[1]]
        assert home.tolist() == [s != 2 for s in range(env.world.n)]
        assert part[fields[0] + fields[1] :].all()
        at += k


@pytest.mark.parametrize("env_id", ["CoEL-v2", "CoEL-InterDevice-v1", "CoEL-v0"])
def test_every_allowed_choice_has_a_feasible_completion(env_id):
    """The per-field masks block every choice the env can know to be infeasible on its own:
    each choice they allow at reset is part of some action whose plan the world accepts
    (found among masked random actions). What they cannot block are combinations
    (joint memory limits): README, "What the masks cannot express"."""
    from coel_env.core.plan import InfeasibilityReport, reuse_unchanged

    env = gym.make(env_id)
    u = env.unwrapped
    u.reset(seed=0)
    nvec = env.action_space.nvec
    parts = np.split(u.action_masks(), np.cumsum(nvec)[:-1])
    rng = np.random.default_rng(0)
    seen = [np.zeros(k, bool) for k in nvec]
    for _ in range(1500):
        a = np.array([rng.choice(np.flatnonzero(p)) for p in parts])
        plan = u.action_type.decode(a, u.world.plan, u.world.popularity_estimate())
        if isinstance(plan, InfeasibilityReport):
            continue
        if u.world.check(reuse_unchanged(plan, u.world.plan)).feasible:
            for f, c in enumerate(a):
                seen[f][c] = True
        if all(s[p].all() for s, p in zip(seen, parts, strict=True)):
            break
    names = u.feature_names()["action"]
    never = [f"{names[f]}={c}" for f, p in enumerate(parts) for c in np.flatnonzero(p & ~seen[f])]
    assert not never, f"allowed but never part of a feasible action: {never}"
