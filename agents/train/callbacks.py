"""SB3 callbacks of ``coel train``: metrics, progress bar, checkpoints, seeded evaluation."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Metrics read from ``info`` and logged to TensorBoard under ``coel/``.
INFO_METRICS = ("slo_attainment", "latency_p95_ms", "quality_loss", "migration_bytes", "energy_j")


def _callbacks_module():
    """Callback classes, defined lazily so that importing this module stays light."""
    global _CB
    if _CB is not None:
        return _CB
    from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class CoELMetricsCallback(BaseCallback):
        """Logs the env's ``info`` metrics: rollout means and finished-episode means."""

        def _on_training_start(self) -> None:
            n = self.training_env.num_envs
            self._ep_sums = [dict.fromkeys((*INFO_METRICS, "invalid_actions"), 0.0)
                             for _ in range(n)]  # fmt: skip
            self._ep_len = [0] * n
            self._reset()

        def _reset(self) -> None:
            self._sums = dict.fromkeys((*INFO_METRICS, "invalid_actions"), 0.0)
            self._counts = dict.fromkeys(self._sums, 0)

        def _on_rollout_start(self) -> None:
            self._reset()

        def _on_step(self) -> bool:
            infos = self.locals.get("infos") or []
            dones = self.locals.get("dones")
            for i, info in enumerate(infos):
                values = {k: info[k] for k in INFO_METRICS if k in info}
                if "invalid_action" in info:
                    values["invalid_actions"] = float(bool(info["invalid_action"]))
                for k, v in values.items():
                    self._sums[k] += float(v)
                    self._counts[k] += 1
                    self._ep_sums[i][k] += float(v)
                self._ep_len[i] += 1
                if dones is not None and bool(dones[i]):
                    for k, v in self._ep_sums[i].items():
                        if self._ep_len[i]:
                            self.logger.record_mean(f"coel/episode_{k}", v / self._ep_len[i])
                    self._ep_sums[i] = dict.fromkeys(self._ep_sums[i], 0.0)
                    self._ep_len[i] = 0
            return True

        def _on_rollout_end(self) -> None:
            for k, total in self._sums.items():
                if self._counts[k]:
                    self.logger.record(f"coel/{k}", total / self._counts[k])

    class TqdmCallback(BaseCallback):
        """A tqdm progress bar over the timesteps (SB3's needs rich)."""

        def _on_training_start(self) -> None:
            from tqdm.auto import tqdm

            total = int(self.locals["total_timesteps"])
            self.bar = tqdm(
                total=total, initial=self.model.num_timesteps, unit="step", file=sys.stderr
            )

        def _on_step(self) -> bool:
            self.bar.update(self.model.num_timesteps - self.bar.n)
            return True

        def _on_training_end(self) -> None:
            self.bar.update(self.model.num_timesteps - self.bar.n)
            self.bar.close()

    def _due(cb, every: int) -> bool:
        """True when the step count crossed a multiple of ``every`` (steps, not calls)."""
        n = cb.model.num_timesteps
        if n >= cb._next_due:
            cb._next_due = (n // every + 1) * every
            return True
        return False

    class StepCheckpointCallback(CheckpointCallback):
        """CheckpointCallback every ``every`` timesteps (aligned across resumes)."""

        def __init__(self, every: int, **kwargs) -> None:
            super().__init__(save_freq=1, **kwargs)
            self.every = every

        def _init_callback(self) -> None:
            super()._init_callback()
            self._next_due = (self.model.num_timesteps // self.every + 1) * self.every

        def _on_step(self) -> bool:
            return super()._on_step() if _due(self, self.every) else True

    class SaveVecNormalizeOnBest(BaseCallback):
        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

        def _on_step(self) -> bool:
            vn = self.model.get_vec_normalize_env()
            if vn is not None:
                vn.save(str(self.path))
            return True

    def seeded_eval(base: type) -> type:
        class SeededEval(base):
            """Evaluates on fixed seeds every ``every`` steps and once at the end; keeps the
            history of a resumed run's ``evaluations.npz``."""

            def __init__(
                self, *args, every: int, seeds: Sequence[int], at_start: bool = False, **kwargs
            ) -> None:
                super().__init__(*args, eval_freq=1, **kwargs)
                self.every = every
                self.seeds = [int(s) for s in seeds]
                self.at_start = at_start  # also before the first step (a cloned policy)
                self._last_eval = None

            def _on_training_start(self) -> None:
                super()._on_training_start()
                if self.at_start:
                    self.num_timesteps = self.model.num_timesteps
                    self._evaluate()

            def _init_callback(self) -> None:
                super()._init_callback()
                self._next_due = (self.model.num_timesteps // self.every + 1) * self.every
                old = Path(self.log_path + ".npz") if self.log_path else None
                if old is not None and old.is_file():
                    with np.load(old) as d:
                        self.evaluations_timesteps = [int(t) for t in d["timesteps"]]
                        self.evaluations_results = [list(r) for r in d["results"]]
                        self.evaluations_length = [list(r) for r in d["ep_lengths"]]
                    if self.evaluations_results:
                        means = [float(np.mean(r)) for r in self.evaluations_results]
                        self.best_mean_reward = max(means)

            def _evaluate(self) -> bool:
                venv = self.eval_env
                while isinstance(venv, VecEnvWrapper):
                    venv = venv.venv
                venv._seeds = list(self.seeds)
                self._last_eval = self.model.num_timesteps
                return super()._on_step()

            def _on_step(self) -> bool:
                return self._evaluate() if _due(self, self.every) else True

            def _on_training_end(self) -> None:
                self.num_timesteps = self.model.num_timesteps
                if self._last_eval != self.model.num_timesteps:
                    self._evaluate()
                super()._on_training_end()

        return SeededEval

    class _NS:
        pass

    ns = _NS()
    ns.CoELMetricsCallback = CoELMetricsCallback
    ns.TqdmCallback = TqdmCallback
    ns.StepCheckpointCallback = StepCheckpointCallback
    ns.SaveVecNormalizeOnBest = SaveVecNormalizeOnBest
    ns.seeded_eval = seeded_eval
    _CB = ns
    return ns


_CB = None
