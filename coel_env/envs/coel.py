"""Gymnasium environments over the CoEL world: IntraDevice, InterDevice and CoEL."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from coel_env.core.plan import InfeasibilityReport, reuse_unchanged
from coel_env.core.rewards import (
    REWARD_REFS,
    REWARD_TERMS,
    RewardConfig,
    check_reward_value,
    report_info,
    reward_terms,
    total_reward,
)
from coel_env.core.world import World
from coel_env.envs.actions import (
    CoELAction,
    CoELSetAction,
    CoELSetActionV2,
    HomeSetAction,
    InterDeviceAction,
    IntraDeviceAction,
)
from coel_env.envs.observations import ViewObservation


class HomeSetObservation(ViewObservation):
    """:class:`ViewObservation` whose plan part flags *every* home of a model (the
    version-1 envs, whose actions choose a set of homes), not only the first."""

    def _model_part(self, name: str, pop: np.ndarray) -> np.ndarray:
        part = super()._model_part(name, pop)
        mp = self.world.plan.models.get(name)
        if mp is None or len(mp.home) == 1:
            return part
        homes = self.__dict__.setdefault("_homes", {})
        hit = homes.get(name)
        if hit is not None and hit[0] is part:  # the parent's cache entry is unchanged
            return hit[1]
        flagged = part.copy()  # the parent's cached array stays as it is
        flagged[self.n_groups + np.asarray(mp.home)] = 1.0
        homes[name] = (part, flagged)
        return flagged


class CoELBaseEnv(gym.Env):
    """Shared machinery; see :class:`CoELEnv` for the full documentation."""

    metadata = {"render_modes": ["rgb_array", "ansi"], "render_fps": 1}
    SCENARIO = "default"
    ACTION = CoELAction
    OBSERVATION = ViewObservation
    MAX_STEPS = 200

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        """Every configuration key with its default and unit."""
        return {
            "scenario": cls.SCENARIO,  # preset name or YAML path (coel_env.core.scenario)
            "overrides": {},  # dotted scenario overrides, e.g. {"workload.rate_per_s": 0.1}
            "trace": None,  # request trace CSV (Azure or generic); None: synthetic
            "topology": None,  # .graphml (Topology Zoo) or .csv (EUA sites); None: scenario's
            "device_profiles": [],  # CSVs written by `coel profile`, loaded before the world
            "controller": 0,  # server whose broadcast view is observed [index]
            "n_groups": 4,  # popularity groups per layer that actions address
            "max_steps": cls.MAX_STEPS,  # normalises the progress feature [epochs]
            # reward weights and references (units and meaning: RewardConfig's fields)
            **RewardConfig().as_dict(),
        }

    def __init__(self, config: dict | None = None, render_mode: str | None = None) -> None:
        cfg = self.default_config()
        for key, value in (config or {}).items():
            if key not in cfg:
                raise ValueError(
                    f"unknown config key {key!r}; valid keys: {', '.join(sorted(cfg))}"
                )
            cfg[key] = value
        _check_config(cfg)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode={render_mode!r} is not allowed; allowed: "
                f"{self.metadata['render_modes']}"
            )
        self.config = cfg
        self.render_mode = render_mode
        self.world = _build_world(cfg)
        if not 0 <= cfg["controller"] < self.world.n:
            raise ValueError(
                f"controller={cfg['controller']!r} is not allowed; "
                f"servers are 0..{self.world.n - 1}"
            )
        self.action_type = self.ACTION(self.world, cfg["n_groups"])
        self.action_space = spaces.MultiDiscrete(self.action_type.space_nvec())
        self.observation_type = self.OBSERVATION(
            self.world, cfg["controller"], cfg["n_groups"], cfg["max_steps"]
        )
        self.observation_space = self.observation_type.space()
        self._shape_key = (self.world.n, self.world.models)
        self._last_report = None
        self._pop: dict = {}

    # ------------------------------------------------------------------ API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options:
            allowed = ("overrides",)
            bad = [k for k in options if k not in allowed]
            if bad:
                raise ValueError(f"unknown reset option {bad[0]!r}; allowed: {allowed}")
            cfg = dict(self.config, overrides={**self.config["overrides"], **options["overrides"]})
            world = _build_world(cfg)
            if (world.n, world.models) != self._shape_key:
                raise ValueError(
                    "reset options would change the spaces' shapes "
                    f"({world.n} servers, models {world.models} instead of "
                    f"{self._shape_key[0]} servers, {self._shape_key[1]}); make a new env"
                )
            self.world = world
            self.action_type.world = world
            self.observation_type.world = world
        self.world.reset(int(self.np_random.integers(2**63 - 1)))
        self._pop = self.observation_type.popularity()
        self._last_report = None
        return self.observation_type.observe(self._pop), {"invalid_action": False}

    def action_masks(self) -> np.ndarray:
        """sb3-contrib MaskablePPO masks: one flag per choice of every field."""
        if not getattr(self.world, "_seeded", False):
            raise RuntimeError("call reset() before action_masks()")
        return self.action_type.mask()

    def step(self, action):
        a = self._check_action(action)
        decoded = self.action_type.decode(a, self.world.plan, self._pop)
        if isinstance(decoded, InfeasibilityReport):  # no plan at all (e.g. no home chosen)
            plan, report_ok = None, decoded
        else:
            plan = reuse_unchanged(decoded, self.world.plan)
            report_ok = self.world.check(plan)
        invalid = not report_ok.feasible
        report = self.world.step(None if invalid else plan)
        terms = self._rewards(report, invalid)
        reward = total_reward(terms, self.config)
        self._pop = self.observation_type.popularity()
        self._last_report = report
        info = {
            "rewards": terms,
            "invalid_action": invalid,
            "infeasibility": "" if not invalid else str(report_ok),
            **report_info(report),
        }
        obs = self.observation_type.observe(self._pop)
        return obs, reward, False, False, info

    def encode_plan(self, plan) -> np.ndarray:
        """The action that comes closest to deploying ``plan`` (a
        :class:`~coel_env.core.plan.Plan`; None: keep the plan in force) from the plan
        in force, for imitating other policies (version-1 envs only: their actions can
        express the baselines' plans)."""
        if not getattr(self.world, "_seeded", False):
            raise RuntimeError("call reset() before encode_plan()")
        if not hasattr(self.action_type, "encode"):
            raise ValueError(
                f"{type(self).__name__} cannot encode plans (it names one home per model); "
                "use CoEL-v1 or CoEL-InterDevice-v1"
            )
        return self.action_type.encode(plan, self.world.plan, self._pop)

    def render(self):
        from coel_env.envs.render import render_ansi, render_rgb

        if self.render_mode == "ansi":
            return render_ansi(self.world, self._last_report)
        if self.render_mode == "rgb_array":
            return render_rgb(self.world, self._last_report)
        return None

    # ------------------------------------------------------------ internals

    def _check_action(self, action) -> np.ndarray:
        nvec = self.action_space.nvec
        try:
            a = np.asarray(action)
        except Exception:  # noqa: BLE001 - anything that is not array-like
            raise ValueError(f"action {action!r} is not an array of integers") from None
        if a.shape == nvec.shape and a.dtype.kind in "iu" and ((a >= 0) & (a < nvec)).all():
            return a.astype(np.int64)  # the common case: integers in range
        if a.shape != nvec.shape:
            raise ValueError(f"action has shape {a.shape}; the action space needs {nvec.shape}")
        if not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)):
            raise ValueError(f"action {a.tolist()} must be finite integers")
        if not np.all(a == np.round(a)) or (a < 0).any() or (a >= nvec).any():
            i = int(np.flatnonzero((a < 0) | (a >= nvec) | (a != np.round(a)))[0])
            raise ValueError(
                f"action[{i}]={a[i].item()!r} is not allowed; field {i} takes 0..{int(nvec[i]) - 1}"
            )
        return a.astype(np.int64)

    def _rewards(self, r, invalid: bool) -> dict[str, float]:
        return reward_terms(r, self.world, self.config, invalid)

    def __deepcopy__(self, memo):
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            setattr(new, k, copy.deepcopy(v, memo))
        return new


