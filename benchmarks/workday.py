"""A simulated working day at 100 DataWorks calls a day: how soon each run and stage change is seen.

Pure: no emulators and no product I/O, only `dwnotify.pacing`. One workspace; 8 to 12 deployments start
between 09:00 and 19:00 Beijing time, each a run of 3 to 5 stages of 2 to 10 minutes (seeded, so the day
is the same every time). Every poll costs one call (page 1 shows every run) and sees every change made
by then; a change's detection latency is the time of the first poll that sees it minus the time it
happened. All changes fall in active periods (a run's start, its stages' moves, its end).

Strategies: `budget` (an FC timer every 60 s asking `CallBudget.decide`), `budget_every_15s` (the same
with `dataworks.poll_every: 15s`), `fixed_15m` (a 15-minute timer, 96 calls, the Basic edition's usual
advice) and `unlimited_15s` (a poll every 15 s without a budget, for reference).

`python -m benchmarks.workday` prints the figures as JSON.
"""

from __future__ import annotations

import bisect
import json
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from dwnotify.pacing import DAY_S, CallBudget

BUDGET = 100
SEED = 11
SEEDS = range(1, 31)  # the robustness figures: the same day drawn 30 ways
TARGET_MEDIAN_S = 180.0  # issue 11: median detection latency during active periods under 3 minutes
BEIJING = timezone(timedelta(hours=8))
DAY_START = datetime(2024, 6, 3, tzinfo=BEIJING).timestamp()  # a Monday, 00:00 Beijing time
HOUR_S = 3600.0


@dataclass(frozen=True)
class Run:
    """One deployment: when it starts and when each of its stages ends (the last one ends the run)."""

    starts_at: float
    stage_ends: tuple[float, ...]

    @property
    def ends_at(self) -> float:
        """When the run lands."""
        return self.stage_ends[-1]

    def changes(self) -> list[tuple[float, str]]:
        """Each status change with its kind: the run and its first stage start, each stage ends and the
        next starts, the last stage and the run end."""
        kinds = ["start", "start"]  # run running, stage 1 running
        for _ in self.stage_ends[:-1]:
            kinds += ["in_run", "in_run"]  # stage n succeeded, stage n+1 running
        kinds += ["in_run", "in_run"]  # last stage succeeded, run succeeded
        times = [self.starts_at, self.starts_at]
        for end in self.stage_ends:
            times += [end, end]
        return list(zip(times, kinds, strict=True))


def workday(seed: int = SEED) -> list[Run]:
    """The day's deployments, the same for the same seed."""
    rng = random.Random(seed)
    runs = []
    for _ in range(rng.randint(8, 12)):
        at = DAY_START + rng.uniform(9 * HOUR_S, 19 * HOUR_S)
        ends = []
        end = at
        for _ in range(rng.randint(3, 5)):
            end += rng.uniform(120, 600)
            ends.append(end)
        runs.append(Run(at, tuple(ends)))
    return sorted(runs, key=lambda run: run.starts_at)


def fixed(every_s: float) -> Callable[[list[Run]], list[float]]:
    """A timer polling every `every_s` seconds from midnight, whatever happens."""

    def polls(runs: list[Run]) -> list[float]:
        return [DAY_START + i * every_s for i in range(int(DAY_S // every_s))]

    return polls


def budgeted(every_s: float, budget: int = BUDGET) -> Callable[[list[Run]], list[float]]:
    """`CallBudget.decide` asked every `every_s` seconds; a poll learns which runs are moving."""

    def polls(runs: list[Run]) -> list[float]:
        planner = CallBudget(budget)
        ledger = None
        active = False
        made: list[float] = []
        seen = 0  # changes seen so far
        changes = sorted(at for run in runs for at, _ in run.changes())
        for i in range(int(DAY_S // every_s)):
            now = DAY_START + i * every_s
            if not planner.decide(ledger, now, active=active, min_cost=1).poll:
                continue
            moved = bisect.bisect_right(changes, now) > seen  # also a run that began and ended unseen
            seen = bisect.bisect_right(changes, now)
            moving = any(run.starts_at <= now < run.ends_at for run in runs)
            ledger = planner.spend(ledger, now, 1, active=active or moving or moved)
            active = moving
            made.append(now)
        return made

    return polls


def latencies(runs: Sequence[Run], polls: Sequence[float], kind: str | None = None) -> list[float]:
    """Seconds from each change (of `kind`, or every change) to the first poll at or after it."""
    found = []
    for run in runs:
        for at, what in run.changes():
            if kind is not None and what != kind:
                continue
            index = bisect.bisect_left(polls, at)
            found.append(polls[index] - at if index < len(polls) else float("inf"))
    return found


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, 90th percentile (nearest rank) and maximum, in whole seconds."""
    ordered = sorted(values)
    p90 = ordered[max(0, -(-len(ordered) * 9 // 10) - 1)]
    return {"median": round(statistics.median(ordered)), "p90": round(p90), "max": round(ordered[-1])}


def strategy(runs: list[Run], polls: list[float]) -> dict[str, Any]:
    """One strategy's figures over one day."""
    return {
        "calls": len(polls),
        "latency_s": spread(latencies(runs, polls)),
        "run_start_latency_s": spread(latencies(runs, polls, "start")),
        "in_run_latency_s": spread(latencies(runs, polls, "in_run")),
    }


STRATEGIES: dict[str, Callable[[list[Run]], list[float]]] = {
    "budget": budgeted(60),
    "budget_every_15s": budgeted(15),
    "fixed_15m": fixed(15 * 60),
    "unlimited_15s": fixed(15),
}


def day(seed: int = SEED) -> dict[str, Any]:
    """Every strategy over the day drawn with `seed`."""
    runs = workday(seed)
    active_s = _union(runs)
    return {
        "seed": seed,
        "deployments": len(runs),
        "changes": sum(len(run.changes()) for run in runs),
        "active_minutes": round(active_s / 60),
        **{name: strategy(runs, polls(runs)) for name, polls in STRATEGIES.items()},
    }


def _union(runs: Sequence[Run]) -> float:
    total, until = 0.0, DAY_START
    for run in runs:  # sorted by start
        start = max(run.starts_at, until)
        if run.ends_at > start:
            total += run.ends_at - start
            until = run.ends_at
    return total


def measure() -> dict[str, Any]:
    """The figures for the seeded day, and the medians over `SEEDS` days (it is not one lucky day)."""
    figures = day(SEED)
    days = [day(seed) for seed in SEEDS]
    medians = {name: [d[name]["latency_s"]["median"] for d in days] for name in ("budget", "fixed_15m")}
    figures["over_seeds"] = {
        "days": len(days),
        "budget_calls_max": max(d["budget"]["calls"] for d in days),
        "budget_every_15s_calls_max": max(d["budget_every_15s"]["calls"] for d in days),
        "budget_median_s": {"median": statistics.median(medians["budget"]), "max": max(medians["budget"])},
        "fixed_15m_median_s": {
            "median": statistics.median(medians["fixed_15m"]),
            "max": max(medians["fixed_15m"]),
        },
        "days_budget_under_target": sum(m < TARGET_MEDIAN_S for m in medians["budget"]),
    }
    figures["budget_calls_a_day"] = BUDGET
    figures["target_median_s"] = TARGET_MEDIAN_S
    figures["target_met"] = figures["budget"]["latency_s"]["median"] < TARGET_MEDIAN_S
    return figures


def main() -> int:
    """Print the figures as JSON."""
    print(json.dumps(measure(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
