"""Rendering: a text summary (``ansi``) and a picture of the deployment (``rgb_array``).

``rgb_array`` draws one of two views:

* a **deployment map** for worlds of several servers: the topology with each server's GPU
  load (colour, with a colour bar), GPU memory in use (size), homes (black ring), down
  servers (grey with a red cross), failed links (red, dashed) and the cloud (a square
  above the map, its WAN links faint); below it, which server holds what of each model;
* a **device view** for one server (``CoEL-IntraDevice-v0``): GPU and host memory in use
  against capacity and, per model, where every expert of every layer sits (GPU, host
  memory or absent, shaded by bit width), with the share of the routed tokens each tier
  receives.

The figure of a world is built once (matplotlib's Agg canvas, no pyplot) and its artists
are updated at every frame, so recording every step stays cheap (a 200-step episode of
``large`` renders in a few seconds; ``experiments/render_frame.py --bench``).
"""

from __future__ import annotations

import weakref

import numpy as np

from coel_env.core.plan import ABSENT, GPU, HOST


def _hosted(world) -> list[list[str]]:
    out = [[] for _ in range(world.n)]
    for name, mp in world.plan.models.items():
        for s in np.flatnonzero((mp.location != ABSENT).any(axis=(0, 1))):
            tag = name.split("-")[0] + ("*" if s in mp.home else "")
            out[int(s)].append(tag)
    return out


def render_ansi(world, report) -> str:
    """One line per server (device, state, memory, load, hosted models; * = home) and
    the last epoch's metrics; down servers and failed links are named."""
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
    down = np.flatnonzero(~np.asarray(world.dyn.server_up))
    if down.size:
        lines.append("servers down: " + ", ".join(str(int(s)) for s in down))
    failed = np.flatnonzero(~np.asarray(world.dyn.link_up))
    if failed.size:
        edges = world.topology.edges
        lines.append("links down: " + ", ".join(f"{edges[k][0]}-{edges[k][1]}" for k in failed))
    if report is not None:
        lines.append(
            f"arrived {report.requests_arrived}  served {report.requests_served}  "
            f"dropped {report.requests_dropped}  SLO {report.slo_attainment:.2f}  "
            f"p95 {report.latency_p95_ms / 1000:.1f}s  quality loss {report.quality_loss:.3f}"
        )
    return "\n".join(lines) + "\n"


#: One figure per world, dropped with the world (envs build a new world on reset options).
_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: Frame size [inches] and resolution: 800 x 600 pixels, even sides for video encoders.
_SIZE_IN = (8.0, 6.0)
_DPI = 100


def render_rgb(world, report) -> np.ndarray:
    """The world as an RGB image ``uint8 [600, 800, 3]``: the deployment map, or the
    device view for a world of one server (see the module docstring)."""
    view = _VIEWS.get(world)
    if view is None or view.topology is not world.topology:
        view = (_DeviceView if world.n == 1 else _MapView)(world)
        _VIEWS[world] = view
    return view.draw(world, report)


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=_SIZE_IN, dpi=_DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


class _Blitted:
    """A figure whose static parts (axes, ticks, legends, colour bar) are drawn once.

    Subclasses build ``self.fig``, list the artists that change in ``self.animated``
    (drawn at every frame, in that order) and the fixed labels that go on top in
    ``self.overlay``, then call :meth:`_freeze`. A frame restores the static background,
    draws the animated artists and pastes the labels' pixels (drawn once), which is
    several times faster than drawing the whole figure (text is the slow part).
    """

    fig = None
    animated: list = []
    overlay: list = []

    def _freeze(self) -> None:
        canvas = self.fig.canvas
        for a in (*self.animated, *self.overlay):
            a.set_animated(True)  # left out of canvas.draw()
        canvas.draw()
        self._bg = canvas.copy_from_bbox(self.fig.bbox)
        # the labels alone on a transparent canvas: their colour and coverage (alpha), so
        # their white outlines are pasted over whatever links a frame draws beneath
        canvas.get_renderer().clear()
        for a in self.overlay:
            self.fig.draw_artist(a)
        rgba = np.asarray(canvas.buffer_rgba()).reshape(-1, 4)
        self._label_at = np.flatnonzero(rgba[:, 3])
        self._label_rgb = rgba[self._label_at, :3].astype(np.float32)
        self._label_alpha = rgba[self._label_at, 3:].astype(np.float32) / 255.0

    def _frame(self) -> np.ndarray:
        canvas = self.fig.canvas
        canvas.restore_region(self._bg)
        for a in self.animated:
            self.fig.draw_artist(a)
        img = np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
        flat = img.reshape(-1, 3)
        under = flat[self._label_at].astype(np.float32)
        a = self._label_alpha
        flat[self._label_at] = (under * (1 - a) + self._label_rgb * a + 0.5).astype(np.uint8)
        return img


