"""The naive poller the product is measured against: GetPipelineRun for every tracked run, each tick.

For each run it reads the run's state (one round trip), and unless that state is final, gets the run
through the real `DataWorksClient` (one request), diffs it with the product's `diff` and writes the
state back (one write round trip, `commit`), whether it changed or not. It keeps its own store (a
second SQLite file, or a second table on the same Tablestore emulator) so the two never see each
other's writes. It neither renders nor delivers, so its wall time leaves those out.

A tick over thousands of runs takes minutes at 20 ms a request, so the poller may track a seeded
sample of the runs: its figures are then measured on the sample and scaled to all of them (`scale`);
calls, round trips and time per run do not depend on which runs are polled.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import replace
from typing import Any

from benchmarks.world import CREDENTIALS, World, round_trips
from dwnotify.diff import diff
from dwnotify.model import run_key
from dwnotify.state import open_store
from dwnotify.state.base import TICK_LEASE

LEASE_S = 3600.0


class NaivePoller:
    """One naive tick at a time over `tracked` runs, against the world's emulators."""

    def __init__(self, w: World, tracked: list[tuple[int, str]], sample: int | None = None) -> None:
        settings = w.app.notifier.settings
        state = replace(settings.state, path=w.tmp / "naive.db", table="naive")
        self.store = open_store(state, CREDENTIALS)
        self.world = w
        self.dataworks = settings.dataworks
        self.all_runs = len(tracked)
        if sample is not None and sample < len(tracked):
            tracked = random.Random(f"naive/{len(tracked)}").sample(tracked, sample)
        self.tracked = tracked

    @property
    def scale(self) -> float:
        """All tracked runs per sampled run."""
        return self.all_runs / len(self.tracked) if self.tracked else 1.0

    def close(self) -> None:
        """Close its store."""
        self.store.close()

    def tick(self, advance_s: float = 60.0) -> dict[str, Any]:
        """Poll every sampled run once; the figures measured and scaled to all tracked runs."""
        w = self.world
        w.clock.advance(advance_s)
        owner = uuid.uuid4().hex
        lease = self.store.acquire_lease(TICK_LEASE, owner, LEASE_S, w.clock())
        assert lease is not None, "the naive poller's store is its own"
        client, calls = w.app.client, w.app.client.calls
        trips, writes = round_trips(self.store)
        jumped, events = w.clock.jumped_s, 0
        started = time.perf_counter()
        for project, run_id in self.tracked:
            key = run_key(project, run_id)
            previous = self.store.load_runs([key]).get(key)
            if previous is not None and previous.final:
                continue  # a finished run is not polled again
            run = client.get_run(self.dataworks.project(project), run_id)
            if run is None:
                continue
            found, state = diff(previous, run)
            events += len(found)
            self.store.commit(lease, [state], [], [], w.clock())
        wall_ms = (time.perf_counter() - started) * 1000
        measured = {
            "dataworks_calls": client.calls - calls,
            "state_round_trips": round_trips(self.store)[0] - trips,
            "state_write_round_trips": round_trips(self.store)[1] - writes,
            "events": events,
            "wall_ms": wall_ms,
            "waits_jumped_ms": (w.clock.jumped_s - jumped) * 1000,
        }
        self.store.release_lease(lease)
        counts = ("dataworks_calls", "state_round_trips", "state_write_round_trips", "events")
        return {
            "tracked_runs": self.all_runs,
            "sampled_runs": len(self.tracked),
            "scaled_from_sample": self.scale != 1,
            **{name: round(measured[name] * self.scale) for name in counts},
            **{name: round(measured[name] * self.scale, 1) for name in ("wall_ms", "waits_jumped_ms")},
        }
