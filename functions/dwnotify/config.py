"""The YAML config file -> validated, frozen `Settings`, with every problem named by its dotted path."""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dwnotify.actions_config import parse_actions
from dwnotify.addresses import host_problem, is_loopback, url_problem
from dwnotify.channels import CHANNEL_TYPES
from dwnotify.channels.kind import COMMON_KEYS
from dwnotify.credentials import Secret
from dwnotify.errors import ConfigError
from dwnotify.interpolate import Loc, expand_tree
from dwnotify.model import EVENT_TYPES
from dwnotify.people import MENTIONS, parse_people
from dwnotify.scaling import parse_scale
from dwnotify.settings import (
    DEFAULT_CONSOLE_URL,
    ChannelSettings,
    DataWorksSettings,
    DeliverySettings,
    ProjectSettings,
    RuleSettings,
    Settings,
    StateSettings,
    TrackedRun,
)
from dwnotify.timeplans import parse_digest, parse_quiet, parse_reminders
from dwnotify.yamlcheck import NAME, Checker, Fields, format_seconds, kind, read_yaml, suggest

CONFIG_ENV = "DWNOTIFY_CONFIG"
DEFAULT_CONFIG_PATH = Path("notifier.yaml")

# Bounds on the numbers that set a wait. A request may take up to its timeout in each of connect, write
# and read; 30 s keeps one send well inside a channel's 60 s delivery lease and a tick inside FC's timeout.
MIN_QPS, MAX_QPS = 0.2, 1000.0  # one request per 5 s at the slowest; Enterprise edition reads allow 50
MAX_ATTEMPTS = 10
MAX_REQUEST_TIMEOUT = timedelta(seconds=30)
# poll_every: a poll of ten workspaces at the Basic edition's 5 QPS takes 2 s itself, so polling more often
# than every 5 s would mostly wait on the rate limiter; past 10 minutes the 1-minute FC timer polls sooner.
MIN_POLL_EVERY, MAX_POLL_EVERY = timedelta(seconds=5), timedelta(minutes=10)
# More calls than any rate limit could serve in a day (1000 QPS), and small enough to stay exact as a float.
MAX_DAILY_CALL_BUDGET = 100_000_000
_REGION = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)+")
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]+)?")
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_EVENT_PATTERNS = (*EVENT_TYPES, "run.*", "stage.*", "*")
_DATAWORKS_OPTIONAL = (
    "endpoint",
    "protocol",
    "runs",
    "lookback",
    "max_qps",
    "max_attempts",
    "timeout",
    "console_url",
    "poll_every",
    "daily_call_budget",
    "items",
)
_EVENT_UNKNOWN = "is not an event type, 'run.*', 'stage.*' or '*'"


