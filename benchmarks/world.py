"""A benchmark world: the product wired to in-process emulators on 127.0.0.1, on a controllable clock.

`World` holds the App (the real DataWorks client, state store and chat channels, built by
`build_app`), the emulators it talks to (DataWorks and Tablestore with an injected latency per
request, DingTalk and Slack without) and `SimClock`, the one clock all of them read. Its runs are
`active` runs, created before the lookback so that a first tick records them without announcing
them, each with three stages and its first stage running.
"""

from __future__ import annotations

import heapq
import itertools
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dwnotify import config
from dwnotify.app import App, build_app
from dwnotify.credentials import Credentials, Secret
from dwnotify.settings import DataWorksSettings
from emulators import DataWorksEmulator, DingTalkEmulator, SlackEmulator
from emulators.scenario import parse_change

LATENCY_S = 0.020  # per request, on DataWorks and on Tablestore
MAX_QPS = 50  # the target setting for the wall-to-floor ratio
CREDENTIALS = Credentials("test-ak", Secret("test-secret"))
STAGES = [
    {"code": "BUILD", "step": 1, "type": "Build", "name": "发布包构建"},
    {"code": "CHECK", "step": 2, "type": "Check", "name": "发布检查"},
    {"code": "DEPLOY", "step": 3, "type": "Deploy", "name": "发布到生产环境"},
]
RUNNING = {"BUILD": "Running"}
MOVED = {"BUILD": "Success", "CHECK": "Running"}  # a run that moves one stage on
FAILED = {"BUILD": "Success", "CHECK": {"status": "Fail", "message": "节点 ods_user 依赖缺失"}}
CREATED_BEFORE_S = 2 * 3600  # older than the default 1 h lookback: recorded at first sight, not announced


def supports(option: str) -> bool:
    """Whether `dataworks.<option>` exists in this version of the product's settings."""
    return option in getattr(DataWorksSettings, "__dataclass_fields__", {})


class SimClock:
    """Real time plus jumps: time flows during a tick as it does, and `sleep` or `advance` jump ahead.

    The product's short waits (its rate limiter's spacing at `max_qps` 50) are slept for real, so wall
    times include them; longer ones (a chat's rate budget, a retry's backoff, polling again) become
    jumps, counted in `jumped_s`. Actions scheduled with `at` run as the clock passes their time.
    """

    REAL_SLEEP_MAX_S = 0.05

    def __init__(self, start: float | None = None) -> None:
        self._offset = 0.0 if start is None else start - time.time()  # `start`: the epoch it reads now
        self._lock = threading.Lock()
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self.jumped_s = 0.0

    def __call__(self) -> float:
        return time.time() + self._offset

    def sleep(self, seconds: float) -> None:
        """What the product calls to wait: a real sleep if short, else a jump (counted)."""
        if seconds <= self.REAL_SLEEP_MAX_S:
            time.sleep(max(0.0, seconds))
            self.run_due()
            return
        with self._lock:
            self.jumped_s += seconds
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Jump `seconds` ahead, running every action whose time has come (in time order)."""
        with self._lock:
            self._offset += max(0.0, seconds)
        self.run_due()

    def advance_to(self, epoch_s: float) -> None:
        """Jump to `epoch_s` (no-op if it has passed)."""
        self.advance(epoch_s - self())

    def at(self, epoch_s: float, action: Callable[[], None]) -> None:
        """Run `action` once the clock reaches `epoch_s`."""
        with self._lock:
            heapq.heappush(self._due, (epoch_s, next(self._order), action))

    def run_due(self) -> None:
        """Run the scheduled actions whose time has come."""
        while True:
            with self._lock:
                if not self._due or self._due[0][0] > self():
                    return
                _, _, action = heapq.heappop(self._due)
            action()


@dataclass
class World:
    """The product and its emulators, with the runs the world was made with."""

    app: App
    dataworks: DataWorksEmulator
    dingtalk: DingTalkEmulator
    slack: SlackEmulator
    clock: SimClock
    state: str
    workspaces: int
    tmp: Path  # holds the config file, SQLite files, anything the world writes
    tablestore: Any = None
    runs: list[tuple[int, str]] = field(default_factory=list)  # (project, run id), in creation order

    @property
    def latency_s(self) -> float:
        """The injected latency of the DataWorks emulator (the Tablestore one has the same)."""
        return float(self.dataworks.response_delay_s)

    @property
    def config_path(self) -> Path:
        """The world's notifier.yaml (a child process can tick with it)."""
        return self.tmp / "notifier.yaml"

    def set_latency(self, seconds: float) -> None:
        """Change the injected latency of both DataWorks and Tablestore."""
        self.dataworks.response_delay_s = seconds
        if self.tablestore is not None:
            self.tablestore.latency_s = seconds

    def add_active_runs(self, per_workspace: int) -> None:
        """`per_workspace` running runs in each workspace, created before the lookback."""
        created = self.dataworks.scenario_offset() - CREATED_BEFORE_S
        for project in range(10000, 10000 + self.workspaces):
            for _ in range(per_workspace):
                run_id = self.dataworks.add_run(
                    project, status="Running", stages=STAGES, stage_statuses=RUNNING, created=created
                )
                self.runs.append((project, run_id))

    def move(self, runs: list[tuple[int, str]], stages: dict[str, Any], status: str = "Running") -> None:
        """Change these runs now in the emulator."""
        for project, run_id in runs:
            self.dataworks.set_run_status(run_id, status=status, stages=stages, project=project)

    def schedule(
        self, runs: list[tuple[int, str]], at: float, stages: dict[str, Any], status: str = "Running"
    ) -> None:
        """Change these runs at epoch `at` in the emulator's scenario: the change shows from the moment
        the clock reaches `at` exactly, however the clock gets there (a jump, a sleep, a poll). Call it
        between invocations, when no request is in flight."""
        scenario = self.dataworks.scenario
        for project, run_id in runs:
            spec = scenario.find(project, run_id)
            if spec is None:
                raise KeyError(f"no run {run_id!r} in workspace {project}")
            doc = {"at": at - scenario.start, "status": status, "stages": stages}
            spec.add_change(parse_change(doc, f"run {run_id}", {stage.code for stage in spec.stages}))

    def calls_by_workspace(self, since: int) -> Counter[str]:
        """DataWorks requests per workspace since the `since`-th call of the emulator's log."""
        return Counter(call.params.get("ProjectId", "") for call in self.dataworks.calls[since:])


