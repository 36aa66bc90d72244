"""Detection latency: from a run failing in the DataWorks emulator to its message at the DingTalk one.

FC's timer starts an invocation every `TIMER_S`; each invocation is what `functions/index.py` runs:
`Notifier.run` with the handler's deadline (`index.deadline_for`) for the function's timeout in s.yaml.
On `SimClock` the waits between invocations, and the product's own waits inside one (a poll loop's
sleeps, a chat's rate budget), are jumps, while each poll takes the real time it takes. Each trial fails
one run at a phase of the timer period (spread evenly over it): the failure is written into the run's
timeline in the emulator's scenario at that exact moment, before the invocation starts, so it takes
effect when the simulated clock passes it, whichever jump or poll gets there first. The latency is the
arrival time the DingTalk emulator recorded minus that moment.

Measured with the plain 60 s timer, with `dataworks.poll_every: 15s`, and (what-if, not the deployed
setting) with poll_every under a longer function timeout. Beside them, the function time each mode
costs a day (`gb_seconds_per_day`): active invocations by their simulated duration (a polling
invocation's sleeps are billed), idle ones by their measured wall time (an idle invocation polls once).
"""

from __future__ import annotations

import bisect
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.world import FAILED, LATENCY_S, World, supports, world

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "functions") not in sys.path:
    sys.path.insert(0, str(ROOT / "functions"))

from index import deadline_for  # noqa: E402 - the FC handler's own deadline

TIMER_S = 60.0  # s.yaml's default schedule, "@every 1m"
POLL_EVERY = "15s"
# A deadline of 60 s: polls at 0, 15, 30 and 45 s of each timer period, the last one 15 s before the
# deadline, so its messages go out in the same invocation (a send starts only delivery.timeout, 10 s,
# before the deadline).
WHAT_IF_TIMEOUT_S = 80.0
TRIALS = 12  # one every 5 s of the timer period
STATE, WORKSPACES, RUNS = "tablestore", 10, 1000
IDLE_SAMPLES = 5
MAX_INVOCATIONS = 5  # per trial: a message not there by then is reported as not delivered
ACTIVE_HOURS, IDLE_HOURS = 4.0, 20.0  # the day the function time is costed for
SMALL_MEMORY_MB = 128  # the smallest FC memory size, for comparison


def _function_props() -> dict[str, Any]:
    """s.yaml's function properties (timeout, memorySize, cpu)."""
    data = yaml.safe_load((ROOT / "s.yaml").read_text(encoding="utf-8"))
    props: dict[str, Any] = data["resources"]["dwnotify"]["props"]
    return props


PROPS = _function_props()
FUNCTION_TIMEOUT_S = float(PROPS["timeout"])
MEMORY_MB = int(PROPS["memorySize"])
CPUS = float(PROPS["cpu"])


@dataclass(frozen=True)
class Trial:
    """One failure: seconds to its message at the DingTalk emulator, and to the first poll after it."""

    latency_s: float | None
    polled_after_s: float | None
    sent_later: bool  # found by one invocation, sent by a later one


@dataclass(frozen=True)
class Invocation:
    """One timer invocation: its simulated duration (the billed one), its wall time, its polls."""

    simulated_s: float
    wall_s: float
    polls: int
    poll_offsets_s: tuple[float, ...]  # when each poll listed the first workspace, from the start


def invoke(w: World, fire: float, timeout_s: float) -> Invocation:
    """The invocation the timer starts at `fire`, as the FC handler runs it."""
    w.clock.advance_to(fire)
    started, since = w.clock(), len(w.dataworks.calls)
    wall = time.perf_counter()
    summary = w.app.notifier.run(deadline=deadline_for(started, timeout_s))
    wall_s = time.perf_counter() - wall
    first = str(w.app.notifier.settings.dataworks.projects[0].id)
    offsets = tuple(
        round(call.at - started, 2)
        for call in w.dataworks.calls[since:]
        if call.action == "ListPipelineRuns"
        and call.params.get("ProjectId") == first
        and call.params.get("PageNumber", "1") == "1"
    )
    return Invocation(round(w.clock() - started, 3), round(wall_s, 3), summary.polls, offsets)


