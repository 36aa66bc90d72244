"""What one tick costs: DataWorks calls, state round trips, wall time and memory, on the emulators.

Scenarios: a first tick over a deep history, steady ticks with nothing new, and a busy tick in which
many runs move at once. Every figure comes from the real code path (SDK, HTTP, SQLite or Tablestore
emulator), with the emulators in this process on 127.0.0.1.
"""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

from dwnotify import config
from dwnotify.app import App, build_app
from dwnotify.credentials import Credentials, Secret
from emulators import DataWorksEmulator, DingTalkEmulator, SlackEmulator

STAGES = [
    {"code": "BUILD", "step": 1, "type": "Build", "name": "发布包构建"},
    {"code": "CHECK", "step": 2, "type": "Check", "name": "发布检查"},
    {"code": "DEPLOY", "step": 3, "type": "Deploy", "name": "发布到生产环境"},
]


class _Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@contextmanager
def _world(
    workspaces: int, history: int, state: str, list_order: str = "newest"
) -> Iterator[tuple[App, DataWorksEmulator, _Clock, Any]]:
    clock = _Clock()
    projects = [10000 + i for i in range(workspaces)]
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        scenario = {
            "projects": projects,
            "history": dict.fromkeys(projects, history),
            "list_order": list_order,
        }
        dataworks = DataWorksEmulator(scenario, clock=clock)
        dingtalk = DingTalkEmulator({"bench": None}, clock=clock, per_minute=10**6)
        slack = SlackEmulator({"T/B/bench"}, clock=clock, rate_per_s=10**6, burst=10**6)
        for emulator in (dataworks, dingtalk, slack):
            emulator.start()
            stack.callback(emulator.stop)
        tablestore = None
        state_config: dict[str, Any] = {"backend": "sqlite", "path": str(Path(tmp) / "state.db")}
        if state == "tablestore":
            from emulators.tablestore import TablestoreEmulator

            tablestore = TablestoreEmulator(
                access_key_id="test-ak", access_key_secret="test-secret", instance="bench"
            )
            endpoint = tablestore.start()
            stack.callback(tablestore.stop)
            state_config = {
                "backend": "tablestore",
                "endpoint": endpoint,
                "instance": "bench",
                "table": "dwnotify",
            }
        data = {
            "dataworks": {
                "region": "cn-shanghai",
                "endpoint": dataworks.base_url.removeprefix("http://"),
                "protocol": "http",
                "projects": projects,
                "max_qps": 1000,
            },
            "state": state_config,
            "channels": {
                "ops": {"type": "dingtalk", "url": f"{dingtalk.base_url}/robot/send?access_token=bench"},
                "team": {"type": "slack", "url": f"{slack.base_url}/services/T/B/bench"},
            },
            "rules": [
                {"name": "failures", "events": ["run.failed", "stage.failed"], "channels": ["ops"]},
                {"name": "all", "events": ["*"], "channels": ["team"]},
            ],
        }
        path = Path(tmp) / "notifier.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        app = build_app(
            config.load(path, {}),
            Credentials("test-ak", Secret("test-secret")),
            clock=clock,
            sleep=clock.sleep,
        )
        stack.callback(app.close)
        yield app, dataworks, clock, tablestore


def _round_trips(app: App) -> int:
    return int(getattr(app.store, "round_trips", 0))


def _measured_tick(app: App, clock: _Clock, advance: float = 60.0) -> dict[str, Any]:
    clock.now += advance
    trips = _round_trips(app)
    started = time.perf_counter()
    summary = app.notifier.tick()
    wall_ms = (time.perf_counter() - started) * 1000
    return {
        "api_calls": summary.api_calls,
        "state_round_trips": _round_trips(app) - trips,
        "events": summary.events,
        "messages_sent": summary.messages_sent,
        "wall_ms": round(wall_ms, 1),
    }


def measure(
    state: str = "sqlite", workspaces: int = 3, history: int = 1000, moving: int = 50
) -> dict[str, Any]:
    """The cost of a first tick, steady ticks and a busy tick for one state backend."""
    with _world(workspaces, history, state) as (app, dataworks, clock, _):
        first = _measured_tick(app, clock)
        steady = [_measured_tick(app, clock) for _ in range(5)]
        run_ids = [
            dataworks.add_run(10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"})
            for _ in range(moving)
        ]
        started = _measured_tick(app, clock)
        for run_id in run_ids:
            dataworks.set_run_status(
                run_id,
                status="Fail",
                stages={"BUILD": "Success", "CHECK": {"status": "Fail", "message": "x"}},
            )
        busy = _measured_tick(app, clock)
    with _world(workspaces, history, state, list_order="oldest") as (app, _, clock, _):
        first_unordered = _measured_tick(app, clock)
    return {
        "state": state,
        "workspaces": workspaces,
        "history_runs_per_workspace": history,
        "first_tick": first,
        "first_tick_list_not_newest_first": first_unordered,
        "steady_tick": {
            "api_calls": steady[-1]["api_calls"],
            "state_round_trips": steady[-1]["state_round_trips"],
            "wall_ms_median": round(statistics.median(t["wall_ms"] for t in steady), 1),
        },
        f"{moving}_runs_start": started,
        f"{moving}_runs_fail": busy,
        "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
