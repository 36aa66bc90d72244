"""The living-message records of the StateStore contract, on SQLite and on Tablestore (the real SDK over
the emulator): created once, compare-and-set on their version, kept across store instances, pruned."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest

from dwnotify.errors import ConflictError
from dwnotify.state.base import LivingMessage
from tests import test_state_contract
from tests.test_state_contract import AK, DAY, INSTANCE, NOW, SECRET, Backend, Spec, run, tick_lease

backend = test_state_contract.backend  # the contract's fixture: each test runs on both backends

RUN = "10000/r1"


def test_a_living_message_is_created_once_and_then_only_at_its_stored_version(backend: Backend) -> None:
    store = backend.store
    assert store.load_living("team", [RUN]) == {}
    started = store.store_living(LivingMessage("team", RUN, posting_since=NOW), NOW)
    assert started.version == 1 and not started.posted
    with pytest.raises(ConflictError):  # a second creation: another sender got there first
        store.store_living(LivingMessage("team", RUN, posting_since=NOW + 1), NOW)
    posted = store.store_living(
        replace(started, ts="1700000000.000100", channel_id="C1", posting_since=None), NOW
    )
    with pytest.raises(ConflictError):  # written from a stale read
        store.store_living(replace(started, ts="1700000000.000200"), NOW)
    assert store.load_living("team", [RUN, "10000/other"]) == {RUN: posted}
    assert posted.version == 2 and posted.posted and posted.posting_since is None


def test_living_messages_are_per_channel_and_survive_a_new_store(backend: Backend) -> None:
    backend.store.store_living(LivingMessage("team", RUN, "1.000001", "C1"), NOW)
    backend.store.store_living(LivingMessage("ops", RUN, "2.000002", "C2"), NOW)
    other = backend.open()  # another process, another FC instance
    try:
        assert other.load_living("team", [RUN])[RUN].ts == "1.000001"
        assert other.load_living("ops", [RUN])[RUN].channel_id == "C2"
    finally:
        other.close()


def test_many_runs_are_read_in_one_go(backend: Backend) -> None:
    keys = [f"10000/r{i}" for i in range(250)]
    for key in keys:
        backend.store.store_living(LivingMessage("team", key, f"{1000 + len(key)}.000001", "C1"), NOW)
    before = backend.store.round_trips
    assert set(backend.store.load_living("team", keys)) == set(keys)
    trips = backend.store.round_trips - before
    assert trips <= (3 if backend.emulator else 1)  # Tablestore reads 100 rows a batch


def test_living_messages_are_forgotten_after_retention(backend: Backend) -> None:
    store = backend.store
    store.store_living(LivingMessage("team", RUN, "1.000001", "C1"), NOW)
    later = NOW + 2 * DAY
    backend.age(2 * DAY)  # Tablestore: rows pass their TTL
    store.commit(tick_lease(store, "tick-b", later), [run("r9")], [], [], later)  # SQLite prunes on commit
    assert store.load_living("team", [RUN]) == {}


def test_a_damaged_record_reads_as_a_post_that_may_have_landed(backend: Backend) -> None:
    """Unreadable: the chat is searched before a post, rather than the run posted twice."""
    store = backend.store
    store.store_living(LivingMessage("team", RUN, "1.000001", "C1"), NOW)
    _corrupt(backend.spec, "team", RUN, "{not json")
    damaged = store.load_living("team", [RUN])[RUN]
    assert not damaged.posted and damaged.posting_since is not None and damaged.version == 1
    assert store.store_living(replace(damaged, ts="3.000003"), NOW).version == 2


def _corrupt(spec: Spec, channel: str, run_key: str, value: str) -> None:
    """Overwrite a living message's data behind the store's back."""
    if spec.kind == "sqlite":
        with sqlite3.connect(spec.where) as db:
            changed = db.execute(
                "UPDATE living SET data = ? WHERE channel = ? AND run_key = ?", (value, channel, run_key)
            )
            assert changed.rowcount == 1
        return
    from tablestore import Condition, OTSClient, Row, RowExistenceExpectation

    client = OTSClient(spec.where, AK, SECRET, INSTANCE)
    row = Row([("pk", f"living/{channel}"), ("sk", run_key)], {"PUT": [("data", value)]})
    client.update_row("dwnotify", row, Condition(RowExistenceExpectation.EXPECT_EXIST))


def test_runs_updated_since_a_time_are_listed_newest_first(backend: Backend) -> None:
    """What a daily digest reads: the runs that moved in its window, with their digest facts."""
    store = backend.store
    store.commit(tick_lease(store), [run("r1", "success")], [], [], NOW - 3600)
    store.commit(
        tick_lease(store, now=NOW), [replace(run("r2", "fail"), message="CHECK: 依赖缺失")], [], [], NOW
    )
    listed = store.runs_updated_since(NOW - 60)
    assert [(state.run_id, at) for state, at in listed] == [("r2", NOW)]
    assert listed[0][0].message == "CHECK: 依赖缺失"
    assert [state.run_id for state, _ in store.runs_updated_since(NOW - 7200)] == ["r2", "r1"]
