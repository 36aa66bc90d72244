"""The fault suite: many ticks against hostile emulators, then every expected event counted in chat.

A seeded model moves runs through their stages and works out, from the contract's event rules alone,
which events each move must give. Each tick draws faults from `FAULTS` (DataWorks throttling storms,
5xx bursts, dropped connections, lying and malformed answers, slow drips; Tablestore 503s, busy
servers and false condition failures mid-tick, SQLite held locked by another connection; webhook
5xx, 429, errcodes, timeouts, dropped connections and drips; the notifier's clock stepped an hour
back or forward; a tick killed at a random state call, and a real `kill -9` of `python -m dwnotify
tick`). After a fault-free drain, the events announced in DingTalk and Slack are compared with the
expected ones: none lost, none unexpected, each run's in the model's order, and no repeats beyond
one per send in flight when a tick died or timed out.

Two product bugs the suite found are fixed, and their tests stand: a failed write while recording
a send repeated that message, and a run born Init and once said not to exist announced run.changed.

A run moves only once its last move was announced (so the state it moved from was committed):
then what it must announce next follows from the contract, whatever ticks failed in between. Moves
that skip stages, and runs born finished between two ticks, cover diffs across several changes.

`make test` plays a CI-sized slice; `make soak` (DWNOTIFY_SOAK=1) many more seeds and ticks. The
figures (ticks, faults by kind, events expected, delivered, duplicated, lost) go to the terminal,
past pytest's capture, and as JSON to benchmarks/results/faults.json (make test's: faults-ci.json).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tablestore as ots
from tablestore.retry import NoRetryPolicy

from dwnotify import config
from dwnotify.app import App, build_app
from dwnotify.delivery import RECORD_ATTEMPTS
from dwnotify.errors import NotifierError, StateError
from dwnotify.model import GONE, run_key
from dwnotify.state.base import PENDING
from dwnotify.tick import TICK_LEASE_S
from emulators.tablestore import TablestoreEmulator
from tests.conftest import CREDENTIALS, STATE_BACKENDS, ManualClock, World, open_world
from tests.helpers import CrashingStore, FailingStore, Killed, StoreSwitch, slack_text

ROOT = Path(__file__).resolve().parents[1]
SOAK = bool(os.environ.get("DWNOTIFY_SOAK"))
SEEDS = range(20) if SOAK else range(2)
TICKS = 80 if SOAK else 30
# make soak's figures (the README quotes them); make test's slice writes its own beside them.
RESULTS = ROOT / "benchmarks" / "results" / ("faults.json" if SOAK else "faults-ci.json")
PROJECTS = (10000, 10001)
CHANNELS = ("ops", "team")
DELIVERY_TIMEOUT_S = 1.0
CLOCK_STEPS = (-3300.0, -600.0, 0.0, 600.0, 3300.0)  # DingTalk refuses a signature an hour off its clock

# ---------------------------------------------------------------------------------------- the model
CODES = ("BUILD", "CHECK", "DEPLOY")
STAGES = [{"code": c, "step": i, "type": "Deploy", "name": f"阶段 {c}"} for i, c in enumerate(CODES, 1)]
FINAL = ("success", "fail", "terminated", "canceled")
WAITING = "Waiting"  # a status outside the contract's list: kept as it came, announced as *.changed
SPELLINGS = {
    "init": ("Init",),
    "running": ("Running", "RUNNING"),
    "success": ("Success", "SUCCESS"),
    "fail": ("Fail", "FAIL"),
    "terminated": ("Termination", "Terminated"),
    "canceled": ("Cancel", "Canceled", "CANCELLED"),
    WAITING: (WAITING,),
}
EVENT_NAMES = {"success": "succeeded", "fail": "failed", "terminated": "terminated", "canceled": "canceled"}
RUN = "RUN"  # the stage column of a run event
Key = tuple[str, str, str]  # run id, event type, stage code (RUN for run events)


@dataclass(frozen=True)
class Snapshot:
    """A run as DataWorks shows it, in the contract's normal forms."""

    status: str
    stages: tuple[str, ...]


FIRST_SIGHT = Snapshot("init", ("init",) * len(CODES))


def _event(subject: str, status: str) -> str:
    if status == "running":
        return f"{subject}.started"
    if status in EVENT_NAMES:
        return f"{subject}.{EVENT_NAMES[status]}"
    return f"{subject}.changed"


def contract_events(run_id: str, before: Snapshot | None, after: Snapshot) -> list[Key]:
    """The events a move gives, from the contract: run.started, stage events by Step, the final event.

    A run seen for the first time is compared with one whose status and stages were all init.
    """
    before = before or FIRST_SIGHT
    events: list[Key] = []
    if after.status != before.status and after.status == "running":
        events.append((run_id, "run.started", RUN))
    for code, old, new in zip(CODES, before.stages, after.stages, strict=True):
        if new != old:
            events.append((run_id, _event("stage", new), code))
    if after.status != before.status and after.status != "running":
        events.append((run_id, _event("run", after.status), RUN))
    return events


@dataclass
class ModelRun:
    """A run moving forward at random, with every event it must announce, in order."""

    id: str
    project: int
    now: Snapshot
    expected: list[Key] = field(default_factory=list)
    waiting: list[Key] = field(default_factory=list)  # the last move's events, until announced

    @property
    def final(self) -> bool:
        return self.now.status in FINAL

    def move(self, after: Snapshot) -> None:
        events = contract_events(self.id, self.now, after)
        assert events, f"a model move must announce something: {self.now} -> {after}"
        self.now = after
        self.expected += events
        self.waiting = events

    def settled(self, announced: set[Key]) -> bool:
        """Whether the last move was announced somewhere: then its state was committed."""
        return all(key in announced for key in self.waiting)


