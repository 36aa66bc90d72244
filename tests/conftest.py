"""Shared fixtures: the emulators on 127.0.0.1 and a `World` that ticks the real code against them.

Time is one manual clock shared by the emulators and the notifier; `sleep` advances it, so retries
and rate limits are exercised without waiting. HTTP and signatures are real (the emulators check the
SDK's signature timestamp against the wall clock, as the real gateway does).

The tick-level modules in TABLESTORE_MODULES run every `world` test twice: on SQLite and on the
Tablestore emulator (state through the real `tablestore` SDK).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dwnotify import config  # noqa: E402
from dwnotify.app import App, build_app  # noqa: E402
from dwnotify.credentials import Credentials, Secret  # noqa: E402
from dwnotify.state.base import TICK_LEASE, ProjectCursor, StateStore  # noqa: E402
from dwnotify.tick import TickSummary  # noqa: E402
from emulators import DataWorksEmulator, DingTalkEmulator, SlackEmulator  # noqa: E402
from emulators.tablestore import TablestoreEmulator  # noqa: E402

DING_TOKEN = "ding-ops-token-5f1e"
DING_SECRET = "SEC0123456789abcdef0123456789abcdef"
SLACK_HOOK = "T000/B000/team-hook-9c2d"
SLACK_BOT_TOKEN = "xoxb-test-token"  # the Slack stand-in's default bot token
CREDENTIALS = Credentials("test-ak", Secret("test-secret"))
STATE_BACKENDS = ("sqlite", "tablestore")
# Modules whose `world` tests also run with state in Tablestore (the others stay on SQLite only).
TABLESTORE_MODULES = frozenset(
    {
        "test_tick",
        "test_tick_cost",
        "test_polling",
        "test_delivery",
        "test_concurrency",
        "test_discovery",
        "test_crash",
        "test_cli",
        "test_slack_app",
        "test_reminders",
        "test_daily",
        "test_track",
    }
)


def wait_for(condition: Callable[[], object], seconds: float = 5.0) -> bool:
    """Poll until `condition` holds (an emulator notices a hang-up on its next write) or time is up."""
    ends = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > ends:
            return False
        time.sleep(0.02)
    return True


class ManualClock:
    """Epoch seconds that move only when told (or when the code under test sleeps)."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)


@dataclass
class World:
    """Emulators, a config file pointing at them, and the app built from it."""

    tmp: Path
    clock: ManualClock
    dataworks: DataWorksEmulator
    dingtalk: DingTalkEmulator
    slack: SlackEmulator
    config_overrides: dict[str, Any] = field(default_factory=dict)
    app: App | None = None
    tablestore: TablestoreEmulator | None = None
    # A store that has watched the workspaces before the test starts (the usual case): on an empty
    # store runs that already finished are history. Tests of a first run or a lost store set False.
    primed: bool = True
    _primed_done: bool = False

    def config_data(self) -> dict[str, Any]:
        host = self.dataworks.base_url.removeprefix("http://")
        data: dict[str, Any] = {
            "dataworks": {
                "region": "cn-shanghai",
                "endpoint": host,
                "protocol": "http",
                "projects": [{"id": 10000, "name": "Finance DW"}, 10001],
                "lookback": "1h",
                # Off here so that the call counts of other tests stay what they measure; the tests
                # of run items (tests/test_tick_items.py) turn it on, as the default is.
                "items": False,
            },
            "state": {"backend": "sqlite", "path": str(self.tmp / "state.db")},
            "channels": {
                "ops": {
                    "type": "dingtalk",
                    "url": f"{self.dingtalk.base_url}/robot/send?access_token=${{DING_TOKEN}}",
                    "secret": "${DING_SECRET}",
                },
                "team": {"type": "slack", "url": f"{self.slack.base_url}/services/${{SLACK_HOOK}}"},
            },
            "rules": [
                {"name": "failures", "events": ["run.failed", "stage.failed"], "channels": ["ops"]},
                {"name": "everything", "events": ["*"], "channels": ["team"]},
            ],
        }
        for dotted, value in self.config_overrides.items():
            target = data
            *parents, last = dotted.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            target[last] = value
        return data

    def write_config(self) -> Path:
        """The config file (for a process to read), the store primed on first use when `primed`."""
        path = self.tmp / "notifier.yaml"
        path.write_text(yaml.safe_dump(self.config_data(), allow_unicode=True), encoding="utf-8")
        if self.primed and not self._primed_done:
            self._primed_done = True
            with closing(self._app_from(path)) as app:
                prime(app, self.clock.now)
        return path

    def environ(self) -> dict[str, str]:
        return {
            "DING_TOKEN": DING_TOKEN,
            "DING_SECRET": DING_SECRET,
            "SLACK_HOOK": SLACK_HOOK,
            "SLACK_BOT_TOKEN": SLACK_BOT_TOKEN,
        }

    def build(self, wrap_store: Callable[[StateStore], StateStore] | None = None) -> App:
        """The app on the current config; `wrap_store` (a fault seam) wraps the store its notifier uses."""
        return self._app_from(self.write_config(), wrap_store)

    def _app_from(self, path: Path, wrap_store: Callable[[StateStore], StateStore] | None = None) -> App:
        settings = config.load(path, self.environ())
        return build_app(
            settings, CREDENTIALS, clock=self.clock, sleep=self.clock.sleep, wrap_store=wrap_store
        )

    def tick(self, advance: float = 60.0) -> TickSummary:
        """Move time on by `advance` seconds, then run one tick with the (reused) app."""
        self.clock.advance(advance)
        if self.app is None:
            self.app = self.build()
        return self.app.notifier.tick()

    def ding(self) -> list[Any]:
        return self.dingtalk.messages(DING_TOKEN)

    def slack_messages(self) -> list[Any]:
        return self.slack.messages(SLACK_HOOK)


