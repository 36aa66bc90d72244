"""An invocation that polls every `poll_every` while runs move, and a daily call budget it never exceeds."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from dwnotify import config
from dwnotify.app import App, build_app
from dwnotify.pacing import Ledger
from dwnotify.state.base import TICK_LEASE

from .conftest import CREDENTIALS, World
from .helpers import start_run

MINUTE = 60.0


def _app(world: World, on_sleep: Callable[[float], None] | None = None) -> App:
    """The world's app, with a sleep that first moves the clock and then lets the test act at that time."""

    def sleep(seconds: float) -> None:
        world.clock.sleep(seconds)
        if on_sleep is not None:
            on_sleep(world.clock.now)

    settings = config.load(world.write_config(), world.environ())
    return build_app(settings, CREDENTIALS, clock=world.clock, sleep=sleep)


def _succeeds_after(world: World, run_id: str, at: float) -> Callable[[float], None]:
    """A sleep hook that lets the run succeed, all its stages done, once the clock passes `at`."""

    def succeed(now: float) -> None:
        if now >= at:
            world.dataworks.set_run_status(
                run_id, "Success", stages={"BUILD": "Success", "DEPLOY": "Success"}
            )

    return succeed


def test_an_invocation_polls_every_15s_while_runs_move_and_announces_a_failure_within_one(
    world: World,
) -> None:
    world.config_overrides["dataworks.poll_every"] = "15s"
    run_id = start_run(world)
    started = world.clock.now
    other = _app(world)  # the next timer's invocation, on another instance
    seen: list[Any] = []

    def meanwhile(now: float) -> None:
        if now - started >= 20 and not seen:
            world.dataworks.set_run_status(run_id, "Fail", stages={"BUILD": "Fail"})
            seen.append(other.notifier.tick())  # the loop holds the tick lease: this one only delivers

    app = _app(world, meanwhile)
    summary = app.notifier.run(deadline=started + 55)
    # Polls at 0, 15 and 30 s, which finds the run failed: nothing moves any more, the loop ends.
    assert (summary.polls, summary.api_calls, world.clock.slept) == (3, 6, [15.0, 15.0])
    assert seen[0].discovery_skipped and seen[0].api_calls == 0
    failures = [m for m in world.ding() if run_id in m["markdown"]["text"]]
    assert len(failures) == 1  # posted by the poll at 30 s, 10 s after the run failed
    assert summary.events == 4  # run.started, stage.started, then stage.failed, run.failed
    assert not other.notifier.tick().discovery_skipped  # the lease was given back at the end
    app.close()
    other.close()


def test_the_last_poll_is_one_that_can_end_before_the_deadline(world: World) -> None:
    world.config_overrides["dataworks.poll_every"] = "15s"
    start_run(world)
    app = _app(world)
    summary = app.notifier.run(deadline=world.clock.now + 60)  # FC's 80 s timeout less the margin
    # Polls at 0, 15, 30 and 45 s (45 + a 4 s margin + a 10 s delivery timeout fit in 60); not at 60 s.
    assert (summary.polls, summary.api_calls, world.clock.slept) == (4, 8, [15.0, 15.0, 15.0])
    app.close()


def test_an_invocation_waits_for_the_previous_ones_polling_to_end_and_polls_in_its_place(
    world: World,
) -> None:
    world.config_overrides["dataworks.poll_every"] = "15s"
    start_run(world)
    app = _app(world)
    previous = app.store.acquire_lease(TICK_LEASE, "previous-invocation", 20.0, world.clock.now)
    assert previous is not None
    summary = app.notifier.run(deadline=world.clock.now + 60)
    # At 0 and 15 s the previous invocation still polls (its lease lasts 20 s): only delivering; at 30 and
    # 45 s this one polls.
    assert (summary.polls, summary.api_calls, summary.discovery_skipped) == (4, 4, False)
    app.close()


def test_an_idle_invocation_polls_once_and_returns_at_once(world: World) -> None:
    world.config_overrides["dataworks.poll_every"] = "15s"
    app = _app(world)
    summary = app.notifier.run(deadline=world.clock.now + 55)
    assert (summary.polls, summary.api_calls, world.clock.slept) == (1, 2, [])
    app.close()


def test_polling_stops_when_the_runs_stop(world: World) -> None:
    world.config_overrides["dataworks.poll_every"] = "15s"
    run_id = start_run(world)
    started = world.clock.now
    app = _app(world, _succeeds_after(world, run_id, started + 10))
    summary = app.notifier.run(deadline=started + 55)
    assert summary.polls == 2  # the second poll saw the run finish: nothing left to poll for
    app.close()


def _budget_world(world: World, budget: int) -> None:
    world.config_overrides["dataworks.daily_call_budget"] = budget
    world.config_overrides["dataworks.projects"] = [10000]


def _stored_ledger(app: App) -> Ledger | None:
    lease = app.store.open_tick([], 0.0).tick_lease
    return Ledger.from_data(lease.data.get("budget")) if lease is not None else None


