"""rgb_array and ansi rendering: down servers, failed links, the device view."""

import gymnasium as gym
import numpy as np
import pytest

import coel_env  # noqa: F401  (registers the ids)
from coel_env.core.plan import GPU, HOST
from coel_env.envs import render

RED = np.array([0xD6, 0x27, 0x28])  # crosses on down servers, failed links


@pytest.fixture(scope="module")
def env():
    env = gym.make("CoEL-v2", render_mode="rgb_array")
    env.reset(seed=0)
    env.step(np.zeros(env.action_space.shape, np.int64))  # keep the plan: a report to draw
    yield env
    env.close()


def _red_near(img: np.ndarray, x: float, y: float, r: int = 8) -> int:
    """Red pixels within ``r`` pixels of display point ``(x, y)`` (origin bottom left)."""
    row, col = int(round(img.shape[0] - y)), int(round(x))
    patch = img[max(row - r, 0) : row + r + 1, max(col - r, 0) : col + r + 1].astype(int)
    return int((np.abs(patch - RED).max(axis=2) <= 40).sum())


def _with_dyn(world, server_up=None, link_up=None):
    dyn = world.dyn.copy()
    if server_up is not None:
        dyn.server_up[:] = server_up
    if link_up is not None:
        dyn.link_up[:] = link_up
    return dyn


def test_frame_shape_dtype_and_one_figure_per_world(env):
    world = env.unwrapped.world
    img = env.render()
    assert img.shape == (600, 800, 3) and img.dtype == np.uint8
    view = render._VIEWS[world]
    again = env.render()
    assert render._VIEWS[world] is view  # built once, updated per frame
    np.testing.assert_array_equal(img, again)  # and the update redraws the same picture


def test_a_down_server_is_drawn_down_where_it_is(env):
    world = env.unwrapped.world
    saved = world.dyn
    env.render()
    view = render._VIEWS[world]
    try:
        world.dyn = _with_dyn(world, server_up=True)
        up = env.render()
        s = 3
        down = np.ones(world.n, bool)
        down[s] = False
        world.dyn = _with_dyn(world, server_up=down)
        img = env.render()
    finally:
        world.dyn = saved
    x, y = view.ax.transData.transform(view.xy[s])
    assert _red_near(up, x, y) == 0
    assert _red_near(img, x, y) > 20  # the red cross over it
    others = [view.ax.transData.transform(view.xy[t]) for t in range(world.n) if t != s]
    assert all(_red_near(img, *p) == 0 for p in others)
    assert "servers up 4/5" in view.status.get_text()


def test_a_failed_link_is_drawn_red(env):
    world = env.unwrapped.world
    saved = world.dyn
    env.render()
    view = render._VIEWS[world]
    k = 0
    u, v = world.topology.edges[k]
    mid = view.ax.transData.transform(view.xy[[u, v]].mean(axis=0))
    try:
        world.dyn = _with_dyn(world, server_up=True, link_up=True)
        ok = env.render()
        failed = np.ones(len(world.topology.edges), bool)
        failed[k] = False
        world.dyn = _with_dyn(world, server_up=True, link_up=failed)
        img = env.render()
    finally:
        world.dyn = saved
    assert _red_near(ok, *mid, r=4) == 0
    assert _red_near(img, *mid, r=4) > 0


def test_ansi_names_down_servers_and_links():
    env = gym.make("CoEL-v2", render_mode="ansi")
    env.reset(seed=0)
    world = env.unwrapped.world
    down = np.ones(world.n, bool)
    down[2] = False
    failed = np.ones(len(world.topology.edges), bool)
    failed[0] = False
    world.dyn = _with_dyn(world, server_up=down, link_up=failed)
    text = env.render()
    u, v = world.topology.edges[0]
    assert "servers down: 2\n" in text and f"links down: {u}-{v}\n" in text
    assert text.splitlines()[2 + 2].split()[2] == "no"  # server 2's row, column "up"


def test_intra_device_frame_shows_gpu_and_host_experts():
    env = gym.make("CoEL-IntraDevice-v0", render_mode="rgb_array")
    env.reset(seed=0)
    action = np.zeros(env.action_space.shape, np.int64)
    action[0] = 4  # half of each layer's experts on the GPU, the rest in host memory
    _, _, _, _, info = env.step(action)
    assert not info["invalid_action"]
    img = env.render()
    assert img.shape == (600, 800, 3) and img.dtype == np.uint8
    colours = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colours) > 50  # a picture, not a dot
    lut = np.round(render._tier_lut() * 255).astype(int)
    mp = env.unwrapped.world.plan.models["qwen1.5-moe-a2.7b"]
    for tier in (GPU, HOST):
        bits = int(mp.bits[mp.location[:, :, 0] == tier][0])
        near = np.abs(img.astype(int) - lut[tier, bits]).max(axis=2) <= 2
        n_cells = int((mp.location[:, :, 0] == tier).sum())
        assert near.sum() > 20 * n_cells  # every expert of the tier is a block of pixels


def test_render_frame_script_writes_a_frame_and_times_an_episode(tmp_path, capsys):
    import matplotlib.image

    from experiments.render_frame import main

    out = tmp_path / "frame.png"
    argv = ["--scenario", "default", "--policy", "none", "--no-failure", "--steps", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    assert matplotlib.image.imread(out).shape[:2] == (600, 800)
    assert main(["--bench", "--steps", "2", "--scenarios", "default"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert (
        line.startswith("CoEL-v2 default: 2 steps rendered at every step ") and "per frame" in line
    )
