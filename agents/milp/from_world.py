"""The epoch's instance built from a world and what an observation says
(:func:`build_instance`, coefficients from the world's own cost model), decisions as the
world's :class:`~coel_env.core.plan.Plan` (:func:`to_plan`), and the decode batches a
plan implies (:func:`_little_batch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from agents.milp.config import MilpConfig, Weights
from agents.milp.formulation import _exec_ok_raw, _lowest
from agents.milp.instance import (
    E_CPU,
    E_FETCH,
    E_GPU,
    T_GPU,
    T_HOST,
    Decision,
    Instance,
    ModelInstance,
    queue_cuts,
)
from coel_env import cost
from coel_env.core.batching import batch_points, kv_bytes_per_token
from coel_env.core.evaluation import (
    ACT_BYTES,
    PREFILL_POINTS,
    ServingModel,
    bucket,
    prefill_line,
    serving_model_for,
)
from coel_env.core.groups import group_of
from coel_env.core.kernels.batching import batch_point
from coel_env.core.plan import ABSENT, GB, GPU, HOST, ModelPlan, Plan, memory_use_gb
from coel_env.core.routing import expected_counts
from coel_env.core.workload import AZURE_CONV_FIT, SyntheticWorkload
from coel_env.quality import SHARED_SENSITIVITY, bits_loss, token_keep_loss


def _token_stats(world) -> tuple[float, float, float, float]:
    """(mean input tokens, mean output tokens, CV^2 of output tokens, CV^2 of gaps)."""
    cfg = world.workload.config if isinstance(world.workload, SyntheticWorkload) else None
    fit_in = cfg.input_tokens if cfg else AZURE_CONV_FIT.input_tokens
    fit_out = cfg.output_tokens if cfg else AZURE_CONV_FIT.output_tokens
    cv = cfg.interarrival_cv if cfg else AZURE_CONV_FIT.interarrival_cv
    z = np.sqrt(2) * _erfinv(np.linspace(-1, 1, 4003)[1:-1])  # standard normal quantiles

    def stats(d):
        x = np.clip(np.round(np.exp(d.mu_log + d.sigma_log * z)), 1, d.max_tokens)
        return float(x.mean()), float(x.var() / max(x.mean(), 1e-9) ** 2)

    e_in, _ = stats(fit_in)
    e_out, cs2 = stats(fit_out)
    return e_in, e_out, cs2, float(cv) ** 2


def serving_model(world) -> ServingModel:
    """A :class:`ServingModel` with every serving option of ``world`` (mode, layer terms,
    activation traffic, pruning, quantized-kernel scaling): built by the same function as
    the world's own (:func:`coel_env.core.evaluation.serving_model_for`)."""
    return serving_model_for(world.gpus, world.cpus, world.scenario.serving)


def _erfinv(y: np.ndarray) -> np.ndarray:
    from scipy.special import erfinv

    return erfinv(y)


