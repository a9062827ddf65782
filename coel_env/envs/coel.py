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
    from coel_env.simulate_cli import topology_overrides, trace_overrides

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
    """One edge server, one MoE model that does not fit its GPU.

    Description:
        An L4 edge server (24 GB) with its x86 host serves Qwen1.5-MoE-A2.7B
        (28.6 GB at 16 bits). Each epoch the agent decides which experts stay
        resident on the GPU (by popularity rank), the bit width of each
        popularity group, and whether experts in host memory run on the host
        CPU or are fetched over PCIe. Demand and routing popularity drift.

    Action Space:
        ``MultiDiscrete([9, 5 x n_groups, 2])`` per model (see
        :class:`coel_env.envs.actions.IntraDeviceAction`).

    Observation Space:
        ``Box(0, 1, (dim,), float32)`` (see :mod:`coel_env.envs.observations`).

    Rewards:
        ``sum(config[term] * term)`` over :data:`REWARD_TERMS`; every term is in
        ``info["rewards"]`` (see :class:`CoELEnv`).

    Starting State:
        The world's naive plan (experts on the GPU while they fit, the rest in
        host memory at 16 bits, run on the CPU).

    Episode End:
        Never terminates; truncated by the registration's ``max_episode_steps`` (100).

    Arguments:
        ``gym.make("CoEL-IntraDevice-v0", config={...}, render_mode=...)`` with
        the keys of :meth:`default_config` (scenario ``intra``).

    Version History:
        v0: initial release.
    """

    SCENARIO = "intra"
    ACTION = IntraDeviceAction
    MAX_STEPS = 100


class InterDeviceEnv(CoELBaseEnv):
    """Several edge servers on a static topology, two MoE models.

    Description:
        Each epoch the agent decides, per model, the home server (dense part),
        whether the model stays whole on it or its popularity groups spread to
        nearby servers (with optional replicas on the home), each group's bit
        width, the token keep ratio of inter-server activations and the host
        policy. Links and servers do not change; demand and popularity drift.

    Action Space:
        ``MultiDiscrete`` of :class:`coel_env.envs.actions.InterDeviceAction`
        (per model: home, spread, placement per group, replicate, bits per
        group, keep ratio, host policy).

    Observation Space:
        ``Box(0, 1, (dim,), float32)`` (see :mod:`coel_env.envs.observations`).

    Rewards:
        As :class:`CoELEnv`.

    Starting State:
        The world's naive plan.

    Episode End:
        Never terminates; truncated by ``max_episode_steps`` (100).

    Arguments:
        As :class:`IntraDeviceEnv` (scenario ``inter``).

    Version History:
        v0: initial release.
    """

    SCENARIO = "inter"
    ACTION = InterDeviceAction
    MAX_STEPS = 100


class CoELEnv(CoELBaseEnv):
    """The full CoEL loop: perceive, deploy, compress, update.

    Description:
        Edge servers broadcast their status every ``perception.period_s`` to
        neighbours within ``perception.hops`` hops; messages arrive late or are
        lost. A controller server decides from its (stale) view, each epoch and
        per model, whether to keep the plan in force, adjust it (bit widths,
        keep ratio, host policy) or redeploy it (home, spread, placement,
        replication, bits, keep ratio), paying migration for what moves.
        Background load, links, servers, demand and task mix change.

    Action Space:
        ``MultiDiscrete`` of :class:`coel_env.envs.actions.CoELAction`:
        ``[update, home, spread, place x n_groups, replicate, bits x n_groups,
        keep, host_policy]`` per model. ``action_masks()`` masks choices that
        cannot fit (homes too small for the dense part, updates of a model that
        is not deployed).

    Observation Space:
        ``Box(0, 1, (dim,), float32)``: the controller's broadcast view, the
        popularity estimate per group, the plan in force and the progress; see
        :mod:`coel_env.envs.observations` for the layout. True metrics are in
        ``info``.

    Rewards:
        ``reward = sum(config[t] * info["rewards"][t])`` over ``slo_reward``
        (SLO attainment, 0..1), ``latency_reward`` (-p95 / latency_ref_ms,
        capped at -1), ``quality_reward`` (-quality loss / floor / 2, capped
        at -1), ``dropped_reward`` (-dropped share), ``migration_reward``
        (-bytes / migration_ref_gb), ``energy_reward`` (-energy / busy energy
        of all GPUs), ``broadcast_reward`` (-bytes / broadcast_ref_mb) and
        ``invalid_reward`` (-1 for an invalid action).

    Invalid actions:
        An action whose decoded plan does not fit (memory, absent servers) is
        not deployed: the plan in force stays, ``invalid_reward`` is -1 and
        ``info["invalid_action"]`` is True with ``info["infeasibility"]``
        saying why. An action outside the space or with NaN raises ValueError.

    Starting State:
        The world's naive plan; no broadcast heard yet but the controller's own.
        ``reset(seed=s)`` seeds the env's ``np_random``, which draws the world's
        seed: env seed ``s`` is not the instance that ``World.reset(s)`` (and so
        ``coel baselines/evaluate/compare --seeds``) gives, so training-time
        evaluations and the comparison tables never share instances.

    Episode End:
        Never terminates; truncated by ``max_episode_steps`` (200).

    Arguments:
        ``gym.make("CoEL-v0", config={...}, render_mode=None|"ansi"|"rgb_array")``;
        ``config`` overrides :meth:`default_config` (unknown keys raise, naming
        the valid ones). ``reset(options={"overrides": {...}})`` may change the
        scenario but not the spaces' shapes (raises otherwise).

    Version History:
        v0: initial release.
    """


