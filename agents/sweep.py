"""``coel sweep``: a grid of algorithms x envs x scenarios x seeds on Ray Tune.

  coel sweep CONFIG.yaml [--address ADDR] [--out DIR] [--num-cpus N]
             [--connect-timeout S]

Each trial trains with the existing trainers (``coel train`` for ``ppo``,
``a2c``, ``maskable_ppo``, ``dqn``; ``coel train-ma`` for ``ma_ppo``, the
parameter-shared multi-agent PPO) into its own run folder, then evaluates the
result through :mod:`agents.harness` on fixed seeds, and reports the metrics
to Tune. Without ``--address`` a local Ray instance is started (``--num-cpus``
caps it) and shut down at the end; with ``--address`` the trials run on that
cluster (``auto``: the cluster this machine belongs to; ``HOST:PORT``: its GCS
address, as printed by ``ray start --head``; ``ray://HOST:10001``: Ray
Client). An address that cannot be reached within ``--connect-timeout``
seconds is a clear error, and so is a missing Ray (``pip install
'coel-gym[ray]'``, or ``pip install -e '.[ray]'`` in a checkout): Ray is an
optional extra, nothing else imports it.

The config (YAML; unknown keys raise, naming the valid ones; see
``experiments/sweeps/example.yaml``):

==================  =====================================================================
``name``            sweep folder name (default: the file's stem)
``algorithms``      list of ``ppo``, ``a2c``, ``maskable_ppo``, ``dqn``, ``ma_ppo``
``envs``            env ids for the single-agent algorithms (default ``[CoEL-v0]``);
                    ``ma_ppo`` runs once per scenario on ``coel_env.parallel_env``
``scenarios``       presets or YAML paths (default ``[null]``: each env's own; ``ma_ppo``:
                    ``default``)
``seeds``           training seeds (list of integers >= 0)
``timesteps``       training timesteps per trial (``ma_ppo``: agent steps)
``hyperparams``     per algorithm, hyperparameter overrides (``{ppo: {n_steps: 64}}``)
``overrides``       dotted scenario overrides for every trial
``env_config``      other env config keys for every trial (e.g. ``n_groups``)
``eval_seeds``      harness evaluation seeds (default ``[0, 1, 2, 3, 4]``)
``eval_epochs``     epochs per evaluation episode (default: the env's episode length)
``cpus_per_trial``  CPUs Tune reserves for each trial (default 1)
``max_concurrent``  at most this many trials at once (default 0: as resources allow)
==================  =====================================================================

Written to ``--out/<name>`` (default ``runs/sweeps/<name>``; an existing folder is
refused): ``runs/<algo>-<env>-<scenario>-s<seed>/`` (each trial's run folder,
exactly as ``coel train`` / ``coel train-ma`` write it), ``trials.csv`` (one row
per trial: the evaluation means, status, run folder, node, wall time),
``summary.csv`` and ``summary.md`` (per algorithm, env and scenario: mean and
95% confidence half-width over seeds), ``sweep.yml`` (the resolved config),
``command.txt`` and ``tune/`` (Tune's own experiment state).

On a cluster every node must see the output folder at the same path (a
shared file system such as NFS), so run folders written by workers land in
it; the metrics reach the summary through Tune either way, and ``trials.csv``
names the node of each trial.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import shlex
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

#: Algorithms a sweep accepts: ``coel train``'s, and ``ma_ppo`` (``coel train-ma``).
MA_ALGO = "ma_ppo"
#: Config keys and their defaults (None: required).
DEFAULTS: dict[str, Any] = {
    "name": None,
    "algorithms": None,
    "envs": ["CoEL-v0"],
    "scenarios": [None],
    "seeds": None,
    "timesteps": None,
    "hyperparams": {},
    "overrides": {},
    "env_config": {},
    "eval_seeds": [0, 1, 2, 3, 4],
    "eval_epochs": None,
    "cpus_per_trial": 1,
    "max_concurrent": 0,
}
REQUIRED = ("algorithms", "seeds", "timesteps")
#: Metrics of the evaluation kept per trial (means over the evaluation seeds).
TRIAL_METRICS = ("return", "slo_attainment", "latency_p95_ms", "quality_loss", "dropped_share",
                 "migration_gb", "energy_kj", "decision_ms")  # fmt: skip
RAY_MISSING = (
    "coel sweep needs Ray Tune, an optional extra: pip install 'coel-gym[ray]' "
    "(in a checkout: pip install -e '.[ray]')"
)


# ------------------------------------------------------------------------- config


def _int(key: str, v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(
            f"sweep config: {key}={v!r} is not allowed; must be an integer >= {minimum}"
        )
    return v


def _list(key: str, v: Any) -> list:
    if not isinstance(v, list) or not v:
        raise ValueError(f"sweep config: {key}={v!r} is not allowed; must be a non-empty list")
    return v


def load_config(path: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The sweep config (a YAML file or a mapping) over :data:`DEFAULTS`, validated."""
    from agents.train import ALGOS, canonical_env_id

    if isinstance(path, Mapping):
        raw, stem = dict(path), "sweep"
    else:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"sweep config {str(p)!r} does not exist")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            msg = " ".join(str(exc).split())
            raise ValueError(f"sweep config {p}: not valid YAML ({msg})") from None
        stem = p.stem
        if not isinstance(raw, dict):
            raise ValueError(f"sweep config {p}: expected a mapping of keys, got {raw!r}")
    for key in raw:
        if key not in DEFAULTS:
            raise ValueError(
                f"sweep config: unknown key {key!r}; valid keys: {', '.join(DEFAULTS)}"
            )
    missing = [k for k in REQUIRED if raw.get(k) is None]
    if missing:
        raise ValueError(f"sweep config: {missing[0]!r} is required (keys {', '.join(REQUIRED)})")
    cfg = {**DEFAULTS, **raw}
    cfg["name"] = str(cfg["name"] or stem)
    if not cfg["name"] or "/" in cfg["name"] or cfg["name"] in (".", ".."):
        raise ValueError(f"sweep config: name={cfg['name']!r} is not allowed; a folder name")
    known = (*ALGOS, MA_ALGO)
    for a in _list("algorithms", cfg["algorithms"]):
        if a not in known:
            raise ValueError(f"sweep config: algorithms has {a!r}; allowed: {', '.join(known)}")
    cfg["envs"] = [canonical_env_id(e) for e in _list("envs", cfg["envs"])]
    for s in _list("scenarios", cfg["scenarios"]):
        if s is not None and not isinstance(s, str):
            raise ValueError(f"sweep config: scenarios has {s!r}; a preset name, a YAML path "
                             "or null (the env's own)")  # fmt: skip
    for s in _list("seeds", cfg["seeds"]):
        _int("seeds[]", s, 0)
    for s in _list("eval_seeds", cfg["eval_seeds"]):
        _int("eval_seeds[]", s, 0)
    _int("timesteps", cfg["timesteps"], 1)
    if cfg["eval_epochs"] is not None:
        _int("eval_epochs", cfg["eval_epochs"], 1)
    _int("max_concurrent", cfg["max_concurrent"], 0)
    c = cfg["cpus_per_trial"]
    if isinstance(c, bool) or not isinstance(c, int | float) or c <= 0:
        raise ValueError(f"sweep config: cpus_per_trial={c!r} is not allowed; a number > 0")
    for key in ("hyperparams", "overrides", "env_config"):
        if not isinstance(cfg[key], dict):
            raise ValueError(f"sweep config: {key}={cfg[key]!r} is not allowed; a mapping")
    for a, hp in cfg["hyperparams"].items():
        if a not in cfg["algorithms"]:
            raise ValueError(f"sweep config: hyperparams has {a!r}, which is not among the "
                             f"algorithms {cfg['algorithms']}")  # fmt: skip
        if not isinstance(hp, dict):
            raise ValueError(f"sweep config: hyperparams.{a}={hp!r} is not allowed; a mapping")
    return cfg


