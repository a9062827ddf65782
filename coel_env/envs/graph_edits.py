"""Plan edits for the graph env: one edit of the plan in force at a time, with an exact mask.

:class:`EditLayout` lays the candidate edits of a plan out as one ``Discrete`` space of a
fixed size (padded up to ``max_models`` models, ``max_servers`` servers and ``n_groups``
popularity groups); :class:`PlanEditor` keeps the *draft* plan of the coming epoch (it
starts as the world's plan in force), says which edits are allowed (:meth:`mask`) and
applies one (:meth:`apply`).

Edits, per model ``m`` (and group ``g``, server ``s``):

* ``home_add[m, s]``: ``s`` also runs the dense part of ``m``. For a model that is not
  deployed it deploys it: every expert on ``s`` at ``deploy_bits``, ``s`` its home.
* ``home_drop[m, s]``: ``s`` no longer runs it (another home stays).
* ``home_move[m, s]`` (only in a layout made with ``home_move=True``): ``s`` is the only
  server that runs it (``s`` added where it is no home, every other home dropped).
* ``move[m, g, s]``: every expert of group ``g`` on ``s`` only.
* ``replicate[m, g, s]``: a copy of every expert of group ``g`` also on ``s``.
* ``drop[m, g, s]``: ``s`` keeps no copy of group ``g`` (each expert keeps another copy).
* ``bits[m, g, b]``: every expert of group ``g`` at bit width ``BITS[b]``.
* ``keep[m, k]``: token keep ratio ``KEEP_RATIOS[k]``; ``host_policy[m, p]``: every
  layer's host policy ``p``.
* ``commit`` (index 0): hand the draft to the world (the env runs the epoch).

On each server an edit touches, the model's experts there are re-tiered: classes of
(group, bit width) in group order, each class's most popular experts on the GPU while
they fit in what the other models and the dense parts leave, the rest in host memory
(all on the GPU on unified-memory servers); other models' tiers never change.

**Exact mask.** Memory is the only limit an edit can break (an edit never places
anything on an absent server and never removes an expert's last present copy, so the
world's other checks hold). The mask predicts each candidate's memory on the servers it
touches from per-(group, bit width, server) counts of the draft, with the world's own
per-model sums (:func:`coel_env.core.kernels.placement.plan_scan`) for everything the
edit leaves alone; a candidate within ``BORDER_GB`` of a limit (where sums in another
order could round the other way) is decided by building its plan and asking
:meth:`coel_env.core.world.World.check`. The prediction forms each server's GPU budget
and fills its tiers exactly as the edit does (:func:`edited_location`), so away from the
border it differs from the world's sums only by their order: :meth:`apply` accepts an
edit the mask of the same draft allows there without a second check, and asks
:meth:`World.check` for every other one (border candidates, edits applied without a
mask, or always with :attr:`PlanEditor.recheck`), so an edit the world would refuse is
never applied. ``tests/test_graph_env.py`` compares the mask with ``World.check`` on
every candidate and checks every applied draft with it.

**Speed.** The mask is one compiled call for all models (:func:`all_slacks`) that
recomputes a server's slacks only when its inputs changed (an edit touches a few
servers); an edit and its re-tiering are one compiled pass (:func:`edited_location`);
the per-model summaries (:func:`model_counts`) feed both the mask and the observation.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np
from numba import njit

from coel_env.catalog import BITS
from coel_env.core.groups import groups_of_estimate
from coel_env.core.plan import (
    KEEP_RATIOS,
    InfeasibilityReport,
    ModelPlan,
    Plan,
    dense_gb,
    expert_gb_table,
)

#: Edit kinds in the order their blocks sit in the action space.
KINDS = (
    "commit",
    "home_add",
    "home_drop",
    "move",
    "replicate",
    "drop",
    "bits",
    "keep",
    "host_policy",
)
N_BITS = len(BITS)
N_KEEP = len(KEEP_RATIOS)
#: ``BIT_INDEX[b]``: the index of bit width ``b`` in :data:`BITS` (-1: not allowed).
BIT_INDEX = np.full(17, -1, np.int64)
BIT_INDEX[list(BITS)] = np.arange(N_BITS)
#: Candidates whose predicted memory is within this of a limit [GB] are decided by
#: ``World.check`` on their plan (the world sums in another order; 1e-6 GB is far above
#: any rounding of the sums and far below any expert's size).
BORDER_GB = 1e-6
_KEEP = np.asarray(KEEP_RATIOS)
#: The world's answer to a plan it accepts (no violation).
ACCEPTED = InfeasibilityReport()
#: The world's tolerance on memory limits (``coel_env.core.plan.check_plan``) [GB].
TOL_GB = 1e-9


class EditLayout:
    """The candidate edits of a plan as one index range each (module doc).

    Args:
        max_servers: servers the space is padded to.
        max_models: models the space is padded to.
        n_groups: popularity groups per model.
        home_move: add the ``home_move`` block (M x S) after the others.
    """

    def __init__(
        self, max_servers: int, max_models: int, n_groups: int, home_move: bool = False
    ) -> None:
        S, M, G = max_servers, max_models, n_groups
        self.max_servers, self.max_models, self.n_groups = S, M, G
        self.home_move = bool(home_move)
        #: the kinds of this layout, in the order of their blocks
        self.kinds = KINDS + (("home_move",) if self.home_move else ())
        self.shapes = {
            "commit": (1,),
            "home_add": (M, S),
            "home_drop": (M, S),
            "move": (M, G, S),
            "replicate": (M, G, S),
            "drop": (M, G, S),
            "bits": (M, G, N_BITS),
            "keep": (M, N_KEEP),
            "host_policy": (M, 2),
        }
        if self.home_move:
            self.shapes["home_move"] = (M, S)
        self.offsets: dict[str, int] = {}
        at = 0
        for kind in self.kinds:
            self.offsets[kind] = at
            at += int(np.prod(self.shapes[kind]))
        self.n = at
        self._starts = [self.offsets[k] for k in self.kinds]
        # row-major strides of each kind's shape (decode without numpy's per-call cost)
        self._strides = {
            k: tuple(int(np.prod(s[j + 1 :])) for j in range(len(s)))
            for k, s in self.shapes.items()
        }

    def index(self, kind: str, *idx: int) -> int:
        """The action of edit ``kind`` at ``idx`` (e.g. ``index("move", m, g, s)``)."""
        shape = self.shapes[kind]
        if len(idx) != len(shape) or not all(0 <= i < d for i, d in zip(idx, shape, strict=True)):
            raise ValueError(f"{kind}{tuple(idx)} is not allowed; the shape is {shape}")
        strides = self._strides[kind]
        return self.offsets[kind] + sum(i * st for i, st in zip(idx, strides, strict=True))

    def decode(self, action: int) -> tuple[str, tuple[int, ...]]:
        """``(kind, idx)`` of an action index."""
        action = int(action)
        if not 0 <= action < self.n:
            raise ValueError(f"action={action} is not allowed; actions are 0..{self.n - 1}")
        kind = self.kinds[bisect_right(self._starts, action) - 1]
        r = action - self.offsets[kind]
        idx = []
        for stride in self._strides[kind]:
            q, r = divmod(r, stride)
            idx.append(q)
        return kind, tuple(idx)

    def sub_actions(self, n_servers: int, n_models: int) -> np.ndarray:
        """The actions of this layout that the edits of the first ``n_servers`` servers
        and ``n_models`` models take, in the order of
        ``EditLayout(n_servers, n_models, n_groups, home_move)`` (strictly increasing: ties of an
        argmax fall on the same edit in both layouts).

        Raises:
            ValueError: ``n_servers`` or ``n_models`` is outside 1..the maxima.
        """
        for name, v, most in (("n_servers", n_servers, self.max_servers),
                              ("n_models", n_models, self.max_models)):  # fmt: skip
            if not 1 <= v <= most:
                raise ValueError(f"{name}={v!r} is not allowed; must be in 1..{most}")
        small = EditLayout(n_servers, n_models, self.n_groups, self.home_move)
        blocks = self.views(np.arange(self.n))
        parts = [
            blocks[kind][tuple(slice(0, d) for d in small.shapes[kind])].ravel()
            for kind in self.kinds
        ]
        return np.concatenate(parts)

    def kind_mask(self, kinds, key: str = "kinds") -> np.ndarray:
        """The actions whose kind is in ``kinds`` (None: every edit kind, ``commit``
        excluded) as a boolean array of length :attr:`n`; ``ValueError`` naming ``key``,
        the value and this layout's edit kinds otherwise."""
        allowed = self.kinds[1:]
        if kinds is None:
            kinds = allowed
        if isinstance(kinds, str) or not isinstance(kinds, list | tuple) or not kinds:
            raise ValueError(
                f"{key}={kinds!r} is not allowed; must be None or a non-empty list of "
                f"edit kinds from {', '.join(allowed)}"
            )
        out = np.zeros(self.n, bool)
        blocks = self.views(out)
        for k in kinds:
            if k not in allowed:
                raise ValueError(
                    f"{key} has {k!r}, which is not allowed; edit kinds: {', '.join(allowed)}"
                    + (" (home_move needs home_move=True)" if k == "home_move" else "")
                )
            blocks[k][...] = True
        return out

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Per kind, a view of ``flat`` (length :attr:`n`) in that kind's shape."""
        return {
            k: flat[self.offsets[k] : self.offsets[k] + int(np.prod(s))].reshape(s)
            for k, s in self.shapes.items()
        }

    def label(self, action: int, models=None) -> str:
        """A readable name of an action, e.g. ``move[olmoe-1b-7b, g1, s3]``."""
        kind, idx = self.decode(action)
        if kind == "commit":
            return "commit"
        m = models[idx[0]] if models is not None and idx[0] < len(models) else f"m{idx[0]}"
        rest = {
            "home_add": lambda: [f"s{idx[1]}"],
            "home_drop": lambda: [f"s{idx[1]}"],
            "home_move": lambda: [f"s{idx[1]}"],
            "move": lambda: [f"g{idx[1]}", f"s{idx[2]}"],
            "replicate": lambda: [f"g{idx[1]}", f"s{idx[2]}"],
            "drop": lambda: [f"g{idx[1]}", f"s{idx[2]}"],
            "bits": lambda: [f"g{idx[1]}", f"{BITS[idx[2]]} bits"],
            "keep": lambda: [f"keep {KEEP_RATIOS[idx[1]]}"],
            "host_policy": lambda: [("run on CPU", "fetch")[idx[1]]],
        }[kind]()
        return f"{kind}[{', '.join([m, *rest])}]"


