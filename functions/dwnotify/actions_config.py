"""The config's `actions` section and the rules' `approvers`: who may act on a run from Slack.

```yaml
actions:
  enabled: true                   # default false: the HTTP entry answers 404
  approvers: [alice, "1379..."]   # keys of the top-level `people` map
  allow: [advance, abolish]       # default both
  timezone: Asia/Shanghai         # how "requested at HH:MM" is shown
  response_hosts: [hooks.slack.com]
rules:
  - name: prod
    approvers: [bob]              # in place of actions.approvers for this rule's runs
```

Every problem is named by its dotted path and all are reported in one run, like the rest of the config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dwnotify.addresses import host_problem
from dwnotify.interpolate import Loc
from dwnotify.settings import ACTION_NAMES, ActionsSettings, ChannelSettings, PersonSettings
from dwnotify.timeplans import _timezone
from dwnotify.yamlcheck import Checker

_KEYS = ("enabled", "approvers", "allow", "timezone", "response_hosts")
_HOST_NAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)


def parse_actions(
    c: Checker,
    value: object,
    loc: Loc,
    *,
    people: Mapping[str, PersonSettings],
    channels: Mapping[str, ChannelSettings] | None,
    rules: tuple[object, Loc],
) -> ActionsSettings:
    """`actions` and each rule's `approvers` into ActionsSettings; the defaults when `actions` is absent."""
    rule_approvers = _rule_approvers(c, *rules, people)
    if value is None:
        return ActionsSettings(rule_approvers=rule_approvers)
    f = c.section(value, loc, optional=_KEYS)
    if f is None:
        return ActionsSettings(rule_approvers=rule_approvers)
    defaults = ActionsSettings()
    allow = _allow(c, *f.at("allow"))
    settings = ActionsSettings(
        enabled=c.boolean(*f.at("enabled"), defaults.enabled),
        approvers=_approvers(c, *f.at("approvers"), people),
        allow=allow if allow is not None else defaults.allow,
        timezone=_timezone(c, *f.at("timezone")),
        response_hosts=_hosts(c, *f.at("response_hosts")) or defaults.response_hosts,
        rule_approvers=rule_approvers,
    )
    if settings.enabled:
        _check_enabled(c, settings, f.at("enabled")[1], channels)
    return settings


def _check_enabled(
    c: Checker, settings: ActionsSettings, loc: Loc, channels: Mapping[str, ChannelSettings] | None
) -> None:
    if channels is not None and not any(
        channel.type == "slack-app" and channel.options.get("signing_secret") for channel in channels.values()
    ):
        c.add(
            loc,
            "needs a slack-app channel with a signing_secret (the app's, to verify Slack's requests)",
        )
    if not settings.approvers and not any(names for _, names in settings.rule_approvers):
        c.add(loc, "no one could act: list people ids in actions.approvers or in a rule's approvers")


def _approvers(c: Checker, value: object, loc: Loc, people: Mapping[str, PersonSettings]) -> tuple[str, ...]:
    """A list of people ids, each a key of `people` (YAML may read an id as a number: kept as text)."""
    if value is None:
        return ()
    found: list[str] = []
    for item, here in c.items(value, loc):
        person = c.text(item, here, numbers=True)
        if person is None:
            continue
        if person not in people:
            c.add(here, f"{person!r} is not a key of the top-level people map")
        elif person not in found:
            found.append(person)
    return tuple(found)


def _allow(c: Checker, value: object, loc: Loc) -> tuple[str, ...] | None:
    if value is None:
        return None
    allowed: list[str] = []
    for item, here in c.items(value, loc, empty="must list at least one of: advance, abolish"):
        name = c.choice(item, here, ACTION_NAMES)
        if name is not None and name not in allowed:
            allowed.append(name)
    return tuple(allowed)


def _hosts(c: Checker, value: object, loc: Loc) -> tuple[str, ...]:
    hosts: list[str] = []
    for item, here in c.items(value, loc, empty="must list at least one host (hooks.slack.com)"):
        host = c.matching(item, here, _HOST_NAME, "must be a host name such as hooks.slack.com")
        problem = None if host is None else host_problem(host)
        if problem is not None:
            c.add(here, problem)
        elif host is not None:
            hosts.append(host.lower())
    return tuple(hosts)


def _rule_approvers(
    c: Checker, value: object, loc: Loc, people: Mapping[str, PersonSettings]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Each rule's own `approvers`, by rule name (the rules' other keys are read in config.py)."""
    if not isinstance(value, list):
        return ()
    found: list[tuple[str, tuple[str, ...]]] = []
    for index, rule in enumerate(value):
        if not isinstance(rule, dict) or rule.get("approvers") is None:
            continue
        here = (*loc, index, "approvers")
        names = _approvers(c, rule["approvers"], here, people)
        if isinstance(rule["approvers"], list) and not rule["approvers"]:
            c.add(here, "must list at least one people id (leave it out to use actions.approvers)")
        name = rule.get("name")
        if isinstance(name, (str, int)) and not isinstance(name, bool):
            found.append((str(name).strip(), names))
    return tuple(found)
