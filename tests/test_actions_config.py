"""The `actions` section, the rules' `approvers` and the slack-app `signing_secret`: read and refused."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from dwnotify import config
from dwnotify.app import secret_values
from dwnotify.credentials import Secret
from dwnotify.errors import ConfigError
from dwnotify.settings import ActionsSettings, Settings

SIGNING = "8f14e45fceea167a5a36dedd4bea2543"
BASE: dict[str, Any] = {
    "dataworks": {"region": "cn-shanghai", "projects": [10000]},
    "channels": {
        "deploys": {
            "type": "slack-app",
            "token": "xoxb-1-abc",
            "channel": "C0123456",
            "signing_secret": "${SLACK_SIGNING_SECRET}",
        }
    },
    "people": {"alice": {"slack_user_id": "U0ALICE01"}, 12345: {"name": "Bob", "slack_user_id": "U0BOB0001"}},
    "rules": [{"name": "all", "events": ["*"], "channels": ["deploys"]}],
}


def parse(tmp_path: Path, **top: Any) -> Settings:
    data = copy.deepcopy(BASE)
    data.update(top)
    return config.parse(data, tmp_path, {"SLACK_SIGNING_SECRET": SIGNING})


def problems(tmp_path: Path, **top: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, **top)
    return caught.value.problems


def test_actions_default_to_disabled_with_both_actions_and_slack_hosts(tmp_path: Path) -> None:
    actions = parse(tmp_path).actions
    assert actions == ActionsSettings()
    assert (actions.enabled, actions.allow, actions.timezone, actions.response_hosts) == (
        False,
        ("advance", "abolish"),
        "Asia/Shanghai",
        ("hooks.slack.com",),
    )


def test_a_full_actions_section_is_read(tmp_path: Path) -> None:
    actions = parse(
        tmp_path,
        actions={
            "enabled": True,
            "approvers": ["alice", 12345],
            "allow": ["advance"],
            "timezone": "Europe/Berlin",
            "response_hosts": ["hooks.slack.com", "Hooks.Example.COM"],
        },
    ).actions
    assert actions.enabled is True
    assert actions.approvers == ("alice", "12345")  # a YAML number read as the people key it is
    assert actions.allow == ("advance",)
    assert actions.timezone == "Europe/Berlin"
    assert actions.response_hosts == ("hooks.slack.com", "hooks.example.com")


def test_a_rules_approvers_take_the_place_of_the_top_ones(tmp_path: Path) -> None:
    rules = [
        {"name": "all", "events": ["*"], "channels": ["deploys"], "approvers": ["12345"]},
        {"name": "other", "events": ["run.failed"], "channels": ["deploys"]},
    ]
    actions = parse(tmp_path, rules=rules, actions={"enabled": True, "approvers": ["alice"]}).actions
    assert actions.approvers_for("all") == ("12345",)
    assert actions.approvers_for("other") == ("alice",)
    assert actions.approvers_for(None) == ("alice",)


def test_every_problem_is_named_by_its_dotted_path_in_one_run(tmp_path: Path) -> None:
    rules = [{"name": "all", "events": ["*"], "channels": ["deploys"], "approvers": ["carol", "alice"]}]
    found = problems(
        tmp_path,
        rules=rules,
        actions={
            "enabled": "yes",
            "approvers": ["alice", "dave"],
            "allow": ["advance", "retry"],
            "timezone": "Mars/Olympus",
            "response_hosts": ["https://hooks.slack.com/x"],
            "colour": "red",
        },
    )
    places = sorted(problem.split(":", 1)[0] for problem in found)
    assert places == [
        "actions.allow[1]",
        "actions.approvers[1]",
        "actions.colour",
        "actions.enabled",
        "actions.response_hosts[0]",
        "actions.timezone",
        "rules[0].approvers[0]",
    ], found
    assert any("'dave' is not a key of the top-level people map" in problem for problem in found)


@pytest.mark.parametrize(
    ("actions", "fragment"),
    [
        ({"allow": []}, "actions.allow: must list at least one"),
        ({"response_hosts": []}, "actions.response_hosts: must list at least one host"),
        ({"response_hosts": ["hooks.slack.com", "hooks slack com"]}, "actions.response_hosts[1]"),
        ({"approvers": "alice"}, "actions.approvers: expected a list"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, actions: dict[str, Any], fragment: str) -> None:
    assert any(problem.startswith(fragment) for problem in problems(tmp_path, actions=actions))


def test_enabled_actions_need_a_signing_secret_and_someone_to_act(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    del data["channels"]["deploys"]["signing_secret"]
    with pytest.raises(ConfigError) as caught:
        config.parse({**data, "actions": {"enabled": True}}, tmp_path, {})
    assert caught.value.problems[0] == (
        "actions.enabled: needs a slack-app channel with a signing_secret (the app's, to verify Slack's "
        "requests)"
    )
    # with the secret, the remaining problem is that no one is an approver
    assert problems(tmp_path, actions={"enabled": True}) == [
        "actions.enabled: no one could act: list people ids in actions.approvers or in a rule's approvers"
    ]
    rules = [{"name": "all", "events": ["*"], "channels": ["deploys"], "approvers": ["alice"]}]
    assert parse(tmp_path, rules=rules, actions={"enabled": True}).actions.enabled


def test_an_empty_rule_approvers_list_is_a_problem(tmp_path: Path) -> None:
    rules = [{"name": "all", "events": ["*"], "channels": ["deploys"], "approvers": []}]
    assert any(p.startswith("rules[0].approvers: must list") for p in problems(tmp_path, rules=rules))


def test_the_signing_secret_is_a_secret_masked_like_every_other(tmp_path: Path) -> None:
    channel = parse(tmp_path).channels["deploys"]
    secret = channel.options["signing_secret"]
    assert isinstance(secret, Secret) and secret.reveal() == SIGNING
    assert SIGNING not in repr(channel) and SIGNING not in str(secret)
    tokens, _ = secret_values(parse(tmp_path), None)
    assert SIGNING in tokens


def test_a_signing_secret_on_another_channel_type_is_an_unknown_key(tmp_path: Path) -> None:
    channels = {
        "ops": {"type": "slack", "url": "https://hooks.slack.com/services/T/B/x", "signing_secret": "s"}
    }
    rules = [{"name": "all", "events": ["*"], "channels": ["ops"]}]
    found = problems(tmp_path, channels=channels, rules=rules)
    assert any(p.startswith("channels.ops.signing_secret: unknown key") for p in found), found