def _legend(fig, loc: str, anchor: tuple[float, float], *args, **kwargs) -> None:
    """A legend of the figure's right-hand column (small type, no frame) whose ``loc``
    corner sits at ``anchor``; ``args`` and ``kwargs`` as for ``Figure.legend``."""
    fig.legend(*args, loc=loc, bbox_to_anchor=anchor, fontsize=8, frameon=False, **kwargs)


def _title(world, report) -> str:
    text = f"{world.scenario.name}  epoch {world.epoch}  t={world.t_s:.0f} s"
    if report is not None:
        text += (
            f"   SLO {report.slo_attainment:.2f}   p95 {report.latency_p95_ms / 1000:.1f} s"
            f"   served {report.requests_served}/{report.requests_arrived}"
        )
    return text


def _outlined(size: float = 9.0) -> dict:
    """Text keywords: black on a white outline, readable over nodes and links."""
    from matplotlib import patheffects

    return {
        "fontsize": size,
        "color": "black",
        "path_effects": [patheffects.withStroke(linewidth=2.5, foreground="white")],
    }


# ------------------------------------------------------------------- deployment map

#: Node area [points^2]: empty GPU to full GPU.
_SIZE_MIN, _SIZE_MAX = 30.0, 240.0
#: A home's ring: this much wider than its node [points].
_RING_PT = 4.0
#: Deployment matrix categories (the colour of each cell).
_CELLS = (
    ("none", "#ffffff"),
    ("experts in host memory", "#f4b183"),
    ("experts on GPU", "#9dc3e6"),
    ("home (dense part)", "#1f4e79"),
    ("server down", "#bfbfbf"),
)