def config_data(
    dataworks: DataWorksEmulator,
    workspaces: int,
    state: dict[str, Any],
    dingtalk: DingTalkEmulator,
    slack: SlackEmulator,
    **dataworks_options: Any,
) -> dict[str, Any]:
    """The notifier.yaml of a benchmark world: failures to DingTalk, every event to Slack."""
    return {
        "dataworks": {
            "region": "cn-shanghai",
            "endpoint": dataworks.base_url.removeprefix("http://"),
            "protocol": "http",
            "projects": [10000 + i for i in range(workspaces)],
            "max_qps": MAX_QPS,
            # The benchmarks measure discovery and delivery: a run's items (one call at its first
            # message, one at its first failure) would only add the same calls to every strategy.
            "items": False,
            **dataworks_options,
        },
        "state": state,
        "channels": {
            "ops": {"type": "dingtalk", "url": f"{dingtalk.base_url}/robot/send?access_token=bench"},
            "team": {"type": "slack", "url": f"{slack.base_url}/services/T/B/bench"},
        },
        "rules": [
            {"name": "failures", "events": ["run.failed", "stage.failed"], "channels": ["ops"]},
            {"name": "all", "events": ["*"], "channels": ["team"]},
        ],
    }


def state_config(state: str, tmp: Path, tablestore: Any, name: str = "dwnotify") -> dict[str, Any]:
    """The `state:` section for a backend: a SQLite file in `tmp`, or a table on the emulator."""
    if state == "sqlite":
        return {"backend": "sqlite", "path": str(tmp / f"{name}.db")}
    return {"backend": "tablestore", "endpoint": tablestore.endpoint, "instance": "bench", "table": name}


@contextmanager
def world(
    state: str,
    workspaces: int,
    *,
    latency_s: float = LATENCY_S,
    history: int = 0,
    start: float | None = None,
    **dataworks_options: Any,
) -> Iterator[World]:
    """A started world with no active runs yet (`history` finished runs per workspace in DataWorks),
    its clock at `start` (epoch seconds; default now)."""
    clock = SimClock(start)
    projects = [10000 + i for i in range(workspaces)]
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dwnotify-bench-")))
        scenario = {"projects": projects, "history": dict.fromkeys(projects, history) if history else {}}
        dataworks = DataWorksEmulator(scenario, clock=clock, latency_s=latency_s)
        dingtalk = DingTalkEmulator({"bench": None}, clock=clock, per_minute=10**6)
        slack = SlackEmulator({"T/B/bench"}, clock=clock, rate_per_s=10**6, burst=10**6)
        emulators: list[Any] = [dataworks, dingtalk, slack]
        tablestore = None
        if state == "tablestore":
            from emulators.tablestore import TablestoreEmulator

            tablestore = TablestoreEmulator(instance="bench", clock=clock, latency_s=latency_s)
            emulators.append(tablestore)
        for emulator in emulators:
            emulator.start()
            stack.callback(emulator.stop)
        data = config_data(
            dataworks, workspaces, state_config(state, tmp, tablestore), dingtalk, slack, **dataworks_options
        )
        path = tmp / "notifier.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        app = build_app(config.load(path, {}), CREDENTIALS, clock=clock, sleep=clock.sleep)
        stack.callback(app.close)
        yield World(app, dataworks, dingtalk, slack, clock, state, workspaces, tmp, tablestore)


