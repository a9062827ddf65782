"""An exact MILP for one epoch's deployment, solved with HiGHS, and the policies built on it.

Decisions, per model (:func:`build_milp`; binaries in brackets):

* **homes** [``a[h]``]: the servers that run the dense part; **origin -> home**
  [``A[o, h]``]: each origin's requests go to its *nearest* open home, as the world
  routes them (``sum_{h' as near as h} A[o, h'] >= a[h]``), among its ``home_near``
  nearest candidate homes;
* **placement of expert groups** [``xs[g, s, t]``]: in every MoE layer the experts are
  ranked by the popularity estimate and cut into ``n_groups`` groups as in
  :func:`coel_env.core.groups.group_of`; *a group's decision applies to its experts in
  every layer* (per (layer, group) decisions would multiply the binaries by the layer
  count, 16-32, while ranks are already per layer). Group ``g`` on server ``s`` in tier
  ``t`` (GPU or host memory); replicas allowed, one tier per server;
* **bits** per group [``beta[g, b]``], from ``{16, 8, 4}`` by default (all replicas
  alike, as plans require); **token keep ratio** [``kappa[k]``] over
  :data:`~coel_env.core.plan.KEEP_RATIOS`; **host policy** [``pi``]: host-memory experts
  run on the host CPU or are fetched over PCIe, one choice per model written to every
  layer;
* **the copy each home uses** [``zs[h, g, s]``]: forced to be the one the world uses,
  the home's own copy, else the nearest holder
  (``sum_{s' as near as s} zs[h, g, s'] >= xs[g, s] + a[h] - 1``). Which homes may use
  other servers' copies is ``remote``: by default (``"auto"``) only homes that cannot
  hold the whole model at the lowest width in their own memory, from their ``near``
  nearest servers (a remote copy costs a path round trip per layer and token, more than
  the lowest width's quality price on every model here).

Continuous variables that are integral once those are: the copy at its width
``x[g, s, t, b]``, the remote-use indicators, and the *demand flows*
``y[h, g, s, e, b]``: requests of home ``h`` served by group ``g``'s copy on ``s`` with
execution ``e`` (GPU, host CPU, fetch) at width ``b`` (``sum y[h, g] = D[h] = sum_o
N_o A[o, h]``, ``y <= D_max x``, ``dmin zs <= sum y <= D_max zs``).

Constraints: GPU and host memory per present server (dense part + KV reserve on homes;
a unified-memory server has one pool, the GPU capacity, and no separate host tier;
experts at their width, bytes from ``MoEModel.expert_bytes``); nothing on absent
servers; every model deployed, every group served for every home; the quality floor at
every home: the popularity-weighted bits loss exactly as
:func:`coel_env.quality.quantization_loss` computes it (linear in ``beta``) plus
:func:`~coel_env.quality.token_keep_loss` when the home lacks some group; and the load
per server: the expected work of the requests its homes serve against the epoch's
capacity ``epoch_ms * (1 - background)``, elastic (priced, below) rather than hard, so
that an overloaded epoch still gets a plan.

Objective (request-milliseconds; the matrix itself is in seconds): the expected latency
of the epoch's expected requests (``demand_per_s * epoch_s`` per origin and model),
waiting included, plus quality loss, drops and migration priced in ms through the
reward weights (:class:`Weights`: ``per_ms`` includes ``slo_reward / mean SLO budget``,
so one mean budget of extra latency ~ one SLO miss; quality, drops and migration bytes
are converted at the reward's own weights). The coefficients come from the SAME cost
model the world uses (the pieces of :meth:`coel_env.core.evaluation.ServingModel.step`,
costed at the popularity estimate), precomputed for every (model, home, group, server,
execution, width):

* **decode**: a group's expected per-token time is the sum over its experts (all
  layers) of ``P(active) * (expert call + PCIe fetch)`` at the home's representative
  batch, exactly as ``ServingModel.step`` adds experts: the eager per-active-expert
  dispatch is counted per *expected active* expert (``P(active)`` from the routing
  counts). Router, dispatch, shared experts, attention, dense layers and LM head are a
  constant per home. Times the workload's mean output tokens. The batch is the world's
  Little's-law batch (bucketed to a power of two), from a first solve at batch 1 and
  re-solved once (``refine``) if the solution's batches differ; work per request divides
  decode by it, as the world's queue does.
* **prefill**: the same pieces at the world's two prefill points (128 and 2048 tokens),
  interpolated at the mean prompt length (the world's prefill line at the mean).
* **remote groups**: activations out and back at the chosen keep ratio (a big-M epigraph
  per home and keep ratio, ``T >= keep_k * transfer - M (1 - kappa_k)``); path latency as
  a fixed charge per (home, remote server) used, ``2 * latency * sum over layers of
  min(1, sum of P(active) over all the layer's experts)``: an upper bound on the world's
  ``min(1, sum of P(active) of the experts there)``, exact when the experts on that
  server get at least one expected activation per layer (as popular groups and batches
  above 1 do); otherwise over-priced (tests: up to +13% of a home's latency with
  several remote servers at batch 1; exact for homes holding every group).
* **slowdown**: terms of home ``h`` are multiplied by ``1 / (1 - background)``, as the
  world slows service and waiting.
* **cost x demand** (bilinear: the per-request cost of ``h`` depends on the copies, its
  demand on the assignment) is exact through the flows ``y``: the least per-request cost
  of a home is paid through ``A``, the excess of each option through its flow.
* **queueing** (the world: FIFO per home, backlog, drops beyond ``max_queue_s``):
  replaced by the capacity above and a convex piecewise-linear *Kingman* waiting cost
  of the server's work ``W``, tangents of ``kq W^2 / (2 (cap - W))`` with ``kq = (ca^2
  + cs^2) / 2`` (arrival CV of the workload, CV of output lengths), up to the
  utilisation where its slope reaches the price of dropping (a drop per mean request's
  work); beyond, and for work over capacity, that price.
* **migration** from ``obs.plan``, per expert by the world's rule (an old copy with
  enough bits on the same server: PCIe if the tier changes; else the network from the
  nearest old holder, or the store; the dense part to new homes): bytes priced linearly
  at the migration reward weight, and receive time as the world charges it,
  ``price * min(1, receive time / epoch)`` per server, exact with one binary per server
  (``price``: the server's requests of an epoch, dropped).

* **the world's fidelity keys** (``docs/world.md``): the instance's ``ServingModel``
  has every option of the world's (:func:`~agents.milp.from_world.serving_model`, the
  world's own builder) and the experts' calls and dispatch are the world's functions, so
  ``serving.mode`` (``fused``), ``serving.quant_scaling`` and ``serving.layer_terms``
  hold exactly. ``activation_traffic: per_server``: a token's crossings per (layer,
  group), summed over the groups a remote server holds, an upper bound on the world's
  per-server count (subadditive), exact with one group per remote server, never above
  ``per_expert`` (:func:`~agents.milp.from_world._serving_parts`). ``pruning: prompt``:
  the keep loss at every open home, transfer bytes whole, and the prompt's part of the
  prefill (the prefill line's slope times the mean prompt, per piece: ``ModelInstance.p*``)
  cut by ``1 - keep``: a saving ``sv <= (1 - keep_k) P + M (1 - kappa_k)`` per keep
  ratio (the world's clipped prefill line is taken unclipped). ``batching: continuous``:
  the decode batch is the engines' steady state by Little's law at the batch's own step
  (:func:`~agents.milp.from_world._little_batch`), and the decode pass is linear between
  the powers of two around it, as the world's. ``updating.migration: durable`` is not
  modelled (receive time priced as at most one epoch).

Approximated, in short: expected values at mean token counts and a representative batch;
the popularity estimate (mean over servers) for every home; the remote path latency's
upper bound; M/D/1 with backlog and drops replaced by Kingman + a drop price; the SLO
priced through latency; the requests a migrating server loses taken as its own origin's.
Restrictions: group-level (not per layer) decisions, one host policy per model, remote
copies only for homes that need them (``remote``), origins to their ``home_near``
nearest candidates.

Policies: :class:`MilpPolicy` (``milp-oracle``: true state, re-solved every epoch;
``milp-periodic``: the broadcast view, every ``every`` epochs, demand smoothed from what
was heard) and :class:`StaticPolicy` (the first epoch's plan, kept). They warm-start
HiGHS from their last decisions, keep the plan in force unless a new one gains
``switch_gain`` on the objective, and store the last :class:`MilpResult` in ``.last``.

:func:`evaluate` computes the same objective and constraints by formula, not through
the matrix; :func:`brute_force` enumerates every decision of a small instance with it;
the tests check that solver, matrix and formula agree, and that the coefficients equal
``ServingModel.step`` on decoded plans.

The package, by concern (a module imports only those above it in this list):

* :mod:`~agents.milp.config`: :class:`MilpConfig`, :class:`Weights`, the errors, the
  reward weights' defaults;
* :mod:`~agents.milp.instance`: :class:`Instance`, :class:`ModelInstance`,
  :class:`Decision`, :func:`queue_cuts`;
* :mod:`~agents.milp.formula`: :func:`evaluate`, :func:`brute_force`,
  :func:`random_instance`;
* :mod:`~agents.milp.formulation`: :func:`build_milp`, :func:`encode`, :func:`decode`,
  :func:`diagnose`;
* :mod:`~agents.milp.warmstart`: :func:`greedy_solution`;
* :mod:`~agents.milp.from_world`: :func:`build_instance`, :func:`to_plan`;
* :mod:`~agents.milp.solving`: :func:`solve`, :func:`solve_world`, :class:`MilpResult`;
* :mod:`~agents.milp.policies`: :class:`MilpPolicy`, :class:`StaticPolicy`,
  :class:`StaticHomesPolicy`.
"""

