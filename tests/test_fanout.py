"""Fan-out end to end on loopback: the timer's invocation of the real handler (through the real fc2
client and the FC stand-in) becomes a coordinator that makes no DataWorks call and invokes one async
shard per slice of 40 workspaces; the shards run at once on Tablestore and announce every event once,
also when one fails after its work and FC's async retry runs it again."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dwnotify.credentials import Credentials, Secret
from dwnotify.remote import invoke
from emulators.dataworks import DataWorksEmulator
from emulators.fc import FcEmulator
from tests.conftest import ManualClock, World, open_world
from tests.helpers import TWO_STAGES, delivered

ROOT = Path(__file__).resolve().parents[1]
WORKSPACES = [20000 + i for i in range(40)]
CREDENTIALS = Credentials("test-ak", Secret("test-secret"))


@pytest.fixture
def index() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("index_for_fanout", ROOT / "functions" / "index.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["index_for_fanout"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("index_for_fanout", None)


@pytest.fixture
def fleet(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[World, FcEmulator]]:
    """A World on Tablestore watching 40 workspaces, with `scale` pointed at an FC stand-in."""
    with open_world(tmp_path, clock, "tablestore") as world:
        world.dataworks.stop()
        world.dataworks = DataWorksEmulator({"projects": WORKSPACES}, clock=clock)
        world.dataworks.start()
        fc = FcEmulator(clock=clock)
        endpoint = fc.start()
        world.config_overrides["dataworks.projects"] = WORKSPACES
        world.config_overrides["dataworks.max_qps"] = 40
        world.config_overrides["scale"] = {"shards": "auto", "endpoint": endpoint, "function": "dwnotify"}
        monkeypatch.setenv("DWNOTIFY_CONFIG", str(world.write_config()))
        for name, value in world.environ().items():
            monkeypatch.setenv(name, value)
        try:
            yield world, fc
        finally:
            fc.stop()
            world.dataworks.stop()


def _timer(fc: FcEmulator) -> dict[str, Any]:
    answer = invoke(fc.base_url, CREDENTIALS, "dwnotify", {"triggerName": "timer", "payload": ""})
    return json.loads(answer.body)


def test_forty_workspaces_in_four_shards_announce_every_event_once(
    fleet: tuple[World, FcEmulator], index: ModuleType
) -> None:
    world, fc = fleet
    running, most = [0], [0]
    lock, all_in = threading.Lock(), threading.Barrier(4, timeout=30)

    def counted(event: Any, context: Any) -> Any:
        if _event(event).get("action") == "shard":
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            all_in.wait()  # every shard is running before any goes on: they run at once
            try:
                return index.handler(event, context)
            finally:
                with lock:
                    running[0] -= 1
        return index.handler(event, context)

    fc.register("dwnotify", counted)
    failing = {project: _fail(world, project) for project in WORKSPACES}
    calls_before = world.dataworks.call_count()
    result = _timer(fc)
    assert result["action"] == "fan-out" and result["shards"] == 4 and result["errors"] == []
    assert world.dataworks.call_count() == calls_before  # the coordinator calls no DataWorks API
    assert fc.wait_idle(120)
    shards = [i for i in fc.invocations if _event(i.event).get("action") == "shard"]
    assert sorted(_event(i.event)["index"] for i in shards) == [0, 1, 2, 3]
    assert not any(i.failed for i in shards) and most[0] == 4
    _drain(world)
    ding, slack = delivered(world)
    assert set(slack) == set(failing.values()) and max(slack.values()) == 1 and max(ding.values()) == 1


def test_a_shard_that_fails_after_its_work_is_retried_without_duplicates(
    fleet: tuple[World, FcEmulator], index: ModuleType
) -> None:
    world, fc = fleet
    died = threading.Event()

    def dies_once_after_its_work(event: Any, context: Any) -> Any:
        result = index.handler(event, context)
        shard = _event(event)
        if shard.get("action") == "shard" and shard.get("index") == 2 and not died.is_set():
            died.set()
            raise RuntimeError("the instance died after committing and sending")
        return result

    fc.register("dwnotify", dies_once_after_its_work)
    failing = {project: _fail(world, project) for project in WORKSPACES}
    _timer(fc)
    assert fc.wait_idle(120)
    attempts = [i for i in fc.invocations if _event(i.event) == {"action": "shard", "index": 2, "of": 4}]
    assert len(attempts) == 2 and attempts[0].failed and not attempts[1].failed
    _drain(world)
    ding, slack = delivered(world)
    assert set(slack) == set(failing.values()) and max(slack.values()) == 1 and max(ding.values()) == 1


def test_scale_with_the_sqlite_backend_is_a_config_error(tmp_path: Path) -> None:
    from dwnotify.config import parse
    from dwnotify.errors import ConfigError
    from tests.test_config import ENV, changed

    with pytest.raises(ConfigError) as raised:
        parse(changed({"scale": {"shards": 4}}), tmp_path, ENV)
    assert any(line.startswith("scale: needs state.backend: tablestore") for line in raised.value.problems)


def _fail(world: World, project: int) -> str:
    return world.dataworks.add_run(
        project,
        status="Fail",
        stages=TWO_STAGES,
        stage_statuses={"BUILD": "Success", "DEPLOY": {"status": "Fail", "message": "节点依赖缺失"}},
    )


def _drain(world: World) -> None:
    """Deliver what the chat services' rate limits kept back (their stand-ins' clock is the World's)."""
    for _ in range(20):
        if world.tick(advance=60).messages_pending == 0:
            return


def _event(raw: Any) -> dict[str, Any]:
    event = json.loads(raw) if isinstance(raw, bytes | str) else raw
    return event if isinstance(event, dict) else {}


def test_remote_track_announces_an_old_run_within_one_invocation(
    fleet: tuple[World, FcEmulator], index: ModuleType
) -> None:
    """What a CI job does right after CreatePipelineRun: the real handler, through fc2 and FC's stand-in."""
    world, fc = fleet
    fc.register("dwnotify", index.handler)
    run_id = world.dataworks.add_run(
        20000, status="Running", stages=TWO_STAGES, stage_statuses={"BUILD": "Running"}, created=-3 * 3600
    )
    answer = invoke(fc.base_url, CREDENTIALS, "dwnotify", {"action": "track", "project": 20000, "id": run_id})
    result = json.loads(answer.body)
    assert result["action"] == "track" and result["events"] == 2 and result["api_calls"] == 1
    assert result["messages_sent"] >= 1 and any(run_id in str(m) for m in world.slack_messages())
