"""``CoELEnv.feature_names()``: one unique name per observation entry and per action
field for every registered id, labels for every choice, and names that sit where their
values are."""

from __future__ import annotations

import re

import numpy as np
import pytest

import coel_env
from coel_env.catalog import BITS
from coel_env.core.plan import KEEP_RATIOS
from coel_env.envs import CoELEnv, env_config

IDS = [env_id for env_id, *_ in coel_env.ENV_IDS if env_id not in coel_env.ENTRY_POINTS]


def _env(env_id: str, **config) -> CoELEnv:
    return CoELEnv(config={**env_config(env_id), **config})


def _sizes_and_uniqueness(env: CoELEnv) -> dict:
    names = env.feature_names()
    obs, act, choices = names["observation"], names["action"], names["action_choices"]
    assert len(obs) == env.observation_space.shape[0]
    assert len(act) == len(env.action_space.nvec)
    assert [len(c) for c in choices] == env.action_space.nvec.tolist()
    assert len(set(obs)) == len(obs), "observation names repeat"
    assert len(set(act)) == len(act), "action names repeat"
    for labels in choices:
        assert len(set(labels)) == len(labels), labels
    return names


@pytest.mark.parametrize("env_id", IDS)
def test_every_id_names_each_entry_once(env_id):
    _sizes_and_uniqueness(_env(env_id))


@pytest.mark.parametrize("env_id", ["CoEL-v2", "CoEL-v0"])
def test_names_fit_the_large_scenario(env_id):
    env = _env(env_id, scenario="large")
    names = _sizes_and_uniqueness(env)
    assert f"server[{env.world.n - 1}].is_controller" in names["observation"]


#: Choices of each action field, by the field's name without its model prefix.
def _expected_choices(field: str, n: int) -> int:
    if field == "update":
        return 3
    if field == "home":
        return n
    if re.fullmatch(r"home\[\d+\]|spread|replicate|host_policy", field):
        return 2
    if field.startswith("place[g"):
        return 4
    if field.startswith("bits[g"):
        return len(BITS)
    if field == "keep":
        return len(KEEP_RATIOS)
    if field == "resident":
        return 9
    raise AssertionError(f"unexpected action field {field!r}")


@pytest.mark.parametrize("env_id", IDS)
def test_action_names_match_their_fields(env_id):
    env = _env(env_id)
    names = env.feature_names()["action"]
    for name, size in zip(names, env.action_space.nvec.tolist(), strict=True):
        model, field = re.fullmatch(r"model\[([^\]]+)\]\.(.+)", name).groups()
        assert model in env.world.models
        assert _expected_choices(field, env.world.n) == size, name


@pytest.mark.parametrize("env_id", ["CoEL-v2", "CoEL-v0", "CoEL-IntraDevice-v0"])
def test_observation_names_sit_where_their_values_are(env_id):
    env = _env(env_id, controller=0)
    names = env.feature_names()["observation"]
    obs, _ = env.reset(seed=3)
    value = dict(zip(names, obs.tolist(), strict=True))
    w = env.world
    assert value["progress"] == 0.0
    for s in range(w.n):
        assert value[f"server[{s}].is_controller"] == float(s == 0)
    assert value["server[0].heard"] == 1.0 and value["server[0].present"] == 1.0
    for m in w.models:
        shares = [value[f"model[{m}].group[{g}].token_share"] for g in range(4)]
        assert sum(shares) == pytest.approx(1.0, abs=1e-5)
        assert shares == sorted(shares, reverse=True)  # group 0 is the most popular
        assert value[f"model[{m}].deployed"] == 1.0
        assert value[f"model[{m}].keep_ratio"] == w.plan.models[m].keep_ratio
        assert value[f"model[{m}].home[{w.plan.models[m].home[0]}]"] == 1.0
        for g in range(4):  # the naive plan: 16 bits, everything on its homes
            assert value[f"model[{m}].group[{g}].mean_bits"] == 1.0
            assert value[f"model[{m}].group[{g}].away_share"] == 0.0
    if env_id == "CoEL-IntraDevice-v0":  # Qwen (28.6 GB) does not fit the L4's 24 GB
        gpu = [value[f"model[{w.models[0]}].group[{g}].gpu_share"] for g in range(4)]
        assert 0.0 < max(gpu) < 1.0


def test_choice_labels_follow_the_mask_layout():
    env = _env("CoEL-v2")
    env.reset(seed=0)
    names = env.feature_names()
    flat = [
        f"{field}={label}"
        for field, labels in zip(names["action"], names["action_choices"], strict=True)
        for label in labels
    ]
    mask = env.action_masks()
    assert len(flat) == mask.shape[0]
    first = env.world.models[0]
    assert flat[:3] == [f"model[{first}].update={u}" for u in ("keep", "adjust", "redeploy")]
    assert np.all(mask[:3])  # deployed at reset: keep and adjust are allowed
    assert f"model[{first}].bits[g1]=4" in flat
