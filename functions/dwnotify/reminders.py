"""Reminders: a stage that waits at a manual gate, or runs, for longer than the config allows.

Pure: given a run's stored state (its stages' statuses and the times dwnotify first saw each in its
status, `RunState.stage_since`), the `reminders` settings and the time, it says which reminder
events are due, the state that records them as announced, and when the next one falls due (what the
workspace's cursor keeps, so a tick in which nothing changed in DataWorks still finds it without
reading any state it does not need).

- `stage.waiting`: the run is running, every earlier stage succeeded (none, for the first stage),
  and this stage has stayed `init` for `waiting_after`, counted from when it became the next stage
  (the later of its own first sighting and its predecessor's first sighting as succeeded).
- `stage.stuck`: the stage has stayed `running` for `stuck_after` since it was first seen running.

Each is announced once per stage and sighting (the time it has held its status), again every
`repeat` if set. A change of the stage starts a new sighting, so it clears what was announced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import timedelta

from .model import INIT, RUNNING, SUCCESS, Event, Run, RunState, Stage

WAITING = "stage.waiting"
STUCK = "stage.stuck"
_HELD = {WAITING: INIT, STUCK: RUNNING}  # the status a stage keeps while its reminder stands
_SEP = "\x1f"  # parts of a reminder's announced key: remind, type, stage, sighting, repeat number


@dataclass(frozen=True)
class Due:
    """The reminder events due now, the state that records them, and when the next falls due."""

    events: tuple[Event, ...]
    state: RunState
    next_at: float | None


def remind(
    state: RunState,
    run: Run,
    waiting_after: timedelta | None,
    stuck_after: timedelta | None,
    repeat: timedelta | None,
    now: float,
) -> Due:
    """The reminders of `run` (as just seen) whose time has come, judged from its new `state`."""
    events: list[Event] = []
    announced = {key for key in state.announced if not _stale(key, run)}
    upcoming: list[float] = []
    for stage, kind, since, after in _candidates(state, run, waiting_after, stuck_after):
        first = since + after.total_seconds()
        if now < first:
            upcoming.append(first)
            continue
        every = repeat.total_seconds() if repeat else None
        count = 0 if every is None else math.floor((now - first) / every)
        key = _SEP.join(("remind", kind, stage.key, f"{since:.3f}", str(count)))
        if key not in announced:
            announced.add(key)
            waited = timedelta(seconds=max(0.0, now - since))
            events.append(
                Event(kind, run.key, stage.status, stage.status, stage, reminder=key, waited=waited)
            )
        if every is not None:
            upcoming.append(first + (count + 1) * every)
    return Due(tuple(events), replace(state, announced=frozenset(announced)), min(upcoming, default=None))


def _candidates(
    state: RunState, run: Run, waiting_after: timedelta | None, stuck_after: timedelta | None
) -> list[tuple[Stage, str, float, timedelta]]:
    """(stage, reminder type, since when, threshold) for every stage a reminder may concern."""
    found: list[tuple[Stage, str, float, timedelta]] = []
    if run.status != RUNNING:
        return found
    since = state.stage_since
    previous: Stage | None = None
    for stage in sorted(run.stages, key=lambda stage: (stage.step, stage.code)):
        seen = since.get(stage.key)
        if stuck_after is not None and stage.status == RUNNING and seen is not None:
            found.append((stage, STUCK, seen, stuck_after))
        if stage.status == INIT:
            opened = seen if previous is None else _later(seen, since.get(previous.key))
            if waiting_after is not None and opened is not None:
                found.append((stage, WAITING, opened, waiting_after))
            break  # only the next stage is at a gate; later ones wait behind it
        if stage.status != SUCCESS:
            break
        previous = stage
    return found


def _later(first: float | None, second: float | None) -> float | None:
    return None if first is None or second is None else max(first, second)


def _stale(key: str, run: Run) -> bool:
    """Whether an announced reminder is over: its stage no longer holds the status it was about
    (forgotten, so the stage's next wait or run is a new sighting), or the run is no longer running."""
    parts = key.split(_SEP)
    if len(parts) != 5 or parts[0] != "remind":
        return False
    held = _HELD.get(parts[1])
    stage = next((stage for stage in run.stages if stage.key == parts[2]), None)
    return run.status != RUNNING or stage is None or stage.status != held
