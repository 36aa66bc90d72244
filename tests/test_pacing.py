"""pacing.py: the daily call budget never overspends, and spends its calls where runs are moving."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import workday
from dwnotify.pacing import DAY_S, CallBudget, Decision, Ledger

EXAMPLES = 2000 if os.environ.get("DWNOTIFY_SOAK") else 200  # `make soak` digs deeper
BEIJING = timezone(timedelta(hours=8))
MIN = 60.0
HOUR = 3600.0


def at(day: str, clock: str = "00:00:00", tz: timezone = BEIJING) -> float:
    """Epoch seconds of a wall-clock time: at("2024-06-03", "09:30:00")."""
    return datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=tz).timestamp()


MONDAY = at("2024-06-03")
FILL = 90 / DAY_S  # at 100 a day: 10 to spend ahead, 90 filling over the day


def run(
    budget: CallBudget,
    ledger: Ledger | None,
    start: float,
    minutes: int,
    *,
    active: bool,
    min_cost: int = 1,
    every_s: float = MIN,
) -> tuple[Ledger | None, list[float], list[Decision]]:
    """Ask every `every_s` for `minutes`, spending `min_cost` at each poll; the ledger, polls, decisions."""
    polls: list[float] = []
    decisions: list[Decision] = []
    for i in range(int(minutes * MIN / every_s)):
        now = start + i * every_s
        decision = budget.decide(ledger, now, active=active, min_cost=min_cost)
        decisions.append(decision)
        if decision.poll:
            ledger = budget.spend(ledger, now, min_cost, active=active)
            polls.append(now)
    return ledger, polls, decisions


# --- the hard cap --------------------------------------------------------------------------------------


def test_a_fresh_day_polls_at_once_with_the_burst_as_its_cap() -> None:
    budget = CallBudget(100)
    assert budget.burst == 10
    decision = budget.decide(None, MONDAY, active=False, min_cost=1)
    assert (decision.poll, decision.cap) == (True, 10)
    assert decision.reason == "budget: idle, 100 of 100 calls left today"


def test_the_cap_keeps_the_day_within_its_budget() -> None:
    ledger = Ledger("2024-06-03", spent=97, polled_at=MONDAY, last_cost=1, saved=50.0)
    decision = CallBudget(100).decide(ledger, MONDAY + 2 * HOUR, active=True, min_cost=1)
    assert (decision.poll, decision.cap) == (True, 3)


def test_the_last_call_of_the_day_is_spent() -> None:
    ledger = Ledger("2024-06-03", spent=99, polled_at=MONDAY, last_cost=1, saved=5.0)
    decision = CallBudget(100).decide(ledger, at("2024-06-03", "23:00:00"), active=False, min_cost=1)
    assert (decision.poll, decision.cap) == (True, 1)


@pytest.mark.parametrize(("spent", "min_cost"), [(99, 2), (100, 1), (120, 1)])
def test_a_poll_that_does_not_fit_is_not_made_until_the_day_ends(spent: int, min_cost: int) -> None:
    ledger = Ledger("2024-06-03", spent=spent, polled_at=MONDAY, last_cost=1, saved=30.0)
    decision = CallBudget(100).decide(ledger, at("2024-06-03", "18:30:00"), active=True, min_cost=min_cost)
    assert (decision.poll, decision.cap) == (False, 0)
    assert decision.next_at == at("2024-06-04")
    left = max(100 - spent, 0)
    assert decision.reason == (
        f"budget: {left} of 100 calls left today and a poll costs {min_cost}; "
        "next poll when the day ends (midnight UTC+8), in 5 h 30 min"
    )


def test_a_budget_smaller_than_a_poll_never_polls() -> None:
    _, polls, _ = run(CallBudget(3), None, MONDAY, 3 * 24 * 60, active=True, min_cost=4)
    assert polls == []


# --- the day -------------------------------------------------------------------------------------------


def test_the_day_starts_at_midnight_beijing_time() -> None:
    budget = CallBudget(100)
    spent = Ledger("2024-06-03", spent=100, polled_at=at("2024-06-03", "20:00:00"), last_cost=1)
    before = budget.decide(spent, at("2024-06-03", "23:59:59"), active=True, min_cost=1)
    after = budget.decide(spent, at("2024-06-04"), active=True, min_cost=1)
    assert (before.poll, after.poll) == (False, True)
    assert at("2024-06-04") == at("2024-06-03", "16:00:00", timezone.utc)
    ledger = budget.spend(spent, at("2024-06-04"), 2)
    assert (ledger.day, ledger.spent) == ("2024-06-04", 2)


def test_the_day_offset_is_a_parameter() -> None:
    utc = CallBudget(100, day_offset_s=0)
    spent = Ledger("2024-06-03", spent=100, polled_at=at("2024-06-03", "08:00:00", timezone.utc), last_cost=1)
    beijing_midnight = at("2024-06-04")  # still June 3rd in UTC
    assert not utc.decide(spent, beijing_midnight, active=True, min_cost=1).poll
    assert utc.decide(spent, at("2024-06-04", tz=timezone.utc), active=True, min_cost=1).poll
    assert utc.spend(None, beijing_midnight, 1).day == "2024-06-03"
    assert "midnight UTC+0" in utc.decide(spent, beijing_midnight, active=True, min_cost=1).reason


def test_the_spacing_runs_on_across_midnight() -> None:
    budget = CallBudget(100)
    late = Ledger("2024-06-02", spent=90, polled_at=MONDAY - MIN, last_cost=1, saved=5.0)
    assert not budget.decide(late, MONDAY + MIN, active=True, min_cost=1).poll  # 3.6 min apart at 00:00
    assert budget.decide(late, MONDAY + 3 * MIN, active=True, min_cost=1).poll


def test_a_new_day_starts_with_the_burst_and_nothing_spent() -> None:
    budget = CallBudget(100)
    yesterday = Ledger("2024-06-02", spent=100, polled_at=MONDAY - 60, last_cost=1, saved=-3.0)
    decision = budget.decide(yesterday, MONDAY + HOUR, active=True, min_cost=1)
    assert decision.cap == 13  # the burst and an hour of filling: 10 + 90/24
    assert budget.spend(yesterday, MONDAY + HOUR, 1).spent == 1


# --- the pace ------------------------------------------------------------------------------------------


def test_a_poll_waits_until_the_bucket_holds_its_calls() -> None:
    budget = CallBudget(100)
    noon = at("2024-06-03", "12:00:00")
    ledger = Ledger("2024-06-03", spent=60, polled_at=noon, last_cost=1, saved=0.25)
    decision = budget.decide(ledger, noon + 5 * MIN, active=True, min_cost=1)
    assert not decision.poll
    assert decision.next_at == pytest.approx(noon + 0.75 / FILL)
    assert decision.reason.startswith(
        "budget: ahead of the day's pace, 40 of 100 calls left today, next poll"
    )
    assert budget.decide(ledger, decision.next_at, active=True, min_cost=1).poll


def test_the_bucket_refilled_by_next_at_is_full_despite_float_rounding() -> None:
    budget = CallBudget(5)  # a slow filling: the rounding of a refill time can leave the bucket an ulp short
    ledger = Ledger("2024-06-03", spent=3, polled_at=1717368680.0085273, last_cost=1, saved=-1.26794086450228)
    decision = budget.decide(ledger, 1717369239.0757027, active=True, min_cost=1)
    assert not decision.poll
    assert budget.decide(ledger, decision.next_at, active=True, min_cost=1).poll


def test_a_ledger_without_a_poll_holds_the_days_filling_less_its_spend() -> None:
    noon = at("2024-06-03", "12:00:00")
    ledger = Ledger("2024-06-03", spent=50, polled_at=None, last_cost=0)
    decision = CallBudget(100).decide(ledger, noon, active=True, min_cost=1)
    assert (decision.poll, decision.cap) == (True, 5)  # 10 + 90/2 - 50


def test_nonstop_activity_keeps_the_pace_and_leaves_the_evening_its_share() -> None:
    budget = CallBudget(100)
    ledger, polls, decisions = run(budget, None, MONDAY, 24 * 60, active=True)
    assert ledger is not None and ledger.spent == len(polls) <= 100
    for spent, poll in enumerate(polls, start=1):  # never more than the burst ahead of the filling
        assert spent <= 10 + FILL * (poll - MONDAY) + 1e-6
    evening = [poll for poll in polls if poll >= at("2024-06-03", "18:00:00")]
    assert len(evening) >= 22  # (100 - 10) x 6/24 calls are kept for the last six hours
    assert any("ahead of the day's pace" in decision.reason for decision in decisions)


def test_a_wait_past_midnight_stops_at_midnight() -> None:
    late = at("2024-06-03", "23:50:00")
    owing = Ledger("2024-06-03", spent=60, polled_at=late, last_cost=1, saved=-5.0)
    decision = CallBudget(100).decide(owing, late + MIN, active=True, min_cost=1)
    assert (decision.poll, decision.next_at) == (False, at("2024-06-04"))
    assert decision.reason.endswith("next poll in 9 min")


def test_calls_left_near_midnight_are_spent_rather_than_lost() -> None:
    budget = CallBudget(100)
    ledger = Ledger("2024-06-03", spent=80, polled_at=at("2024-06-03", "22:00:00"), last_cost=1, saved=12.0)
    _, polls, _ = run(budget, ledger, at("2024-06-03", "22:00:00"), 120, active=False)
    assert len(polls) >= 8


# --- the spacing ---------------------------------------------------------------------------------------

NINE = at("2024-06-03", "09:00:00")
RICH = Ledger("2024-06-03", spent=20, polled_at=NINE, last_cost=1, saved=30.0)  # 80 left for 15 hours


def test_active_runs_are_polled_four_times_as_often_as_an_even_spread() -> None:
    even = 15 * HOUR / 80  # 11.25 minutes
    decision = CallBudget(100).decide(RICH, NINE + 30, active=True, min_cost=1)
    assert not decision.poll
    assert decision.next_at - NINE == pytest.approx(even / 4, abs=1)
    assert decision.reason == "budget: runs active, next poll in 3 min to save calls"


def test_idle_without_activity_polls_at_three_times_the_even_spread() -> None:
    even = 15 * HOUR / 80
    decision = CallBudget(100).decide(RICH, NINE + 30, active=False, min_cost=1)
    assert decision.next_at - NINE == pytest.approx(even * 3, abs=5)
    assert decision.reason == "budget: idle, next poll in 34 min to save calls"


def test_a_poll_costing_more_calls_is_spaced_further() -> None:
    budget = CallBudget(100)
    one = budget.decide(RICH, NINE + 30, active=True, min_cost=1).next_at - NINE
    three = budget.decide(RICH, NINE + 30, active=True, min_cost=3).next_at - NINE
    assert three == pytest.approx(3 * one, rel=0.01)


def test_fewer_calls_left_means_sparser_polls() -> None:
    budget = CallBudget(100)
    poor = Ledger("2024-06-03", spent=60, polled_at=NINE, last_cost=1, saved=30.0)
    rich_next = budget.decide(RICH, NINE + 30, active=True, min_cost=1).next_at
    poor_next = budget.decide(poor, NINE + 30, active=True, min_cost=1).next_at
    assert poor_next - NINE == pytest.approx(2 * (rich_next - NINE), rel=0.01)


def test_active_runs_get_more_polls_than_idle_hours() -> None:
    budget = CallBudget(100)
    _, active_polls, _ = run(budget, RICH, NINE, 180, active=True)
    _, idle_polls, _ = run(budget, RICH, NINE, 180, active=False)
    assert len(active_polls) >= 4 * len(idle_polls) >= 8


def test_idle_polls_back_off_twice_as_long_as_runs_have_been_quiet() -> None:
    budget = CallBudget(100)
    ledger = Ledger("2024-06-03", 20, polled_at=NINE + 10 * MIN, last_cost=1, saved=30.0, active_at=NINE)
    decision = budget.decide(ledger, NINE + 11 * MIN, active=False, min_cost=1)
    assert decision.next_at == pytest.approx(NINE + 30 * MIN)


def test_after_activity_idle_gaps_grow_up_to_the_idle_spacing() -> None:
    budget = CallBudget(100)
    ledger = budget.spend(RICH, NINE, 1, active=True)
    _, polls, _ = run(budget, ledger, NINE + MIN, 4 * 60, active=False)
    gaps = [b - a for a, b in zip([NINE, *polls], polls, strict=False)]
    assert gaps[:3] == [3 * MIN, 6 * MIN, 18 * MIN]  # the active spacing, then twice the quiet time
    assert all(25 * MIN <= gap <= 3 * 15 * HOUR / 79 + MIN for gap in gaps[3:])  # then the idle spacing


def test_a_poll_that_found_runs_moving_restarts_the_back_off() -> None:
    budget = CallBudget(100)
    quiet = budget.spend(RICH, NINE, 1)
    found = budget.spend(RICH, NINE, 1, active=True)
    assert found.active_at == NINE and quiet.active_at is None
    quiet_next = budget.decide(quiet, NINE + 30, active=False, min_cost=1).next_at
    found_next = budget.decide(found, NINE + 30, active=False, min_cost=1).next_at
    assert found_next - NINE < (quiet_next - NINE) / 5


def test_next_at_after_a_poll_assumes_it_cost_min_cost() -> None:
    budget = CallBudget(100)
    decision = budget.decide(RICH, NINE + HOUR, active=True, min_cost=1)
    assert decision.poll
    after = budget.spend(RICH, NINE + HOUR, 1, active=True)
    expected = budget.decide(after, NINE + HOUR, active=True, min_cost=1).next_at
    assert decision.next_at == expected > NINE + HOUR


# --- clock trouble -------------------------------------------------------------------------------------


def test_a_clock_stepping_back_within_the_day_does_not_freeze_polling() -> None:
    budget = CallBudget(100)
    noon = at("2024-06-03", "12:00:00")
    ledger = Ledger("2024-06-03", spent=50, polled_at=noon, last_cost=1, saved=0.5)
    back = noon - 2 * HOUR
    decision = budget.decide(ledger, back, active=True, min_cost=1)
    assert decision.poll and decision.cap == 1
    assert decision.reason.endswith("(the clock went back)")
    ledger = budget.spend(ledger, back, 1, active=True)
    assert (ledger.spent, ledger.polled_at, ledger.saved) == (51, back, -0.5)  # the credit is owed
    _, polls, _ = run(budget, ledger, back + MIN, 60, active=True)
    assert polls and polls[0] - back <= 1.5 / FILL + MIN  # repaid from the filling, then polling again


def test_a_clock_stepping_back_over_midnight_keeps_the_later_days_count() -> None:
    budget = CallBudget(100)
    tuesday = Ledger("2024-06-04", spent=95, polled_at=at("2024-06-04", "00:05:00"), last_cost=1, saved=2.0)
    back = at("2024-06-03", "23:55:00")
    assert budget.decide(tuesday, back, active=True, min_cost=1).poll
    ledger = budget.spend(tuesday, back, 1)
    assert (ledger.day, ledger.spent) == ("2024-06-04", 96)
    exhausted = Ledger("2024-06-04", spent=100, polled_at=at("2024-06-04", "00:05:00"), last_cost=1)
    decision = budget.decide(exhausted, back, active=True, min_cost=1)
    assert not decision.poll
    assert decision.next_at == at("2024-06-05")


@pytest.mark.parametrize("day", ["2024-06-05", "2030-01-01"])
def test_a_ledger_more_than_a_day_ahead_is_not_believed(day: str) -> None:
    budget = CallBudget(100)
    future = Ledger(day, spent=100, polled_at=at(day, "00:10:00"), last_cost=1)
    noon = at("2024-06-03", "12:00:00")
    assert budget.decide(future, noon, active=True, min_cost=1).poll
    assert budget.spend(future, noon, 1) == budget.spend(None, noon, 1)


def test_an_unknown_ledger_is_a_day_spent_at_the_filling_pace() -> None:
    budget = CallBudget(100)
    six_pm = at("2024-06-03", "18:00:00")
    decision = budget.decide(None, six_pm, active=True, min_cost=1)
    assert (decision.poll, decision.cap) == (True, 10)
    ledger = budget.spend(None, six_pm, 1, active=True)
    assert (ledger.day, ledger.spent, ledger.last_cost) == ("2024-06-03", 67 + 1, 1)  # 90 x 3/4 = 67.5
    assert ledger.saved == pytest.approx(10 + 0.5 - 1)


@settings(max_examples=EXAMPLES, deadline=None)
@given(lost_at=st.integers(0, 24 * 60 - 1), greedy=st.booleans())
def test_a_lost_ledger_overspends_the_day_by_at_most_the_burst(lost_at: int, greedy: bool) -> None:
    budget = CallBudget(100)
    ledger: Ledger | None = None
    spent = 0
    for minute in range(24 * 60):
        if minute == lost_at:
            ledger = None
        now = MONDAY + minute * MIN
        decision = budget.decide(ledger, now, active=True, min_cost=1)
        if decision.poll:
            calls = decision.cap if greedy else 1
            ledger = budget.spend(ledger, now, calls, active=True)
            spent += calls
    assert spent <= 100 + budget.burst


# --- the ledger ----------------------------------------------------------------------------------------


def test_a_ledger_survives_json() -> None:
    ledger = Ledger("2024-06-03", spent=42, polled_at=NINE + 0.25, last_cost=3, saved=-0.75, active_at=NINE)
    assert Ledger.from_data(json.loads(json.dumps(ledger.to_data()))) == ledger
    fresh = CallBudget(100).spend(None, NINE, 1)
    assert Ledger.from_data(json.loads(json.dumps(fresh.to_data()))) == fresh


GOOD = Ledger("2024-06-03", spent=42, polled_at=NINE, last_cost=1, saved=3.5, active_at=None).to_data()
DAMAGED: list[object] = [
    None,
    [],
    "budget",
    {},
    {**GOOD, "day": "2024-02-30"},
    {**GOOD, "day": "2024-6-3"},
    {**GOOD, "day": 20240603},
    {**GOOD, "day": "2024-06-03T00:00"},
    {**GOOD, "spent": -1},
    {**GOOD, "spent": True},
    {**GOOD, "spent": 1.5},
    {**GOOD, "spent": "42"},
    {**GOOD, "spent": None},
    {**GOOD, "last_cost": -2},
    {**GOOD, "polled_at": "noon"},
    {**GOOD, "polled_at": math.nan},
    {**GOOD, "polled_at": math.inf},
    {**GOOD, "polled_at": 10**400},
    {**GOOD, "polled_at": False},
    {**GOOD, "saved": None},
    {**GOOD, "saved": -math.inf},
    {**GOOD, "active_at": [1]},
    {key: value for key, value in GOOD.items() if key != "saved"},
]


@pytest.mark.parametrize("data", DAMAGED, ids=range(len(DAMAGED)))
def test_a_damaged_ledger_reads_as_none(data: object) -> None:
    assert Ledger.from_data(data) is None  # type: ignore[arg-type]


def test_a_ledger_with_extra_keys_still_reads() -> None:
    assert Ledger.from_data({**GOOD, "note": "from a later version"}) == Ledger.from_data(GOOD)


NONSENSE: list[Callable[[CallBudget], object]] = [
    lambda b: b.decide(None, MONDAY, active=False, min_cost=0),
    lambda b: b.decide(None, math.nan, active=False, min_cost=1),
    lambda b: b.spend(RICH, NINE, -1),
    lambda b: CallBudget(0),
]


@pytest.mark.parametrize("call", NONSENSE, ids=["min_cost 0", "now NaN", "calls -1", "budget 0"])
def test_nonsense_arguments_are_refused(call: Callable[[CallBudget], object]) -> None:
    with pytest.raises(ValueError):
        call(CallBudget(100))


# --- properties ----------------------------------------------------------------------------------------

step = st.tuples(
    st.one_of(st.integers(1, 900), st.integers(900, 2 * 86_400)),  # seconds to the next tick
    st.booleans(),  # runs active
    st.integers(1, 4),  # min_cost
    st.floats(0, 1),  # how much of the cap the poll used
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    steps=st.lists(step, min_size=1, max_size=150),
    start=st.floats(0, 400 * 86_400),
    budget_calls=st.integers(1, 300),
    lost=st.booleans(),
)
def test_no_day_ever_spends_more_than_its_budget(
    steps: list[tuple[int, bool, int, float]], start: float, budget_calls: int, lost: bool
) -> None:
    budget = CallBudget(budget_calls)
    now = at("2024-01-01") + start
    ledger = budget.spend(None, _day_start(now), 0)  # a day known from its start: every call is counted
    by_day: Counter[str] = Counter()
    for seconds, active, min_cost, used in steps:
        now += seconds
        decision = budget.decide(ledger, now, active=active, min_cost=min_cost)
        assert decision.next_at >= now
        if not decision.poll:
            assert decision.cap == 0
            if decision.next_at < _day_end(now) and "calls left today and" not in decision.reason:
                assert budget.decide(ledger, decision.next_at, active=active, min_cost=min_cost).poll
            continue
        assert min_cost <= decision.cap
        calls = min_cost + round(used * (decision.cap - min_cost))
        ledger = budget.spend(ledger, now, calls, active=active)
        by_day[ledger.day] += calls
        assert by_day[ledger.day] == ledger.spent <= budget_calls
        assert ledger.day == datetime.fromtimestamp(now, BEIJING).date().isoformat()


def _day_start(now: float) -> float:
    return at(datetime.fromtimestamp(now, BEIJING).date().isoformat())


def _day_end(now: float) -> float:
    return _day_start(now) + DAY_S


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    steps=st.lists(step, min_size=2, max_size=80),
    back=st.integers(1, 86_399),
    when=st.integers(0, 79),
)
def test_a_clock_stepping_back_neither_overspends_nor_freezes(
    steps: list[tuple[int, bool, int, float]], back: int, when: int
) -> None:
    budget = CallBudget(100)
    now = MONDAY
    ledger = budget.spend(None, now, 0)
    by_day: Counter[str] = Counter()
    for index, (seconds, active, min_cost, used) in enumerate(steps):
        now += -back if index == when else seconds
        decision = budget.decide(ledger, now, active=active, min_cost=min_cost)
        behind = ledger.polled_at is not None and ledger.polled_at > now
        if behind and ledger.spent + min_cost <= 100:
            assert decision.poll, decision.reason  # the wait since the last poll is unknown: poll now
        if decision.poll:
            calls = min_cost + round(used * (decision.cap - min_cost))
            ledger = budget.spend(ledger, now, calls, active=active)
            by_day[ledger.day] += calls
            assert by_day[ledger.day] == ledger.spent <= 100


# --- the working day -----------------------------------------------------------------------------------


def test_the_workday_keeps_to_100_calls_and_beats_a_15_minute_timer() -> None:
    figures = workday.measure()
    for strategy in ("budget", "budget_every_15s"):
        assert figures[strategy]["calls"] <= 100
        assert figures[strategy]["latency_s"]["median"] < figures["fixed_15m"]["latency_s"]["median"] / 2
    assert figures["fixed_15m"]["calls"] == 96
    assert figures["over_seeds"]["budget_calls_max"] <= 100
    assert figures["over_seeds"]["budget_every_15s_calls_max"] <= 100
    assert (
        figures["over_seeds"]["budget_median_s"]["median"]
        < figures["over_seeds"]["fixed_15m_median_s"]["median"]
    )
    assert figures["target_met"] == (figures["budget"]["latency_s"]["median"] < 180)