def first_state(rng: random.Random) -> Snapshot:
    """How a new run looks when it is first listed."""
    roll = rng.random()
    if roll < 0.12:  # not started yet: nothing to announce
        return FIRST_SIGHT
    if roll < 0.25:  # born and finished between two ticks
        final = rng.choice(FINAL)
        if final == "success":
            return Snapshot(final, ("success",) * len(CODES))
        at = rng.randrange(len(CODES))
        return Snapshot(final, ("success",) * at + (final,) + ("init",) * (len(CODES) - at - 1))
    if roll < 0.35:  # first seen with its first stage done
        return Snapshot("running", ("success", "running", "init"))
    if roll < 0.45:
        return Snapshot("running", ("init",) * len(CODES))
    return Snapshot("running", (rng.choice(["running", "running", WAITING]), "init", "init"))


def next_state(now: Snapshot, rng: random.Random, hurry: bool = False) -> Snapshot:
    """One forward move: a stage starts, waits, ends, or the whole run ends at once."""
    stages = list(now.stages)
    if now.status == "init":
        stages[0] = "running"
        return Snapshot("running", tuple(stages))
    current = next(i for i, s in enumerate(stages) if s not in FINAL)
    if hurry or rng.random() < 0.15:  # everything left happens between two ticks
        final = rng.choice(FINAL)
        if final == "success":
            return Snapshot(final, tuple(s if s in FINAL else "success" for s in stages))
        stages[current] = final
        return Snapshot(final, tuple(stages))
    if stages[current] in ("init", WAITING):
        stages[current] = "running" if stages[current] == WAITING or rng.random() < 0.8 else WAITING
        return Snapshot("running", tuple(stages))
    outcome = "success" if rng.random() < 0.8 else rng.choice(FINAL[1:])
    stages[current] = outcome
    if outcome != "success":
        return Snapshot(outcome, tuple(stages))
    if current + 1 == len(stages):
        return Snapshot("success", tuple(stages))
    if rng.random() < 0.5:
        stages[current + 1] = "running"
    return Snapshot("running", tuple(stages))


def spelled(status: str, rng: random.Random) -> str:
    return rng.choice(SPELLINGS.get(status, (status,)))


def publish(world: World, run: ModelRun | None, project: int, state: Snapshot, rng: random.Random) -> str:
    """Show a run's state in the DataWorks emulator (a new run when `run` is None); its id."""
    stages = {c: spelled(s, rng) for c, s in zip(CODES, state.stages, strict=True) if s != "init"}
    status = spelled(state.status, rng)
    if run is None:
        return world.dataworks.add_run(project, status=status, stages=STAGES, stage_statuses=stages)
    message = "done" if state.status in FINAL else None
    world.dataworks.set_run_status(run.id, status=status, stages=stages, message=message)
    return run.id


# ------------------------------------------------------------------------------------ what chat got
TEMPLATES = {
    # Machine-readable lines, one per event, in both real chat formats (digests keep the lines).
    "dingtalk/faults.md.j2": "### dwnotify faults\n\n{% for event in events %}\n"
    "- EV {{ run.id }} {{ event.type }} {{ event.stage.code if event.stage else 'RUN' }}\n{% endfor %}\n",
    "slack/faults.mrkdwn.j2": "*dwnotify faults*\n{% for event in events %}\n"
    "EV {{ run.id }} {{ event.type }} {{ event.stage.code if event.stage else 'RUN' }}\n{% endfor %}\n",
}
TOKEN = re.compile(r"EV ([0-9a-f-]{36}) ((?:run|stage)\.[a-z]+) ([A-Z]+)")


def posts(world: World) -> dict[str, list[list[Key]]]:
    """Each accepted post per channel, as the events it announced (escapes taken out)."""
    texts = {
        "ops": [m["markdown"]["text"] for m in world.ding()],
        "team": [slack_text(m) for m in world.slack_messages()],
    }
    return {
        channel: [[tuple(m) for m in TOKEN.findall(text.replace("\\", ""))] for text in bodies]  # type: ignore[misc]
        for channel, bodies in texts.items()
    }


def announced(world: World) -> set[Key]:
    return {key for channel in posts(world).values() for post in channel for key in post}


# ---------------------------------------------------------------------------------- the fault table
SHIM = """
import runpy, sys, time
offset = float(sys.argv.pop(1))  # the notifier's clock, which the emulators' manual clock shows
real = time.time
time.time = lambda: real() + offset
sys.argv[0] = "dwnotify"
runpy.run_module("dwnotify", run_name="__main__", alter_sys=True)
"""
MALFORMED = (
    b"<html><body>502 Bad Gateway</body></html>",
    b'{"RequestId": "X", "PagingInfo": {"PipelineRuns": [',
    b"",
    {"RequestId": "X"},
    {"RequestId": "X", "PagingInfo": {"PipelineRuns": "none", "TotalCount": "many"}},
    {"RequestId": "X", "PagingInfo": {"PipelineRuns": [{"Id": None, "Stages": 7}], "TotalCount": 1}},
    [],
)
EMPTY_PAGE = {
    "RequestId": "X",
    "PagingInfo": {"PageNumber": 1, "PageSize": 100, "TotalCount": 0, "PipelineRuns": []},
}
TS_OPERATIONS = (
    None,
    "GetRange",
    "GetRow",
    "BatchGetRow",
    "PutRow",
    "UpdateRow",
    "DeleteRow",
    "BatchWriteRow",
)


def _drips() -> bool:
    """Whether the emulators can answer a byte at a time (`drip_s`)."""
    from emulators.dataworks import DataWorksEmulator
    from emulators.slack import SlackEmulator

    return all(
        "drip_s" in inspect.signature(f).parameters for f in (DataWorksEmulator.inject, SlackEmulator.inject)
    )