def trials(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The grid: one dict per trial (``ma_ppo`` runs once per scenario and seed)."""
    from agents.multiagent import ENV_ID

    out, seen = [], set()
    for algo, env, scen, seed in itertools.product(
        cfg["algorithms"], cfg["envs"], cfg["scenarios"], cfg["seeds"]
    ):
        if algo == MA_ALGO:
            env = ENV_ID
        key = (algo, env, scen, seed)
        if key in seen:
            continue
        seen.add(key)
        label = "parallel" if algo == MA_ALGO else env
        scen_name = Path(str(scen)).stem if scen is not None else "env"
        out.append({"algo": algo, "env": env, "scenario": scen, "seed": int(seed),
                    "name": f"{algo}-{label}-{scen_name}-s{seed}"})  # fmt: skip
    return out


# ------------------------------------------------------------------------- one trial


def run_trial(trial: Mapping[str, Any], cfg: Mapping[str, Any], sweep_dir: str) -> dict[str, Any]:
    """Train and evaluate one trial (in whatever process runs it); its metrics."""
    import numpy as np

    from agents import harness

    t0 = time.perf_counter()
    algo, env, scen, seed = trial["algo"], trial["env"], trial["scenario"], trial["seed"]
    run_dir = Path(sweep_dir) / "runs" / trial["name"]
    hp = dict(cfg["hyperparams"].get(algo) or {})
    common = dict(timesteps=int(cfg["timesteps"]), seed=seed, run_dir=run_dir, scenario=scen,
                  overrides=dict(cfg["overrides"]), env_config=dict(cfg["env_config"]),
                  hyperparams=hp)  # fmt: skip
    if algo == MA_ALGO:
        from agents.multiagent import evaluate_model, load_ma_policy, train_ma

        path = train_ma(**common, eval_seeds=cfg["eval_seeds"], eval_epochs=cfg["eval_epochs"])
        policy = load_ma_policy(path)
        eps = evaluate_model(policy.model, policy.config, cfg["eval_seeds"], cfg["eval_epochs"],
                             name=policy.name)  # fmt: skip
    else:
        from agents.evaluate_cli import load_rl_policy
        from agents.train import train

        path = train(algo, env, **common, eval_freq=0, checkpoint_freq=0)
        policy, config, steps = load_rl_policy(path, env)
        eps = harness.evaluate(
            [policy], config["scenario"], list(cfg["eval_seeds"]),
            int(cfg["eval_epochs"] or steps), progress=False,
            overrides=config.get("overrides") or None, reward_config=config,
        )  # fmt: skip
    out = {m: float(np.mean([e.metrics[m] for e in eps])) for m in TRIAL_METRICS}
    out.update(run_dir=str(path), node=socket.gethostname(), wall_s=time.perf_counter() - t0)
    return out


def _trainable(config: dict) -> None:  # a Tune function trainable
    from ray import tune

    tune.report(run_trial(config["trial"], config["sweep"], config["sweep_dir"]))


# ------------------------------------------------------------------------- ray


def _import_ray():
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ValueError(RAY_MISSING) from None
    return ray, tune


def _check_reachable(address: str, timeout_s: float) -> None:
    """A clear error unless ``HOST:PORT`` (or ``ray://HOST:PORT``) accepts a connection."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(
            f"--address {address!r} is not allowed; expected auto, HOST:PORT (the GCS address "
            "that `ray start --head` prints) or ray://HOST:PORT (Ray Client)"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ValueError(
            f"--address {address!r}: no Ray cluster reachable within {timeout_s:g} s ({exc}); "
            "start one with `ray start --head` (workers: `ray start --address HEAD:6379`), or "
            "leave --address out to run on a local Ray instance"
        ) from None


def connect(address: str | None, num_cpus: int | None, timeout_s: float = 10.0) -> bool:
    """Start a local Ray instance (``address`` None) or join a cluster; True when this
    call started Ray (and so should shut it down)."""
    ray, _ = _import_ray()
    if ray.is_initialized():
        return False
    kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address is None:
        ray.init(num_cpus=num_cpus, **kw)
        return True
    _check_reachable(address, timeout_s)
    try:
        ray.init(address=address, **kw)
    except (ConnectionError, RuntimeError, TimeoutError, OSError) as exc:
        raise ValueError(
            f"--address {address!r}: could not join a Ray cluster ({' '.join(str(exc).split())})"
            "; start one with `ray start --head`, or leave --address out for a local Ray"
        ) from None
    return True


def sweep(
    config: str | Path | Mapping[str, Any],
    *,
    out: str | Path = "runs/sweeps",
    address: str | None = None,
    num_cpus: int | None = None,
    connect_timeout_s: float = 10.0,
    argv: list[str] | None = None,
) -> Path:
    """Run the grid of ``config`` on Ray Tune; returns the sweep folder (module docstring)."""
    cfg = load_config(config)
    _import_ray()  # before writing anything
    if num_cpus is not None and (isinstance(num_cpus, bool) or num_cpus < 1):
        raise ValueError(f"--num-cpus {num_cpus!r} is not allowed; must be an integer >= 1")
    if address is not None and num_cpus is not None:
        raise ValueError("--num-cpus applies to a local Ray; a cluster has its own CPUs")
    sweep_dir = (Path(out) / cfg["name"]).resolve()
    if sweep_dir.exists():
        raise ValueError(f"sweep folder {str(sweep_dir)!r} exists; sweeps are never overwritten "
                         "(change name or --out)")  # fmt: skip
    grid = trials(cfg)
    started = connect(address, num_cpus, connect_timeout_s)
    ray, tune = _import_ray()
    try:
        sweep_dir.mkdir(parents=True)
        (sweep_dir / "runs").mkdir()
        (sweep_dir / "sweep.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        cmd = list(argv) if argv is not None else ["python API: agents.sweep.sweep"]
        (sweep_dir / "command.txt").write_text(shlex.join(str(a) for a in cmd) + "\n")
        trainable = tune.with_resources(_trainable, {"cpu": float(cfg["cpus_per_trial"])})
        space = {"trial": tune.grid_search(grid), "sweep": cfg, "sweep_dir": str(sweep_dir)}
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                max_concurrent_trials=cfg["max_concurrent"] or None, reuse_actors=True
            ),
            run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir), verbose=0),
        )
        results = tuner.fit()
        rows = []
        for res in results:
            t = res.config["trial"]
            row = {k: t[k] for k in ("algo", "env", "scenario", "seed")}
            row["status"] = "ok" if res.error is None else f"error: {_one_line(res.error)}"
            m = res.metrics or {}
            row.update({k: m.get(k) for k in (*TRIAL_METRICS, "wall_s", "run_dir", "node")})
            rows.append(row)
    finally:
        if started:
            ray.shutdown()
    order = {t["name"]: i for i, t in enumerate(grid)}
    rows.sort(key=lambda r: order.get(_name(r, grid), 0))
    write_summary(sweep_dir, rows)
    return sweep_dir


