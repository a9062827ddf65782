"""A trained ``CoEL-Graph-v0`` model as a policy of the evaluation harness.

:class:`GraphRLPolicy` runs the model as the graph env would: before each epoch it
starts a draft from the plan in force (:class:`coel_env.envs.graph_edits.PlanEditor`
bound to the harness's world), observes it with the env's padded encoding
(:class:`coel_env.envs.graph_obs.GraphObservation`) and applies the model's
masked edits one by one (its mode, or with ``stochastic=True`` draws from it seeded by
the episode seed) until the model picks ``commit`` (or only ``commit`` is left, after
``max_edits`` edits: then the network is not run); the draft is the epoch's plan. The
harness times the whole loop, so ``decision_ms`` is the per-epoch decision time of
all the edits. The returns are the env's for the same world seed.

The network's weights are shared across servers, models and groups, so one model runs
on every scenario and topology up to the maxima it was saved with (``max_servers``,
``max_models``, ``n_groups``: the shapes of its observation space).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.base import Observation
from coel_env.core.plan import InfeasibilityReport, Plan
from coel_env.core.world import World

__all__ = ["GraphRLPolicy", "model_maxima"]


def model_maxima(model: Any) -> dict[str, int]:
    """``max_servers``, ``max_models`` and ``n_groups`` of a graph model's spaces.

    Raises:
        ValueError: the model's observation space is not ``CoEL-Graph-v0``'s.
    """
    space = model.observation_space
    spaces = getattr(space, "spaces", None)
    if not spaces or "placement" not in spaces:
        raise ValueError(
            f"the model's observation space {space} is not CoEL-Graph-v0's Dict space "
            "(a policy of another env id)"
        )
    return {
        "max_servers": int(spaces["server"].shape[0]),
        "max_models": int(spaces["model"].shape[0]),
        "n_groups": int(spaces["group"].shape[1]),
    }


class GraphRLPolicy:
    """A trained graph model (MaskablePPO + ``GraphPolicy``) as a harness policy.

    Args:
        model: an sb3-contrib ``MaskablePPO`` model trained on ``CoEL-Graph-v0``.
        config: the env config it was trained with (``controller``, ``max_steps``,
            ``max_edits``, ``deploy_bits`` and the maxima; over the id's defaults).
        name: the name results are reported under.
        unpadded: run the network on the world's servers and models only
            (:func:`agents.graph_policy.unpadded`; the same scores of the real edits up
            to the rounding of sums over other sizes, about half the work of a pass on
            ``large``'s 33 of 64 servers); ``False`` runs it on the padded observation
            as training does. Only for a ``GraphPolicy`` on the CPU; other models
            always run padded.
        stochastic: sample each step's action from the masked policy (the distribution
            PPO trained, as in training) instead of taking its mode; the draws come from
            a generator seeded by the episode seed (:meth:`reset`), so an episode is
            reproducible. An edit-or-commit policy whose edits share the probability
            that ``commit`` does not take can have ``commit`` as its mode in nearly every
            state (the mode then barely edits) while its samples edit and earn more.

    Raises:
        ValueError: the config's maxima differ from those the model was saved with
            (naming both).
    """

    sees = "view"

    def __init__(
        self, model: Any, config: dict, name: str = "rl", unpadded: bool = True,
        stochastic: bool = False,
    ) -> None:  # fmt: skip
        from coel_env.envs import env_config

        self.model = model
        self.config = {**env_config("CoEL-Graph-v0"), **config}
        self.name = name
        self.maxima = model_maxima(model)
        asked = {k: self.config[k] for k in self.maxima}
        if asked != self.maxima:
            raise ValueError(
                f"policy {name!r} was saved with {_fmt(self.maxima)}; the config asks for "
                f"{_fmt(asked)}: a graph policy runs only with the maxima it was trained with"
            )
        from coel_env.envs.graph_edits import EditLayout

        self.layout = EditLayout(
            self.maxima["max_servers"],
            self.maxima["max_models"],
            self.maxima["n_groups"],
            bool(self.config.get("home_move", False)),
        )
        n = int(getattr(model.action_space, "n", -1))
        if n != self.layout.n:
            raise ValueError(
                f"policy {name!r} has {n} actions; its observation's maxima "
                f"({_fmt(self.maxima)}, home_move={self.layout.home_move}) give "
                f"{self.layout.n}"
            )
        self.unpadded = unpadded
        self.stochastic = bool(stochastic)
        self._rng = np.random.default_rng(0)  # reseeded by reset()
        self._sizes: tuple[int, int] | None = None  # (servers, models) of the world
        self._sub: dict[tuple[int, int], np.ndarray] = {}  # sub_actions per sizes
        # GraphPolicy's exploration floor, sampled with the policy (``stochastic``)
        self._floor = float(getattr(model.policy, "explore_floor", 0.0))
        ex = getattr(model.policy, "explore_actions", None)
        self._explore = None if ex is None else ex.numpy()
        self._argmax = self._make_argmax()
        self.edits: list[int] = []  # edits of the last decision (commit excluded)

    def _make_argmax(self):
        """The masked action: the argmax of the masked logits (the mode of the masked
        categorical that ``predict(deterministic=True)`` returns), or a draw from them
        (:meth:`_pick`), without
        ``predict``'s per-call overhead: the arrays become float32 tensors as SB3's
        ``obs_to_tensor`` and ``preprocess_obs`` make them (a batch of one; the Box and
        MultiBinary keys as float), the features extractor and the actor run under
        ``torch.inference_mode`` (the same numbers, no autograd bookkeeping)."""
        import torch

        policy = self.model.policy
        policy.set_training_mode(False)
        extractor = (
            policy.features_extractor
            if getattr(policy, "share_features_extractor", True)
            else policy.pi_features_extractor
        )
        keys = list(policy.observation_space.spaces)
        if policy.device.type != "cpu":  # other devices: SB3's own path
            return self._make_sb3_argmax()
        from agents.graph_policy import GraphExtractor, _Split, unpadded

        cut = (
            self.unpadded
            and isinstance(extractor, GraphExtractor)
            and isinstance(policy.action_net, torch.nn.Identity)
            and isinstance(policy.mlp_extractor, _Split)
        )
        if cut:

            def argmax_unpadded(x: dict, mask: np.ndarray) -> int:
                n, m = self._sizes
                sub = self._sub[(n, m)]
                x = unpadded(x, n, m)
                with torch.inference_mode():
                    obs = {k: torch.from_numpy(x[k]).unsqueeze(0).float() for k in keys}
                    logits = extractor.action_logits(obs).numpy()[0]
                flags = None if self._explore is None else self._explore[sub]
                return int(sub[self._pick(np.where(mask[sub], logits, -np.inf), flags)])

            return argmax_unpadded

        def argmax(x: dict, mask: np.ndarray) -> int:
            with torch.inference_mode():
                obs = {k: torch.from_numpy(x[k]).unsqueeze(0).float() for k in keys}
                feats = extractor(obs)
                logits = policy.action_net(policy.mlp_extractor.forward_actor(feats))
                logits = logits.numpy()[0]
            return self._pick(np.where(mask, logits, -np.inf), self._explore)

        return argmax

    def _pick(self, logits: np.ndarray, explore: np.ndarray | None = None) -> int:
        """The action of masked ``logits`` (-inf where masked): their argmax, or a draw
        from their softmax when :attr:`stochastic` (mixed with the uniform distribution
        over the allowed actions, of the kinds flagged in ``explore`` where any is, by
        the policy's ``explore_floor``, as it trained)."""
        if not self.stochastic:
            return int(logits.argmax())
        z = np.exp(logits.astype(np.float64) - logits.max())
        floor = self._floor
        if floor > 0.0:
            ok = np.isfinite(logits)
            if explore is not None and (ok & explore).any():
                ok = ok & explore
            z = (1.0 - floor) * z / z.sum() + floor * ok / ok.sum()
        cum = np.cumsum(z)
        return int(min(np.searchsorted(cum, self._rng.random() * cum[-1], side="right"),
                       len(cum) - 1))  # fmt: skip

    def _make_sb3_argmax(self):
        import torch

        policy = self.model.policy

        def argmax(x: dict, mask: np.ndarray) -> int:
            with torch.no_grad():
                obs, _ = policy.obs_to_tensor(x)
                feats = policy.extract_features(obs)
                if isinstance(feats, tuple):  # separate actor and critic extractors
                    feats = feats[0]
                logits = policy.action_net(policy.mlp_extractor.forward_actor(feats))
                logits = logits.cpu().numpy()[0]
            return self._pick(np.where(mask, logits, -np.inf))

        return argmax

    def reset(self, world: World, seed: int) -> None:
        from coel_env.envs.graph_edits import PlanEditor
        from coel_env.envs.graph_obs import GraphObservation

        c, m = self.config, self.maxima
        if world.n > m["max_servers"] or len(world.models) > m["max_models"]:
            raise ValueError(
                f"the world has {world.n} servers and {len(world.models)} models, above "
                f"the maxima policy {self.name!r} was trained with: "
                f"max_servers={m['max_servers']}, max_models={m['max_models']}"
            )
        if not 0 <= c["controller"] < world.n:
            raise ValueError(
                f"controller={c['controller']!r} is not allowed; servers are 0..{world.n - 1}"
            )
        self.editor = PlanEditor(world, self.layout, c["deploy_bits"])
        self._sizes = (world.n, len(world.models))
        if self._sizes not in self._sub:
            self._sub[self._sizes] = self.layout.sub_actions(*self._sizes)
        self.obs_type = GraphObservation(m["max_servers"], m["max_models"], m["n_groups"])
        self._epochs = 0
        self._rng = np.random.default_rng(seed)

    def act(self, world: World, obs: Observation) -> Plan | InfeasibilityReport | None:
        c, ed = self.config, self.editor
        ed.begin()
        self.obs_type.begin(world, c["controller"])
        progress = min(self._epochs / c["max_steps"], 1.0)
        self.edits = []
        while True:
            mask = ed.mask(ed.edits < c["max_edits"])
            if not mask[1:].any():  # only commit is allowed
                break
            used = ed.edits / c["max_edits"] if c["max_edits"] else 1.0
            x = self.obs_type.observe(ed, progress, used)
            a = self._argmax(x, mask)
            if a == 0:  # commit
                break
            report = ed.apply(*self.layout.decode(a))
            if not report.feasible:  # never with the exact mask; kept as a guard
                self._epochs += 1
                return report
            self.edits.append(a)
        self._epochs += 1
        return ed.draft


def _fmt(m: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in m.items())