@dataclass
class Soak:
    """One seeded run: the world, the notifier's clock, the faults injected and what they allow."""

    world: World
    backend: str
    rng: random.Random
    tmp: Path
    skew: float = 0.0
    skews: list[float] = field(default_factory=lambda: [0.0])
    app: App | None = None
    switch: StoreSwitch = field(default_factory=StoreSwitch)  # the fault seam of `app`'s store
    runs: list[ModelRun] = field(default_factory=list)
    ticks: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    allowed: Counter[str] = field(default_factory=Counter)  # sends that may land twice, by cause
    tick_errors: Counter[str] = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)  # the fault sequence, for a failure's report
    marks: list[tuple[int, int]] = field(default_factory=list)  # posts received by the end of each tick

    # -- the notifier ---------------------------------------------------------------------------
    def now(self) -> float:
        """The notifier's clock: the emulators' manual clock plus the current step."""
        return self.world.clock.now + self.skew

    def build(self, wrap_store: Callable[[Any], Any] | None = None) -> App:
        """A fresh instance; its store goes through `wrap_store`, else through `self.switch`."""
        settings = config.load(self.world.write_config(), self.world.environ())
        return build_app(
            settings,
            CREDENTIALS,
            clock=self.now,
            sleep=self.world.clock.sleep,
            wrap_store=wrap_store or self.switch.wrap,
        )

    def close(self) -> None:
        if self.app is not None:
            self.app.close()
            self.app = None

    def run_tick(self, app: App) -> None:
        try:
            app.notifier.tick()
        except NotifierError as error:  # the tick failed as FC would record it; the next one goes on
            kind = "StateError" if isinstance(error, StateError) else type(error).__name__
            self.tick_errors[kind] += 1
            self.log.append(f"  tick failed: {kind}: {error}")

    # -- one tick -------------------------------------------------------------------------------
    def tick(self, kinds: list[str]) -> None:
        self.ticks += 1
        self.world.clock.advance(60)
        if "kill9" in kinds:
            kinds = [kind for kind in kinds if kind not in NEED_THE_WARM_INSTANCE]
        elif "crash" in kinds:
            kinds = [kind for kind in kinds if kind != "state_error"]
        self.log.append(f"tick {self.ticks}: {', '.join(kinds) or '-'}")
        cleanups = [cleanup for kind in kinds if kind in FAULTS and (cleanup := FAULTS[kind](self))]
        began = time.monotonic()
        try:
            if "kill9" in kinds:
                self.kill_9()
            elif "crash" in kinds:
                self.crash()
            else:
                if self.app is None:
                    self.app = self.build()
                self.run_tick(self.app)
        finally:
            for cleanup in cleanups:
                cleanup()
            self.marks.append((len(self.world.dingtalk.received), len(self.world.slack.received)))
            if os.environ.get("DWNOTIFY_FAULTS_TRACE"):
                print(f"tick {self.ticks} {kinds} {time.monotonic() - began:.2f}s", file=sys.stderr)

    def crash(self) -> None:
        """A fresh instance whose process dies at a random state call, in discovery or delivery."""
        self.close()
        crash_at = self.rng.randint(0, 40)
        app = self.build(lambda store: CrashingStore(store, crash_at))
        try:
            self.run_tick(app)
            self.faults["crash (tick finished first)"] += 1
        except Killed:
            self.faults["crash"] += 1
            # Channels deliver in parallel: a process that dies may leave one post of each channel
            # sent but not yet recorded.
            self.allowed["crash"] += len(CHANNELS)
        finally:
            app.close()

    def kill_9(self) -> None:
        """`python -m dwnotify tick` in a process of its own, killed with SIGKILL at a random moment.

        Its clock is the notifier's (the emulators keep a manual one); slow webhooks widen the window
        in which a send is in flight.
        """
        self.close()
        world = self.world
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIYUN_", "ALIBABA_CLOUD_"))}
        env.update(world.environ())
        env.update(
            {"ALIBABA_CLOUD_ACCESS_KEY_ID": "test-ak", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "test-secret"}
        )
        triggers = ["dataworks", "webhook", "webhook", "time"] + (["state"] if world.tablestore else [])
        trigger, count = self.rng.choice(triggers), self.rng.randint(1, 4)
        world.dingtalk.response_delay_s = world.slack.response_delay_s = 0.2
        start = self.progress()
        command = [
            sys.executable,
            "-c",
            SHIM,
            str(self.now() - time.time()),
            "--config",
            str(world.write_config()),
            "tick",
        ]
        with open(self.tmp / f"kill-{self.ticks}.log", "wb") as stderr:
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        began, wait_s = time.monotonic(), self.rng.uniform(0.3, 2.5)
        try:
            while process.poll() is None and time.monotonic() - began < 60:
                moved = self.progress()[trigger] - start[trigger]
                due = time.monotonic() - began >= wait_s if trigger == "time" else moved >= count
                if due:
                    os.kill(process.pid, signal.SIGKILL)
                    break
                time.sleep(0.003)
            process.wait(timeout=60)
        finally:
            world.dingtalk.response_delay_s = world.slack.response_delay_s = 0.0
        if process.returncode == -signal.SIGKILL:
            self.faults[f"kill9 ({trigger})"] += 1
            self.allowed["kill9"] += len(CHANNELS)  # one post per channel, as for a crash
        else:  # 1: the tick failed on its own (a state fault of this tick), as a tick may
            self.faults["kill9 (tick finished first)"] += 1
            assert process.returncode in (0, 1), (self.tmp / f"kill-{self.ticks}.log").read_text()

    def progress(self) -> Counter[str]:
        """Requests each service has seen so far, for the kill triggers."""
        world = self.world
        return Counter(
            dataworks=world.dataworks.call_count(),
            webhook=len(world.dingtalk.attempts) + len(world.slack.attempts),
            state=world.tablestore.request_count() if world.tablestore else 0,
        )

    # -- the runs -------------------------------------------------------------------------------
    def move_runs(self, new: int, moves: int, hurry: bool = False) -> None:
        seen = announced(self.world)
        for _ in range(new):
            project = self.rng.choice(PROJECTS)
            state = first_state(self.rng)
            run = ModelRun(publish(self.world, None, project, state, self.rng), project, FIRST_SIGHT)
            if state != FIRST_SIGHT:
                run.move(state)
            self.runs.append(run)
        ready = [run for run in self.runs if not run.final and run.settled(seen)]
        for run in self.rng.sample(ready, k=min(len(ready), moves)):
            after = next_state(run.now, self.rng, hurry)
            publish(self.world, run, run.project, after, self.rng)
            run.move(after)

    def pending(self) -> int:
        assert self.app is not None
        return sum(1 for m in self.app.store.report().messages if m.status == PENDING)