class _MapView(_Blitted):
    """The deployment map of a world of several servers."""

    def __init__(self, world) -> None:
        import matplotlib as mpl
        from matplotlib.collections import LineCollection
        from matplotlib.colors import ListedColormap
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        self.topology = world.topology
        n = world.n
        self.cloud = np.asarray(world.is_cloud, bool)
        self.edge_ids = np.flatnonzero(~self.cloud)
        self.cloud_ids = np.flatnonzero(self.cloud)
        xy = _positions(world)
        self.xy = xy
        self.ends = edges = np.asarray(world.topology.edges, np.int64).reshape(-1, 2)
        self.segments = xy[edges]  # [n_edges, 2, 2]
        self.wan = self.cloud[edges].any(axis=1)
        self.fig = fig = _figure()

        # the map, with room above the edge servers for the cloud
        ax = self.ax = fig.add_axes((0.01, 0.30, 0.70, 0.62))
        ax.set_axis_off()
        lo, hi = xy[self.edge_ids].min(axis=0), xy[self.edge_ids].max(axis=0)
        span = np.maximum(hi - lo, 1e-9)
        top = xy[:, 1].max()
        ax.set_xlim(lo[0] - 0.07 * span[0], hi[0] + 0.07 * span[0])
        ax.set_ylim(lo[1] - 0.07 * span[1], top + 0.08 * span[1])
        self.links = LineCollection([], colors="#8c8c8c", linewidths=1.0, alpha=0.6, zorder=1)
        self.wan_links = LineCollection([], colors="#8c8c8c", linewidths=0.6, alpha=0.18, zorder=1)
        self.failed = LineCollection(
            [], colors="#d62728", linewidths=1.6, linestyles=(0, (3, 2)), zorder=2
        )
        for c in (self.wan_links, self.links, self.failed):
            ax.add_collection(c)
        self.cmap = mpl.colormaps["viridis"].with_extremes(bad="#c8c8c8", over="#fde725")
        self.norm = mpl.colors.Normalize(0.0, 1.0)

        def loads(ids: np.ndarray, **style):  # markers filled by GPU utilisation
            return ax.scatter(xy[ids, 0], xy[ids, 1], c=np.zeros(len(ids)), cmap=self.cmap,
                              norm=self.norm, zorder=3, **style)  # fmt: skip

        self.nodes = loads(self.edge_ids, s=_SIZE_MIN, edgecolors="white", linewidths=1.2)
        self.clouds = loads(
            self.cloud_ids, s=_SIZE_MAX, marker="s", edgecolors="#1f77b4", linewidths=2.0
        )
        # homes: a black ring outside the node's white edge, visible on any fill colour
        self.rings = ax.scatter(
            [],
            [],
            s=[],
            marker="o",
            facecolors="none",
            edgecolors="black",
            linewidths=1.8,
            zorder=3,
        )
        self.crosses = ax.scatter([], [], s=90, marker="x", c="#d62728", linewidths=2.2, zorder=4)
        fig.canvas.draw()  # fixes the data-to-pixel transform the labels are placed with
        self._place_labels(world, xy)
        self.title = fig.text(0.01, 0.975, "", fontsize=11, va="top", weight="bold")
        self.status = fig.text(0.01, 0.935, "", fontsize=9, va="top")

        # colour bar and legend
        cax = fig.add_axes((0.745, 0.62, 0.022, 0.26))
        cb = fig.colorbar(mpl.cm.ScalarMappable(self.norm, self.cmap), cax=cax, extend="max")
        cb.set_label("GPU utilisation", fontsize=9)
        cb.ax.tick_params(labelsize=8)
        dot = {"ls": "", "marker": "o", "mec": "white", "mew": 1.2}
        entries = [  # (handle, label); a tuple of handles is drawn overlaid
            (Line2D([], [], ms=6, mfc="#21918c", **dot), "server (area: GPU memory)"),
            (
                (
                    Line2D([], [], ls="", marker="o", ms=13, mfc="none", mec="black", mew=1.8),
                    Line2D([], [], ms=8, mfc="#21918c", **dot),
                ),
                "home of a model",
            ),
            (
                (
                    Line2D([], [], ms=7, mfc="#c8c8c8", **dot),
                    Line2D([], [], ls="", marker="x", ms=7, mec="#d62728", mew=2),
                ),
                "server down",
            ),
            (Line2D([], [], ls="", marker="s", ms=9, mfc="#21918c", mec="#1f77b4", mew=2), "cloud"),
            (Line2D([], [], color="#8c8c8c", lw=1.2), "link"),
            (Line2D([], [], color="#d62728", lw=1.6, ls=(0, (3, 2))), "link down"),
        ]
        if not self.cloud_ids.size:
            del entries[3]
        handles, labels = zip(*entries, strict=True)
        _legend(fig, "upper left", (0.73, 0.60), handles, labels, handletextpad=0.6,
                borderaxespad=0.0)  # fmt: skip

        # the deployment matrix: models x servers
        self.models = tuple(world.models)
        mx = self.matrix_ax = fig.add_axes((0.09, 0.055, 0.63, 0.04 * len(self.models) + 0.04))
        # a mesh draws its own cell borders (a grid would sit under an animated image)
        self.image = mx.pcolormesh(
            np.arange(-0.5, n),
            np.arange(-0.5, len(self.models)),
            np.zeros((len(self.models), n), np.int8),
            cmap=ListedColormap([c for _, c in _CELLS]),
            vmin=-0.5,
            vmax=len(_CELLS) - 0.5,
            edgecolors="#d9d9d9",
            linewidth=0.5,
        )
        mx.set_xlim(-0.5, n - 0.5)
        mx.set_ylim(len(self.models) - 0.5, -0.5)
        mx.set_yticks(range(len(self.models)), [m.split("-")[0] for m in self.models], fontsize=8)
        step = 1 if n <= 40 else int(np.ceil(n / 40))
        ticks = list(range(0, n, step))
        mx.set_xticks(ticks, ["C" if self.cloud[s] else str(s) for s in ticks], fontsize=7)
        mx.tick_params(length=2, pad=1)
        mx.set_xlabel("server", fontsize=8, labelpad=1)
        cells = [Patch(facecolor=c, edgecolor="#808080") for _, c in _CELLS]
        _legend(fig, "lower left", (0.73, 0.03), cells, [label for label, _ in _CELLS],
                title="models by server", title_fontsize=8)  # fmt: skip
        self.animated = [
            self.wan_links,
            self.links,
            self.failed,
            self.nodes,
            self.rings,
            self.clouds,
            self.crosses,
            self.image,
            self.title,
            self.status,
        ]
        self._freeze()

    def _place_labels(self, world, xy: np.ndarray) -> None:
        """Index labels beside the nodes, each where it covers the fewest nodes and
        earlier labels (greedy, once per topology: positions never move)."""
        ax = self.ax
        px = ax.transData.transform(xy)
        font_px = 9.0 * _DPI / 72.0
        names = ["cloud" if self.cloud[s] else str(s) for s in range(world.n)]
        r_node = (np.sqrt(_SIZE_MAX) + _RING_PT) / 2 * _DPI / 72.0 + 3.0  # ring and a gap
        angles = np.deg2rad([0, 180, 90, 270, 45, 135, 315, 225])
        boxes: list[tuple[float, float, float, float]] = []
        axbox = ax.bbox
        # crowded nodes first: they have the fewest good spots
        dist = np.linalg.norm(px[:, None] - px[None], axis=2)
        order = np.argsort(np.sort(dist, axis=1)[:, 1] if world.n > 1 else [0])
        place = {}
        for s in order:
            w = 0.62 * font_px * len(names[s]) + 2
            h = font_px + 2
            best = None
            for k, a in enumerate(angles):
                cx = px[s, 0] + np.cos(a) * (r_node + w / 2)
                cy = px[s, 1] + np.sin(a) * (r_node + h / 2)
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                cost = 0.01 * k  # a mild preference for right, left, above, below
                d = np.hypot(
                    np.clip(px[:, 0], box[0], box[2]) - px[:, 0],
                    np.clip(px[:, 1], box[1], box[3]) - px[:, 1],
                )
                cost += 3.0 * np.clip(r_node - d, 0, None).sum() / r_node
                # a label nearer another node than its own reads as that node's
                centre = np.hypot(
                    px[:, 0] - (box[0] + box[2]) / 2, px[:, 1] - (box[1] + box[3]) / 2
                )
                if centre.argmin() != s:
                    cost += 2.0
                for b in boxes:
                    ox = min(box[2], b[2]) - max(box[0], b[0])
                    oy = min(box[3], b[3]) - max(box[1], b[1])
                    if ox > 0 and oy > 0:
                        cost += 10.0 * ox * oy / (w * h)
                if box[0] < axbox.x0 or box[2] > axbox.x1 or box[1] < axbox.y0 or box[3] > axbox.y1:
                    cost += 5.0
                if best is None or cost < best[0]:
                    best = (cost, box)
            boxes.append(best[1])
            place[s] = best[1]
        inv = ax.transData.inverted()
        self.overlay = []
        for s, box in place.items():
            x, y = inv.transform(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
            t = ax.text(
                x,
                y,
                names[s],
                ha="center",
                va="center",
                zorder=5,
                **_outlined(9.0),
                weight="bold" if self.cloud[s] else "normal",
            )
            self.overlay.append(t)

    def draw(self, world, report) -> np.ndarray:
        up = np.asarray(world.dyn.server_up, bool)
        link_up = np.asarray(world.dyn.link_up, bool)
        gpu, host = world.memory_use_gb()
        cap = np.maximum(world.gpu_capacity_gb, 1e-9)
        util = np.zeros(world.n) if report is None else np.asarray(report.utilisation, float)
        homes = np.zeros(world.n, bool)
        cells = np.zeros((len(self.models), world.n), np.int8)
        for i, name in enumerate(self.models):
            mp = world.plan.models.get(name)
            if mp is None:
                continue
            loc = mp.location
            cells[i, (loc == HOST).any(axis=(0, 1))] = 1
            cells[i, (loc == GPU).any(axis=(0, 1))] = 2
            cells[i, list(mp.home)] = 3
            homes[list(mp.home)] = True
        cells[:, ~up] = 4
        self.image.set_array(cells.ravel())

        e = self.edge_ids
        self.nodes.set_array(np.ma.masked_array(util[e], mask=~up[e]))
        sizes = _SIZE_MIN + (_SIZE_MAX - _SIZE_MIN) * np.clip(gpu[e] / cap[e], 0, 1)
        self.nodes.set_sizes(sizes)
        ring = homes[e] & up[e]
        self.rings.set_offsets(self.xy[e[ring]].reshape(-1, 2))
        self.rings.set_sizes((np.sqrt(sizes[ring]) + _RING_PT) ** 2)
        if self.cloud_ids.size:
            self.clouds.set_array(np.ma.masked_array(util[self.cloud_ids], ~up[self.cloud_ids]))
        self.crosses.set_offsets(self.xy[~up].reshape(-1, 2))
        ok = link_up & up[self.ends].all(axis=1)
        # links to a down server are up but carry nothing: drawn faint, like the WAN
        self.links.set_segments(self.segments[ok & ~self.wan])
        self.wan_links.set_segments(self.segments[link_up & (self.wan | ~ok)])
        self.failed.set_segments(self.segments[~link_up])
        self.title.set_text(_title(world, report))
        n_up = int(up.sum())
        self.status.set_text(
            f"servers up {n_up}/{world.n}   links up {int(link_up.sum())}/{link_up.size}"
            f" ({int(ok.sum())} usable)   GPU memory {gpu[up].sum():.0f}/{cap[up].sum():.0f} GB"
            f"   host memory {host[up].sum():.0f} GB"
        )
        return self._frame()


def _positions(world) -> np.ndarray:
    """Node coordinates ``[n, 2]``: the generator's kilometres, else longitude/latitude,
    else a seeded spring layout (computed once per topology). The cloud sits centred
    above the edge servers."""
    g = world.topology.graph
    servers = world.servers
    n = world.n
    edge = [s for s in range(n) if not servers[s].is_cloud]
    xy = np.zeros((n, 2))
    if edge and all("pos_km" in g.nodes[s] for s in edge):
        xy[edge] = [g.nodes[s]["pos_km"] for s in edge]
    elif edge and all(servers[s].lat is not None and servers[s].lon is not None for s in edge):
        xy[edge] = [(servers[s].lon, servers[s].lat) for s in edge]
    else:
        import networkx as nx

        pos = nx.spring_layout(g.subgraph(edge), seed=0)
        xy[edge] = [pos[s] for s in edge]
    if len(edge) < n:
        lo, hi = xy[edge].min(axis=0), xy[edge].max(axis=0)
        span = np.maximum(hi - lo, 1e-9)
        clouds = [s for s in range(n) if servers[s].is_cloud]
        for k, c in enumerate(clouds):
            xy[c] = (lo[0] + span[0] * (k + 1) / (len(clouds) + 1), hi[1] + 0.22 * span[1])
    return xy


# ---------------------------------------------------------------------- device view

#: Tier colours (GPU, host) shaded by bit width: 16 bits darkest.
_TIER_RGB = {GPU: np.array([0.13, 0.44, 0.71]), HOST: np.array([0.93, 0.49, 0.19])}
_ABSENT_RGB = np.array([0.93, 0.93, 0.93])


def _tier_lut() -> np.ndarray:
    """``lut[tier, bits]`` -> RGB: narrower bit widths are lighter."""
    from coel_env.catalog import BITS

    lut = np.tile(_ABSENT_RGB, (3, 17, 1))
    # evenly spaced by rank, not by bits: 4, 3 and 2 bits would look alike otherwise
    for tier, rgb in _TIER_RGB.items():
        for k, b in enumerate(sorted(BITS, reverse=True)):
            light = 0.75 * k / max(len(BITS) - 1, 1)
            lut[tier, b] = rgb + (1 - rgb) * light
    return lut


class _DeviceView(_Blitted):
    """One server: its memory and where every expert of every model sits."""

    def __init__(self, world) -> None:
        from matplotlib.patches import Patch

        from coel_env.catalog import BITS

        self.topology = world.topology
        self.models = tuple(world.models)
        self.lut = _tier_lut()
        fig = self.fig = _figure()
        srv = world.servers[0]
        self.title = fig.text(0.01, 0.975, "", fontsize=11, va="top", weight="bold")
        fig.text(
            0.01,
            0.935,
            f"server 0: {srv.gpu} GPU ({world.gpu_capacity_gb[0]:.0f} GB), "
            f"host {srv.host_cpu} ({world.host_capacity_gb[0]:.0f} GB)",
            fontsize=9,
            va="top",
        )

        # memory bars: GPU and host, used against capacity
        mem = self.mem_ax = fig.add_axes((0.10, 0.76, 0.55, 0.12))
        self.caps = np.array([world.gpu_capacity_gb[0], world.host_capacity_gb[0]])
        mem.barh([0, 1], np.maximum(self.caps, 1e-9), color="#eeeeee", edgecolor="#808080")
        self.bars = mem.barh([0, 1], [0, 0], color=[_TIER_RGB[GPU], _TIER_RGB[HOST]])
        self.bar_text = [mem.text(0, i, "", va="center", **_outlined(9.0)) for i in (0, 1)]
        mem.set_yticks([0, 1], ["GPU", "host"], fontsize=9)
        mem.invert_yaxis()
        mem.set_xlim(0, max(self.caps.max(), 1e-9) * 1.02)
        mem.set_xlabel("memory [GB]", fontsize=8, labelpad=1)
        mem.tick_params(labelsize=8)
        for side in ("top", "right"):
            mem.spines[side].set_visible(False)

        # tokens by tier
        tok = self.tok_ax = fig.add_axes((0.72, 0.76, 0.25, 0.12))
        self.tok_bars = tok.bar(
            [0, 1, 2],
            [0, 0, 0],
            color=[_TIER_RGB[GPU], _TIER_RGB[HOST], _ABSENT_RGB],
            edgecolor="#808080",
        )
        tok.set_xticks([0, 1, 2], ["GPU", "host", "absent"], fontsize=8)
        tok.set_ylim(0, 1)
        tok.set_yticks([0, 0.5, 1])
        tok.tick_params(labelsize=8)
        tok.set_title("share of routed tokens", fontsize=8, pad=2)
        for side in ("top", "right"):
            tok.spines[side].set_visible(False)

        # expert maps, one per model, stacked
        k = len(self.models)
        h = 0.58 / k
        self.maps, self.map_titles = [], []
        for i, name in enumerate(self.models):
            ax = fig.add_axes((0.10, 0.10 + (k - 1 - i) * h + 0.015, 0.62, h - 0.06))
            mp = world.plan.models[name]
            n_layers, n_experts = mp.location.shape[:2]
            self.maps.append(
                ax.imshow(
                    np.zeros((n_layers, n_experts, 3)), aspect="auto", interpolation="nearest"
                )
            )
            self.map_titles.append(ax.set_title("", fontsize=9, loc="left", pad=3))
            ax.set_ylabel("layer", fontsize=8)
            ax.set_xlabel(
                "experts of each layer by popularity (most popular left)", fontsize=8, labelpad=1
            )
            ax.tick_params(labelsize=7, length=2)
        patches = [Patch(facecolor=_ABSENT_RGB, edgecolor="#808080", label="absent")]
        for tier, label in ((GPU, "GPU"), (HOST, "host memory")):
            for b in BITS:
                patches.append(
                    Patch(
                        facecolor=self.lut[tier, b], edgecolor="#808080", label=f"{label}, {b}-bit"
                    )
                )
        _legend(fig, "center left", (0.75, 0.40), handles=patches, title="expert location",
                title_fontsize=9)  # fmt: skip
        self.animated = [
            *self.bars,
            *self.bar_text,
            *self.tok_bars,
            *self.maps,
            *self.map_titles,
            self.title,
        ]
        self._freeze()

    def draw(self, world, report) -> np.ndarray:
        gpu, host = world.memory_use_gb()
        used = np.array([gpu[0], host[0]])
        for i, (bar, text) in enumerate(zip(self.bars, self.bar_text, strict=True)):
            bar.set_width(used[i])
            text.set_x(min(used[i], self.caps.max() * 0.75) + self.caps.max() * 0.01)
            text.set_text(f"{used[i]:.1f} / {self.caps[i]:.0f} GB")
        pop = world.popularity_estimate()
        share = np.zeros(3)
        for i, name in enumerate(self.models):
            mp = world.plan.models.get(name)
            loc = np.full(self.maps[i].get_array().shape[:2], ABSENT, np.int8)
            bits = np.full(loc.shape, 16, np.int8)
            if mp is not None:
                loc, bits = mp.location[:, :, 0], mp.bits
            p = pop.get(name)
            if p is not None:  # hot experts first: tiers show as bands, not noise
                order = np.argsort(-p, axis=1, kind="stable")
                img = self.lut[
                    np.take_along_axis(loc, order, axis=1),
                    np.take_along_axis(bits, order, axis=1).astype(np.int64),
                ]
            else:
                img = self.lut[loc, bits.astype(np.int64)]
            self.maps[i].set_data(img)
            on = [(loc == GPU), (loc == HOST), (loc == ABSENT)]
            if p is not None and p.sum() > 0:
                w = p / p.sum()
                share += [float(w[m].sum()) for m in on]
            self.map_titles[i].set_text(
                f"{name}: {int(on[0].sum())} experts on GPU, {int(on[1].sum())} in host memory,"
                f" {int(on[2].sum())} absent"
            )
        if share.sum() > 0:
            share /= share.sum()
        for bar, v in zip(self.tok_bars, share, strict=True):
            bar.set_height(v)
        self.title.set_text(_title(world, report))
        return self._frame()
