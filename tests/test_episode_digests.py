"""Every registered id gives the same episodes as the recorded ones (seeds 0-4, whole
episodes, masked random actions): refactors of the envs, the world or the encodings must
not change an output.

Two records:

* ``tests/data/episode_digests.json``: the world before the fidelity round, recorded
  before it and never re-recorded; its episodes are run with
  :data:`coel_env.core.scenario.LEGACY_FIDELITY` and the presets' loads of that time
  (:data:`LEGACY_PRESETS`), so that the old settings keep giving the old episodes bit
  for bit;
* ``tests/data/episode_digests_current.json``: the current defaults, recorded with
  ``python tests/test_episode_digests.py --record`` at the commit that made them the
  defaults; re-record only when a change of dynamics is intended."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import coel_env
from coel_env.core.scenario import LEGACY_FIDELITY
from coel_env.envs import env_config

DIGESTS = Path(__file__).parent / "data" / "episode_digests.json"
CURRENT = Path(__file__).parent / "data" / "episode_digests_current.json"
#: Preset values the fidelity round retuned, at their values before it (by scenario).
LEGACY_PRESETS = {
    "default": {"workload.rate_per_s": 0.06},
    "inter": {"workload.rate_per_s": 0.06},
    "intra": {"workload.rate_per_s": 0.1},
}
SEEDS = range(5)
IDS = [env_id for env_id, *_ in coel_env.ENV_IDS]


def _masked_action(env, rng: np.random.Generator) -> np.ndarray:
    mask = env.unwrapped.action_masks()
    if isinstance(env.action_space, gym.spaces.Discrete):  # one flag per action
        return np.int64(rng.choice(np.flatnonzero(mask)))
    out, off = [], 0
    for k in env.action_space.nvec:
        out.append(rng.choice(np.flatnonzero(mask[off : off + k])))
        off += k
    return np.array(out, dtype=np.int64)


def _feed(h, value) -> None:
    """Hash a nested observation/info value by type, shape and bytes."""
    if isinstance(value, dict):
        for k in sorted(value):
            h.update(str(k).encode())
            _feed(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(f"seq{len(value)}".encode())
        for v in value:
            _feed(h, v)
    elif isinstance(value, np.ndarray):
        h.update(f"{value.dtype}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (float, np.floating)):
        h.update(np.float64(value).tobytes())
    else:
        h.update(repr(value).encode())


def legacy_overrides(env_id: str) -> dict:
    """The scenario overrides that give ``env_id``'s world before the fidelity round."""
    scenario = env_config(env_id)["scenario"]
    return {**LEGACY_FIDELITY, **LEGACY_PRESETS.get(scenario, {})}


def episode_digest(env_id: str, seed: int, overrides: dict | None = None) -> str:
    """SHA-256 of one whole episode: observations, rewards, flags and infos."""
    env = gym.make(env_id, config={"overrides": overrides} if overrides else None)
    rng = np.random.default_rng(seed)
    h = hashlib.sha256()
    obs, info = env.reset(seed=seed)
    _feed(h, obs)
    _feed(h, info)
    done = False
    while not done:
        obs, r, term, trunc, info = env.step(_masked_action(env, rng))
        for v in (obs, r, term, trunc, info):
            _feed(h, v)
        done = term or trunc
    env.close()
    return h.hexdigest()


@pytest.mark.parametrize("env_id", IDS)
def test_episodes_match_the_recorded_digests(env_id):
    recorded = json.loads(CURRENT.read_text())
    assert set(recorded) == set(IDS), "an id was added or removed: record its digests"
    got = [episode_digest(env_id, s) for s in SEEDS]
    assert got == recorded[env_id], f"{env_id}: an episode changed (seeds {list(SEEDS)})"


@pytest.mark.parametrize("env_id", IDS)
def test_the_legacy_settings_give_the_legacy_episodes(env_id):
    recorded = json.loads(DIGESTS.read_text())
    got = [episode_digest(env_id, s, legacy_overrides(env_id)) for s in SEEDS]
    assert got == recorded[env_id], f"{env_id}: a legacy episode changed (seeds {list(SEEDS)})"


if __name__ == "__main__":  # pragma: no cover
    if "--record" not in sys.argv:
        sys.exit("usage: python tests/test_episode_digests.py --record")
    table = {i: [episode_digest(i, s) for s in SEEDS] for i in IDS}
    CURRENT.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {CURRENT}")
