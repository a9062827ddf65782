"""The MILP in matrix form (:func:`build_milp`, variables and constraints as in the
package docstring, :mod:`agents.milp`); decisions to a vector of its variables and back
(:func:`encode`, :func:`decode`); a quick reason an instance is infeasible
(:func:`diagnose`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from agents.milp.formula import _eval_decision, _eval_servers
from agents.milp.instance import (
    _TIER_OF_EXEC,
    E_CPU,
    E_FETCH,
    T_GPU,
    T_HOST,
    Decision,
    Instance,
    ModelInstance,
)


@dataclass
class MilpModel:
    """The MILP in matrix form and where each variable sits."""

    cost: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    integer: np.ndarray
    matrix: sparse.csc_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    index: list[dict]  # per model: name -> index array (-1 where the variable does not exist)
    server_index: dict

    @property
    def n_vars(self) -> int:
        return int(self.cost.size)

    @property
    def n_rows(self) -> int:
        return int(self.row_lo.size)


class _Builder:
    def __init__(self) -> None:
        self.cost: list[np.ndarray] = []
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.n = 0
        self.r: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def var(self, shape, mask=None, *, lb=0.0, ub=1.0, integer=True, cost=0.0) -> np.ndarray:
        shape = tuple(shape)
        mask = np.ones(shape, bool) if mask is None else np.broadcast_to(mask, shape)
        idx = np.full(shape, -1, np.int64)
        k = int(mask.sum())
        idx[mask] = np.arange(self.n, self.n + k)
        self.n += k
        self.cost.append(np.broadcast_to(np.asarray(cost, float), shape)[mask])
        self.lb.append(np.broadcast_to(np.asarray(lb, float), shape)[mask])
        self.ub.append(np.broadcast_to(np.asarray(ub, float), shape)[mask])
        self.integer.append(np.full(k, integer))
        return idx

    def row(self, cols, vals, lo=-np.inf, hi=np.inf) -> None:
        cols = np.asarray(cols, np.int64).ravel()
        vals = np.broadcast_to(np.asarray(vals, float), cols.shape).ravel() if cols.size else []
        keep = cols >= 0
        i = len(self.lo)
        self.r.append(np.full(int(keep.sum()), i))
        self.c.append(cols[keep])
        self.v.append(np.asarray(vals, float)[keep] if cols.size else np.zeros(0))
        self.lo.append(lo)
        self.hi.append(hi)

    def build(self, index, server_index) -> MilpModel:
        m = len(self.lo)
        r = np.concatenate(self.r) if self.r else np.zeros(0, np.int64)
        c = np.concatenate(self.c) if self.c else np.zeros(0, np.int64)
        v = np.concatenate(self.v) if self.v else np.zeros(0)
        mat = sparse.csc_matrix((v, (r, c)), shape=(m, self.n))
        mat.sum_duplicates()
        return MilpModel(
            cost=np.concatenate(self.cost),
            lb=np.concatenate(self.lb),
            ub=np.concatenate(self.ub),
            integer=np.concatenate(self.integer),
            matrix=mat,
            row_lo=np.asarray(self.lo, float),
            row_hi=np.asarray(self.hi, float),
            index=index,
            server_index=server_index,
        )


#: The matrix is built in seconds (coefficients in ms would span ~1e-3..1e7); objectives
#: are reported in ms.
UNIT = 1e-3


def build_milp(inst: Instance) -> MilpModel:
    """The MILP of ``inst`` (variables and constraints as in :mod:`agents.milp`).

    Binaries: homes ``a``, origin assignment ``A``, bits ``beta``, keep ``kappa``, policy
    ``pi``, copies ``xs[g, s, t]`` and used copies ``zs[h, g, s]``. Continuous (integral
    once those are): ``x[g, s, t, b]`` (a copy at its width), the remote-use indicators
    ``u`` and ``r``, and the demand flows ``y[h, g, s, e, b]`` (requests of home ``h``
    served by group ``g``'s copy on ``s`` with execution ``e`` at width ``b``), which carry
    every per-request cost beyond the home's least one.
    """
    bld = _Builder()
    S = inst.n
    index = []
    gpu_terms: list[list] = [[] for _ in range(S)]
    host_terms: list[list] = [[] for _ in range(S)]
    work_terms: list[list] = [[] for _ in range(S)]
    recv_terms: list[list] = [[] for _ in range(S)]
    U = UNIT
    for mi in inst.models:
        G, B = mi.G, mi.B
        dem = mi.demand > 0
        near = mi.near
        reach = np.zeros((S, S), bool)
        for o in range(S):
            reach[o, mi.origin_order[o]] = True
        reach &= dem[:, None]
        dmax = (mi.demand[:, None] * reach).sum(axis=0)  # [S] demand a home could get
        dmin = np.zeros(S)  # demand an open home surely gets: origins it is nearest to
        for o in np.flatnonzero(dem):
            if mi.origin_order[o].size:
                dmin[mi.origin_order[o][0]] += mi.demand[o]
        tier_ok = np.stack([inst.up, inst.host_ok], axis=1)  # [S, 2]
        exec_ok = _exec_ok(inst, mi)
        cmin = np.array([_lowest(mi, h, exec_ok, latency=True) for h in range(S)])
        cwmin = np.array([_lowest(mi, h, exec_ok, latency=False) for h in range(S)])
        gmin = np.stack([_group_min(mi.use[h], exec_ok) for h in range(S)])  # [S, G]
        gminw = np.stack([_group_min(mi.use_w[h], exec_ok) for h in range(S)])
        ex = np.maximum(mi.use - gmin[:, :, None, None, None], 0.0)
        exw = np.maximum(mi.use_w - gminw[:, :, None, None, None], 0.0)
        inf = np.inf
        a = bld.var([S], mi.cand, cost=U * mi.mig_home)
        A = bld.var([S, S], reach, cost=U * mi.demand[:, None] * (mi.rtt + cmin[None, :]))
        beta = bld.var([G, B], cost=U * mi.demand[dem].sum() * mi.quality_ms * mi.qbits)
        kap = bld.var([mi.K])
        pi = bld.var([1], lb=min(mi.policies), ub=max(mi.policies))
        xs = bld.var([G, S, 2], tier_ok[None, :, :])
        zsmask = near[:, None, :] & exec_ok.any(axis=1)[None, None, :]
        zs = bld.var([S, G, S], zsmask)
        x = bld.var([G, S, 2, B], tier_ok[None, :, :, None], cost=U * mi.mig_x, integer=False)
        umask = near & ~np.eye(S, dtype=bool)
        u = bld.var([S, S], umask, integer=False)
        r = bld.var([S], mi.cand, integer=False)
        qmax = float(mi.qkeep.max(initial=0.0))
        q = bld.var([S], mi.cand, ub=qmax, integer=False)
        ymask = near[:, None, :, None, None] & exec_ok[None, None, :, :, None]
        D = bld.var([S], mi.cand, ub=dmax, integer=False)
        y = bld.var([S, G, S, 3, B], ymask, ub=inf, integer=False, cost=U * ex)
        yu = bld.var([S, S], umask, ub=inf, integer=False, cost=U * mi.remote)
        yr = bld.var([S], mi.cand, ub=inf, integer=False)
        yq = bld.var([S], mi.cand, ub=inf, integer=False, cost=U * mi.quality_ms)
        td = bld.var([S], mi.cand, ub=inf, integer=False, cost=1.0)
        tdw = bld.var([S], mi.cand, ub=inf, integer=False)
        index.append(
            {"a": a, "A": A, "beta": beta, "kap": kap, "pi": pi, "xs": xs, "zs": zs, "x": x}
            | {"u": u, "r": r, "q": q, "D": D, "y": y, "yu": yu, "yr": yr, "yq": yq}
            | {"td": td, "tdw": tdw}
        )
        if mi.prune_prompt:  # the prefill cut of pruned prompts (latency, work), see below
            index[-1]["sv"] = bld.var([S], mi.cand, ub=inf, integer=False, cost=-1.0)
            index[-1]["svw"] = bld.var([S], mi.cand, ub=inf, integer=False)
        bld.row(a, 1.0, lo=1.0)  # deployed
        for o in np.flatnonzero(dem):  # each origin to its nearest open home
            hs = mi.origin_order[o]
            bld.row(A[o, hs], 1.0, lo=1.0, hi=1.0)
            for i, h in enumerate(hs):
                bld.row([A[o, h], a[h]], [1.0, -1.0], hi=0.0)
                bld.row(np.r_[A[o, hs[: i + 1]], a[h]], np.r_[np.ones(i + 1), -1.0], lo=0.0)
        for g in range(G):
            bld.row(beta[g], 1.0, lo=1.0, hi=1.0)
        bld.row(kap, 1.0, lo=1.0, hi=1.0)
        for g, s, t, b in zip(*np.nonzero(x >= 0), strict=True):
            bld.row([x[g, s, t, b], beta[g, b]], [1.0, -1.0], hi=0.0)
        for g in range(G):
            for s in range(S):
                bld.row(xs[g, s], 1.0, hi=1.0)  # one tier per server
                for t in range(2):
                    if xs[g, s, t] >= 0:
                        bld.row(np.r_[x[g, s, t], xs[g, s, t]], np.r_[np.ones(B), -1.0], 0, 0)
        for h in np.flatnonzero(mi.cand):
            hs_o = np.flatnonzero(reach[:, h])
            bld.row(np.r_[D[h], A[hs_o, h]], np.r_[1.0, -mi.demand[hs_o]], lo=0.0, hi=0.0)
            for g in range(G):
                zg = zs[h, g][zs[h, g] >= 0]
                yg = y[h, g][y[h, g] >= 0]
                bld.row(np.r_[zg, a[h]], np.r_[np.ones(zg.size), -1.0], 0, 0)  # one copy used
                bld.row(np.r_[yg, D[h]], np.r_[np.ones(yg.size), -1.0], 0, 0)  # all demand
                srv = mi.order[h]
                for i, s in enumerate(srv):
                    if zs[h, g, s] < 0:
                        continue
                    # the copy used is the nearest one (the home's own first)
                    prefix = zs[h, g, srv[: i + 1]]
                    cols = np.r_[prefix, xs[g, s], a[h]]
                    vals = np.r_[np.ones(prefix.size), -np.ones(2), -1.0]
                    bld.row(cols, vals, lo=-1.0)
                    bld.row(np.r_[zs[h, g, s], xs[g, s]], [1.0, -1.0, -1.0], hi=0.0)
                    # demand flows only through the used copy, at its tier and width
                    ys = y[h, g, s][y[h, g, s] >= 0]
                    bld.row(np.r_[ys, zs[h, g, s]], np.r_[np.ones(ys.size), -dmax[h]], hi=0.0)
                    if dmin[h] > 0:  # valid: a used copy carries all of D >= dmin
                        bld.row(np.r_[ys, zs[h, g, s]], np.r_[np.ones(ys.size), -dmin[h]], lo=0)
                    for t in range(2):
                        for b in range(B):
                            es = [e for e in range(3) if _TIER_OF_EXEC[e] == t]
                            yt = y[h, g, s, es, b]
                            yt = yt[yt >= 0]
                            if yt.size:
                                xv = x[g, s, t, b]
                                bld.row(np.r_[yt, xv], np.r_[np.ones(yt.size), -dmax[h]], hi=0)
            # host policy: no host-CPU flow under fetch, no fetch flow under host CPU
            yc = y[h, :, :, E_CPU].ravel()
            yf = y[h, :, :, E_FETCH].ravel()
            big = G * dmax[h]
            bld.row(np.r_[yc, pi[0]], np.r_[np.ones(yc.size), big], hi=big)
            bld.row(np.r_[yf, pi[0]], np.r_[np.ones(yf.size), -big], hi=0.0)
            # remote servers used (u, and the demand through them yu), any remote (r, yr)
            for s in np.flatnonzero(umask[h]):
                for g in range(G):
                    yy = y[h, g, s].ravel()
                    if zs[h, g, s] >= 0:
                        bld.row([u[h, s], zs[h, g, s]], [1.0, -1.0], lo=0.0)
                    bld.row(np.r_[yu[h, s], yy], np.r_[1.0, -np.ones(yy.size)], lo=0.0)
                bld.row([r[h], u[h, s]], [1.0, -1.0], lo=0.0)
                bld.row([yr[h], yu[h, s]], [1.0, -1.0], lo=0.0)
                if dmin[h] > 0:
                    bld.row([yu[h, s], u[h, s]], [1.0, -dmin[h]], lo=0.0)
            if dmin[h] > 0:
                bld.row([yr[h], r[h]], [1.0, -dmin[h]], lo=0.0)
            # keep loss: per home for the floor (q), demand-weighted for the price (yq);
            # where the keep ratio prunes bytes, only homes using remote copies pay it
            # (r, yr), where it prunes prompts every home does (D)
            if mi.prune_prompt:  # every open home
                bld.row(np.r_[q[h], kap, a[h]], np.r_[1.0, -mi.qkeep, -qmax], lo=-qmax)
            else:
                bld.row(np.r_[q[h], kap, r[h]], np.r_[1.0, -mi.qkeep, -qmax], lo=-qmax)
            bld.row(np.r_[beta.ravel(), q[h]], np.r_[mi.qbits.ravel(), 1.0], hi=inst.quality_floor)
            dem_h = D[h] if mi.prune_prompt else yr[h]
            for k in range(mi.K):
                mk = dmax[h] * mi.qkeep[k]
                bld.row([yq[h], dem_h, kap[k]], [1.0, -mi.qkeep[k], -mk], lo=-mk)
            # activations sent at the chosen keep ratio (demand-weighted, in seconds)
            yrem = y[h].copy()
            yrem[:, h] = -1
            sel = yrem >= 0
            for tvar, coef in ((td, mi.xfer[h]), (tdw, mi.xfer_w[h])):
                xc = U * np.broadcast_to(coef[:, :, None, None], yrem.shape)[sel]
                if mi.prune_prompt:  # pruned prompts: the bytes are not thinned
                    bld.row(np.r_[tvar[h], yrem[sel]], np.r_[1.0, -xc], lo=0.0)
                    continue
                big = U * dmax[h] * float(coef.max(axis=1).sum()) if coef.size else 0.0
                for k, keep in enumerate(mi.keeps):
                    mk = keep * big
                    bld.row(np.r_[tvar[h], yrem[sel], kap[k]], np.r_[1.0, -keep * xc, -mk], lo=-mk)
            if mi.prune_prompt:
                _prompt_cut_rows(bld, mi, index[-1], h, umask[h], dmax[h])
            # work at h [s]
            ys_ = y[h] >= 0
            rs = np.flatnonzero(umask[h])
            work_terms[h] += list(zip(y[h][ys_], U * exw[h][ys_], strict=True))
            work_terms[h] += list(zip(yu[h, rs], U * mi.remote_w[h, rs], strict=True))
            work_terms[h] += [(tdw[h], 1.0)]
            if mi.prune_prompt:
                work_terms[h] += [(index[-1]["svw"][h], -1.0)]
            work_terms[h] += list(zip(A[hs_o, h], U * mi.demand[hs_o] * cwmin[h], strict=True))
        if mi.mig_x_s is not None:
            for s in range(S):
                if a[s] >= 0 and mi.mig_home_s[s] > 0:
                    recv_terms[s].append((a[s], mi.mig_home_s[s] / inst.epoch_s))
                sel = (x[:, s] >= 0) & (mi.mig_x_s[:, s] > 0)
                recv_terms[s] += list(
                    zip(x[:, s][sel], mi.mig_x_s[:, s][sel] / inst.epoch_s, strict=True)
                )
        for s in range(S):
            if a[s] >= 0:
                gpu_terms[s].append((a[s], mi.home_gb))
            for g in range(G):
                for b in range(B):
                    if x[g, s, T_GPU, b] >= 0:
                        gpu_terms[s].append((x[g, s, T_GPU, b], mi.group_gb[g, b]))
                    if x[g, s, T_HOST, b] >= 0:
                        host_terms[s].append((x[g, s, T_HOST, b], mi.group_gb[g, b]))
    P = inst.queue_slope.shape[1]
    upm = inst.up
    work = bld.var([S], upm, ub=np.inf, integer=False)
    wq = bld.var([S], upm, ub=np.inf, integer=False, cost=1.0)
    ovf = bld.var([S], upm, ub=np.inf, integer=False, cost=inst.overflow_ms)
    for s in range(S):
        if gpu_terms[s]:
            cols, vals = zip(*gpu_terms[s], strict=True)
            bld.row(cols, vals, hi=inst.gpu_gb[s])
        if host_terms[s]:
            cols, vals = zip(*host_terms[s], strict=True)
            bld.row(cols, vals, hi=inst.host_gb[s])
        if not upm[s]:
            continue
        cols = [work[s]] + [t[0] for t in work_terms[s]]
        vals = [1.0] + [-t[1] for t in work_terms[s]]
        bld.row(cols, vals, lo=0.0, hi=0.0)
        for p in range(P):
            bld.row([wq[s], work[s]], [1.0, -inst.queue_slope[s, p]], lo=U * inst.queue_icpt[s, p])
        bld.row([ovf[s], work[s]], [1.0, -1.0], lo=-U * inst.cap_ms[s])
    # receiving weights: price * min(1, epochs of receiving), with a binary per server
    # that takes the whole epoch (then tau = 0) or not (then tau = the epochs received)
    price = inst.mig_price if inst.mig_price is not None else np.zeros(S)
    has = np.array([bool(recv_terms[s]) and price[s] > 0 for s in range(S)], bool)
    tau = bld.var([S], has, ub=np.inf, integer=False, cost=U * price)
    full = bld.var([S], has, cost=U * price)
    for s in np.flatnonzero(has):
        cols, vals = zip(*recv_terms[s], strict=True)
        big = float(np.sum(vals))
        bld.row(np.r_[tau[s], full[s], cols], np.r_[1.0, big, -np.asarray(vals)], lo=0.0)
    return bld.build(index, {"work": work, "wq": wq, "ovf": ovf, "tau": tau, "full": full})


def _prompt_cut_rows(bld: _Builder, mi: ModelInstance, ix: dict, h: int, umask_h, dmax_h):
    """``serving.pruning: prompt``: the prefill cut of home ``h`` at the chosen keep ratio,
    ``sv <= (1 - keep_k) * P + M (1 - kappa_k)`` for every keep ratio ``k``, where ``P`` is
    the demand-weighted prompt part of the prefill (``pbase D + puse y + pxfer y_remote +
    premote yu``, in seconds) and ``M`` bounds ``(1 - min keep) P``; ``sv`` is a saving
    (objective -1, the work row -1), so the solver takes it as large as the chosen row
    allows: exactly ``(1 - keep) P``. The same rows for the work (``svw``)."""
    U = UNIT
    y, D, yu, kap = ix["y"], ix["D"], ix["yu"], ix["kap"]
    yrem = y[h].copy()
    yrem[:, h] = -1
    sel = yrem >= 0
    rs = np.flatnonzero(umask_h)
    lo_keep = float(min(mi.keeps))
    for sv, pb, pu, px, pr in (
        (ix["sv"], mi.pbase, mi.puse, mi.pxfer, mi.premote),
        (ix["svw"], mi.pbase_w, mi.puse_w, mi.pxfer_w, mi.premote_w),
    ):
        xc = U * np.broadcast_to(px[h][:, :, None, None], yrem.shape)[sel]
        yall = y[h] >= 0
        cols = np.r_[D[h], y[h][yall], yrem[sel], yu[h, rs]]
        vals = np.r_[U * pb[h], U * pu[h][yall], xc, U * pr[h, rs]]
        per = pb[h] + float(pu[h].reshape(pu.shape[1], -1).max(axis=1).sum())
        per += float(px[h].max(axis=1).sum()) + float(pr[h, rs].sum())
        big = (1.0 - lo_keep) * U * dmax_h * per
        for k, keep in enumerate(mi.keeps):
            cut = 1.0 - keep
            bld.row(np.r_[sv[h], cols, kap[k]], np.r_[1.0, -cut * vals, big], hi=big)


def _exec_ok(inst: Instance, mi: ModelInstance) -> np.ndarray:
    """[S, 3] executions a copy on each server may have."""
    return _exec_ok_raw(inst.up, inst.host_ok, mi)


def _exec_ok_raw(up: np.ndarray, host_ok: np.ndarray, mi: ModelInstance) -> np.ndarray:
    tier_ok = np.stack([up, host_ok], axis=1)
    ok = tier_ok[:, _TIER_OF_EXEC]
    if len(mi.policies) == 1:
        ok = ok & (np.arange(3) != (E_FETCH if mi.policies[0] == 0 else E_CPU))
    return ok


def _group_min(use: np.ndarray, exec_ok: np.ndarray) -> np.ndarray:
    """Least option cost per group, over allowed executions [G] (0 when none)."""
    allowed = np.broadcast_to(exec_ok[None, :, :, None], use.shape)
    m = np.where(allowed, use, np.inf).reshape(use.shape[0], -1).min(axis=1)
    return np.where(np.isfinite(m), m, 0.0)


def _lowest(mi: ModelInstance, h: int, exec_ok: np.ndarray, *, latency: bool) -> float:
    """The least per-request cost (or work) at home ``h``: base + every group's cheapest."""
    use = mi.use[h] if latency else mi.use_w[h]
    base = mi.base[h] if latency else mi.base_w[h]
    return float(base + _group_min(use, exec_ok).sum())


def encode(inst: Instance, model: MilpModel, decisions: Sequence[Decision]) -> np.ndarray | None:
    """The full variable vector of ``decisions`` (None when they are infeasible)."""
    parts = []
    for mi, d in zip(inst.models, decisions, strict=True):
        parts.append(_eval_decision(inst, mi, d))
    ok, _, srv = _eval_servers(inst, parts)
    if not ok[0]:
        return None
    vec = np.zeros(model.n_vars)

    def put(idx, val=1.0):
        idx = np.asarray(idx)
        if (idx < 0).any():
            raise AssertionError("decision uses a variable the model does not have")
        vec[idx] = val

    for mi, d, p, ix in zip(inst.models, decisions, parts, model.index, strict=True):
        S = inst.n
        homes = np.asarray(d.homes, bool)
        put(ix["a"][homes])
        dem = np.zeros(S)
        for o in range(S):
            h = p["assign"][0, o]
            if h >= 0:
                put(ix["A"][o, h])
                dem[h] += mi.demand[o]
        for g in range(mi.G):
            put(ix["beta"][g, d.bits[g]])
            for s in range(S):
                if d.place[g, s]:
                    put(ix["x"][g, s, d.place[g, s] - 1, d.bits[g]])
                    put(ix["xs"][g, s, d.place[g, s] - 1])
        put(ix["kap"][d.keep])
        vec[ix["pi"][0]] = d.policy
        for h in np.flatnonzero(homes):
            vec[ix["D"][h]] = dem[h]
            for g in range(mi.G):
                s = p["sstar"][0, h, g]
                put(ix["zs"][h, g, s])
                put(ix["y"][h, g, s, p["exec"][0, h, g], d.bits[g]], dem[h])
            for s in np.flatnonzero(p["used"][0, h]):
                put(ix["u"][h, s])
                put(ix["yu"][h, s], dem[h])
            remote = float(p["used"][0, h].any())
            vec[ix["r"][h]] = remote
            vec[ix["yr"][h]] = remote * dem[h]
            vec[ix["q"][h]] = p["q"][0, h]
            vec[ix["yq"][h]] = p["q"][0, h] * dem[h]
            vec[ix["td"][h]] = UNIT * p["tl"][0, h] * dem[h]
            vec[ix["tdw"][h]] = UNIT * p["tw"][0, h] * dem[h]
            if mi.prune_prompt:
                vec[ix["sv"][h]] = UNIT * p["sv"][0, h] * dem[h]
                vec[ix["svw"][h]] = UNIT * p["svw"][0, h] * dem[h]
    si = model.server_index
    up = inst.up
    vec[si["work"][up]] = UNIT * srv["work"][0, up]
    vec[si["wq"][up]] = UNIT * srv["wq"][0, up]
    vec[si["ovf"][up]] = UNIT * srv["ovf"][0, up]
    has = si["tau"] >= 0
    recv = srv["recv"][0]
    vec[si["full"][has]] = (recv[has] > 1.0).astype(float)
    vec[si["tau"][has]] = np.where(recv[has] > 1.0, 0.0, recv[has])
    return vec


def decode(inst: Instance, model: MilpModel, vec: np.ndarray) -> list[Decision]:
    """Decisions from a solution vector."""
    out = []
    val = np.where(np.asarray(vec) > 0.5, 1, 0)

    def get(idx):
        return np.where(idx >= 0, val[np.maximum(idx, 0)], 0)

    for mi, ix in zip(inst.models, model.index, strict=True):
        x = get(ix["xs"])  # [G, S, 2]
        place = np.where(x[:, :, T_GPU] > 0, 1, np.where(x[:, :, T_HOST] > 0, 2, 0))
        d = Decision(
            homes=get(ix["a"]).astype(bool),
            place=place.astype(np.int8),
            bits=get(ix["beta"]).argmax(axis=1),
            keep=int(get(ix["kap"]).argmax()),
            policy=int(round(float(vec[ix["pi"][0]]))),
        )
        out.append(_canonical(mi, d))
    return out


def _canonical(mi: ModelInstance, d: Decision) -> Decision:
    """The same plan with the choices that cost nothing either way fixed: the largest keep
    ratio when no home lacks a group (and the keep ratio prunes bytes), host CPU when
    nothing is in host memory (so that re-solving an unchanged problem gives an equal
    plan)."""
    lacks = any(d.homes[h] and (d.place[:, h] == 0).any() for h in range(len(d.homes)))
    keep = d.keep if lacks or mi.prune_prompt else int(np.argmax(mi.keeps))
    policy = d.policy if (d.place == 2).any() else int(min(mi.policies))
    return Decision(d.homes, d.place, d.bits, keep, policy)


def _fits(start, inst: Instance) -> bool:
    """``start`` (decisions from an earlier solve) matches ``inst``'s shapes."""
    if start is None or len(start) != len(inst.models):
        return False
    return all(
        d.place.shape == (mi.G, inst.n) and len(d.bits) == mi.G and d.keep < mi.K
        for d, mi in zip(start, inst.models, strict=True)
    )


# --------------------------------------------------------------------- diagnosis


def diagnose(inst: Instance) -> str | None:
    """A reason the instance is infeasible that a quick check can see ("infeasible because
    ..."), or None."""
    names = inst.server_names or tuple(f"server {s}" for s in range(inst.n))
    up = inst.up
    if not up.any():
        return "infeasible because no server is present"
    total = float(inst.gpu_gb[up].sum() + inst.host_gb[inst.host_ok].sum())
    need_all = 0.0
    for mi in inst.models:
        if not mi.cand.any():
            big = float(inst.gpu_gb[up].max())
            return (
                f"infeasible because {mi.name}'s dense part and KV reserve ({mi.home_gb:.2f} GB) "
                f"fit on no present server's GPU (largest: {big:.2f} GB)"
            )
        low = int(np.argmin(mi.group_gb.sum(axis=0)))
        need = mi.home_gb + float(mi.group_gb.min(axis=1).sum())
        need_all += need
        if need > total + 1e-9:
            return (
                f"infeasible because {mi.name} needs at least {need:.2f} GB (dense part, KV "
                f"reserve and every expert at {mi.bits[low]} bits) but the present servers "
                f"hold {total:.2f} GB in all"
            )
        if float(mi.qbits.min(axis=1).sum()) > inst.quality_floor + 1e-12:
            return (
                f"infeasible because even at {max(mi.bits)} bits {mi.name}'s quality loss "
                f"exceeds the floor {inst.quality_floor}"
            )
        for o in np.flatnonzero(mi.demand > 0):
            if mi.origin_order[o].size == 0:
                return (
                    f"infeasible because requests for {mi.name} arrive at {names[o]}, which "
                    f"reaches no server that can run its dense part"
                )
    if need_all > total + 1e-9:
        return (
            f"infeasible because the models together need at least {need_all:.2f} GB at their "
            f"lowest bit widths but the present servers hold {total:.2f} GB in all"
        )
    return None
