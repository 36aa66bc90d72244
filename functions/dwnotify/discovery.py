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
from concurrent.futures import ThreadPoolExecutor
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
# Workspaces scanned at once (also never more than `max_qps`): threads waiting on the network, not CPU.
MAX_PARALLEL_WORKSPACES = 16


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
    cursor: ProjectCursor | None = None  # as stored before this tick
    threshold: float = 0.0  # a never-stored run created before this is history (`_news_threshold`)
    runs: dict[str, Run] = field(default_factory=dict)
    vanished: list[str] = field(default_factory=list)  # keys of active runs DataWorks no longer knows
    listed: ProjectCursor | None = None  # the cursor to store; None when time ran out mid-scan
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
        self._prints: dict[str, str] = {}  # run key -> fingerprint of its stored state, from the cursors
        self._reminders_due: set[str] = set()  # run keys whose reminder (per the cursors) falls due now
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
        for known in cursors.values():
            for run_id, print_ in (known.fingerprints or {}).items():
                self._prints[run_key(known.project_id, run_id)] = print_
            self._reminders_due.update(
                run_key(known.project_id, run_id) for run_id, due in known.reminders.items() if due <= now
            )
        scans = self._scan_all(cursors, now, result)
        # One batched read of the states the diffs need, for every workspace at once.
        self._load(
            [
                key
                for scan in scans
                for key in self._worth_reading(scan.runs.values(), scan.cursor, scan.threshold)
            ]
            + [key for scan in scans for key in scan.vanished]
            + sorted(self._configured)
        )
        for scan in scans:
            for key in scan.vanished:
                self._vanish(key)
            stored: dict[str, str] = {}  # the fingerprints of this workspace's runs stored after the tick
            for key, run in scan.runs.items():
                if key not in seen:
                    seen[key] = run
                    if self._observe(result, run, scan.threshold, history_if_final=empty_store):
                        stored[run.id] = run.fingerprint
            if scan.listed is not None:
                # Reminders still pending carry over; the tick sets those of the runs it diffed.
                pending = scan.cursor.reminders if scan.cursor else {}
                active = set(scan.listed.active_run_ids)
                kept = {run_id: due for run_id, due in pending.items() if run_id in active}
                result.cursors.append(replace(scan.listed, fingerprints=stored, reminders=kept))
        self._track_configured_runs(result, seen)
        result.runs_fetched = len(seen)
        result.vanished = self._vanished
        return result

    def _scan_all(
        self, cursors: dict[int, ProjectCursor], now: float, result: Discovery
    ) -> list[_ProjectScan]:
        """Scan every workspace, several at once (threads sharing the client's rate limit), in the
        config's order; a workspace that fails is left out with its error."""
        projects = self._settings.projects
        workers = min(len(projects), max(1, math.ceil(self._settings.max_qps)), MAX_PARALLEL_WORKSPACES)

        def scan(project: ProjectSettings) -> _ProjectScan | str:
            return self._scan_safely(project, cursors.get(project.id), now)

        if workers <= 1:
            outcomes = [scan(project) for project in projects]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dwnotify-discovery") as pool:
                outcomes = list(pool.map(scan, projects))
        scans = []
        for outcome in outcomes:
            if isinstance(outcome, str):
                result.errors.append(outcome)
            else:
                scans.append(outcome)
        return scans

    def _scan_safely(
        self, project: ProjectSettings, cursor: ProjectCursor | None, now: float
    ) -> _ProjectScan | str:
        """One workspace's scan, or the error that left it for the next tick."""
        if self._out_of_time():
            log.warning("dataworks: out of time, workspace %s is left for the next tick", project.id)
            return f"workspace {project.id}: out of time, left for the next tick"
        try:
            return self._scan_project(project, cursor, self._news_threshold(cursor, now), now)
        except DataWorksError as error:
            log.error("dataworks: workspace %s skipped this tick: %s", project.id, error)
            return f"workspace {project.id}: {error}"
        except Exception as error:  # an answer no parser foresaw: this workspace waits, the rest go on
            log.error("dataworks: workspace %s skipped this tick", project.id, exc_info=error)
            return f"workspace {project.id}: unexpected answer: {type(error).__name__}"

    def _news_threshold(self, cursor: ProjectCursor | None, now: float) -> float:
        """A never-stored run created at or after this is news; an older one is history.

        Measured from when the workspace was first watched, so a run found late is still news;
        never before the retention window, whose runs the store may have forgotten on purpose.
        """
        since = cursor.watched_since if cursor and cursor.watched_since is not None else now
        return max(since - self._settings.lookback.total_seconds(), now - self._retention_s)

    @staticmethod
    def _finished_history(run: Run, threshold: float) -> bool:
        """A run that finished and was created before the news threshold (or without a usable
        CreateTime, which cannot show it to be news): never worth recording, unless it was stored."""
        created = run.create_time.timestamp() if run.create_time else None
        return run.final and (created is None or created < threshold)

    def _unchanged(self, run: Run) -> bool:
        """Whether the run is stored with exactly the statuses it shows now (its cursor's fingerprint)
        and no reminder of it falls due: then nothing about it needs its stored state."""
        return (
            run.key not in self._configured
            and run.key not in self._reminders_due
            and self._prints.get(run.key) == run.fingerprint
        )

    def _worth_reading(
        self, runs: Iterable[Run], cursor: ProjectCursor | None, threshold: float
    ) -> list[str]:
        """The keys of the runs whose stored state a diff needs.

        Not a run whose fingerprint says it is stored unchanged. With fingerprints to go by, not a
        finished history run either: a stored run still moving is in the cursor's fingerprints (its
        active runs are fetched when no page shows them), so one that is not was never stored, or is
        stored finished, and then has nothing left to announce.
        """
        fingerprinted = cursor is not None and cursor.fingerprints is not None
        return [
            run.key
            for run in runs
            if not self._unchanged(run)
            and (
                run.key in self._configured
                or not fingerprinted
                or run.key in self._prints
                or not self._finished_history(run, threshold)
            )
        ]

    def _observe(
        self, result: Discovery, run: Run, threshold: float, *, history_if_final: bool = False
    ) -> bool:
        """Add the run to the observations if it needs a diff; whether its state is stored after the tick."""
        if self._unchanged(run):
            return True
        previous = self._states.get(run.key)
        if previous is not None or run.key in self._configured:
            # Known runs, and runs the config names, are always diffed and recorded.
            result.observations.append(Observation(run, previous, silent=False))
            return True
        if self._finished_history(run, threshold):
            return False  # history that finished before we watched: nothing to record or announce
        old = run.final if run.create_time is None else run.create_time.timestamp() < threshold
        # On an empty store a finished run inside the news window is recorded silently: unstored, the
        # next tick would take it as news.
        result.observations.append(Observation(run, None, silent=old or (history_if_final and run.final)))
        return True

    def _scan_project(
        self, project: ProjectSettings, cursor: ProjectCursor | None, threshold: float, now: float
    ) -> _ProjectScan:
        """Read the pages that can hold news (no state: it is read for every workspace at once after)."""
        scan = _ProjectScan(project, cursor, threshold)
        first_page = self._source.list_runs(project, 1, deadline=self._deadline)
        scan.add(first_page)
        moved = cursor is None or first_page.total_count != cursor.total_count
        if moved and _newest_first(first_page.runs):
            # News sits at the top: read on while a page still reaches back into the news window.
            reach = cursor.listed_at - LISTING_MARGIN_S if cursor else self._news_threshold(None, now)
            oldest = _oldest(scan.runs.values())
            while scan.more and oldest >= reach:
                new = self._read_page(scan)
                if new is None:
                    return scan
                oldest = min(oldest, _oldest(scan.runs[key] for key in new))
        elif moved:
            # No order to lean on: where the count moved, new runs can be on any page.
            while scan.more:
                if self._read_page(scan) is None:
                    return scan
        self._fetch_missing_active(scan)
        moving = {run.id for run in scan.runs.values() if not run.final}
        still_moving = tuple(sorted(moving | (scan.skipped - {run.id for run in scan.runs.values()})))
        watched_since = cursor.watched_since if cursor else now
        version = cursor.version if cursor else 0
        # The count as page 1 gave it: a run created while the pages were read moves it next tick.
        listed = ProjectCursor(project.id, first_page.total_count, now, still_moving, watched_since)
        scan.listed = replace(listed, version=version)
        return scan

    def _fetch_missing_active(self, scan: _ProjectScan) -> None:
        """Runs still moving that no page showed: by id, or by the remaining pages when cheaper."""
        project = scan.project
        active = scan.cursor.active_run_ids if scan.cursor else ()
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
                log.warning("dataworks: run %s no longer exists", run_key(project.id, run_id))
                scan.vanished.append(run_key(project.id, run_id))
                continue
            scan.runs[fetched.key] = fetched

    def _vanish(self, key: str) -> None:
        """A stored run DataWorks no longer knows: remembered as gone, so nobody waits for it."""
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
        return scan.add(self._source.list_runs(scan.project, scan.pages_read + 1, deadline=self._deadline))

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
                log.warning("dataworks: run %s no longer exists", key)
                self._vanish(key)
                continue
            seen[key] = run
            self._observe(result, run, threshold=0.0)  # named in the config: never history
