"""Finding what changed with as few DataWorks calls as possible.

Per workspace, a tick reads list page 1 (100 runs with their stages). While `TotalCount` stays what
it was at the last listing, that is all. When it moved (or the workspace is new), the list's order is
not documented, so the tick assumes none: it reads every page, unless page 1 is itself sorted
newest-first by CreateTime, and then only the pages that reach back to the previous listing. Runs
still moving that no page showed are fetched one by one with GetPipelineRun, or by reading the
remaining pages when that costs fewer calls.

A run never stored is news when it was created after the workspace was first watched (less the
lookback), however late it is found; older runs are history, recorded silently while they move.
On an empty store (a first install, or a lost one) every run that already finished is history.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Protocol

from .answers import RunPage
from .dataworks import MAX_PAGE_SIZE
from .errors import DataWorksError, MalformedRun
from .model import GONE, Run, RunState, run_key
from .settings import DataWorksSettings, ProjectSettings
from .state.base import ProjectCursor

log = logging.getLogger(__name__)

# In a newest-first list, pages are read back to this long before the previous listing: a run
# created just before it may still have been missing from it (clocks, the API's indexing lag).
LISTING_MARGIN_S = 600.0
# A bound on the list calls one workspace may cost a tick (10,000 runs at 100 a page), whatever the
# server claims: the Basic edition allows 100 calls a day.
MAX_PAGES_PER_TICK = 100


class RunSource(Protocol):
    """What discovery needs of the DataWorks client; `calls` counts the requests it made."""

    calls: int

    def list_runs(
        self, project: ProjectSettings, page_number: int, *, deadline: float | None = None
    ) -> RunPage:
        """One page of a workspace's runs, no request outlasting `deadline`."""
        ...

    def get_run(self, project: ProjectSettings, run_id: str, *, deadline: float | None = None) -> Run | None:
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
    vanished: list[RunState] = field(default_factory=list)


@dataclass
class _ProjectScan:
    """The pages of one workspace read so far, paged by what the server serves, not by what was asked.

    `TotalCount` is only a hint: an empty page, a page shorter than the first, or one that brings no
    run not already seen ends the list, so a server that lies about the count cannot loop a tick.
    """

    project: ProjectSettings
    runs: dict[str, Run] = field(default_factory=dict)
    total: int = 0
    pages_read: int = 0
    page_size: int = 0  # runs on page 1: the size the server serves, whatever PageSize asked for
    exhausted: bool = False
    skipped: set[str] = field(default_factory=set)  # malformed runs, kept as moving: tried next tick

    @property
    def pages_total(self) -> int:
        return max(1, math.ceil(self.total / (self.page_size or MAX_PAGE_SIZE)))

    def skip(self, error: MalformedRun) -> None:
        """Leave a malformed run out of this tick, with a WARNING naming it."""
        log.warning(
            "dataworks: run %s in workspace %s skipped this tick, its answer is malformed: %s",
            error.run_id or "(without an Id)",
            self.project.id,
            error,
            extra={"run_id": error.run_id or None, "project_id": self.project.id},
        )
        if error.run_id:
            self.skipped.add(error.run_id)

    @property
    def more(self) -> bool:
        """Whether a next page may still hold runs."""
        return not self.exhausted and self.pages_read < self.pages_total

    def add(self, page: RunPage) -> list[str]:
        """Take in one page; the keys of the runs it brought that no earlier page had."""
        self.pages_read += 1
        self.total = page.total_count
        before = len(self.runs)
        new = []
        for run in page.runs:
            key = run.key
            if key not in self.runs:
                self.runs[key] = run
                new.append(key)
        for error in page.malformed:
            self.skip(error)
        if self.pages_read == 1:
            self.page_size = len(page.runs)
            if 0 < self.page_size < min(MAX_PAGE_SIZE, self.total):
                log.warning(
                    "dataworks: workspace %s served %d runs on page 1 of %d; paging by %d",
                    self.project.id,
                    self.page_size,
                    self.total,
                    self.page_size,
                )
        else:
            self.exhausted = len(page.runs) < self.page_size or len(self.runs) == before
        self.exhausted = self.exhausted or not page.runs
        return new


def _oldest(runs: Iterable[Run]) -> float:
    """The earliest CreateTime among `runs` (epoch seconds); -inf when none has one."""
    times = [run.create_time.timestamp() for run in runs if run.create_time is not None]
    return min(times, default=float("-inf"))


