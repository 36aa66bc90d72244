"""Validated, frozen settings: what `config.load()` turns the YAML file into."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .credentials import Secret

DEFAULT_CONSOLE_URL = "https://dataworks.data.aliyun.com/{region}/datastudio?defaultProjectId={project_id}"


@dataclass(frozen=True)
class ProjectSettings:
    """One watched DataWorks workspace."""

    id: int
    name: str | None
    region: str
    endpoint: str

    @property
    def label(self) -> str:
        """How messages name the workspace: its name, else its id."""
        return self.name or str(self.id)

    def console_url(self, pattern: str, run_id: str) -> str:
        """The DataWorks console link for a run (no documented URL opens one run: the workspace's).

        The run Id comes from DataWorks: percent-encoded, it cannot add a query or a fragment.
        """
        return pattern.format(region=self.region, project_id=self.id, run_id=quote(run_id, safe=""))


@dataclass(frozen=True)
class TrackedRun:
    """A run named in `dataworks.runs`, polled with GetPipelineRun until it is final."""

    project: int
    id: str


@dataclass(frozen=True)
class DataWorksSettings:
    """Where and how to call the DataWorks OpenAPI."""

    region: str
    endpoint: str
    protocol: str
    projects: tuple[ProjectSettings, ...]
    runs: tuple[TrackedRun, ...] = ()
    lookback: timedelta = timedelta(hours=1)
    max_qps: float = 5.0
    max_attempts: int = 4
    timeout: timedelta = timedelta(seconds=10)
    console_url: str = DEFAULT_CONSOLE_URL
    poll_every: timedelta | None = None  # None: one poll per invocation
    daily_call_budget: int | None = None  # None: no daily cap on DataWorks calls
    items: bool = True  # read a run's items (ListPipelineRunItems) for its first message and failures

    def project(self, project_id: int) -> ProjectSettings:
        """The settings of a watched workspace, or defaults for one only named in `runs`."""
        for project in self.projects:
            if project.id == project_id:
                return project
        return ProjectSettings(id=project_id, name=None, region=self.region, endpoint=self.endpoint)


@dataclass(frozen=True)
class StateSettings:
    """Where the state (run statuses, outbox, leases) is kept."""

    backend: str = "sqlite"
    path: Path = Path(".dwnotify/state.db")
    endpoint: str | None = None
    instance: str | None = None
    table: str = "dwnotify"
    retention: timedelta = timedelta(days=30)


@dataclass(frozen=True)
class ChannelSettings:
    """One chat destination (a DingTalk robot, a Slack incoming webhook, ...)."""

    name: str
    type: str
    url: Secret | None  # None for a type whose API is not one webhook URL
    secret: Secret | None = None
    keyword: str | None = None
    at_mobiles: tuple[str, ...] = ()
    at_user_ids: tuple[str, ...] = ()
    at_all: bool = False
    allow_http: bool = False  # plain http to a host that is not loopback: the token travels in clear
    # A type's other options (its `TYPE.options`), read by their declared kind.
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class PersonSettings:
    """Who a DataWorks user is in each chat service (the top-level `people` map); any field may be empty."""

    id: str
    name: str = ""
    dingtalk_mobile: str = ""
    dingtalk_user_id: str = ""
    slack_user_id: str = ""
    lark_open_id: str = ""
    wecom_user_id: str = ""

    @property
    def label(self) -> str:
        """How messages name the person: their name, else their DataWorks user id."""
        return self.name or self.id


@dataclass(frozen=True)
class ReminderSettings:
    """When a stage that does not move is worth a reminder (top-level `reminders`); None: never."""

    waiting_after: timedelta | None = None  # a manual gate: the next stage pending this long
    stuck_after: timedelta | None = None  # a stage running this long
    repeat: timedelta | None = None  # again this often while it lasts; None: once


@dataclass(frozen=True)
class QuietSettings:
    """A rule's quiet hours: from `start` (inclusive) to `end` (exclusive) local time, and whole `days`
    (0 = Monday); a window whose end is not after its start runs past midnight."""

    start: time | None
    end: time | None
    timezone: str = "Asia/Shanghai"
    except_events: tuple[str, ...] = ()  # event patterns that go out at once
    days: tuple[int, ...] = ()


@dataclass(frozen=True)
class DigestSettings:
    """A rule's daily digest: one summary a day at `at` local time instead of per-run messages."""

    at: time
    timezone: str = "Asia/Shanghai"


@dataclass(frozen=True)
class RuleSettings:
    """Which events go to which channels, rendered with which template."""

    name: str
    events: tuple[str, ...]
    channels: tuple[str, ...]
    projects: tuple[int, ...] | None = None
    template: str = "default"
    mention: str | None = None  # "creator": mention the person who started the run
    quiet: QuietSettings | None = None
    digest: DigestSettings | None = None


@dataclass(frozen=True)
class DeliverySettings:
    """How long and how hard to try delivering a message."""

    max_age: timedelta = timedelta(hours=24)
    timeout: timedelta = timedelta(seconds=10)


@dataclass(frozen=True)
class ScaleSettings:
    """Fan-out (`scale`): the timer's invocation invokes one shard per slice of the workspaces."""

    shards: int | None = None  # None: `auto`, sized from the workspaces
    endpoint: str | None = None  # None: the account's internal endpoint in the function's region
    function: str | None = None  # None: the invoked function itself


@dataclass(frozen=True)
class Settings:
    """The whole validated configuration."""

    dataworks: DataWorksSettings
    state: StateSettings
    channels: Mapping[str, ChannelSettings]
    rules: tuple[RuleSettings, ...]
    templates: Path | None = None
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    source: Path | None = None
    people: Mapping[str, PersonSettings] = field(default_factory=dict, hash=False)
    reminders: ReminderSettings | None = None
    scale: ScaleSettings | None = None
    actions: ActionsSettings = field(default_factory=lambda: ActionsSettings())  # noqa: PLW0108 (defined below)

    def person(self, user_id: object) -> PersonSettings | None:
        """The `people` entry of a DataWorks user id (compared as text: YAML may read it as a number)."""
        return self.people.get(str(user_id).strip()) if user_id not in (None, "") else None


ACTION_NAMES = ("advance", "abolish")  # what a Slack button may ask for (`actions.allow`)


@dataclass(frozen=True)
class ActionsSettings:
    """Acting from chat (top-level `actions`): who may advance a waiting stage or abolish a run.

    `approvers` are keys of the `people` map; a rule's own `approvers` (in `rule_approvers`, by rule
    name) take their place for the runs that rule announces.
    """

    enabled: bool = False
    approvers: tuple[str, ...] = ()
    allow: tuple[str, ...] = ACTION_NAMES
    timezone: str = "Asia/Shanghai"
    response_hosts: tuple[str, ...] = ("hooks.slack.com",)
    rule_approvers: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def approvers_for(self, rule_name: str | None) -> tuple[str, ...]:
        """The people ids who may act on a run announced by `rule_name` (the rule's own, else the top's)."""
        own = dict(self.rule_approvers)
        return own.get(rule_name, self.approvers) if rule_name is not None else self.approvers