def resolve_config_path(cli_value: str | None, environ: Mapping[str, str]) -> Path:
    """The config file to read: `--config`, else `$DWNOTIFY_CONFIG`, else `./notifier.yaml`."""
    return Path(cli_value or environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, interpolate and validate the config file at `path`; raise `ConfigError` listing every problem."""
    data, duplicates = read_yaml(path)
    try:
        settings = parse(data, path.resolve().parent, os.environ if environ is None else environ, path)
    except ConfigError as exc:
        raise ConfigError([*duplicates, *exc.problems]) from None
    if duplicates:
        raise ConfigError(duplicates)
    return settings


def parse(data: object, base_dir: Path, environ: Mapping[str, str], source: Path | None = None) -> Settings:
    """Validate YAML `data` into `Settings`; relative paths resolve against `base_dir`."""
    expansion = expand_tree(data, environ)
    checker = Checker(str(source) if source else "config", expansion.sensitive)
    for loc, message in expansion.problems:  # every one: a string may name several missing variables
        checker.problems.append(f"{checker.where(loc)}: {message}")
        checker.blamed.add(loc)
    settings = _settings(checker, expansion.data, base_dir, source)
    if checker.problems or settings is None:
        raise ConfigError(checker.problems or [f"{checker.root}: the config is not valid"])
    return settings


def _settings(c: Checker, data: object, base_dir: Path, source: Path | None) -> Settings | None:
    if data is None:
        c.add((), "the config is empty; it needs at least dataworks, channels and rules")
        return None
    top = c.section(
        data,
        (),
        required=("dataworks", "channels", "rules"),
        optional=("state", "templates", "delivery", "people", "reminders", "scale", "actions"),
    )
    if top is None:
        return None
    dataworks = _dataworks(c, *top.at("dataworks"))
    channels = _channels(c, *top.at("channels"))
    channel_value = top.values.get("channels")
    # A rule naming a channel that is not defined is always a problem of its own, even when the channels
    # section is missing or empty: that is reported too, and fixing one must not reveal the other later.
    known_channels = set(map(str, channel_value)) if isinstance(channel_value, dict) else set()
    known_projects = _watched(dataworks)
    rules = _rules(c, *top.at("rules"), known_channels, known_projects)
    state = _state(c, *top.at("state"), base_dir)
    templates = _templates(c, *top.at("templates"), base_dir)
    delivery = _delivery(c, *top.at("delivery"))
    people = parse_people(c, *top.at("people"))
    reminders = parse_reminders(c, *top.at("reminders"))
    scale = parse_scale(c, *top.at("scale"))
    actions = parse_actions(c, *top.at("actions"), people=people, channels=channels, rules=top.at("rules"))
    if scale is not None and state.backend == "sqlite":
        c.add(top.at("scale")[1], "needs state.backend: tablestore (shards cannot share a local SQLite file)")
    if scale is not None and dataworks is not None and dataworks.daily_call_budget is not None:
        c.add(
            top.at("scale")[1], "cannot go with dataworks.daily_call_budget (each shard would keep its own)"
        )
    if dataworks is None or channels is None or rules is None:
        return None
    return Settings(
        dataworks=dataworks,
        state=state,
        channels=MappingProxyType(channels),
        rules=rules,
        templates=templates,
        delivery=delivery,
        source=source,
        people=MappingProxyType(people),
        reminders=reminders,
        scale=scale,
        actions=actions,
    )


def _watched(dataworks: DataWorksSettings | None) -> set[int] | None:
    if dataworks is None:
        return None
    return {project.id for project in dataworks.projects} | {run.project for run in dataworks.runs}


# dataworks ------------------------------------------------------------------------------------------


def _dataworks(c: Checker, value: object, loc: Loc) -> DataWorksSettings | None:
    if value is None:
        return None
    f = c.section(value, loc, required=("region", "projects"), optional=_DATAWORKS_OPTIONAL)
    if f is None:
        return None
    region = c.matching(*f.at("region"), _REGION, "must be a region id such as cn-shanghai")
    endpoint = _host(c, *f.at("endpoint")) or _default_endpoint(region or "")
    projects = _projects(c, *f.at("projects"), region or "", endpoint)
    defaults = DataWorksSettings
    settings = DataWorksSettings(
        region=region or "",
        endpoint=endpoint,
        protocol=c.choice(*f.at("protocol"), ("https", "http")) or "https",
        projects=projects,
        runs=_runs(c, *f.at("runs")),
        lookback=c.duration(*f.at("lookback"), defaults.lookback, zero_ok=True),
        max_qps=c.number(*f.at("max_qps"), defaults.max_qps, MIN_QPS, MAX_QPS),
        max_attempts=c.integer(*f.at("max_attempts"), maximum=MAX_ATTEMPTS) or defaults.max_attempts,
        timeout=c.duration(*f.at("timeout"), defaults.timeout, maximum=MAX_REQUEST_TIMEOUT),
        console_url=_console_url(c, *f.at("console_url")),
        poll_every=_poll_every(c, *f.at("poll_every")),
        daily_call_budget=c.integer(*f.at("daily_call_budget"), maximum=MAX_DAILY_CALL_BUDGET),
        items=c.boolean(*f.at("items"), defaults.items),
    )
    if settings.protocol == "http":
        _check_clear_text(c, settings, f.at("protocol")[1])
    _check_budget_covers_a_poll(c, settings, f.at("daily_call_budget")[1])
    return settings if region and projects else None


def _check_clear_text(c: Checker, settings: DataWorksSettings, loc: Loc) -> None:
    # Signed requests with the STS token in clear are only for a local emulator.
    public = sorted({p.endpoint for p in settings.projects if not is_loopback(p.endpoint)})
    if public or not is_loopback(settings.endpoint):
        hosts = ", ".join(public or [settings.endpoint])
        c.add(loc, f"http sends the STS token in clear; it is only for loopback endpoints (not {hosts})")


def _poll_every(c: Checker, value: object, loc: Loc) -> timedelta | None:
    if value is None:
        return None
    # Zero is never valid, so the default that `duration` falls back to after a problem says "invalid".
    every = c.duration(value, loc, timedelta(0), maximum=MAX_POLL_EVERY)
    if not every:
        return None
    if every < MIN_POLL_EVERY:
        c.add(loc, f"must be at least {format_seconds(int(MIN_POLL_EVERY.total_seconds()))}", value)
        return None
    return every


def _check_budget_covers_a_poll(c: Checker, settings: DataWorksSettings, loc: Loc) -> None:
    # Every poll reads page 1 of every workspace: a smaller budget could never poll at all.
    workspaces = len(settings.projects)
    if settings.daily_call_budget is not None and settings.daily_call_budget < workspaces:
        c.add(
            loc,
            f"is {settings.daily_call_budget} but one poll costs at least {workspaces} calls "
            "(one per workspace in dataworks.projects)",
        )


def _default_endpoint(region: str) -> str:
    return f"dataworks.{region}.aliyuncs.com"


def _host(c: Checker, value: object, loc: Loc) -> str | None:
    rule = (
        "must be a host name and optional port, without scheme or path (dataworks.protocol sets the scheme)"
    )
    host = c.matching(value, loc, _HOST, rule)
    problem = None if host is None else host_problem(host.rsplit(":", 1)[0])
    if problem is not None:
        c.add(loc, problem)
        return None
    return host


def _projects(c: Checker, value: object, loc: Loc, region: str, endpoint: str) -> tuple[ProjectSettings, ...]:
    projects: list[ProjectSettings] = []
    first_seen: dict[int, Loc] = {}
    for item, here in c.items(value, loc, empty="must list at least one workspace id"):
        project = _project(c, item, here, region, endpoint)
        if project is None:
            continue
        id_loc = (*here, "id") if isinstance(item, dict) else here
        if project.id in first_seen:
            c.add(
                id_loc, f"workspace {project.id} is listed twice (first at {c.where(first_seen[project.id])})"
            )
            continue
        first_seen[project.id] = id_loc
        projects.append(project)
    return tuple(projects)


def _project(c: Checker, item: object, loc: Loc, region: str, endpoint: str) -> ProjectSettings | None:
    if isinstance(item, (int, str)) and not isinstance(item, bool):
        project_id = c.integer(item, loc)
        return None if project_id is None else ProjectSettings(project_id, None, region, endpoint)
    if not isinstance(item, dict):
        c.wrong_type(loc, "a workspace id or a mapping with id, name, region and endpoint", item)
        return None
    f = c.section(item, loc, required=("id",), optional=("name", "region", "endpoint"))
    if f is None:
        return None
    project_id = c.integer(*f.at("id"))
    name = c.text(*f.at("name"), numbers=True)
    own_region = c.matching(*f.at("region"), _REGION, "must be a region id such as cn-hangzhou") or region
    own_endpoint = _host(c, *f.at("endpoint"))
    if own_endpoint is None:
        own_endpoint = endpoint if own_region == region else _default_endpoint(own_region)
    return None if project_id is None else ProjectSettings(project_id, name, own_region, own_endpoint)


def _runs(c: Checker, value: object, loc: Loc) -> tuple[TrackedRun, ...]:
    if value is None:
        return ()
    runs: list[TrackedRun] = []
    for item, here in c.items(value, loc):
        f = c.section(item, here, required=("project", "id"))
        if f is None:
            continue
        project = c.integer(*f.at("project"))
        run_id = c.text(*f.at("id"), numbers=True)
        if project is None or run_id is None:
            continue
        run = TrackedRun(project=project, id=run_id)
        if run in runs:
            c.add(here, f"run {run_id!r} of workspace {project} is listed twice")
            continue
        runs.append(run)
    return tuple(runs)


def _console_url(c: Checker, value: object, loc: Loc) -> str:
    url = c.text(value, loc)
    if url is None:
        return DEFAULT_CONSOLE_URL
    try:
        url.format(region="cn-shanghai", project_id=10000, run_id="run-id")
    except KeyError as exc:
        c.add(
            loc,
            f"has an unknown placeholder {{{exc.args[0]}}}; the placeholders are {{region}}, "
            "{project_id} and {run_id}",
        )
        return DEFAULT_CONSOLE_URL
    except (IndexError, ValueError, AttributeError):
        c.add(
            loc,
            "is not a valid pattern; use {region}, {project_id} and {run_id}, and {{ }} for literal braces",
        )
        return DEFAULT_CONSOLE_URL
    if not url.startswith(("http://", "https://")):
        c.add(loc, "must start with http:// or https://")
    return url


# state, templates, delivery -------------------------------------------------------------------------

_TABLESTORE_ONLY = ("endpoint", "instance", "table")


def _state(c: Checker, value: object, loc: Loc, base_dir: Path) -> StateSettings:
    default_path = base_dir / StateSettings.path
    if value is None:
        return StateSettings(path=default_path)
    f = c.section(value, loc, optional=("backend", "path", "retention", *_TABLESTORE_ONLY))
    if f is None:
        return StateSettings(path=default_path)
    backend = c.choice(*f.at("backend"), ("sqlite", "tablestore")) or "sqlite"
    endpoint = c.text(*f.at("endpoint"))
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        c.add(f.at("endpoint")[1], "must start with http:// or https://", endpoint)
    elif endpoint is not None and (problem := url_problem(endpoint)) is not None:
        c.add(f.at("endpoint")[1], problem)
    _check_backend_keys(c, f, backend)
    return StateSettings(
        backend=backend,
        path=c.path(*f.at("path"), base_dir) or default_path,
        endpoint=endpoint,
        instance=c.text(*f.at("instance")),
        table=c.matching(*f.at("table"), _TABLE, "must be a Tablestore table name (letters, digits and '_')")
        or StateSettings.table,
        retention=c.duration(*f.at("retention"), StateSettings.retention),
    )


def _check_backend_keys(c: Checker, f: Fields, backend: str) -> None:
    # A key of the other backend is a sign the backend line is wrong or missing: say so, do not ignore it.
    if backend == "tablestore":
        for key in ("endpoint", "instance"):
            if key not in f.values:
                c.add(f.at(key)[1], "is required when the backend is tablestore")
        if "path" in f.values:
            c.add(f.at("path")[1], "is only used by the sqlite backend, but the backend is tablestore")
        return
    for key in _TABLESTORE_ONLY:
        if key in f.values:
            c.add(f.at(key)[1], f"is only used by the tablestore backend, but the backend is {backend}")


def _templates(c: Checker, value: object, loc: Loc, base_dir: Path) -> Path | None:
    folder = c.path(value, loc, base_dir)
    try:
        if folder is not None and not folder.is_dir():
            problem = (
                f"{folder} is not a folder" if folder.exists() else f"the folder {folder} does not exist"
            )
            c.add(loc, problem)
    except OSError as error:
        c.add(loc, f"the folder {folder} cannot be read: {error.strerror}")
    return folder


def _delivery(c: Checker, value: object, loc: Loc) -> DeliverySettings:
    f = None if value is None else c.section(value, loc, optional=("max_age", "timeout"))
    if f is None:
        return DeliverySettings()
    return DeliverySettings(
        max_age=c.duration(*f.at("max_age"), DeliverySettings.max_age),
        timeout=c.duration(*f.at("timeout"), DeliverySettings.timeout, maximum=MAX_REQUEST_TIMEOUT),
    )


# channels -------------------------------------------------------------------------------------------


def _channels(c: Checker, value: object, loc: Loc) -> dict[str, ChannelSettings] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        c.wrong_type(loc, "a mapping of channel names to channels", value)
        return None
    if not value:
        c.add(loc, "must define at least one channel")
    channels: dict[str, ChannelSettings] = {}
    for name, item in value.items():
        here = (*loc, str(name))
        if not isinstance(name, str):
            c.add(here, f"channel names must be strings, not {kind(name)} (put the name in quotes)")
            continue
        if not NAME.fullmatch(name):
            c.add(here, "channel names may only contain letters, digits, '_' and '-'")
            continue
        channel = _channel(c, name, item, here)
        if channel is None:
            continue
        twin = next((o for o in channels.values() if channel.url and o.url == channel.url), None)
        if twin is not None:
            # Rate budgets are kept per channel: two channels on one robot would double its rate.
            c.add(
                (*here, "url"), f"is the same webhook as channels.{twin.name}; use that channel in both rules"
            )
        channels[name] = channel
    return channels


def _channel(c: Checker, name: str, value: object, loc: Loc) -> ChannelSettings | None:
    raw_type = value.get("type") if isinstance(value, dict) else None
    known = CHANNEL_TYPES.get(raw_type) if isinstance(raw_type, str) else None
    # An unknown type: the other keys are judged, and read, as any channel type's would be.
    options = (
        dict(known.options) if known else {k: v for t in CHANNEL_TYPES.values() for k, v in t.options.items()}
    )
    required = sorted(known.required) if known else ["url"]
    allowed = known.keys if known else COMMON_KEYS | set(options)
    f = c.section(value, loc, required=("type", *required), optional=allowed - {"type", *required})
    if f is None:
        return None
    kind = c.choice(*f.at("type"), sorted(CHANNEL_TYPES))
    allow_http = c.boolean(*f.at("allow_http"), False)
    values = {
        key: _option(c, option_kind, *f.at(key), allow_http=allow_http)
        for key, option_kind in options.items()
    }
    if kind is not None:
        revealed = {key: _as_text(value) for key, value in values.items()}
        for key, problem in CHANNEL_TYPES[kind].check(revealed):
            c.add(f.at(key)[1], problem)
    url, secret = values.pop("url", None), values.pop("secret", None)
    if kind is None or (url is None and "url" in required):
        return None
    common = {key: values.pop(key) for key in _COMMON_OPTION_FIELDS if key in values}
    return ChannelSettings(name, kind, url, secret, allow_http=allow_http, options=values, **common)


def _as_text(value: object) -> str | None:
    """An option's value as its type's check reads it: a secret revealed, a list as None."""
    if isinstance(value, Secret):
        return value.reveal()
    return value if isinstance(value, str) else None


# Options that ChannelSettings has a field for; every other option goes into its `options`.
_COMMON_OPTION_FIELDS = ("keyword", "at_mobiles", "at_user_ids", "at_all")


def _option(c: Checker, option_kind: str, value: object, loc: Loc, *, allow_http: bool) -> Any:
    """An option's value read by its kind (`channels.kind.OPTION_KINDS`)."""
    if option_kind == "url":
        return _webhook_url(c, value, loc, allow_http=allow_http)
    if option_kind == "secret":
        return _secret(c, value, loc)
    if option_kind == "strings":
        return c.strings(value, loc)
    if option_kind == "flag":
        return c.boolean(value, loc, False)
    return c.text(value, loc, empty_ok=True)


def _webhook_url(c: Checker, value: object, loc: Loc, *, allow_http: bool) -> Secret | None:
    url = c.text(value, loc)
    if url is None:
        return None
    problem = url_problem(url, allow_http=allow_http, http_escape="the channel sets allow_http: true")
    if problem is not None:
        c.add(loc, problem)
        return None
    return Secret(url)


def _secret(c: Checker, value: object, loc: Loc) -> Secret | None:
    secret = c.text(value, loc, empty_ok=True)
    return None if secret is None else Secret(secret)


# rules ----------------------------------------------------------------------------------------------


def _rules(
    c: Checker, value: object, loc: Loc, channels: Collection[str] | None, projects: Collection[int] | None
) -> tuple[RuleSettings, ...] | None:
    if value is None:
        return None
    rules: list[RuleSettings] = []
    first_seen: dict[str, Loc] = {}
    for item, here in c.items(value, loc, empty="must list at least one rule"):
        rule = _rule(c, item, here, channels, projects)
        if rule is None:
            continue
        if rule.name in first_seen:
            c.add(
                (*here, "name"),
                f"rule name {rule.name!r} is already used by {c.where(first_seen[rule.name])}",
            )
        first_seen.setdefault(rule.name, here)
        rules.append(rule)
    return tuple(rules)


def _rule(
    c: Checker, value: object, loc: Loc, channels: Collection[str] | None, projects: Collection[int] | None
) -> RuleSettings | None:
    f = c.section(
        value,
        loc,
        required=("name", "events", "channels"),
        optional=("projects", "template", "mention", "quiet", "digest", "approvers"),
    )
    if f is None:
        return None
    name = c.text(*f.at("name"), numbers=True)
    events = _names(c, *f.at("events"), _EVENT_PATTERNS, noun="event pattern", unknown=_EVENT_UNKNOWN)
    unknown_channel = "is not a channel defined under channels"
    targets = _names(c, *f.at("channels"), channels, noun="channel", unknown=unknown_channel)
    watched = _project_filter(c, *f.at("projects"), projects)
    template = c.name(*f.at("template")) or RuleSettings.template
    mention = c.choice(*f.at("mention"), MENTIONS)
    quiet = parse_quiet(c, *f.at("quiet"), _EVENT_PATTERNS)
    digest = parse_digest(c, *f.at("digest"))
    if quiet is not None and digest is not None:
        c.add(
            f.at("quiet")[1], "a rule with a digest sends at its digest time only: quiet hours do not apply"
        )
    if name is None or not events or not targets:
        return None
    return RuleSettings(
        name=name,
        events=events,
        channels=targets,
        projects=watched,
        template=template,
        mention=mention,
        quiet=quiet,
        digest=digest,
    )


def _names(
    c: Checker, value: object, loc: Loc, known: Collection[str] | None, *, noun: str, unknown: str
) -> tuple[str, ...]:
    """A non-empty list of names, each one of `known` (unless that could not be read itself)."""
    names: list[str] = []
    for item, here in c.items(value, loc, empty=f"must list at least one {noun}"):
        name = c.text(item, here)
        if name is not None and known is not None and name not in known:
            c.add(here, f"{c.quote(here, name)} {unknown}{suggest(name, known)}")
        elif name is not None:
            names.append(name)
    return tuple(names)


def _project_filter(
    c: Checker, value: object, loc: Loc, known: Collection[int] | None
) -> tuple[int, ...] | None:
    if value is None:
        return None
    ids: list[int] = []
    for item, here in c.items(
        value, loc, empty="must list at least one workspace id (leave it out to match all)"
    ):
        project_id = c.integer(item, here)
        if project_id is not None and known is not None and project_id not in known:
            c.add(here, f"workspace {project_id} is in neither dataworks.projects nor dataworks.runs")
        elif project_id is not None:
            ids.append(project_id)
    return tuple(ids)
