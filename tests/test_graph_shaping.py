"""CoEL-Graph-v0's potential-based shaping from a paired lookahead (``shaping_epochs``):
it telescopes over an episode, leaves the world's own trajectory alone, equals the
paired lookahead it documents, and refuses bad config."""

from __future__ import annotations

import dataclasses
import pickle

import gymnasium as gym
import numpy as np
import pytest

import coel_env  # noqa: F401 - registers the ids
from coel_env.core.plan import Plan
from coel_env.envs.shaping import homes_of, lookahead_return, world_copy

ENV = "CoEL-Graph-v0"


def _env(**config):
    return gym.make(ENV, config={"max_steps": 6, "home_move": True, **config}).unwrapped


def _home_edits(env) -> np.ndarray:
    lay = env.layout
    return np.flatnonzero(env.action_masks() & lay.kind_mask(["home_drop", "home_move"], "kinds"))


def _play(env, seed: int, n: int = 120):
    """Masked random actions, a home edit whenever one is allowed with probability 0.3;
    returns the (reward, info) of every step until the episode ends."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        homes = _home_edits(env)
        allowed = np.flatnonzero(env.action_masks())
        if len(homes) and rng.random() < 0.3:
            a = int(rng.choice(homes))
        elif len(allowed) == 1 or rng.random() < 0.3:
            a = 0
        else:
            a = int(rng.choice(allowed[1:]))
        _, r, _, trunc, info = env.step(a)
        out.append((r, info))
        if trunc:
            break
    return out


def test_shaping_telescopes_over_an_episode_and_the_world_is_untouched():
    shaped, plain = _env(shaping_epochs=2), _env()
    shaped.reset(seed=3)
    plain.reset(seed=3)
    a, b = _play(shaped, 0), _play(plain, 0)
    assert len(a) == len(b) and b[-1][1]["committed"]  # a whole episode
    g = shaped.config["shaping_gamma"]
    assert shaped.shaping.lookaheads > 0  # homes did change
    disc = [g**t for t in range(len(a))]
    terms = [info.get("shaping", 0.0) for _, info in a]
    assert any(abs(f) > 1e-6 for f in terms)
    # sum of gamma^t (gamma phi(s_t+1) - phi(s_t)) = gamma^T phi(s_T) - phi(s_0), and
    # phi(s_0) = 0 (the starting homes); truncation keeps the last state's potential
    last = shaped.shaping(shaped.world, shaped.editor.draft)
    assert last == shaped._phi
    assert float(np.dot(disc, terms)) == pytest.approx(g ** len(a) * last, abs=1e-9)
    for (ra, ia), (rb, ib) in zip(a, b, strict=True):
        # the same world trajectory: the lookahead's copies leave the world alone
        assert ia.get("rewards") == ib.get("rewards")
        assert ra == pytest.approx(rb + ia.get("shaping", 0.0), abs=1e-12)
    assert "shaping" not in b[0][1]


def test_a_home_edit_is_paid_the_paired_lookahead():
    env = _env(shaping_epochs=3)
    env.reset(seed=5)
    env.step(0)
    homes = _home_edits(env)
    a = int(homes[0])
    w = env.world
    draft_before = env.editor.draft
    _, r, _, _, info = env.step(a)
    draft = env.editor.draft
    assert homes_of(draft) != homes_of(draft_before)
    ref = env.shaping._reference(draft)
    phi = lookahead_return(w, draft, 3, env.config) - lookahead_return(w, ref, 3, env.config)
    assert phi != 0.0
    assert r == info["shaping"] == pytest.approx(env.config["shaping_gamma"] * phi, abs=1e-12)


def test_world_copy_steps_as_the_world():
    env = _env()
    env.reset(seed=1)
    for _ in range(3):
        env.step(0)
    w = env.world
    c = world_copy(w)
    assert not c.serving._act  # the activity cache is not copied
    for _ in range(4):
        assert c.step() == w.step()


def test_shaped_env_pickles_and_continues_the_same_episode():
    env = _env(shaping_epochs=2)
    env.reset(seed=2)
    _play(env, 1, n=15)
    twin = pickle.loads(pickle.dumps(env))
    assert _play(env, 4, n=20) == _play(twin, 4, n=20)


@pytest.mark.parametrize(
    "config, match",
    [
        ({"shaping_epochs": -1}, r"shaping_epochs=-1 .*integer >= 0"),
        ({"shaping_epochs": 2.5}, r"shaping_epochs=2\.5 .*integer >= 0"),
        ({"shaping_gamma": 0.0}, r"shaping_gamma=0\.0 .*\(0, 1\]"),
        ({"shaping_gamma": 1.5}, r"shaping_gamma=1\.5 .*\(0, 1\]"),
        ({"shaping_gamma": True}, r"shaping_gamma=True .*\(0, 1\]"),
    ],
)
def test_bad_shaping_config_names_the_key(config, match):
    with pytest.raises(ValueError, match=match):
        gym.make(ENV, config=config)


def test_the_potential_is_kept_by_homes_and_bit_widths():
    env = _env(shaping_epochs=2)
    env.reset(seed=5)
    env.step(0)
    assert env.shaping(env.world, env.editor.draft) == 0.0  # the starting homes: no lookahead
    assert env.shaping.lookaheads == 0
    env.step(int(_home_edits(env)[0]))
    assert env.shaping.lookaheads == 2
    phi = env._phi
    assert env.shaping(env.world, env.editor.draft) == phi  # kept: no new lookahead
    assert env.shaping.lookaheads == 2
    lay = env.layout
    first = env.shaping.lookaheads
    for _ in range(3):  # one group's width: the models' main widths stay: kept
        bits = np.flatnonzero(env.action_masks() & lay.kind_mask(["bits"], "kinds"))
        env.step(int(bits[0]))
    assert env.shaping.lookaheads == first
    w = env.world  # every expert of every model at 8 bits: a new lookahead
    draft = env.editor.draft
    eight = Plan({n: dataclasses.replace(mp, bits=np.full_like(mp.bits, 8))
                  for n, mp in draft.models.items()})  # fmt: skip
    env.shaping(w, eight)
    assert env.shaping.lookaheads == first + 2