def _serving_parts(serving: ServingModel, m, pop, onehot, n: float, phase: str, bits, up):
    """Per-group pieces of one pass of ``n`` tokens, as ``ServingModel.step`` adds them.

    The experts' calls and the home's dispatch are the world's own functions
    (:meth:`ServingModel.expert_fn`, :meth:`ServingModel.dispatch_fn`: the runtime
    ``serving.mode`` and ``serving.quant_scaling`` included). Activations sent to a remote
    group (``xfer``, ms per Gbit/s of the path) follow ``serving.activation_traffic``:

    * ``per_expert``: once per token and active remote expert (exact);
    * ``per_server``: the world sends a token once to each remote server holding any of
      its experts, ``n (1 - (1 - T_s / (n k))^k)`` tokens for ``T_s`` expected expert
      tokens of the layer on server ``s``, concave in ``T_s``. The MILP's transfer term
      is linear per (group, server), so the same count is taken per (layer, group),
      ``T_{l,g}``, and summed over the groups a server holds: an upper bound on the
      world's count (a concave function with ``f(0) = 0`` is subadditive), exact when a
      home uses at most one group per remote server, and never above ``per_expert``'s
      (``f(T) <= T``). A per-server "used" variable would need the concave count of every
      subset of groups; the bound keeps the formulation and errs on the side of keeping
      experts local.

    Returns (grp [S, 3, B, G], base [S], xfer_per_gbit [G], p_any_layers).
    """
    n = max(float(n), 1.0)
    S = serving.n
    t = expected_counts(pop, n, m.top_k)
    q = np.clip(t / n, 0.0, 1.0)
    pa = 1.0 - (1.0 - q) ** n
    ta = np.where(pa > 0, t / np.maximum(pa, 1e-12), 0.0)
    pa_g = np.einsum("le,leg->g", pa, onehot)
    grp = np.zeros((S, 3, len(bits), onehot.shape[2]))
    cache: dict = {}
    for s in range(S):
        if not up[s]:
            continue
        for bi, b in enumerate(bits):
            w = float(m.expert_bytes(b))
            for e, dev in ((E_GPU, serving.gpus[s]), (E_CPU, serving.cpus[s])):
                key = (dev.name, b)
                if key not in cache:
                    ms = serving.expert_fn(m, dev, b)(ta)
                    cache[key] = np.einsum("le,leg->g", pa * ms, onehot)
                grp[s, e, bi] = cache[key]
            fetch = w / (serving.pcie_gbps[s] * 1e6)
            grp[s, E_FETCH, bi] = grp[s, E_GPU, bi] + fetch * pa_g
    d = m.d_model
    base = np.zeros(S)
    for h in range(S):
        if not up[h]:
            continue
        # the layer's router, dispatch and shared experts: the cost model's, as the world's
        kw = dict(mode=serving.mode, terms=serving.layer_terms)
        router = float(cost.router_ms(m, serving.gpus[h], n, **kw))
        disp = serving.dispatch_fn(m, h)(ta)
        b = m.n_moe_layers * router + float((pa * disp).sum())
        b += m.n_moe_layers * float(serving.shared_ms(m, h, n))
        base[h] = b + serving._attention_ms(m, h, n, phase)
    if serving.activation_traffic == "per_server":
        k = float(m.top_k)
        tok = np.einsum("le,leg->lg", pa * ta, onehot)  # expert tokens per (layer, group)
        share = np.minimum(tok / (n * k), 1.0)
        reach = n * (1.0 - (1.0 - share) ** k)  # tokens that cross, per (layer, group)
        xfer = reach.sum(axis=0) * 2 * d * ACT_BYTES * 8 / 1e6
    else:
        xfer = np.einsum("le,leg->g", pa * 2 * ta * d * ACT_BYTES * 8 / 1e6, onehot)
    p_any = float(np.minimum(1.0, pa.sum(axis=1)).sum())
    return grp, base, xfer, p_any


def _migration_costs(world, obs, name, m, groups, onehot, bits, up, gb_ms):
    """Bytes cost (mig_x [G, S, 2, B], mig_home [S]) in request-ms and receive seconds
    (mig_x_s, mig_home_s) of each placement (see the package docstring, :mod:`agents.milp`)."""
    S = world.n
    L, E = groups.shape
    G = onehot.shape[2]
    lat = obs.latency_ms
    bw = obs.bandwidth_gbit_s
    store = world.scenario.serving.store_gbit_s
    pcie = world.pcie_gbps
    prev = obs.plan.models.get(name)
    if prev is not None and prev.n_servers == S:
        old_loc, old_bits = prev.location, prev.bits
    else:
        old_loc, old_bits = np.zeros((L, E, S), np.int8), np.zeros((L, E), np.int8)
    held_old = (old_loc != ABSENT) & up[None, None, :]
    mig = np.zeros((G, S, 2, len(bits)))
    mig_s = np.zeros((G, S, 2, len(bits)))
    for bi, b in enumerate(bits):
        eb = float(m.expert_bytes(b))
        local = held_old & (old_bits >= b)[:, :, None]  # [L, E, S]
        src_lat = np.where(local[:, :, :, None], lat[None, None, :, :], np.inf)  # [L,E,src,dst]
        src = src_lat.argmin(axis=2)  # [L, E, dst]
        any_src = local.any(axis=2)
        gbit = np.where(any_src[:, :, None], bw[src, np.arange(S)[None, None, :]], store)
        net_t = eb * 8 / (np.maximum(gbit, 1e-9) * 1e9)  # [L, E, S]
        net = np.where(local, 0.0, gb_ms * eb / GB)
        net_s = np.where(local, 0.0, net_t)
        for t, tier in ((T_GPU, GPU), (T_HOST, HOST)):
            move = local & (old_loc != tier)
            pc = np.where(move, eb / (pcie[None, None, :] * 1e9), 0.0)
            mig[:, :, t, bi] = np.einsum("les,leg->gs", net, onehot)
            mig_s[:, :, t, bi] = np.einsum("les,leg->gs", net_s + pc, onehot)
    mig_home = np.zeros(S)
    mig_home_s = np.zeros(S)
    old_homes = [h for h in (prev.home if prev is not None else ()) if up[h]]
    dense = float(m.non_expert_bytes(16))
    for h in range(S):
        if h in old_homes:
            continue
        gbit = bw[min(old_homes, key=lambda o: lat[o, h]), h] if old_homes else store
        mig_home[h] = gb_ms * dense / GB
        mig_home_s[h] = dense * 8 / (max(gbit, 1e-9) * 1e9)
    return mig, mig_home, mig_s, mig_home_s