from __future__ import annotations

from agents.milp.config import MilpConfig, MilpError, MilpInfeasible, Weights
from agents.milp.formula import _eval_model as _eval_model
from agents.milp.formula import brute_force, evaluate, random_instance
from agents.milp.formulation import UNIT as UNIT
from agents.milp.formulation import MilpModel, build_milp, decode, diagnose, encode
from agents.milp.from_world import _token_stats as _token_stats
from agents.milp.from_world import build_instance, to_plan
from agents.milp.instance import E_CPU as E_CPU
from agents.milp.instance import E_FETCH as E_FETCH
from agents.milp.instance import E_GPU as E_GPU
from agents.milp.instance import T_GPU as T_GPU
from agents.milp.instance import T_HOST as T_HOST
from agents.milp.instance import Decision, Instance, ModelInstance, queue_cuts
from agents.milp.policies import MilpPolicy, StaticHomesPolicy, StaticPolicy
from agents.milp.policies import _true_demand as _true_demand
from agents.milp.solving import MilpResult, solve, solve_world
from agents.milp.warmstart import greedy_solution

__all__ = [
    "Decision",
    "Instance",
    "MilpConfig",
    "MilpError",
    "MilpInfeasible",
    "MilpModel",
    "MilpPolicy",
    "MilpResult",
    "ModelInstance",
    "StaticHomesPolicy",
    "StaticPolicy",
    "Weights",
    "brute_force",
    "build_instance",
    "build_milp",
    "decode",
    "diagnose",
    "encode",
    "evaluate",
    "greedy_solution",
    "queue_cuts",
    "random_instance",
    "solve",
    "solve_world",
    "to_plan",
]