def _check_config(cfg: dict) -> None:
    for key in ("controller", "n_groups", "max_steps"):
        v = cfg[key]
        if (
            isinstance(v, bool)
            or not isinstance(v, int | np.integer)
            or v < (0 if key == "controller" else 1)
        ):
            raise ValueError(f"{key}={v!r} is not allowed; must be an integer >= "
                             f"{0 if key == 'controller' else 1}")  # fmt: skip
    for key in (*REWARD_TERMS, *REWARD_REFS):
        check_reward_value(key, cfg[key])
    if not isinstance(cfg["overrides"], dict):
        raise ValueError(f"overrides={cfg['overrides']!r} is not allowed; must be a dict")
    if not isinstance(cfg["device_profiles"], list | tuple):
        raise ValueError("device_profiles must be a list of profile CSV paths")


def _build_world(cfg: dict) -> World:
    from pathlib import Path

    from coel_env import profiles
    from coel_env.core.scenario import topology_overrides, trace_overrides

    for p in cfg["device_profiles"]:
        name = Path(p).stem
        if name not in profiles.device_names():
            profiles.load_profile(p)
    over = dict(cfg["overrides"])
    if cfg["trace"] is not None:
        over = {**trace_overrides(Path(cfg["trace"])), **over}
    if cfg["topology"] is not None:
        over = {**topology_overrides(Path(cfg["topology"])), **over}
    return World(cfg["scenario"], over or None)


class IntraDeviceEnv(CoELBaseEnv):
    """One edge server, one MoE model that does not fit its GPU (``CoEL-IntraDevice-v0``).

    ## Description

    Intra-device collaboration on the ``intra`` scenario: an NVIDIA L4 edge server (24 GB
    GPU) with its x86 host serves Qwen1.5-MoE-A2.7B, whose weights take 28.6 GB at
    16 bits. Each step is one 10 s epoch in which the agent decides which experts stay
    resident on the GPU (by popularity rank), the bit width of each popularity group,
    and whether experts in host memory run on the host CPU or are fetched over PCIe.
    Demand, the task mix (so which experts are hot) and background load drift; links
    and servers do not change.

    Experts are addressed in popularity groups: in every MoE layer the experts are ranked
    by the controller's popularity estimate and cut into ``n_groups`` equal groups
    (group 0 the most popular); a decision about a group applies to its experts in every
    layer.

    ## Action Space

    ``MultiDiscrete`` with ``2 + n_groups`` fields per model
    (:class:`~coel_env.envs.actions.IntraDeviceAction`); with the default ``n_groups``
    4: 6 fields, 31 choices, ``nvec = [9, 5, 5, 5, 5, 2]``:

    - ``resident`` (9): keep the top ``resident / 8`` of each layer's experts (by
      popularity) on the GPU, the rest in host memory;
    - ``bits_g`` (5, one per group): the group's bit width, index into (16, 8, 4, 3, 2);
    - ``host_policy`` (2): experts in host memory run on the host CPU (0) or are copied
      to the GPU over PCIe when tokens arrive (1).

    ``env.unwrapped.action_masks()`` (sb3-contrib MaskablePPO layout: one flag per choice
    of every field, concatenated) masks the residency levels whose GPU share cannot fit
    even at 2 bits.

    **Invalid actions**: an action whose decoded plan does not fit (memory checked against
    the true capacities, or an absent server) is not deployed: the plan in force stays and
    runs the epoch, ``invalid_reward`` is -1 and ``info["invalid_action"]`` is True with
    ``info["infeasibility"]`` saying why (e.g.
    ``infeasible: server 0: GPU memory needs 29.63 GB of 24.00 GB (over by 5.63 GB)``). An
    action outside the space (wrong shape, a field out of range or not an integer, NaN)
    raises ``ValueError`` naming the field and its range.

    ## Observation Space

    ``Box(0, 1, (31,), float32)``: in general ``n * (10 + m) + m * (4 * n_groups + n + 2)
    + 1`` values for ``n`` servers and ``m`` models (here 1 and 1).

    Layout (:mod:`coel_env.envs.observations`), every entry finite and in [0, 1]:

    1. per server, ``10 + m`` values: what the controller last heard of it by broadcast
       (stale, possibly lost; its own entry is fresh): free GPU and host memory shares,
       utilisation, dropped share, background load, present, mean link bandwidth
       multiplier / 2, demand per model / (5 x the base rate); then the age of that
       news / (5 broadcast periods), a "heard at all" flag and an "is the controller"
       flag;
    2. per model, ``4 * n_groups + n + 2`` values: the share of routed tokens of each
       popularity group; the plan in force: a one-hot of its home, per group the mean bit
       width / 16, the share on a GPU and the share away from the home; its token keep ratio
       and a "deployed" flag;
    3. the progress: epoch / ``max_steps``, capped at 1.

    True metrics of the epoch (not the controller's view) are in ``info``:
    ``slo_attainment``, ``latency_p95_ms``, ``quality_loss``, ``requests_arrived``,
    ``requests_dropped``, ``migration_bytes`` [bytes], ``energy_j``, ``broadcast_bytes``.

    ## Rewards

    ``reward = sum(config[t] * info["rewards"][t])`` over eight named, unweighted terms
    (:func:`coel_env.core.rewards.reward_terms`); each weight is the config key of the
    term's name (default in brackets):

    - ``slo_reward`` [1.0]: share of the epoch's arrived requests that met their SLO, 0..1;
    - ``latency_reward`` [0.2]: -p95 latency / ``latency_ref_ms``, capped at -1;
    - ``quality_reward`` [0.5]: -quality loss / the workload's quality floor / 2, capped
      at -1;
    - ``dropped_reward`` [0.5]: -share of the arrived requests that were dropped;
    - ``migration_reward`` [0.1]: -bytes moved / ``migration_ref_gb``, capped at -1;
    - ``energy_reward`` [0.05]: -energy / (every GPU busy for the whole epoch), capped
      at -1;
    - ``broadcast_reward`` [0.0]: -broadcast bytes / ``broadcast_ref_mb``, capped at -1;
    - ``invalid_reward`` [1.0]: -1 when the action was invalid (see **Action Space**),
      else 0.

    The evaluation harness (``agents.harness``) prices the baselines' plans with the
    same function, so returns compare number for number.

    ## Starting State

    ``reset(seed=s)`` seeds the env's ``np_random``, which draws the world's seed; from it
    the world draws the initial state of its dynamics and its request stream, deploys its
    naive plan (the model at 16 bits: experts on the GPU while they fit, layer by layer in
    expert order, the rest in host memory, run on the host CPU) and broadcasts once, so the
    controller has heard only itself. ``info`` is ``{"invalid_action": False}``. Env seed
    ``s`` is not the instance that ``World.reset(s)`` (and so
    ``coel baselines/evaluate/compare --seeds``) gives: training-time evaluations and the
    comparison tables never share instances. ``reset(options={"overrides": {...}})``
    rebuilds the world with these scenario overrides added; overrides that would change the
    spaces' shapes raise ``ValueError``.

    ## Episode End

    The episode never terminates (``terminated`` is always False): the registration's
    ``max_episode_steps`` truncates it after 100 epochs (1000 simulated seconds at
    the scenario's 10 s epoch). ``config["max_steps"]`` only scales the progress
    feature.

    ## Arguments

    ```python
    import gymnasium as gym
    import coel_env  # registers the ids

    env = gym.make(
        "CoEL-IntraDevice-v0",
        config={"overrides": {"workload.rate_per_s": 0.1}, "slo_reward": 2.0},
        render_mode="ansi",
    )
    obs, info = env.reset(seed=0)
    ```

    ``render_mode`` and ``config`` as for :class:`CoELEnv`, which lists every key of
    :meth:`default_config` with its unit (unknown keys raise ``ValueError`` naming the
    valid ones); here ``scenario`` defaults to ``"intra"`` and ``max_steps`` to
    100.

    ## Version History

    - v0: initial release; the current version.
    """

    SCENARIO = "intra"
    ACTION = IntraDeviceAction
    MAX_STEPS = 100