def _name(row: Mapping[str, Any], grid) -> str:
    for t in grid:
        if all(t[k] == row[k] for k in ("algo", "env", "scenario", "seed")):
            return t["name"]
    return ""


def _one_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else type(exc).__name__


# ------------------------------------------------------------------------- summary


def write_summary(sweep_dir: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``trials.csv``, and ``summary.csv`` / ``summary.md``: per (algorithm, env, scenario),
    mean and 95% CI half-width over the seeds whose trial succeeded."""
    from agents.harness import mean_ci95

    _csv(sweep_dir / "trials.csv", rows)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["algo"], r["env"], r["scenario"]), []).append(r)
    summary = []
    for (algo, env, scen), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        row = {"algo": algo, "env": env, "scenario": scen, "trials": len(rs), "ok": len(ok)}
        for m in TRIAL_METRICS:
            mean, half = mean_ci95([r[m] for r in ok]) if ok else (float("nan"), 0.0)
            row[f"{m}_mean"], row[f"{m}_ci95"] = mean, half
        summary.append(row)
    _csv(sweep_dir / "summary.csv", summary)
    head = ["algorithm", "env", "scenario", "ok/trials", "return", "SLO attainment",
            "p95 latency [ms]", "quality loss", "dropped share"]  # fmt: skip
    lines = [f"Sweep `{sweep_dir.name}`: evaluation means over seeds (± 95% CI half-width)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for r in summary:
        cells = [r["algo"], r["env"], str(r["scenario"] or "(env's)"), f"{r['ok']}/{r['trials']}"]
        for m in ("return", "slo_attainment", "latency_p95_ms", "quality_loss", "dropped_share"):
            cells.append(f"{r[m + '_mean']:.4g} ± {r[m + '_ci95']:.2g}")
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "Failed trials:", ""]
        lines += [f"- {r['algo']} {r['env']} {r['scenario']} seed {r['seed']}: {r['status']}"
                  for r in failed]  # fmt: skip
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary


def _csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        path.write_text("", encoding="utf-8")
        return
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# ------------------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, metavar="CONFIG.yaml", help="the sweep's grid")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: a local Ray)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/sweeps"), help="parent folder")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to reach --address")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    path = sweep(args.config, out=args.out, address=args.address, num_cpus=args.num_cpus,
                 connect_timeout_s=args.connect_timeout, argv=list(sys.argv))  # fmt: skip
    print((path / "summary.md").read_text(encoding="utf-8"))
    print(f"sweep: {path}", file=sys.stderr)
    failed = sum(1 for r in _read_trials(path) if r.get("status") != "ok")
    return 1 if failed else 0


def _read_trials(path: Path) -> list[dict[str, str]]:
    f = path / "trials.csv"
    if not f.is_file() or not f.stat().st_size:
        return []
    with f.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


__all__ = ["load_config", "trials", "run_trial", "sweep", "write_summary", "connect"]
