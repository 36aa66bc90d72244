"""diff(previous, current, now) -> events: the pure heart of a tick. No I/O; the time is given."""

from __future__ import annotations

from datetime import datetime

from .model import (
    CANCELED,
    FAIL,
    FINAL_EVENT_NAMES,
    GONE,
    INIT,
    RUNNING,
    TERMINATED,
    Event,
    Run,
    RunState,
    Stage,
)
from .text import trim_utf8


def _event_type(subject: str, status: str) -> str:
    if status == RUNNING:
        return f"{subject}.started"
    # Only API statuses have names: a status that reads like the store's GONE marker is "changed".
    name = FINAL_EVENT_NAMES.get(status)
    return f"{subject}.{name}" if name else f"{subject}.changed"


def _stage_order(stage: Stage) -> tuple[int, str]:
    return (stage.step, stage.code)


def diff(previous: RunState | None, current: Run, now: float | None = None) -> tuple[list[Event], RunState]:
    """Compare a run with what was stored of it; return the new events and the state to store.

    `now` (epoch seconds; None: times are carried, none set) is when the run was seen: a stage whose
    status changed (or that is seen for the first time) is known to have had it since `now`, and to
    have started then if it is running (the stage times a living message shows).

    A run seen for the first time is compared with one whose status and stages were all `init`.
    Events come in the contract's order: `run.started`, stage events by Step, then the run's
    final (or `run.changed`) event. An event whose key was announced before is never produced
    again, so flapping statuses or a repeated tick cannot announce anything twice.
    """
    # A run stored as gone that is listed again: its status before it went is not kept, so it is
    # diffed as from `init`; what it announced before stays announced, and nothing repeats.
    previous_status = previous.status if previous and previous.status != GONE else INIT
    previous_stages = previous.stage_statuses if previous else {}
    announced = set(previous.announced) if previous else set()
    candidates: list[Event] = []

    run_moved = current.status != previous_status
    if run_moved and current.status == RUNNING:
        candidates.append(Event("run.started", current.key, current.status, previous_status))

    for stage in sorted(current.stages, key=_stage_order):
        before = previous_stages.get(stage.key, INIT)
        if stage.status != before:
            event_type = _event_type("stage", stage.status)
            candidates.append(Event(event_type, current.key, stage.status, before, stage))

    if run_moved and current.status != RUNNING:
        event_type = _event_type("run", current.status)
        candidates.append(Event(event_type, current.key, current.status, previous_status))

    events = []
    for event in candidates:
        if event.key not in announced:
            announced.add(event.key)
            events.append(event)

    since, started = _stage_times(previous, current, now)
    state = RunState(
        project_id=current.project_id,
        run_id=current.id,
        status=current.status,
        stage_statuses={stage.key: stage.status for stage in current.stages},
        announced=frozenset(announced),
        create_time_ms=_epoch_ms(current),
        version=previous.version if previous else 0,
        stage_since=since,
        stage_started=started,
        items=previous.items if previous else (),
        description=trim_utf8(current.description, FACT_BYTES),
        message=trim_utf8(_failure(current), FACT_BYTES),
        finished_ms=_epoch_ms(current, current.modify_time) if current.final else None,
    )
    return events, state


FACT_BYTES = 500  # of a run's description or failure kept in its state (a digest shows them)


def _failure(run: Run) -> str:
    """Why the run failed, in a line: its failed stages' names and messages, else its own message."""
    failed = [stage for stage in run.stages if stage.status in (FAIL, TERMINATED, CANCELED)]
    said = "; ".join(f"{stage.name}: {stage.message}" if stage.message else stage.name for stage in failed)
    return said or (run.message if run.status in (FAIL, TERMINATED, CANCELED) else "")


def _stage_times(
    previous: RunState | None, current: Run, now: float | None
) -> tuple[dict[str, float], dict[str, float]]:
    """The stages' first-seen times: the stored ones, plus `now` for every stage whose status changed."""
    since = dict(previous.stage_since) if previous else {}
    started = dict(previous.stage_started) if previous else {}
    if now is None:
        return since, started
    known = previous.stage_statuses if previous else {}
    for stage in current.stages:
        if previous is None or known.get(stage.key, INIT) != stage.status:
            since[stage.key] = now
            if stage.status == RUNNING:
                started.setdefault(stage.key, now)
    return since, started


def _epoch_ms(run: Run, moment: datetime | None = None) -> int | None:
    """A time of the run (its creation unless `moment` says another) in epoch ms."""
    when = moment if moment is not None else run.create_time
    return int(when.timestamp() * 1000) if when else None
