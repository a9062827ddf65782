"""Fit the synthetic workload to the Azure LLM inference traces (2023) and print the fits.

Usage::

    python experiments/calibrate_workload.py --trace-dir PATH

``PATH`` holds ``AzureLLMInferenceTrace_code.csv`` and
``AzureLLMInferenceTrace_conv.csv`` (Splitwise, ISCA'24; CC-BY-4.0). For each
trace the script prints the arrival statistics (mean rate, CV of inter-arrival
times, index of dispersion of 1 s counts), the H2 arrival model fitted to them
and, for ContextTokens and GeneratedTokens, the log-normal fit (mu, sigma of
the natural log) beside the empirical and fitted median, p90 and p99, the
maximum (the clip bound of the generator) and the share of synthetic draws
that the clip catches. The last block checks the arrival model by simulation.

The numbers are those of :func:`coel_env.core.workload.fit_trace`, which also
computes the constants ``AZURE_CODE_FIT`` and ``AZURE_CONV_FIT``; the script
says whether the constants still match.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from coel_env.core.io import load_azure_trace
from coel_env.core.workload import (
    AZURE_CODE_FIT,
    AZURE_CONV_FIT,
    LogNormalTokens,
    Requests,
    SyntheticWorkload,
    TraceFit,
    WorkloadConfig,
    dispersion_of_counts,
    fit_trace,
)

TRACES: dict[str, tuple[str, TraceFit]] = {
    "code": ("AzureLLMInferenceTrace_code.csv", AZURE_CODE_FIT),
    "conv": ("AzureLLMInferenceTrace_conv.csv", AZURE_CONV_FIT),
}
#: Simulated time for the model check [s]: ~28 trace-hours, enough for a stable
#: dispersion estimate on the bursty code trace (~2,000 long gaps).
CHECK_DURATION_S = 100_000.0
CHECK_SEED = 0


def calibrate(trace_dir: Path) -> dict[str, tuple[TraceFit, Requests]]:
    """Load both traces from ``trace_dir`` and fit them."""
    out = {}
    for key, (file, constant) in TRACES.items():
        requests = load_azure_trace(trace_dir / file)
        out[key] = (fit_trace(requests, name=constant.name, source=constant.source), requests)
    return out


def _token_rows(label: str, counts: np.ndarray, fit: LogNormalTokens) -> list[str]:
    emp = np.percentile(counts, [50, 90, 99])
    model = [fit.quantile(q) for q in (0.5, 0.9, 0.99)]
    return [
        f"  {label:<16} mu_log={fit.mu_log:.6f} sigma_log={fit.sigma_log:.6f} "
        f"max={fit.max_tokens} (clip [1, max]; clipped share {fit.clipped_share():.2%}; "
        f"zeros excluded from fit: {int((counts == 0).sum())})",
        f"  {'':<16} {'':>9} {'median':>9} {'p90':>9} {'p99':>9}",
        f"  {'':<16} {'trace':>9} {emp[0]:>9.0f} {emp[1]:>9.0f} {emp[2]:>9.0f}",
        f"  {'':<16} {'log-norm':>9} {model[0]:>9.0f} {model[1]:>9.0f} {model[2]:>9.0f}",
    ]


def _model_check(fit: TraceFit) -> tuple[float, float, float, float]:
    """Mean rate, CV, 1 s dispersion and empty 1 s share of the fitted generator (one server)."""
    workload = SyntheticWorkload(WorkloadConfig.from_fit(fit, 1))
    t = workload.generate(0.0, CHECK_DURATION_S, np.random.default_rng(CHECK_SEED)).arrival_s
    gaps = np.diff(t)
    cv = gaps.std() / gaps.mean()
    return 1.0 / gaps.mean(), cv, dispersion_of_counts(t, 1.0), _empty_share(t)


def _matches(a: TraceFit, b: TraceFit) -> bool:
    def close(x: float, y: float) -> bool:
        return math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-6)

    tok = all(
        close(getattr(a, f).mu_log, getattr(b, f).mu_log)
        and close(getattr(a, f).sigma_log, getattr(b, f).sigma_log)
        and getattr(a, f).max_tokens == getattr(b, f).max_tokens
        for f in ("input_tokens", "output_tokens")
    )
    scalars = ("duration_s", "rate_per_s", "interarrival_cv", "fast_gap_probability")
    return (
        tok
        and a.n_requests == b.n_requests
        and all(close(getattr(a, f), getattr(b, f)) for f in scalars)
        and close(a.dispersion_1s, b.dispersion_1s)
    )


def report(fits: dict[str, tuple[TraceFit, Requests]]) -> tuple[str, bool]:
    """The printed table, and whether the module constants match the fits."""
    lines = []
    all_match = True
    for key, (fit, requests) in fits.items():
        constant = TRACES[key][1]
        matches = _matches(fit, constant)
        all_match &= matches
        lines += [
            f"== {TRACES[key][0]} ({fit.name}) ==",
            f"  requests          {fit.n_requests} over {fit.duration_s:.3f} s",
            f"  rate_per_s        {fit.rate_per_s:.6f}   [(n - 1) / duration]",
            f"  interarrival_cv   {fit.interarrival_cv:.6f}",
            f"  dispersion_1s     {fit.dispersion_1s:.6f}   [var/mean of complete 1 s counts]",
            f"  H2 fast_gap_prob  {fit.fast_gap_probability:.6f}   [max likelihood, mean+CV fixed]",
        ]
        lines += _token_rows("ContextTokens", requests.input_tokens, fit.input_tokens)
        lines += _token_rows("GeneratedTokens", requests.output_tokens, fit.output_tokens)
        rate, cv, idc, empty = _model_check(fit)
        lines += [
            f"  model check, H2 generator ({CHECK_DURATION_S:.0f} s simulated, seed {CHECK_SEED}):",
            f"  {'':<16} {'rate':>9} {'CV':>9} {'disp_1s':>9} {'empty_1s':>9}",
            f"  {'':<16} {'trace':>9} {fit.rate_per_s:>9.4f} {fit.interarrival_cv:>9.3f} "
            f"{fit.dispersion_1s:>9.3f} {_empty_share(requests.arrival_s):>9.1%}",
            f"  {'':<16} {'model':>9} {rate:>9.4f} {cv:>9.3f} {idc:>9.3f} {empty:>9.1%}",
            f"  module constant {constant.name}: {'matches' if matches else 'DIFFERS'}",
            "",
        ]
    return "\n".join(lines), all_match


def _empty_share(arrival_s: np.ndarray) -> float:
    rel = arrival_s - arrival_s[0]
    n = int(math.floor(rel[-1]))
    counts = np.bincount(rel[rel < n].astype(np.int64), minlength=n)
    return float((counts == 0).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trace-dir",
        type=Path,
        required=True,
        help="folder holding AzureLLMInferenceTrace_code.csv and AzureLLMInferenceTrace_conv.csv",
    )
    args = parser.parse_args(argv)
    try:
        fits = calibrate(args.trace_dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"calibrate_workload: error: {e}", file=sys.stderr)
        return 2
    text, all_match = report(fits)
    print(text)
    if not all_match:
        print(
            "calibrate_workload: the module constants differ from these fits; "
            "update AZURE_*_FIT in coel_env/core/workload.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
