"""Domain objects: runs, stages, statuses and events. Plain frozen dataclasses, no I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

INIT = "init"
RUNNING = "running"
SUCCESS = "success"
FAIL = "fail"
TERMINATED = "terminated"
CANCELED = "canceled"

FINAL_STATUSES = frozenset({SUCCESS, FAIL, TERMINATED, CANCELED})

_STATUS_ALIASES = {
    "init": INIT,
    "running": RUNNING,
    "success": SUCCESS,
    "fail": FAIL,
    "terminated": TERMINATED,
    "termination": TERMINATED,
    "canceled": CANCELED,
    "cancel": CANCELED,
    "cancelled": CANCELED,
}

# The event type suffix for each final status: run.succeeded, stage.failed, ...
FINAL_EVENT_NAMES = {
    SUCCESS: "succeeded",
    FAIL: "failed",
    TERMINATED: "terminated",
    CANCELED: "canceled",
}

EVENT_TYPES = (
    "run.started",
    "run.succeeded",
    "run.failed",
    "run.terminated",
    "run.canceled",
    "run.changed",
    "stage.started",
    "stage.succeeded",
    "stage.failed",
    "stage.terminated",
    "stage.canceled",
    "stage.changed",
    "stage.waiting",  # reminders: a manual gate waits longer than `reminders.waiting_after`
    "stage.stuck",  # reminders: a stage runs longer than `reminders.stuck_after`
)


def normalize_status(raw: object) -> str:
    """Map any spelling of a status (`Success`, `SUCCESS`, `Termination`, ...) to its normal form.

    An unknown status is kept as it came (stripped), never dropped; a missing one is `init`.
    """
    if raw is None:
        return INIT
    text = str(raw).strip()
    if not text:
        return INIT
    return _STATUS_ALIASES.get(text.lower(), text)


# Stored for a run DataWorks no longer knows (deleted while it moved); never an API status.
GONE = "(gone)"


def is_final(status: str) -> bool:
    """True for the statuses after which a run or stage no longer changes."""
    return status in FINAL_STATUSES or status == GONE


@dataclass(frozen=True)
class Stage:
    """One stage of a pipeline run (package build, check, deploy, ...)."""

    code: str
    step: int
    type: str
    name: str
    description: str
    status: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # Set by the parser only for a stage whose Code an earlier stage of the run already has.
    ident: str = ""

    @property
    def key(self) -> str:
        """Identity of the stage within its run: its Code, else its Step (unique within the run)."""
        return self.ident or self.code or f"step-{self.step}"


@dataclass(frozen=True)
class RunItem:
    """One object a run deploys (node, workflow, resource, function) as ListPipelineRunItems reports it."""

    name: str
    type: str
    version: int | None
    status: str
    message: str = ""
    owner: str = ""  # from the item's FlowSpec when it names one
    id: str = ""

    @property
    def failed(self) -> bool:
        """True when this item's deployment failed."""
        return self.status == FAIL


MAX_KEPT_ITEMS = 100  # the items a run state keeps (the failed ones first): a row stays small


def kept_items(items: Sequence[RunItem]) -> tuple[RunItem, ...]:
    """The items a run state keeps: the failed ones first, at most MAX_KEPT_ITEMS."""
    return tuple(sorted(items, key=lambda item: not item.failed)[:MAX_KEPT_ITEMS])


@dataclass(frozen=True)
class Run:
    """A deployment pipeline run as the DataWorks API reports it, normalized."""

    id: str
    project_id: int
    status: str
    creator: str = ""
    description: str = ""
    message: str = ""
    create_time: datetime | None = None
    modify_time: datetime | None = None
    stages: tuple[Stage, ...] = ()

    @property
    def key(self) -> str:
        """Identity of the run across workspaces."""
        return run_key(self.project_id, self.id)

    @property
    def final(self) -> bool:
        """True once the run has reached a final status."""
        return is_final(self.status)

    @cached_property
    def fingerprint(self) -> str:
        """The `fingerprint` of the state a diff of this run stores (computed once: discovery asks often)."""
        return fingerprint(self.status, {stage.key: stage.status for stage in self.stages})


def fingerprint(status: str, stage_statuses: Mapping[str, str]) -> str:
    """A short digest of a run's status and its stages' statuses: equal digests, nothing to diff.

    64 bits: a collision (a change taken for none) is about as likely as a run's row being damaged.
    """
    # Codes and statuses come from DataWorks: NUL and US separate them, whatever they hold.
    text = "\x1f".join([status, *sorted(f"{key}\x00{value}" for key, value in stage_statuses.items())])
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def run_key(project_id: int, run_id: str) -> str:
    """The state-store key of a run."""
    return f"{project_id}/{run_id}"


@dataclass(frozen=True)
class Event:
    """A change worth announcing: one run or stage moving to a new status."""

    type: str
    run_key: str
    status: str
    previous: str | None
    stage: Stage | None = None
    # A reminder (`dwnotify.reminders`): its own announced key, and how long the stage has waited or run.
    reminder: str = ""
    waited: timedelta | None = None

    @property
    def key(self) -> str:
        """Identity used to announce the event once: subject and the status it moved to (a reminder:
        its stage, its sighting and its repeat)."""
        if self.reminder:
            return self.reminder
        subject = f"stage:{self.stage.key}" if self.stage is not None else "run"
        return f"{subject}:{self.status}"


@dataclass(frozen=True)
class RunState:
    """What the state store remembers of a run between ticks."""

    project_id: int
    run_id: str
    status: str
    stage_statuses: dict[str, str]
    announced: frozenset[str]
    create_time_ms: int | None = None
    version: int = 0
    # Epoch seconds when dwnotify first saw each stage in its current status, and first saw it
    # running (the API gives stages no times); set only when a status changes, so absent for stages
    # of a state stored before they were kept.
    stage_since: Mapping[str, float] = field(default_factory=dict, compare=False)
    stage_started: Mapping[str, float] = field(default_factory=dict, compare=False)
    # What the run deploys as last read (its first message, its first failure; `MAX_KEPT_ITEMS` at
    # most): a living message shows it at every edit, not only when it was read.
    items: tuple[RunItem, ...] = field(default=(), compare=False)
    # What a daily digest says of the run: its description, why it failed (the run's message, or its
    # failed stage's), and when DataWorks says it ended (epoch ms; None while it moves).
    description: str = field(default="", compare=False)
    message: str = field(default="", compare=False)
    finished_ms: int | None = field(default=None, compare=False)
    # Recorded as history, nothing of it announced (a run older than the lookback when first seen).
    silent: bool = field(default=False, compare=False)

    @property
    def key(self) -> str:
        """Identity of the run across workspaces."""
        return run_key(self.project_id, self.run_id)

    @property
    def final(self) -> bool:
        """True once the run has reached a final status: it need not be polled again."""
        return is_final(self.status)

    @property
    def fingerprint(self) -> str:
        """The `fingerprint` of its status and its stages' statuses."""
        return fingerprint(self.status, self.stage_statuses)
