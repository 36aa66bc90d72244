"""Finding what changed with as few DataWorks calls as possible.

Per workspace, a tick reads list page 1 (100 runs with their stages). The list's order is not
documented, so the tick does not assume newest-first: it compares the workspace's `TotalCount` with
the count stored at the last listing and reads further pages only until it has found that many new
runs (one page when the list is newest-first, all of them in the worst case). A workspace seen for
the first time, or whose count went down (runs deleted), is read in full once. Runs still moving
that no page read this tick showed are fetched one by one with GetPipelineRun, or by reading the
remaining pages when that costs fewer calls.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Protocol

from .dataworks import MAX_PAGE_SIZE, RunPage
from .errors import DataWorksError
from .model import Run, RunState, run_key
from .settings import DataWorksSettings, ProjectSettings
from .state.base import ProjectCursor

log = logging.getLogger(__name__)

# A run created this long before the previous listing may still have been missing from it
# (clocks and the API's own indexing lag), so it still counts as new.
LISTING_MARGIN_S = 600.0


class RunSource(Protocol):
    """What discovery needs of the DataWorks client."""

    deadline: float | None

    def list_runs(self, project: ProjectSettings, page_number: int) -> RunPage:
        """One page of a workspace's runs."""
        ...

    def get_run(self, project: ProjectSettings, run_id: str) -> Run | None:
        """One run, or None when it no longer exists."""
        ...


class StateSource(Protocol):
    """What discovery needs of the state store."""

    def load_runs(self, keys: Collection[str]) -> dict[str, RunState]:
        """Stored run states by key."""
        ...


@dataclass(frozen=True)
class Observation:
    """A run fetched this tick, what was stored of it, and whether its news may be announced."""

    run: Run
    previous: RunState | None
    silent: bool


@dataclass
class Discovery:
    """Everything a tick fetched: observations, new cursors, and the workspaces that failed."""

    observations: list[Observation] = field(default_factory=list)
    cursors: list[ProjectCursor] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    runs_fetched: int = 0


@dataclass
class _ProjectScan:
    project: ProjectSettings
    runs: dict[str, Run] = field(default_factory=dict)
    total: int = 0
    pages_read: int = 0

    @property
    def pages_total(self) -> int:
        return max(1, math.ceil(self.total / MAX_PAGE_SIZE))

    def add(self, page: RunPage) -> None:
        self.pages_read += 1
        self.total = page.total_count
        for run in page.runs:
            if run.id:
                self.runs.setdefault(run.key, run)


def _sorted_newest_first_past(runs: tuple[Run, ...], threshold: float) -> bool:
    """True when a full page is ordered newest-first by CreateTime and ends before `threshold`.

    The API does not document its order; a full page of 100 runs that happens to be sorted is
    strong evidence that the list is, and then no later page holds a run newer than this one's last.
    """
    times = [run.create_time.timestamp() for run in runs if run.create_time is not None]
    if len(times) < MAX_PAGE_SIZE or len(times) != len(runs):
        return False
    return all(a >= b for a, b in pairwise(times)) and times[-1] < threshold


