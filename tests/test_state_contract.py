"""One contract for every StateStore, run against SQLite and against Tablestore (the real SDK over the
emulator): the same behaviours, the same races, several processes at once."""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from dwnotify.credentials import Credentials, Secret
from dwnotify.errors import ConflictError, StateError
from dwnotify.model import RunState
from dwnotify.settings import StateSettings
from dwnotify.state import open_store
from dwnotify.state import sqlite as sqlite_store
from dwnotify.state.base import (
    FAILED,
    PENDING,
    SENT,
    TICK_LEASE,
    Lease,
    OutboxMessage,
    ProjectCursor,
    StateStore,
)
from dwnotify.state.sqlite import SqliteStateStore
from emulators.tablestore import TablestoreEmulator
from tests.conftest import STATE_BACKENDS, World
from tests.helpers import Killed, cli_env, dwnotify

AK, SECRET, INSTANCE = "test-ak", "test-secret", "dwnotify"
DAY = 86400.0
NOW = float(int(time.time()))


# -- backends -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """How to open one backend's store, from any process (picklable)."""

    kind: str
    where: str  # the SQLite path, or the emulator's endpoint
    retention_s: float = 30 * DAY


def open_spec(spec: Spec) -> Any:
    """A new store on the state `spec` names."""
    if spec.kind == "sqlite":
        return SqliteStateStore(Path(spec.where), spec.retention_s)
    from dwnotify.state.tablestore import TablestoreStateStore

    return TablestoreStateStore(
        spec.where, INSTANCE, "dwnotify", Credentials(AK, Secret(SECRET)), spec.retention_s
    )


@dataclass
class Backend:
    """A store under test, and what its backend lets a test observe or move."""

    spec: Spec
    store: Any
    emulator: TablestoreEmulator | None = None

    def open(self) -> Any:
        """Another store on the same state (another FC instance)."""
        return open_spec(self.spec)

    def calls(self, api: str) -> int:
        """Requests of one API the emulator received (SQLite: round trips)."""
        return self.emulator.request_count(api) if self.emulator else self.store.round_trips

    def age(self, seconds: float) -> None:
        """Let stored data grow older (the emulator's TTL clock; SQLite prunes by the `now` it is given)."""
        if self.emulator is not None:
            self.emulator.advance(seconds)


