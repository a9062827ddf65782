"""The CoEL Gymnasium environment: one class, its encodings chosen by name.

Every registered id (``coel_env.ENV_IDS``) is :class:`CoELEnv` with a scenario and an
action and observation encoding set by the registration's ``defaults``, as HighwayEnv
picks its ``ActionType``/``ObservationType``: :data:`ACTION_TYPES` and
:data:`OBSERVATION_TYPES` name them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from coel_env.core.plan import InfeasibilityReport, reuse_unchanged
from coel_env.core.rewards import (
    RewardConfig,
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
from coel_env.envs.config import check_config, check_render_mode, resolve_config
from coel_env.envs.observations import HomeSetObservation, ViewObservation

#: Action encodings by name (``config["action"]``); each documents its fields.
ACTION_TYPES = {
    "intra-device": IntraDeviceAction,
    "inter-device": InterDeviceAction,
    "coel": CoELAction,
    "home-set": HomeSetAction,
    "coel-set": CoELSetAction,
    "coel-set-v2": CoELSetActionV2,
}
#: Observation encodings by name (``config["observation"]``).
OBSERVATION_TYPES = {"view": ViewObservation, "home-set": HomeSetObservation}


class CoELEnv(gym.Env):
    """The CoEL loop as a Gymnasium env: perceive, deploy, compress, update.

    One class makes every registered id; the id sets the scenario and the action and
    observation encodings (``coel_env.ENV_IDS``):

    | id | scenario | action | observation | steps | status |
    |---|---|---|---|---|---|
    | ``CoEL-v2`` | ``default`` | ``coel-set-v2`` | ``home-set`` | 200 | current |
    | ``CoEL-InterDevice-v1`` | ``inter`` | ``home-set`` | ``home-set`` | 100 | current |
    | ``CoEL-IntraDevice-v0`` | ``intra`` | ``intra-device`` | ``view`` | 100 | current |
    | ``CoEL-v1`` | ``default`` | ``coel-set`` | ``home-set`` | 200 | kept |
    | ``CoEL-v0`` | ``default`` | ``coel`` | ``view`` | 200 | kept |
    | ``CoEL-InterDevice-v0`` | ``inter`` | ``inter-device`` | ``view`` | 100 | kept |

    "Kept" ids stay registered so that results recorded with them stay reproducible;
    ``gym.make`` warns that they are out of date.

    ## Description

    Each step is one 10 s epoch of the CoEL world (:class:`coel_env.core.world.World`).
    Servers broadcast their status every ``perception.period_s`` (2 s) to neighbours
    within ``perception.hops`` (2) hops; messages arrive late or are lost. A controller
    server decides from its stale view, each epoch and per model, where the model runs
    (its home servers, where its expert groups sit), at what bit width each group is
    kept, how many tokens of the activations sent between servers are kept, and whether
    experts in host memory run on the host CPU or are copied to the GPU; moving experts
    costs migration. Background load, link bandwidth, demand and the task mix (so which
    experts are hot) drift.

    - ``intra`` (``CoEL-IntraDevice-v0``): one NVIDIA L4 edge server (24 GB GPU) with
      its x86 host serves Qwen1.5-MoE-A2.7B (28.6 GB at 16 bits): which experts stay
      resident on the GPU, bits per group, host policy.
    - ``inter`` (``CoEL-InterDevice-v*``): 4 heterogeneous edge servers (a Jetson Orin
      Nano 8 GB, two L4s and an RTX 4090) on a static random geometric topology serve
      OLMoE-1B-7B and Qwen1.5-MoE-A2.7B; each epoch redeploys every model.
    - ``default`` (``CoEL-v*``): 5 edge servers (three L4s and two RTX 4090s) on a
      random geometric topology, the same two models; per model the agent keeps,
      adjusts or redeploys the plan in force. ``config={"scenario": "large"}`` (32 edge
      servers and a cloud node, four models) adds link failures and servers that leave
      and join.

    Experts are addressed in popularity groups: in every MoE layer the experts are
    ranked by the controller's popularity estimate and cut into ``n_groups`` equal
    groups (group 0 the most popular); a decision about a group applies to its experts
    in every layer.

    ## Action Space

    ``MultiDiscrete``, the fields of each model in scenario order, as the encoding
    ``config["action"]`` (:data:`ACTION_TYPES`) lays them out; each encoding's class in
    :mod:`coel_env.envs.actions` documents its fields. With the default ``n_groups`` 4:

    | encoding | fields per model | fields, choices on its id's scenario |
    |---|---|---|
    | ``intra-device`` | ``resident``, ``bits_g`` x G, ``host_policy`` | 6, 31 |
    | ``inter-device`` | ``home``, ``spread``, ``place_g`` x G, ``replicate``, (*) | 26, 100 |
    | ``coel`` | ``update``, then as ``inter-device`` | 28, 108 |
    | ``home-set`` | ``home_s`` x n, then ``inter-device``'s after ``home`` | 32, 108 |
    | ``coel-set`` | ``update``, then as ``home-set`` | 36, 118 |
    | ``coel-set-v2`` | as ``coel-set``; ``adjust`` also sets the homes | 36, 118 |

    (*) then ``bits_g`` x G, ``keep``, ``host_policy``.

    The fields: ``resident`` (9) keeps the top ``resident / 8`` of each layer's experts
    on the GPU; ``update`` (3) keeps the plan in force, adjusts it (bits, keep ratio,
    host policy; with ``coel-set-v2`` also the homes, every expert copy staying where it
    is) or redeploys it from the fields; ``home`` (n) is the server that runs the dense
    part (attention, embeddings, router, shared experts) and takes the model's requests;
    ``home_s`` (2 per server) makes server ``s`` a home (requests go to their nearest
    home); ``spread`` (2) keeps every group on the home or puts group ``g`` on
    ``place_g`` (4: the home or its k-th nearest server by path latency);
    ``replicate`` (2) also keeps a copy of every remote group on the home; ``bits_g``
    (5) indexes (16, 8, 4, 3, 2); ``keep`` (4) indexes the token keep ratios
    (1, 0.75, 0.5, 0.25); ``host_policy`` (2) runs experts in host memory on the host
    CPU (0) or copies them to the GPU over PCIe when tokens arrive (1). On every server
    the experts placed there fill GPU memory in popularity order, the rest go to host
    memory.

    ``env.unwrapped.action_masks()`` (sb3-contrib MaskablePPO layout: one flag per
    choice of every field, concatenated) masks residency levels that cannot fit even at
    2 bits, homes that cannot hold the model's dense part or are absent, and
    ``keep``/``adjust`` of a model that is not deployed. The masks are per field, so
    they cannot express joint memory limits: a masked action can still be invalid.
    With the set encodings, ``env.unwrapped.encode_plan(plan)`` returns the action that
    comes closest to deploying a :class:`~coel_env.core.plan.Plan` (for imitating the
    baselines: ``coel train --imitate``).

    **Invalid actions**: an action whose decoded plan does not fit (memory checked
    against the true capacities, or an absent server), or that flags no home for a
    redeployed model, is not deployed: the plan in force stays and runs the epoch,
    ``invalid_reward`` is -1 and ``info["invalid_action"]`` is True with
    ``info["infeasibility"]`` saying why (e.g. ``infeasible: server 0: GPU memory
    needs 29.63 GB of 24.00 GB (over by 5.63 GB)``). An action outside the space (wrong
    shape, a field out of range or not an integer, NaN) raises ``ValueError`` naming
    the field and its range.

    ## Observation Space

    ``Box(0, 1, (d,), float32)`` with ``d = n * (10 + m) + m * (4 * n_groups + n + 2)
    + 1`` for ``n`` servers and ``m`` models: 31 on ``intra``, 93 on ``inter``, 107 on
    ``default``. Layout (:mod:`coel_env.envs.observations`), every entry finite and in
    [0, 1]:

    1. per server, ``10 + m`` values: what the controller last heard of it by broadcast
       (stale, possibly lost; its own entry is fresh): free GPU and host memory shares,
       utilisation, dropped share, background load, present, mean link bandwidth
       multiplier / 2, demand per model / (5 x the base rate); then the age of that
       news / (5 broadcast periods), a "heard at all" flag and an "is the controller"
       flag;
    2. per model, ``4 * n_groups + n + 2`` values: the share of routed tokens of each
       popularity group; the plan in force: a one-hot of its home (``home-set``: a flag
       on every home), per group the mean bit width / 16, the share on a GPU and the
       share away from the home; its token keep ratio and a "deployed" flag;
    3. the progress: epoch / ``max_steps``, capped at 1.

    ``env.unwrapped.feature_names()`` names every entry (``server[2].free_gpu_share``,
    ``model[olmoe-1b-7b].group[0].token_share``, ``progress``) and every action field
    (``model[olmoe-1b-7b].update``, ``model[olmoe-1b-7b].bits[g1]``).

    True metrics of the epoch (not the controller's view) are in ``info``:
    ``slo_attainment``, ``latency_p95_ms``, ``quality_loss``, ``requests_arrived``,
    ``requests_dropped``, ``migration_bytes`` [bytes], ``energy_j``,
    ``broadcast_bytes``.

    ## Rewards

    ``reward = sum(config[t] * info["rewards"][t])`` over eight named, unweighted terms
    (:func:`coel_env.core.rewards.reward_terms`); each weight is the config key of the
    term's name (default in brackets, :class:`~coel_env.core.rewards.RewardConfig`):

    - ``slo_reward`` [1.0]: share of the epoch's arrived requests that met their SLO;
    - ``latency_reward`` [0.2]: -p95 latency / ``latency_ref_ms``, capped at -1;
    - ``quality_reward`` [0.5]: -quality loss / the workload's quality floor / 2,
      capped at -1;
    - ``dropped_reward`` [0.5]: -share of the arrived requests that were dropped;
    - ``migration_reward`` [0.1]: -bytes moved / ``migration_ref_gb``, capped at -1;
    - ``energy_reward`` [0.05]: -energy / (every GPU busy for the whole epoch), capped
      at -1;
    - ``broadcast_reward`` [0.0]: -broadcast bytes / ``broadcast_ref_mb``, capped at -1;
    - ``invalid_reward`` [1.0]: -1 when the action was invalid, else 0.

    The evaluation harness (``agents.harness``) prices the baselines' plans with the
    same function, so returns compare number for number.

    ## Starting State

    ``reset(seed=s)`` seeds the env's ``np_random``, which draws the world's seed; from
    it the world draws the initial state of its dynamics and its request stream,
    deploys its naive plan (each model whole at 16 bits on every edge server that can
    hold it, experts on the GPU while they fit and the rest in host memory, run on the
    host CPU; requests at a server that cannot hold it go to the nearest one that does)
    and broadcasts once, so the controller has heard only itself. ``info`` is
    ``{"invalid_action": False}``. Env seed ``s`` is not the instance that
    ``World.reset(s)`` (and so ``coel baselines/evaluate/compare --seeds``) gives:
    training-time evaluations and the comparison tables never share instances.
    ``reset(options={"overrides": {...}})`` rebuilds the world with these scenario
    overrides added; overrides that would change the spaces' shapes raise
    ``ValueError``.

    ## Episode End

    The episode never terminates (``terminated`` is always False): the registration's
    ``max_episode_steps`` truncates it (100 epochs for the ``intra``/``inter`` ids, 200
    for ``CoEL-v*``; 10 s of simulated time each). ``config["max_steps"]`` only scales
    the progress feature; the id sets it to its episode length.

    ## Arguments

    ```python
    import gymnasium as gym
    import coel_env  # registers the ids

    env = gym.make(
        "CoEL-v2",
        config={"scenario": "large", "overrides": {"workload.rate_per_s": 0.1}},
        render_mode="rgb_array",  # or "ansi", "human"
    )
    obs, info = env.reset(seed=0)
    ```

    ``config`` (a dict) overrides keys of :meth:`default_config`, which lists each with
    its unit; unknown keys raise ``ValueError`` naming the valid ones, a config that is
    not a dict raises ``TypeError``. ``defaults`` is set by the registration (the id's
    row of ``coel_env.ENV_IDS``); ``config`` wins over it. ``render_mode``:
    ``"rgb_array"`` (a map of the deployment), ``"ansi"`` (a text summary) or ``"human"``
    (that map in a matplotlib window, redrawn at every ``reset()`` and ``step()``; where
    no window can open, one notice on stderr and nothing drawn). The render modes are the
    env's own, so ``gym.make`` applies no ``HumanRendering`` wrapper (which needs pygame).

    ## Version History

    - ``CoEL-v2`` (current): ``adjust`` also sets the homes. In v1 only a redeploy could
      change the homes, and a redeploy derives the whole placement anew, so "stop
      serving from the server that just became loaded" moved experts (replaying the
      ``static-homes`` baseline's plans through v1 actions gives 63% of its return,
      through v2 101%: ``experiments/replay_encoding.py``).
    - ``CoEL-v1``, ``CoEL-InterDevice-v1``: a set of homes per model. A v0 action names
      one home per model, so plans that serve a model from several servers (the naive,
      greedy and MILP plans do) could not be expressed; the observation flags every
      home.
    - v0 (``CoEL-v0``, ``CoEL-InterDevice-v0``, ``CoEL-IntraDevice-v0``): initial
      release, one home per model.
    - One class with encodings chosen by name replaced the six classes of earlier
      releases (``IntraDeviceEnv``, ``InterDeviceEnv``, ``InterDeviceEnvV1``,
      ``CoELEnv`` (v0), ``CoELEnvV1``, ``CoELEnvV2``); episodes are unchanged
      (``tests/test_episode_digests.py``).
    """

    metadata = {"render_modes": ["rgb_array", "ansi", "human"], "render_fps": 1}

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        """Every configuration key with its default and unit (the registered ids change
        ``scenario``, ``action``, ``observation`` and ``max_steps``:
        :func:`coel_env.envs.env_config` gives an id's)."""
        return {
            "scenario": "default",  # preset name or YAML path (coel_env.core.scenario)
            "action": "coel-set-v2",  # action encoding, a key of ACTION_TYPES
            "observation": "home-set",  # observation encoding, a key of OBSERVATION_TYPES
            "overrides": {},  # dotted scenario overrides, e.g. {"workload.rate_per_s": 0.1}
            "trace": None,  # request trace CSV (Azure or generic); None: synthetic
            "topology": None,  # .graphml (Topology Zoo) or .csv (EUA sites); None: scenario's
            "device_profiles": [],  # CSVs written by `coel profile`, loaded before the world
            "controller": 0,  # server whose broadcast view is observed [index]
            "n_groups": 4,  # popularity groups per layer that actions address
            "max_steps": 200,  # normalises the progress feature [epochs]; ids: their length
            # reward weights and references (units and meaning: RewardConfig's fields)
            **RewardConfig().as_dict(),
        }

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        cfg = resolve_config(self.default_config(), ("defaults", defaults), ("config", config))
        check_config(cfg, {"action": ACTION_TYPES, "observation": OBSERVATION_TYPES})
        check_render_mode(render_mode, self.metadata["render_modes"])
        self.config = cfg
        self.render_mode = render_mode
        self.world = build_world(cfg)
        if not 0 <= cfg["controller"] < self.world.n:
            raise ValueError(
                f"controller={cfg['controller']!r} is not allowed; "
                f"servers are 0..{self.world.n - 1}"
            )
        self.action_type = ACTION_TYPES[cfg["action"]](
            self.world, cfg["n_groups"], cfg["controller"]
        )
        self.action_space = spaces.MultiDiscrete(self.action_type.space_nvec())
        self.observation_type = OBSERVATION_TYPES[cfg["observation"]](
            self.world, cfg["controller"], cfg["n_groups"], cfg["max_steps"]
        )
        self.observation_space = self.observation_type.space()
        self._shape_key = (self.world.n, self.world.models)
        self._last_report = None
        self._pop: dict = {}
        self._window = None  # render_mode="human": a HumanWindow once rendered

    # ------------------------------------------------------------------ API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options:
            allowed = ("overrides",)
            bad = [k for k in options if k not in allowed]
            if bad:
                raise ValueError(f"unknown reset option {bad[0]!r}; allowed: {allowed}")
            cfg = dict(self.config, overrides={**self.config["overrides"], **options["overrides"]})
            world = build_world(cfg)
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
        if self.render_mode == "human":
            self.render()
        return self.observation_type.observe(self._pop), {"invalid_action": False}

    def action_masks(self) -> np.ndarray:
        """sb3-contrib MaskablePPO masks: one flag per choice of every field."""
        if not self.world.started:
            raise RuntimeError("call reset() before action_masks()")
        return self.action_type.mask()

    def feature_names(self) -> dict[str, list]:
        """Names of the observation's entries and of the action's fields (no reset needed).

        Returns:
            ``"observation"``: one name per observation entry, in order
            (``server[2].free_gpu_share``, ``model[olmoe-1b-7b].group[0].token_share``,
            ..., ``progress``; :meth:`ViewObservation.names
            <coel_env.envs.observations.ViewObservation.names>` lists them);
            ``"action"``: one name per ``MultiDiscrete`` field
            (``model[olmoe-1b-7b].update``, ``...home[3]``, ``...bits[g1]``);
            ``"action_choices"``: per field, a label for each choice (``bits``: ``"16"``
            ... ``"2"``), so the flattened list is the layout of :meth:`action_masks`.
        """
        return {
            "observation": self.observation_type.names(),
            "action": self.action_type.names(),
            "action_choices": self.action_type.choice_names(),
        }

    def step(self, action):
        if not self.world.started:
            raise RuntimeError("call reset() before step()")
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
        if self.render_mode == "human":
            self.render()
        return obs, reward, False, False, info

    def encode_plan(self, plan) -> np.ndarray:
        """The action that comes closest to deploying ``plan`` (a
        :class:`~coel_env.core.plan.Plan`; None: keep the plan in force) from the plan
        in force, for imitating other policies (version-1 envs only: their actions can
        express the baselines' plans)."""
        if not self.world.started:
            raise RuntimeError("call reset() before encode_plan()")
        if not hasattr(self.action_type, "encode"):
            raise ValueError(
                f"action={self.config['action']!r} cannot encode plans (it names one home "
                "per model); use CoEL-v2, CoEL-v1 or CoEL-InterDevice-v1"
            )
        return self.action_type.encode(plan, self.world.plan, self._pop)

    def render(self):
        from coel_env.envs.render import render_ansi, render_rgb

        if self.render_mode == "ansi":
            return render_ansi(self.world, self._last_report)
        if self.render_mode == "rgb_array":
            return render_rgb(self.world, self._last_report)
        if self.render_mode == "human":  # drawn at every reset() and step(), as Gymnasium's
            if self._window is None:
                from coel_env.envs.human import HumanWindow

                self._window = HumanWindow()
            self._window.show(render_rgb(self.world, self._last_report))
        return None

    def close(self) -> None:
        """Close the ``render_mode="human"`` window, if one is open."""
        if self._window is not None:
            self._window.close()
            self._window = None

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
            setattr(new, k, None if k == "_window" else copy.deepcopy(v, memo))  # no window
        return new


def build_world(cfg: dict) -> World:
    """The world of an env config (``scenario``, ``overrides``, ``trace``, ``topology``,
    ``device_profiles``; shared with the multi-agent env)."""
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