Arm = Callable[[Soak], Callable[[], None] | None]  # arms a fault before a tick; returns its cleanup
FAULTS: dict[str, Arm] = {}
BACKENDS: dict[str, tuple[str, ...]] = {}


def fault(name: str, backends: tuple[str, ...] = STATE_BACKENDS) -> Callable[[Arm], Arm]:
    """Register a kind of fault in the table the ticks draw from."""

    def register(arm: Arm) -> Arm:
        FAULTS[name], BACKENDS[name] = arm, backends
        return arm

    return register


@fault("dw_throttle_storm")
def _throttle(soak: Soak) -> None:
    action = soak.rng.choice([None, "ListPipelineRuns"])
    soak.world.dataworks.inject(action, "Throttling.User", times=soak.rng.randint(3, 12))
    soak.faults["dw_throttle_storm"] += 1


@fault("dw_5xx_burst")
def _dw_5xx(soak: Soak) -> None:
    code = soak.rng.choice(["InternalError", "ServiceUnavailable"])
    soak.world.dataworks.inject(None, code, times=soak.rng.randint(1, 6))
    soak.faults["dw_5xx_burst"] += 1


@fault("dw_drop")
def _dw_drop(soak: Soak) -> None:
    soak.world.dataworks.drop_connections(soak.rng.randint(1, 3))
    soak.faults["dw_drop"] += 1


@fault("dw_lying_total")
def _dw_total(soak: Soak) -> Callable[[], None]:
    soak.world.dataworks.claim_total = soak.rng.choice([0, 1, 2, 10_000, 10**9])
    soak.faults["dw_lying_total"] += 1
    return lambda: setattr(soak.world.dataworks, "claim_total", None)


@fault("dw_lying_page_size")
def _dw_page(soak: Soak) -> Callable[[], None]:
    soak.world.dataworks.serve_page_size = soak.rng.randint(1, 3)
    soak.faults["dw_lying_page_size"] += 1
    return lambda: setattr(soak.world.dataworks, "serve_page_size", None)


@fault("dw_lying_empty")
def _dw_empty(soak: Soak) -> None:
    soak.world.dataworks.inject_answer("ListPipelineRuns", EMPTY_PAGE, times=soak.rng.randint(1, 2))
    soak.faults["dw_lying_empty"] += 1


def _not_found(soak: Soak) -> int:
    return sum(1 for call in soak.world.dataworks.calls if call.code == "Invalid.Pipeline.NotFound")


@fault("dw_lying_not_found")
def _dw_not_found(soak: Soak) -> Callable[[], None]:
    """A short page hides moving runs, and DataWorks then says one of them does not exist."""
    dataworks = soak.world.dataworks
    dataworks.serve_page_size = dataworks.claim_total = 1
    dataworks.inject("GetPipelineRun", "Invalid.Pipeline.NotFound", times=soak.rng.randint(1, 2))
    before = _not_found(soak)

    def cleanup() -> None:
        dataworks.serve_page_size = dataworks.claim_total = None
        told = _not_found(soak) - before  # none when no moving run was hidden this tick
        soak.faults["dw_lying_not_found" if told else "dw_lying_not_found (not asked)"] += 1

    return cleanup


@fault("dw_malformed")
def _dw_malformed(soak: Soak) -> None:
    body = soak.rng.choice(MALFORMED)
    action = soak.rng.choice([None, "ListPipelineRuns", "GetPipelineRun"])
    soak.world.dataworks.inject_answer(action, body, times=soak.rng.randint(1, 3))
    soak.faults["dw_malformed"] += 1


@fault("dw_poison_run")
def _dw_poison(soak: Soak) -> Callable[[], None] | None:
    moving = [run for run in soak.runs if not run.final]
    if not moving:
        return None
    run = soak.rng.choice(moving)
    soak.world.dataworks.run_overrides[run.id] = soak.rng.choice([{"Stages": 7}, {"Status": ["Fail"]}])
    soak.faults["dw_poison_run"] += 1
    return lambda: soak.world.dataworks.run_overrides.pop(run.id, None) and None


@fault("dw_drip")
def _dw_drip(soak: Soak) -> None:
    if not DRIPS:
        return
    soak.world.dataworks.inject(None, "InternalError", drip_s=0.005, drip_headers=soak.rng.random() < 0.5)  # type: ignore[call-arg]
    soak.faults["dw_drip"] += 1


@fault("wh_5xx")
def _wh_5xx(soak: Soak) -> None:
    times = soak.rng.randint(1, 4)
    if soak.rng.random() < 0.5:
        soak.world.slack.inject(status=soak.rng.choice([500, 502, 503]), body="rollup_error", times=times)
    else:
        soak.world.dingtalk.inject(status=soak.rng.choice([500, 502]), body="bad gateway", times=times)
    soak.faults["wh_5xx"] += 1


@fault("wh_429")
def _wh_429(soak: Soak) -> None:
    if soak.rng.random() < 0.6:
        wait = str(soak.rng.randint(1, 120))
        soak.world.slack.inject(status=429, body="rate_limited", headers={"Retry-After": wait})
    else:  # DingTalk's own: HTTP 200 with an errcode
        body = soak.rng.choice(
            [{"errcode": -1, "errmsg": "系统繁忙"}, {"errcode": 130101, "errmsg": "send too fast"}]
        )
        soak.world.dingtalk.inject(status=200, body=body, times=soak.rng.randint(1, 3))
    soak.faults["wh_429"] += 1


@fault("wh_drop")
def _wh_drop(soak: Soak) -> None:
    hook = soak.rng.choice([soak.world.slack, soak.world.dingtalk])
    hook.drop_connections(soak.rng.randint(1, 2))
    soak.faults["wh_drop"] += 1


@fault("wh_timeout")
def _wh_timeout(soak: Soak) -> Callable[[], None]:
    """A webhook slower than delivery.timeout: what it accepts after the client gave up may land twice."""
    hook = soak.rng.choice([soak.world.slack, soak.world.dingtalk])
    before = len(hook.received)
    hook.response_delay_s = DELIVERY_TIMEOUT_S + 0.3
    soak.faults["wh_timeout"] += 1

    def cleanup() -> None:
        hook.response_delay_s = 0.0
        time.sleep(0.4)  # the last slow answer lands (or not) before anything is counted
        soak.allowed["wh_timeout"] += len(hook.received) - before

    return cleanup