def test_a_day_of_one_minute_timers_never_spends_more_than_the_budget(world: World) -> None:
    _budget_world(world, 100)
    run_id = start_run(world)
    app = _app(world)
    by_day: Counter[int] = Counter()  # calls per budget day (midnight Beijing time)
    skipped = 0
    for minute in range(2 * 24 * 60):
        if minute % 600 == 0:
            world.dataworks.set_run_status(run_id, stages={"BUILD": "Success", "DEPLOY": "Running"})
        summary = app.notifier.run(deadline=world.clock.now + 55)
        by_day[int((world.clock.now + 8 * 3600) // 86400)] += summary.api_calls
        skipped += bool(summary.poll_skipped)
        if summary.poll_skipped:
            assert summary.api_calls == 0 and "budget" in summary.poll_skipped
        world.clock.advance(MINUTE)
    assert sum(by_day.values()) == world.dataworks.call_count()  # the emulator counted the same
    assert max(by_day.values()) <= 100, by_day
    whole_day = sorted(by_day)[1]  # the one budget day the two days cover whole
    assert by_day[whole_day] >= 80, by_day  # spread over the day, the budget is spent
    assert skipped >= 2 * 24 * 60 - 300
    app.close()


def test_a_skipped_poll_writes_nothing_and_a_made_one_reserves_its_cap_before_any_call(world: World) -> None:
    # 10:00 in Beijing, whatever time the test runs: near the budget day's end (midnight UTC+8) 100
    # calls cover a poll a minute, so the planner would not wait.
    world.clock.advance((2 * 3600 - world.clock.now % 86400) % 86400)
    _budget_world(world, 100)
    start_run(world)
    app = _app(world)
    store: Any = app.store
    first = app.notifier.run(deadline=world.clock.now + 55)  # a fresh day: polls at once
    assert not first.poll_skipped and first.api_calls == 1
    ledger = _stored_ledger(app)
    # What it really cost, kept at release (an unknown ledger counts as a day spent at the pace so far).
    assert ledger is not None and (ledger.last_cost, ledger.polled_at) == (1, world.clock.now)
    world.clock.advance(MINUTE)
    writes = store.write_round_trips
    skipped = app.notifier.run(deadline=world.clock.now + 55)  # a minute later: the planner waits
    assert skipped.poll_skipped.startswith("budget")
    assert (skipped.api_calls, store.write_round_trips - writes) == (0, 0)

    # A poll reserves its cap in the ledger before it calls DataWorks: one that dies mid-way still
    # counts what it may have spent.
    reserved: list[int] = []
    real_list_runs = app.client.list_runs

    def list_runs(*args: Any, **kwargs: Any) -> Any:
        lease = store.open_tick([], world.clock.now).tick_lease
        reserved.append(Ledger.from_data(lease.data["budget"]).spent)
        return real_list_runs(*args, **kwargs)

    app.client.list_runs = list_runs  # type: ignore[method-assign]
    for _ in range(60):
        world.clock.advance(MINUTE)
        before = _stored_ledger(app)
        if not app.notifier.run(deadline=world.clock.now + 55).poll_skipped:
            break
    assert before is not None and reserved
    assert reserved[0] >= before.spent + 1  # the day's spend so far plus this poll's cap
    app.close()


def test_a_poll_stops_calling_at_its_cap(world: World) -> None:
    app = _app(world)
    app.client.call_limit = app.client.calls + 1
    summary = app.notifier.tick()
    assert summary.api_calls == 1  # the second workspace was not asked
    assert any("daily call budget" in error for error in summary.errors)
    app.close()


def test_budgeted_polls_of_two_instances_take_turns_under_the_tick_lease(world: World) -> None:
    _budget_world(world, 100)
    start_run(world)
    first, second = _app(world), _app(world)
    holder = first.store.acquire_lease(TICK_LEASE, "someone-else", 90.0, world.clock.now)
    assert holder is not None
    summary = second.notifier.run(deadline=world.clock.now + 55)
    assert summary.discovery_skipped and summary.api_calls == 0
    first.store.release_lease(holder)
    assert second.notifier.run(deadline=world.clock.now + 55).api_calls == 1
    first.close()
    second.close()


def test_stage_statuses_of_the_polled_run_are_stored(world: World) -> None:
    world.config_overrides["dataworks.poll_every"] = "15s"
    run_id = start_run(world)
    app = _app(world)
    app.notifier.run(deadline=world.clock.now + 20)
    stored = app.store.load_runs([f"10000/{run_id}"])
    assert stored[f"10000/{run_id}"].stage_statuses["BUILD"] == "running"
    app.close()


def test_polls_keep_to_the_invocations_grid_when_each_takes_time(world: World) -> None:
    world.config_overrides["dataworks.poll_every"] = "15s"
    start_run(world)
    app = _app(world)
    real_list_runs = app.client.list_runs

    def slow_list_runs(*args: Any, **kwargs: Any) -> Any:
        world.clock.advance(0.25)  # two workspaces: each poll takes half a second
        return real_list_runs(*args, **kwargs)

    app.client.list_runs = slow_list_runs  # type: ignore[method-assign]
    summary = app.notifier.run(deadline=world.clock.now + 60)
    # Polls start at 0, 15, 30 and 45 s, not 15.5 s after the previous one started.
    assert summary.polls == 4 and world.clock.slept == [14.5, 14.5, 14.5]
    app.close()


def test_a_run_the_config_names_keeps_an_invocation_polling_only_until_it_is_final(world: World) -> None:
    world.config_overrides["dataworks.poll_every"] = "15s"
    run_id = start_run(world)
    world.config_overrides["dataworks.runs"] = [{"project": 10000, "id": run_id}]
    started = world.clock.now
    app = _app(world, _succeeds_after(world, run_id, started + 10))
    assert app.notifier.run(deadline=started + 60).polls == 2  # running at 0 s, final at 15 s: done
    world.clock.advance(MINUTE)
    assert app.notifier.run(deadline=world.clock.now + 60).polls == 1  # final and stored: one poll
    app.close()
