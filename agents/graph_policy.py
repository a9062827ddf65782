"""A size-invariant policy for ``CoEL-Graph-v0``: message passing over servers, shared
encoders of models and expert groups, and one score per candidate edit.

Every weight is shared across servers, models and groups, so the same network runs on
any topology up to the env's maxima (padding is masked out of every pooling, and the
env's action mask removes padded edits). :class:`GraphExtractor` turns the observation
dict into the logits of every action (in :class:`coel_env.envs.graph_edits.EditLayout`
order) followed by a value embedding; :class:`GraphPolicy` is the sb3-contrib
``MaskableActorCriticPolicy`` whose actor reads those logits directly and whose critic is
a linear layer on the embedding. ``coel train --algo maskable_ppo --env CoEL-Graph-v0``
uses it through the hyperparameter file (``policy: GraphPolicy``).

Network (``dim`` d, ``rounds`` r):

1. servers: an MLP of their features, then r rounds of
   ``h <- h + relu(W [h, mean over linked servers, latency-weighted mean over all])``;
2. models: an MLP of their features and the servers' mean; groups: an MLP of their
   features and their model's embedding;
3. scores: ``home_add``/``home_drop`` (and ``home_move`` where the env has it) from a
   layer over (pair features, server, model);
   ``move``/``replicate``/``drop`` from a layer over (placement and pair features,
   server, group); ``bits`` from the group; ``keep``/``host_policy`` from the model;
   ``commit`` and the value from a summary (means of servers, models and groups, and the
   global features).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from agents.policies import MASKED_LOGIT, FusedMultiCategoricalDistribution
from coel_env.envs.graph_edits import N_BITS, N_KEEP, EditLayout

__all__ = ["PAD_LOGIT", "GraphExtractor", "GraphPolicy", "register", "unpadded"]


def _mlp(n_in: int, n_out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def _masked_mean(x: th.Tensor, mask: th.Tensor, dims: tuple[int, ...]) -> th.Tensor:
    """Mean of ``x`` over ``dims`` where ``mask`` (broadcast to ``x`` without its last
    axis) is 1."""
    m = mask.unsqueeze(-1)
    return (x * m).sum(dims) / m.expand_as(x).sum(dims).clamp(min=1.0)


class GraphExtractor(BaseFeaturesExtractor):
    """Observation dict -> [logits of every action | value embedding (``dim``)].

    Args:
        observation_space: ``CoEL-Graph-v0``'s ``Dict`` space (its shapes give the
            maxima).
        dim: width of every embedding.
        rounds: message-passing rounds over the servers.
        home_move: score the ``home_move`` block too (the env's ``home_move`` config).
    """

    def __init__(
        self, observation_space: spaces.Dict, dim: int = 64, rounds: int = 2,
        home_move: bool = False,
    ) -> None:  # fmt: skip
        S, fs = observation_space["server"].shape
        M, fm = observation_space["model"].shape
        _, G, fg = observation_space["group"].shape
        fp = observation_space["pair"].shape[-1]
        fpl = observation_space["placement"].shape[-1]
        n_glob = observation_space["globals"].shape[0]
        self.home_move = bool(home_move)
        self.layout = EditLayout(S, M, G, self.home_move)
        self.n_actions = self.layout.n
        super().__init__(observation_space, features_dim=self.n_actions + dim)
        #: run on the sizes a batch uses (``forward``); False: on the maxima (the same
        #: scores for every edit a mask allows, slower; tests compare the two)
        self.cut_padding = True
        self._sub_cache: dict[tuple, th.Tensor] = {}  # see _sub_index
        d = self.dim = dim
        self.S, self.M, self.G = S, M, G
        self.server_in = _mlp(fs, d, d)
        self.rounds = nn.ModuleList([nn.Linear(3 * d, d) for _ in range(rounds)])
        self.model_in = _mlp(fm + d, d, d)
        self.group_in = _mlp(fg + d, d, d)
        # pair scores: one layer over (pair features, server, model), split by input
        self.pair_f, self.pair_s, self.pair_m = nn.Linear(fp, d), nn.Linear(d, d), nn.Linear(d, d)
        self.home_head = nn.Linear(d, 2)
        if self.home_move:
            self.home_move_head = nn.Linear(d, 1)
        # group-server scores: (placement, pair features, server, group)
        self.gs_f = nn.Linear(fpl, d)
        self.gs_p = nn.Linear(fp, d)
        self.gs_s = nn.Linear(d, d)
        self.gs_g = nn.Linear(d, d)
        self.gs_head = nn.Linear(d, 3)
        self.bits_head = nn.Linear(d, N_BITS)
        self.keep_head = nn.Linear(d, N_KEEP)
        self.policy_head = nn.Linear(d, 2)
        self.summary = _mlp(3 * d + n_glob, d, d)
        self.commit_head = nn.Linear(d, 1)

    def forward(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        """[logits of every action of the observation's layout | value embedding]: the
        output of :meth:`compact` with the cut-off actions at :data:`PAD_LOGIT`."""
        logits, z, sub = self.compact(obs)
        if sub is None:
            return th.cat([logits, z], 1)
        S, M = obs["server"].shape[1], obs["model"].shape[1]
        n_act = (
            self.n_actions
            if (S, M) == (self.S, self.M)
            else EditLayout(S, M, self.G, self.home_move).n
        )
        full = logits.new_full((logits.shape[0], n_act + self.dim), PAD_LOGIT)
        full[:, sub] = logits
        full[:, n_act:] = z
        return full

    def compact(self, obs: dict[str, th.Tensor]) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """``(logits, value embedding, sub)``: the network run on the servers and models
        the batch uses (cut after its last flagged server and model, ``_cut``), not on
        the maxima. ``logits`` are those of the cut layout's actions, which sit at
        ``sub`` of the observation's layout (None: no cut, every action). The scores
        are those of the uncut batch up to float rounding (:func:`unpadded`'s
        argument); every action left out is padding, masked by the env."""
        S, M = obs["server"].shape[1], obs["model"].shape[1]
        n = _last_flagged(obs["server_mask"])
        m = _last_flagged(obs["model_mask"])
        if (n, m) == (S, M) or not self.cut_padding:
            out, sub = self._forward(obs), None
        else:
            out = self._forward(_cut(obs, n, m))
            sub = self._sub_index(S, M, n, m, obs["server"].device)
        k = out.shape[1] - self.dim
        return out[:, :k], out[:, k:], sub

    def _sub_index(self, S: int, M: int, n: int, m: int, device) -> th.Tensor:
        """The actions of the first ``n`` servers and ``m`` models in the layout of ``S``
        servers and ``M`` models (cached)."""
        key = (S, M, n, m, str(device))
        if key not in self._sub_cache:
            big = (
                self.layout
                if (S, M) == (self.S, self.M)
                else EditLayout(S, M, self.G, self.home_move)
            )
            self._sub_cache[key] = th.as_tensor(big.sub_actions(n, m), device=device)
        return self._sub_cache[key]

    def _forward(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        sm, mm = obs["server_mask"].float(), obs["model_mask"].float()
        M, G = obs["model"].shape[1], obs["group"].shape[2]  # the maxima, or fewer (unpadded)
        h = self.server_in(obs["server"]) * sm.unsqueeze(-1)
        adj = obs["adjacency"]
        deg = adj.sum(-1, keepdim=True).clamp(min=1.0)
        near = th.exp(-5.0 * obs["latency"]) * sm.unsqueeze(1) * sm.unsqueeze(2)
        near = near / near.sum(-1, keepdim=True).clamp(min=1e-6)
        for layer in self.rounds:
            msg = th.cat([h, adj @ h / deg, near @ h], -1)
            h = (h + th.relu(layer(msg))) * sm.unsqueeze(-1)
        s_pool = _masked_mean(h, sm, (1,))  # [B, d]
        e_m = self.model_in(th.cat([obs["model"], s_pool.unsqueeze(1).expand(-1, M, -1)], -1))
        e_m = e_m * mm.unsqueeze(-1)
        e_g = self.group_in(th.cat([obs["group"], e_m.unsqueeze(2).expand(-1, -1, G, -1)], -1))
        pair = obs["pair"]
        p = th.relu(
            self.pair_f(pair) + self.pair_s(h).unsqueeze(1) + self.pair_m(e_m).unsqueeze(2)
        )  # [B, M, S, d]
        home = self.home_head(p)  # [B, M, S, 2]
        gs = th.relu(
            self.gs_f(obs["placement"])
            + self.gs_p(pair).unsqueeze(2)
            + self.gs_s(h)[:, None, None]
            + self.gs_g(e_g).unsqueeze(3)
        )  # [B, M, G, S, d]
        gsl = self.gs_head(gs)  # [B, M, G, S, 3]
        g_pool = _masked_mean(e_g, mm.unsqueeze(-1).expand(-1, -1, G), (1, 2))
        m_pool = _masked_mean(e_m, mm, (1,))
        z = self.summary(th.cat([s_pool, m_pool, g_pool, obs["globals"]], -1))
        parts = [
            self.commit_head(z),
            home[..., 0].flatten(1),
            home[..., 1].flatten(1),
            gsl[..., 0].flatten(1),
            gsl[..., 1].flatten(1),
            gsl[..., 2].flatten(1),
            self.bits_head(e_g).flatten(1),
            self.keep_head(e_m).flatten(1),
            self.policy_head(e_m).flatten(1),
        ]
        if self.home_move:
            parts.append(self.home_move_head(p).flatten(1))
        logits = th.cat(parts, 1)
        return th.cat([logits, z], 1)

    def action_logits(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        """The logits of every action of the observation's own sizes: those of
        ``EditLayout(S, M, G)`` for a padded observation (the actor's latent), those of
        the smaller layout for one cut by :func:`unpadded`."""
        out = self.forward(obs)
        return out[:, : out.shape[1] - self.dim]


#: The logit of an action the batch's cut leaves out (a padded server or model): as
#: low as sb3-contrib's masked logits, so that it is never picked even without a mask.
PAD_LOGIT = -1e8


def _last_flagged(mask: th.Tensor) -> int:
    """1 + the last index any row of a batch of masks flags (at least 1)."""
    any_row = mask.reshape(-1, mask.shape[-1]).amax(0) > 0
    idx = th.nonzero(any_row)
    return int(idx[-1]) + 1 if len(idx) else 1


def _cut(obs: dict[str, Any], n: int, m: int, batched: bool = True) -> dict[str, Any]:
    """The observation (a batch, or one with ``batched=False``; tensors or numpy arrays)
    cut to its first ``n`` servers and ``m`` models, not checked against its masks."""
    b = (slice(None),) if batched else ()
    s, k, all_ = slice(n), slice(m), slice(None)
    return {
        "server": obs["server"][b + (s,)],
        "server_mask": obs["server_mask"][b + (s,)],
        "latency": obs["latency"][b + (s, s)],
        "bandwidth": obs["bandwidth"][b + (s, s)],
        "adjacency": obs["adjacency"][b + (s, s)],
        "model": obs["model"][b + (k,)],
        "model_mask": obs["model_mask"][b + (k,)],
        "pair": obs["pair"][b + (k, s)],
        "group": obs["group"][b + (k,)],
        "placement": obs["placement"][b + (k, all_, s)],
        "globals": obs["globals"],
    }


def unpadded(obs: dict[str, Any], n_servers: int, n_models: int) -> dict[str, Any]:
    """The observation (one, unbatched: numpy arrays or tensors) cut to its first
    ``n_servers`` servers and ``n_models`` models, which must be exactly the ones its
    masks flag.

    :class:`GraphExtractor` gives the real edits of the cut observation the scores it
    gives them in the padded one (up to the rounding of sums over other sizes): padded
    servers and models have zero features and zero links, their embeddings are zeroed
    before any message or pooling, every mean is over the masks, and every score reads
    only its own server, model and group; expert groups are not padded. Their logits
    sit at ``layout.sub_actions(n_servers, n_models)`` of the padded layout.

    Raises:
        ValueError: the masks do not flag exactly the first ``n_servers`` servers and
            ``n_models`` models.
    """
    n, m = n_servers, n_models
    for key, k in (("server_mask", n), ("model_mask", m)):
        mask = obs[key]
        if not (bool(mask[:k].all()) and not bool(mask[k:].any())):
            raise ValueError(
                f"{key} flags {int(mask.sum())} entries, not exactly the first {k}: "
                "only an observation padded at the end can be cut"
            )
    return _cut(obs, n, m, batched=False)


class _Split(nn.Module):
    """The extractor's output as (actor latent: the logits, critic latent: the rest)."""

    def __init__(self, n_actions: int, dim: int) -> None:
        super().__init__()
        self.latent_dim_pi, self.latent_dim_vf = n_actions, dim

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        return features[:, : self.latent_dim_pi]

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        return features[:, self.latent_dim_pi :]


class GraphPolicy(MaskableActorCriticPolicy):
    """MaskablePPO's actor-critic over :class:`GraphExtractor` (module doc).

    Args:
        observation_space: ``CoEL-Graph-v0``'s ``Dict`` space.
        action_space: its ``Discrete`` space (must match the observation's maxima).
        lr_schedule: learning-rate schedule (SB3).
        dim: embedding width.
        rounds: message-passing rounds.
        explore_floor: the policy is the mixture ``(1 - explore_floor) * softmax(masked
            scores) + explore_floor * uniform(allowed edits)`` (an epsilon-soft policy:
            every allowed action keeps at least ``explore_floor / allowed`` of the
            probability, so an edit the scores have ruled out early is still tried and
            PPO, which trains this mixture on its own log-probabilities, can learn its
            worth later). 0 (the default): the plain masked softmax. Its mode is the
            argmax of the scores either way.
        explore_kinds: the edit kinds the uniform part covers (None: every action,
            ``commit`` included), e.g. ``[home_add, home_drop, home_move]``; the floor
            then goes to the allowed edits of those kinds (to every allowed action
            where a row has none).
        **kwargs: other ``MaskableActorCriticPolicy`` arguments (``net_arch`` and the
            extractor's are set here).
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        lr_schedule,
        dim: int = 64,
        rounds: int = 2,
        explore_floor: float = 0.0,
        explore_kinds: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        ok = isinstance(explore_floor, int | float) and not isinstance(explore_floor, bool)
        if not ok or not 0.0 <= explore_floor < 1.0:
            raise ValueError(
                f"explore_floor={explore_floor!r} is not allowed; must be a number in [0, 1)"
            )
        self.explore_floor = float(explore_floor)
        self.explore_kinds = None if explore_kinds is None else list(explore_kinds)
        is_dict = isinstance(observation_space, spaces.Dict)
        graph = is_dict and "placement" in observation_space.spaces
        if not graph:
            raise ValueError(
                f"GraphPolicy needs CoEL-Graph-v0's Dict observation space, not {observation_space}"
            )
        sizes = (
            observation_space["server"].shape[0],
            observation_space["model"].shape[0],
            observation_space["group"].shape[1],
        )
        # the layout with or without the home_move block (the env's config)
        need = {EditLayout(*sizes, hm).n: hm for hm in (False, True)}
        n = int(action_space.n) if isinstance(action_space, spaces.Discrete) else None
        if n not in need:
            raise ValueError(
                f"GraphPolicy: the action space {action_space} does not match the "
                f"observation's maxima, which give Discrete({min(need)}) (or "
                f"Discrete({max(need)}) with home_move)"
            )
        kwargs.pop("net_arch", None)
        kwargs["features_extractor_class"] = GraphExtractor
        kwargs["features_extractor_kwargs"] = {"dim": dim, "rounds": rounds,
                                               "home_move": need[n]}  # fmt: skip
        kwargs["ortho_init"] = False  # the extractor keeps torch's default initialisation
        self.dim, self.rounds = dim, rounds
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)
        #: the actions the exploration floor covers (None: every allowed one)
        self.explore_actions = None
        if self.explore_kinds is not None:
            lay = self.features_extractor.layout
            self.explore_actions = th.as_tensor(lay.kind_mask(self.explore_kinds, "explore_kinds"))

    def _build_mlp_extractor(self) -> None:
        fe = self.features_extractor
        self.mlp_extractor = _Split(fe.n_actions, fe.features_dim - fe.n_actions)

    def _build(self, lr_schedule) -> None:
        self._build_mlp_extractor()
        self.action_net = nn.Identity()  # the extractor scores every action itself
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        self.optimizer = self.optimizer_class(
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    # -- the actor on the batch's own edits --------------------------------------------
    # sb3-contrib's methods build the distribution over every action of the layout (3.7k
    # with 64 servers), most of them padding; these build it over the edits of the
    # servers and models the batch uses (GraphExtractor.compact) and map actions between
    # the two. Same log-probabilities, entropies and values up to float rounding.

    def _actor_critic(self, obs, action_masks) -> tuple[_EditDistribution, th.Tensor]:
        feats = preprocess_obs(obs, self.observation_space, self.normalize_images)
        logits, z, sub = self.features_extractor.compact(feats)
        dist = _EditDistribution(
            logits, sub, int(self.action_space.n), action_masks, self.explore_floor,
            self.explore_actions,
        )  # fmt: skip
        return dist, self.value_net(z)

    def forward(self, obs, deterministic: bool = False, action_masks=None):
        dist, values = self._actor_critic(obs, action_masks)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, values, dist.log_prob(actions)

    def evaluate_actions(self, obs, actions: th.Tensor, action_masks=None):
        dist, values = self._actor_critic(obs, action_masks)
        return values, dist.log_prob(actions), dist.entropy()

    def get_distribution(self, obs, action_masks=None) -> _EditDistribution:
        return self._actor_critic(obs, action_masks)[0]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(dim=self.dim, rounds=self.rounds, explore_floor=self.explore_floor,
                    explore_kinds=self.explore_kinds)  # fmt: skip
        for key in ("net_arch", "features_extractor_class", "features_extractor_kwargs",
                    "ortho_init"):  # fmt: skip
            data.pop(key, None)
        return data


class _EditDistribution:
    """The masked categorical over a batch's own edits (:meth:`GraphExtractor.compact`),
    taking and giving actions of the full layout. Built on
    :class:`agents.policies.FusedMultiCategoricalDistribution` (one field). An action
    outside ``sub`` (padding) has log-probability :data:`~agents.policies.MASKED_LOGIT`,
    as a masked one. With ``floor`` > 0 it is the mixture with the uniform distribution
    over the allowed edits (:class:`GraphPolicy`'s ``explore_floor``; of the actions
    flagged in ``explore`` [n] where given)."""

    #: one distribution per number of edits, copied per batch (building one from
    #: scratch costs more than a small batch's forward pass)
    _blank: dict[int, FusedMultiCategoricalDistribution] = {}

    def __init__(
        self, logits: th.Tensor, sub: th.Tensor | None, n: int, masks, floor: float = 0.0,
        explore: th.Tensor | None = None,
    ) -> None:  # fmt: skip
        self.sub, self.n = sub, n
        k = int(logits.shape[1])
        if k not in self._blank:
            self._blank[k] = FusedMultiCategoricalDistribution([k])
        self.dist = copy.copy(self._blank[k])
        self.dist.proba_distribution(logits)
        m = None
        if masks is not None:
            m = th.as_tensor(masks, device=logits.device).reshape(-1, n).to(th.bool)
            m = m if sub is None else m.index_select(1, sub)
            self.dist.apply_masking(m)
        if floor > 0.0:  # the mixture's log-probabilities become the logits
            lp = self.dist.log_probs[:, 0]  # [B, k]; masked about -1e8
            allowed = lp > MASKED_LOGIT / 2
            if explore is not None:
                ex = explore.to(lp.device)
                ex = (ex if sub is None else ex.index_select(0, sub)).unsqueeze(0)
                some = (allowed & ex).any(-1, keepdim=True)
                allowed = allowed & (ex | ~some)  # rows with none of those kinds: all
            n_ok = allowed.sum(-1, keepdim=True).clamp(min=1)
            even = th.where(
                allowed,
                math.log(floor) - th.log(n_ok.to(lp.dtype)),
                th.full_like(lp, MASKED_LOGIT),
            )
            mixed = th.logaddexp(lp + math.log1p(-floor), even)
            self.dist = copy.copy(self._blank[k])
            self.dist.proba_distribution(mixed)
            if m is not None:
                self.dist.apply_masking(m)
        self._inverse: th.Tensor | None = None

    def _compact(self, actions: th.Tensor) -> th.Tensor:
        a = actions.reshape(-1).long()
        if self.sub is None:
            return a
        if self._inverse is None:
            inv = th.full((self.n,), -1, dtype=th.long, device=self.sub.device)
            inv[self.sub] = th.arange(len(self.sub), device=self.sub.device)
            self._inverse = inv
        return self._inverse[a]

    def _full(self, compact: th.Tensor) -> th.Tensor:
        c = compact.reshape(-1)
        return c if self.sub is None else self.sub[c]

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        c = self._compact(actions)
        lp = self.dist.log_prob(c.clamp(min=0))
        return th.where(c >= 0, lp, th.full_like(lp, MASKED_LOGIT))

    def entropy(self) -> th.Tensor:
        return self.dist.entropy()

    def sample(self) -> th.Tensor:
        return self._full(self.dist.sample())

    def mode(self) -> th.Tensor:
        return self._full(self.dist.mode())

    def get_actions(self, deterministic: bool = False) -> th.Tensor:
        return self.mode() if deterministic else self.sample()


def register(algo_cls: type) -> None:
    """Make ``policy: GraphPolicy`` a name ``algo_cls`` (MaskablePPO) accepts."""
    algo_cls.policy_aliases = {**algo_cls.policy_aliases, "GraphPolicy": GraphPolicy}
