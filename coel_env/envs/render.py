"""Rendering: a text summary (``ansi``) and a picture of the deployment (``rgb_array``)."""

from __future__ import annotations

import numpy as np

from coel_env.core.plan import ABSENT


def _hosted(world) -> list[list[str]]:
    out = [[] for _ in range(world.n)]
    for name, mp in world.plan.models.items():
        for s in np.flatnonzero((mp.location != ABSENT).any(axis=(0, 1))):
            tag = name.split("-")[0] + ("*" if s in mp.home else "")
            out[int(s)].append(tag)
    return out


def render_ansi(world, report) -> str:
    """One line per server (device, state, memory, load, hosted models; * = home) and
    the last epoch's metrics."""
    gpu, _ = world.memory_use_gb()
    util = report.utilisation if report is not None else (0.0,) * world.n
    hosted = _hosted(world)
    lines = [f"epoch {world.epoch}  t={world.t_s:.0f}s  scenario {world.scenario.name}"]
    lines.append(f"{'srv':>3} {'gpu':<22} {'up':<3} {'gpu mem GB':>12} {'util':>5}  hosted")
    for s, srv in enumerate(world.servers):
        up = "yes" if world.dyn.server_up[s] else "no"
        mem = f"{gpu[s]:.1f}/{world.gpu_capacity_gb[s]:.0f}"
        lines.append(
            f"{s:>3} {srv.gpu:<22} {up:<3} {mem:>12} {util[s]:>5.2f}  {', '.join(hosted[s])}"
        )
    if report is not None:
        lines.append(
            f"arrived {report.requests_arrived}  served {report.requests_served}  "
            f"dropped {report.requests_dropped}  SLO {report.slo_attainment:.2f}  "
            f"p95 {report.latency_p95_ms / 1000:.1f}s  quality loss {report.quality_loss:.3f}"
        )
    return "\n".join(lines) + "\n"


def render_rgb(world, report) -> np.ndarray:
    """The topology with server load (colour), GPU memory use (size) and homes (labels)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import networkx as nx

    g = world.topology.graph
    pos = {}
    for s, srv in enumerate(world.servers):
        if srv.lat is not None and srv.lon is not None:
            pos[s] = (srv.lon, srv.lat)
    if len(pos) != world.n:
        pos = nx.spring_layout(g, seed=0)
    gpu, _ = world.memory_use_gb()
    util = np.asarray(report.utilisation if report is not None else np.zeros(world.n))
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=80)
    up_edges = [e for e in g.edges]
    nx.draw_networkx_edges(g, pos, edgelist=up_edges, ax=ax, alpha=0.4)
    sizes = 200 + 800 * np.clip(gpu / np.maximum(world.gpu_capacity_gb, 1e-9), 0, 1)
    colors = np.where(world.dyn.server_up, util, np.nan)
    nx.draw_networkx_nodes(
        g, pos, ax=ax, node_size=sizes, node_color=np.nan_to_num(colors, nan=0.0),
        cmap="viridis", vmin=0, vmax=1,
    )  # fmt: skip
    hosted = _hosted(world)
    labels = {s: f"{s}\n{','.join(hosted[s])}" for s in range(world.n)}
    nx.draw_networkx_labels(g, pos, labels, ax=ax, font_size=7)
    title = f"epoch {world.epoch}"
    if report is not None:
        title += f"  SLO {report.slo_attainment:.2f}  p95 {report.latency_p95_ms / 1000:.1f}s"
    ax.set_title(title)
    ax.set_axis_off()
    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
    plt.close(fig)
    return img