def round_trips(store: Any) -> tuple[int, int]:
    """A store's (round trips, write round trips) so far."""
    return int(getattr(store, "round_trips", 0)), int(getattr(store, "write_round_trips", 0))


@contextmanager
def delivery_trips(store: Any) -> Iterator[list[tuple[int, int]]]:
    """While open, every `Deliverer.deliver` appends the (round trips, write round trips) it made on
    `store`: what a tick spent delivering, told apart from what it spent discovering and committing."""
    from dwnotify.delivery import Deliverer

    original = Deliverer.deliver
    spent: list[tuple[int, int]] = []

    def deliver(self: Deliverer, deadline: float | None = None) -> Any:
        before = round_trips(store)
        try:
            return original(self, deadline)
        finally:
            after = round_trips(store)
            spent.append((after[0] - before[0], after[1] - before[1]))

    setattr(Deliverer, "deliver", deliver)  # noqa: B010 - mypy refuses a plain assignment to a method
    try:
        yield spent
    finally:
        setattr(Deliverer, "deliver", original)  # noqa: B010


def network_floor_ms(latency_s: float, calls_by_workspace: Counter[str], state: str, trips: int) -> float:
    """The latency-bound least wall time: each workspace's requests one after another, the workspaces in
    parallel, then the state round trips one after another (SQLite's cost no network)."""
    sequential_calls = max(calls_by_workspace.values(), default=0)
    remote_trips = trips if state == "tablestore" else 0
    return round(latency_s * 1000 * (sequential_calls + remote_trips), 1)


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, rounded; None when the denominator is 0."""
    return round(numerator / denominator, 3) if denominator else None


def product_tick(w: World, advance_s: float = 60.0) -> dict[str, Any]:
    """One tick of the product `advance_s` after the last, with what it cost."""
    w.clock.advance(advance_s)
    store, since = w.app.store, len(w.dataworks.calls)
    trips, writes = round_trips(store)
    jumped = w.clock.jumped_s
    with delivery_trips(store) as delivering:
        started = time.perf_counter()
        summary = w.app.notifier.tick()
        wall_ms = (time.perf_counter() - started) * 1000
    trips, writes = round_trips(store)[0] - trips, round_trips(store)[1] - writes
    delivery_trips_made = sum(t for t, _ in delivering)
    delivery_writes = sum(wr for _, wr in delivering)
    by_workspace = w.calls_by_workspace(since)
    floor = network_floor_ms(w.latency_s, by_workspace, w.state, trips)
    return {
        "dataworks_calls": summary.api_calls,
        "state_round_trips": trips,
        "state_write_round_trips": writes,
        # Writes of the tick's commit (lease, intent, runs, cursors, release) and of its delivery (each
        # chat post recorded before the next, one write each by design); the delivery's reads too.
        "commit_write_round_trips": writes - delivery_writes,
        "delivery_round_trips": delivery_trips_made,
        "delivery_write_round_trips": delivery_writes,
        "chat_posts": summary.chat_posts,
        "events": summary.events,
        "messages_sent": summary.messages_sent,
        "wall_ms": round(wall_ms, 1),
        "network_floor_ms": floor,
        "wall_over_floor": ratio(wall_ms, floor),
        "waits_jumped_ms": round((w.clock.jumped_s - jumped) * 1000, 1),
    }


def steady_ticks(w: World, repeat: int) -> dict[str, Any]:
    """The last of `repeat` ticks in a row, with the median wall time of them all."""
    ticks = [product_tick(w) for _ in range(repeat)]
    last = dict(ticks[-1])
    last["wall_ms"] = round(statistics.median(t["wall_ms"] for t in ticks), 1)
    last["wall_over_floor"] = ratio(last["wall_ms"], last["network_floor_ms"])
    return last