def build_instance(
    world,
    obs,
    config: MilpConfig | None = None,
    *,
    demand_per_s: np.ndarray | None = None,
    batch: Mapping[str, np.ndarray] | None = None,
    serving: ServingModel | None = None,
) -> Instance:
    """The epoch's instance from what ``obs`` says (and the world's static facts: devices,
    model specs, KV reserve, workload token statistics).

    Args:
        world: the world (static facts only).
        obs: an :class:`agents.base.Observation`.
        config: MILP options.
        demand_per_s: demand per (server, model) [1/s]; default ``obs.demand_per_s``.
        batch: decode batch per model and home (default 1).
        serving: a :class:`ServingModel` to cost with (cached attention); default a new one.
    """
    cfg = config or MilpConfig()
    S = world.n
    serving = serving or serving_model(world)
    dt = world.scenario.epoch_s
    up = np.asarray(obs.up, bool)
    unified = np.asarray(obs.unified, bool)
    host_ok = up & ~unified & (np.asarray(obs.host_capacity_gb) > 0)
    bg = np.clip(np.asarray(obs.background, float), 0.0, 0.95)
    slow = 1.0 / (1.0 - bg)
    lat = np.asarray(obs.latency_ms, float)
    bw = np.asarray(obs.bandwidth_gbit_s, float)
    demand = np.asarray(obs.demand_per_s if demand_per_s is None else demand_per_s, float)
    demand = np.where(up[:, None], np.maximum(demand, 0.0), 0.0)
    e_in, e_out, cs2, ca2 = _token_stats(world)
    wl = world.scenario.workload
    floor = float(wl.quality_floor)
    weights = Weights.from_reward(
        cfg.reward,
        slo_budget_ms=wl.ttft_ms + wl.tpot_ms * e_out,
        floor=floor,
        p95_over_mean=cfg.p95_over_mean,
    )
    n_req = max(float(demand.sum() * dt), 1.0)
    quality_ms = weights.quality / weights.per_ms
    drop_ms = weights.drop / weights.per_ms
    horizon = float(cfg.migration_horizon)
    gb_ms = weights.migration_per_gb / weights.per_ms * n_req / horizon if cfg.migration else 0.0
    mig_price = drop_ms * demand.sum(axis=1) * dt / horizon if cfg.migration else np.zeros(S)
    alpha = (e_in - PREFILL_POINTS[0]) / (PREFILL_POINTS[1] - PREFILL_POINTS[0])
    bits = tuple(sorted(cfg.bits, reverse=True))
    keeps = tuple(cfg.keep_ratios)
    policies = (0, 1) if cfg.host_policy else (0,)
    is_cloud = getattr(world, "is_cloud", np.zeros(S, bool))
    sv = world.scenario.serving
    prompt = sv.pruning == "prompt"
    cont = sv.batching == "continuous"
    max_batch = int(sv.max_batch)
    top = len(batch_points(max_batch)) - 1
    # server orders
    order_all = []
    for h in range(S):
        others = [s for s in range(S) if s != h and up[s] and np.isfinite(lat[h, s])]
        others.sort(key=lambda s: (lat[h, s], s))
        order_all.append(np.array([h] + others[: max(cfg.near - 1, 0)], int))
    models = []
    for mi_idx, (name, m) in enumerate(zip(world.models, world.specs, strict=True)):
        pop = np.asarray(obs.popularity[name], float)
        pop = pop / np.maximum(pop.sum(axis=1, keepdims=True), 1e-12)
        G = min(cfg.n_groups, m.n_experts)
        groups = group_of(pop, G)
        onehot = (groups[..., None] == np.arange(G)).astype(float)
        home_gb = m.non_expert_bytes(16) / GB + world.kv_reserve_gb[name]
        cand = up & (np.asarray(obs.gpu_capacity_gb) >= home_gb - 1e-9)
        if not cfg.allow_cloud_home:
            cand &= ~is_cloud
        count = np.bincount(groups.ravel(), minlength=G)  # experts per group, all layers
        whole_gb = home_gb + count.sum() * m.expert_bytes(bits[-1]) / GB
        own_gb = np.asarray(obs.gpu_capacity_gb, float) + np.where(
            host_ok, np.asarray(obs.host_capacity_gb, float), 0.0
        )
        spread = {"always": cand, "never": np.zeros(S, bool), "auto": whole_gb > own_gb}
        order = tuple(
            (order_all[h] if spread[cfg.remote][h] else order_all[h][:1])
            if cand[h]
            else np.zeros(0, int)
            for h in range(S)
        )
        origin_order = []
        for o in range(S):
            hs = [h for h in np.flatnonzero(cand) if np.isfinite(lat[o, h])]
            hs.sort(key=lambda h: (lat[o, h], h))
            origin_order.append(np.array(hs[: cfg.home_near], int))
        bb = np.ones(S)
        if batch is not None and name in batch:
            bb = np.asarray(batch[name], float)
        parts = {}
        if cont:  # the world's decode pass at the batch's real size: linear between 2**j
            bbk = np.array([float(min(max(round(b), 1), max_batch)) for b in bb])
            pts = set()
            for b in bbk:
                j, f = batch_point(b, top)
                pts |= {float(2**j), float(2 ** (j + 1))} if f else {float(2**j)}
            pts = sorted(pts)
        else:
            bbk = np.array([float(bucket(b)) for b in bb])
            pts = sorted({float(bucket(b)) for b in bb})
        for n in pts:
            parts[("decode", n)] = _serving_parts(serving, m, pop, onehot, n, "decode", bits, up)
        for p in PREFILL_POINTS:
            parts[("prefill", p)] = _serving_parts(serving, m, pop, onehot, p, "prefill", bits, up)
        p0, p1 = parts[("prefill", PREFILL_POINTS[0])], parts[("prefill", PREFILL_POINTS[1])]
        pre_grp = (1 - alpha) * p0[0] + alpha * p1[0]  # [S, 3, B, G]
        pre_base = (1 - alpha) * p0[1] + alpha * p1[1]
        pre_x = (1 - alpha) * p0[2] + alpha * p1[2]
        pre_any = (1 - alpha) * p0[3] + alpha * p1[3]
        B = len(bits)
        use = np.zeros((S, G, S, 3, B))
        use_w = np.zeros_like(use)
        base = np.zeros(S)
        base_w = np.zeros(S)
        xfer = np.zeros((S, G, S))
        xfer_w = np.zeros_like(xfer)
        remote = np.zeros((S, S))
        remote_w = np.zeros_like(remote)
        if prompt:  # the prefill's part that grows with the prompt, per piece
            pp = []
            for i, pre in enumerate((pre_grp, pre_base, pre_x, pre_any)):
                slope = (p1[i] - p0[i]) / (PREFILL_POINTS[1] - PREFILL_POINTS[0])
                pp.append(np.minimum(e_in * np.maximum(slope, 0.0), pre))
            pu, pbs, px, pan = pp
            puse, pbase = np.zeros_like(use), np.zeros(S)
            pxfer, premote = np.zeros_like(xfer), np.zeros_like(remote)
            puse_w, pbase_w = np.zeros_like(use), np.zeros(S)
            pxfer_w, premote_w = np.zeros_like(xfer), np.zeros_like(remote)
        for h in np.flatnonzero(cand):
            if cont:
                j, f = batch_point(bbk[h], top)
                dg, db, dx, dany = parts[("decode", float(2**j))]
                if f:
                    hi = parts[("decode", float(2 ** (j + 1)))]
                    dg, db, dx, dany = (
                        (1 - f) * a + f * b
                        for a, b in zip(parts[("decode", float(2**j))], hi, strict=True)
                    )
            else:
                dg, db, dx, dany = parts[("decode", bbk[h])]
            per_l = e_out * dg + pre_grp  # [S, 3, B, G]
            per_w = e_out * dg / bbk[h] + pre_grp
            use[h] = slow[h] * per_l.transpose(3, 0, 1, 2)
            use_w[h] = per_w.transpose(3, 0, 1, 2)
            base[h] = slow[h] * (e_out * db[h] + pre_base[h])
            base_w[h] = e_out * db[h] / bbk[h] + pre_base[h]
            inv_bw = np.where(np.arange(S) == h, 0.0, 1.0 / np.maximum(bw[h], 1e-9))
            inv_bw = np.where(np.isfinite(lat[h]), inv_bw, 0.0)
            xl = (e_out * dx + pre_x)[:, None] * inv_bw[None, :]
            xw = (e_out * dx / bbk[h] + pre_x)[:, None] * inv_bw[None, :]
            xfer[h] = slow[h] * xl
            xfer_w[h] = xw
            two_lat = np.where(np.isfinite(lat[h]), 2.0 * lat[h], 0.0)
            two_lat[h] = 0.0
            remote[h] = slow[h] * two_lat * (e_out * dany + pre_any)
            remote_w[h] = two_lat * (e_out * dany / bbk[h] + pre_any)
            if prompt:
                puse[h] = slow[h] * pu.transpose(3, 0, 1, 2)
                puse_w[h] = pu.transpose(3, 0, 1, 2)
                pbase[h] = slow[h] * pbs[h]
                pbase_w[h] = pbs[h]
                pxfer[h] = slow[h] * px[:, None] * inv_bw[None, :]
                pxfer_w[h] = px[:, None] * inv_bw[None, :]
                premote[h] = slow[h] * two_lat * pan
                premote_w[h] = two_lat * pan
        share = (pop[:, :, None] * onehot).sum(axis=1).mean(axis=0)  # [G]
        ws = SHARED_SENSITIVITY * m.n_shared_experts / m.top_k if m.n_shared_experts else 0.0
        qbits = share[:, None] * bits_loss(np.array(bits))[None, :] / (1.0 + ws)
        qkeep = np.asarray(token_keep_loss(np.array(keeps)), float)
        count = onehot.sum(axis=(0, 1))  # experts per group over all layers
        group_gb = count[:, None] * np.array([m.expert_bytes(b) for b in bits])[None, :] / GB
        if cfg.migration:
            mig_x, mig_home, mig_x_s, mig_home_s = _migration_costs(
                world, obs, name, m, groups, onehot, bits, up, gb_ms
            )
        else:
            mig_x, mig_home = np.zeros((G, S, 2, B)), np.zeros(S)
            mig_x_s, mig_home_s = np.zeros((G, S, 2, B)), np.zeros(S)
        rtt = np.where(np.isfinite(lat), 2.0 * lat, 0.0)
        models.append(
            ModelInstance(
                name=name,
                bits=bits,
                keeps=keeps,
                policies=policies,
                home_gb=home_gb,
                group_gb=group_gb,
                cand=cand,
                order=order,
                origin_order=tuple(origin_order),
                demand=demand[:, mi_idx] * dt,
                rtt=rtt,
                base=base,
                use=use,
                xfer=xfer,
                remote=remote,
                base_w=base_w,
                use_w=use_w,
                xfer_w=xfer_w,
                remote_w=remote_w,
                qbits=qbits,
                qkeep=qkeep,
                quality_ms=quality_ms,
                mig_x=mig_x,
                mig_home=mig_home,
                groups=groups,
                batch=bbk,
                mig_x_s=mig_x_s,
                mig_home_s=mig_home_s,
                **(
                    dict(
                        prune_prompt=True,
                        pbase=pbase,
                        puse=puse,
                        pxfer=pxfer,
                        premote=premote,
                        pbase_w=pbase_w,
                        puse_w=puse_w,
                        pxfer_w=pxfer_w,
                        premote_w=premote_w,
                    )
                    if prompt
                    else {}
                ),
            )  # fmt: skip
        )
    cap = np.where(up, 1000.0 * dt * (1.0 - bg), 0.0)
    cap = np.maximum(cap, 1.0)
    kq = (ca2 + cs2) / 2.0
    # a saturated server drops requests: the marginal cost of its work is then a drop
    # per mean request's work, which caps the waiting cost's slope
    mean_work = [
        float(np.median([_lowest(mi, h, _exec_ok_raw(up, host_ok, mi), latency=False)
                         for h in np.flatnonzero(mi.cand)]))
        for mi in models if mi.cand.any()
    ]  # fmt: skip
    per_req = float(np.mean(mean_work)) if mean_work else 1000.0
    max_slope = drop_ms / max(per_req, 1.0)
    slope, icpt = queue_cuts(cap, kq, slow, cfg.queue_points, max_slope=max_slope)
    return Instance(
        models=models,
        gpu_gb=np.where(up, np.asarray(obs.gpu_capacity_gb, float) - 1e-5, 0.0),
        host_gb=np.where(host_ok, np.asarray(obs.host_capacity_gb, float) - 1e-5, 0.0),
        host_ok=host_ok,
        up=up,
        cap_ms=cap,
        queue_slope=slope,
        queue_icpt=icpt,
        overflow_ms=np.full(S, max_slope),
        quality_floor=floor,
        server_names=tuple(f"server {s}" for s in range(S)),
        mig_price=mig_price,
        epoch_s=dt,
    )


