"""`{"action": "track"}` and `{"action": "tick"}`: the handler's explicit actions, and `Notifier.track`
against the emulators on SQLite and Tablestore: a run announced at once whatever its age (also one
recorded silently as history), never twice, and polled from then on."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dwnotify.errors import ConfigError, NotifierError
from dwnotify.state.base import TICK_LEASE
from tests.conftest import World
from tests.helpers import STAGES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def index() -> Iterator[ModuleType]:
    """functions/index.py, imported as FC imports it."""
    spec = importlib.util.spec_from_file_location("index_for_track", ROOT / "functions" / "index.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["index_for_track"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("index_for_track", None)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"action": "tick"}, ("tick", None, None, False)),
        ({"action": "tick", "dry_run": True}, ("tick", None, None, True)),
        ({"action": "shard", "index": 1, "of": 4}, ("shard", None, None, False)),
        (b'{"action": "track", "project": 10000, "id": "a7ef-1"}', ("track", 10000, "a7ef-1", False)),
        ({"action": "track", "project": "10000", "id": " a7ef-1 "}, ("track", 10000, "a7ef-1", False)),
    ],
)
def test_actions_give_options(index: ModuleType, event: Any, expected: tuple[Any, ...]) -> None:
    options = index.parse_event(event)
    assert (options.action, options.project, options.run_id, options.dry_run) == expected


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({"action": "explode"}, 'event.action: must be "tick", "track"'),
        ({"action": None}, 'event.action: must be "tick", "track"'),
        ({"action": "shard", "index": 4, "of": 4}, "event.index: must be this shard's number, 0 to 3"),
        ({"action": "shard", "index": 0}, "event.of: must be the number of shards"),
        ({"action": "shard", "index": 0, "of": 0}, "event.of"),
        ({"action": "shard", "index": True, "of": 2}, "event.index"),
        ({"action": "track", "id": "x"}, "event.project: must be the run's workspace id"),
        ({"action": "track", "project": 10000}, "event.id: must be the run's id"),
        ({"action": "track", "project": True, "id": "x"}, "event.project"),
        ({"action": "track", "project": 10000, "id": "x", "dry_run": True}, "it has no dry run"),
        ({"action": "tick", "project": 10000}, "event.project: is not a key of the tick action"),
    ],
)
def test_malformed_actions_are_errors_naming_the_key(index: ModuleType, event: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        index.parse_event(event)
    assert any(problem in line for line in raised.value.problems), raised.value.problems


def _notifier(world: World) -> Any:
    if world.app is None:
        world.app = world.build()
    return world.app.notifier


def test_a_run_recorded_silently_as_history_is_announced_when_tracked(world: World) -> None:
    old = world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}, created=-3 * 3600
    )
    assert world.tick().events == 0 and world.slack_messages() == []  # history: recorded silently
    summary = _notifier(world).track(10000, old)
    assert summary.events == 2 and summary.api_calls == 1  # run.started, stage.started; one GetPipelineRun
    assert len(world.slack_messages()) == 1 and old in str(world.slack_messages()[0])
    world.dataworks.set_run_status(old, stages={"BUILD": "Success", "CHECK": "Running"})
    assert world.tick().events == 2  # from then on, as usual
    assert _notifier(world).track(10000, old).events == 0  # and never twice


def test_an_old_finished_run_never_stored_is_announced_at_first_sight(world: World) -> None:
    done = world.dataworks.add_run(
        10000,
        status="Success",
        stages=STAGES,
        stage_statuses={"BUILD": "Success", "CHECK": "Success", "DEPLOY": "Success"},
        created=-5 * 3600,
    )
    world.tick()
    summary = _notifier(world).track(10000, done)
    assert summary.events == 4  # three stages and the run
    assert "发布成功" in world.slack_messages()[-1]["text"]


def test_a_tracked_run_that_still_moves_is_polled_until_final(world: World) -> None:
    world.tick()
    run_id = world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}, created=-7200
    )
    _notifier(world).track(10000, run_id)
    assert world.app is not None
    [cursor] = world.app.store.load_cursors([10000]).values()
    assert run_id in cursor.active_run_ids
    world.dataworks.set_run_status(
        run_id, "Success", stages={"BUILD": "Success", "CHECK": "Success", "DEPLOY": "Success"}
    )
    assert world.tick().events == 4


def test_tracking_a_run_dataworks_does_not_know_is_an_error(world: World) -> None:
    with pytest.raises(NotifierError, match="does not know it"):
        _notifier(world).track(10000, "no-such-run")


def test_track_waits_for_a_polling_invocation_to_let_go(world: World) -> None:
    run_id = world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
    )
    notifier = _notifier(world)
    assert world.app is not None
    assert world.app.store.acquire_lease(TICK_LEASE, "poller", 20.0, world.clock.now) is not None
    summary = notifier.track(10000, run_id, deadline=world.clock.now + 50)
    assert summary.events == 2 and 20 <= sum(world.clock.slept) < 30  # waited out the poller's lease


# -- shards -------------------------------------------------------------------------------------------
def test_shards_split_the_workspaces_by_region_each_in_exactly_one() -> None:
    from dwnotify.settings import ProjectSettings
    from dwnotify.shards import shard_projects

    projects = [
        ProjectSettings(10000 + i, None, ("cn-shanghai", "cn-hangzhou")[i % 2], "x") for i in range(40)
    ]
    shards = [shard_projects(projects, index, 4) for index in range(4)]
    assert sorted(p.id for shard in shards for p in shard) == sorted(p.id for p in projects)
    assert [len(shard) for shard in shards] == [10, 10, 10, 10]
    assert {p.region for p in shards[0]} == {"cn-hangzhou"} and {p.region for p in shards[3]} == {
        "cn-shanghai"
    }
    assert [len(shard_projects(projects[:6], index, 4)) for index in range(4)] == [2, 2, 1, 1]
    with pytest.raises(ValueError):
        shard_projects(projects, 4, 4)


def test_shards_poll_at_once_and_announce_each_event_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from tests.conftest import ManualClock
    from tests.helpers import at_once, delivered, fail_run

    def pausing(seconds: float) -> None:
        # A shard waiting for the other's commit must really let it run: the World's clock jumps, and
        # fifty jumps of 0.2 s would pass in no time while the other still commits.
        time.sleep(min(seconds, 0.05))
        ManualClock.sleep(world.clock, seconds)

    monkeypatch.setattr(world.clock, "sleep", pausing)
    run_ids = {fail_run(world, project) for project in (10000, 10001) for _ in range(3)}
    apps = [world.build() for _ in range(2)]  # two invocations: each its own clients and store
    shards = [app.notifier.shard(index, 2) for index, app in enumerate(apps)]
    assert [[p.id for p in shard.settings.dataworks.projects] for shard in shards] == [[10000], [10001]]
    world.clock.advance(60)
    summaries = at_once([shard.tick for shard in shards])
    assert sorted(s.events for s in summaries) == [9, 9] and not any(s.discovery_skipped for s in summaries)
    world.tick(advance=120)  # whatever a channel lease kept back goes now
    ding, slack = delivered(world)
    assert set(slack) == run_ids and max(slack.values()) == 1 and max(ding.values()) == 1
    for app in apps:
        app.close()