class _Trials:
    """Failing one run per trial on a world, invoking on the timer until its message arrives."""

    def __init__(self, w: World, timeout_s: float) -> None:
        self.world = w
        self.timeout_s = timeout_s
        self.invocations: list[Invocation] = []

    def invoke_at(self, fire: float) -> None:
        self.invocations.append(invoke(self.world, fire, self.timeout_s))

    def trial(self, fire: float, phase: float, run: tuple[int, str]) -> tuple[Trial, float]:
        """Fail `run` at `fire + phase`, invoke at `fire` and every timer after; (the trial, last fire)."""
        w = self.world
        changed_at = fire + phase
        w.schedule([run], changed_at, FAILED, status="Fail")
        before, calls = len(w.dingtalk.attempts), len(w.dataworks.calls)
        fired: list[float] = []  # the start of each invocation of this trial
        for _ in range(MAX_INVOCATIONS):
            fired.append(fire)
            self.invoke_at(fire)
            arrived = w.dingtalk.attempts[before:]
            if arrived:
                break
            fire += TIMER_S
        polled = [  # the polls of the failed run's workspace that could see the failure
            call.at
            for call in w.dataworks.calls[calls:]
            if call.action == "ListPipelineRuns" and call.params.get("ProjectId") == str(run[0])
        ]
        seen = next((at for at in polled if at >= changed_at), None)
        later = (
            bool(arrived)
            and seen is not None
            and bisect.bisect(fired, arrived[0].at) > bisect.bisect(fired, seen)
        )
        return Trial(
            round(arrived[0].at - changed_at, 2) if arrived else None,
            None if seen is None else round(seen - changed_at, 2),
            later,
        ), fire


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _latencies(
    trials: int, workspaces: int, runs: int, latency_s: float, timeout_s: float, **options: Any
) -> dict[str, Any]:
    with world(STATE, workspaces, latency_s=latency_s, **options) as w:
        w.add_active_runs(runs // workspaces)
        fire = w.clock()
        trials_on = _Trials(w, timeout_s)
        trials_on.invoke_at(fire)  # records the runs
        done: list[Trial] = []
        for index in range(trials):
            phase = (index + 0.5) * TIMER_S / trials
            trial, fire = trials_on.trial(fire + TIMER_S, phase, w.runs[index])
            done.append(trial)
    found = [trial.latency_s for trial in done]
    arrived = [latency for latency in found if latency is not None]
    active = trials_on.invocations[1:]  # the first one records the runs
    return {
        "function_timeout_s": timeout_s,
        "trials": trials,
        "phases_s": [round((index + 0.5) * TIMER_S / trials, 2) for index in range(trials)],
        "not_delivered": len(found) - len(arrived),
        "median_s": round(statistics.median(arrived), 2) if arrived else None,
        "worst_s": max(arrived, default=None),
        "best_s": min(arrived, default=None),
        "latencies_s": found,
        # From the failure to the first poll of its workspace after it: where a latency is longer, the
        # message waited for a later invocation to send it.
        "first_poll_after_s": [trial.polled_after_s for trial in done],
        "sent_by_a_later_invocation": sum(trial.sent_later for trial in done),
        "most_polls_in_one_invocation": max(i.polls for i in trials_on.invocations),
        "poll_offsets_in_an_invocation_s": list(active[-1].poll_offsets_s) if active else [],
        "active_invocations": len(active),
        "active_invocation_simulated_s": _median([i.simulated_s for i in active]),
        "active_invocation_wall_s": _median([i.wall_s for i in active]),
    }


def _idle(workspaces: int, runs: int, latency_s: float, timeout_s: float, **options: Any) -> dict[str, Any]:
    """Invocations with nothing running: every run finished and already recorded."""
    with world(STATE, workspaces, latency_s=latency_s, history=max(1, runs // workspaces), **options) as w:
        fire = w.clock()
        invoke(w, fire, timeout_s)  # records the finished runs
        samples = [invoke(w, fire + TIMER_S * (i + 1), timeout_s) for i in range(IDLE_SAMPLES)]
    return {
        "samples": len(samples),
        "polls": max(i.polls for i in samples),
        "idle_invocation_wall_s": _median([i.wall_s for i in samples]),
        "idle_invocation_simulated_s": _median([i.simulated_s for i in samples]),
    }


def gb_seconds(active_s: float | None, idle_s: float | None, memory_mb: int = MEMORY_MB) -> float | None:
    """GB-seconds a day: memory x (invocations while active x their duration + idle ones x theirs)."""
    if active_s is None or idle_s is None:
        return None
    per_hour = 3600.0 / TIMER_S
    seconds = ACTIVE_HOURS * per_hour * active_s + IDLE_HOURS * per_hour * idle_s
    return round(memory_mb / 1024 * seconds, 1)


def _cost(latencies: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
    active_s, idle_s = latencies.get("active_invocation_simulated_s"), idle.get("idle_invocation_wall_s")
    busy_s = None if active_s is None or idle_s is None else ACTIVE_HOURS * 3600 / TIMER_S * active_s
    total_s = None if busy_s is None or idle_s is None else busy_s + IDLE_HOURS * 3600 / TIMER_S * idle_s
    return {
        "active_invocation_s": active_s,
        "idle_invocation_s": idle_s,
        "function_seconds_per_day": None if total_s is None else round(total_s, 1),
        "gb_seconds_per_day": gb_seconds(active_s, idle_s),
        f"gb_seconds_per_day_at_{SMALL_MEMORY_MB}mb": gb_seconds(active_s, idle_s, SMALL_MEMORY_MB),
        "vcpu_seconds_per_day": None if total_s is None else round(CPUS * total_s, 1),
    }


def measure(
    trials: int = TRIALS,
    workspaces: int = WORKSPACES,
    runs: int = RUNS,
    latency_s: float = LATENCY_S,
    what_if: bool = True,
) -> dict[str, Any]:
    """Latency with the plain timer, and with poll_every (or why that was skipped), and their cost."""
    timeout = FUNCTION_TIMEOUT_S
    results: dict[str, Any] = {
        "state": STATE,
        "workspaces": workspaces,
        "active_runs": runs,
        "timer_s": TIMER_S,
        "function_timeout_s": timeout,
        "deadline_after_s": deadline_for(0.0, timeout),
        "timer": _latencies(trials, workspaces, runs, latency_s, timeout),
    }
    idle = {"timer": _idle(workspaces, runs, latency_s, timeout)}
    if not supports("poll_every"):
        results["poll_every_15s"] = {
            "skipped": "this version has no dataworks.poll_every (functions/dwnotify/settings.py)"
        }
    else:
        polling = _latencies(trials, workspaces, runs, latency_s, timeout, poll_every=POLL_EVERY)
        if polling["most_polls_in_one_invocation"] <= 1:
            polling = {
                "skipped": "dataworks.poll_every is accepted by the config, but no invocation polled more "
                "than once while runs were active: the poll loop is not in this version",
                "measured_anyway": polling,
            }
        results["poll_every_15s"] = polling
        idle["poll_every_15s"] = _idle(workspaces, runs, latency_s, timeout, poll_every=POLL_EVERY)
        if what_if:
            name = f"poll_every_15s_timeout_{WHAT_IF_TIMEOUT_S:g}s"
            results[name] = {
                "what_if": f"not the deployed setting: s.yaml's timeout {WHAT_IF_TIMEOUT_S:g} s instead of "
                f"{timeout:g} s, so the deadline ({deadline_for(0.0, WHAT_IF_TIMEOUT_S):g} s) leaves room "
                "for a poll at 45 s",
                **_latencies(trials, workspaces, runs, latency_s, WHAT_IF_TIMEOUT_S, poll_every=POLL_EVERY),
            }
    results["idle"] = idle
    costs = {
        name: _cost(results[name], idle[name])
        for name in ("timer", "poll_every_15s")
        if name in idle and "skipped" not in results[name]
    }
    results["function_time"] = {
        "formula": "gb_seconds_per_day = memory_mb / 1024 * (active_hours * 3600 / timer_s * "
        "active_invocation_s + idle_hours * 3600 / timer_s * idle_invocation_s)",
        "memory_mb": MEMORY_MB,
        "memory_from": "s.yaml resources.dwnotify.props.memorySize",
        "cpu": CPUS,
        "active_hours": ACTIVE_HOURS,
        "idle_hours": IDLE_HOURS,
        "timer_s": TIMER_S,
        "active_invocation_s_is": "median simulated duration of the active invocations above (with "
        "poll_every: the polls and the sleeps between them)",
        "idle_invocation_s_is": f"median measured wall time of {IDLE_SAMPLES} idle invocations ({STATE}, "
        f"{workspaces} workspaces, the injected latency; this machine, in-process emulators, warm)",
        "not_included": "cold starts, FC's billing granularity and free tier",
        **costs,
    }
    return results