class InterDeviceEnv(CoELBaseEnv):
    """Several edge servers on a static topology, two MoE models (``CoEL-InterDevice-v0``).

    ## Description

    Inter-device collaboration on the ``inter`` scenario: 4 heterogeneous edge servers
    (a Jetson Orin Nano 8 GB, two L4s and an RTX 4090) on a random geometric topology
    serve OLMoE-1B-7B and Qwen1.5-MoE-A2.7B. Each step is one 10 s epoch in which the
    agent redeploys every model: its home server (dense part), whether it stays whole
    on the home or its popularity groups spread to nearby servers (with optional
    replicas on the home), each group's bit width, the token keep ratio of activations
    sent between servers and the host policy. Links and servers do not change; demand,
    the task mix and background load drift.

    Experts are addressed in popularity groups: in every MoE layer the experts are ranked
    by the controller's popularity estimate and cut into ``n_groups`` equal groups
    (group 0 the most popular); a decision about a group applies to its experts in every
    layer.

    ## Action Space

    ``MultiDiscrete`` with ``5 + 2 * n_groups`` fields per model, models in scenario
    order (:class:`~coel_env.envs.actions.InterDeviceAction`); on ``inter`` with the
    default ``n_groups`` 4: 26 fields, 100 choices. Per model:

    - ``home`` (n): the server that runs the dense part (attention, embeddings, router,
      shared experts) and takes the model's requests;
    - ``spread`` (2): 0 keeps every group on the home, 1 puts group ``g`` on ``place_g``;
    - ``place_g`` (4, one per group): 0 the home, k its k-th nearest server by path
      latency;
    - ``replicate`` (2): 1 also keeps a copy of every remote group on the home;
    - ``bits_g`` (5, one per group): the group's bit width, index into (16, 8, 4, 3, 2);
    - ``keep`` (4): share of tokens kept (pruning/fusion) in activations sent between
      servers, index into (1, 0.75, 0.5, 0.25);
    - ``host_policy`` (2): experts in host memory run on the host CPU (0) or are copied
      to the GPU over PCIe when tokens arrive (1).

    On every server the experts placed there fill GPU memory in popularity order, the
    rest go to host memory.

    ``env.unwrapped.action_masks()`` (sb3-contrib MaskablePPO layout: one flag per choice of
    every field, concatenated) masks homes that cannot hold the model's dense part or are
    absent.

    **Invalid actions**: an action whose decoded plan does not fit (memory checked against
    the true capacities, or an absent server) is not deployed: the plan in force stays and
    runs the epoch, ``invalid_reward`` is -1 and ``info["invalid_action"]`` is True with
    ``info["infeasibility"]`` saying why (e.g.
    ``infeasible: server 0: GPU memory needs 29.63 GB of 24.00 GB (over by 5.63 GB)``). An
    action outside the space (wrong shape, a field out of range or not an integer, NaN)
    raises ``ValueError`` naming the field and its range.

    ## Observation Space

    ``Box(0, 1, (93,), float32)`` on ``inter``: in general
    ``n * (10 + m) + m * (4 * n_groups + n + 2) + 1`` values for ``n`` servers and ``m``
    models.

    Layout (:mod:`coel_env.envs.observations`), every entry finite and in [0, 1]:

    1. per server, ``10 + m`` values: what the controller last heard of it by broadcast
       (stale, possibly lost; its own entry is fresh): free GPU and host memory shares,
       utilisation, dropped share, background load, present, mean link bandwidth
       multiplier / 2, demand per model / (5 x the base rate); then the age of that
       news / (5 broadcast periods), a "heard at all" flag and an "is the controller"
       flag;
    2. per model, ``4 * n_groups + n + 2`` values: the share of routed tokens of each
       popularity group; the plan in force: a one-hot of its home, per group the mean bit
       width / 16, the share on a GPU and the share away from the home; its token keep ratio
       and a "deployed" flag;
    3. the progress: epoch / ``max_steps``, capped at 1.

    True metrics of the epoch (not the controller's view) are in ``info``:
    ``slo_attainment``, ``latency_p95_ms``, ``quality_loss``, ``requests_arrived``,
    ``requests_dropped``, ``migration_bytes`` [bytes], ``energy_j``, ``broadcast_bytes``.

    ## Rewards

    ``reward = sum(config[t] * info["rewards"][t])`` over eight named, unweighted terms
    (:func:`coel_env.core.rewards.reward_terms`); each weight is the config key of the
    term's name (default in brackets):

    - ``slo_reward`` [1.0]: share of the epoch's arrived requests that met their SLO, 0..1;
    - ``latency_reward`` [0.2]: -p95 latency / ``latency_ref_ms``, capped at -1;
    - ``quality_reward`` [0.5]: -quality loss / the workload's quality floor / 2, capped
      at -1;
    - ``dropped_reward`` [0.5]: -share of the arrived requests that were dropped;
    - ``migration_reward`` [0.1]: -bytes moved / ``migration_ref_gb``, capped at -1;
    - ``energy_reward`` [0.05]: -energy / (every GPU busy for the whole epoch), capped
      at -1;
    - ``broadcast_reward`` [0.0]: -broadcast bytes / ``broadcast_ref_mb``, capped at -1;
    - ``invalid_reward`` [1.0]: -1 when the action was invalid (see **Action Space**),
      else 0.

    The evaluation harness (``agents.harness``) prices the baselines' plans with the
    same function, so returns compare number for number.

    ## Starting State

    ``reset(seed=s)`` seeds the env's ``np_random``, which draws the world's seed; from it
    the world draws the initial state of its dynamics and its request stream, deploys its
    naive plan (each model whole at 16 bits on every edge server that can hold it, experts
    on the GPU while they fit and the rest in host memory, run on the host CPU; requests at
    a server that cannot hold it go to the nearest one that does) and broadcasts once, so
    the controller has heard only itself. ``info`` is ``{"invalid_action": False}``. Env
    seed ``s`` is not the instance that ``World.reset(s)`` (and so
    ``coel baselines/evaluate/compare --seeds``) gives: training-time evaluations and the
    comparison tables never share instances. ``reset(options={"overrides": {...}})``
    rebuilds the world with these scenario overrides added; overrides that would change the
    spaces' shapes raise ``ValueError``.

    ## Episode End

    The episode never terminates (``terminated`` is always False): the registration's
    ``max_episode_steps`` truncates it after 100 epochs (1000 simulated seconds at
    the scenario's 10 s epoch). ``config["max_steps"]`` only scales the progress
    feature.

    ## Arguments

    ```python
    import gymnasium as gym
    import coel_env  # registers the ids

    env = gym.make(
        "CoEL-InterDevice-v0",
        config={"overrides": {"workload.rate_per_s": 0.1}, "slo_reward": 2.0},
        render_mode="ansi",
    )
    obs, info = env.reset(seed=0)
    ```

    ``render_mode`` and ``config`` as for :class:`CoELEnv`, which lists every key of
    :meth:`default_config` with its unit (unknown keys raise ``ValueError`` naming the
    valid ones); here ``scenario`` defaults to ``"inter"`` and ``max_steps`` to
    100.

    ## Version History

    - v1 (``CoEL-InterDevice-v1``, current): a set of homes per model.
    - v0: initial release, one home per model. Kept so that results recorded with it
      stay reproducible; ``gym.make("CoEL-InterDevice-v0")`` warns that it is out of
      date.
    """

    SCENARIO = "inter"
    ACTION = InterDeviceAction
    MAX_STEPS = 100