class Discoverer:
    """Runs one tick's discovery over every watched workspace and every run named in the config."""

    def __init__(
        self,
        settings: DataWorksSettings,
        source: RunSource,
        store: StateSource,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._source = source
        self._store = store
        self._clock = clock
        self._states: dict[str, RunState] = {}
        self._looked_up: set[str] = set()  # keys read from the store, found or not

    def _load(self, keys: Iterable[str]) -> None:
        missing = [key for key in keys if key not in self._looked_up]
        if missing:
            self._looked_up.update(missing)
            self._states.update(self._store.load_runs(missing))

    def discover(self, cursors: dict[int, ProjectCursor], now: float) -> Discovery:
        """Fetch what changed since the cursors were stored."""
        result = Discovery()
        seen: dict[str, Run] = {}
        for project in self._settings.projects:
            if self._source.deadline is not None and self._clock() >= self._source.deadline:
                log.warning("dataworks: out of time, workspace %s is left for the next tick", project.id)
                result.errors.append(f"workspace {project.id}: out of time, left for the next tick")
                continue
            try:
                scan, cursor = self._scan_project(project, cursors.get(project.id), now)
            except DataWorksError as error:
                log.error("dataworks: workspace %s skipped this tick: %s", project.id, error)
                result.errors.append(f"workspace {project.id}: {error}")
                continue
            result.cursors.append(cursor)
            threshold = self._new_threshold(cursors.get(project.id), now)
            for key, run in scan.runs.items():
                if key not in seen:
                    seen[key] = run
                    self._observe(result, run, threshold)
        self._track_configured_runs(result, seen, now)
        result.runs_fetched = len(seen)
        return result

    def _new_threshold(self, cursor: ProjectCursor | None, now: float) -> float:
        """Runs created at or after this time, and never stored, are news."""
        threshold = now - self._settings.lookback.total_seconds()
        if cursor is not None:
            threshold = min(threshold, cursor.listed_at - LISTING_MARGIN_S)
        return threshold

    def _observe(self, result: Discovery, run: Run, threshold: float) -> None:
        previous = self._states.get(run.key)
        if previous is None:
            created = run.create_time.timestamp() if run.create_time else None
            old = created is not None and created < threshold
            if old and run.final:
                return  # history that finished before we watched: nothing to record or announce
            result.observations.append(Observation(run, None, silent=old))
        else:
            result.observations.append(Observation(run, previous, silent=False))

    def _scan_project(
        self, project: ProjectSettings, cursor: ProjectCursor | None, now: float
    ) -> tuple[_ProjectScan, ProjectCursor]:
        scan = _ProjectScan(project)
        first_page = self._source.list_runs(project, 1)
        scan.add(first_page)
        self._load(scan.runs)
        threshold = self._new_threshold(cursor, now)
        full = cursor is None or scan.total < cursor.total_count
        if full and _sorted_newest_first_past(first_page.runs, threshold):
            full = False  # the list shows itself newest-first and page 1 already reaches past the window
        expected_new = 0 if cursor is None else scan.total - cursor.total_count
        while scan.pages_read < scan.pages_total and (
            full or self._count_new(scan, threshold) < expected_new
        ):
            self._read_page(scan)

        active = cursor.active_run_ids if cursor else ()
        missing = [rid for rid in active if run_key(project.id, rid) not in scan.runs]
        if len(missing) > scan.pages_total - scan.pages_read:
            while scan.pages_read < scan.pages_total:
                self._read_page(scan)
            missing = [rid for rid in active if run_key(project.id, rid) not in scan.runs]
        for run_id in missing:
            fetched = self._source.get_run(project, run_id)
            if fetched is None:
                log.warning("dataworks: run %s in workspace %s no longer exists", run_id, project.id)
                continue
            scan.runs[fetched.key] = fetched
        self._load(scan.runs)
        still_moving = tuple(sorted(run.id for run in scan.runs.values() if not run.final))
        return scan, ProjectCursor(project.id, scan.total, now, still_moving)

    def _read_page(self, scan: _ProjectScan) -> None:
        scan.add(self._source.list_runs(scan.project, scan.pages_read + 1))
        self._load(scan.runs)

    def _count_new(self, scan: _ProjectScan, threshold: float) -> int:
        return sum(
            1
            for key, run in scan.runs.items()
            if key not in self._states
            and (run.create_time is None or run.create_time.timestamp() >= threshold)
        )

    def _track_configured_runs(self, result: Discovery, seen: dict[str, Run], now: float) -> None:
        wanted = [
            tracked for tracked in self._settings.runs if run_key(tracked.project, tracked.id) not in seen
        ]
        self._load(run_key(tracked.project, tracked.id) for tracked in wanted)
        threshold = now - self._settings.lookback.total_seconds()
        for tracked in wanted:
            key = run_key(tracked.project, tracked.id)
            stored = self._states.get(key)
            if stored is not None and stored.final:
                continue
            project = self._settings.project(tracked.project)
            try:
                run = self._source.get_run(project, tracked.id)
            except DataWorksError as error:
                log.error("dataworks: run %s skipped this tick: %s", tracked.id, error)
                result.errors.append(f"run {tracked.id}: {error}")
                continue
            if run is None:
                log.warning("dataworks: configured run %s does not exist", tracked.id)
                continue
            seen[key] = run
            self._observe(result, run, threshold)