@pytest.fixture(params=["sqlite", "tablestore"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    emulator = None
    if request.param == "sqlite":
        spec = Spec("sqlite", str(tmp_path / "state.db"), retention_s=DAY)
    else:
        emulator = TablestoreEmulator(AK, SECRET, INSTANCE)
        spec = Spec("tablestore", emulator.start(), retention_s=DAY)
    built = Backend(spec, open_spec(spec), emulator)
    try:
        yield built
    finally:
        built.store.close()
        if emulator is not None:
            emulator.stop()


def run(run_id: str, status: str = "running", version: int = 0, project: int = 10000) -> RunState:
    return RunState(
        project, run_id, status, {"BUILD": status}, frozenset({f"run:{status}"}), 1_700_000_000_000, version
    )


def message(
    message_id: str, seq: int, channel: str = "ops", run_key: str = "10000/r1", **extra: Any
) -> OutboxMessage:
    fields: dict[str, Any] = {
        "title": f"title {message_id}",
        "text": f"发布失败 {message_id}",
        "created_at": NOW,
    }
    return OutboxMessage(message_id, channel, run_key, "failures", seq, **{**fields, **extra})


def tick_lease(store: StateStore, owner: str = "tick-a", now: float = NOW, ttl: float = 90.0) -> Lease:
    lease = store.acquire_lease(TICK_LEASE, owner, ttl, now)
    assert lease is not None
    return lease


def ids(messages: list[OutboxMessage] | tuple[OutboxMessage, ...]) -> list[str]:
    return [m.id for m in messages]


def corrupt(spec: Spec, record: str, key: str, column: str = "data", value: str = '{"stages": {') -> None:
    """Overwrite one stored value behind the store's back: SQLite by UPDATE, Tablestore by the SDK.

    `record` is "run" (key "10000/r1"), "cursor" ("10000"), "lease" (its name) or "message" (its id).
    """
    if spec.kind == "sqlite":
        table, where = {
            "run": ("runs", "key"),
            "cursor": ("cursors", "project_id"),
            "lease": ("leases", "name"),
            "message": ("outbox", "id"),
        }[record]
        with sqlite3.connect(spec.where) as db:
            changed = db.execute(f"UPDATE {table} SET {column} = ? WHERE {where} = ?", (value, key))
            assert changed.rowcount == 1, (record, key)
        return
    from tablestore import Condition, OTSClient, Row, RowExistenceExpectation

    client = OTSClient(spec.where, AK, SECRET, INSTANCE)
    if record == "message":
        _, found, _ = client.get_row("dwnotify", [("pk", "msgid"), ("sk", key)], max_version=1)
        cells = {name: value for name, value, *_ in found.attribute_columns}
        pk, sk = f"outbox/{cells['channel']}", f"{int(cells['seq']):020d}/{key}"
    else:
        project, _, run_id = key.partition("/")
        pk, sk = {"run": (f"run/{project}", run_id), "cursor": ("cursor", key), "lease": ("lease", key)}[
            record
        ]
    row = Row([("pk", pk), ("sk", sk)], {"PUT": [(column, value)]})
    client.update_row("dwnotify", row, Condition(RowExistenceExpectation.EXPECT_EXIST))


# -- commit ---------------------------------------------------------------------------------------
def test_commit_round_trips_runs_cursors_and_messages(backend: Backend) -> None:
    store = backend.store
    lease = tick_lease(store)
    blocks = '[{"type": "section"}]'
    cursor = ProjectCursor(10000, 42, NOW, ("r1",), watched_since=NOW - DAY)
    sent = message("m1", 5, blocks_json=blocks, event_types=("run.failed", "stage.failed"))
    store.commit(lease, [run("r1"), run("r2", "success")], [cursor], [sent], NOW)

    again = backend.open()  # another instance sees exactly what was committed
    states = again.load_runs(["10000/r1", "10000/r2", "10000/missing"])
    assert set(states) == {"10000/r1", "10000/r2"}
    assert states["10000/r1"] == run("r1", version=1)
    assert states["10000/r2"].final and states["10000/r2"].version == 1
    assert again.load_cursors([10000, 10001]) == {10000: replace(cursor, version=1)}
    assert again.pending_messages("ops") == [sent]
    again.close()


def test_a_cursor_is_written_only_over_the_version_it_was_made_from(backend: Backend) -> None:
    store, other = backend.store, backend.open()
    prints = {"r1": "00ff", "r2": "abcd"}
    first = ProjectCursor(10000, 1, NOW, ("r1",), NOW, prints)
    store.commit(tick_lease(store), [], [first], [], NOW)
    stored = other.load_cursors([10000])[10000]
    assert stored == replace(first, version=1) and stored.fingerprints == prints
    # A slower tick that read the workspace before that commit must not put its older cursor back,
    # with or without runs and messages beside it; the current version goes in.
    with pytest.raises(ConflictError):
        other.commit(
            tick_lease(other, "tick-b", NOW + 100), [], [replace(first, total_count=0)], [], NOW + 100
        )
    with pytest.raises(ConflictError):
        other.commit(
            tick_lease(other, "tick-b", NOW + 100), [run("r9")], [first], [message("m9", 1)], NOW + 100
        )
    assert other.load_runs(["10000/r9"]) == {} and other.pending_messages("ops") == []
    newer = replace(stored, total_count=2, active_run_ids=())
    other.commit(tick_lease(other, "tick-b", NOW + 100), [run("r9")], [newer], [], NOW + 100)
    assert store.load_cursors([10000]) == {10000: replace(newer, version=2)}
    other.close()


def test_open_tick_reads_cursors_and_the_tick_lease_in_one_round_trip_and_writes_nothing(
    backend: Backend,
) -> None:
    store = backend.store
    cursor = ProjectCursor(10000, 3, NOW, ("r1",), NOW, {"r1": "aa"})
    lease = tick_lease(store, "tick-a")
    store.commit(lease, [], [cursor], [], NOW)
    reader = backend.open()
    reader.load_runs(["10000/warm"])  # a new Tablestore client first describes its table
    trips, writes = reader.round_trips, reader.write_round_trips
    start = reader.open_tick([10000, 10001], NOW + 1)
    assert (reader.round_trips - trips, reader.write_round_trips - writes) == (1, 0)
    assert start.cursors == {10000: replace(cursor, version=1)}
    assert start.busy("tick-b", NOW + 1) and not start.busy("tick-a", NOW + 1)
    store.release_lease(lease)
    assert not reader.open_tick([10000], NOW + 2).busy("tick-b", NOW + 2)
    reader.close()


def test_a_stale_version_is_a_conflict_and_writes_nothing(backend: Backend) -> None:
    store = backend.store
    lease = tick_lease(store)
    store.commit(lease, [run("r1")], [], [], NOW)
    cursor = ProjectCursor(10000, 1, NOW, ())
    with pytest.raises(ConflictError):
        store.commit(lease, [run("r2"), run("r1", "fail", version=0)], [cursor], [message("m1", 1)], NOW)
    with pytest.raises(ConflictError):
        store.commit(lease, [run("r3", version=4)], [], [], NOW)  # a version for a run never stored
    assert store.load_runs(["10000/r1", "10000/r2", "10000/r3"]) == {"10000/r1": run("r1", version=1)}
    assert store.load_cursors([10000]) == {}
    assert store.pending_messages("ops") == []
    store.commit(lease, [run("r1", "fail", version=1)], [], [], NOW)  # the current version goes in
    assert store.load_runs(["10000/r1"])["10000/r1"].version == 2


def test_commit_is_refused_once_the_tick_lease_was_taken_over(backend: Backend) -> None:
    store, other = backend.store, backend.open()
    mine = tick_lease(store, "tick-a", NOW, ttl=10)
    tick_lease(other, "tick-b", NOW + 20)  # expired, so the next tick took it
    with pytest.raises(ConflictError):
        store.commit(mine, [run("r1")], [ProjectCursor(10000, 1, NOW, ())], [message("m1", 1)], NOW + 21)
    lapsed = tick_lease(other, "tick-b", NOW + 30, ttl=10)
    with pytest.raises(ConflictError):  # expired and nobody took it: still refused
        other.commit(lapsed, [run("r1")], [], [], NOW + 45)
    assert store.load_runs(["10000/r1"]) == {} and store.pending_messages("ops") == []
    assert store.load_cursors([10000]) == {}
    other.close()


def test_a_message_whose_id_exists_is_left_as_it_is(backend: Backend) -> None:
    store = backend.store
    lease = tick_lease(store)
    store.commit(lease, [], [], [message("m1", 10, text="first"), message("m1", 11, text="again")], NOW)
    store.commit(lease, [], [], [message("m1", 20, text="second"), message("m2", 21)], NOW)
    pending = store.pending_messages("ops")
    assert [(m.id, m.text) for m in pending] == [("m1", "first"), ("m2", "发布失败 m2")]

    channel = store.acquire_lease("channel:ops", "tick-a", 60, NOW)
    store.update_messages(channel, [replace(pending[0], status=SENT, finished_at=NOW)])
    store.commit(lease, [], [], [message("m1", 30, text="third")], NOW)  # sent: not queued again
    assert ids(store.pending_messages("ops")) == ["m2"]


# -- leases ---------------------------------------------------------------------------------------
def test_lease_free_ours_others_expired_and_release_keeps_data(backend: Backend) -> None:
    store, other = backend.store, backend.open()
    held = store.acquire_lease("channel:ops", "a", 60, NOW)
    assert held is not None and held.data == {}
    assert other.acquire_lease("channel:ops", "b", 60, NOW + 30) is None  # held by someone else
    renewed = store.acquire_lease("channel:ops", "a", 60, NOW + 30)  # ours: renewed
    assert renewed is not None and renewed.expires_at == NOW + 90
    assert other.acquire_lease("channel:ops", "b", 60, NOW + 80) is None
    taken = other.acquire_lease("channel:ops", "b", 60, NOW + 91)  # expired: anyone may take it
    assert taken is not None and taken.owner == "b"
    assert store.acquire_lease("channel:ops", "a", 60, NOW + 92) is None

    store.release_lease(renewed)  # not ours any more: nothing happens
    assert store.acquire_lease("channel:ops", "c", 60, NOW + 93) is None
    other.update_messages(replace(taken, data={"sent_at": [NOW + 91.5]}), [])
    other.release_lease(taken)
    after = store.acquire_lease("channel:ops", "c", 60, NOW + 94)  # free again, data kept
    assert after is not None and after.data == {"sent_at": [NOW + 91.5]}
    other.close()


def test_a_lease_taken_by_a_clock_that_went_back_since_is_cut_to_one_ttl(backend: Backend) -> None:
    store, other = backend.store, backend.open()
    assert store.acquire_lease("channel:ops", "dead", 60, NOW) is not None  # its tick died holding it
    tick_lease(store, "dead", NOW, ttl=90)
    back = NOW - 3600  # then the clock stepped back an hour
    assert other.acquire_lease("channel:ops", "b", 60, back) is None  # cut to expire at back + 60
    assert other.acquire_lease("channel:ops", "b", 60, back + 59) is None
    assert other.acquire_lease("channel:ops", "b", 60, back + 61) is not None  # not an hour later
    assert other.acquire_lease(TICK_LEASE, "b", 90, back) is None
    assert other.acquire_lease(TICK_LEASE, "b", 90, back + 91) is not None
    # A lease only somewhat longer than the asker's own (another config, another TTL) is not cut.
    assert store.acquire_lease("channel:team", "a", 75, NOW) is not None
    assert other.acquire_lease("channel:team", "b", 60, NOW + 1) is None
    assert other.acquire_lease("channel:team", "b", 60, NOW + 74) is None
    assert other.acquire_lease("channel:team", "b", 60, NOW + 76) is not None
    other.close()


def test_update_messages_is_refused_for_a_lease_not_held(backend: Backend) -> None:
    store = backend.store
    store.commit(tick_lease(store), [], [], [message("m1", 1)], NOW)
    held = store.acquire_lease("channel:ops", "a", 60, NOW)
    assert held is not None
    [pending] = store.pending_messages("ops")
    stranger = Lease("channel:ops", "b", NOW + 60, {"sent_at": [NOW]})
    with pytest.raises(ConflictError):
        store.update_messages(stranger, [replace(pending, status=SENT, finished_at=NOW)])
    assert store.pending_messages("ops") == [pending]
    store.release_lease(held)
    again = store.acquire_lease("channel:ops", "c", 60, NOW + 1)
    assert again is not None and again.data == {}


# -- the outbox -----------------------------------------------------------------------------------
def test_pending_messages_come_in_seq_order_and_done_ones_leave(backend: Backend) -> None:
    store = backend.store
    lease = tick_lease(store)
    store.commit(lease, [], [], [message("c", 30), message("a", 10), message("b", 20)], NOW)
    store.commit(lease, [], [], [message("x", 15, channel="team")], NOW)
    assert ids(store.pending_messages("ops")) == ["a", "b", "c"]
    channel = store.acquire_lease("channel:ops", "tick-a", 60, NOW)
    first, second, _ = store.pending_messages("ops")
    store.update_messages(channel, [replace(first, status=SENT, attempts=1, finished_at=NOW)])
    store.update_messages(channel, [replace(second, attempts=1, last_error="503", next_attempt_at=NOW + 10)])
    assert ids(store.pending_messages("ops")) == ["b", "c"]
    assert store.pending_messages("ops")[0].last_error == "503"
    assert ids(store.pending_messages("team")) == ["x"]


def test_a_later_commit_comes_after_an_earlier_one_whatever_seqs_its_clock_gave(backend: Backend) -> None:
    store = backend.store
    lease = tick_lease(store)
    store.commit(lease, [], [], [message("started", 5_000), message("other", 5_001, channel="team")], NOW)
    # The next tick's clock stepped back an hour: its seqs are lower, and in order among themselves.
    store.commit(lease, [], [], [message("stage", 1_000), message("succeeded", 1_001)], NOW - 3600)
    pending = store.pending_messages("ops")
    assert ids(pending) == ["started", "stage", "succeeded"]
    assert pending[0].seq < pending[1].seq < pending[2].seq
    channel = store.acquire_lease("channel:ops", "tick-a", 60, NOW)
    store.update_messages(channel, [replace(m, status=SENT, finished_at=NOW) for m in pending])
    store.release_lease(channel)
    assert store.pending_messages("ops") == []  # nothing left pending: the highest seq is still known
    store.commit(lease, [], [], [message("again", 7)], NOW - 3500)
    [again] = backend.open().pending_messages("ops")
    assert again.id == "again" and again.seq > pending[2].seq


def test_channels_with_pending_lists_every_channel_that_has_some(backend: Backend) -> None:
    store = backend.store
    assert store.channels_with_pending() == []
    store.commit(tick_lease(store), [], [], [message("m1", 1), message("m2", 2, channel="team")], NOW)
    assert store.channels_with_pending() == ["ops", "team"]
    channel = store.acquire_lease("channel:ops", "tick-a", 60, NOW)
    for pending in store.pending_messages("ops"):
        store.update_messages(channel, [replace(pending, status=SENT, finished_at=NOW)])
    # A superset is allowed, but once a channel's list was read empty it is no longer named.
    for name in store.channels_with_pending():
        store.pending_messages(name)
    assert store.channels_with_pending() == ["team"]


def test_report_lists_moving_runs_and_pending_or_failed_messages(backend: Backend) -> None:
    store = backend.store
    lease = tick_lease(store)
    cursor = ProjectCursor(10000, 3, NOW, ("r1",))
    batch = [message("m1", 1), message("m2", 2), message("m3", 3, channel="team")]
    store.commit(lease, [run("r1"), run("r2", "success")], [cursor], batch, NOW)
    channel = store.acquire_lease("channel:ops", "tick-a", 60, NOW)
    m1, m2 = store.pending_messages("ops")
    store.update_messages(channel, [replace(m1, status=FAILED, last_error="410 gone", finished_at=NOW)])
    store.update_messages(channel, [replace(m2, status=SENT, finished_at=NOW)])
    store.release_lease(channel)
    store.channels_with_pending()
    store.pending_messages("ops")  # the mark moves past the failed message: it is still reported

    report = backend.open().report()
    assert [state.run_id for state in report.runs] == ["r1"]
    assert [(m.id, m.status) for m in report.messages] == [("m1", FAILED), ("m3", PENDING)]
    assert report.messages[0].last_error == "410 gone"


def test_finished_runs_and_messages_are_forgotten_after_retention(backend: Backend) -> None:
    store = backend.store
    lease = tick_lease(store)
    store.commit(lease, [run("r1", "success")], [], [message("m1", 1)], NOW)
    channel = store.acquire_lease("channel:ops", "tick-a", 60, NOW)
    [pending] = store.pending_messages("ops")
    store.update_messages(channel, [replace(pending, status=SENT, finished_at=NOW)])
    store.release_lease(channel)

    later = NOW + 2 * DAY
    backend.age(2 * DAY)  # Tablestore: rows pass their TTL
    store.commit(tick_lease(store, "tick-b", later), [run("r9")], [], [], later)  # SQLite prunes on commit
    assert store.load_runs(["10000/r1", "10000/r9"]).keys() == {"10000/r9"}
    store.commit(tick_lease(store, "tick-b", later), [], [], [message("m1", 50)], later)
    assert ids(store.pending_messages("ops")) == ["m1"]  # its id was forgotten too: queued anew


# -- damaged rows ---------------------------------------------------------------------------------
def test_unreadable_rows_are_warned_about_and_read_as_well_as_they_can_be(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    store = backend.store
    cursors = [ProjectCursor(10000, 3, NOW, ("r1",), NOW), ProjectCursor(10001, 1, NOW, (), NOW)]
    news = [message("m1", 1), message("m2", 2)]
    lease = tick_lease(store)
    store.commit(lease, [run("r1"), run("r2")], cursors, news, NOW)
    store.release_lease(lease)
    channel = store.acquire_lease("channel:ops", "tick-a", 60, NOW)
    assert channel is not None
    store.update_messages(replace(channel, data={"sent_at": [NOW]}), [])
    store.release_lease(channel)
    for record, key in (
        ("run", "10000/r1"),
        ("cursor", "10000"),
        ("lease", "channel:ops"),
        ("message", "m1"),
    ):
        corrupt(backend.spec, record, key)
    if backend.emulator is not None:  # the failed messages a channel's lease row remembers
        corrupt(backend.spec, "lease", "channel:ops", column="failed", value="[not json")

    again = backend.open()
    with caplog.at_level(logging.WARNING):
        report = again.report()
        states = again.load_runs(["10000/r1", "10000/r2"])
        found = again.load_cursors([10000, 10001])
        pending = again.pending_messages("ops")
        held = again.acquire_lease("channel:ops", "tick-b", 60, NOW + 1)
    # A run knows its status and version, so the next commit can overwrite it; the rest as stored.
    assert states == {
        "10000/r1": RunState(10000, "r1", "running", {}, frozenset(), None, version=1),
        "10000/r2": run("r2", version=1),
    }
    assert found == {10001: replace(cursors[1], version=1)}
    assert ids(pending) == ["m1", "m2"] and pending[0].unreadable and not pending[1].unreadable
    assert held is not None and held.data == {}
    assert [s.run_id for s in report.runs] == ["r1", "r2"] and report.runs[0].stage_statuses == {}
    assert ids(report.messages) == ["m1", "m2"] and "cannot be read" in report.messages[0].last_error
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for what in ("run 10000/r1", "workspace 10000", "lease channel:ops", "message m1"):
        assert what in warned
    assert not [r for r in caplog.records if r.levelno > logging.WARNING]

    again.commit(tick_lease(again, "tick-b", NOW + 2), [run("r1", "success", version=1)], [], [], NOW + 2)
    assert again.load_runs(["10000/r1"]) == {"10000/r1": run("r1", "success", version=2)}
    again.close()


def world_spec(world: World) -> Spec:
    """Where a World keeps its state."""
    if world.tablestore is None:
        return Spec("sqlite", str(world.tmp / "state.db"))
    return Spec("tablestore", world.config_overrides["state"]["endpoint"])


@pytest.mark.parametrize("state_backend", STATE_BACKENDS)
def test_tick_and_status_go_on_past_damaged_rows_and_the_next_commit_mends_them(world: World) -> None:
    stages = [{"code": "BUILD", "step": 1, "name": "构建"}, {"code": "DEPLOY", "step": 2, "name": "发布"}]
    run_id = world.dataworks.add_run(
        10000, status="Running", stages=stages, stage_statuses={"BUILD": "Running"}
    )
    assert world.tick().events == 2  # run.started, stage.started
    spec = world_spec(world)
    for record, key in (("run", f"10000/{run_id}"), ("cursor", "10000"), ("cursor", "10001")):
        corrupt(spec, record, key)

    status = dwnotify("--config", str(world.write_config()), "status", env=cli_env(world))
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    assert "cannot be read" in status.stderr and f"10000/{run_id}  running" in status.stdout

    world.dataworks.set_run_status(run_id, stages={"BUILD": "Success", "DEPLOY": "Running"})
    second = world.tick()
    # Nothing repeated (the run's status was kept), nothing wedged: its version let the commit in.
    assert (second.events, second.errors) == (2, [])
    assert world.tick().events == 0  # mended: not announced again and again
    world.dataworks.set_run_status(run_id, status="Success", stages={"DEPLOY": "Success"})
    assert world.tick().events == 2  # stage.succeeded, run.succeeded
    assert len(world.slack_messages()) == 3
    assert world.app is not None
    mended = world.app.store.load_runs([f"10000/{run_id}"])[f"10000/{run_id}"]
    assert mended.stage_statuses == {"BUILD": "success", "DEPLOY": "success"} and mended.final
    assert set(world.app.store.load_cursors([10000, 10001])) == {10000, 10001}


# -- cost -----------------------------------------------------------------------------------------
def test_150_runs_load_in_two_batch_reads_and_250_writes_in_two_batch_writes(backend: Backend) -> None:
    store = backend.store
    lease = tick_lease(store)
    states = [run(f"r{index:03d}") for index in range(250)]
    writes_before = backend.calls("BatchWriteRow")
    store.commit(lease, states, [], [], NOW)
    assert backend.calls("BatchWriteRow") - writes_before <= 2
    reads_before = backend.calls("BatchGetRow")
    loaded = store.load_runs([state.key for state in states[:150]])
    assert len(loaded) == 150
    assert backend.calls("BatchGetRow") - reads_before <= 2


# -- several processes ----------------------------------------------------------------------------
ROUNDS = 3
WORKERS = 4


def race(spec: Spec, index: int, barrier: Any, results: Any) -> None:
    """One process: each round, try to take the tick lease and commit; then race on a run's version."""
    store = open_spec(spec)
    owner = f"worker-{index}"
    for round_number in range(ROUNDS):
        now = NOW + 100 * round_number  # the previous round's lease (ttl 50) has expired
        barrier.wait()
        lease = store.acquire_lease(TICK_LEASE, owner, 50.0, now)
        won = False
        if lease is not None:
            state = run("shared", version=round_number)
            news = message(f"lease-{round_number}", round_number + 1, run_key="10000/shared")
            store.commit(lease, [state], [], [news], now)
            won = True
        results.put(("lease", round_number, index, won))
    for round_number in range(ROUNDS):
        now = NOW + 1000 + 100 * round_number
        lease = store.acquire_lease(f"own-{index}", owner, 50.0, now)
        assert lease is not None
        barrier.wait()
        try:
            state = run("cas", version=round_number)
            news = message(f"cas-{round_number}-{index}", 100 + round_number, run_key="10000/cas")
            store.commit(lease, [state], [], [news], now)
            won = True
        except ConflictError:
            won = False
        results.put(("cas", round_number, index, won))
    store.close()


def test_several_processes_at_once_exactly_one_wins_each_round(backend: Backend) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    results = context.Queue()
    processes = [
        context.Process(target=race, args=(backend.spec, i, barrier, results)) for i in range(WORKERS)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in range(2 * ROUNDS * WORKERS)]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    for phase in ("lease", "cas"):
        for round_number in range(ROUNDS):
            winners = [i for kind, r, i, won in outcomes if kind == phase and r == round_number and won]
            assert len(winners) == 1, (phase, round_number, outcomes)
    states = backend.store.load_runs(["10000/shared", "10000/cas"])
    assert states["10000/shared"].version == ROUNDS and states["10000/cas"].version == ROUNDS
    pending = ids(backend.store.pending_messages("ops"))
    assert [m for m in pending if m.startswith("lease-")] == [f"lease-{r}" for r in range(ROUNDS)]
    assert len([m for m in pending if m.startswith("cas-")]) == ROUNDS  # only the winners' messages


# -- opening --------------------------------------------------------------------------------------
def test_open_store_needs_credentials_for_tablestore() -> None:
    settings = StateSettings(backend="tablestore", endpoint="http://127.0.0.1:1", instance="dwnotify")
    with pytest.raises(StateError, match="credentials"):
        open_store(settings, None)


# -- SQLite only: its own errors stay behind the StateError boundary ------------------------------
def _fail_inside(store: SqliteStateStore, db: Path) -> None:
    """A failure inside the transaction that leaves it open: writing a cursor raises (as an I/O error)."""
    with sqlite3.connect(db) as other:
        other.execute(
            "CREATE TRIGGER broken BEFORE INSERT ON cursors BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )


def _fail_at_commit(store: SqliteStateStore, db: Path) -> None:
    """A failure only `COMMIT` sees: a deferred constraint that every run write breaks."""
    with sqlite3.connect(db) as other:
        other.executescript(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
            "CREATE TABLE child (id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);"
            "CREATE TRIGGER orphan AFTER INSERT ON runs BEGIN INSERT INTO child VALUES (7); END;"
        )
    store._db.execute("PRAGMA foreign_keys = ON")  # per connection: the store's own


def _fill_the_disk(store: SqliteStateStore, db: Path) -> None:
    """`database or disk is full` inside the transaction (SQLite then rolls back by itself)."""
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")


@pytest.mark.parametrize("breakage", [_fail_inside, _fail_at_commit, _fill_the_disk])
def test_sqlite_failures_in_a_write_are_state_errors_and_roll_back(tmp_path: Path, breakage: Any) -> None:
    db = tmp_path / "state.db"
    store = SqliteStateStore(db)
    lease = tick_lease(store)
    breakage(store, db)
    big = message("m1", 1, text="发布失败" * 5000)
    with pytest.raises(StateError) as failed:
        store.commit(lease, [run("r1")], [ProjectCursor(10000, 1, NOW, ())], [big], NOW)
    assert not isinstance(failed.value, ConflictError) and failed.value.__cause__ is None
    assert not store._db.in_transaction  # rolled back: the next write can begin
    assert store.load_runs(["10000/r1"]) == {} and store.pending_messages("ops") == []
    store.release_lease(lease)  # a write that does not touch what broke still works
    assert store.acquire_lease(TICK_LEASE, "tick-b", 60, NOW) is not None
    store.close()


def test_a_sqlite_state_that_cannot_be_created_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(StateError, match="cannot open the SQLite state"):
        SqliteStateStore(blocker / "state.db")


# -- Tablestore only: intents, chunks, errors -----------------------------------------------------
@pytest.fixture
def tablestore() -> Iterator[TablestoreEmulator]:
    emulator = TablestoreEmulator(AK, SECRET, INSTANCE)
    emulator.start()
    yield emulator
    emulator.stop()


def test_a_commit_killed_at_each_write_is_finished_exactly_once_by_the_next_tick() -> None:
    crash_at, finished = 1, False
    while not finished:
        with TablestoreEmulator(AK, SECRET, INSTANCE) as emulator:
            spec = Spec("tablestore", emulator.endpoint)
            store = open_spec(spec)
            lease = tick_lease(store, "tick-a", NOW, ttl=60)
            store.commit(lease, [run("r1")], [], [], NOW)
            writes, real_write, fatal = 0, store._table.write, crash_at

            def dying(batch: Any, real_write: Any = real_write, fatal: int = fatal) -> Any:
                nonlocal writes
                writes += 1
                if writes == fatal:
                    raise Killed
                return real_write(batch)

            store._table.write = dying
            cursor = ProjectCursor(10000, 2, NOW + 1, ("r1",), watched_since=NOW)
            news = [message("m1", 7), message("m2", 8, channel="team", run_key="10000/r2")]
            try:
                store.commit(lease, [run("r1", "fail", version=1), run("r2")], [cursor], news, NOW + 1)
                finished = True
            except Killed:
                pass

            # The first successor only reads at its start (a tick that may find nothing new): seeing the
            # lease left held, it finishes the commit; the second takes the lease and finds nothing to do.
            for owner, at in (("tick-b", NOW + 100), ("tick-c", NOW + 300)):
                successor = open_spec(spec)
                if owner == "tick-b":
                    start = successor.open_tick([10000], at)
                    assert not start.busy(owner, at)
                else:
                    successor.release_lease(tick_lease(successor, owner, at))
                states = successor.load_runs(["10000/r1", "10000/r2"])
                if crash_at == 1:  # died before its intent was stored: nothing happened
                    assert states == {"10000/r1": run("r1", version=1)}
                    assert successor.pending_messages("ops") == successor.pending_messages("team") == []
                else:  # its intent was stored: finished, each message once
                    assert states == {
                        "10000/r1": run("r1", "fail", version=2),
                        "10000/r2": run("r2", version=1),
                    }
                    assert successor.load_cursors([10000]) == {10000: replace(cursor, version=1)}
                    assert ids(successor.pending_messages("ops")) == ["m1"]
                    assert ids(successor.pending_messages("team")) == ["m2"]
                assert intents(successor) == []
                successor.close()
        crash_at += 1
    assert crash_at > 5  # intent, runs, messages, marks, intent deletion


def test_a_mark_read_before_a_commit_never_moves_past_its_messages(tablestore: TablestoreEmulator) -> None:
    spec = Spec("tablestore", tablestore.endpoint)
    delivering, committing = open_spec(spec), open_spec(spec)
    committing.commit(tick_lease(committing), [], [], [message("m1", 10)], NOW)
    channel = committing.acquire_lease("channel:ops", "tick-a", 60, NOW)
    [m1] = committing.pending_messages("ops")
    committing.update_messages(channel, [replace(m1, status=SENT, finished_at=NOW)])
    assert delivering.channels_with_pending() == ["ops"]  # reads the mark (10) and its version
    real_scan = delivering._table.scan

    def scan_then_commit(*args: Any, **kwargs: Any) -> Any:
        found = real_scan(*args, **kwargs)  # nothing pending yet...
        committing.commit(tick_lease(committing), [], [], [message("m2", 20)], NOW)  # ...then m2 lands
        return found

    delivering._table.scan = scan_then_commit
    assert delivering.pending_messages("ops") == []  # and would move the mark past m2: refused
    assert ids(open_spec(spec).pending_messages("ops")) == ["m2"]
    assert open_spec(spec).channels_with_pending() == ["ops"]


def test_a_large_commit_is_stored_in_chunks_and_a_partial_intent_is_dropped(
    tablestore: TablestoreEmulator,
) -> None:
    from dwnotify.state import tablestore_rows as rows

    store = open_spec(Spec("tablestore", tablestore.endpoint))
    lease = tick_lease(store)
    big = [message(f"m{index}", index, text="长" * 300_000) for index in range(4)]  # 3.6 MB of text
    intent = rows.Intent("partial", "tick-a", NOW, [run("r1")], [], big)
    chunks = intent.chunks()
    assert len(chunks) == 3
    store._table.write([store_chunk(intent, 0, chunks)])  # its writer died after one chunk of three
    store.commit(lease, [], [], big, NOW)
    assert [len(m.text) for m in store.pending_messages("ops")] == [300_000] * 4
    store.release_lease(lease)
    tick_lease(store, "tick-b", NOW + 1)
    assert intents(store) == [] and store.load_runs(["10000/r1"]) == {}


def test_an_unreadable_intent_is_dropped_instead_of_stopping_every_tick(
    tablestore: TablestoreEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    from dwnotify.state import tablestore_rows as rows
    from dwnotify.state.tablestore_client import Write

    store = open_spec(Spec("tablestore", tablestore.endpoint))
    cells = {"data": b'{"commit_id": ', "chunks": 1, "owner": "tick-a", "created_at": NOW}
    store._table.write([Write("put", rows.intent_key("broken", 0), cells)])
    with caplog.at_level(logging.ERROR):
        lease = tick_lease(store, "tick-b", NOW)
    assert intents(store) == [] and "commit broken cannot be read" in caplog.text
    store.commit(lease, [run("r1")], [], [message("m1", 1)], NOW)
    assert ids(store.pending_messages("ops")) == ["m1"]


def intents(store: Any) -> list[Any]:
    from dwnotify.state import tablestore_rows as rows

    return [row for row in store._table.scan("lease", rows.INTENT_PREFIX) if rows.intent_commit(row[0])]


def store_chunk(intent: Any, index: int, chunks: list[bytes]) -> Any:
    from dwnotify.state import tablestore_rows as rows
    from dwnotify.state.tablestore_client import Write

    cells = {"data": chunks[index], "chunks": len(chunks), "owner": intent.owner, "created_at": NOW}
    return Write("put", rows.intent_key(intent.commit_id, index), cells)


def test_errors_become_state_errors_without_the_secret_or_token(tablestore: TablestoreEmulator) -> None:
    from dwnotify.state.tablestore import TablestoreStateStore

    credentials = Credentials(AK, Secret("wrong-secret-0c7f"), Secret("sts-token-9d1e"))
    store = TablestoreStateStore(tablestore.endpoint, INSTANCE, "dwnotify", credentials)
    with pytest.raises(StateError) as refused:
        store.load_runs(["10000/r1"])
    assert "OTSAuthFailed" in str(refused.value)
    port = tablestore.endpoint.rsplit(":", 1)[1]
    tablestore.stop()
    nobody = TablestoreStateStore(
        f"http://127.0.0.1:{port}", INSTANCE, "dwnotify", credentials, socket_timeout_s=2
    )
    with pytest.raises(StateError) as unreachable:
        nobody.acquire_lease(TICK_LEASE, "a", 60, NOW)
    for error in (refused.value, unreachable.value):
        assert "wrong-secret-0c7f" not in str(error) and "sts-token-9d1e" not in str(error)
        assert error.__cause__ is None and error.__suppress_context__


def test_the_table_is_created_with_a_ttl_from_retention(tablestore: TablestoreEmulator) -> None:
    settings = StateSettings(
        backend="tablestore", endpoint=tablestore.endpoint, instance=INSTANCE, table="notes"
    )
    store = open_store(settings, Credentials(AK, Secret(SECRET)))
    assert store.load_cursors([1]) == {}
    assert tablestore.store.describe_table("notes").time_to_live == 30 * 86400
    again = open_store(settings, Credentials(AK, Secret(SECRET)))  # exists now: only described
    assert again.load_cursors([1]) == {} and tablestore.request_count("CreateTable") == 1


def test_the_sts_token_of_temporary_credentials_is_sent() -> None:
    with TablestoreEmulator(AK, SECRET, INSTANCE, sts_token="sts-token-7a1b") as emulator:
        settings = StateSettings(backend="tablestore", endpoint=emulator.endpoint, instance=INSTANCE)
        store = open_store(settings, Credentials(AK, Secret(SECRET), Secret("sts-token-7a1b")))
        assert store.acquire_lease(TICK_LEASE, "a", 60, NOW) is not None
        stale = open_store(settings, Credentials(AK, Secret(SECRET), Secret("sts-token-expired")))
        with pytest.raises(StateError, match="OTSAuthFailed"):  # the token really is sent and checked
            stale.acquire_lease(TICK_LEASE, "b", 60, NOW)


def test_the_sdk_is_imported_only_when_the_tablestore_backend_is_opened(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from dwnotify.settings import StateSettings; "
        "from dwnotify.state import open_store; "
        f"open_store(StateSettings(path=Path({str(tmp_path / 's.db')!r}))).close(); "
        "assert 'tablestore' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


@pytest.mark.parametrize(("refusals", "recorded"), [(1, True), (2, True), (3, False)])
def test_an_outbox_update_refused_on_its_condition_is_written_again_and_never_passes_for_done(
    refusals: int, recorded: bool
) -> None:
    # Tablestore can answer a write with a condition failure it did not mean (the fault suite
    # injects them): a status update that passed for done left the message's row pending below a
    # mark raised past it. Now the refused row is written again; refused every time, it stays pending
    # and the mark stays below it, so the message is sent once more rather than never.
    with TablestoreEmulator(AK, SECRET, INSTANCE) as emulator:
        store = open_spec(Spec("tablestore", emulator.endpoint, retention_s=DAY))
        store.commit(tick_lease(store), [], [], [message("m1", 1)], NOW)
        held = store.acquire_lease("channel:ops", "a", 60, NOW)
        assert held is not None
        [pending] = store.pending_messages("ops")
        emulator.inject("PutRow", "OTSConditionCheckFail", times=refusals)
        store.update_messages(held, [replace(pending, status=SENT, finished_at=NOW)])
        store.release_lease(held)
        assert store.pending_messages("ops") == ([] if recorded else [pending])
        store.close()


def test_sqlite_prunes_at_most_hourly_through_its_indexes(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db", retention_s=DAY)
    for minute in range(0, 120, 10):  # a commit every ten minutes for two hours
        at = NOW + minute * 60
        store.commit(tick_lease(store, now=at), [run(f"r{minute}")], [], [], at)
    assert store.prunes == 2  # at the first commit, then an hour later
    back = NOW - 3 * 3600  # a clock stepped back hours: prunes again
    store.commit(tick_lease(store, now=back), [], [], [], back)
    assert store.prunes == 3
    for statement, index in (
        (sqlite_store._PRUNE_OUTBOX, "outbox_done"),
        (sqlite_store._PRUNE_RUNS, "runs_done"),
    ):
        plan = " ".join(str(row[-1]) for row in store._db.execute(f"EXPLAIN QUERY PLAN {statement}", (NOW,)))
        assert f"USING INDEX {index}" in plan, plan
    store.close()


def test_a_release_keeps_its_data_only_while_the_lease_is_still_its_own(backend: Backend) -> None:
    store, other = backend.store, backend.open()
    mine = tick_lease(store, "tick-a", NOW, ttl=10)
    store.keep_lease_data(replace(mine, data={"budget": {"spent": 1}}))
    taken = tick_lease(other, "tick-b", NOW + 20)  # expired, so the next tick took it
    assert taken.data == {"budget": {"spent": 1}}
    other.release_lease(taken, {"budget": {"spent": 2}})
    store.release_lease(mine, {"budget": {"spent": 99}})  # too late, the lease free again: not written
    assert tick_lease(store, "tick-c", NOW + 30).data == {"budget": {"spent": 2}}
    with pytest.raises(ConflictError):
        store.keep_lease_data(replace(mine, data={}))
    other.close()
