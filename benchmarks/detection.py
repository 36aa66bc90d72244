"""Detection latency: from a run failing in the DataWorks emulator to its message at the DingTalk one.

FC's timer starts an invocation every `TIMER_S`; each invocation is what `functions/index.py` runs
(`Notifier.tick` with the handler's deadline for a 60 s function). On `SimClock` the waits between
invocations, and the product's own waits inside one (its rate limiter, a poll loop's sleeps), are
jumps, while each tick takes the real time it takes: so a latency is the time to the next poll plus
the real tick. Each trial fails one run at a phase of the timer period, spread evenly over it, and
reads the arrival time the DingTalk emulator recorded. Measured with a plain 60 s timer, and with
`dataworks.poll_every: 15s` when this version of the product has that option.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.world import FAILED, LATENCY_S, World, supports, world

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "functions") not in sys.path:
    sys.path.insert(0, str(ROOT / "functions"))

from index import deadline_for  # noqa: E402 - the FC handler's own deadline

TIMER_S = 60.0
FUNCTION_TIMEOUT_S = 60.0  # s.yaml
POLL_EVERY = "15s"
TRIALS = 8
STATE, WORKSPACES, RUNS = "tablestore", 10, 1000
MAX_INVOCATIONS = 5  # per trial: a message not there by then is reported as not delivered


def _invoke(w: World) -> int:
    """One invocation, as the FC handler runs it; how many times it polled the workspaces."""
    since = len(w.dataworks.calls)
    w.app.notifier.tick(deadline=deadline_for(w.clock(), FUNCTION_TIMEOUT_S))
    return max(w.calls_by_workspace(since).values(), default=0)


class _Trials:
    """Failing one run per trial on a world, invoking on the timer until its message arrives."""

    def __init__(self, w: World) -> None:
        self.world = w
        self.polls: list[int] = []  # per invocation

    def invoke_at(self, fire: float) -> None:
        self.world.clock.advance_to(fire)
        self.polls.append(_invoke(self.world))

    def trial(self, fire: float, phase: float, run: tuple[int, str]) -> tuple[float | None, float]:
        """Fail `run` at `fire + phase`, invoke at `fire` and every timer after; (latency, last fire)."""
        w = self.world
        changed_at = fire + phase
        w.clock.at(changed_at, lambda: w.move([run], FAILED, status="Fail"))
        before = len(w.dingtalk.attempts)
        for _ in range(MAX_INVOCATIONS):
            self.invoke_at(fire)
            arrived = w.dingtalk.attempts[before:]
            if arrived:
                return round(arrived[0].at - changed_at, 2), fire
            fire += TIMER_S
        return None, fire


def _latencies(trials: int, workspaces: int, runs: int, latency_s: float, **options: Any) -> dict[str, Any]:
    with world(STATE, workspaces, latency_s=latency_s, **options) as w:
        w.add_active_runs(runs // workspaces)
        fire = w.clock()
        trials_on = _Trials(w)
        trials_on.invoke_at(fire)  # records the runs
        found: list[float | None] = []
        for index in range(trials):
            phase = (index + 0.5) * TIMER_S / trials
            latency, fire = trials_on.trial(fire + TIMER_S, phase, w.runs[index])
            found.append(latency)
    arrived = [latency for latency in found if latency is not None]
    return {
        "trials": trials,
        "not_delivered": len(found) - len(arrived),
        "median_s": round(statistics.median(arrived), 2) if arrived else None,
        "worst_s": max(arrived, default=None),
        "best_s": min(arrived, default=None),
        "latencies_s": found,
        "most_polls_in_one_invocation": max(trials_on.polls),
    }


def measure(
    trials: int = TRIALS, workspaces: int = WORKSPACES, runs: int = RUNS, latency_s: float = LATENCY_S
) -> dict[str, Any]:
    """Latency with the plain timer, and with poll_every (or why that was skipped)."""
    results: dict[str, Any] = {
        "state": STATE,
        "workspaces": workspaces,
        "active_runs": runs,
        "timer_s": TIMER_S,
        "function_timeout_s": FUNCTION_TIMEOUT_S,
        "timer": _latencies(trials, workspaces, runs, latency_s),
    }
    if not supports("poll_every"):
        results["poll_every_15s"] = {
            "skipped": "this version has no dataworks.poll_every (functions/dwnotify/settings.py)"
        }
        return results
    polling = _latencies(trials, workspaces, runs, latency_s, poll_every=POLL_EVERY)
    if polling["most_polls_in_one_invocation"] <= 1:
        polling = {
            "skipped": "dataworks.poll_every is accepted by the config, but no invocation polled more "
            "than once while runs were active: the poll loop is not in this version",
            "measured_anyway": polling,
        }
    results["poll_every_15s"] = polling
    return results
