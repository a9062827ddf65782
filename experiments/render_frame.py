"""Write a rendered frame of a world as a PNG, or time an env episode rendered at every step.

    python experiments/render_frame.py [--scenario large] [--policy greedy] [--seed 0]
                                       [--out docs/render_large_failure.png]
                                       [--no-failure --steps N]
    python experiments/render_frame.py --bench [--id CoEL-v2] [--steps 200]
                                       [--scenarios default large]

Frame mode: builds the world of ``--scenario``, resets it with ``--seed`` and runs it with
the baseline ``--policy`` (``agents.baselines``; ``none`` keeps the world's naive plan)
until at least one server and one link are down (at most 500 epochs), or with
``--no-failure`` for ``--steps`` epochs; then writes what ``render_mode="rgb_array"``
shows (:func:`coel_env.envs.render.render_rgb`) to ``--out``. The defaults make
``docs/render_large_failure.png``. A scenario of one server (``intra``) gives the
device view.

Bench mode: for each of ``--scenarios``, one ``--steps``-step episode of ``--id`` with
``render_mode="rgb_array"`` and ``env.render()`` after every step (what Gymnasium's
``RecordVideo`` does), with masked random actions (seeded), after one untimed warm-up
frame (the figure is built once per env); prints the seconds for the episode with
rendering, without, and per frame. The aim: a 200-step episode under 20 s, rendering
included.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import coel_env  # noqa: F401  (registers the ids)


def masked_action(env, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random action among the choices ``action_masks()`` allows, per field."""
    mask = env.unwrapped.action_masks()
    out, off = [], 0
    for k in env.action_space.nvec:
        out.append(rng.choice(np.flatnonzero(mask[off : off + k])))
        off += k
    return np.array(out, dtype=np.int64)


def frame(scenario: str, seed: int, policy: str, failure: bool, steps: int) -> np.ndarray:
    """The world's frame after ``policy`` ran it until a failure (or ``steps`` epochs)."""
    from agents.baselines import make_policy
    from agents.harness import play
    from coel_env.core.world import World
    from coel_env.envs.render import render_rgb

    pol = None if policy == "none" else make_policy(policy)  # unknown: ValueError naming all
    world = World(scenario)
    world.reset(seed)
    if pol is not None:
        pol.reset(world, seed)
    report = None
    for rep, _, _ in play(world, 500 if failure else steps, pol):
        report = rep
        if failure and (~world.dyn.server_up).any() and (~world.dyn.link_up).any():
            break
    else:
        if failure:
            raise SystemExit(f"no server and link down together in 500 epochs (seed {seed})")
    down = np.flatnonzero(~world.dyn.server_up).tolist()
    print(
        f"epoch {world.epoch}: servers down {down}, links down {int((~world.dyn.link_up).sum())}",
        file=sys.stderr,
    )
    return render_rgb(world, report)


def bench(env_id: str, scenario: str, steps: int, seed: int) -> tuple[float, float]:
    """Seconds for a ``steps``-step episode rendered at every step, and without rendering."""
    out = []
    for render in (True, False):
        env = gym.make(
            env_id,
            config={"scenario": scenario, "max_steps": steps},
            render_mode="rgb_array",
            max_episode_steps=steps,
        )
        rng = np.random.default_rng(seed)
        env.reset(seed=seed)
        env.render()  # builds the figure (once per env), as RecordVideo's first frame does
        t0 = time.perf_counter()
        env.reset(seed=seed)
        for _ in range(steps):
            env.step(masked_action(env, rng))
            if render:
                env.render()
        out.append(time.perf_counter() - t0)
        env.close()
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--id", default="CoEL-v2", help="registered env id for --bench")
    p.add_argument("--scenario", default="large", help="scenario for the frame")
    p.add_argument("--policy", default="greedy", help="baseline for the frame; none: naive plan")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("docs/render_large_failure.png"))
    p.add_argument(
        "--failure",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="step until a server and a link are down (default on)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=200,
        help="epochs: without --failure for the frame; the bench's episode",
    )
    p.add_argument("--bench", action="store_true", help="time rendered episodes instead")
    p.add_argument("--scenarios", nargs="+", default=["default", "large"])
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error(f"--steps={a.steps} is not allowed; must be >= 1")
    if a.bench:
        for sc in a.scenarios:
            with_r, without = bench(a.id, sc, a.steps, a.seed)
            print(
                f"{a.id} {sc}: {a.steps} steps rendered at every step {with_r:.1f} s "
                f"(env alone {without:.1f} s; {(with_r - without) / a.steps * 1000:.0f} ms "
                f"per frame)"
            )
        return 0
    import matplotlib.image

    try:
        img = frame(a.scenario, a.seed, a.policy, a.failure, a.steps)
    except ValueError as e:  # a bad --policy or --scenario: the message names it
        p.error(str(e))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(a.out, img)
    print(f"wrote {a.out} ({img.shape[1]}x{img.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
