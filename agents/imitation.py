"""Imitation warm start: behaviour cloning of a baseline's plans before RL.

    coel train --algo maskable_ppo --env CoEL-v1 --imitate milp-oracle
               [--imitate-episodes 8] [--imitate-epochs 50] [--imitate-passes 20] ...

A deployment policy has to find a good plan *and* then keep it: most epochs of a
good episode are ``update = keep``. From a uniform initial policy, PPO explores
by redeploying at random every epoch, pays migration and drops for it, and
settles on keeping the plan it started with. Starting from a clone of a
baseline's decisions avoids that trap (as in the imitation-then-RL recipe of
AlphaGo and of DQfD / BC-then-PPO in the RL literature):

1. :func:`collect`: the expert (any policy of :mod:`agents.registry`: ``greedy``,
   ``milp-oracle``...) runs ``episodes`` episodes of ``epochs`` epochs in the
   training env (seeds ``DEMO_SEED0 + i``, disjoint from the evaluation seeds); at
   each epoch its plan is *encoded* into the env's action
   (:meth:`coel_env.envs.coel.CoELBaseEnv.encode_plan`: only the version-1 envs,
   whose actions can express the baselines' plans) and that action is stepped, so
   the states are the ones the encoded actions lead to. An encoded choice that the
   env's mask forbids is moved to the first allowed choice (counted as
   ``repaired``). The discounted return-to-go of each state is kept for the critic.
2. :func:`clone`: ``passes`` passes of minibatch Adam over the demonstrations,
   maximising the log-likelihood of the expert's actions under the (masked) policy,
   with the rare epochs where the expert changes its plan weighted up to balance the
   many where it keeps it (:func:`decision_weights`),
   and fitting the value head to the returns-to-go (weight ``vf_coef``), on the
   model's own policy network. With ``VecNormalize``, its observation statistics
   are first updated with the demonstrations' observations.

The demonstrations are saved as ``demonstrations.npz`` in the run folder;
``--imitate PATH.npz`` clones from such a file instead of running the expert again
(an expensive expert such as ``milp-oracle`` then runs once for several runs).

3. ``rounds`` DAgger rounds (Ross et al., AISTATS 2011), optional: the clone
   itself runs ``episodes`` new episodes (seeds after the expert's), the expert
   labels every state the clone reaches with the action it would take there, and
   the clone is fitted again on all demonstrations so far. The expert's own
   episodes never show the states its clone drifts into, nor when to re-plan
   from a plan it would not have chosen; the rounds do.

Then RL continues from the cloned policy as usual; the training's evaluation
also runs before the first RL step, so ``best_model.zip`` is never worse than the
clone on the evaluation seeds. The statistics (expert return, log-likelihood,
share of fields and whole actions the clone reproduces) go to ``imitation.yml``
in the run folder.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Demonstration episodes use seeds from here (evaluation seeds are small integers).
DEMO_SEED0 = 10_000
#: Minibatch size and Adam learning rate of the cloning passes.
BC_BATCH = 256
BC_LR = 1e-3


@dataclass
class Demonstrations:
    """An expert's encoded decisions: one row per epoch."""

    obs: np.ndarray  # [N, dim] float32, as the env returns them
    masks: np.ndarray  # [N, sum(nvec)] bool, the env's action_masks()
    actions: np.ndarray  # [N, fields] int64
    returns: np.ndarray  # [N] discounted return-to-go
    episode_returns: list[float] = field(default_factory=list)
    repaired: int = 0  # encoded choices the mask forbade, moved to an allowed one

    def save(self, path: str | Path) -> None:
        """Write the arrays to ``path`` (``.npz``, no pickled objects)."""
        np.savez_compressed(
            path,
            obs=self.obs,
            masks=self.masks,
            actions=self.actions,
            returns=self.returns,
            episode_returns=np.asarray(self.episode_returns, float),
            repaired=np.asarray(self.repaired),
        )

    @classmethod
    def load(
        cls, path: str | Path, obs_dim: int, nvec: np.ndarray, flag: str = "--imitate"
    ) -> Demonstrations:
        """Read :meth:`save`'s file and check it against the env's spaces (errors name
        ``flag``, the option that gave the file)."""
        try:
            with np.load(path, allow_pickle=False) as d:
                out = cls(
                    obs=d["obs"].astype(np.float32),
                    masks=d["masks"].astype(bool),
                    actions=d["actions"].astype(np.int64),
                    returns=d["returns"].astype(np.float32),
                    episode_returns=[float(r) for r in d["episode_returns"]],
                    repaired=int(d["repaired"]),
                )
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(
                f"{flag} {path}: not a demonstrations file written by a run with --imitate ({exc})"
            ) from None
        n = len(out.obs)
        ok = (
            out.obs.ndim == 2
            and out.obs.shape[1] == obs_dim
            and out.actions.shape == (n, len(nvec))
            and out.masks.shape == (n, int(np.sum(nvec)))
            and out.returns.shape == (n,)
            and n > 0
            and bool(np.all((out.actions >= 0) & (out.actions < nvec)))
        )
        if not ok:
            raise ValueError(
                f"{flag} {path}: demonstrations of observations {out.obs.shape[1:]} and "
                f"actions {out.actions.shape[1:]} do not fit this env (observations "
                f"({obs_dim},), {len(nvec)} action fields)"
            )
        return out