class CoELEnv(CoELBaseEnv):
    """The full CoEL loop: perceive, deploy, compress, update (``CoEL-v0``).

    ## Description

    Each step is one 10 s epoch. The ``default`` scenario has 5 heterogeneous edge
    servers (three L4s and two RTX 4090s, drawn from the scenario's device mix) on a
    random geometric topology and two models, OLMoE-1B-7B and Qwen1.5-MoE-A2.7B. Servers
    broadcast their status every ``perception.period_s`` (2 s) to neighbours within
    ``perception.hops`` (2) hops; messages arrive late or are lost. A controller server
    decides from its stale view, each epoch and per model, whether to keep the plan in
    force, adjust it or redeploy it, paying migration for what moves. Background load,
    link bandwidth, demand and the task mix (so which experts are hot) drift; the
    ``large`` scenario (32 edge servers and a cloud node, four models) adds link failures
    and servers that leave and join.

    Experts are addressed in popularity groups: in every MoE layer the experts are ranked
    by the controller's popularity estimate and cut into ``n_groups`` equal groups
    (group 0 the most popular); a decision about a group applies to its experts in every
    layer.

    ## Action Space

    ``MultiDiscrete`` with ``6 + 2 * n_groups`` fields per model, models in scenario
    order (:class:`~coel_env.envs.actions.CoELAction`); on ``default`` with the default
    ``n_groups`` 4: 28 fields, 108 choices. Per model:

    - ``update`` (3): 0 keep the plan in force (no other field is read), 1 adjust it (bits,
      keep ratio and host policy change; placement and home stay), 2 redeploy it from
      the fields below (experts that move are migrated and cost ``migration_reward``);
    - ``home`` (n): the server that runs the dense part (attention, embeddings, router,
      shared experts) and takes the model's requests;
    - ``spread`` (2): 0 keeps every group on the home, 1 puts group ``g`` on ``place_g``;
    - ``place_g`` (4, one per group): 0 the home, k its k-th nearest server by path
      latency;
    - ``replicate`` (2): 1 also keeps a copy of every remote group on the home;
    - ``bits_g`` (5, one per group): the group's bit width, index into (16, 8, 4, 3, 2);
    - ``keep`` (4): share of tokens kept (pruning/fusion) in activations sent between
      servers, index into (1, 0.75, 0.5, 0.25);
    - ``host_policy`` (2): experts in host memory run on the host CPU (0) or are copied
      to the GPU over PCIe when tokens arrive (1).

    On every server the experts placed there fill GPU memory in popularity order, the
    rest go to host memory.

    ``env.unwrapped.action_masks()`` (sb3-contrib MaskablePPO layout: one flag per choice of
    every field, concatenated) masks homes that cannot hold the model's dense part or are
    absent, and ``keep``/``adjust`` of a model that is not deployed.

    **Invalid actions**: an action whose decoded plan does not fit (memory checked against
    the true capacities, or an absent server) is not deployed: the plan in force stays and
    runs the epoch, ``invalid_reward`` is -1 and ``info["invalid_action"]`` is True with
    ``info["infeasibility"]`` saying why (e.g.
    ``infeasible: server 0: GPU memory needs 29.63 GB of 24.00 GB (over by 5.63 GB)``). An
    action outside the space (wrong shape, a field out of range or not an integer, NaN)
    raises ``ValueError`` naming the field and its range.

    ## Observation Space

    ``Box(0, 1, (107,), float32)`` on ``default``: in general
    ``n * (10 + m) + m * (4 * n_groups + n + 2) + 1`` values for ``n`` servers and ``m``
    models.

    Layout (:mod:`coel_env.envs.observations`), every entry finite and in [0, 1]:

    1. per server, ``10 + m`` values: what the controller last heard of it by broadcast
       (stale, possibly lost; its own entry is fresh): free GPU and host memory shares,
       utilisation, dropped share, background load, present, mean link bandwidth
       multiplier / 2, demand per model / (5 x the base rate); then the age of that
       news / (5 broadcast periods), a "heard at all" flag and an "is the controller"
       flag;
    2. per model, ``4 * n_groups + n + 2`` values: the share of routed tokens of each
       popularity group; the plan in force: a one-hot of its home, per group the mean bit
       width / 16, the share on a GPU and the share away from the home; its token keep ratio
       and a "deployed" flag;
    3. the progress: epoch / ``max_steps``, capped at 1.

    True metrics of the epoch (not the controller's view) are in ``info``:
    ``slo_attainment``, ``latency_p95_ms``, ``quality_loss``, ``requests_arrived``,
    ``requests_dropped``, ``migration_bytes`` [bytes], ``energy_j``, ``broadcast_bytes``.

    ## Rewards

    ``reward = sum(config[t] * info["rewards"][t])`` over eight named, unweighted terms
    (:func:`coel_env.core.rewards.reward_terms`); each weight is the config key of the
    term's name (default in brackets):

    - ``slo_reward`` [1.0]: share of the epoch's arrived requests that met their SLO, 0..1;
    - ``latency_reward`` [0.2]: -p95 latency / ``latency_ref_ms``, capped at -1;
    - ``quality_reward`` [0.5]: -quality loss / the workload's quality floor / 2, capped
      at -1;
    - ``dropped_reward`` [0.5]: -share of the arrived requests that were dropped;
    - ``migration_reward`` [0.1]: -bytes moved / ``migration_ref_gb``, capped at -1;
    - ``energy_reward`` [0.05]: -energy / (every GPU busy for the whole epoch), capped
      at -1;
    - ``broadcast_reward`` [0.0]: -broadcast bytes / ``broadcast_ref_mb``, capped at -1;
    - ``invalid_reward`` [1.0]: -1 when the action was invalid (see **Action Space**),
      else 0.

    The evaluation harness (``agents.harness``) prices the baselines' plans with the
    same function, so returns compare number for number.

    ## Starting State

    ``reset(seed=s)`` seeds the env's ``np_random``, which draws the world's seed; from it
    the world draws the initial state of its dynamics and its request stream, deploys its
    naive plan (each model whole at 16 bits on every edge server that can hold it, experts
    on the GPU while they fit and the rest in host memory, run on the host CPU; requests at
    a server that cannot hold it go to the nearest one that does) and broadcasts once, so
    the controller has heard only itself. ``info`` is ``{"invalid_action": False}``. Env
    seed ``s`` is not the instance that ``World.reset(s)`` (and so
    ``coel baselines/evaluate/compare --seeds``) gives: training-time evaluations and the
    comparison tables never share instances. ``reset(options={"overrides": {...}})``
    rebuilds the world with these scenario overrides added; overrides that would change the
    spaces' shapes raise ``ValueError``.

    ## Episode End

    The episode never terminates (``terminated`` is always False): the registration's
    ``max_episode_steps`` truncates it after 200 epochs (2000 simulated seconds at
    the scenario's 10 s epoch). ``config["max_steps"]`` only scales the progress
    feature.

    ## Arguments

    ```python
    import gymnasium as gym
    import coel_env  # registers the ids

    env = gym.make(
        "CoEL-v0",
        config={"overrides": {"workload.rate_per_s": 0.1}, "slo_reward": 2.0},
        render_mode="ansi",
    )
    obs, info = env.reset(seed=0)
    ```

    ``render_mode``: None, ``"ansi"`` (a text summary of servers, plans and the last
    epoch) or ``"rgb_array"`` (a picture of the topology, load, memory and homes).
    ``config`` overrides :meth:`default_config` key by key; an unknown key raises
    ``ValueError`` naming the valid ones:

    - ``scenario`` [``"default"``]: a preset (``intra``, ``inter``, ``default``, ``large``,
      ``static``) or a YAML path (:mod:`coel_env.core.scenario`);
    - ``overrides`` [``{}``]: dotted scenario overrides, e.g.
      ``{"workload.rate_per_s": 0.1}``;
    - ``trace`` [None]: request-trace CSV (Azure LLM or generic); None: synthetic;
    - ``topology`` [None]: ``.graphml`` (Topology Zoo) or ``.csv`` (EUA sites); None:
      the scenario's;
    - ``device_profiles`` [``[]``]: device-profile CSVs written by ``coel profile``;
    - ``controller`` [0]: index of the server whose broadcast view is observed;
    - ``n_groups`` [4]: popularity groups per MoE layer that actions address (sets the
      spaces' sizes);
    - ``max_steps`` [200]: epochs that scale the progress feature;
    - ``latency_ref_ms`` [60000], ``migration_ref_gb`` [10], ``broadcast_ref_mb`` [10]:
      the p95 latency [ms], migration [GB] and broadcast bytes [MB] that cost a full
      term;
    - the eight reward weights of **Rewards**.

    ## Version History

    - v2 (``CoEL-v2``, current): ``adjust`` also sets the homes (:class:`CoELEnvV2`).
    - v1 (``CoEL-v1``): a set of homes per model (:class:`CoELEnvV1`).
    - v0: initial release, one home per model. Kept so that results recorded with it
      stay reproducible; ``gym.make("CoEL-v0")`` warns that it is out of date.
    """


