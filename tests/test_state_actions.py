"""The chat-decision records of the StateStore contract, on SQLite and on Tablestore (the real SDK over
the emulator): a decision is claimed once, updated only at its stored version, seen by another store
instance, and forgotten after retention."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from dwnotify.errors import ConflictError
from dwnotify.state.base import ACTION_FAILED, ActionRecord
from tests import test_state_contract
from tests.helpers import at_once
from tests.test_state_contract import DAY, NOW, Backend, run, tick_lease

backend = test_state_contract.backend  # the contract's fixture: each test runs on both backends

KEY = "10000/r1/DEPLOY/advance"


def test_a_decision_is_claimed_once_and_then_changed_only_at_its_stored_version(backend: Backend) -> None:
    store = backend.store
    assert store.load_action(KEY) is None
    claimed = store.store_action(ActionRecord(KEY, user_id="U1", person="alice", at=NOW), NOW)
    assert claimed.version == 1 and claimed.result == "claimed"
    with pytest.raises(ConflictError):  # a second click, a retry, a replay
        store.store_action(ActionRecord(KEY, user_id="U2", at=NOW + 1), NOW + 1)
    done = store.store_action(replace(claimed, result="done", request_id="REQ-1"), NOW + 2)
    with pytest.raises(ConflictError):  # written from a stale read
        store.store_action(replace(claimed, result="failed"), NOW + 3)
    assert store.load_action(KEY) == done
    assert done.version == 2 and done.user_id == "U1" and done.request_id == "REQ-1"
    assert store.load_action("10000/r1/DEPLOY/abolish") is None  # keyed by the action too


def test_two_requests_at_once_claim_a_decision_once(backend: Backend) -> None:
    stores = [backend.store, backend.open()]
    won: list[str] = []
    lock = threading.Lock()

    def claim(index: int) -> None:
        try:
            stores[index].store_action(ActionRecord(KEY, user_id=f"U{index}", at=NOW), NOW)
        except ConflictError:
            return
        with lock:
            won.append(f"U{index}")

    try:
        at_once([lambda: claim(0), lambda: claim(1)])
    finally:
        stores[1].close()
    assert len(won) == 1
    stored = backend.store.load_action(KEY)
    assert stored is not None and stored.user_id == won[0]


def test_a_failed_decision_may_be_claimed_again_at_its_version(backend: Backend) -> None:
    store = backend.store
    claimed = store.store_action(ActionRecord(KEY, user_id="U1", at=NOW), NOW)
    failed = store.store_action(replace(claimed, result=ACTION_FAILED, detail="Throttling"), NOW)
    assert not failed.final and claimed.final
    again = store.store_action(replace(failed, user_id="U2", result="claimed", at=NOW + 60), NOW + 60)
    assert again.version == 3 and again.user_id == "U2"


def test_decisions_are_forgotten_after_retention(backend: Backend) -> None:
    store = backend.store
    store.store_action(ActionRecord(KEY, user_id="U1", at=NOW), NOW)
    later = NOW + 2 * DAY
    backend.age(2 * DAY)  # Tablestore: rows pass their TTL
    store.commit(tick_lease(store, "tick-b", later), [run("r9")], [], [], later)  # SQLite prunes on commit
    assert store.load_action(KEY) is None
