"""The tick's workloads over a grid of workspaces and runs, product and naive poller side by side.

For each grid point (workspaces x runs, 100 runs a page) and each state backend, with the injected
latency on DataWorks and Tablestore:

- `first_tick`: an empty store, every run running (created before the lookback: recorded, not
  announced);
- `unchanged`: every run still running, nothing changed since the last tick (median of `repeat`), and
  one more such tick with the latency off (`wall_ms_without_latency`, the CPU's share of the wall);
- `changed`: a tenth of the runs moved one stage on since the last tick (100 of 1,000);
- `idle`: no run moving, the workspaces' runs all finished and already recorded (median of `repeat`).

Each product tick reports DataWorks calls, state round trips and write round trips, messages sent,
wall time, its network floor (`world.network_floor_ms`) and wall over floor; beside it the naive
poller's tick over the same runs (`naive.NaivePoller`) and the ratios product/naive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from benchmarks.naive import NaivePoller
from benchmarks.world import LATENCY_S, MAX_QPS, MOVED, product_tick, ratio, steady_ticks, world

GRID = ((1, 10), (10, 1000), (50, 5000))  # (workspaces, runs in all)
STATES = ("sqlite", "tablestore")
NAIVE_SAMPLE = 50  # runs the naive poller polls per tick at most (scaled to all runs)
REPEAT = 3


def _side_by_side(product: dict[str, Any], naive: dict[str, Any]) -> dict[str, Any]:
    return {
        "product": product,
        "naive": naive,
        "product_over_naive": {
            "dataworks_calls": ratio(product["dataworks_calls"], naive["dataworks_calls"]),
            "state_round_trips": ratio(product["state_round_trips"], naive["state_round_trips"]),
            "wall": ratio(product["wall_ms"], naive["wall_ms"]),
        },
    }


@dataclass(frozen=True)
class Scale:
    """How big and how slow: the naive poller's sample, ticks per steady figure, injected latency."""

    sample: int = NAIVE_SAMPLE
    repeat: int = REPEAT
    latency_s: float = LATENCY_S


FULL = Scale()


def _active(state: str, workspaces: int, runs: int, scale: Scale) -> dict[str, Any]:
    """first_tick, unchanged and changed, on one world of running runs."""
    with world(state, workspaces, latency_s=scale.latency_s) as w:
        w.add_active_runs(runs // workspaces)
        naive = NaivePoller(w, w.runs, scale.sample)
        try:
            first = _side_by_side(product_tick(w), naive.tick())
            unchanged = _side_by_side(steady_ticks(w, scale.repeat), naive.tick())
            # The same tick with no latency injected: what is left is this process's CPU (the product,
            # its SDKs and the emulators serving it), which no network floor counts.
            w.set_latency(0.0)
            unchanged["product"]["wall_ms_without_latency"] = product_tick(w)["wall_ms"]
            w.set_latency(scale.latency_s)
            moved = w.runs[::10]
            w.move(moved, MOVED)
            changed = _side_by_side(product_tick(w), naive.tick())
        finally:
            naive.close()
    changed["changed_runs"] = len(moved)
    return {"first_tick": first, "unchanged": unchanged, "changed": changed}


def _idle(state: str, workspaces: int, runs: int, scale: Scale) -> dict[str, Any]:
    """idle: every run finished before the store first saw it, and recorded by a first tick."""
    with world(state, workspaces, latency_s=scale.latency_s, history=runs // workspaces) as w:
        w.runs = [(run.project, run.id) for run in w.dataworks.scenario.runs]
        naive = NaivePoller(w, w.runs, scale.sample)
        try:
            product_tick(w)
            naive.tick()
            return _side_by_side(steady_ticks(w, scale.repeat), naive.tick())
        finally:
            naive.close()


def measure(
    grid: Iterable[tuple[int, int]] = GRID,
    states: Iterable[str] = STATES,
    scale: Scale = FULL,
) -> dict[str, Any]:
    """Every workload at every grid point on every backend."""
    grid = list(grid)
    results: dict[str, Any] = {
        "latency_ms": scale.latency_s * 1000,
        "max_qps": MAX_QPS,
        "grid": [f"{workspaces}x{runs}" for workspaces, runs in grid],
        "naive_sample_runs": scale.sample,
        "notes": [
            "wall_ms includes the product's waits of up to 50 ms (its rate limiter's spacing); longer ones"
            " (a chat's rate budget, backoff) jump the clock instead: waits_jumped_ms, summed over threads",
            "network_floor_ms: latency x (most requests to one workspace + state round trips on Tablestore)",
            "naive: per tracked run not yet final, a state read, GetPipelineRun and a state write (commit);"
            " it lists nothing, renders and delivers nothing",
            "the emulators run in this process: wall times include both sides of every request",
        ],
    }
    for state in states:
        results[state] = {}
        for workspaces, runs in grid:
            figures = _active(state, workspaces, runs, scale)
            figures["idle"] = _idle(state, workspaces, runs, scale)
            results[state][f"{workspaces}x{runs}"] = figures
    return results
