"""Scenarios: YAML presets (``default``, ``large``, ``static``, ...) plus user overrides.

A scenario is a tree of frozen dataclasses. :func:`load_scenario` reads a
preset name or a YAML file, applies overrides (a nested dict, or dotted keys
such as ``{"workload.rate_per_s": 4.0}``) and validates every key: an unknown
key raises a ``ValueError`` that names it and lists the valid ones.

Data files (``topology.path``, ``topology.users_path``, ``workload.trace``,
``routing.esft_dir``, ``routing.fiddler_dir``) may start with ``${COEL_DATA}``:
the folder of the public data sets, which the user gives as the ``COEL_DATA``
environment variable (docs/data.md says where to get them), so that presets built
on real data name no machine's paths.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from coel_env.catalog import model_names
from coel_env.core.dynamics import DynamicsConfig
from coel_env.core.evaluation import ACTIVATION_TRAFFIC, PRUNING, QUANT_SCALING, SERVING_MODES
from coel_env.core.perception import PerceptionConfig
from coel_env.core.updating import UpdatingConfig
from coel_env.cost import LAYER_TERMS


@dataclass(frozen=True)
class TopologyConfig:
    """Where the servers are and what they are.

    Attributes:
        kind: ``random_geometric``, ``waxman``, ``graphml`` or ``eua``.
        n_servers: servers for generated topologies and the EUA subset.
        device_mix: GPU profile name -> weight; each server draws its GPU.
        path: GraphML file (``graphml``) or EUA sites CSV (``eua``).
        users_path: EUA users CSV (optional; weights request origins).
        radius: connection radius of ``random_geometric`` (unit square).
        area_km: side of the square the generators place servers in [km].
        waxman_alpha: Waxman alpha.
        waxman_beta: Waxman beta.
        k_nearest: EUA: links to the k nearest servers.
        link_gbit_s: bandwidth range of generated links [Gbit/s].
        default_latency_ms: GraphML: one-way latency of links with an end that has no
            coordinates [ms]; None uses the median of the located links (a file without
            any coordinates needs it).
    """

    kind: str = "random_geometric"
    n_servers: int = 5
    device_mix: Mapping[str, float] = field(
        default_factory=lambda: {"l4": 0.4, "rtx-4090": 0.2, "jetson-agx-orin-64gb": 0.4}
    )
    path: str | None = None
    users_path: str | None = None
    radius: float = 0.6
    area_km: float = 20.0
    waxman_alpha: float = 0.4
    waxman_beta: float = 0.4
    k_nearest: int = 3
    link_gbit_s: tuple[float, float] = (1.0, 10.0)
    default_latency_ms: float | None = None

    def __post_init__(self) -> None:
        kinds = ("random_geometric", "waxman", "graphml", "eua")
        if self.kind not in kinds:
            raise ValueError(f"topology.kind={self.kind!r} is not allowed; allowed: {kinds}")
        if self.kind in ("graphml", "eua") and not self.path:
            raise ValueError(f"topology.path is required for topology.kind={self.kind!r}")
        _positive("topology.n_servers", self.n_servers, integer=True)
        if self.default_latency_ms is not None:
            _positive("topology.default_latency_ms", self.default_latency_ms)
        if not self.device_mix:
            raise ValueError("topology.device_mix is empty; name at least one GPU profile")


@dataclass(frozen=True)
class CloudConfig:
    """An optional cloud node (an H200 server, our measured profile) behind a WAN link.

    Attributes:
        enabled: add the cloud node.
        wan_latency_ms: one-way latency edge -> cloud [ms] (tens of ms: assumed typical
            metro-to-regional-datacentre latency).
        wan_gbit_s: WAN bandwidth per edge server [Gbit/s] (assumed).
        cost_per_1k_tokens: price of a thousand tokens served in the cloud [$] (assumed,
            the order of hosted open-model APIs).
    """

    enabled: bool = False
    wan_latency_ms: float = 30.0
    wan_gbit_s: float = 1.0
    cost_per_1k_tokens: float = 0.0005


@dataclass(frozen=True)
class WorkloadSection:
    """Requests.

    Attributes:
        kind: ``synthetic``, ``azure`` or ``generic`` (a CSV trace by ``trace``).
        trace: path of the trace file for ``azure`` / ``generic``.
        time_scale: multiplies trace inter-arrival times.
        sort: sort a trace whose timestamps go back (stably, with a warning) instead of
            refusing it.
        loop: replay the trace again when it ends (period: last arrival plus the mean
            gap); False leaves later epochs empty.
        rate_per_s: mean request rate per edge server [1/s] (synthetic).
        diurnal_amplitude: relative amplitude of a daily rate cycle [0-1).
        diurnal_period_s: the cycle's period [s] (86400: a day; a shorter one
            compresses the day into fewer epochs).
        diurnal_phase_rad: the cycle's phase at ``t = 0`` [rad]: the rate multiplier is
            ``1 + A sin(2 pi t / period + phase)`` (``-pi/2``: an episode starts at the
            trough).
        tasks: task types; routing popularity depends on them.
        ttft_ms: time-to-first-token part of a request's SLO [ms].
        tpot_ms: per-output-token part of the SLO [ms]: a request's end-to-end SLO
            is ``ttft_ms + output_tokens * tpot_ms`` (defaults: see
            ``coel_env.core.workload.SloConfig``).
        quality_floor: the largest quality loss a request tolerates.
    """

    kind: str = "synthetic"
    trace: str | None = None
    time_scale: float = 1.0
    sort: bool = False
    loop: bool = True
    rate_per_s: float = 0.06
    diurnal_amplitude: float = 0.0
    diurnal_period_s: float = 86400.0
    diurnal_phase_rad: float = 0.0
    tasks: tuple[str, ...] = ("intent", "law", "summary", "translation")
    ttft_ms: float = 2500.0
    tpot_ms: float = 150.0
    quality_floor: float = 0.05

    def __post_init__(self) -> None:
        kinds = ("synthetic", "azure", "generic")
        if self.kind not in kinds:
            raise ValueError(f"workload.kind={self.kind!r} is not allowed; allowed: {kinds}")
        if self.kind != "synthetic" and not self.trace:
            raise ValueError(f"workload.trace is required for workload.kind={self.kind!r}")
        if not isinstance(self.sort, bool):
            raise ValueError(f"workload.sort={self.sort!r} is not allowed; must be true or false")
        _positive("workload.rate_per_s", self.rate_per_s)
        _positive("workload.ttft_ms", self.ttft_ms)
        _positive("workload.tpot_ms", self.tpot_ms)
        _positive("workload.diurnal_period_s", self.diurnal_period_s)
        ph = self.diurnal_phase_rad
        if isinstance(ph, bool) or not isinstance(ph, int | float) or not math.isfinite(ph):
            raise ValueError(
                f"workload.diurnal_phase_rad={ph!r} is not allowed; must be a finite number"
            )
        if not 0 <= self.diurnal_amplitude < 1:
            raise ValueError(
                f"workload.diurnal_amplitude={self.diurnal_amplitude!r} is not allowed; "
                "must be in [0, 1)"
            )


@dataclass(frozen=True)
class RoutingSection:
    """Which experts tokens use.

    Attributes:
        drift: popularity drifts over time.
        esft_dir: folder of the DeepSeek-V2-Lite ESFT routes (real data, optional).
        fiddler_dir: the Mixtral Fiddler data folder, holding ``popularity_original/``
            (real data, optional).
    """

    drift: bool = True
    esft_dir: str | None = None
    fiddler_dir: str | None = None


@dataclass(frozen=True)
class ServingConfig:
    """How servers run models.

    Attributes:
        mode: the serving runtime: ``fused`` (the default: a fused-kernel runtime as
            llama.cpp, MLC or vLLM's fused MoE kernel, which edge deployments run: a
            layer's routed experts in one kernel, their weights read at an efficiency
            calibrated on published llama.cpp decode rates, everything else as in
            ``cudagraph``; :data:`coel_env.core.evaluation.FUSED_BW_EFFICIENCY`),
            ``eager`` PyTorch (the runtime the shipped profiles measured, kernels with
            their host dispatch, as a PyTorch research prototype runs them) or
            ``cudagraph`` (the same kernels replayed from CUDA graphs: the measured H200
            graph rows, no dispatch floor).
        kv_reserve_gb: GPU memory each home server reserves for a model's KV cache [GB].
        host_memory_gb: host memory of an edge server with a discrete GPU [GB].
        store_gbit_s: bandwidth from the model store for weights no server holds [Gbit/s].
        layer_terms: how an MoE layer's router and dispatch are costed:
            ``first-principles`` (the default; kernel counts through the expert fits) or
            ``calibrated`` (terms fitted to whole measured layers, eager mode only, so
            not with the default ``fused`` mode;
            :func:`coel_env.cost.layer_fit`).
        max_queue_s: a request that would wait behind more than this much queued
            work at its home is dropped [s of work]; with continuous batching, a request
            still waiting to join its home's batch this long after it arrived is dropped
            [s] (a client or load-balancer timeout).
        batching: how a home batches its requests. ``offered`` (the world before the fidelity
            round): the decode batch is the offered load by Little's law, costed at the nearest
            power of two, and each request brings ``prefill + output_tokens * step / batch`` of work
            to a FIFO queue. ``continuous`` (the default): iteration-level batching as in vLLM, TGI
            and llama.cpp's server: each (model, home) engine runs one step at a time, requests join
            the running batch at step boundaries and leave when their last token is out; a step
            costs the cost model's decode pass at the batch's real size (linear between powers of
            two), or, when it carries chunks of joining prompts, the prefill line at all its tokens;
            the models homed on one GPU take their steps in turn, and background load and migration
            slow every step by the home's available share (:mod:`coel_env.core.kernels.batching`).
        max_batch: with continuous batching, the most sequences one (model, home) engine
            runs at once (vLLM's ``max_num_seqs``; vLLM defaults to 256 on data-centre GPUs,
            we take 32 for edge GPUs). Besides it, a sequence joins only when its KV cache
            fits: it reserves ``input + output tokens`` of KV at admission (TGI's
            ``max_batch_total_tokens`` reservation; no preemption), costed from the
            catalog's attention shapes (``n_layers * kv_cache_values_per_token * 2`` bytes
            per token), out of a pool of ``kv_reserve_gb`` plus an equal share, among the
            models homed there, of the GPU memory the plan leaves free at the home.
        step_tokens: with continuous batching, the most tokens one engine's step takes:
            one per running sequence, the rest in chunks of the prompts that joined
            (vLLM's ``max_num_batched_tokens`` with chunked prefill; 2048 is of its order),
            so a long prompt does not stall the running sequences for its whole prefill.
        activation_traffic: how activations sent to experts on other servers are counted (bytes and
            transfer time): ``per_expert`` (the world before the fidelity round: a token's
            activations cross once per remote expert it uses) or ``per_server`` (the default: once
            per remote server holding any of its experts, which sums their outputs and sends one
            vector back: down to ``1 / top_k`` of the bytes when a layer's remote experts sit on one
            server, 1/8 for OLMoE).
        pruning: what a plan's ``keep_ratio`` prunes: ``bytes`` (the world before the fidelity
            round: it thins the activation bytes sent to remote experts, decode tokens included, and
            costs its quality loss only where experts are remote) or ``prompt`` (the default: token
            pruning as published, e.g. LLMLingua-style prompt compression: the model's requests keep
            that share of their prompt tokens, so prefill compute, the prompt's KV cache and the
            bytes its prefill sends shrink with it, decode tokens are whole, and every request of
            the model pays :func:`coel_env.quality.token_keep_loss`).
        quant_scaling: how a derived GPU's quantized (8 bits and below) expert kernels are costed in
            ``eager`` and ``cudagraph`` mode: ``throughput`` (the world before the fidelity round:
            the H200's measured 4-bit fit with its bandwidth and throughput scaled by the datasheet,
            which makes 4-bit prefill many times slower than 16-bit wherever the scaled kernel time
            leaves the host dispatch floor before the 16-bit one does) or ``ratio`` (the device's
            16-bit kernel times the H200's measured quantized/16-bit ratio at the same token count,
            so a derived GPU keeps the measured ratio).
    """

    mode: str = "fused"
    kv_reserve_gb: float = 1.0
    host_memory_gb: float = 64.0
    store_gbit_s: float = 1.0
    layer_terms: str = "first-principles"
    max_queue_s: float = 30.0
    batching: str = "continuous"
    max_batch: int = 32
    step_tokens: int = 2048
    activation_traffic: str = "per_server"
    pruning: str = "prompt"
    quant_scaling: str = "ratio"

    def __post_init__(self) -> None:
        _choice("serving.mode", self.mode, SERVING_MODES)
        _positive("serving.max_queue_s", self.max_queue_s)
        if self.layer_terms not in LAYER_TERMS:
            raise ValueError(
                f"serving.layer_terms={self.layer_terms!r} is not allowed; allowed: {LAYER_TERMS}"
            )
        if self.layer_terms == "calibrated" and self.mode != "eager":
            raise ValueError(
                f"serving.layer_terms='calibrated' with serving.mode={self.mode!r} is not "
                "allowed: the layer terms are fitted to eager layers; use serving.mode="
                "'eager' or serving.layer_terms='first-principles'"
            )
        _choice("serving.batching", self.batching, BATCHING)
        _positive("serving.max_batch", self.max_batch, integer=True)
        _positive("serving.step_tokens", self.step_tokens, integer=True)
        _choice("serving.activation_traffic", self.activation_traffic, ACTIVATION_TRAFFIC)
        _choice("serving.pruning", self.pruning, PRUNING)
        _choice("serving.quant_scaling", self.quant_scaling, QUANT_SCALING)


@dataclass(frozen=True)
class Scenario:
    """A whole world: topology, models, workload, routing, perception, dynamics.

    Attributes:
        name: the scenario's name.
        instance_seed: draws the topology and the servers' devices (the instance);
            ``World.reset(seed)`` draws everything that happens in an episode.
        epoch_s: length of one update epoch [s].
        models: catalog names of the deployed models.
    """

    name: str = "default"
    instance_seed: int = 0
    epoch_s: float = 10.0
    models: tuple[str, ...] = ("olmoe-1b-7b",)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    workload: WorkloadSection = field(default_factory=WorkloadSection)
    routing: RoutingSection = field(default_factory=RoutingSection)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    updating: UpdatingConfig = field(default_factory=UpdatingConfig)

    def __post_init__(self) -> None:
        _positive("epoch_s", self.epoch_s)
        if not self.models:
            raise ValueError("models is empty; name at least one catalog model")
        known = model_names()
        for m in self.models:
            if m not in known:
                raise ValueError(f"models: unknown model {m!r}; known models: {', '.join(known)}")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models={list(self.models)!r} lists a model twice")


#: The fidelity keys at their values before the fidelity round made continuous batching,
#: durable migrations, sub-epoch views, per-server traffic, prompt pruning, ratio-scaled
#: quantized kernels and the fused runtime the defaults: pass them as overrides (or
#: ``--set KEY=VALUE`` each) to run a scenario in that world. The presets' loads were
#: retuned at the same time (see ``docs/world.md``), so results made before it need the
#: old loads too (the ``results/`` folders say which).
LEGACY_FIDELITY = {
    "serving.mode": "eager",
    "serving.batching": "offered",
    "serving.activation_traffic": "per_expert",
    "serving.pruning": "bytes",
    "serving.quant_scaling": "throughput",
    "updating.migration": "one_epoch",
    "updating.departed": "refuse",
    "perception.sampling": "epoch_end",
    "perception.timeout_periods": None,
}

#: ``serving.batching`` values (the first is the default).
BATCHING = ("continuous", "offered")


def _choice(name: str, v: Any, allowed: tuple[str, ...]) -> None:
    if v not in allowed:
        raise ValueError(f"{name}={v!r} is not allowed; allowed: {allowed}")


def _positive(name: str, v: Any, integer: bool = False) -> None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    if integer:
        ok = ok and isinstance(v, int)
    if not ok:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name}={v!r} is not allowed; must be {kind} > 0")


# --------------------------------------------------------------------------- loading

PRESETS = (
    "default", "large", "static", "intra", "inter",
    "mobility", "churn", "diurnal", "tight-memory",
)  # fmt: skip
#: The scenario keys that name data files or folders (``${COEL_DATA}`` expands in them).
DATA_KEYS = (
    ("topology", "path"), ("topology", "users_path"), ("workload", "trace"),
    ("routing", "esft_dir"), ("routing", "fiddler_dir"),
)  # fmt: skip
#: What ``${COEL_DATA}`` stands for in :data:`DATA_KEYS`.
DATA_VAR = "COEL_DATA"


def data_root() -> Path:
    """The folder of the public data sets, ``$COEL_DATA`` (its files are not checked here:
    a missing file is reported where it is read).

    Raises:
        ValueError: ``COEL_DATA`` is not set.
    """
    env = os.environ.get(DATA_VAR)
    if not env:
        raise ValueError(
            f"{DATA_VAR} is not set: set it to the folder of the public data sets "
            "(topologies/, routing/, traces/, devices/; docs/data.md says where to get "
            "them), e.g. COEL_DATA=/path/to/data"
        )
    return Path(env).expanduser()


def _expand_data(data: dict) -> dict:
    """``data`` with ``${COEL_DATA}`` (or ``$COEL_DATA``) at the start of a data key
    replaced by :func:`data_root`."""
    out = dict(data)
    for section, key in DATA_KEYS:
        sec = out.get(section)
        if not isinstance(sec, Mapping):
            continue
        v = sec.get(key)
        if isinstance(v, str):
            for var in ("${" + DATA_VAR + "}", "$" + DATA_VAR):
                if v.startswith(var):
                    out[section] = {**sec, key: str(data_root()) + v[len(var) :]}
                    break
    return out


def uses_data(name_or_path: str | Path) -> bool:
    """Whether the preset or file names a data file through ``${COEL_DATA}`` (and so
    needs the public data sets)."""
    s = str(name_or_path)
    path = preset_path(s) if s in PRESETS else Path(s)
    try:
        return "COEL_DATA" in path.read_text()
    except OSError:
        return False


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where or 'scenario'} must be a mapping; got {data!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in valid:
            full = f"{where}.{key}" if where else str(key)
            raise ValueError(
                f"unknown scenario key {full!r}; valid keys"
                f"{' of ' + where if where else ''}: {', '.join(valid)}"
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{where}.{key}" if where else key)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            kwargs[key] = tuple(value)
        elif typing.get_origin(hint) is Mapping and isinstance(value, Mapping):
            kwargs[key] = dict(value)
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # wrong value types that the dataclass could not take
        raise ValueError(f"{where or 'scenario'}: {exc}") from None


def _merge(base: dict, over: Mapping[str, Any]) -> dict:
    out = dict(base)
    for k, v in over.items():
        if "." in k:
            head, rest = k.split(".", 1)
            out[head] = _merge(dict(out.get(head) or {}), {rest: v})
        elif isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def preset_path(name: str) -> Path:
    return Path(str(resources.files("coel_env") / "data" / "scenarios" / f"{name}.yaml"))


def load_scenario(
    name_or_path: str | Path = "default", overrides: Mapping[str, Any] | None = None
) -> Scenario:
    """A preset name (``default``, ``large``, ``static``) or a YAML file, with overrides.

    Raises:
        ValueError: unknown preset, unreadable file, unknown key (naming the valid
            ones) or a value outside its range.
    """
    s = str(name_or_path)
    if s in PRESETS:
        path = preset_path(s)
    else:
        path = Path(s)
        if not path.is_file():
            raise ValueError(
                f"scenario {s!r} is neither a preset ({', '.join(PRESETS)}) nor an existing file"
            )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"scenario file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"scenario file {str(path)!r} must hold a mapping of keys")
    data = _expand_data(_merge(data, overrides or {}))
    return _build(Scenario, data, "")


def scenario_dict(sc: Scenario) -> dict:
    """A plain dict of the scenario (for run folders and JSON)."""
    return dataclasses.asdict(sc)


# ------------------------------------------------------------------ overrides from files and text

#: Header columns that mark an Azure LLM inference trace.
AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
#: Topology file suffix -> ``topology.kind``.
TOPOLOGY_KINDS = {".graphml": "graphml", ".csv": "eua"}


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """Dotted overrides from ``KEY=VALUE`` text (the command line's ``--set``).

    Args:
        items: strings such as ``"workload.rate_per_s=0.1"``; the value is parsed as YAML,
            so numbers, booleans and lists work, and only the first ``=`` splits.

    Returns:
        ``["a.b=1", "c=[1, 2]"]`` -> ``{"a.b": 1, "c": [1, 2]}``.

    Raises:
        ValueError: an item without ``=`` or without a key, or a value that is not YAML.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(
                f"--set {item!r} is not allowed; expected KEY=VALUE with a dotted scenario key, "
                "e.g. --set workload.rate_per_s=0.1"
            )
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            msg = " ".join(str(exc).split())
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({msg})") from None
    return out


def trace_overrides(path: str | Path) -> dict[str, Any]:
    """Overrides that replay the request trace at ``path``.

    A CSV whose header has every column of :data:`AZURE_HEADER` is an Azure LLM
    inference trace (``workload.kind=azure``), any other CSV a generic trace
    (``workload.kind=generic``).

    Raises:
        ValueError: the file does not exist or cannot be read as text.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--trace {str(path)!r} does not exist or is not a file")
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            header = f.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"--trace {str(path)!r} cannot be read as a CSV text file: {exc}"
        ) from None
    cols = {c.strip().strip('"') for c in header.split(",")}
    kind = "azure" if set(AZURE_HEADER) <= cols else "generic"
    return {"workload.kind": kind, "workload.trace": str(path)}


def topology_overrides(path: str | Path) -> dict[str, Any]:
    """Overrides that load the topology at ``path``, its kind from the suffix.

    ``.graphml`` is a Topology Zoo graph (``topology.kind=graphml``), ``.csv`` a
    file of EUA sites (``topology.kind=eua``); see :data:`TOPOLOGY_KINDS`.

    Raises:
        ValueError: another suffix, or the file does not exist.
    """
    path = Path(path)
    kind = TOPOLOGY_KINDS.get(path.suffix.lower())
    if kind is None:
        allowed = ", ".join(f"{s} ({k})" for s, k in TOPOLOGY_KINDS.items())
        raise ValueError(
            f"--topology {str(path)!r} has suffix {path.suffix!r}, which is not allowed; "
            f"allowed: {allowed}"
        )
    if not path.is_file():
        raise ValueError(f"--topology {str(path)!r} does not exist or is not a file")
    return {"topology.kind": kind, "topology.path": str(path)}


def scenario_overrides(
    trace: str | Path | None = None,
    topology: str | Path | None = None,
    sets: Iterable[str] | Mapping[str, Any] = (),
) -> dict[str, Any]:
    """The dotted overrides of a trace file, a topology file and explicit settings.

    Args:
        trace: a request trace CSV (:func:`trace_overrides`), or None.
        topology: a ``.graphml`` or EUA ``.csv`` file (:func:`topology_overrides`), or None.
        sets: ``KEY=VALUE`` strings (:func:`parse_set`) or a mapping of dotted keys
            to values.

    Returns:
        The trace's overrides, then the topology's, then ``sets``: a key of ``sets``
        wins over the same key from the files (``--set`` wins over ``--trace`` and
        ``--topology``).
    """
    over: dict[str, Any] = {}
    if trace is not None:
        over.update(trace_overrides(trace))
    if topology is not None:
        over.update(topology_overrides(topology))
    over.update(sets if isinstance(sets, Mapping) else parse_set(sets))
    return over