def to_plan(inst: Instance, decisions: Sequence[Decision]) -> Plan:
    """The world's :class:`Plan` of ``decisions`` (instances built by :func:`build_instance`)."""
    out = {}
    S = inst.n
    for mi, d in zip(inst.models, decisions, strict=True):
        if mi.groups is None:
            raise ValueError(f"{mi.name}: an abstract instance has no experts to plan")
        L, E = mi.groups.shape
        loc = np.zeros((L, E, S), np.int8)
        place = np.asarray(d.place)
        for s in range(S):
            tier = place[mi.groups, s]  # [L, E]
            loc[:, :, s] = np.where(tier == 1, GPU, np.where(tier == 2, HOST, ABSENT))
        bits = np.asarray(mi.bits)[np.asarray(d.bits)][mi.groups].astype(np.int8)
        homes = tuple(int(h) for h in np.flatnonzero(d.homes))
        out[mi.name] = ModelPlan(
            mi.name, loc, bits, homes, np.full(L, d.policy, np.int8), mi.keeps[d.keep]
        )
    return Plan(out)


def _little_batch(world, obs, inst, decisions, plan, serving, demand_per_s, e_out) -> dict:
    """Decode batch per (model, home), as the world forms it.

    ``serving.batching: offered``: Little's law at the plan's batch-1 step cost, bucketed
    to a power of two (the world's own rule there).

    ``continuous``: the sequences an engine decodes at once (:mod:`coel_env.core.batching`),
    by Little's law at the batch's own step. A sequence decodes for ``e_out`` steps; a
    home's step lasts its engine's pass plus those of its other engines while they have
    sequences (engine ``m`` has some a share ``min(1, b_m)`` of the time), slowed by
    background load; the
    prompts' chunked prefills take a share ``rho_pre = sum_m lam_m pre_m / (1000 (1 -
    bg))`` of the home's time (``pre_m``: the world's prefill line at the mean prompt,
    kept share only under prompt pruning). So ``b_m = lam_m e_out T_h / (1000 (1 -
    rho_pre))`` with ``T_m = (dec_m(max(1, b_m)) + sum_{m' != m} min(1, b_m')
    dec_m'(max(1, b_m'))) / (1 - bg_h)`` (the
    decode pass linear between the powers of two it is costed at, as the world's),
    iterated from ``b = 0`` (increasing: the least fixed point, or the cap when the
    engines cannot keep up), capped at ``serving.max_batch`` and at the KV pool the world
    gives the engine over a sequence's mean reservation (kept prompt plus output tokens),
    and rounded to whole sequences (at least 1).
    """
    if world.scenario.serving.batching == "continuous":
        return _continuous_batch(world, obs, inst, decisions, plan, serving, demand_per_s, e_out)
    out = {}
    up = np.asarray(obs.up, bool)
    for mi_idx, (mi, d) in enumerate(zip(inst.models, decisions, strict=True)):
        lam = _home_rates(inst, mi, d, demand_per_s[:, mi_idx])
        bb = np.ones(inst.n)
        mp = plan.models[mi.name]
        for h in np.flatnonzero(d.homes):
            c1 = serving.step(
                mp, int(h), np.asarray(obs.popularity[mi.name]), 1, obs.latency_ms,
                obs.bandwidth_gbit_s, up,
            )  # fmt: skip
            bb[h] = bucket(max(1.0, lam[h] * e_out * c1.ms / 1000.0))
        out[mi.name] = bb
    return out