def _newest_first(runs: tuple[Run, ...]) -> bool:
    """True when a full page is ordered newest-first by CreateTime.

    The API does not document its order; a full page of 100 runs that happens to be sorted is
    strong evidence that the list is, and then runs newer than a page's last come before it.
    """
    times = [run.create_time.timestamp() for run in runs if run.create_time is not None]
    if len(times) < MAX_PAGE_SIZE or len(times) != len(runs):
        return False
    return all(a >= b for a, b in pairwise(times))


class Discoverer:
    """Runs one tick's discovery over every watched workspace and every run named in the config."""

    def __init__(
        self,
        settings: DataWorksSettings,
        source: RunSource,
        store: StateSource,
        clock: Callable[[], float] = time.time,
        retention_s: float = 30 * 86400,
        deadline: float | None = None,
    ) -> None:
        self._settings = settings
        self._deadline = deadline  # epoch seconds: no workspace, page or request starts after it
        self._source = source
        self._store = store
        self._clock = clock
        self._retention_s = retention_s
        self._configured = {run_key(tracked.project, tracked.id) for tracked in settings.runs}
        self._states: dict[str, RunState] = {}
        self._looked_up: set[str] = set()  # keys read from the store, found or not
        self._vanished: list[RunState] = []

    def _load(self, keys: Iterable[str]) -> None:
        missing = [key for key in keys if key not in self._looked_up]
        if missing:
            self._looked_up.update(missing)
            self._states.update(self._store.load_runs(missing))

    def _out_of_time(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    def discover(self, cursors: dict[int, ProjectCursor], now: float) -> Discovery:
        """Fetch what changed since the cursors were stored."""
        result = Discovery()
        seen: dict[str, Run] = {}
        # A first run, or a state store that was lost: what already finished is history (a lost
        # store must not announce the last hour again), what still moves is announced as first sight.
        # Said out loud, so that a lost store is never silent.
        empty_store = not cursors and bool(self._settings.projects)
        if empty_store:
            log.warning(
                "state: the store knows no workspace yet (a first run, or its state was lost); runs "
                "that already finished are recorded as history, runs still moving created within the "
                "lookback (%d min) are announced as first sight",
                self._settings.lookback.total_seconds() // 60,
            )
        for project in self._settings.projects:
            if self._out_of_time():
                log.warning("dataworks: out of time, workspace %s is left for the next tick", project.id)
                result.errors.append(f"workspace {project.id}: out of time, left for the next tick")
                continue
            cursor = cursors.get(project.id)
            try:
                scan, new_cursor = self._scan_project(project, cursor, now)
            except DataWorksError as error:
                log.error("dataworks: workspace %s skipped this tick: %s", project.id, error)
                result.errors.append(f"workspace {project.id}: {error}")
                continue
            except Exception as error:  # an answer no parser foresaw: this workspace waits, the rest go on
                log.error("dataworks: workspace %s skipped this tick", project.id, exc_info=error)
                result.errors.append(f"workspace {project.id}: unexpected answer: {type(error).__name__}")
                continue
            if new_cursor is not None:
                result.cursors.append(new_cursor)
            threshold = self._news_threshold(cursor, now)
            for key, run in scan.runs.items():
                if key not in seen:
                    seen[key] = run
                    self._observe(result, run, threshold, history_if_final=empty_store)
        self._track_configured_runs(result, seen)
        result.runs_fetched = len(seen)
        result.vanished = self._vanished
        return result

    def _news_threshold(self, cursor: ProjectCursor | None, now: float) -> float:
        """A never-stored run created at or after this is news; an older one is history.

        Measured from when the workspace was first watched, so a run found late is still news;
        never before the retention window, whose runs the store may have forgotten on purpose.
        """
        since = cursor.watched_since if cursor and cursor.watched_since is not None else now
        return max(since - self._settings.lookback.total_seconds(), now - self._retention_s)

    def _observe(
        self, result: Discovery, run: Run, threshold: float, *, history_if_final: bool = False
    ) -> None:
        previous = self._states.get(run.key)
        if previous is not None or run.key in self._configured:
            # Known runs, and runs the config names, are always diffed and recorded.
            result.observations.append(Observation(run, previous, silent=False))
            return
        created = run.create_time.timestamp() if run.create_time else None
        # Without a usable CreateTime a finished run cannot be shown to be news: it is history.
        old = run.final if created is None else created < threshold
        if old and run.final:
            return  # history that finished before we watched: nothing to record or announce
        # On an empty store a finished run inside the news window is recorded silently: unstored, the
        # next tick would take it as news.
        result.observations.append(Observation(run, None, silent=old or (history_if_final and run.final)))

    def _scan_project(
        self, project: ProjectSettings, cursor: ProjectCursor | None, now: float
    ) -> tuple[_ProjectScan, ProjectCursor | None]:
        """Read the pages that can hold news; None for the cursor when time ran out mid-scan."""
        scan = _ProjectScan(project)
        first_page = self._source.list_runs(project, 1, deadline=self._deadline)
        scan.add(first_page)
        self._load(scan.runs)
        moved = cursor is None or first_page.total_count != cursor.total_count
        if moved and _newest_first(first_page.runs):
            # News sits at the top: read on while a page still reaches back into the news window.
            reach = cursor.listed_at - LISTING_MARGIN_S if cursor else self._news_threshold(None, now)
            oldest = _oldest(scan.runs.values())
            while scan.more and oldest >= reach:
                new = self._read_page(scan)
                if new is None:
                    return scan, None
                oldest = min(oldest, _oldest(scan.runs[key] for key in new))
        elif moved:
            # No order to lean on: where the count moved, new runs can be on any page.
            while scan.more:
                if self._read_page(scan) is None:
                    return scan, None
        self._fetch_missing_active(scan, cursor)
        moving = {run.id for run in scan.runs.values() if not run.final}
        still_moving = tuple(sorted(moving | (scan.skipped - {run.id for run in scan.runs.values()})))
        watched_since = cursor.watched_since if cursor else now
        # The count as page 1 gave it: a run created while the pages were read moves it next tick.
        return scan, ProjectCursor(project.id, first_page.total_count, now, still_moving, watched_since)

    def _fetch_missing_active(self, scan: _ProjectScan, cursor: ProjectCursor | None) -> None:
        """Runs still moving that no page showed: by id, or by the remaining pages when cheaper."""
        project = scan.project
        active = cursor.active_run_ids if cursor else ()
        missing = [rid for rid in active if run_key(project.id, rid) not in scan.runs]
        if scan.more and len(missing) > scan.pages_total - scan.pages_read:
            while scan.more and self._read_page(scan) is not None:
                pass
            missing = [rid for rid in active if run_key(project.id, rid) not in scan.runs]
        for run_id in missing:
            try:
                fetched = self._source.get_run(project, run_id, deadline=self._deadline)
            except MalformedRun as error:
                scan.skip(MalformedRun(str(error), run_id))
                continue
            if fetched is None:
                self._vanish(run_key(project.id, run_id))
                continue
            scan.runs[fetched.key] = fetched
        self._load(scan.runs)

    def _vanish(self, key: str) -> None:
        """A stored run DataWorks no longer knows: remembered as gone, so nobody waits for it."""
        log.warning("dataworks: run %s no longer exists", key)
        self._load([key])
        stored = self._states.get(key)
        if stored is not None and not stored.final:
            self._vanished.append(replace(stored, status=GONE))

    def _read_page(self, scan: _ProjectScan) -> list[str] | None:
        """Read the next page: the keys of the runs it brought; None (and nothing read) when the tick
        is out of time or pages."""
        if self._out_of_time():
            log.warning("dataworks: out of time in workspace %s, the rest next tick", scan.project.id)
            return None
        if scan.pages_read >= MAX_PAGES_PER_TICK:
            log.warning(
                "dataworks: workspace %s has more than %d pages of runs; read %d this tick, again next tick",
                scan.project.id,
                MAX_PAGES_PER_TICK,
                scan.pages_read,
            )
            return None
        # Only the page's new runs are looked up: gathering pages must not rescan what came before.
        new = scan.add(self._source.list_runs(scan.project, scan.pages_read + 1, deadline=self._deadline))
        self._load(new)
        return new

    def _track_configured_runs(self, result: Discovery, seen: dict[str, Run]) -> None:
        wanted = [
            tracked for tracked in self._settings.runs if run_key(tracked.project, tracked.id) not in seen
        ]
        self._load(run_key(tracked.project, tracked.id) for tracked in wanted)
        for tracked in wanted:
            key = run_key(tracked.project, tracked.id)
            stored = self._states.get(key)
            if stored is not None and stored.final:
                continue
            project = self._settings.project(tracked.project)
            try:
                run = self._source.get_run(project, tracked.id, deadline=self._deadline)
            except DataWorksError as error:
                log.error("dataworks: run %s skipped this tick: %s", tracked.id, error)
                result.errors.append(f"run {tracked.id}: {error}")
                continue
            if run is None:
                self._vanish(key)
                continue
            seen[key] = run
            self._observe(result, run, threshold=0.0)  # named in the config: never history
