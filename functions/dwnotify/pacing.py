"""The daily call budget: whether a tick polls DataWorks now, and how many calls that poll may make.

Pure: no I/O and no clock; time comes in as epoch seconds. The caller keeps a `Ledger` between
invocations, asks `CallBudget.decide` before each poll and records what the poll cost with
`CallBudget.spend`.

The rule: spread what is left of the day's budget over what is left of the day, leaning it towards
active runs, under a hard cap and a pace that keeps the evening its share.
- **Cap.** A budget day never spends more than `daily_calls`: a poll's `cap` keeps spent + cap within it,
  and a poll whose `min_cost` does not fit is not made.
- **Pace.** Each day starts with `burst` calls (a tenth of the budget) in a bucket that fills at
  (daily_calls - burst) a day, and a poll needs `min_cost` calls in it. What is not spent is kept until
  the day ends, so a quiet night pays for a busy afternoon; and by any time of day at most burst + the
  filling so far has been spent, so the rest of the day always keeps its share of the budget.
- **Spacing.** The even spacing is the time left in the day over the polls left in its budget. While
  runs are active polls come ACTIVE_BOOST times as often; idle, a poll waits QUIET_FACTOR times as long
  as runs have been quiet (deployments come in clusters: gaps grow quickly after the last activity), at
  least the active spacing and at most IDLE_STRETCH times the even one. At 100 calls a day with 80 left
  at 09:00, that is a poll every 3 min while active and every 34 min at most when idle. Calls that
  would be lost at midnight are spent in the evening, on idle polls if nothing runs.

Clock trouble: a clock behind the last poll makes the next poll due (how long it waited is unknown)
and lets it take up to `min_cost` calls on credit, repaid from the filling; a step back never resets
the day's count (a ledger of the day after the clock's day is counted as that later day). A ledger
more than a day ahead of the clock is not believed: it is treated as unknown, like a missing or
damaged one.

Unknown (`None`) is taken to be a day spent at the bucket's filling pace so far, holding `burst`:
polling resumes at once, and since a real day can have spent at most `burst` more than that pace, a
lost ledger can let a day go over its budget by at most `burst` calls.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import date, timedelta
from typing import Any

DAY_S = 86_400.0
BEIJING_OFFSET_S = 8 * 3600.0
# Tuned on benchmarks/workday.py, whose figures stay near their best over a wide plateau around these.
BURST_DIVISOR = 10  # the day may spend a tenth of its budget ahead of the pace
ACTIVE_BOOST = 4.0
QUIET_FACTOR = 2.0
IDLE_STRETCH = 3.0
_SLACK_CALLS = 1e-9  # float rounding: the bucket refilled by the `next_at` given holds the poll's calls
_EPOCH = date(1970, 1, 1)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class Ledger:
    """What the budget remembers between invocations: the day's spend and the last poll."""

    day: str  # the budget day, "YYYY-MM-DD" at the budget's UTC offset
    spent: int  # calls spent that day
    polled_at: float | None = None  # when the last poll started
    last_cost: int = 0  # calls the last poll cost
    saved: float = 0.0  # calls left in the bucket just after the last poll (negative: owed)
    active_at: float | None = None  # the last poll that found runs moving

    def __post_init__(self) -> None:
        if not (isinstance(self.day, str) and _DAY.fullmatch(self.day)):
            raise ValueError(f"day must be YYYY-MM-DD, not {self.day!r}")
        date.fromisoformat(self.day)  # a real date: raises ValueError for 2024-02-30
        for name in ("spent", "last_cost"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number from 0, not {value!r}")
        for name in ("polled_at", "saved", "active_at"):
            value = getattr(self, name)
            if (value is not None or name == "saved") and not _finite(value):
                raise ValueError(f"{name} must be a finite number, not {value!r}")

    def to_data(self) -> dict[str, Any]:
        """The ledger as JSON-able data."""
        return asdict(self)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Ledger | None:
        """The ledger `to_data` wrote, or None when there is none or it is damaged (never raises)."""
        if not isinstance(data, Mapping):
            return None
        try:
            return cls(**{name: data[name] for name in _LEDGER_FIELDS})
        except (KeyError, TypeError, ValueError, OverflowError):  # __post_init__ judges every value
            return None


_LEDGER_FIELDS = tuple(field.name for field in fields(Ledger))


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Decision:
    """Whether to poll now, with how many calls at most, and when to ask again."""

    poll: bool
    cap: int  # the most calls this poll may make; 0 when not polling
    next_at: float  # when polling is next worth considering (epoch seconds)
    reason: str  # for the tick summary: "budget: idle, next poll in 12 min to save calls"


@dataclass(frozen=True)
class _Today:
    """The ledger read at one moment: the day it counts against and what that day has left."""

    day: str
    ends_at: float
    spent: int
    saved: float  # calls in the bucket now (negative: owed)
    polled_at: float | None  # the last poll, when it can be trusted for spacing
    active_at: float | None
    behind: bool  # the clock is behind the last poll


class CallBudget:
    """Paces DataWorks polls to at most `daily_calls` a day (see the module docstring for the rule).

    The budget day starts at midnight UTC+8 (`day_offset_s`): DataWorks bills in China time, but whether
    the Basic edition's daily cap resets at Beijing midnight is UNCONFIRMED, hence the parameter.
    """

    def __init__(
        self, daily_calls: int, *, day_offset_s: float = BEIJING_OFFSET_S, burst: int | None = None
    ) -> None:
        if daily_calls < 1:
            raise ValueError("daily_calls must be at least 1")
        self.daily_calls = daily_calls
        self.day_offset_s = day_offset_s
        self.burst = (
            max(1, daily_calls // BURST_DIVISOR) if burst is None else min(max(burst, 1), daily_calls)
        )
        self.fill_per_s = (daily_calls - self.burst) / DAY_S

    def decide(self, ledger: Ledger | None, now: float, *, active: bool, min_cost: int) -> Decision:
        """Whether a poll costing at least `min_cost` calls may start at `now` (`active`: runs are moving)."""
        if min_cost < 1:
            raise ValueError("min_cost must be at least 1")
        decision = self._consider(ledger, now, active, min_cost)
        if not decision.poll:
            return decision
        after = self._consider(self.spend(ledger, now, min_cost, active=active), now, active, min_cost)
        return replace(decision, next_at=after.next_at)

    def spend(self, ledger: Ledger | None, now: float, calls: int, *, active: bool = False) -> Ledger:
        """The ledger after a poll that started at `now` and cost `calls` (`active`: it found runs moving).

        Pass `active` as given to `decide`, or True when the poll found runs moving or changed: idle
        polls back off from the last poll that did.
        """
        today = self._today(ledger, now)
        active_at = now if active else today.active_at
        return Ledger(today.day, today.spent + calls, float(now), calls, today.saved - calls, active_at)

    def _consider(self, ledger: Ledger | None, now: float, active: bool, min_cost: int) -> Decision:
        today = self._today(ledger, now)
        left = self.daily_calls - today.spent
        state = "runs active" if active else "idle"
        if min_cost > left:
            why = (
                f"budget: {max(left, 0)} of {self.daily_calls} calls left today and a poll costs {min_cost}; "
                f"next poll when the day ends ({self._midnight()}), in {_wait(today.ends_at - now)}"
            )
            return Decision(False, 0, today.ends_at, why)
        spaced_at = (
            now if today.polled_at is None else today.polled_at + self._gap(today, now, active, min_cost)
        )
        paid_at = now if today.behind else self._paid_at(today, now, min_cost)
        due_at = max(spaced_at, paid_at)
        if due_at <= now:
            cap = min(left, max(math.floor(today.saved), min_cost))
            why = f"budget: {state}, {left} of {self.daily_calls} calls left today"
            return Decision(True, cap, now, why + (" (the clock went back)" if today.behind else ""))
        next_at = min(due_at, today.ends_at)
        if paid_at > spaced_at:
            why = f"budget: ahead of the day's pace, {left} of {self.daily_calls} calls left today"
            return Decision(False, 0, next_at, f"{why}, next poll in {_wait(next_at - now)}")
        return Decision(
            False, 0, next_at, f"budget: {state}, next poll in {_wait(next_at - now)} to save calls"
        )

    def _gap(self, today: _Today, now: float, active: bool, min_cost: int) -> float:
        """How long after the last poll the next one is worth its calls."""
        even = (today.ends_at - now) * min_cost / (self.daily_calls - today.spent)
        spacing = even / ACTIVE_BOOST
        if active:
            return spacing
        if today.active_at is None or today.polled_at is None:
            return even * IDLE_STRETCH
        quiet = max(today.polled_at - today.active_at, 0.0)
        return min(max(spacing, quiet * QUIET_FACTOR), even * IDLE_STRETCH)

    def _paid_at(self, today: _Today, now: float, min_cost: int) -> float:
        """When the bucket holds a poll's calls."""
        missing = min_cost - today.saved
        if missing <= _SLACK_CALLS:
            return now
        return now + missing / self.fill_per_s if self.fill_per_s > 0 else math.inf

    def _today(self, ledger: Ledger | None, now: float) -> _Today:
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite time, not {now!r}")
        number = math.floor((now + self.day_offset_s) / DAY_S)
        starts_at = number * DAY_S - self.day_offset_s
        filled = self.burst + self.fill_per_s * (now - starts_at)  # the bucket if nothing was spent today
        if ledger is None:
            return self._unknown(number, starts_at, filled)
        ahead = (date.fromisoformat(ledger.day) - _EPOCH).days - number
        if ahead > 1:
            return self._unknown(number, starts_at, filled)
        if ahead < 0:  # a new day: the count starts again, the spacing still follows the last poll
            polled_at = ledger.polled_at if ledger.polled_at is not None and ledger.polled_at <= now else None
            return _Today(_day(number), starts_at + DAY_S, 0, filled, polled_at, ledger.active_at, False)
        behind = ledger.polled_at is not None and ledger.polled_at > now
        if ledger.polled_at is None:
            saved = filled - ledger.spent
        elif behind:
            saved = ledger.saved
        else:
            saved = ledger.saved + self.fill_per_s * (now - ledger.polled_at)
        ends_at = starts_at + (1 + ahead) * DAY_S
        polled_at = None if behind else ledger.polled_at
        return _Today(ledger.day, ends_at, ledger.spent, saved, polled_at, ledger.active_at, behind)

    def _unknown(self, number: int, starts_at: float, filled: float) -> _Today:
        # As if the day so far had been spent at the filling pace: only the burst is left to spend ahead.
        assumed = min(self.daily_calls, math.floor(filled - self.burst))
        return _Today(_day(number), starts_at + DAY_S, assumed, filled - assumed, None, None, False)

    def _midnight(self) -> str:
        return f"midnight UTC{self.day_offset_s / 3600:+g}"


def _day(number: int) -> str:
    return (_EPOCH + timedelta(days=number)).isoformat()


def _wait(seconds: float) -> str:
    """A wait as a person reads it: "40 s", "12 min", "5 h 12 min"."""
    if seconds < 60:
        return f"{max(math.ceil(seconds), 0)} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min" if minutes % 60 else f"{minutes // 60} h"
