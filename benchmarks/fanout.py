"""Fan-out: one tick over 50 watched workspaces by one invocation, and by 2, 5 and 10 shards at once.

On the benchmark World (Tablestore, the injected latency on DataWorks and Tablestore), each workspace
has `runs` running runs recorded by a first tick. Then, for each shard count in turn, as production
runs them: one App per shard (its own DataWorks client, state store and channels, as its own FC
instance would have), each client keeping to `max_qps / of` (`share_qps`), the shards' ticks started
together in threads, all on the one Tablestore table. Each shard count gets, after a tick that warms
the new Apps (as warm instances), two ticks:

- `unchanged`: nothing moved since the last tick;
- `changed`: a tenth of the runs moved one stage on since (a fifth of those failed instead), fresh
  runs each round, so that there is real diffing, committing and messages.

A tick's wall time is its slowest shard's, from the moment they all start. The DataWorks limiter's
spacing and the commits' waits for the tick lease are slept for real (they are what fan-out changes);
a chat's rate budget (delivery threads' waits) jumps the clock as in the other benchmarks, counted
in `waits_jumped_ms`. After each round the messages the channel leases kept back are delivered, and
every event must have been announced exactly once: each moved run in one Slack message, each failed
one in one DingTalk message, no other run in any, and as many events as one invocation found.

Measured at max_qps 5 (the Basic edition's limit) and 50. `budget` estimates from the changed tick how
many workspaces (and runs, at `runs` each) fit in a 40 s tick: its wall time scaled linearly, capped by
the account's QPS (which every shard shares, so no shard count raises that cap).

The shards are threads of this one process, with the emulators: they share its CPU (and GIL), where
production shards each have an instance's own. Their waits on the network, the QPS limiter and the
lease overlap as in production; their parsing, diffing and rendering do not.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from benchmarks.world import CREDENTIALS, FAILED, LATENCY_S, MOVED, World, ratio, round_trips, world
from dwnotify import config
from dwnotify.app import App, build_app
from dwnotify.tick import Notifier, TickSummary

WORKSPACES = 50
RUNS = 50  # per workspace: one page of ListPipelineRuns each
SHARDS = (1, 2, 5, 10)
QPS = (5, 50)
MOVE_EVERY = 10  # a tenth of the runs move between two ticks
FAIL_EVERY = 5  # and a fifth of those fail instead
BUDGET_S = 40.0
RUN_ID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
DELIVERY_THREADS = "dwnotify-delivery"
JITTER_S = 0.05


@dataclass(frozen=True)
class Scale:
    """How big: workspaces, runs per workspace, shard counts, QPS settings, injected latency."""

    workspaces: int = WORKSPACES
    runs: int = RUNS
    shards: tuple[int, ...] = SHARDS
    qps: tuple[int, ...] = QPS
    latency_s: float = LATENCY_S


FULL = Scale()


class ShardSleep:
    """The shards' sleep: real time, except a chat's rate budget (a delivery thread's wait), which jumps
    the clock as `SimClock.sleep` does. A jump moves every shard's clock, so the DataWorks limiter's
    spacing (up to 2 s at 0.5 QPS a shard) must be slept, not jumped, for the shards to keep to it."""

    def __init__(self, w: World) -> None:
        self._clock = w.clock

    def __call__(self, seconds: float) -> None:
        if threading.current_thread().name.startswith(DELIVERY_THREADS):
            self._clock.sleep(seconds)
            return
        time.sleep(max(0.0, seconds))
        self._clock.run_due()


def _ids(texts: Iterable[str]) -> Counter[str]:
    return Counter(run_id for text in texts for run_id in RUN_ID.findall(text))


def _slack_ids(w: World, since: int) -> Counter[str]:
    posts = w.slack.messages("T/B/bench")[since:]
    texts = [
        "\n".join(b["text"]["text"] for b in post.get("blocks", []) if b.get("type") == "section")
        or str(post.get("text", ""))
        for post in posts
    ]
    return _ids(texts)


def _ding_ids(w: World, since: int) -> Counter[str]:
    return _ids(str(post["markdown"]["text"]) for post in w.dingtalk.messages("bench")[since:])


def peak_calls_per_s(starts: Sequence[float], jitter_s: float = JITTER_S) -> int:
    """The most requests the emulator saw in any one second (sliding), as DataWorks counts them against
    its QPS limit; the window is `jitter_s` short of a second, so that requests the client started a
    second apart, which reached the emulator a few ms closer together, are not counted in one."""
    ordered, first, peak = sorted(starts), 0, 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= 1.0 - jitter_s:
            first += 1
        peak = max(peak, last - first + 1)
    return peak


def _concurrent_tick(w: World, apps: list[App], notifiers: list[Notifier]) -> dict[str, Any]:
    """One tick of every shard, started together; each shard's figures and the tick's."""
    w.clock.advance(60.0)
    since, jumped = len(w.dataworks.calls), w.clock.jumped_s
    trips_before = [round_trips(app.store) for app in apps]
    barrier = threading.Barrier(len(notifiers) + 1)
    summaries: list[TickSummary | None] = [None] * len(notifiers)
    ended = [0.0] * len(notifiers)
    errors: list[BaseException] = []

    def tick(index: int) -> None:
        barrier.wait()
        try:
            summaries[index] = notifiers[index].tick()
        except BaseException as error:  # re-raised below, in the benchmark's thread
            errors.append(error)
        finally:
            ended[index] = time.perf_counter()

    threads = [threading.Thread(target=tick, args=(i,), name=f"shard-{i}") for i in range(len(notifiers))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    shards = []
    for index, summary in enumerate(summaries):
        assert summary is not None and not summary.errors, f"shard {index}: {summary}"
        trips = round_trips(apps[index].store)
        shards.append(
            {
                "workspaces": len(notifiers[index].settings.dataworks.projects),
                "wall_ms": round((ended[index] - started) * 1000, 1),
                "dataworks_calls": summary.api_calls,
                "state_round_trips": trips[0] - trips_before[index][0],
                "state_write_round_trips": trips[1] - trips_before[index][1],
                "events": summary.events,
                "messages_queued": summary.messages_queued,
                "messages_sent": summary.messages_sent,
                "discovery_skipped": summary.discovery_skipped,
            }
        )
    calls = w.dataworks.calls[since:]
    return {
        "wall_ms": max(shard["wall_ms"] for shard in shards),
        "dataworks_calls": sum(shard["dataworks_calls"] for shard in shards),
        "dataworks_calls_seen": len(calls),  # by the emulator: must match what the shards counted
        "dataworks_calls_per_shard": [shard["dataworks_calls"] for shard in shards],
        "peak_calls_per_s": peak_calls_per_s([call.at for call in calls]),
        "throttled_calls": sum(1 for call in calls if (call.code or "").startswith("Throttling")),
        "state_round_trips": sum(shard["state_round_trips"] for shard in shards),
        "state_round_trips_per_shard": [shard["state_round_trips"] for shard in shards],
        "state_write_round_trips": sum(shard["state_write_round_trips"] for shard in shards),
        "events": sum(shard["events"] for shard in shards),
        "messages_queued": sum(shard["messages_queued"] for shard in shards),
        "messages_sent": sum(shard["messages_sent"] for shard in shards),
        "waits_jumped_ms": round((w.clock.jumped_s - jumped) * 1000, 1),
        "shards": shards,
    }


def _drain(w: World) -> None:
    """Deliver what the channel leases and rate budgets kept back (no run moves meanwhile)."""
    for _ in range(20):
        summary = w.app.notifier.tick()
        assert summary.events == 0, f"a drain tick found {summary.events} events"
        if summary.messages_pending == 0:
            return
        w.clock.advance(60.0)
    raise AssertionError("messages still pending after 20 drain ticks")


def _move(w: World, round_index: int) -> tuple[set[str], set[str]]:
    """A tenth of the runs, different each round: most move one stage on, a fifth of them fail."""
    moved = w.runs[round_index % MOVE_EVERY :: MOVE_EVERY]
    failed = moved[::FAIL_EVERY]
    w.move([run for run in moved if run not in failed], MOVED)
    w.move(failed, FAILED, status="Fail")
    return {run_id for _, run_id in moved}, {run_id for _, run_id in failed}


def _assert_once(slack: Counter[str], ding: Counter[str], moved: set[str], failed: set[str]) -> None:
    """Every moved run in exactly one Slack message, every failed one in one DingTalk message."""
    missing, others = len(moved - set(slack)), len(set(slack) - moved)
    assert set(slack) == moved, f"{missing} moved runs unannounced on Slack, {others} others announced"
    assert max(slack.values(), default=1) == 1, f"announced twice on Slack: {slack.most_common(3)}"
    assert set(ding) == failed, f"{len(failed - set(ding))} failed runs unannounced on DingTalk"
    assert max(ding.values(), default=1) == 1, f"announced twice on DingTalk: {ding.most_common(3)}"


def _round(w: World, of: int, round_index: int, sleep: ShardSleep) -> dict[str, Any]:
    """`of` shards (one invocation when 1): an unchanged tick, then a tick after a tenth of the runs moved."""
    with ExitStack() as stack:
        apps = []
        for _ in range(of):
            app = build_app(config.load(w.config_path, {}), CREDENTIALS, clock=w.clock, sleep=sleep)
            stack.callback(app.close)
            app.client.share_qps(of)
            apps.append(app)
        notifiers = [app.notifier if of == 1 else app.notifier.shard(i, of) for i, app in enumerate(apps)]
        workspaces = [p.id for n in notifiers for p in n.settings.dataworks.projects]
        assert sorted(workspaces) == sorted(set(workspaces)) and len(workspaces) == w.workspaces
        _concurrent_tick(w, apps, notifiers)  # warms the new Apps (clients, connections), as warm instances
        unchanged = _concurrent_tick(w, apps, notifiers)
        assert unchanged["events"] == 0, f"an unchanged tick found {unchanged['events']} events"
        slack_since, ding_since = len(w.slack.messages("T/B/bench")), len(w.dingtalk.messages("bench"))
        moved, failed = _move(w, round_index)
        changed = _concurrent_tick(w, apps, notifiers)
    _drain(w)
    _assert_once(_slack_ids(w, slack_since), _ding_ids(w, ding_since), moved, failed)
    for figures in (unchanged, changed):
        assert figures["dataworks_calls"] == figures["dataworks_calls_seen"], figures
    changed["changed_runs"], changed["failed_runs"] = len(moved), len(failed)
    return {"shards": of, "unchanged": unchanged, "changed": changed}


def _budget(changed: dict[str, Any], workspaces: int, runs: int, max_qps: int) -> dict[str, Any]:
    """How many workspaces a tick like `changed` could cover in BUDGET_S (a linear estimate)."""
    calls_per_workspace = changed["dataworks_calls"] / workspaces
    by_wall = workspaces * BUDGET_S * 1000 / changed["wall_ms"]
    by_qps = BUDGET_S * max_qps / calls_per_workspace if calls_per_workspace else math.inf
    fit = int(min(by_wall, by_qps))
    return {
        "workspaces_by_wall": int(by_wall),
        "workspaces_by_qps": None if math.isinf(by_qps) else int(by_qps),
        "workspaces": fit,
        "runs": fit * runs,
        "bound": "qps" if by_qps <= by_wall else "wall",
    }


def _at_qps(max_qps: int, scale: Scale) -> dict[str, Any]:
    """Every shard count on one world at `max_qps`."""
    with world("tablestore", scale.workspaces, latency_s=scale.latency_s, max_qps=max_qps) as w:
        w.add_active_runs(scale.runs)
        w.clock.advance(60.0)
        first = w.app.notifier.tick()  # records every run (created before the lookback), announces none
        assert first.events == 0 and first.runs_checked == scale.workspaces * scale.runs, first
        sleep = ShardSleep(w)
        rounds = [_round(w, of, index, sleep) for index, of in enumerate(scale.shards)]
    reference = rounds[0]["changed"]["events"]
    for figures in rounds:
        assert figures["changed"]["events"] == reference, "the shards found other events than one invocation"
        figures["changed"]["budget"] = _budget(figures["changed"], scale.workspaces, scale.runs, max_qps)
        for name in ("unchanged", "changed"):
            figures[name]["speedup"] = ratio(rounds[0][name]["wall_ms"], figures[name]["wall_ms"])
    return {f"{figures['shards']}": figures for figures in rounds}


def measure(scale: Scale = FULL) -> dict[str, Any]:
    """One tick without and with fan-out, at each QPS setting."""
    results: dict[str, Any] = {
        "latency_ms": scale.latency_s * 1000,
        "workspaces": scale.workspaces,
        "runs_per_workspace": scale.runs,
        "budget_s": BUDGET_S,
        "notes": [
            "one App per shard (its own client, store, channels), share_qps(of), started together; wall_ms"
            " is the slowest shard's; the limiter's spacing and lease waits are slept, chat budgets jump",
            "changed: a tenth of the runs moved one stage on (a fifth of them failed); every event is"
            " checked announced exactly once (asserted)",
            "budget: workspaces within budget_s, the changed tick's wall scaled linearly, capped by"
            " budget_s x max_qps / calls per workspace (the account's QPS, shared by every shard)",
        ],
    }
    for max_qps in scale.qps:
        results[f"qps_{max_qps}"] = _at_qps(max_qps, scale)
    return results
