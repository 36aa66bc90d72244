"""Paging by what the server serves: a lying TotalCount, an ignored PageSize, a repeated page, a page cap.

Pure tests of the Discoverer against a scripted RunSource, counting list calls; the same servers
are played through the wire by the DataWorks emulator in tests/test_hardening.py.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone

from dwnotify.answers import RunPage
from dwnotify.discovery import MAX_PAGES_PER_TICK, Discoverer
from dwnotify.model import Run, RunState
from dwnotify.settings import DataWorksSettings, ProjectSettings

NOW = 1_800_000_000.0
PROJECT = ProjectSettings(10000, None, "cn-shanghai", "127.0.0.1:1")
SETTINGS = DataWorksSettings("cn-shanghai", "127.0.0.1:1", "http", (PROJECT,))


def run(index: int) -> Run:
    created = datetime.fromtimestamp(NOW - 60 - index, tz=timezone.utc)
    return Run(id=f"run-{index:05d}", project_id=PROJECT.id, status="success", create_time=created)


@dataclass
class Server:
    """Serves `runs` oldest-first in pages of `serves` runs, claiming `claims` as the total."""

    runs: list[Run]
    serves: int = 100
    claims: int | None = None
    repeats_page_one: bool = False
    pages: list[int] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.pages)

    def list_runs(
        self, project: ProjectSettings, page_number: int, *, deadline: float | None = None
    ) -> RunPage:
        self.pages.append(page_number)
        page = 1 if self.repeats_page_one else page_number
        chunk = self.runs[(page - 1) * self.serves : page * self.serves]
        total = len(self.runs) if self.claims is None else self.claims
        return RunPage(total_count=total, runs=tuple(chunk))

    def get_run(self, project: ProjectSettings, run_id: str, *, deadline: float | None = None) -> Run | None:
        raise AssertionError("no run is fetched by id here")


class EmptyStore:
    def load_runs(self, keys: Collection[str]) -> dict[str, RunState]:
        return {}


def discover(server: Server) -> set[str]:
    found = Discoverer(SETTINGS, server, EmptyStore(), clock=lambda: NOW).discover({}, NOW)
    assert not found.errors, found.errors
    return {observation.run.id for observation in found.observations}


def test_a_lying_total_count_costs_two_calls_not_a_loop() -> None:
    server = Server([run(0)], claims=1_000_000)
    assert discover(server) == {"run-00000"}
    assert server.pages == [1, 2]  # page 2 is empty: the list ends there


def test_a_server_that_ignores_page_size_is_paged_by_what_it_serves() -> None:
    server = Server([run(i) for i in range(150)], serves=10)
    assert len(discover(server)) == 150
    assert server.pages == list(range(1, 16))


def test_a_short_page_ends_the_list_whatever_the_count_says() -> None:
    server = Server([run(i) for i in range(150)], claims=900)
    assert len(discover(server)) == 150
    assert server.pages == [1, 2]


def test_a_server_that_repeats_page_one_is_read_twice_then_left() -> None:
    server = Server([run(i) for i in range(300)], repeats_page_one=True)
    assert len(discover(server)) == 100
    assert server.pages == [1, 2]


def test_pages_per_tick_are_capped() -> None:
    server = Server([run(i) for i in range(MAX_PAGES_PER_TICK * 10 + 5)], serves=10)
    discover(server)
    assert len(server.pages) == MAX_PAGES_PER_TICK
