"""The size-invariant graph env (``CoEL-Graph-v0``): one plan edit per step, exact masks."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from coel_env.core.generator import GeneratorConfig, generate_overrides
from coel_env.core.plan import reuse_unchanged
from coel_env.core.rewards import RewardConfig, report_info, reward_terms, total_reward
from coel_env.envs.coel import build_world
from coel_env.envs.config import check_config, check_render_mode, resolve_config
from coel_env.envs.graph_edits import EditLayout, PlanEditor
from coel_env.envs.graph_obs import GraphObservation
from coel_env.envs.shaping import HomeLookahead

#: Least ``max_servers`` (the issue's size-invariance target: Topology Zoo graphs).
MIN_MAX_SERVERS = 1


class GraphEnv(gym.Env):
    """``CoEL-Graph-v0``: the CoEL world as a sequence of plan edits over padded graphs.

    ## Description

    The same world as the other CoEL ids (:class:`coel_env.core.world.World`: edge
    servers serving mixture-of-experts LLMs, a controller deciding from a stale
    broadcast view), but the agent builds each epoch's plan *one edit at a time*, as
    Decima and Placeto make placement learnable, and observes the world as padded
    arrays of servers, links, models and expert groups. One env config runs any
    topology up to the maxima (``max_servers``, ``max_models``): the ``default``,
    ``static`` and ``large`` scenarios, EUA sites or any Topology Zoo GraphML
    (``config={"topology": "Abilene.graphml"}``); a policy whose weights are shared
    across servers and groups (``agents.graph_policy``) then runs on all of them.

    Each epoch starts from the plan in force (the *draft*); the agent edits it (up to
    ``max_edits`` edits) and then commits it: the world checks it, moves experts
    (migration) and runs the 10 s epoch. Experts are addressed in popularity groups
    (group 0 the most popular quarter of every layer with ``n_groups`` 4).

    ## Action Space

    ``Discrete(N)``, every candidate edit of the draft padded to the maxima
    (:class:`coel_env.envs.graph_edits.EditLayout`; with ``max_servers`` S,
    ``max_models`` M and ``n_groups`` G: ``N = 1 + 2MS + 3MGS + 5MG + 4M + 2M``, 3689
    with the defaults 64, 4, 4; ``+ MS`` with ``home_move``):

    | block | shape | edit |
    |---|---|---|
    | ``commit`` | 1 | hand the draft to the world and run one epoch |
    | ``home_add`` | M x S | server also runs the model's dense part (*) |
    | ``home_drop`` | M x S | server no longer runs it (another home stays) |
    | ``move`` | M x G x S | every expert of the group on this server only |
    | ``replicate`` | M x G x S | a copy of the group's experts also on this server |
    | ``drop`` | M x G x S | no copy of the group on this server (others stay) |
    | ``bits`` | M x G x 5 | the group's bit width (16, 8, 4, 3, 2) |
    | ``keep`` | M x 4 | token keep ratio of activations (1, 0.75, 0.5, 0.25) |
    | ``host_policy`` | M x 2 | host-memory experts run on the CPU (0) or are fetched (1) |
    | ``home_move`` | M x S | only with ``home_move=True``: this server is the model's only home |

    (*) ``home_add`` of a model that is not deployed deploys it: every expert on the
    server at ``deploy_bits``.

    ``home_move[m, s]`` (config ``home_move``, off by default so that the layout of the
    published policies stays as it was) is ``home_add[m, s]`` where ``s`` is no home
    followed by ``home_drop`` of every other home, in one edit: a model's dense part can
    go from every server to one without passing through the plans in between. It never
    deploys a model (``home_add`` does).

    On the servers an edit touches, the model's experts are re-tiered: GPU memory in
    group order, most popular first, while they fit, the rest in host memory.
    ``env.unwrapped.action_masks()`` (sb3-contrib MaskablePPO) is **exact**: ``commit``
    is always allowed; an edit is allowed iff it changes the draft and the world's own
    check (:meth:`World.check`) accepts the edited plan, with the memory of every
    server it touches and every expert keeping a copy on a present server; after
    ``max_edits`` edits only ``commit`` is. Padding is never allowed.
    ``env.unwrapped.action_label(a)`` names an action.

    **Bad actions.** An action outside the space (not an integer, out of range, a
    wrong shape) raises ``ValueError``. A masked action is not applied: the draft stays,
    the reward is ``-invalid_reward`` (-1 by default), ``info["invalid_action"]`` is
    True and ``info["infeasibility"]`` says why; the epoch does not advance.

    ## Observation Space

    ``Dict`` of ``float32`` arrays in [0, 1] (masks ``MultiBinary``), padded with zeros;
    the feature names are :data:`coel_env.envs.graph_obs.SERVER_FEATURES` and siblings:

    - ``server`` (S, 22): per server the controller's broadcast view (believed present,
      heard, age of the news / 5 periods, controller, cloud, unified memory; GPU and
      host capacity, log peak TFLOPS, memory bandwidth; free GPU / host share,
      utilisation, dropped share, background load, link bandwidth multiplier / 2, heard
      demand / (5 x base rate x models), degree / 16) and the draft's dense, GPU and
      host memory share and homes there;
    - ``server_mask`` (S,): 1 for a real server;
    - ``latency``, ``bandwidth`` (S, S): path latency / 100 ms and bottleneck
      bandwidth / 10 Gbit/s between servers (current routing); ``adjacency`` (S, S):
      direct links;
    - ``model`` (M, 17): deployed, layers / 64, experts / 128, dense GB / 10, the
      experts' GB / 100 at each bit width, keep ratio, fetch share, homes / n, heard
      demand; the draft's cost estimate: popularity-weighted quality loss / quality
      floor / 2, popularity share with a GPU copy, popularity share held on the
      homes, GB of expert copies the commit would move / 10;
    - ``model_mask`` (M,): 1 for a real model;
    - ``pair`` (M, S, 6): home, heard demand of the model there, share of its experts
      held there, popularity share held there, share on its GPU, GB there / GPU
      capacity;
    - ``group`` (M, G, 10): token share, share at each bit width, GB / the model's
      16-bit GB, copies / n, share of copies on a GPU, servers holding it / n;
    - ``placement`` (M, G, S, 2): share of the group held on each server, and on its
      GPU;
    - ``globals`` (4,): epoch / ``max_steps``, edits used / ``max_edits``, GB the
      commit would move / 10, whether the draft differs from the plan in force.

    True metrics of a committed epoch are in ``info`` as in the other ids
    (``slo_attainment``, ``latency_p95_ms``, ...).

    ## Rewards

    0 after an edit (``-invalid_reward`` after a masked one). At ``commit`` the
    epoch's reward of the other ids: ``sum(config[t] * info["rewards"][t])`` over the
    named terms of :func:`coel_env.core.rewards.reward_terms` (``slo_reward``,
    ``latency_reward``, ``quality_reward``, ``dropped_reward``, ``migration_reward``,
    ``energy_reward``, ``broadcast_reward``, ``invalid_reward``), weights from
    :class:`~coel_env.core.rewards.RewardConfig`; the undiscounted return over an
    episode is the harness's return of the committed plans. A plan the world refuses
    at commit (a server left during the epoch) is not an invalid action: the plan in
    force runs, ``info["plan_refused"]`` is True.

    **Shaping** (``shaping_epochs`` k > 0; off by default): every step's reward gains
    ``shaping_gamma * phi(s') - phi(s)`` (``info["shaping"]``), a potential from a paired
    k-epoch lookahead of the world: what the draft's homes are worth against the
    episode's starting homes on the same arrivals (:mod:`coel_env.envs.shaping`). It
    telescopes over an episode, so the best policy is unchanged when ``shaping_gamma``
    equals the learner's ``gamma``; ``info["rewards"]`` keeps the unshaped terms.

    ## Starting State

    ``reset(seed=s)`` seeds ``np_random``, which draws the instance (with a
    ``generator``) and the world's seed (as ``CoELEnv``); the world deploys its naive
    plan and the first epoch's draft is it. A model that lost experts when a server left
    starts an epoch's draft with them copied back (from the model store) onto a present
    server that fits them, homes first, else undeployed: the world's check refuses any
    plan with experts that have no copy.
    ``info`` is ``{"invalid_action": False}``.

    **Exploring starts** (for training): with ``start_edits`` k > 0, ``reset`` then
    applies a random number (0..k, uniform) of edits to the first draft, each drawn
    uniformly from the allowed edits of the kinds in ``start_kinds`` (None: every edit
    kind) with ``np_random``; they do not count against ``max_edits``, the first commit
    deploys them unless the agent edits them away, and ``info["start_edits"]`` names
    them. An episode then starts from plans the agent would rarely reach by itself, so
    it learns what they are worth. The evaluation harness (``coel evaluate``, the
    baselines) always starts from the world's plan.

    ## Episode End

    Never terminates; truncated at the commit of epoch ``max_steps`` (200). The env
    counts epochs itself (the registration sets no ``max_episode_steps``: the steps
    of an epoch vary with the edits).

    ## Arguments

    ```python
    import gymnasium as gym
    import coel_env

    env = gym.make("CoEL-Graph-v0", config={"scenario": "large", "max_edits": 8})
    env = gym.make("CoEL-Graph-v0", config={"topology": "Abilene.graphml"})
    ```

    ``config`` keys (:meth:`default_config`): those of ``CoELEnv`` that build the world
    (``scenario``, ``overrides``, ``trace``, ``topology``, ``device_profiles``),
    ``controller``, ``n_groups``, ``max_steps`` [epochs], the reward weights, and
    ``max_servers`` (64), ``max_models`` (4), ``max_edits`` (8), ``deploy_bits`` (4),
    ``generator`` (None), ``start_edits`` (0), ``start_kinds`` (None; exploring
    starts, see Starting State), ``home_move`` (False; see Action Space),
    ``shaping_epochs`` (0) and ``shaping_gamma`` (0.99; see Rewards). A world
    with more servers or models than the maxima raises ``ValueError`` naming both
    numbers.

    ``generator``: a mapping of :class:`coel_env.core.generator.GeneratorConfig` keys
    (``{}``: its defaults, 3-16 edge servers on random geometric or Waxman topologies,
    random device mixes, 1-4 of the four models, rates, daily cycles, link failures,
    churn, a cloud node) draws a new instance at every ``reset`` from ``np_random``
    (domain randomisation for training; the same seed gives the same instances).
    ``overrides`` still apply on top.

    ## Version History

    - ``CoEL-Graph-v0``: initial release.
    """

    metadata = {"render_modes": ["rgb_array", "ansi"], "render_fps": 1}

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        """Every configuration key with its default and unit."""
        return {
            "scenario": "default",  # preset name or YAML path (coel_env.core.scenario)
            "overrides": {},  # dotted scenario overrides
            "trace": None,  # request trace CSV; None: synthetic
            "topology": None,  # .graphml (Topology Zoo) or .csv (EUA sites)
            "device_profiles": [],  # CSVs written by `coel profile`
            "controller": 0,  # server whose broadcast view is observed [index]
            "n_groups": 4,  # popularity groups per layer that edits address
            "max_steps": 200,  # epochs per episode (the commit of the last truncates)
            "max_servers": 64,  # servers the spaces are padded to
            "max_models": 4,  # models the spaces are padded to
            "max_edits": 8,  # edits per epoch before only commit is allowed
            "deploy_bits": 4,  # bit width of a model deployed by home_add
            "generator": None,  # None, or ranges of random instances drawn at each reset
            "start_edits": 0,  # most random edits of the first draft at reset (exploring starts)
            "start_kinds": None,  # edit kinds they are drawn from; None: every edit kind
            "home_move": False,  # add the home_move block (a model's only home, one edit)
            "shaping_epochs": 0,  # epochs of the home lookahead's potential; 0: no shaping
            "shaping_gamma": 0.99,  # the shaping's discount: the learner's gamma
            **RewardConfig().as_dict(),
        }

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        cfg = resolve_config(self.default_config(), ("defaults", defaults), ("config", config))
        check_config(
            cfg, ints={"max_servers": MIN_MAX_SERVERS, "max_models": 1, "max_edits": 0,
                       "start_edits": 0, "shaping_epochs": 0},
        )  # fmt: skip
        g = cfg["shaping_gamma"]
        if isinstance(g, bool) or not isinstance(g, int | float) or not 0.0 < g <= 1.0:
            raise ValueError(
                f"shaping_gamma={g!r} is not allowed; must be a number in (0, 1] (the "
                "learner's gamma)"
            )
        check_render_mode(render_mode, self.metadata["render_modes"])
        if not isinstance(cfg["home_move"], bool | np.bool_):
            raise ValueError(
                f"home_move={cfg['home_move']!r} is not allowed; must be true or false"
            )
        self.config = cfg
        self.render_mode = render_mode
        self.layout = EditLayout(
            cfg["max_servers"], cfg["max_models"], cfg["n_groups"], bool(cfg["home_move"])
        )
        self.action_space = spaces.Discrete(self.layout.n)
        self._start_kinds = self.layout.kind_mask(cfg["start_kinds"], "start_kinds")
        self.obs_type = GraphObservation(cfg["max_servers"], cfg["max_models"], cfg["n_groups"])
        self.observation_space = self.obs_type.space()
        self.generator = None
        if cfg["generator"] is not None:
            self.generator = GeneratorConfig.from_mapping(cfg["generator"])
            most = self.generator.n_servers[1] + (1 if self.generator.cloud_prob > 0 else 0)
            if most > cfg["max_servers"] or self.generator.n_models[1] > cfg["max_models"]:
                raise ValueError(
                    f"generator instances reach {most} servers and "
                    f"{self.generator.n_models[1]} models, above max_servers="
                    f"{cfg['max_servers']} / max_models={cfg['max_models']}"
                )
        self.world = self._build(cfg)
        self.editor = PlanEditor(self.world, self.layout, cfg["deploy_bits"])
        self._last_report = None
        self.shaping = HomeLookahead(cfg["shaping_epochs"], cfg) if cfg["shaping_epochs"] else None
        self._phi = 0.0

    def _build(self, cfg: Mapping[str, Any]):
        world = build_world(dict(cfg))
        if world.n > cfg["max_servers"]:
            raise ValueError(
                f"the topology has {world.n} servers, above max_servers={cfg['max_servers']}; "
                f"raise max_servers to at least {world.n} (a policy trained with other "
                "maxima cannot run it)"
            )
        if len(world.models) > cfg["max_models"]:
            raise ValueError(
                f"the scenario has {len(world.models)} models, above "
                f"max_models={cfg['max_models']}; raise max_models to at least "
                f"{len(world.models)}"
            )
        if not 0 <= cfg["controller"] < world.n:
            raise ValueError(
                f"controller={cfg['controller']!r} is not allowed; servers are 0..{world.n - 1}"
            )
        return world

    # ------------------------------------------------------------------ API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; none are allowed")
        if self.generator is not None:  # a new instance, drawn from the env's generator
            over = generate_overrides(self.np_random, self.generator)
            cfg = dict(self.config, scenario="default", topology=None,
                       overrides={**over, **self.config["overrides"]})  # fmt: skip
            self.world = self._build(cfg)
            self.editor = PlanEditor(self.world, self.layout, self.config["deploy_bits"])
        self.world.reset(int(self.np_random.integers(2**63 - 1)))
        self._epochs = 0
        self._last_report = None
        self._begin()
        info = {"invalid_action": False}
        if self.shaping is not None:
            self.shaping.reset(self.world.plan)
        if self.config["start_edits"]:
            info["start_edits"] = self._explore_start()
        if self.shaping is not None:
            self._phi = self.shaping(self.world, self.editor.draft)
        return self._observe(), info

    def _explore_start(self) -> list[str]:
        """Exploring starts: apply a random number (0..``start_edits``) of edits, each
        drawn uniformly from the allowed edits of ``start_kinds``, to the first draft;
        they do not count against ``max_edits``. Returns their labels."""
        lay, ed = self.layout, self.editor
        n = int(self.np_random.integers(self.config["start_edits"] + 1))
        done = []
        for _ in range(n):
            allowed = np.flatnonzero(ed.mask(True) & self._start_kinds)
            if not len(allowed):
                break
            a = int(allowed[self.np_random.integers(len(allowed))])
            ed.apply(*lay.decode(a))
            done.append(self.action_label(a))
        ed.edits = 0
        return done

    def _begin(self) -> None:
        self.editor.begin()
        self.obs_type.begin(self.world, self.config["controller"])

    def _observe(self) -> dict:
        cfg = self.config
        used = self.editor.edits / cfg["max_edits"] if cfg["max_edits"] else 1.0
        return self.obs_type.observe(self.editor, min(self._epochs / cfg["max_steps"], 1.0), used)

    def action_masks(self) -> np.ndarray:
        """sb3-contrib MaskablePPO masks: one flag per action (exact: class doc)."""
        if not getattr(self.world, "_seeded", False):
            raise RuntimeError("call reset() before action_masks()")
        # a writable copy: the editor's cached mask is read-only, torch wants writable
        return np.array(self.editor.mask(self.editor.edits < self.config["max_edits"]))

    def action_label(self, action: int) -> str:
        """A readable name of ``action`` (e.g. ``move[olmoe-1b-7b, g1, s3]``)."""
        return self.layout.label(int(action), self.world.models)

    def step(self, action):
        a = self._check_action(action)
        if a == 0:
            return self._commit()
        if not getattr(self.world, "_seeded", False):
            raise RuntimeError("call reset() before step()")
        mask = self.editor.mask(self.editor.edits < self.config["max_edits"])
        if not mask[a]:
            return self._invalid(a, f"masked edit {self.action_label(a)}")
        report = self.editor.apply(*self.layout.decode(a))
        if not report.feasible:  # never with the mask (it is exact); kept as a guard
            return self._invalid(a, str(report))
        info = {"invalid_action": False, "committed": False}
        return self._observe(), self._shaped(0.0, info), False, False, info

    def _shaped(self, reward: float, info: dict) -> float:
        """``reward`` plus the shaping term ``shaping_gamma * phi(s') - phi(s)`` of the
        step into the current state (in ``info["shaping"]``; unchanged without shaping);
        ``phi(s')`` becomes the current potential. A truncation is not terminal: the last
        state keeps its potential."""
        if self.shaping is None:
            return reward
        phi = self.shaping(self.world, self.editor.draft)
        info["shaping"] = self.config["shaping_gamma"] * phi - self._phi
        self._phi = phi
        return reward + info["shaping"]

    def _invalid(self, a: int, why: str):
        info = {"invalid_action": True, "committed": False, "infeasibility": why}
        reward = self._shaped(-float(self.config["invalid_reward"]), info)
        return self._observe(), reward, False, False, info

    def _commit(self):
        w = self.world
        plan = reuse_unchanged(self.editor.draft, w.plan)
        edits = self.editor.edits
        report = w.step(None if plan is w.plan else plan)
        terms = reward_terms(report, w, self.config, False)
        reward = total_reward(terms, self.config)
        self._epochs += 1
        self._last_report = report
        truncated = self._epochs >= self.config["max_steps"]
        self._begin()
        info = {
            "invalid_action": False,
            "committed": True,
            "edits": edits,
            "plan_refused": not report.feasible,
            "infeasibility": report.infeasibility,
            "rewards": terms,
            **report_info(report),
        }
        return self._observe(), self._shaped(reward, info), False, truncated, info

    def render(self):
        from coel_env.envs.render import render_ansi, render_rgb

        if self.render_mode == "ansi":
            return render_ansi(self.world, self._last_report)
        if self.render_mode == "rgb_array":  # the map of the plan in force
            return render_rgb(self.world, self._last_report)
        return None

    def _check_action(self, action) -> int:
        a = np.asarray(action)
        if a.shape not in ((), (1,)):
            raise ValueError(
                f"action has shape {a.shape}; the action space is Discrete({self.layout.n}): "
                "one integer"
            )
        if a.dtype.kind not in "iu":
            if a.dtype.kind != "f" or not np.isfinite(a).all() or a.reshape(()) != np.round(a):
                raise ValueError(f"action {action!r} is not an integer")
        v = int(a.reshape(()))
        if not 0 <= v < self.layout.n:
            raise ValueError(f"action={v} is not allowed; actions are 0..{self.layout.n - 1}")
        return v

    def __deepcopy__(self, memo):
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            setattr(new, k, copy.deepcopy(v, memo))
        return new
