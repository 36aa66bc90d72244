"""A long history must not slow a steady tick: 50,000 finished runs and 50,000 sent messages.

The same unchanged tick (10 workspaces, 1,000 running runs, the injected latency) is measured on a
store holding only those runs, and on one that also holds the history: finished runs of the same
workspaces, created a day ago, and as many messages already sent. The history is stored through the
product's own `commit` (with the latency off, to save time) before the first tick.
"""

from __future__ import annotations

from typing import Any

from benchmarks.workloads import FULL, STATES, Scale
from benchmarks.world import World, product_tick, ratio, steady_ticks, world
from dwnotify.model import RunState, run_key
from dwnotify.state.base import SENT, TICK_LEASE, OutboxMessage

HISTORY = 50_000
WORKSPACES, RUNS = 10, 1000
BATCH = 2000


def store_history(w: World, count: int) -> None:
    """`count` finished runs and `count` sent messages, committed in batches with the latency off."""
    store, now = w.app.store, w.clock()
    latency = w.latency_s
    w.set_latency(0.0)
    lease = store.acquire_lease(TICK_LEASE, "history", 3600.0, now)
    assert lease is not None
    day_ago = now - 86400
    for start in range(0, count, BATCH):
        runs, messages = [], []
        for i in range(start, min(count, start + BATCH)):
            project, run_id = 10000 + i % w.workspaces, f"history-{i:06d}"
            stages = {"BUILD": "success", "CHECK": "success", "DEPLOY": "success"}
            announced = frozenset({"run:success", *(f"stage:{code}:success" for code in stages)})
            runs.append(RunState(project, run_id, "success", stages, announced, int(day_ago * 1000)))
            messages.append(
                OutboxMessage(
                    id=f"history-message-{i:06d}",
                    channel="team" if i % 2 else "ops",
                    run_key=run_key(project, run_id),
                    rule="all",
                    seq=i,
                    title=f"发布成功 {run_id}",
                    text=f"发布成功: {run_id} " * 8,
                    created_at=day_ago,
                    status=SENT,
                    attempts=1,
                    finished_at=day_ago + 5,
                )
            )
        store.commit(lease, runs, [], messages, now)
    store.release_lease(lease)
    w.set_latency(latency)


def _steady_tick(state: str, history: int, workspaces: int, runs: int, scale: Scale) -> dict[str, Any]:
    with world(state, workspaces, latency_s=scale.latency_s) as w:
        if history:
            store_history(w, history)
        w.add_active_runs(runs // workspaces)
        product_tick(w)  # records the runs
        product_tick(w)  # settles what a first tick leaves (a channel's mark, a prune)
        return steady_ticks(w, scale.repeat)


def measure(
    history: int = HISTORY,
    workspaces: int = WORKSPACES,
    runs: int = RUNS,
    states: tuple[str, ...] = STATES,
    scale: Scale = FULL,
) -> dict[str, Any]:
    """The steady tick with and without the history, per backend, and the ratios."""
    results: dict[str, Any] = {
        "history_runs": history,
        "history_messages": history,
        "workspaces": workspaces,
        "active_runs": runs,
    }
    for state in states:
        empty = _steady_tick(state, 0, workspaces, runs, scale)
        full = _steady_tick(state, history, workspaces, runs, scale)
        results[state] = {
            "empty_store": empty,
            "with_history": full,
            "history_over_empty": {
                "state_round_trips": ratio(full["state_round_trips"], empty["state_round_trips"]),
                "wall": ratio(full["wall_ms"], empty["wall_ms"]),
            },
        }
    return results
