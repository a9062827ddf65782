"""``coel train``: train an SB3 / sb3-contrib agent on a CoEL environment.

  coel train --algo {ppo,a2c,maskable_ppo,dqn} --env ID [--scenario NAME|FILE]
             [--set K=V ...] [--env-config K=V ...] [--timesteps N] [--seed S]
             [--n-envs K] [--vec {dummy,subproc}] [--normalize | --no-normalize]
             [--hyperparams KEY=VALUE ...] [--eval-freq N] [--eval-episodes N]
             [--eval-seeds S ...] [--checkpoint-freq N] [--torch-threads N]
             [--distribution-checks] [--imitate POLICY|FILE.npz
             [--imitate-episodes N] [--imitate-epochs N] [--imitate-passes N]
             [--imitate-rounds N] [--imitate-demos FILE.npz]]
             [--run-dir DIR | --runs-root DIR] [--progress | --no-progress]
  coel train --resume RUN_DIR [--timesteps N]

Algorithms: ``ppo`` and ``a2c`` (stable-baselines3), ``maskable_ppo``
(sb3-contrib MaskablePPO; the masks come from the env's ``action_masks()``,
through ``env_method("action_masks")`` of the vector env) and ``dqn``. DQN
needs a Discrete action space; the CoEL spaces are MultiDiscrete, so a
MultiDiscrete space is flattened into ``Discrete(prod(nvec))`` (the
:class:`FlattenMultiDiscrete` wrapper) only when that product is at most
``DQN_MAX_ACTIONS`` (4096); otherwise ``dqn`` raises a ValueError naming the
space (the registered envs with their default ``n_groups=4`` are all above it;
``--env-config n_groups=2`` brings CoEL-IntraDevice-v0 down to 450 actions).

Environments: ``CoEL-v2`` (the current one), ``CoEL-v1``, ``CoEL-v0``,
``CoEL-InterDevice-v1``, ``CoEL-InterDevice-v0`` and ``CoEL-IntraDevice-v0`` (also
with the ``coel_env/`` prefix). ``--scenario`` replaces the env's scenario,
``--set K=V`` adds a dotted scenario override (config ``overrides``; V parsed as
YAML), ``--env-config K=V`` sets any other env config key (``n_groups``, reward
weights...).

``--imitate POLICY|FILE.npz`` first clones a baseline's plans into the policy
(:mod:`agents.imitation`; envs whose actions can express them: ``CoEL-v2``,
``CoEL-v1``, ``CoEL-InterDevice-v1``; not DQN): POLICY (a name of ``coel baselines
--policies``, e.g. ``static-homes``, ``greedy``, ``milp-oracle``) runs
``--imitate-episodes`` episodes of ``--imitate-epochs`` epochs, or FILE.npz (the
``demonstrations.npz`` of an earlier run) gives the demonstrations; the clone is fitted
in ``--imitate-passes`` passes over them. ``--imitate-rounds N`` adds N DAgger rounds
(the clone acts, POLICY labels the states it reaches); ``--imitate-demos FILE.npz``
starts from saved demonstrations instead of POLICY's episodes (POLICY still labels the
rounds). The run folder keeps ``demonstrations.npz`` and ``imitation.yml``.

Hyperparameters come from ``experiments/hyperparams/<algo>.yml``
(rl-baselines3-zoo style): the entry of the env id, else ``default``; then
``--hyperparams KEY=VALUE`` (VALUE parsed with ``yaml.safe_load``, e.g.
``--hyperparams n_steps=64 'policy_kwargs={net_arch: [32, 32], activation_fn:
tanh}'``). Keys are the algorithm constructor's arguments (an unknown key
raises, listing the valid ones) plus ``n_envs`` and ``normalize`` (``true``:
VecNormalize on observations only; a mapping such as ``{norm_reward: true}``
for VecNormalize's own arguments). ``policy_kwargs.activation_fn`` and
``optimizer_class`` are names from a small allowlist (``tanh``, ``relu``...;
``adam``...), never evaluated code; ``learning_rate``, ``clip_range`` and the
like accept ``lin_<value>`` for a linear decay to 0. ``--n-envs`` and
``--normalize`` win over the files. ``policy: FusedMlpPolicy`` (``--hyperparams
policy=FusedMlpPolicy``; ppo, a2c, maskable_ppo) is the stock ``MlpPolicy`` network
with :mod:`agents.policies`' fused action distribution (one tensor op over all action
fields instead of one torch ``Categorical`` each: a faster learner; other random draws,
so other weights than ``MlpPolicy`` from the same seed); ``load_policy(...,
fused=True)`` gives a saved ``MlpPolicy`` model the fused distribution.

Seeds: ``--seed`` seeds Python's ``random``, numpy and torch
(``set_random_seed``), the model and the training envs (env ``i`` gets
``seed + i``). Evaluation runs one episode per ``--eval-seeds`` seed (default
0..4; or 0..N-1 with ``--eval-episodes N``) on a separate env, the same seeds
at every evaluation, every ``--eval-freq`` steps and once at the end; it keeps
``best_model.zip``. With the same seed, algorithm and settings on one
``DummyVecEnv`` (CPU), two runs give identical parameters.

The run folder (never overwritten): ``--run-dir DIR`` (must not exist) or
``<runs-root>/<algo>-<env>-<YYYYmmdd-HHMMSS>-s<seed>`` (default root ``runs``).
It holds ``config.yml`` (the resolved env config with the ``id``),
``args.yml``, ``command.txt`` (the argv, one line per start or resume),
``seed``, ``versions.yml`` (python, numpy, torch, gymnasium, SB3,
sb3-contrib, coel-gym, git commit and dirty flag when available),
``hyperparams.yml`` (resolved), ``model.zip`` (final), ``vecnormalize.pkl``
(with normalisation), ``best_model.zip`` and ``vecnormalize_best.pkl``,
``evaluations.npz`` (EvalCallback's), ``checkpoints/model_<N>_steps.zip`` with
``checkpoints/model_vecnormalize_<N>_steps.pkl`` every ``--checkpoint-freq``
steps, and ``tb/`` (TensorBoard: SB3's scalars plus ``coel/slo_attainment``,
``coel/latency_p95_ms``, ``coel/quality_loss``, ``coel/migration_bytes``,
``coel/energy_j`` and ``coel/invalid_actions``, means over each rollout, and
``coel/episode_*`` means over finished episodes).

Ctrl-C during training saves ``model.zip`` (and the normaliser) and a
checkpoint, prints where, and exits with status 130. ``--resume RUN_DIR``
continues from the last checkpoint of that folder (model and normaliser, the
step count kept, TensorBoard appended, every other option taken from the
run's files) until the run's ``--timesteps`` (from its args.yml, or a new
``--timesteps``, which extends a finished run) is reached. A finished run
also leaves a checkpoint at its last step. DQN's replay buffer is not
checkpointed: a resumed DQN starts with an empty buffer.

Threads: the policies are small MLPs and the env dominates, so torch runs on
``--torch-threads 1`` by default (0: torch's default). More threads also
starve ``--vec subproc`` workers: torch's OpenMP threads spin-wait between
calls, which made a 2-core machine's subprocess evaluation 20x slower.

Python API: :func:`train`, :func:`resume`, :func:`load_policy`,
:func:`check_spaces`, :func:`make_env`.

Safety: model zips and ``.pkl`` normaliser files unpickle Python objects
(SB3's ``load`` reads the weights with ``torch.load(weights_only=True)`` but
other saved data with cloudpickle): load only files you trust.
"""