def _home_rates(inst, mi, d, demand_per_s) -> np.ndarray:
    """Arrival rate per home [1/s]: each origin's demand to its nearest open home."""
    lam = np.zeros(inst.n)
    homes = d.homes
    for o in range(inst.n):
        hs = mi.origin_order[o]
        hs = hs[homes[hs]] if hs.size else hs
        if hs.size and demand_per_s[o] > 0:
            lam[hs[0]] += demand_per_s[o]
    return lam


def _continuous_batch(world, obs, inst, decisions, plan, serving, demand_per_s, e_out) -> dict:
    """:func:`_little_batch` under continuous batching."""
    sv = world.scenario.serving
    pts = batch_points(sv.max_batch)
    top = len(pts) - 1
    e_in = _token_stats(world)[0]
    up = np.asarray(obs.up, bool)
    slow = 1.0 / (1.0 - np.clip(np.asarray(obs.background, float), 0.0, 0.95))
    gpu_use = memory_use_gb(plan, world.n, world.kv_reserve_gb)[0]
    free_gb = np.maximum(np.asarray(world.gpu_capacity_gb, float) - gpu_use, 0.0)
    n_homed = np.zeros(world.n)
    for mp in plan.models.values():
        n_homed[list(mp.home)] += 1
    args = (obs.latency_ms, obs.bandwidth_gbit_s, up)
    engines: dict[int, list] = {}  # home -> [(model index, rate, prefill ms, curve, cap)]
    for mi_idx, (mi, d) in enumerate(zip(inst.models, decisions, strict=True)):
        lam = _home_rates(inst, mi, d, demand_per_s[:, mi_idx])
        mp = plan.models[mi.name]
        pop = np.asarray(obs.popularity[mi.name])
        keep = mp.keep_ratio if sv.pruning == "prompt" else 1.0
        for h in np.flatnonzero(d.homes & (lam > 0)):
            h = int(h)
            curve = serving.table(mp, h, pop, pts, ("decode",) * len(pts), *args).ms
            pre = serving.table(mp, h, pop, PREFILL_POINTS, ("prefill",) * 2, *args)
            a0, a1 = prefill_line([pre.at(0), pre.at(1)])
            pool_gb = world.kv_reserve_gb[mi.name] + free_gb[h] / max(n_homed[h], 1.0)
            kv_seqs = pool_gb * GB / kv_bytes_per_token(mp.spec) / (keep * e_in + e_out)
            cap = max(1.0, min(float(sv.max_batch), np.floor(kv_seqs)))
            engines.setdefault(h, []).append((mi_idx, lam[h], a0 + a1 * keep * e_in, curve, cap))

    def dec(curve, b):
        j, f = batch_point(b, top)
        return curve[j] * (1.0 - f) + curve[j + 1] * f if f else curve[j]

    out = {mi.name: np.ones(inst.n) for mi in inst.models}
    for h, eng in engines.items():
        # the share of the home's time its prefills take; the rest runs decode steps
        free = 1.0 - slow[h] * sum(e[1] * e[2] for e in eng) / 1000.0
        b = np.zeros(len(eng))  # sequences decoding on average (0: none yet)
        for _ in range(200):
            # a sequence's step: its engine's pass, and the passes of the home's other
            # engines while they have sequences
            own = np.array([dec(e[3], max(1.0, bi)) for e, bi in zip(eng, b, strict=True)])
            busy = np.minimum(1.0, b) * own
            step = slow[h] * (own + busy.sum() - busy)
            new = np.array(
                [min(e[4], e[1] * e_out * st / max(free, 1e-9) / 1000.0)
                 for e, st in zip(eng, step, strict=True)]
            )  # fmt: skip
            if free <= 0.0:  # prefills alone fill the home: every engine at its cap
                new = np.array([e[4] for e in eng])
            done = np.allclose(new, b, rtol=1e-6, atol=1e-9)
            b = new
            if done:
                break
        for e, bi in zip(eng, b, strict=True):
            out[inst.models[e[0]].name][h] = float(max(1, round(bi)))
    return out