def _check_expert(expert: str) -> None:
    from agents.registry import policy_names

    if expert.endswith(".npz"):
        _check_demos_file(expert, "--imitate")
        return
    known = policy_names()
    if expert not in known and not expert.startswith("ma:"):
        raise ValueError(f"--imitate {expert!r} is not a known policy; known: {', '.join(known)}")


def _check_demos_file(path: str, flag: str) -> None:
    """``path`` (given by ``flag``) must be an existing demonstrations ``.npz`` file."""
    if not str(path).endswith(".npz") or not Path(path).is_file():
        raise ValueError(
            f"{flag} {path}: no such demonstrations file (a .npz that coel train --imitate "
            "saved: demonstrations.npz in its run folder)"
        )


def require_encoding(env_id: str, env) -> None:
    """Raise unless ``env`` (unwrapped) can turn plans into actions (version-1 and -2 envs)."""
    if not hasattr(env.action_type, "encode"):
        raise ValueError(
            f"--imitate needs an env whose actions can express other policies' plans; "
            f"{env_id} cannot (use CoEL-v2, CoEL-v1 or CoEL-InterDevice-v1)"
        )


def collect(
    env_id: str,
    config: Mapping[str, Any],
    expert: str,
    *,
    episodes: int,
    epochs: int,
    gamma: float,
    progress: bool = False,
    actor: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    seed0: int = DEMO_SEED0,
) -> Demonstrations:
    """Run ``expert`` in ``env_id`` and record its encoded decisions (module doc).

    ``actor(obs, mask) -> action``: when given, it chooses the actions that are
    stepped (the expert only labels the states they lead to: a DAgger round)."""
    from agents.base import observe
    from agents.registry import make_policy
    from agents.train import make_env

    _check_expert(expert)
    env = make_env(env_id, config)
    u = env.unwrapped
    try:
        require_encoding(env_id, u)
    except ValueError:
        env.close()
        raise
    nvec = env.action_space.nvec
    cuts = np.cumsum(nvec)[:-1]
    obs_l, mask_l, act_l, ret_l, ep_returns = [], [], [], [], []
    repaired = 0
    controller = int(u.config["controller"])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=episodes * epochs, desc=f"demonstrations ({expert})", file=sys.stderr)
    try:
        for ep in range(episodes):
            seed = seed0 + ep
            obs, _ = env.reset(seed=seed)
            policy = make_policy(expert)
            policy.reset(u.world, seed)
            rewards = []
            for _ in range(epochs):
                mask = u.action_masks()
                plan = policy.act(u.world, observe(policy, u.world, controller))
                a = u.encode_plan(plan)
                for j, allowed in enumerate(np.split(mask, cuts)):
                    if not allowed[a[j]]:
                        a[j] = int(np.flatnonzero(allowed)[0])
                        repaired += 1
                obs_l.append(obs)
                mask_l.append(mask)
                act_l.append(a)
                step = a if actor is None else np.asarray(actor(obs, mask), np.int64)
                obs, r, terminated, truncated, _ = env.step(step)
                rewards.append(float(r))
                if bar is not None:
                    bar.update(1)
                if terminated or truncated:
                    break
            ret, acc = np.zeros(len(rewards)), 0.0
            for t in range(len(rewards) - 1, -1, -1):
                acc = rewards[t] + gamma * acc
                ret[t] = acc
            ret_l.append(ret)
            ep_returns.append(float(sum(rewards)))
    finally:
        if bar is not None:
            bar.close()
        env.close()
    return Demonstrations(
        obs=np.asarray(obs_l, np.float32),
        masks=np.asarray(mask_l, bool),
        actions=np.asarray(act_l, np.int64),
        returns=np.concatenate(ret_l).astype(np.float32),
        episode_returns=ep_returns,
        repaired=repaired,
    )