# The package by concern (imports point one way: runs <- algos, envs <- callbacks,
# loading <- loop <- cli):
#   algos      algorithms, hyperparameters, --hyperparams parsing, distribution_checks
#   envs       env ids, the DQN action wrapper, single and vector envs
#   callbacks  SB3 callbacks (metrics, progress, checkpoints, seeded evaluation)
#   runs       run folders: YAML files, versions, new folders, checkpoints
#   loop       train, resume, the training loop, imitation before RL
#   loading    load_policy, check_spaces, model zips and normalisers
#   cli        add_arguments, main (``coel train``)
# Names used elsewhere (agents.multiagent, tests, experiments) stay importable from
# ``agents.train``, the private ones included.

from __future__ import annotations

from agents.train.algos import (
    ALGOS,
    EXTRA_KEYS,
    HYPERPARAMS_DIR,
    RESERVED_KEYS,
    SCHEDULE_KEYS,
    _activations,
    _model_kwargs,
    _normalize_kwargs,
    _optimizers,
    _policy_kwargs,
    _schedule,
    _valid_keys,
    algo_class,
    distribution_checks,
    load_hyperparams,
    parse_hyperparams,
    parse_kv,
    resolve_hyperparams,
)
from agents.train.callbacks import INFO_METRICS, _callbacks_module
from agents.train.cli import add_arguments, main
from agents.train.envs import (
    DQN_MAX_ACTIONS,
    FlattenMultiDiscrete,
    _dqn_wrapper_needed,
    _make_vec,
    _probe_env,
    canonical_env_id,
    make_env,
)
from agents.train.loading import (
    _guess_algo,
    _load_model,
    _load_vecnormalize,
    _zip_data,
    _zip_num_timesteps,
    _zip_policy_module,
    check_spaces,
    load_policy,
)
from agents.train.loop import (
    DEFAULT_EVAL_SEEDS,
    TrainingInterrupted,
    _check_encodable,
    _check_int,
    _eval_seeds,
    _imitate,
    _run,
    _save_checkpoint,
    _save_final,
    _train_loop,
    resume,
    train,
)
from agents.train.runs import (
    _command_line,
    _new_run_dir,
    _plain,
    _read_yaml,
    _vecnormalize_for,
    _write_yaml,
    checkpoints,
    versions,
)

__all__ = [
    "ALGOS",
    "DEFAULT_EVAL_SEEDS",
    "DQN_MAX_ACTIONS",
    "EXTRA_KEYS",
    "HYPERPARAMS_DIR",
    "INFO_METRICS",
    "RESERVED_KEYS",
    "SCHEDULE_KEYS",
    "FlattenMultiDiscrete",
    "TrainingInterrupted",
    "add_arguments",
    "algo_class",
    "canonical_env_id",
    "check_spaces",
    "checkpoints",
    "distribution_checks",
    "load_hyperparams",
    "load_policy",
    "main",
    "make_env",
    "parse_hyperparams",
    "parse_kv",
    "resolve_hyperparams",
    "resume",
    "train",
    "versions",
    # private helpers, importable from here as before (agents.multiagent, tests, experiments)
    "_activations",
    "_callbacks_module",
    "_check_encodable",
    "_check_int",
    "_command_line",
    "_dqn_wrapper_needed",
    "_eval_seeds",
    "_guess_algo",
    "_imitate",
    "_load_model",
    "_load_vecnormalize",
    "_make_vec",
    "_model_kwargs",
    "_new_run_dir",
    "_normalize_kwargs",
    "_optimizers",
    "_plain",
    "_policy_kwargs",
    "_probe_env",
    "_read_yaml",
    "_run",
    "_save_checkpoint",
    "_save_final",
    "_schedule",
    "_train_loop",
    "_valid_keys",
    "_vecnormalize_for",
    "_write_yaml",
    "_zip_data",
    "_zip_num_timesteps",
    "_zip_policy_module",
]