class InterDeviceEnvV1(InterDeviceEnv):
    """``CoEL-InterDevice-v1``: :class:`InterDeviceEnv` whose action chooses a *set* of homes.

    ## Description

    As :class:`InterDeviceEnv` (the ``inter`` scenario: 4 servers on a static topology,
    two models; each epoch redeploys every model), except that a model may run its
    dense part on several servers at once, each request going to its nearest home.

    Experts are addressed in popularity groups: in every MoE layer the experts are ranked
    by the controller's popularity estimate and cut into ``n_groups`` equal groups
    (group 0 the most popular); a decision about a group applies to its experts in every
    layer.

    ## Action Space

    ``MultiDiscrete`` with ``n + 4 + 2 * n_groups`` fields per model for ``n`` servers,
    models in scenario order (:class:`~coel_env.envs.actions.HomeSetAction`); on
    ``inter`` with the default ``n_groups`` 4: 32 fields, 108 choices. Per model:

    - ``home_s`` (2, one per server): 1 makes server ``s`` a home (it runs the dense
      part: attention, embeddings, router, shared experts); requests go to their nearest
      home, and ``spread``/``place``/``replicate`` apply to every home;
    - ``spread`` (2): 0 keeps every group on the home, 1 puts group ``g`` on ``place_g``;
    - ``place_g`` (4, one per group): 0 the home, k its k-th nearest server by path
      latency;
    - ``replicate`` (2): 1 also keeps a copy of every remote group on the home;
    - ``bits_g`` (5, one per group): the group's bit width, index into (16, 8, 4, 3, 2);
    - ``keep`` (4): share of tokens kept (pruning/fusion) in activations sent between
      servers, index into (1, 0.75, 0.5, 0.25);
    - ``host_policy`` (2): experts in host memory run on the host CPU (0) or are copied
      to the GPU over PCIe when tokens arrive (1).

    On every server the experts placed there fill GPU memory in popularity order, the
    rest go to host memory.

    ``env.unwrapped.action_masks()`` (sb3-contrib MaskablePPO layout: one flag per choice of
    every field, concatenated) masks ``home_s`` = 1 where the server cannot hold the model's
    dense part or is absent. ``env.unwrapped.encode_plan(plan)`` returns the action that
    comes closest to deploying a :class:`~coel_env.core.plan.Plan` (for imitating the
    baselines: ``coel train --imitate``).

    **Invalid actions**: an action whose decoded plan does not fit (memory checked against
    the true capacities, or an absent server), or that flags no home for a model, is not
    deployed: the plan in force stays and runs the epoch, ``invalid_reward`` is -1 and
    ``info["invalid_action"]`` is True with ``info["infeasibility"]`` saying why (e.g.
    ``infeasible: server 0: GPU memory needs 29.63 GB of 24.00 GB (over by 5.63 GB)``). An
    action outside the space (wrong shape, a field out of range or not an integer, NaN)
    raises ``ValueError`` naming the field and its range.

    ## Observation Space

    ``Box(0, 1, (93,), float32)`` on ``inter``: in general
    ``n * (10 + m) + m * (4 * n_groups + n + 2) + 1`` values for ``n`` servers and ``m``
    models.

    Layout (:mod:`coel_env.envs.observations`), every entry finite and in [0, 1]:

    1. per server, ``10 + m`` values: what the controller last heard of it by broadcast
       (stale, possibly lost; its own entry is fresh): free GPU and host memory shares,
       utilisation, dropped share, background load, present, mean link bandwidth
       multiplier / 2, demand per model / (5 x the base rate); then the age of that
       news / (5 broadcast periods), a "heard at all" flag and an "is the controller"
       flag;
    2. per model, ``4 * n_groups + n + 2`` values: the share of routed tokens of each
       popularity group; the plan in force: a one-hot of its homes (every home flagged), per
       group the mean bit width / 16, the share on a GPU and the share away from the home;
       its token keep ratio and a "deployed" flag;
    3. the progress: epoch / ``max_steps``, capped at 1.

    True metrics of the epoch (not the controller's view) are in ``info``:
    ``slo_attainment``, ``latency_p95_ms``, ``quality_loss``, ``requests_arrived``,
    ``requests_dropped``, ``migration_bytes`` [bytes], ``energy_j``, ``broadcast_bytes``.

    ## Rewards

    ``reward = sum(config[t] * info["rewards"][t])`` over eight named, unweighted terms
    (:func:`coel_env.core.rewards.reward_terms`); each weight is the config key of the
    term's name (default in brackets):

    - ``slo_reward`` [1.0]: share of the epoch's arrived requests that met their SLO, 0..1;
    - ``latency_reward`` [0.2]: -p95 latency / ``latency_ref_ms``, capped at -1;
    - ``quality_reward`` [0.5]: -quality loss / the workload's quality floor / 2, capped
      at -1;
    - ``dropped_reward`` [0.5]: -share of the arrived requests that were dropped;
    - ``migration_reward`` [0.1]: -bytes moved / ``migration_ref_gb``, capped at -1;
    - ``energy_reward`` [0.05]: -energy / (every GPU busy for the whole epoch), capped
      at -1;
    - ``broadcast_reward`` [0.0]: -broadcast bytes / ``broadcast_ref_mb``, capped at -1;
    - ``invalid_reward`` [1.0]: -1 when the action was invalid (see **Action Space**),
      else 0.

    The evaluation harness (``agents.harness``) prices the baselines' plans with the
    same function, so returns compare number for number.

    ## Starting State

    ``reset(seed=s)`` seeds the env's ``np_random``, which draws the world's seed; from it
    the world draws the initial state of its dynamics and its request stream, deploys its
    naive plan (each model whole at 16 bits on every edge server that can hold it, experts
    on the GPU while they fit and the rest in host memory, run on the host CPU; requests at
    a server that cannot hold it go to the nearest one that does) and broadcasts once, so
    the controller has heard only itself. ``info`` is ``{"invalid_action": False}``. Env
    seed ``s`` is not the instance that ``World.reset(s)`` (and so
    ``coel baselines/evaluate/compare --seeds``) gives: training-time evaluations and the
    comparison tables never share instances. ``reset(options={"overrides": {...}})``
    rebuilds the world with these scenario overrides added; overrides that would change the
    spaces' shapes raise ``ValueError``.

    ## Episode End

    The episode never terminates (``terminated`` is always False): the registration's
    ``max_episode_steps`` truncates it after 100 epochs (1000 simulated seconds at
    the scenario's 10 s epoch). ``config["max_steps"]`` only scales the progress
    feature.

    ## Arguments

    ```python
    import gymnasium as gym
    import coel_env  # registers the ids

    env = gym.make(
        "CoEL-InterDevice-v1",
        config={"overrides": {"workload.rate_per_s": 0.1}, "slo_reward": 2.0},
        render_mode="ansi",
    )
    obs, info = env.reset(seed=0)
    ```

    ``render_mode`` and ``config`` as for :class:`CoELEnv`, which lists every key of
    :meth:`default_config` with its unit (unknown keys raise ``ValueError`` naming the
    valid ones); here ``scenario`` defaults to ``"inter"`` and ``max_steps`` to
    100.

    ## Version History

    - v1: a set of homes per model. A v0 action names one home per model, so plans that
      serve a model from several servers (the naive, greedy and MILP plans do) could
      not be expressed; the observation flags every home.
      The current version.
    - v0 (``CoEL-InterDevice-v0``): initial release, one home per model; kept for its
      results (``gym.make`` warns that it is out of date).
    """

    ACTION = HomeSetAction
    OBSERVATION = HomeSetObservation