def concatenate(parts: list[Demonstrations]) -> Demonstrations:
    """One data set of several (e.g. the expert's episodes and DAgger rounds)."""
    return Demonstrations(
        obs=np.concatenate([p.obs for p in parts]),
        masks=np.concatenate([p.masks for p in parts]),
        actions=np.concatenate([p.actions for p in parts]),
        returns=np.concatenate([p.returns for p in parts]),
        episode_returns=[r for p in parts for r in p.episode_returns],
        repaired=sum(p.repaired for p in parts),
    )


def decision_weights(actions: np.ndarray, update_fields: list[int]) -> np.ndarray:
    """Per-sample weights [N] (mean 1) that balance the ``update`` decisions: a good
    expert keeps its plan at most epochs and changes it at a few, and an unweighted
    clone learns to always keep. Each model's ``update`` value gets the same total
    weight; a sample's weight is the mean over models of ``1 / count`` of its value."""
    n = len(actions)
    if not update_fields or n == 0:
        return np.ones(n, np.float32)
    w = np.zeros(n)
    for j in update_fields:
        values, inverse, counts = np.unique(actions[:, j], return_inverse=True,
                                            return_counts=True)  # fmt: skip
        w += 1.0 / (len(values) * counts[inverse])
    return (w / w.mean()).astype(np.float32)


def clone(
    model: Any,
    demos: Demonstrations,
    *,
    passes: int,
    seed: int = 0,
    update_fields: list[int] | None = None,
) -> dict[str, Any]:
    """Fit ``model``'s policy to ``demos`` (module doc); returns the statistics.
    ``update_fields``: indices of the action's ``update`` fields, whose values are
    balanced by :func:`decision_weights` (None: every sample weighs the same)."""
    update_fields = list(update_fields or [])
    import torch
    import torch.nn.functional as F

    policy = model.policy
    masked = type(model).__name__.startswith("Maskable")
    x = demos.obs
    vn = model.get_vec_normalize_env()
    if vn is not None and vn.norm_obs:
        vn.obs_rms.update(x)
        x = vn.normalize_obs(x)
    dev = policy.device
    obs = torch.as_tensor(np.asarray(x, np.float32), device=dev)
    acts = torch.as_tensor(demos.actions, device=dev)
    masks = torch.as_tensor(demos.masks, device=dev)
    rets = torch.as_tensor(demos.returns, device=dev)
    weight = torch.as_tensor(decision_weights(demos.actions, update_fields), device=dev)
    vf_coef = float(getattr(model, "vf_coef", 0.5))
    opt = torch.optim.Adam(policy.parameters(), lr=BC_LR)
    gen = torch.Generator().manual_seed(int(seed))
    n = len(obs)

    def evaluate(idx):
        if masked:
            return policy.evaluate_actions(obs[idx], acts[idx], action_masks=masks[idx])
        return policy.evaluate_actions(obs[idx], acts[idx])

    policy.set_training_mode(True)
    nll = []
    for _ in range(passes):
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(BC_BATCH):
            values, log_prob, _ = evaluate(idx)
            loss = -(weight[idx] * log_prob).mean() + vf_coef * F.mse_loss(
                values.flatten(), rets[idx]
            )
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
            opt.step()
            total += float(-log_prob.detach().sum())
        nll.append(total / n)
    policy.set_training_mode(False)
    with torch.no_grad():
        dist = (
            policy.get_distribution(obs, action_masks=demos.masks)
            if masked
            else policy.get_distribution(obs)
        )
        mode = dist.mode().reshape(acts.shape)
        same = (mode == acts).cpu().numpy()
    return {
        "samples": int(n),
        "passes": int(passes),
        "nll_first_pass": float(nll[0]) if nll else None,
        "nll_last_pass": float(nll[-1]) if nll else None,
        "field_accuracy": float(same.mean()),
        "action_accuracy": float(same.all(axis=1).mean()),
        "change_accuracy": _change_accuracy(same, demos.actions, update_fields),
        "expert_return_mean": float(np.mean(demos.episode_returns)),
        "repaired_choices": int(demos.repaired),
    }


def _change_accuracy(same: np.ndarray, actions: np.ndarray, update_fields: list[int]):
    """Share of the epochs where the expert changes some model's plan that the clone
    reproduces whole (None without update fields or changes)."""
    if not update_fields:
        return None
    change = (actions[:, update_fields] != 0).any(axis=1)
    return float(same[change].all(axis=1).mean()) if change.any() else None