def prime(app: App, now: float) -> None:
    """Store an empty listing of every watched workspace, as a tick before the test would have."""
    projects = app.notifier.settings.dataworks.projects
    cursors = [ProjectCursor(project.id, 0, now, (), now, fingerprints={}) for project in projects]
    lease = app.store.acquire_lease(TICK_LEASE, "world-prime", 90.0, now)
    assert lease is not None
    app.store.commit(lease, [], cursors, [], now)
    app.store.release_lease(lease)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(float(int(time.time())))


@contextmanager
def open_world(tmp_path: Path, clock: ManualClock, state_backend: str = "sqlite") -> Iterator[World]:
    """Fresh emulators and state for one World (tests that need several build their own)."""
    dataworks = DataWorksEmulator({"projects": [10000, 10001, 10002]}, clock=clock)
    dingtalk = DingTalkEmulator({DING_TOKEN: DING_SECRET}, clock=clock)
    slack = SlackEmulator({SLACK_HOOK}, clock=clock)
    emulators: list[Any] = [dataworks, dingtalk, slack]
    for emulator in emulators:
        emulator.start()
    built = World(tmp_path, clock, dataworks, dingtalk, slack)
    if state_backend == "tablestore":
        built.tablestore = TablestoreEmulator("test-ak", "test-secret", "dwnotify", clock=clock)
        emulators.append(built.tablestore)
        built.config_overrides["state"] = {
            "backend": "tablestore",
            "endpoint": built.tablestore.start(),
            "instance": "dwnotify",
            "table": "dwnotify",
        }
    try:
        yield built
        # The Slack stand-in judges every payload (Block Kit's limits and slack_sdk's models): a refusal
        # that the test did not expect, and take out of `refused`, is a message the product got wrong.
        assert not built.slack.refused, f"the Slack emulator refused: {built.slack.refused}"
    finally:
        if built.app is not None:
            built.app.close()
        for emulator in emulators:
            emulator.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the `world` tests of TABLESTORE_MODULES once per state backend."""
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "state_backend" in metafunc.fixturenames and module in TABLESTORE_MODULES:
        metafunc.parametrize("state_backend", STATE_BACKENDS, indirect=True)


@pytest.fixture
def state_backend(request: pytest.FixtureRequest) -> str:
    """Where the World keeps its state: "sqlite" unless the module runs on both backends."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def world(tmp_path: Path, clock: ManualClock, state_backend: str) -> Iterator[World]:
    with open_world(tmp_path, clock, state_backend) as built:
        yield built


@pytest.fixture(autouse=True)
def _no_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's own cloud keys out of the tests (the SDK reads ALIYUN_ACCESS_KEY_*)."""
    for name in list(os.environ):
        if name.startswith(("ALIYUN_ACCESS_KEY", "ALIBABA_CLOUD_")):
            monkeypatch.delenv(name)


import httpx  # noqa: E402  (appended with the fixture below, which the chat channel tests share)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """One real HTTP client for a test that builds channels by hand (modules may define their own)."""
    with httpx.Client(timeout=5) as client:
        yield client
