"""A fused (masked) multi-categorical action distribution for SB3 and sb3-contrib.

SB3's ``MultiCategoricalDistribution`` and sb3-contrib's
``MaskableMultiCategoricalDistribution`` build one torch ``Categorical`` per action
field at every forward pass (sb3-contrib's masked ones twice: once to build, once to
mask), and compute log-probabilities, entropies and samples field by field. The CoEL
action spaces have 28-184 fields, so that Python loop dominates the learner
(``results/training_benchmark.md``).

:class:`FusedMultiCategoricalDistribution` holds all fields in one padded tensor
``[batch, fields, max_choices]`` and does each of ``log_prob``, ``entropy``,
``sample`` and ``mode`` in a few tensor operations over all fields at once. It
implements both SB3's ``Distribution`` interface (it is a
``MultiCategoricalDistribution``, so :class:`~stable_baselines3.common.policies.ActorCriticPolicy`
builds and calls it unchanged) and sb3-contrib's ``MaskableDistribution``
(``apply_masking``). The numbers are those of the stock classes: a masked choice gets
sb3-contrib's logit ``-1e8``, padding a lower one (``-1e9``, so it never wins, even
in a field whose choices are all masked), and log-probabilities and entropies equal
the stock ones within float32 rounding (``tests/test_fused_distribution.py``).

The policies :class:`FusedActorCriticPolicy` (SB3 ``PPO``, ``A2C``) and
:class:`FusedMaskableActorCriticPolicy` (sb3-contrib ``MaskablePPO``) are the stock
MLP policies with this distribution for ``MultiDiscrete`` action spaces (other
spaces keep the stock distribution, already one tensor op): the same modules,
parameter names, initialisation and random-number use at construction, so a saved
stock model's weights load into them (:func:`to_fused`) and vice versa.

What is not the same: random draws. ``sample`` draws all fields at once (one uniform
number per field, looked up in its cumulative probabilities) instead of one
``torch.multinomial`` call per field, so from the same seed the
sampled actions (and so a trained model) differ from the stock policy's. The
deterministic action (``mode``) is the masked argmax of each field's logits, as the
stock ``argmax`` of the probabilities, except where two choices' probabilities round
to the same float32 value while their logits differ (stock: the first; fused: the
larger logit, as the harness's direct argmax in :class:`agents.rl.RLPolicy`).

``coel train`` selects it by the policy name :data:`FUSED_POLICY`
(``--hyperparams policy=FusedMlpPolicy``, or ``policy: FusedMlpPolicy`` in
``experiments/hyperparams/<algo>.yml``); see :func:`resolve_policy`.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.distributions import MaskableDistribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.distributions import MultiCategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy

#: The policy name that selects the fused policies in ``coel train``'s hyperparameters.
FUSED_POLICY = "FusedMlpPolicy"
#: The logit of a masked choice (sb3-contrib's ``MaskableCategorical``'s value).
MASKED_LOGIT = -1e8
#: The logit of a padding slot: below :data:`MASKED_LOGIT`, so padding never takes
#: probability, even in a field whose real choices are all masked.
PAD_LOGIT = -1e9

SelfFused = TypeVar("SelfFused", bound="FusedMultiCategoricalDistribution")


class FusedMultiCategoricalDistribution(MultiCategoricalDistribution, MaskableDistribution):
    """A (masked) multi-categorical distribution computed over all fields at once.

    The flat logits ``[batch, sum(nvec)]`` of the policy's ``action_net`` are gathered
    into ``[batch, fields, max(nvec)]``; padding and masked choices get constant
    logits (:data:`PAD_LOGIT`, :data:`MASKED_LOGIT`). Drop-in for SB3's
    ``MultiCategoricalDistribution`` and sb3-contrib's
    ``MaskableMultiCategoricalDistribution`` (same ``action_net``, same numbers up to
    float32 rounding; random draws differ, see the module docstring).

    Args:
        action_dims: the number of choices of each field (a ``MultiDiscrete``'s
            ``nvec``; a multi-dimensional ``nvec`` is read in C order, as SB3 does).

    Raises:
        ValueError: no field, or a field with fewer than one choice.
    """

    def __init__(self, action_dims: Any) -> None:
        nvec = np.asarray(action_dims, dtype=np.int64).ravel()
        if nvec.size == 0 or (nvec < 1).any():
            raise ValueError(
                f"action_dims={np.asarray(action_dims).tolist()!r} is not allowed; "
                "must be one or more fields of >= 1 choices each"
            )
        super().__init__([int(n) for n in nvec])
        self.n_fields = int(nvec.size)
        self.max_choices = int(nvec.max())
        self.n_logits = int(nvec.sum())
        cols = np.arange(self.max_choices)
        valid = cols[None, :] < nvec[:, None]  # [fields, max choices]: a real choice
        starts = np.concatenate(([0], np.cumsum(nvec)[:-1]))
        # Padding slots read logit 0 (any column would do): their value is replaced.
        index = np.where(valid, starts[:, None] + cols[None, :], 0)
        self._index = th.as_tensor(index.ravel())
        self._valid = th.as_tensor(valid)
        self._fill: th.Tensor | None = None  # MASKED_LOGIT where valid, else PAD_LOGIT
        self._raw: th.Tensor | None = None  # [batch, fields, max choices], before masks
        self._logits: th.Tensor | None = None  # masked and padded, not normalised
        self._log_p: th.Tensor | None = None  # normalised per field
        self._p: th.Tensor | None = None  # its exp, exactly 0 where not allowed
        self._allowed: th.Tensor | None = None

    # -- building ---------------------------------------------------------------------

    def _to(self, device: th.device, dtype: th.dtype) -> None:
        """Move the layout tensors to the logits' device and dtype (once)."""
        if self._index.device != device:
            self._index = self._index.to(device)
            self._valid = self._valid.to(device)
        if self._fill is None or self._fill.device != device or self._fill.dtype != dtype:
            self._fill = th.where(
                self._valid,
                th.tensor(MASKED_LOGIT, dtype=dtype, device=device),
                th.tensor(PAD_LOGIT, dtype=dtype, device=device),
            )

    def proba_distribution(self: SelfFused, action_logits: th.Tensor) -> SelfFused:
        """Set the distribution's parameters: the flat logits of all fields, without masks.

        Args:
            action_logits: ``[batch, sum(nvec)]`` (or any shape with that many entries
                per row).
        """
        flat = action_logits.reshape(-1, self.n_logits)
        self._to(flat.device, flat.dtype)
        shape = (flat.shape[0], self.n_fields, self.max_choices)
        self._raw = flat.index_select(1, self._index).view(shape)
        self._set_allowed(self._valid)
        return self

    def apply_masking(self, masks: Any) -> None:
        """Mask out choices (sb3-contrib's ``MaskableDistribution`` interface).

        Args:
            masks: booleans (or 0/1 numbers) ``[batch, sum(nvec)]``, True where a
                choice is allowed; None removes earlier masks. Each field should allow
                at least one choice (a field with none samples uniformly over its
                choices, as sb3-contrib's does).
        """
        if self._raw is None:
            raise RuntimeError("apply_masking before proba_distribution: no logits to mask")
        if masks is None:
            self._set_allowed(self._valid)
            return
        m = th.as_tensor(masks, device=self._raw.device)
        m = m.reshape(-1, self.n_logits).to(th.bool)
        allowed = m.index_select(1, self._index).view(-1, self.n_fields, self.max_choices)
        self._set_allowed(allowed & self._valid)

    def _set_allowed(self, allowed: th.Tensor) -> None:
        """``allowed``: ``[batch, fields, max choices]`` or ``[fields, max choices]``."""
        self._logits = th.where(allowed, self._raw, self._fill)
        self._allowed = allowed
        self._log_p = None
        self._p = None

    def _normalise(self) -> None:
        """Log-probabilities and probabilities of every slot, exponentiating only the
        slots that can take probability: ``exp`` of a masked slot's logit (about -1e8)
        underflows, which torch's CPU kernels do ~20x slower than ``exp`` of a normal
        number (``logsumexp`` too), and masked slots are most of a large masked space.
        The numbers are those of ``logits - logsumexp(logits)`` up to float rounding."""
        logits = self._logits
        live = self._allowed.expand_as(logits)
        # a field whose real choices are all masked is uniform over them (sb3-contrib's)
        live = live | (~live.any(-1, keepdim=True) & self._valid)
        top = logits.amax(-1, keepdim=True)  # a live slot's: masked ones are lower
        e = th.where(live, th.where(live, logits - top, 0.0).exp(), 0.0)
        total = e.sum(-1, keepdim=True)
        self._log_p = logits - (top + total.log())
        self._p = e / total

    @property
    def log_probs(self) -> th.Tensor:
        """Per-choice log-probabilities ``[batch, fields, max choices]`` (masked and
        padding slots about -1e8 and -1e9: their probabilities are exactly 0)."""
        if self._logits is None:
            raise RuntimeError("the distribution has no parameters yet: proba_distribution")
        if self._log_p is None:
            self._normalise()
        return self._log_p

    @property
    def probs(self) -> th.Tensor:
        """Per-choice probabilities ``[batch, fields, max choices]`` (exactly 0 where
        masked or padding)."""
        if self._p is None:
            self.log_probs  # noqa: B018 - normalises
        return self._p

    # -- SB3's Distribution interface --------------------------------------------------

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        """The log-probability of each row's joint action (summed over fields).

        Args:
            actions: ``[batch, fields]`` choices (integers, or floats holding integers
                as in SB3's rollout buffer). Not checked against the masks: a masked
                choice has log-probability about -1e8, as in sb3-contrib.
        """
        index = actions.reshape(-1, self.n_fields).long().unsqueeze(-1)
        return self.log_probs.gather(-1, index).squeeze(-1).sum(dim=1)

    def entropy(self) -> th.Tensor:
        """The entropy of each row (summed over fields; masked choices add nothing)."""
        log_p = self.log_probs
        # Masked and padding slots have finite log-probabilities (about -1e8, -1e9) and
        # probabilities of exactly 0, so they add exactly 0 (and no gradient): no where()
        # as sb3-contrib's (whose masked log-probabilities are finite too) is needed.
        return -(self.probs * log_p).sum(-1).sum(dim=1)

    def sample(self) -> th.Tensor:
        """One joint action per row, ``[batch, fields]`` (int64): one uniform draw per
        field, looked up in the field's cumulative probabilities (``torch.multinomial``
        is ~10x slower over thousands of choices). A choice of probability 0 (masked,
        padding) is never drawn: the draw is in (0, total]."""
        probs = self.probs.reshape(-1, self.max_choices)
        cum = probs.cumsum(-1)
        u = (1.0 - th.rand(cum.shape[0], 1, dtype=cum.dtype, device=cum.device)) * cum[:, -1:]
        pick = th.searchsorted(cum, u).clamp_(max=self.max_choices - 1)
        return pick.view(-1, self.n_fields)

    def mode(self) -> th.Tensor:
        """The most likely joint action, ``[batch, fields]``: each field's allowed argmax."""
        if self._logits is None:
            raise RuntimeError("the distribution has no parameters yet: proba_distribution")
        return self._logits.argmax(dim=-1)

    def actions_from_params(
        self, action_logits: th.Tensor, deterministic: bool = False
    ) -> th.Tensor:
        """Set the logits and return actions (the mode if ``deterministic``)."""
        self.proba_distribution(action_logits)
        return self.get_actions(deterministic=deterministic)

    def log_prob_from_params(self, action_logits: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Set the logits, sample actions and return them with their log-probabilities."""
        actions = self.actions_from_params(action_logits)
        return actions, self.log_prob(actions)


def _fused_distribution(policy: Any) -> None:
    """Replace ``policy.action_dist`` by the fused one for a ``MultiDiscrete`` space."""
    if isinstance(policy.action_space, spaces.MultiDiscrete):
        policy.action_dist = FusedMultiCategoricalDistribution(policy.action_space.nvec)


class FusedActorCriticPolicy(ActorCriticPolicy):
    """SB3's ``ActorCriticPolicy`` (``MlpPolicy`` of PPO and A2C) with the fused
    distribution for ``MultiDiscrete`` actions; the same network and parameters."""

    def _build(self, lr_schedule: Any) -> None:
        # Before the stock _build: it builds action_net from the distribution, which
        # gives the same nn.Linear(latent, sum(nvec)) as the stock one.
        _fused_distribution(self)
        super()._build(lr_schedule)


class FusedMaskableActorCriticPolicy(MaskableActorCriticPolicy):
    """sb3-contrib's ``MaskableActorCriticPolicy`` (``MlpPolicy`` of MaskablePPO) with the
    fused distribution for ``MultiDiscrete`` actions; the same network and parameters."""

    def _build(self, lr_schedule: Any) -> None:
        _fused_distribution(self)
        super()._build(lr_schedule)


#: Stock policy class -> its fused counterpart (exact types: the CNN and multi-input
#: variants have other default feature extractors).
FUSED_OF: dict[type, type] = {
    ActorCriticPolicy: FusedActorCriticPolicy,
    MaskableActorCriticPolicy: FusedMaskableActorCriticPolicy,
}


def fused_policy_class(algo_cls: type) -> type:
    """The fused policy class for an algorithm class (``PPO``, ``A2C``, ``MaskablePPO``).

    Raises:
        ValueError: the algorithm's ``MlpPolicy`` has no fused counterpart (DQN).
    """
    stock = getattr(algo_cls, "policy_aliases", {}).get("MlpPolicy")
    if stock not in FUSED_OF:
        raise ValueError(
            f"policy={FUSED_POLICY!r} is not allowed for {algo_cls.__name__}; it is for "
            "PPO, A2C and MaskablePPO (actor-critic policies)"
        )
    return FUSED_OF[stock]


def policy_names(algo_cls: type) -> list[str]:
    """The policy names ``coel train`` accepts for ``algo_cls``: SB3's aliases, and
    :data:`FUSED_POLICY` where it applies."""
    names = set(getattr(algo_cls, "policy_aliases", {}))
    if getattr(algo_cls, "policy_aliases", {}).get("MlpPolicy") in FUSED_OF:
        names.add(FUSED_POLICY)
    return sorted(names)


def resolve_policy(algo_cls: type, name: str) -> type:
    """The policy class of the policy ``name`` for ``algo_cls``.

    Args:
        algo_cls: ``PPO``, ``A2C``, ``MaskablePPO`` or ``DQN``.
        name: one of SB3's aliases (``MlpPolicy``...) or :data:`FUSED_POLICY`.

    Raises:
        ValueError: ``policy=NAME is not allowed; known: ...``.
    """
    if name == FUSED_POLICY:
        return fused_policy_class(algo_cls)
    aliases = getattr(algo_cls, "policy_aliases", {})
    if not isinstance(name, str) or name not in aliases:
        raise ValueError(
            f"policy={name!r} is not allowed; known: {', '.join(policy_names(algo_cls))}"
        )
    return aliases[name]


def to_fused(model: Any) -> Any:
    """Give ``model``'s policy the fused distribution, in place; returns ``model``.

    The policy keeps its modules, parameters and optimizer state (nothing is rebuilt
    or re-initialised, and no random numbers are drawn): only its action distribution
    and its class change, to the fused counterpart, so ``predict``, evaluation and
    further training continue from the same weights, and ``model.save`` records the
    fused class. A model whose policy is fused already is returned as it is.

    Args:
        model: an SB3 ``PPO`` / ``A2C`` or sb3-contrib ``MaskablePPO`` model whose policy
            is the stock ``MlpPolicy`` (e.g. a published ``results/policies/*/model.zip``
            loaded with :func:`agents.train.load_policy`).

    Raises:
        ValueError: the policy is not a stock actor-critic ``MlpPolicy``.
    """
    policy = model.policy
    if type(policy) in FUSED_OF.values():
        return model
    cls = FUSED_OF.get(type(policy))
    if cls is None:
        raise ValueError(
            f"the policy {type(policy).__name__} has no fused counterpart; known: "
            f"{', '.join(c.__name__ for c in FUSED_OF)}"
        )
    _fused_distribution(policy)
    # The fused class only differs in _build (which ran already): switching the class
    # of the built policy keeps every module and tensor as they are.
    policy.__class__ = cls
    model.policy_class = cls
    return model