class CoELEnvV1(CoELEnv):
    """``CoEL-v1``: :class:`CoELEnv` whose action chooses a *set* of homes per model.

    ## Description

    As :class:`CoELEnv` (the full CoEL loop on the ``default`` scenario), except that a
    model may run its dense part on several servers at once, each request going to its
    nearest home.

    Experts are addressed in popularity groups: in every MoE layer the experts are ranked
    by the controller's popularity estimate and cut into ``n_groups`` equal groups
    (group 0 the most popular); a decision about a group applies to its experts in every
    layer.

    ## Action Space

    ``MultiDiscrete`` with ``1 + n + 4 + 2 * n_groups`` fields per model for ``n``
    servers, models in scenario order (:class:`~coel_env.envs.actions.CoELSetAction`); on
    ``default`` with the default ``n_groups`` 4: 36 fields, 118 choices. Per model:

    - ``update`` (3): 0 keep the plan in force (no other field is read), 1 adjust it (bits,
      keep ratio and host policy change; placement and homes stay), 2 redeploy it from
      the fields below (experts that move are migrated and cost ``migration_reward``);
    - ``home_s`` (2, one per server): 1 makes server ``s`` a home (it runs the dense
      part: attention, embeddings, router, shared experts); requests go to their nearest
      home, and ``spread``/``place``/``replicate`` apply to every home;
    - ``spread`` (2): 0 keeps every group on the home, 1 puts group ``g`` on ``place_g``;
    - ``place_g`` (4, one per group): 0 the home, k its k-th nearest server by path
      latency;
    - ``replicate`` (2): 1 also keeps a copy of every remote group on the home;
    - ``bits_g`` (5, one per group): the group's bit width, index into (16, 8, 4, 3, 2);
    - ``keep`` (4): share of tokens kept (pruning/fusion) in activations sent between
      servers, index into (1, 0.75, 0.5, 0.25);
    - ``host_policy`` (2): experts in host memory run on the host CPU (0) or are copied
      to the GPU over PCIe when tokens arrive (1).

    On every server the experts placed there fill GPU memory in popularity order, the
    rest go to host memory.

    ``env.unwrapped.action_masks()`` (sb3-contrib MaskablePPO layout: one flag per choice of
    every field, concatenated) masks ``home_s`` = 1 where the server cannot hold the model's
    dense part or is absent, and ``keep``/``adjust`` of a model that is not deployed.
    ``env.unwrapped.encode_plan(plan)`` returns the action that comes closest to deploying a
    :class:`~coel_env.core.plan.Plan` (for imitating the baselines:
    ``coel train --imitate``).

    **Invalid actions**: an action whose decoded plan does not fit (memory checked against
    the true capacities, or an absent server), or that flags no home for a redeployed model,
    is not deployed: the plan in force stays and runs the epoch, ``invalid_reward`` is -1
    and ``info["invalid_action"]`` is True with ``info["infeasibility"]`` saying why (e.g.
    ``infeasible: server 0: GPU memory needs 29.63 GB of 24.00 GB (over by 5.63 GB)``). An
    action outside the space (wrong shape, a field out of range or not an integer, NaN)
    raises ``ValueError`` naming the field and its range.

    ## Observation Space

    ``Box(0, 1, (107,), float32)`` on ``default``: in general
    ``n * (10 + m) + m * (4 * n_groups + n + 2) + 1`` values for ``n`` servers and ``m``
    models.

    Layout (:mod:`coel_env.envs.observations`), every entry finite and in [0, 1]:

    1. per server, ``10 + m`` values: what the controller last heard of it by broadcast
       (stale, possibly lost; its own entry is fresh): free GPU and host memory shares,
       utilisation, dropped share, background load, present, mean link bandwidth
       multiplier / 2, demand per model / (5 x the base rate); then the age of that
       news / (5 broadcast periods), a "heard at all" flag and an "is the controller"
       flag;
    2. per model, ``4 * n_groups + n + 2`` values: the share of routed tokens of each
       popularity group; the plan in force: a one-hot of its homes (every home flagged), per
       group the mean bit width / 16, the share on a GPU and the share away from the home;
       its token keep ratio and a "deployed" flag;
    3. the progress: epoch / ``max_steps``, capped at 1.

    True metrics of the epoch (not the controller's view) are in ``info``:
    ``slo_attainment``, ``latency_p95_ms``, ``quality_loss``, ``requests_arrived``,
    ``requests_dropped``, ``migration_bytes`` [bytes], ``energy_j``, ``broadcast_bytes``.

    ## Rewards

    ``reward = sum(config[t] * info["rewards"][t])`` over eight named, unweighted terms
    (:func:`coel_env.core.rewards.reward_terms`); each weight is the config key of the
    term's name (default in brackets):

    - ``slo_reward`` [1.0]: share of the epoch's arrived requests that met their SLO, 0..1;
    - ``latency_reward`` [0.2]: -p95 latency / ``latency_ref_ms``, capped at -1;
    - ``quality_reward`` [0.5]: -quality loss / the workload's quality floor / 2, capped
      at -1;
    - ``dropped_reward`` [0.5]: -share of the arrived requests that were dropped;
    - ``migration_reward`` [0.1]: -bytes moved / ``migration_ref_gb``, capped at -1;
    - ``energy_reward`` [0.05]: -energy / (every GPU busy for the whole epoch), capped
      at -1;
    - ``broadcast_reward`` [0.0]: -broadcast bytes / ``broadcast_ref_mb``, capped at -1;
    - ``invalid_reward`` [1.0]: -1 when the action was invalid (see **Action Space**),
      else 0.

    The evaluation harness (``agents.harness``) prices the baselines' plans with the
    same function, so returns compare number for number.

    ## Starting State

    ``reset(seed=s)`` seeds the env's ``np_random``, which draws the world's seed; from it
    the world draws the initial state of its dynamics and its request stream, deploys its
    naive plan (each model whole at 16 bits on every edge server that can hold it, experts
    on the GPU while they fit and the rest in host memory, run on the host CPU; requests at
    a server that cannot hold it go to the nearest one that does) and broadcasts once, so
    the controller has heard only itself. ``info`` is ``{"invalid_action": False}``. Env
    seed ``s`` is not the instance that ``World.reset(s)`` (and so
    ``coel baselines/evaluate/compare --seeds``) gives: training-time evaluations and the
    comparison tables never share instances. ``reset(options={"overrides": {...}})``
    rebuilds the world with these scenario overrides added; overrides that would change the
    spaces' shapes raise ``ValueError``.

    ## Episode End

    The episode never terminates (``terminated`` is always False): the registration's
    ``max_episode_steps`` truncates it after 200 epochs (2000 simulated seconds at
    the scenario's 10 s epoch). ``config["max_steps"]`` only scales the progress
    feature.

    ## Arguments

    ```python
    import gymnasium as gym
    import coel_env  # registers the ids

    env = gym.make(
        "CoEL-v1",
        config={"overrides": {"workload.rate_per_s": 0.1}, "slo_reward": 2.0},
        render_mode="ansi",
    )
    obs, info = env.reset(seed=0)
    ```

    ``render_mode`` and ``config`` as for :class:`CoELEnv`, which lists every key of
    :meth:`default_config` with its unit (unknown keys raise ``ValueError`` naming the
    valid ones); here ``scenario`` defaults to ``"default"`` and ``max_steps`` to
    200.

    ## Version History

    - v2 (``CoEL-v2``, current): ``adjust`` also sets the homes (:class:`CoELEnvV2`).
    - v1: a set of homes per model. A v0 action names one home per model, so plans that
      serve a model from several servers (the naive, greedy and MILP plans do) could
      not be expressed; the observation flags every home.
      Kept so that results recorded with it stay reproducible; ``gym.make("CoEL-v1")``
      warns that it is out of date.
    - v0 (``CoEL-v0``): initial release, one home per model.
    """

    ACTION = CoELSetAction
    OBSERVATION = HomeSetObservation