# --------------------------------------------------------------------------- kernels


@njit(cache=True, error_model="numpy")
def tier_fill(counts, sizes, budget, out):
    """GPU experts per (group, bit width) class on one server: classes in order, each
    taking as many experts as fit in what is left of ``budget`` [GB] (plus the world's
    tolerance). Writes the counts into ``out`` [G, B]; returns their GB."""
    n_g, n_b = counts.shape
    rem = max(budget, 0.0) + 1e-9
    gpu = 0.0
    for g in range(n_g):
        for b in range(n_b):
            c = counts[g, b]
            k = 0
            if c > 0 and sizes[b] > 0.0:
                k = min(c, int(rem // sizes[b]))
                if k > 0:
                    gpu += k * sizes[b]
                    rem -= k * sizes[b]
            out[g, b] = k
    return gpu


@njit(cache=True, error_model="numpy")
def server_slack(counts, sizes, dense, fixed_gpu, other_host, gcap, hcap, unified, scratch):
    """How far below the world's memory limits one server stays [GB] (< 0: over) when a
    model holds ``counts`` [G, B] experts there, the dense parts there take ``dense``
    and the other models' experts ``fixed_gpu`` / ``other_host``."""
    n_g, n_b = counts.shape
    tot = 0.0
    for g in range(n_g):
        for b in range(n_b):
            tot += counts[g, b] * sizes[b]
    if unified:
        return gcap + 1e-9 - (fixed_gpu + dense + other_host + tot)
    gpu = tier_fill(counts, sizes, gcap - fixed_gpu - dense, scratch)
    return min(gcap + 1e-9 - (fixed_gpu + dense + gpu), hcap + 1e-9 - (other_host + tot - gpu))


@njit(cache=True, error_model="numpy")
def model_counts(location, groups, bidx, pop_share, sizes, up, n_groups, n_bits):
    """Per-server summaries of one model's placement [L, E, n].

    Returns:
        (held [G, B, n]: experts of each (group, bit width) class on each server,
        on_gpu [G, n]: of them in GPU memory, pop_held [n]: popularity share held on each
        server, safe [G, n]: whether every expert of the group held on the server has a
        copy on another present server, copies [G]: copies of the group's experts,
        pop_gpu: popularity share with a GPU copy somewhere, n_bits_of [G, B]: experts
        of each class, gpu [n] / host [n]: GB of experts in GPU / host memory).
    """
    n_l, n_e, n = location.shape
    held = np.zeros((n_groups, n_bits, n), np.int64)
    on_gpu = np.zeros((n_groups, n), np.int64)
    pop_held = np.zeros(n)
    safe = np.ones((n_groups, n), np.bool_)
    copies = np.zeros(n_groups, np.int64)
    n_bits_of = np.zeros((n_groups, n_bits), np.int64)
    gpu = np.zeros(n)
    host = np.zeros(n)
    pop_gpu = 0.0
    loc = np.ascontiguousarray(location).reshape(n_l * n_e, n)  # experts in (layer, e) order
    grp = groups.ravel()
    bx = bidx.ravel()
    ps = pop_share.ravel()
    for x in range(n_l * n_e):
        g = grp[x]
        b = bx[x]
        z = sizes[b]
        p = ps[x]
        n_bits_of[g, b] += 1
        n_up = 0
        any_gpu = False
        for s in range(n):
            t = loc[x, s]
            if t != 0:
                held[g, b, s] += 1
                pop_held[s] += p
                copies[g] += 1
                if up[s]:
                    n_up += 1
                if t == 1:
                    on_gpu[g, s] += 1
                    gpu[s] += z
                    any_gpu = True
                else:
                    host[s] += z
        if any_gpu:
            pop_gpu += p
        if n_up < 2:  # dropping its copy (if any) would leave it without one
            for s in range(n):
                if loc[x, s] != 0 and up[s]:
                    safe[g, s] = False
    return held, on_gpu, pop_held, safe, copies, pop_gpu, n_bits_of, gpu, host


@njit(cache=True, error_model="numpy")
def retier(location, groups, bidx, order, sizes, budgets, touched, unified, n_groups, n_bits):
    """Re-tier one model's experts [L, E, n] on the ``touched`` servers (rule: module
    doc); ``order`` lists the experts (flat ``layer * E + e``) most popular first. One
    pass over the experts serves every touched server (each server's result is that of
    its own pass). ``location`` must be C-contiguous (it is changed in place)."""
    n_l, n_e, n = location.shape
    loc = location.reshape(n_l * n_e, n)  # a view: experts in the flat order of ``order``
    grp = groups.ravel()
    bx = bidx.ravel()
    split = np.zeros(n, np.int64)  # touched servers with a GPU / host split, in order
    n_t = 0
    for s in range(n):
        if not touched[s]:
            continue
        if unified[s]:
            for x in range(n_l * n_e):
                if loc[x, s] != 0:
                    loc[x, s] = 1
            continue
        split[n_t] = s
        n_t += 1
    if n_t == 0:
        return
    counts = np.zeros((n_t, n_groups, n_bits), np.int64)
    k = np.zeros((n_t, n_groups, n_bits), np.int64)
    for x in range(n_l * n_e):
        g, b = grp[x], bx[x]
        for t in range(n_t):
            if loc[x, split[t]] != 0:
                counts[t, g, b] += 1
    for t in range(n_t):
        tier_fill(counts[t], sizes, budgets[split[t]], k[t])
    for j in range(order.size):
        x = order[j]
        g, b = grp[x], bx[x]
        for t in range(n_t):
            s = split[t]
            if loc[x, s] == 0:
                continue
            if k[t, g, b] > 0:
                loc[x, s] = 1
                k[t, g, b] -= 1
            else:
                loc[x, s] = 2


@njit(cache=True, error_model="numpy")
def model_slacks(
    held, n_bits_of, sizes, home, n_homes, deployed, dense_m, dense_total, fixed_gpu,
    other_host, gcap, hcap, unified, up, safe, deploy_b, group_size,
    s_add, s_hdrop, s_move, s_rep, s_drop, s_bits, dirty, base, s_rm, s_bt, s_hfree,
):  # fmt: skip
    """Memory slack [GB] of every candidate edit of one model (module doc): ``inf`` for
    an edit that cannot break memory, ``-inf`` for one that is not allowed or changes
    nothing; else the least slack over the servers it touches. Writes ``s_*``.

    The GPU budget of each server is formed as :func:`edited_location` forms it
    (``fixed_gpu``: the other models' GPU memory summed in model order; the dense parts
    with this model's homes taken out and put back), so the predicted tiers are the
    edit's own.

    Only the servers flagged ``dirty`` are computed anew (their inputs changed; the
    caller keeps the others' results: ``s_add``, ``s_hdrop``, ``s_rep``, ``s_drop`` and
    the per-server ``base`` [n], ``s_rm`` [G, n] and ``s_bt`` [G, B, n]); ``s_move`` and
    ``s_bits``, which span servers, are formed from them every time. ``s_hfree`` [n]:
    the slack of a home server without the model's dense part, whether or not another
    home stays (``home_move`` drops every home but one; ``-inf`` where it is no home)."""
    n_g, n_b, n = held.shape
    inf = np.inf
    on = np.zeros((n_g, n), np.int64)  # experts of each group held on each server
    for g in range(n_g):
        for s in range(n):
            for b in range(n_b):
                on[g, s] += held[g, b, s]
    s_move[:, :] = -inf
    s_bits[:, :] = -inf
    scratch = np.zeros((n_g, n_b), np.int64)
    if not deployed:
        s_hdrop[:] = -inf
        s_hfree[:] = -inf
        s_rep[:, :] = -inf
        s_drop[:, :] = -inf
        cnt = np.zeros((n_g, n_b), np.int64)
        for g in range(n_g):
            cnt[g, deploy_b] = group_size[g]
        for s in range(n):
            s_add[s] = -inf
            if up[s]:
                s_add[s] = server_slack(
                    cnt, sizes, dense_total[s] + dense_m, fixed_gpu[s], other_host[s],
                    gcap[s], hcap[s], unified[s], scratch,
                )  # fmt: skip
        return
    # per server: the slack of removing group g (its part of a move, and a drop), of a
    # full copy of g (replicate), of g at bit width b (bits) and of the server as it is
    # (base); the tiers of the groups before g are those of the server as it is, so the
    # fill is continued from there (the same steps as :func:`tier_fill`)
    pre_rem = np.zeros(n_g)
    pre_gpu = np.zeros(n_g)
    row_tot = np.zeros(n_g)
    row = np.zeros(n_b, np.int64)
    for s in range(n):
        if not dirty[s]:
            continue
        s_add[s] = -inf
        s_hdrop[s] = -inf
        s_hfree[s] = -inf
        base[s] = inf
        for g in range(n_g):
            s_rep[g, s] = -inf
            s_drop[g, s] = -inf
            s_rm[g, s] = inf
            for b in range(n_b):
                s_bt[g, b, s] = inf
        holds = False
        for g in range(n_g):
            if on[g, s] > 0:
                holds = True
        if not up[s] and not holds:
            continue
        hs = held[:, :, s]
        d = dense_total[s] - (dense_m if home[s] else 0.0) + (dense_m if home[s] else 0.0)
        fg, oh, gc, hc, uni = fixed_gpu[s], other_host[s], gcap[s], hcap[s], unified[s]
        tot = 0.0
        for g in range(n_g):
            rt = 0.0
            for b in range(n_b):
                rt += hs[g, b] * sizes[b]
            row_tot[g] = rt
            tot += rt
        rem = max(gc - fg - d, 0.0) + 1e-9
        gpu = 0.0
        for g in range(n_g):
            pre_rem[g] = rem
            pre_gpu[g] = gpu
            if not uni:
                for b in range(n_b):
                    c = hs[g, b]
                    if c > 0 and sizes[b] > 0.0:
                        k = min(c, int(rem // sizes[b]))
                        if k > 0:
                            gpu += k * sizes[b]
                            rem -= k * sizes[b]
        if up[s]:
            base[s] = _slack_of(tot, gpu, fg, d, oh, gc, hc, uni)
            if not home[s]:
                s_add[s] = server_slack(
                    hs, sizes, dense_total[s] + dense_m, fg, oh, gc, hc, uni, scratch
                )
            else:
                s_hfree[s] = server_slack(
                    hs, sizes, dense_total[s] - dense_m, fg, oh, gc, hc, uni, scratch
                )
                if n_homes > 1:
                    s_hdrop[s] = s_hfree[s]
        for g in range(n_g):
            rest = tot - row_tot[g]
            if up[s] and on[g, s] > 0:
                row[:] = 0
                v = _slack_of(rest, _fill_from(hs, g, row, sizes, pre_rem[g], pre_gpu[g], uni),
                              fg, d, oh, gc, hc, uni)  # fmt: skip
                s_rm[g, s] = v
                if safe[g, s]:
                    s_drop[g, s] = v
            if up[s] and on[g, s] < group_size[g]:
                add = 0.0
                for b in range(n_b):
                    row[b] = n_bits_of[g, b]  # every expert of the group, at its bit width
                    add += n_bits_of[g, b] * sizes[b]
                s_rep[g, s] = _slack_of(
                    rest + add, _fill_from(hs, g, row, sizes, pre_rem[g], pre_gpu[g], uni),
                    fg, d, oh, gc, hc, uni,
                )  # fmt: skip
            if on[g, s] > 0:
                for b in range(n_b):
                    if n_bits_of[g, b] == group_size[g]:
                        continue  # already at this width
                    row[:] = 0
                    row[b] = on[g, s]
                    s_bt[g, b, s] = _slack_of(
                        rest + on[g, s] * sizes[b],
                        _fill_from(hs, g, row, sizes, pre_rem[g], pre_gpu[g], uni),
                        fg, d, oh, gc, hc, uni,
                    )  # fmt: skip
    for g in range(n_g):
        # a move to s: s keeps all of g (re-tiered), every other holder drops its part;
        # the least removal slack over the holders other than s: the least, or the
        # second least where s is the least
        n_hold = 0
        best = inf
        second = inf
        best_t = -1
        for t in range(n):
            if on[g, t] > 0:
                n_hold += 1
                v = s_rm[g, t]
                if v < best:
                    second = best
                    best = v
                    best_t = t
                elif v < second:
                    second = v
        for s in range(n):
            if not up[s]:
                continue
            others = n_hold - (1 if on[g, s] > 0 else 0)
            if on[g, s] == group_size[g] and others == 0:
                continue  # the move changes nothing
            here = base[s] if on[g, s] == group_size[g] else s_rep[g, s]
            rm_other = second if s == best_t else best
            s_move[g, s] = min(here, rm_other)
        for b in range(n_b):
            if n_bits_of[g, b] == group_size[g]:
                continue  # already at this width
            worst = inf
            for s in range(n):
                if on[g, s] > 0 and s_bt[g, b, s] < worst:
                    worst = s_bt[g, b, s]
            s_bits[g, b] = worst


@njit(cache=True, error_model="numpy")
def all_slacks(
    held, n_bits_of, sizes, home, deployed, dense_m, dense_total, gpu, host, gcap, hcap,
    unified, up, safe, deploy_b, group_size, s_add, s_hdrop, s_move, s_rep, s_drop, s_bits,
    memo_ok, p_held, p_nbits, p_safe, p_home, p_multi, p_dep, p_dt, p_fg, p_oh, base, s_rm,
    s_bt, s_hfree,
):  # fmt: skip
    """:func:`model_slacks` of every model of the draft in one call (arrays stacked over
    the models: ``held`` [M, G, B, n], ``gpu`` / ``host`` [M, n], ...; the ``s_*`` are
    padded to the layout's maxima and written on their first ``n`` servers). The other
    models' memory on each server is summed in model order, as :func:`edited_location`
    sums it.

    Incremental: the ``p_*`` arrays keep the inputs each (model, server) result was
    computed from (``memo_ok[i]`` False: none for model ``i``), ``base``, ``s_rm`` and
    ``s_bt`` [M, ...] the per-server results; a server is computed anew only when its
    inputs differ (an edit changes a few servers). Same results as computing all."""
    n_m = held.shape[0]
    n_g, n_b = n_bits_of.shape[1], n_bits_of.shape[2]
    n = held.shape[3]
    fixed_gpu = np.empty(n)
    other_host = np.empty(n)
    dirty = np.zeros(n, np.bool_)
    for i in range(n_m):
        n_homes = 0
        for s in range(n):
            if home[i, s]:
                n_homes += 1
        multi = n_homes > 1
        whole = not memo_ok[i] or p_dep[i] != deployed[i] or p_multi[i] != multi
        for g in range(n_g):
            for b in range(n_b):
                if p_nbits[i, g, b] != n_bits_of[i, g, b]:
                    whole = True
                p_nbits[i, g, b] = n_bits_of[i, g, b]
        memo_ok[i] = True
        p_dep[i] = deployed[i]
        p_multi[i] = multi
        for s in range(n):
            og = 0.0
            oh = 0.0
            for j in range(n_m):
                if j != i:
                    og += gpu[j, s]
                    oh += host[j, s]
            fixed_gpu[s] = og
            other_host[s] = oh
            same = not whole and (
                p_fg[i, s] == og and p_oh[i, s] == oh and p_dt[i, s] == dense_total[s]
                and p_home[i, s] == home[i, s]
            )  # fmt: skip
            if same:
                for g in range(n_g):
                    if p_safe[i, g, s] != safe[i, g, s]:
                        same = False
                    for b in range(n_b):
                        if p_held[i, g, b, s] != held[i, g, b, s]:
                            same = False
            dirty[s] = not same
            if not same:
                p_fg[i, s] = og
                p_oh[i, s] = oh
                p_dt[i, s] = dense_total[s]
                p_home[i, s] = home[i, s]
                for g in range(n_g):
                    p_safe[i, g, s] = safe[i, g, s]
                    for b in range(n_b):
                        p_held[i, g, b, s] = held[i, g, b, s]
        model_slacks(
            held[i], n_bits_of[i], sizes[i], home[i], n_homes, deployed[i], dense_m[i],
            dense_total, fixed_gpu, other_host, gcap, hcap, unified, up, safe[i], deploy_b,
            group_size[i], s_add[i, :n], s_hdrop[i, :n], s_move[i, :, :n], s_rep[i, :, :n],
            s_drop[i, :, :n], s_bits[i], dirty, base[i], s_rm[i], s_bt[i], s_hfree[i, :n],
        )  # fmt: skip


@njit(cache=True, error_model="numpy")
def _slack_of(tot, gpu, fixed_gpu, dense, other_host, gcap, hcap, unified):
    """:func:`server_slack` from a server's expert GB ``tot`` and its GPU part ``gpu``."""
    if unified:
        return gcap + 1e-9 - (fixed_gpu + dense + other_host + tot)
    return min(gcap + 1e-9 - (fixed_gpu + dense + gpu), hcap + 1e-9 - (other_host + tot - gpu))


@njit(cache=True, error_model="numpy")
def _fill_from(held_s, g0, row, sizes, rem, gpu, unified):
    """The GB :func:`tier_fill` puts on the GPU, continued from group ``g0`` (``rem``
    left, ``gpu`` placed by the groups before it) with ``row`` [B] as group ``g0``'s
    counts and ``held_s`` [G, B] for the groups after it."""
    if unified:
        return 0.0
    n_g, n_b = held_s.shape
    for g in range(g0, n_g):
        for b in range(n_b):
            c = row[b] if g == g0 else held_s[g, b]
            if c > 0 and sizes[b] > 0.0:
                k = min(c, int(rem // sizes[b]))
                if k > 0:
                    gpu += k * sizes[b]
                    rem -= k * sizes[b]
    return gpu


#: Codes of the placement edits of a deployed model (:func:`edited_location`).
K_HOME_ADD, K_HOME_DROP, K_MOVE, K_REPLICATE, K_DROP, K_BITS, K_HOME_MOVE = range(1, 8)
_KIND_CODE = {
    "home_add": K_HOME_ADD, "home_drop": K_HOME_DROP, "move": K_MOVE,
    "replicate": K_REPLICATE, "drop": K_DROP, "bits": K_BITS, "home_move": K_HOME_MOVE,
}  # fmt: skip


@njit(cache=True, error_model="numpy")
def edited_location(
    location, bits, bidx, groups, order, sizes, kind, g, s, new_b, new_bits, i, home,
    home_new, dense_m, dense_total, gpu, gcap, unified, n_groups, n_bits,
):  # fmt: skip
    """Model ``i``'s location, bits and bit indices after a placement edit (``kind``: a
    ``K_*`` code; ``g`` the group, ``s`` the server, ``new_b`` / ``new_bits`` the bit
    width of ``K_BITS``; ``home_new`` the homes after a home edit), re-tiered
    (:func:`retier`) on the servers it touches with the GPU budget the other models
    (``gpu`` [M, n], summed in model order) and the dense parts (``dense_total`` with
    model ``i``'s homes ``home`` [M, n] replaced by ``home_new``) leave. New arrays; the
    inputs are not changed."""
    n_l, n_e, n = location.shape
    loc = location.copy()
    bt = bits.copy()
    bx = bidx.copy()
    lf = loc.reshape(n_l * n_e, n)  # flat views of the copies
    btf = bt.ravel()
    bxf = bx.ravel()
    grp = groups.ravel()
    touched = np.zeros(n, np.bool_)
    if kind == K_HOME_ADD or kind == K_HOME_DROP:
        touched[s] = True
    elif kind == K_HOME_MOVE:  # every server that gains or loses the dense part
        for t in range(n):
            touched[t] = home[i, t] != home_new[t]
    else:
        for x in range(n_l * n_e):
            if grp[x] != g:
                continue
            if kind == K_MOVE or kind == K_BITS:
                for t in range(n):
                    if lf[x, t] != 0:
                        touched[t] = True
            if kind == K_MOVE:
                for t in range(n):
                    lf[x, t] = 0
                lf[x, s] = 1
            elif kind == K_REPLICATE:
                if lf[x, s] == 0:
                    lf[x, s] = 1
            elif kind == K_DROP:
                lf[x, s] = 0
            else:
                btf[x] = new_bits
                bxf[x] = new_b
        if kind != K_BITS:
            touched[s] = True
    n_m = gpu.shape[0]
    budgets = np.empty(n)
    for t in range(n):
        other = 0.0
        for j in range(n_m):
            if j != i:
                other += gpu[j, t]
        d = dense_total[t] - (dense_m if home[i, t] else 0.0) + (dense_m if home_new[t] else 0.0)
        budgets[t] = gcap[t] - other - d
    retier(loc, groups, bx, order, sizes, budgets, touched, unified, n_groups, n_bits)
    return loc, bt, bx


# ---------------------------------------------------------------------------- editor


class _Pending:
    """A model's plan in the draft that is not a :class:`ModelPlan` yet (the editor
    builds it, with the world's validation, when the draft is read); the same fields."""

    __slots__ = ("bits", "home", "host_policy", "keep_ratio", "location", "model")

    def __init__(self, model, location, bits, home, host_policy, keep_ratio) -> None:
        self.model, self.location, self.bits, self.home = model, location, bits, home
        self.host_policy, self.keep_ratio = host_policy, keep_ratio

    def build(self) -> ModelPlan:
        return ModelPlan(self.model, self.location, self.bits, self.home, self.host_policy,
                         self.keep_ratio)  # fmt: skip


class _ModelState:
    """What the editor knows of one model of the draft (rebuilt when it changes)."""

    __slots__ = (
        "bidx", "copies", "deployed", "gpu", "group_size", "groups", "held", "home",
        "host", "keep_ok", "n_bits_of", "on_gpu", "order", "pol_ok", "pop_gpu", "pop_held",
        "pop_share", "safe",
    )  # fmt: skip


class PlanEditor:
    """The draft plan of the coming epoch and its candidate edits (module doc).

    Args:
        world: the world (reset); the editor reads its plan, capacities and presence.
        layout: the action layout (its maxima must hold the world).
        deploy_bits: bit width of a model deployed by ``home_add``.
    """

    #: Check every applied edit with :meth:`World.check` (:meth:`verdict`).
    recheck = False
    #: Cached arrays rebuilt after unpickling (views of one another do not survive it).
    _CACHES = (
        "_flat", "_slack_flat", "_slack", "_hfree", "_hmove", "_mask_of", "_dense_of", "_stk"
    )  # fmt: skip

    def __init__(self, world, layout: EditLayout, deploy_bits: int = 4) -> None:
        if deploy_bits not in BITS:
            raise ValueError(f"deploy_bits={deploy_bits!r} is not allowed; allowed: {BITS}")
        self.world = world
        self.layout = layout
        self.deploy_b = int(BIT_INDEX[deploy_bits])
        self.n = world.n
        self.models = world.models
        self.G = layout.n_groups
        self._sizes = [expert_gb_table(m)[list(BITS)].copy() for m in self.models]
        self._dense = np.array([dense_gb(m) + world.kv_reserve_gb[m] for m in self.models])
        self.start: Plan | None = None
        self._ver = 0  # counts the drafts (the caches below are per draft)
        self._new_caches()

    def _new_caches(self) -> None:
        lay = self.layout
        self._flat = np.zeros(lay.n, bool)
        # the slack of every memory-bound candidate, in the layout's order (the kinds
        # home_add .. bits are one contiguous range of the action space)
        self._lo, self._hi = lay.offsets["home_add"], lay.offsets["keep"]
        self._slack_flat = np.full(self._hi - self._lo, -np.inf)
        self._slack = {}
        for k in ("home_add", "home_drop", "move", "replicate", "drop", "bits"):
            a = lay.offsets[k] - self._lo
            self._slack[k] = self._slack_flat[a : a + int(np.prod(lay.shapes[k]))].reshape(
                lay.shapes[k]
            )
        # home_move: per (model, server) the slack of dropping the dense part there (any
        # number of homes) and the slack of the move (both [M, S])
        self._hfree = np.full(lay.shapes["home_add"], -np.inf)
        self._hmove = np.full(lay.shapes["home_add"], -np.inf)
        self._mask_of = self._dense_of = self._stk = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._CACHES}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._new_caches()

    # ----------------------------------------------------------------- epoch

    # ----------------------------------------------------------------- draft

    @property
    def draft(self) -> Plan:
        """The draft plan (its model plans are built, and validated, when it is read)."""
        if self._pend:
            for i in sorted(self._pend):
                if isinstance(self._cur[i], _Pending):
                    self._cur[i] = self._cur[i].build()
            self._pend = set()
            index = {name: i for i, name in enumerate(self.models)}
            self._draft = Plan({name: self._cur[index[name]] for name in self._order})
        return self._draft

    def _set_draft(self, plan: Plan) -> None:
        self._draft = plan
        self._cur = [plan.models.get(name) for name in self.models]
        self._order = list(plan.models)  # the plan's model order (a new model goes last)
        self._pend = set()
        self._ver += 1

    def plan_of(self, i: int):
        """Model ``i``'s plan in the draft (a :class:`ModelPlan` or the same fields), or
        None where it is not deployed."""
        return self._cur[i]

    @property
    def changed(self) -> bool:
        """Whether the draft differs from the plan in force (an edit or a repair)."""
        return self._changed

    def begin(self) -> None:
        """Start the edits of an epoch from the world's plan in force."""
        w = self.world
        self.start = w.plan
        self._set_draft(w.plan)
        self._changed = False
        self.pop = w.popularity_estimate()
        self.up = w.dyn.server_up.copy()
        self.states = [self._state(i, self._cur[i]) for i in range(len(self.models))]
        self._dense_of = None
        if not w.check(self.draft).feasible:
            self._repair()
            self._changed = True
            if not w.check(self.draft).feasible:
                self._start_from_deploying()
        self.edits = 0
        self._mask_of = None
        self._dense_of = None
        self._stk = None  # the world (and its size) may be another one
        self._slack_flat[:] = -np.inf

    def _state(
        self, i: int, mp: ModelPlan | None, bidx: np.ndarray | None = None, prev=None,
        same_home: bool = False,
    ) -> _ModelState:  # fmt: skip
        """Model ``i``'s state in the draft ``mp`` (``bidx``: its bit indices when known;
        ``prev``: the state of a deployed plan whose keep ratio and host policy ``mp``
        keeps, and with ``same_home`` its homes too: their flags are reused)."""
        name = self.models[i]
        st = _ModelState()
        pop = self.pop[name]
        st.groups = groups_of_estimate(pop, self.G)
        orders = self.__dict__.setdefault("_orders", {})
        hit = orders.get(name)
        if hit is None or hit[0] is not pop:
            tot = pop.sum()
            share = pop / tot if tot > 0 else np.full(pop.shape, 1.0 / pop.size)
            order = np.argsort(-pop, axis=None, kind="stable").astype(np.int64)
            gsz = np.bincount(st.groups.ravel(), minlength=self.G).astype(np.int64)
            gsz.setflags(write=False)
            orders[name] = hit = (pop, share, order, gsz)
        st.pop_share, st.order, st.group_size = hit[1], hit[2], hit[3]
        n, G = self.n, self.G
        st.deployed = mp is not None
        if mp is None:
            st.bidx = np.full(st.groups.shape, self.deploy_b, np.int64)
            st.held = np.zeros((G, N_BITS, n), np.int64)
            st.on_gpu = np.zeros((G, n), np.int64)
            st.pop_held = np.zeros(n)
            st.safe = np.zeros((G, n), bool)
            st.copies = np.zeros(G, np.int64)
            st.pop_gpu = 0.0
            st.gpu = np.zeros(n)
            st.host = np.zeros(n)
            st.home = np.zeros(n, bool)
            st.n_bits_of = np.zeros((G, N_BITS), np.int64)
            st.n_bits_of[:, self.deploy_b] = st.group_size
            st.keep_ok = np.zeros(N_KEEP, bool)
            st.pol_ok = np.zeros(2, bool)
        else:
            st.bidx = BIT_INDEX[mp.bits] if bidx is None else bidx
            (st.held, st.on_gpu, st.pop_held, st.safe, st.copies, st.pop_gpu, st.n_bits_of,
             st.gpu, st.host) = model_counts(
                mp.location, st.groups, st.bidx, st.pop_share, self._sizes[i], self.up, G, N_BITS
            )  # fmt: skip
            if prev is not None and prev.deployed:  # a placement edit: same flags
                st.home = prev.home if same_home else np.zeros(n, bool)
                if not same_home:
                    st.home[list(mp.home)] = True
                st.keep_ok, st.pol_ok = prev.keep_ok, prev.pol_ok
            else:
                st.home = np.zeros(n, bool)
                st.home[list(mp.home)] = True
                st.keep_ok = _KEEP != mp.keep_ratio
                pol = mp.host_policy
                st.pol_ok = np.array([(pol != 0).any(), (pol != 1).any()])
        return st

    def _repair(self) -> None:
        """Restore the experts a model lost when a server left (the plan in force then
        has experts without a present copy, which the world's check refuses in any plan):
        they are copied from the model store onto the present server, homes first, where
        the world accepts the plan; a model that fits nowhere is undeployed (``home_add``
        deploys it again). The draft starts from the repaired plan."""
        w = self.world
        for v in w.check(self.draft).violations:
            if v.kind != "no_replica" or v.model not in self.draft.models:
                continue
            i = self.models.index(v.model)
            mp = self.draft.models[v.model]
            missing = (mp.location != 0).sum(axis=2) == 0
            order = [*mp.home, *(s for s in range(self.n) if s not in mp.home)]
            fixed = None
            for s in order:
                if not self.up[s]:
                    continue
                loc = mp.location.copy()
                loc[missing, s] = 1
                touched = np.zeros(self.n, bool)
                touched[s] = True
                new = self._retiered(i, self.states[i], loc, mp.bits, list(mp.home), touched,
                                     mp.host_policy, mp.keep_ratio)  # fmt: skip
                plan = Plan({**self.draft.models, v.model: new})
                if self._only_others_broken(plan, v.model):
                    fixed = plan
                    break
            if fixed is None:
                fixed = Plan({k: p for k, p in self.draft.models.items() if k != v.model})
            self._set_draft(fixed)
            self.states[i] = self._state(i, fixed.models.get(v.model))
            self._dense_of = None

    def _start_from_deploying(self) -> None:
        """The repaired plan in force still breaks a memory limit (moves in flight: a
        server received new copies before its old ones left): start the draft from the
        plan being deployed when the world accepts it, so that every edit the mask allows
        gives a plan the world accepts."""
        w = self.world
        target = w.deploying
        if target is None or not w.check(target).feasible:
            return
        self._set_draft(target)
        self.states = [self._state(i, self._cur[i]) for i in range(len(self.models))]
        self._dense_of = None

    def _only_others_broken(self, plan: Plan, name: str) -> bool:
        """Whether the world's check finds nothing wrong with ``name`` in ``plan`` (other
        models may still lack experts: they are repaired in turn) nor with memory."""
        rep = self.world.check(plan)
        return all(v.kind == "no_replica" and v.model != name for v in rep.violations)

    # ------------------------------------------------------------------ mask

    def dense_total(self) -> np.ndarray:
        """GB of dense parts (with KV reserves) on each server in the draft (cached per
        draft; read-only)."""
        hit = self.__dict__.get("_dense_of")
        if hit is not None and hit[0] == self._ver:
            return hit[1]
        out = np.zeros(self.n)
        for i, st in enumerate(self.states):
            out += st.home * self._dense[i]
        out.setflags(write=False)
        self._dense_of = (self._ver, out)
        return out

    def _stacked(self) -> dict:
        """The models' states stacked into arrays [M, ...] (for :func:`all_slacks` and
        :func:`edited_location`); only the slots of changed states are copied."""
        stk = self._stk
        if stk is None:
            m, n, G = len(self.models), self.n, self.G
            stk = self._stk = {
                "ids": [None] * m,
                "held": np.zeros((m, G, N_BITS, n), np.int64),
                "n_bits_of": np.zeros((m, G, N_BITS), np.int64),
                "sizes": np.array(self._sizes).reshape(m, N_BITS),
                "home": np.zeros((m, n), bool),
                "deployed": np.zeros(m, bool),
                "gpu": np.zeros((m, n)),
                "host": np.zeros((m, n)),
                "safe": np.zeros((m, G, n), bool),
                "group_size": np.zeros((m, G), np.int64),
                # all_slacks' memo: the inputs and per-server results of the last mask
                "memo_ok": np.zeros(m, bool),
                "p_held": np.zeros((m, G, N_BITS, n), np.int64),
                "p_nbits": np.zeros((m, G, N_BITS), np.int64),
                "p_safe": np.zeros((m, G, n), bool),
                "p_home": np.zeros((m, n), bool),
                "p_multi": np.zeros(m, bool),
                "p_dep": np.zeros(m, bool),
                "p_dt": np.zeros((m, n)),
                "p_fg": np.zeros((m, n)),
                "p_oh": np.zeros((m, n)),
                "base": np.zeros((m, n)),
                "s_rm": np.zeros((m, G, n)),
                "s_bt": np.zeros((m, G, N_BITS, n)),
            }
        ids = stk["ids"]
        for i, st in enumerate(self.states):
            if ids[i] is st:
                continue
            stk["held"][i] = st.held
            stk["n_bits_of"][i] = st.n_bits_of
            stk["home"][i] = st.home
            stk["deployed"][i] = st.deployed
            stk["gpu"][i] = st.gpu
            stk["host"][i] = st.host
            stk["safe"][i] = st.safe
            stk["group_size"][i] = st.group_size
            ids[i] = st
        return stk

    def mask(self, edits_left: bool = True) -> np.ndarray:
        """The allowed actions (flat, :class:`EditLayout` order): ``commit`` always;
        with ``edits_left``, every edit that changes the draft into a plan
        :meth:`World.check` accepts. Cached per draft (a read-only array)."""
        hit = self._mask_of
        if hit is not None and hit[0] == self._ver and hit[1] == edits_left:
            return hit[2]
        flat = self._flat
        flat[:] = False
        flat[0] = True
        if edits_left:
            self._fill(flat)
        out = flat.copy()
        out.setflags(write=False)
        self._mask_of = (self._ver, edits_left, out)
        return out

    def _fill(self, flat: np.ndarray) -> None:
        w = self.world
        stk = self._stacked()
        sl = self._slack
        all_slacks(
            stk["held"], stk["n_bits_of"], stk["sizes"], stk["home"], stk["deployed"],
            self._dense, self.dense_total(), stk["gpu"], stk["host"], w.gpu_capacity_gb,
            w.host_capacity_gb, w.unified, self.up, stk["safe"], self.deploy_b,
            stk["group_size"], sl["home_add"], sl["home_drop"], sl["move"], sl["replicate"],
            sl["drop"], sl["bits"], stk["memo_ok"], stk["p_held"], stk["p_nbits"],
            stk["p_safe"], stk["p_home"], stk["p_multi"], stk["p_dep"], stk["p_dt"],
            stk["p_fg"], stk["p_oh"], stk["base"], stk["s_rm"], stk["s_bt"], self._hfree,
        )  # fmt: skip
        lo, hi = self._lo, self._hi
        slack = self._slack_flat
        np.greater_equal(slack, 0.0, out=flat[lo:hi])
        border = np.flatnonzero(np.abs(slack) < BORDER_GB)
        for j in border.tolist():  # decided by the world's check of the edited plan
            kind, idx = self.layout.decode(lo + j)
            flat[lo + j] = self._check(kind, idx).feasible
        lay = self.layout
        k0, p0 = lay.offsets["keep"], lay.offsets["host_policy"]
        for i, st in enumerate(self.states):
            if st.deployed:
                flat[k0 + i * N_KEEP : k0 + (i + 1) * N_KEEP] = st.keep_ok
                flat[p0 + 2 * i : p0 + 2 * i + 2] = st.pol_ok
        if lay.home_move:
            self._fill_home_move(flat)

    def _fill_home_move(self, flat: np.ndarray) -> None:
        """``home_move[m, s]``: the least slack of ``s`` gaining the dense part (where it
        is no home: ``home_add``'s) and of every other home losing it (each server's
        memory is its own, so the move is allowed iff each part is); not allowed where
        ``s`` is the only home already, is absent, or the model is not deployed."""
        n, lay = self.n, self.layout
        hm = self._hmove
        hm[:] = -np.inf
        add = self._slack["home_add"]
        for i, st in enumerate(self.states):
            if not st.deployed:
                continue
            home = st.home
            free = np.where(home, self._hfree[i, :n], np.inf)
            j = int(np.argmin(free))
            first = free[j]
            second = np.min(np.delete(free, j)) if n > 1 else np.inf
            others = np.full(n, first)
            others[j] = second
            here = np.where(home, np.inf, add[i, :n])
            row = np.minimum(here, others)
            row[~self.up] = -np.inf
            if home.sum() == 1:
                row[home] = -np.inf  # already the only home: no change
            hm[i, :n] = row
        block = lay.views(flat)["home_move"]
        np.greater_equal(hm, 0.0, out=block)
        for i, s in zip(*np.nonzero(np.abs(hm) < BORDER_GB), strict=True):
            block[i, s] = self._check("home_move", (int(i), int(s))).feasible

    # ----------------------------------------------------------------- apply

    def candidate(self, kind: str, idx: tuple[int, ...]) -> Plan:
        """The draft with edit ``kind`` at ``idx`` applied (not checked)."""
        return self._with(idx[0], self._model_edit(kind, idx)[0])

    def _with(self, i: int, new) -> Plan:
        """The draft with model ``i``'s plan replaced by ``new`` (built)."""
        models = dict(self.draft.models)
        models[self.models[i]] = new.build() if isinstance(new, _Pending) else new
        return Plan(models)

    def _model_edit(self, kind: str, idx: tuple[int, ...]):
        """Model ``idx[0]``'s plan after the edit (a :class:`ModelPlan` or a
        :class:`_Pending`) and its bit indices (None: not computed)."""
        i = idx[0]
        name = self.models[i]
        st = self.states[i]
        mp = self._cur[i]
        bidx = None
        if mp is None and kind != "home_add":
            raise ValueError(f"{kind} of {name}: the model is not deployed (only home_add)")
        if kind == "keep":
            new = _Pending(name, mp.location, mp.bits, mp.home, mp.host_policy,
                           KEEP_RATIOS[idx[1]])  # fmt: skip
            bidx = st.bidx
        elif kind == "host_policy":
            pol = np.full(mp.host_policy.shape, idx[1], np.int8)
            new = _Pending(name, mp.location, mp.bits, mp.home, pol, mp.keep_ratio)
            bidx = st.bidx
        elif mp is None:
            new = self._placed(i, name, st, mp, kind, idx)
        else:
            new, bidx = self._edited(i, name, st, mp, kind, idx)
        return new, bidx

    def _edited(self, i, name, st, mp, kind, idx) -> tuple[_Pending, np.ndarray]:
        """A placement edit of deployed model ``i`` (:func:`edited_location`)."""
        homes = mp.home
        home_new = st.home
        g = s = new_b = 0
        if kind == "home_add":
            s = idx[1]
            homes = (*homes, s)
            home_new = st.home.copy()
            home_new[s] = True
        elif kind == "home_drop":
            s = idx[1]
            if s not in homes:
                raise ValueError(f"home_drop of {name} on server {s}: it is no home there")
            homes = tuple(h for h in homes if h != s)
            home_new = st.home.copy()
            home_new[s] = False
        elif kind == "home_move":
            s = idx[1]
            homes = (s,)
            home_new = np.zeros(self.n, bool)
            home_new[s] = True
        elif kind == "bits":
            g, new_b = idx[1], idx[2]
        else:
            g, s = idx[1], idx[2]
        stk = self._stacked()
        loc, bits, bidx = edited_location(
            mp.location, mp.bits, st.bidx, st.groups, st.order, self._sizes[i],
            _KIND_CODE[kind], g, s, new_b, BITS[new_b], i, stk["home"], home_new,
            self._dense[i], self.dense_total(), stk["gpu"], self.world.gpu_capacity_gb,
            self.world.unified, self.G, N_BITS,
        )  # fmt: skip
        new = _Pending(name, loc, bits, tuple(sorted(homes)), mp.host_policy, mp.keep_ratio)
        return new, (bidx if kind == "bits" else st.bidx)  # the same array when unchanged

    def _placed(self, i, name, st, mp, kind, idx) -> ModelPlan:  # noqa: C901 - one case per kind
        n = self.n
        touched = np.zeros(n, bool)
        bidx = st.bidx
        if mp is None:  # home_add deploys the model whole on the server
            s = idx[1]
            loc = np.zeros((*st.groups.shape, n), np.int8)
            loc[:, :, s] = 1
            bits = np.full(st.groups.shape, BITS[self.deploy_b], np.int8)
            homes = [s]
            pol = np.zeros(st.groups.shape[0], np.int8)
            keep = 1.0
            touched[s] = True
        else:
            loc = mp.location.copy()
            bits = mp.bits.copy()
            homes = list(mp.home)
            pol, keep = mp.host_policy, mp.keep_ratio
            if kind == "home_add":
                homes.append(idx[1])
                touched[idx[1]] = True
            elif kind == "home_drop":
                homes.remove(idx[1])
                touched[idx[1]] = True
            else:
                g = idx[1]
                sel = st.groups == g
                if kind in ("move", "bits"):
                    touched |= (loc[sel] != 0).any(axis=0)
                if kind == "move":
                    loc[sel] = 0
                    loc[sel, idx[2]] = 1
                    touched[idx[2]] = True
                elif kind == "replicate":
                    part = loc[sel, idx[2]]
                    loc[sel, idx[2]] = np.where(part == 0, 1, part)
                    touched[idx[2]] = True
                elif kind == "drop":
                    loc[sel, idx[2]] = 0
                    touched[idx[2]] = True
                elif kind == "bits":
                    bits[sel] = BITS[idx[2]]
                    bidx = BIT_INDEX[bits]
        return self._retiered(i, st, loc, bits, homes, touched, pol, keep, bidx)

    def _retiered(self, i, st, loc, bits, homes, touched, pol, keep, bidx=None) -> ModelPlan:
        """Model ``i``'s plan from ``loc`` (changed in place) re-tiered on ``touched``."""
        n = self.n
        home_arr = np.zeros(n, bool)
        home_arr[homes] = True
        dense = self.dense_total() - st.home * self._dense[i] + home_arr * self._dense[i]
        other_gpu = np.zeros(n)
        for j, o in enumerate(self.states):
            if j != i:
                other_gpu += o.gpu
        budgets = self.world.gpu_capacity_gb - other_gpu - dense
        retier(loc, st.groups, BIT_INDEX[bits] if bidx is None else bidx, st.order,
               self._sizes[i], budgets, touched, self.world.unified, self.G, N_BITS)  # fmt: skip
        return ModelPlan(self.models[i], loc, bits, tuple(sorted(homes)), pol, keep)

    def _check(self, kind: str, idx: tuple[int, ...]):
        return self.world.check(self.candidate(kind, idx))

    def verdict(self, kind: str, idx: tuple[int, ...], plan: Plan | None = None):
        """Whether the world accepts the draft edited by ``kind`` at ``idx`` (``plan``; None:
        built here when needed): the answer of :meth:`World.check`. When the mask of this
        draft allows the edit with a
        memory slack of at least ``BORDER_GB`` (or for ``keep`` / ``host_policy``, which
        change no memory), that answer is known without the call: the slack is formed
        from the same tiers and budgets as the edit itself (:func:`model_slacks`), so it
        differs from the world's only by the order of the sums, far below ``BORDER_GB``;
        every other edit (the border, no mask of this draft, :attr:`recheck`) is checked
        by :meth:`World.check`. ``tests/test_graph_env.py`` checks every applied draft."""
        if self._known_ok(kind, idx):
            return ACCEPTED
        return self.world.check(plan if plan is not None else self.candidate(kind, idx))

    def _known_ok(self, kind: str, idx: tuple[int, ...]) -> bool:
        """Whether the mask of this draft allows the edit away from the border
        (:meth:`verdict`)."""
        hit = self._mask_of
        if self.recheck or hit is None or hit[0] != self._ver or not hit[1]:
            return False
        a = self.layout.index(kind, *idx)
        if kind == "home_move":
            return bool(hit[2][a] and abs(self._hmove[idx]) >= BORDER_GB)
        return bool(
            hit[2][a] and (a >= self._hi or abs(self._slack_flat[a - self._lo]) >= BORDER_GB)
        )

    def apply(self, kind: str, idx: tuple[int, ...]):
        """Apply one edit: its plan becomes the draft when the world accepts it. Returns
        the world's :class:`~coel_env.core.plan.InfeasibilityReport` (:meth:`verdict`).
        An edit accepted without :meth:`World.check` joins the draft as its fields; its
        :class:`ModelPlan` is built when the draft is next read."""
        i = idx[0]
        new, bidx = self._model_edit(kind, idx)
        report = ACCEPTED
        if not self._known_ok(kind, idx):
            plan = self._with(i, new)
            report = self.world.check(plan)
            if not report.feasible:
                return report
            new = plan.models[self.models[i]]
        name = self.models[i]
        if self._cur[i] is None and name not in self._order:
            self._order.append(name)  # a model deployed now goes last, as in a dict
        self._cur[i] = new
        self._pend.add(i)  # the draft's Plan is built anew when it is read
        self._ver += 1
        self._changed = True
        prev = self.states[i] if kind not in ("keep", "host_policy") else None
        same_home = kind not in ("home_add", "home_drop", "home_move")
        self.states[i] = self._state(i, new, bidx, prev, same_home)
        self.edits += 1
        return report