@fault("wh_drip")
def _wh_drip(soak: Soak) -> None:
    if not DRIPS:
        return
    hook = soak.rng.choice([soak.world.slack, soak.world.dingtalk])
    hook.inject(status=503, body="x" * 100, drip_s=0.02, drip_headers=soak.rng.random() < 0.5)  # type: ignore[call-arg]
    soak.faults["wh_drip"] += 1


@fault("clock_step")
def _clock_step(soak: Soak) -> None:
    soak.skew = soak.rng.choice([s for s in CLOCK_STEPS if s != soak.skew])
    soak.skews.append(soak.skew)
    soak.faults[f"clock_step (to {soak.skew:+.0f} s)"] += 1


@fault("sqlite_locked", ("sqlite",))
def _sqlite_locked(soak: Soak) -> Callable[[], None]:
    """Another connection holds the write lock for a moment mid-tick, then lets go."""
    path = soak.tmp / "state.db"
    hold_s = soak.rng.uniform(0.05, 0.6)
    after = soak.rng.randint(0, 4)
    start = soak.world.dataworks.call_count()
    done, taken = threading.Event(), threading.Event()

    def hold() -> None:
        while soak.world.dataworks.call_count() - start < after:
            if done.wait(0.002):
                return
        connection = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            taken.set()
            time.sleep(hold_s)
            connection.execute("ROLLBACK")
        finally:
            connection.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()

    def cleanup() -> None:
        done.set()
        thread.join(timeout=30)
        soak.faults["sqlite_locked" if taken.is_set() else "sqlite_locked (tick done first)"] += 1

    return cleanup


@fault("state_error")
def _state_error(soak: Soak) -> Callable[[], None]:
    """One state call of the tick fails (a lock past SQLite's busy timeout, a full disk, an outage)."""
    if soak.app is None:
        soak.app = soak.build()
    store = FailingStore(soak.switch.real, soak.rng.randint(0, 40))
    soak.switch.armed = store

    def cleanup() -> None:
        soak.switch.armed = None
        soak.faults[f"state_error ({store.failed})" if store.failed else "state_error (tick done first)"] += 1

    return cleanup


def records_a_send(operation: str, rows: str) -> bool:
    """Whether a Tablestore write is (or may be) the one that records a send: the channel lease's
    budget update, or the outbox rows it marks sent."""
    return (operation == "UpdateRow" and "'channel:" in rows) or (
        operation in ("PutRow", "BatchWriteRow") and "'outbox/" in rows
    )


def _tablestore(code: str | None) -> Callable[[Soak], Callable[[], None]]:
    def arm(soak: Soak) -> Callable[[], None]:
        tablestore = soak.world.tablestore
        assert tablestore is not None
        served = len(tablestore.faults_served)
        # A condition is checked on single-row writes only (a batch reports it per row).
        operations = (
            ("PutRow", "UpdateRow", "DeleteRow") if code == "OTSConditionCheckFail" else TS_OPERATIONS
        )
        operation, skip = soak.rng.choice(operations), soak.rng.randint(0, 8)
        # Only a timeout leaves the client unsure whether a write was made; the others say it was not.
        unsure = code in (None, "OTSTimeout") and operation not in ("GetRange", "GetRow", "BatchGetRow")
        applied = unsure and soak.rng.random() < 0.5
        if code is None:
            tablestore.drop_connections(soak.rng.randint(1, 2), operation, skip=skip, applied=applied)
        else:
            tablestore.inject(operation, code, soak.rng.randint(1, 3), skip=skip, applied=applied)

        def cleanup() -> None:  # a mid-tick fault: what the tick did not reach is taken back
            tablestore.clear_faults()
            for fault in tablestore.faults_served[served:]:
                what = fault.code or "dropped"
                soak.faults[f"ts {what}{' (applied)' if fault.applied else ''}"] += 1
                soak.log.append(f"  tablestore {what} on {fault.operation} {fault.rows}"[:200])
            # A write recording a send that fails on every try is a tick dying between a send and
            # its record: the contract allows that one message again.
            recording = Counter(
                (fault.operation, str(fault.rows))
                for fault in tablestore.faults_served[served:]
                if records_a_send(fault.operation, str(fault.rows))
            )
            soak.allowed["record_failed_every_try"] += sum(
                1 for count in recording.values() if count >= RECORD_ATTEMPTS
            )

        return cleanup

    return arm


for _name, _code in {
    "ts_unavailable": "OTSServerUnavailable",
    "ts_busy": "OTSServerBusy",
    "ts_condition": "OTSConditionCheckFail",
    "ts_timeout": "OTSTimeout",
    "ts_drop": None,
}.items():
    fault(_name, ("tablestore",))(_tablestore(_code))
# Tick-replacing faults: `Soak.tick` runs that tick in a dying process instead of the warm instance
# (and leaves out the faults that need the warm instance, or would blur what a kill may repeat).
REPLACING = ("kill9", "crash")
NEED_THE_WARM_INSTANCE = frozenset({"crash", "state_error", "wh_timeout"})
for _name in REPLACING:
    fault(_name)(lambda soak: None)
DRIPS = _drips()


# Faults that cost real seconds (a process start, a timeout, a drip): each run plays every one of them
# once; make soak also draws them, at a quarter of the others' rate.
COSTLY = frozenset({"kill9", "wh_timeout", "wh_drip", "dw_drip"})


def draw(rng: random.Random, kinds: list[str]) -> list[str]:
    """Faults for one tick: often one, sometimes two, now and then none."""
    weights = [(0.25 if SOAK else 0.0) if kind in COSTLY else 1.0 for kind in kinds]
    picked = []
    if rng.random() < 0.65:
        picked += rng.choices(kinds, weights)
    if rng.random() < 0.3:
        picked += rng.choices(kinds, weights)
    return picked


