"""A rollout buffer for dict observations whose minibatches cost one copy, not two.

sb3-contrib's :class:`~sb3_contrib.common.maskable.buffers.MaskableDictRolloutBuffer`
makes every minibatch by indexing each numpy array (a copy) and passing the result to
``torch.tensor`` (a second copy). ``CoEL-Graph-v0``'s observation is padded to its maxima
(three 64 x 64 link matrices per sample, and 3,689 action masks), so those copies took
~13% of MaskablePPO's learner (``results/training_benchmark_graph.md``).
:class:`TorchMaskableDictRolloutBuffer` takes zero-copy torch views of the flattened
arrays once per rollout and cuts each minibatch with ``index_select``: the same samples
in the same order (the same permutation from numpy's global generator), bit for bit.
``coel train`` uses it for MaskablePPO with ``GraphPolicy``
(:func:`agents.train.algos._model_kwargs`).
"""

from __future__ import annotations

import numpy as np
import torch as th
from sb3_contrib.common.maskable.buffers import (
    MaskableDictRolloutBuffer,
    MaskableDictRolloutBufferSamples,
)

__all__ = ["TorchMaskableDictRolloutBuffer"]

_FIELDS = ("actions", "values", "log_probs", "advantages", "returns", "action_masks")


class TorchMaskableDictRolloutBuffer(MaskableDictRolloutBuffer):
    """:class:`MaskableDictRolloutBuffer` whose minibatches are ``index_select`` copies of
    torch views of the flattened rollout (CPU; on another device the parent's path)."""

    def reset(self) -> None:
        super().reset()
        self._views: tuple[dict[str, th.Tensor], dict[str, th.Tensor]] | None = None

    def _get_samples(self, batch_inds: np.ndarray, env=None) -> MaskableDictRolloutBufferSamples:
        if env is not None or self.device.type != "cpu":
            return super()._get_samples(batch_inds, env)
        if self._views is None:  # get() has flattened the arrays in place: view them once
            obs = {k: th.from_numpy(np.ascontiguousarray(v)) for k, v in self.observations.items()}
            rest = {f: th.from_numpy(np.ascontiguousarray(getattr(self, f))) for f in _FIELDS}
            self._views = (obs, rest)
        obs, rest = self._views
        idx = th.from_numpy(np.asarray(batch_inds, dtype=np.int64))
        return MaskableDictRolloutBufferSamples(
            observations={k: v.index_select(0, idx) for k, v in obs.items()},
            actions=rest["actions"].index_select(0, idx),
            old_values=rest["values"].index_select(0, idx).flatten(),
            old_log_prob=rest["log_probs"].index_select(0, idx).flatten(),
            advantages=rest["advantages"].index_select(0, idx).flatten(),
            returns=rest["returns"].index_select(0, idx).flatten(),
            action_masks=rest["action_masks"].index_select(0, idx).reshape(-1, self.mask_dims),
        )