class InterDeviceEnvV1(InterDeviceEnv):
    """``CoEL-InterDevice-v1``: :class:`InterDeviceEnv` whose action chooses a *set* of
    homes per model.

    Description, Observation Space, Rewards, Starting State, Episode End, Arguments:
        As :class:`InterDeviceEnv`, except that the observation's plan part flags
        every home of a model (v0: the first home only).

    Action Space:
        ``MultiDiscrete`` of :class:`coel_env.envs.actions.HomeSetAction`: per model
        ``[home_0..home_{n-1}, spread, place x n_groups, replicate, bits x n_groups,
        keep, host_policy]``; ``home_s`` 1 makes server ``s`` a home (masked where the
        dense part cannot fit or the server is absent). Requests go to their nearest
        home; ``spread``, ``place`` and ``replicate`` apply to every home. No home at
        all is an invalid action (``info["infeasibility"]`` says so).

    Version History:
        v1: a set of homes per model (v0 names one, so plans that serve a model from
        several servers, as the naive, greedy and MILP plans do, could not be
        expressed).
        v0: initial release.
    """

    ACTION = HomeSetAction
    OBSERVATION = HomeSetObservation


class CoELEnvV1(CoELEnv):
    """``CoEL-v1``: :class:`CoELEnv` whose action chooses a *set* of homes per model.

    Description, Observation Space, Rewards, Invalid actions, Starting State, Episode End,
    Arguments:
        As :class:`CoELEnv`, except that the observation's plan part flags every home
        of a model (v0: the first home only), and that choosing no home is an invalid
        action.

    Action Space:
        ``MultiDiscrete`` of :class:`coel_env.envs.actions.CoELSetAction`: per model
        ``[update, home_0..home_{n-1}, spread, place x n_groups, replicate,
        bits x n_groups, keep, host_policy]``. ``update``: 0 keep, 1 adjust (bits,
        keep ratio, host policy), 2 redeploy; ``home_s`` 1 makes server ``s`` a home
        (masked where the dense part cannot fit or the server is absent); requests go
        to their nearest home and ``spread``/``place``/``replicate`` apply to every
        home.

    Version History:
        v1: a set of homes per model (v0 names one, so plans that serve a model from
        several servers, as the naive, greedy and MILP plans do, could not be
        expressed).
        v0: initial release.
    """

    ACTION = CoELSetAction
    OBSERVATION = HomeSetObservation


class CoELEnvV2(CoELEnvV1):
    """``CoEL-v2``: :class:`CoELEnvV1` whose ``adjust`` also moves the homes.

    Description, Observation Space, Rewards, Invalid actions, Starting State, Episode End,
    Arguments:
        As :class:`CoELEnvV1`.

    Action Space:
        ``MultiDiscrete`` of :class:`coel_env.envs.actions.CoELSetActionV2`, the same
        fields as version 1. ``update``: 0 keep, 1 adjust: the flagged servers become
        the homes (a new home receives the dense part; every expert copy stays where
        it is, a home uses the nearest copy of each expert) and bits, keep ratio and
        host policy change; 2 redeploy (the placement is derived anew).

    Version History:
        v2: ``adjust`` sets the homes too, so a home on a server that becomes loaded
        can be dropped, and later taken back, without moving experts (in v1 only a
        redeploy could change homes, and it derives the whole placement anew).
        v1: a set of homes per model.
        v0: initial release.
    """

    ACTION = CoELSetActionV2