# ------------------------------------------------------------------------------------- the figures
@dataclass
class Tally:
    """Expected announcements (each event in each channel) against what chat received."""

    expected: int
    delivered: int
    duplicated: int
    lost: list[tuple[str, Key]]
    unexpected: list[tuple[str, Key]]
    out_of_order: list[tuple[str, str]]
    repeat_posts: int


def tally(runs: list[ModelRun], received: dict[str, list[list[Key]]]) -> Tally:
    """Count what chat got against the model."""
    expected = [key for run in runs for key in run.expected]
    wanted = set(expected)
    lost: list[tuple[str, Key]] = []
    unexpected: list[tuple[str, Key]] = []
    out_of_order: list[tuple[str, str]] = []
    delivered = duplicated = repeat_posts = 0
    for channel in CHANNELS:
        counts: Counter[Key] = Counter()
        firsts: dict[str, list[Key]] = {}
        for post in received[channel]:
            repeat_posts += any(counts[key] for key in post)
            for key in post:
                if not counts[key] and key in wanted:
                    firsts.setdefault(key[0], []).append(key)
                counts[key] += 1
        delivered += sum(1 for key in counts if key in wanted)
        duplicated += sum(n - 1 for n in counts.values())
        lost += [(channel, key) for key in expected if key not in counts]
        unexpected += [(channel, key) for key in counts if key not in wanted]
        for run in runs:
            order = [key for key in run.expected if key in counts]
            if firsts.get(run.id, []) != order:
                out_of_order.append((channel, run.id))
    return Tally(
        len(expected) * len(CHANNELS),
        delivered,
        duplicated,
        lost,
        unexpected,
        out_of_order,
        repeat_posts,
    )


def repeats(received: dict[str, list[list[Key]]], marks: list[tuple[int, int]]) -> list[str]:
    """Each repeated post: its channel, the tick it came in, and the tick of the first copy."""

    def tick_of(channel: str, index: int) -> int:
        column = CHANNELS.index(channel)
        return next((t for t, mark in enumerate(marks, 1) if index < mark[column]), len(marks))

    lines = []
    for channel in CHANNELS:
        first: dict[Key, int] = {}
        for index, post in enumerate(received[channel]):
            again = [key for key in post if key in first]
            if again:
                ticks = sorted({tick_of(channel, first[key]) for key in again})
                lines.append(
                    f"{channel}: tick {tick_of(channel, index)} repeats {len(again)} of tick {ticks}"
                )
            for key in post:
                first.setdefault(key, index)
    return lines


def disorder(soak: Soak, received: dict[str, list[list[Key]]], result: Tally) -> str:
    """For each run announced out of order: what the model expected, and each post with its tick."""
    lines = []
    for channel, run_id in result.out_of_order[:5]:
        run = next(run for run in soak.runs if run.id == run_id)
        lines.append(f"{channel} {run_id}: expected {[key[1:] for key in run.expected]}")
        for index, post in enumerate(received[channel]):
            mine = [key[1:] for key in post if key[0] == run_id]
            if mine:
                column = CHANNELS.index(channel)
                tick = next((t for t, mark in enumerate(soak.marks, 1) if index < mark[column]), 0)
                lines.append(f"  post {index} in tick {tick} ({len(post)} events): {mine}")
    return "\n".join(lines)


RESULTS_BY_RUN: list[dict[str, Any]] = []


SUMMED = (
    "ticks",
    "runs",
    "expected",
    "delivered",
    "duplicated",
    "lost",
    "unexpected",
    "out_of_order",
    "repeat_posts",
)