class CoELEnvV2(CoELEnvV1):
    """``CoEL-v2``: :class:`CoELEnvV1` whose ``adjust`` also moves the homes (current version).

    ## Description

    As :class:`CoELEnvV1` (the full CoEL loop on the ``default`` scenario, a set of homes
    per model), except that ``adjust`` sets the homes while every expert copy stays
    where it is: a home on a server that becomes loaded can be dropped, and later taken
    back, without moving experts.

    Each step is one 10 s epoch. The ``default`` scenario has 5 heterogeneous edge
    servers (three L4s and two RTX 4090s, drawn from the scenario's device mix) on a
    random geometric topology and two models, OLMoE-1B-7B and Qwen1.5-MoE-A2.7B. Servers
    broadcast their status every ``perception.period_s`` (2 s) to neighbours within
    ``perception.hops`` (2) hops; messages arrive late or are lost. A controller server
    decides from its stale view, each epoch and per model, whether to keep the plan in
    force, adjust it or redeploy it, paying migration for what moves. Background load,
    link bandwidth, demand and the task mix (so which experts are hot) drift; the
    ``large`` scenario (32 edge servers and a cloud node, four models) adds link failures
    and servers that leave and join.

    Experts are addressed in popularity groups: in every MoE layer the experts are ranked
    by the controller's popularity estimate and cut into ``n_groups`` equal groups
    (group 0 the most popular); a decision about a group applies to its experts in every
    layer.

    ## Action Space

    ``MultiDiscrete`` with ``1 + n + 4 + 2 * n_groups`` fields per model for ``n``
    servers, models in scenario order (:class:`~coel_env.envs.actions.CoELSetActionV2`,
    the same fields as v1); on ``default`` with the default ``n_groups`` 4: 36 fields,
    118 choices. Per model:

    - ``update`` (3): 0 keep the plan in force (no other field is read); 1 adjust: the
      flagged servers become the homes (a new home receives the dense part; every expert
      copy stays where it is and a home uses the nearest copy of each expert) and bits,
      keep ratio and host policy change; 2 redeploy from the fields below (the placement
      is derived anew; experts that move are migrated and cost ``migration_reward``);
    - ``home_s`` (2, one per server): 1 makes server ``s`` a home (it runs the dense
      part: attention, embeddings, router, shared experts); requests go to their nearest
      home, and ``spread``/``place``/``replicate`` apply to every home;
    - ``spread`` (2): 0 keeps every group on the home, 1 puts group ``g`` on ``place_g``;
    - ``place_g`` (4, one per group): 0 the home, k its k-th nearest server by path
      latency;
    - ``replicate`` (2): 1 also keeps a copy of every remote group on the home;
    - ``bits_g`` (5, one per group): the group's bit width, index into (16, 8, 4, 3, 2);
    - ``keep`` (4): share of tokens kept (pruning/fusion) in activations sent between
      servers, index into (1, 0.75, 0.5, 0.25);
    - ``host_policy`` (2): experts in host memory run on the host CPU (0) or are copied
      to the GPU over PCIe when tokens arrive (1).

    On every server the experts placed there fill GPU memory in popularity order, the
    rest go to host memory.

    ``env.unwrapped.action_masks()`` (sb3-contrib MaskablePPO layout: one flag per choice of
    every field, concatenated) masks ``home_s`` = 1 where the server cannot hold the model's
    dense part or is absent, and ``keep``/``adjust`` of a model that is not deployed.
    ``env.unwrapped.encode_plan(plan)`` returns the action that comes closest to deploying a
    :class:`~coel_env.core.plan.Plan` (for imitating the baselines:
    ``coel train --imitate``).

    **Invalid actions**: an action whose decoded plan does not fit (memory checked against
    the true capacities, or an absent server), or that flags no home for a redeployed or
    adjusted model, is not deployed: the plan in force stays and runs the epoch,
    ``invalid_reward`` is -1 and ``info["invalid_action"]`` is True with
    ``info["infeasibility"]`` saying why (e.g.
    ``infeasible: server 0: GPU memory needs 29.63 GB of 24.00 GB (over by 5.63 GB)``). An
    action outside the space (wrong shape, a field out of range or not an integer, NaN)
    raises ``ValueError`` naming the field and its range.

    ## Observation Space

    ``Box(0, 1, (107,), float32)`` on ``default``: in general
    ``n * (10 + m) + m * (4 * n_groups + n + 2) + 1`` values for ``n`` servers and ``m``
    models.

    Layout (:mod:`coel_env.envs.observations`), every entry finite and in [0, 1]:

    1. per server, ``10 + m`` values: what the controller last heard of it by broadcast
       (stale, possibly lost; its own entry is fresh): free GPU and host memory shares,
       utilisation, dropped share, background load, present, mean link bandwidth
       multiplier / 2, demand per model / (5 x the base rate); then the age of that
       news / (5 broadcast periods), a "heard at all" flag and an "is the controller"
       flag;
    2. per model, ``4 * n_groups + n + 2`` values: the share of routed tokens of each
       popularity group; the plan in force: a one-hot of its homes (every home flagged), per
       group the mean bit width / 16, the share on a GPU and the share away from the home;
       its token keep ratio and a "deployed" flag;
    3. the progress: epoch / ``max_steps``, capped at 1.

    True metrics of the epoch (not the controller's view) are in ``info``:
    ``slo_attainment``, ``latency_p95_ms``, ``quality_loss``, ``requests_arrived``,
    ``requests_dropped``, ``migration_bytes`` [bytes], ``energy_j``, ``broadcast_bytes``.

    ## Rewards

    ``reward = sum(config[t] * info["rewards"][t])`` over eight named, unweighted terms
    (:func:`coel_env.core.rewards.reward_terms`); each weight is the config key of the
    term's name (default in brackets):

    - ``slo_reward`` [1.0]: share of the epoch's arrived requests that met their SLO, 0..1;
    - ``latency_reward`` [0.2]: -p95 latency / ``latency_ref_ms``, capped at -1;
    - ``quality_reward`` [0.5]: -quality loss / the workload's quality floor / 2, capped
      at -1;
    - ``dropped_reward`` [0.5]: -share of the arrived requests that were dropped;
    - ``migration_reward`` [0.1]: -bytes moved / ``migration_ref_gb``, capped at -1;
    - ``energy_reward`` [0.05]: -energy / (every GPU busy for the whole epoch), capped
      at -1;
    - ``broadcast_reward`` [0.0]: -broadcast bytes / ``broadcast_ref_mb``, capped at -1;
    - ``invalid_reward`` [1.0]: -1 when the action was invalid (see **Action Space**),
      else 0.

    The evaluation harness (``agents.harness``) prices the baselines' plans with the
    same function, so returns compare number for number.

    ## Starting State

    ``reset(seed=s)`` seeds the env's ``np_random``, which draws the world's seed; from it
    the world draws the initial state of its dynamics and its request stream, deploys its
    naive plan (each model whole at 16 bits on every edge server that can hold it, experts
    on the GPU while they fit and the rest in host memory, run on the host CPU; requests at
    a server that cannot hold it go to the nearest one that does) and broadcasts once, so
    the controller has heard only itself. ``info`` is ``{"invalid_action": False}``. Env
    seed ``s`` is not the instance that ``World.reset(s)`` (and so
    ``coel baselines/evaluate/compare --seeds``) gives: training-time evaluations and the
    comparison tables never share instances. ``reset(options={"overrides": {...}})``
    rebuilds the world with these scenario overrides added; overrides that would change the
    spaces' shapes raise ``ValueError``.

    ## Episode End

    The episode never terminates (``terminated`` is always False): the registration's
    ``max_episode_steps`` truncates it after 200 epochs (2000 simulated seconds at
    the scenario's 10 s epoch). ``config["max_steps"]`` only scales the progress
    feature.

    ## Arguments

    ```python
    import gymnasium as gym
    import coel_env  # registers the ids

    env = gym.make(
        "CoEL-v2",
        config={"overrides": {"workload.rate_per_s": 0.1}, "slo_reward": 2.0},
        render_mode="ansi",
    )
    obs, info = env.reset(seed=0)
    ```

    ``render_mode``: None, ``"ansi"`` (a text summary of servers, plans and the last
    epoch) or ``"rgb_array"`` (a picture of the topology, load, memory and homes).
    ``config`` overrides :meth:`default_config` key by key; an unknown key raises
    ``ValueError`` naming the valid ones:

    - ``scenario`` [``"default"``]: a preset (``intra``, ``inter``, ``default``, ``large``,
      ``static``) or a YAML path (:mod:`coel_env.core.scenario`);
    - ``overrides`` [``{}``]: dotted scenario overrides, e.g.
      ``{"workload.rate_per_s": 0.1}``;
    - ``trace`` [None]: request-trace CSV (Azure LLM or generic); None: synthetic;
    - ``topology`` [None]: ``.graphml`` (Topology Zoo) or ``.csv`` (EUA sites); None:
      the scenario's;
    - ``device_profiles`` [``[]``]: device-profile CSVs written by ``coel profile``;
    - ``controller`` [0]: index of the server whose broadcast view is observed;
    - ``n_groups`` [4]: popularity groups per MoE layer that actions address (sets the
      spaces' sizes);
    - ``max_steps`` [200]: epochs that scale the progress feature;
    - ``latency_ref_ms`` [60000], ``migration_ref_gb`` [10], ``broadcast_ref_mb`` [10]:
      the p95 latency [ms], migration [GB] and broadcast bytes [MB] that cost a full
      term;
    - the eight reward weights of **Rewards**.

    ## Version History

    - v2: ``adjust`` also sets the homes. In v1 only a redeploy could change the homes,
      and a redeploy derives the whole placement anew, so "stop serving from the server
      that just became loaded" moved experts (replaying the ``static-homes`` baseline's
      plans through v1 actions gives 63% of its return, through v2 101%:
      ``experiments/replay_encoding.py``). The current version: use it for new work.
    - v1: a set of homes per model. A v0 action names one home per model, so plans that
      serve a model from several servers (the naive, greedy and MILP plans do) could
      not be expressed; the observation flags every home.
    - v0 (``CoEL-v0``): initial release, one home per model.
    """

    ACTION = CoELSetActionV2