def say(config: pytest.Config, line: str) -> None:
    """A line on the terminal, past pytest's capture: the figures show in make test and make soak alike."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(line, flush=True)


def describe(figures: dict[str, Any]) -> str:
    allowed = figures["allowed_repeats"]
    causes = ", ".join(f"{k} {v}" for k, v in sorted(allowed.items()) if v) or "none"
    fired = sum(n for kind, n in figures["faults"].items() if "first)" not in kind)
    return (
        f"{figures['ticks']} ticks, {fired} faults, {figures['expected']} events "
        f"expected, {figures['delivered']} delivered, {figures['duplicated']} duplicated "
        f"({figures['repeat_posts']} posts repeated; {sum(allowed.values())} allowed: {causes}), "
        f"{figures['lost']} lost, {figures['unexpected']} unexpected, "
        f"{figures['out_of_order']} runs out of order"
    )


@pytest.fixture(scope="module", autouse=True)
def _figures(pytestconfig: pytest.Config) -> Iterator[None]:
    """All runs' figures at the end: on the terminal, and as JSON in benchmarks/results/."""
    yield
    if not RESULTS_BY_RUN:
        return
    total: dict[str, Any] = {name: sum(r[name] for r in RESULTS_BY_RUN) for name in SUMMED}
    total["faults"] = dict(sorted(sum((Counter(r["faults"]) for r in RESULTS_BY_RUN), Counter()).items()))
    total["allowed_repeats"] = dict(sum((Counter(r["allowed_repeats"]) for r in RESULTS_BY_RUN), Counter()))
    total["tick_errors"] = dict(sum((Counter(r["tick_errors"]) for r in RESULTS_BY_RUN), Counter()))
    say(pytestconfig, f"\nfault suite, {len(RESULTS_BY_RUN)} runs: {describe(total)}")
    say(pytestconfig, "faults by kind: " + ", ".join(f"{k} {v}" for k, v in total["faults"].items()))
    report = {
        "command": "make soak" if SOAK else "make test",
        "seeds": len(SEEDS),
        "ticks_per_run": TICKS,
        "backends": list(STATE_BACKENDS),
        "drips": DRIPS,
        "total": total,
        "by_run": RESULTS_BY_RUN,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# -------------------------------------------------------------------------------------------- tests
def _world_config(world: World, tmp: Path) -> None:
    templates = tmp / "templates"
    for name, text in TEMPLATES.items():
        (templates / name).parent.mkdir(parents=True, exist_ok=True)
        (templates / name).write_text(text, encoding="utf-8")
    world.config_overrides["templates"] = str(templates)
    world.config_overrides["rules"] = [
        {"name": "everything", "events": ["*"], "channels": list(CHANNELS), "template": "faults"}
    ]
    world.config_overrides["delivery"] = {"timeout": f"{DELIVERY_TIMEOUT_S:.0f}s"}
    world.config_overrides["dataworks.projects"] = list(PROJECTS)
    world.config_overrides["dataworks.timeout"] = "1s"


def play(soak: Soak, ticks: int) -> None:
    """Ticks under faults (each kind at least once), then a drain without any until chat is quiet."""
    kinds = [kind for kind in FAULTS if soak.backend in BACKENDS[kind]]
    if not DRIPS:
        kinds = [kind for kind in kinds if not kind.endswith("_drip")]
    ticks_for = soak.rng.sample(range(2, ticks + 1), k=min(len(kinds), ticks - 1))
    planned = {tick: [kind] for kind, tick in zip(kinds, ticks_for, strict=False)}
    soak.tick([])  # the workspaces are watched before any run is created: every run is news
    for index in range(2, ticks + 1):
        soak.move_runs(new=soak.rng.choice([0, 1, 1, 2]), moves=soak.rng.randint(0, 4))
        soak.tick(planned.get(index, []) + draw(soak.rng, kinds))
    soak.skew = max(soak.skews)  # no step back while draining: what waited is due
    quiet = 0
    for _ in range(200):
        soak.move_runs(new=0, moves=len(soak.runs), hurry=True)
        soak.tick([])
        settled = all(run.final and run.settled(announced(soak.world)) for run in soak.runs)
        quiet = quiet + 1 if settled and soak.pending() == 0 else 0
        if quiet >= 3:
            break


@pytest.mark.parametrize("state_backend", STATE_BACKENDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_every_expected_event_is_announced_once_under_faults(
    tmp_path: Path, seed: int, state_backend: str, request: pytest.FixtureRequest
) -> None:
    clock = ManualClock(float(int(time.time())))
    with open_world(tmp_path, clock, state_backend) as world:
        _world_config(world, tmp_path)
        soak = Soak(world, state_backend, random.Random(f"{seed}/{state_backend}"), tmp_path)
        try:
            play(soak, TICKS)
            received = posts(world)
        finally:
            soak.close()
    result = tally(soak.runs, received)
    allowed = sum(soak.allowed.values())
    figures = {
        "seed": seed,
        "backend": state_backend,
        "ticks": soak.ticks,
        "runs": len(soak.runs),
        "faults": dict(sorted(soak.faults.items())),
        "tick_errors": dict(soak.tick_errors),
        "expected": result.expected,
        "delivered": result.delivered,
        "duplicated": result.duplicated,
        "lost": len(result.lost),
        "unexpected": len(result.unexpected),
        "out_of_order": len(result.out_of_order),
        "repeat_posts": result.repeat_posts,
        "allowed_repeats": dict(sorted(soak.allowed.items())),
    }
    RESULTS_BY_RUN.append(figures)
    say(request.config, f"\nfaults, seed {seed}, {state_backend}: {describe(figures)}")
    story = "\n".join(soak.log)
    if os.environ.get("DWNOTIFY_FAULTS_TRACE"):
        print(story)
    assert not result.lost, f"lost {result.lost[:10]} (seed {seed}, {state_backend}):\n{story}"
    assert not result.unexpected, f"unexpected {result.unexpected[:10]}:\n{story}"
    assert not result.out_of_order, f"out of order:\n{disorder(soak, received, result)}\n{story}"
    story += "\n" + "\n".join(repeats(received, soak.marks))
    assert result.repeat_posts <= allowed, (
        f"{result.repeat_posts} posts repeated, {dict(soak.allowed)} allowed:\n{story}"
    )


# ------------------------------------------------- one failure at each request or call of a tick, walked
@dataclass(frozen=True)
class Walked:
    """What one failure, at request or call number `at` of a tick, did to that tick's announcements."""

    at: int
    hit: str  # the call or request the failure hit
    lost: int
    repeated: int


def _walk(world: World, fail: Callable[[StoreSwitch, int], Callable[[], str | None]]) -> list[Walked]:
    """Tick after tick, two new runs and one failure at the next request or call; what each did.

    `fail(app, k)` arms the k-th failure and returns what it hit, once served; the walk ends at the
    first tick that made fewer requests than k.
    """
    _world_config(world, world.tmp)
    switch = StoreSwitch()
    world.app = app = world.build(wrap_store=switch.wrap)
    world.tick()  # watching before the runs appear
    walked = []
    for k in range(300):
        stages = {"BUILD": "Success", "CHECK": "Success", "DEPLOY": "Fail"}
        run_ids = {
            world.dataworks.add_run(10000, status="Fail", stages=STAGES, stage_statuses=stages)
            for _ in range(2)
        }
        hit = fail(switch, k)
        world.clock.advance(60)
        with contextlib.suppress(NotifierError):
            app.notifier.tick()
        if hit() is None:
            break
        world.tick(advance=TICK_LEASE_S + 30)  # whatever the failed tick held has expired
        lost = repeated = 0
        for channel_posts in posts(world).values():
            counts = Counter(key for post in channel_posts for key in post if key[0] in run_ids)
            lost += 4 * len(run_ids) - len(counts)  # stage.succeeded x2, stage.failed, run.failed
            repeated += sum(n - 1 for n in counts.values())
        walked.append(Walked(k, str(hit()), lost, repeated))
    assert len(walked) > 10, "the walk ended before it reached delivery"
    return walked


def _fail_state_call(world: World) -> Callable[[StoreSwitch, int], Callable[[], str | None]]:
    def fail(switch: StoreSwitch, k: int) -> Callable[[], str | None]:
        store = FailingStore(switch.real, k)
        switch.armed = store
        return lambda: store.failed

    return fail


def _fail_tablestore_request(
    world: World, code: str | None
) -> Callable[[StoreSwitch, int], Callable[[], str | None]]:
    tablestore = world.tablestore
    assert tablestore is not None

    def fail(switch: StoreSwitch, k: int) -> Callable[[], str | None]:
        tablestore.clear_faults()
        served = len(tablestore.faults_served)
        if code is None:
            tablestore.drop_connections(1, skip=k)
        elif code == "timeout":  # the request is carried out, and the answer says it timed out
            tablestore.inject(None, "OTSTimeout", skip=k, applied=True)
        else:
            tablestore.inject(None, code, skip=k)
        return lambda: next((f"{f.operation} {f.rows}" for f in tablestore.faults_served[served:]), None)

    return fail


WALKS = {
    "state error/sqlite": ("sqlite", _fail_state_call),
    "state error/tablestore": ("tablestore", _fail_state_call),
    "tablestore 503": ("tablestore", lambda world: _fail_tablestore_request(world, "OTSServerUnavailable")),
}
if SOAK:  # a walk over the requests of a Tablestore tick takes seconds: the rest in make soak
    WALKS["tablestore dropped"] = ("tablestore", lambda world: _fail_tablestore_request(world, None))
    WALKS["tablestore timeout, applied"] = (
        "tablestore",
        lambda world: _fail_tablestore_request(world, "timeout"),
    )
_walked: dict[str, list[Walked]] = {}


def walked(name: str, tmp_path_factory: pytest.TempPathFactory) -> list[Walked]:
    """One walk per name, shared by the test that nothing is lost and the one that nothing repeats."""
    if name not in _walked:
        backend, arm = WALKS[name]
        tmp = tmp_path_factory.mktemp("walk")
        with open_world(tmp, ManualClock(float(int(time.time()))), backend) as world:
            _walked[name] = _walk(world, arm(world))
    return _walked[name]


@pytest.mark.parametrize("name", WALKS)
def test_one_store_failure_at_any_point_of_a_tick_loses_nothing(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert [w for w in walked(name, tmp_path_factory) if w.lost] == []


@pytest.mark.parametrize("name", WALKS)
def test_one_store_failure_at_any_point_of_a_tick_repeats_nothing(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert [w for w in walked(name, tmp_path_factory) if w.repeated] == []


# ---------------------------------------------------------------------- the Tablestore fault control
def test_tablestore_emulator_injects_errors_drops_and_applied_failures() -> None:
    with TablestoreEmulator() as emulator:
        client = ots.OTSClient(
            emulator.endpoint, "test-ak", "test-secret", "dwnotify", retry_policy=NoRetryPolicy()
        )
        client.create_table(
            ots.TableMeta("t", [("pk", "STRING")]),
            ots.TableOptions(-1, 1),
            ots.ReservedThroughput(ots.CapacityUnit(0, 0)),
        )
        emulator.inject("PutRow", "OTSServerUnavailable", skip=1)
        client.put_row("t", ots.Row([("pk", "a")], [("v", 1)]))  # skipped: goes through
        with pytest.raises(ots.OTSServiceError) as unavailable:
            client.put_row("t", ots.Row([("pk", "b")], [("v", 2)]))
        assert (unavailable.value.http_status, unavailable.value.code) == (503, "OTSServerUnavailable")
        emulator.inject("PutRow", "OTSConditionCheckFail", applied=True)
        with pytest.raises(ots.OTSServiceError) as condition:
            client.put_row("t", ots.Row([("pk", "c")], [("v", 3)]))
        assert (condition.value.http_status, condition.value.code) == (403, "OTSConditionCheckFail")
        _, row, _ = client.get_row("t", [("pk", "c")], max_version=1)
        assert row is not None and row.attribute_columns[0][1] == 3  # applied, yet reported failed
        emulator.drop_connections(1, "GetRow")
        emulator.inject("GetRow", "OTSServerBusy", times=5)
        with pytest.raises(Exception, match=r"Remote end closed|aborted"):
            client.get_row("t", [("pk", "a")], max_version=1)
        assert emulator.faults_pending() == 5
        emulator.clear_faults()
        assert client.get_row("t", [("pk", "b")], max_version=1)[1] is None  # the 503 applied nothing
        assert [(f.operation, f.code, f.applied) for f in emulator.faults_served] == [
            ("PutRow", "OTSServerUnavailable", False),
            ("PutRow", "OTSConditionCheckFail", True),
            ("GetRow", None, False),
        ]


# ------------------------------------------------------------- a run DataWorks once said did not exist
def _said_not_found_then_listed_again(world: World, status: str, stages: dict[str, str]) -> list[Key]:
    """A run hidden behind a short page, fetched by id and told not found, then listed as it is."""
    _world_config(world, world.tmp)
    world.tick()  # watching before the runs appear
    shown = world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
    )
    hidden = world.dataworks.add_run(  # older than `shown`: not the one the short page 1 holds
        10000, status=status, stages=STAGES, stage_statuses=stages,
        created=world.dataworks.scenario_offset() - 1,
    )  # fmt: skip
    world.tick()
    world.dataworks.set_run_status(shown, stages={"BUILD": "Success", "CHECK": "Running"})  # moves the count
    world.dataworks.serve_page_size = world.dataworks.claim_total = 1  # page 1 holds the newest only
    world.dataworks.inject("GetPipelineRun", "Invalid.Pipeline.NotFound")
    world.tick()
    world.dataworks.serve_page_size = world.dataworks.claim_total = None
    assert world.dataworks.call_count("GetPipelineRun") == 1
    assert world.app is not None
    assert world.app.store.load_runs([run_key(10000, hidden)])[run_key(10000, hidden)].status == GONE
    world.tick()
    world.tick()
    return [key for channel in posts(world).values() for post in channel for key in post if key[0] == hidden]


def test_a_run_not_started_that_dataworks_once_said_did_not_exist_announces_nothing(world: World) -> None:
    assert _said_not_found_then_listed_again(world, "Init", {}) == []


def test_a_running_run_that_dataworks_once_said_did_not_exist_announces_each_event_once(world: World) -> None:
    keys = _said_not_found_then_listed_again(world, "Running", {"BUILD": "Running"})
    hidden = keys[0][0]
    expected = [(hidden, "run.started", RUN), (hidden, "stage.started", "BUILD")]
    assert sorted(keys) == sorted(expected * len(CHANNELS))
