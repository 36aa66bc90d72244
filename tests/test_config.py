"""config.py: YAML -> Settings, and every problem named by its dotted path without leaking a secret."""

from __future__ import annotations

import copy
import re
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dwnotify.config import load, parse, resolve_config_path
from dwnotify.credentials import Secret
from dwnotify.errors import ConfigError
from dwnotify.interpolate import expand
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

OPS_URL = "https://oapi.dingtalk.com/robot/send?access_token=0123abcd"
TEAM_URL = "https://hooks.slack.com/services/T000/B000/XXXX"
ENV = {"DINGTALK_OPS_URL": OPS_URL, "SLACK_TEAM_URL": TEAM_URL}

# The example from the contract, word for word (comments dropped), with its template folder.
CONTRACT_EXAMPLE = """\
dataworks:
  region: cn-shanghai
  endpoint: dataworks.cn-shanghai.aliyuncs.com
  protocol: https
  projects:
    - 10000
    - {id: 10001, name: Finance DW}
    - {id: 10002, region: cn-hangzhou}
  runs: []
  lookback: 1h

state:
  backend: sqlite
  path: .dwnotify/state.db

channels:
  ops:
    type: dingtalk
    url: ${DINGTALK_OPS_URL}
    secret: ${DINGTALK_OPS_SECRET:-}
  team:
    type: slack
    url: ${SLACK_TEAM_URL}

templates: ./my-templates

rules:
  - name: failures
    events: [run.failed, stage.failed]
    projects: [10000]
    channels: [ops]
    template: failure
  - name: everything
    events: ["*"]
    channels: [team]
"""

# A small valid config as data; each problem case below changes a copy of it.
BASE: dict[str, Any] = {
    "dataworks": {"region": "cn-shanghai", "projects": [10000, {"id": 10001, "name": "Finance DW"}]},
    "channels": {
        "ops": {"type": "dingtalk", "url": OPS_URL, "secret": "SECabc"},
        "team": {"type": "slack", "url": TEAM_URL},
    },
    "rules": [
        {"name": "failures", "events": ["run.failed"], "channels": ["ops"]},
        {"name": "everything", "events": ["*"], "channels": ["team"]},
    ],
}

DELETE = object()
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def changed(changes: dict[str, Any], data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A deep copy of `data` (default BASE) with each dotted path set to its value, or removed (DELETE)."""
    result = copy.deepcopy(BASE if data is None else data)
    for dotted, value in changes.items():
        parts: list[str | int] = [key if key else int(index) for key, index in _PART.findall(dotted)]
        target: Any = result
        for part in parts[:-1]:
            target = target[part]
        if value is DELETE:
            del target[parts[-1]]
        else:
            target[parts[-1]] = value
    return result


def problems_of(data: object, tmp_path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(data, tmp_path, ENV if environ is None else environ)
    assert caught.value.problems, "a ConfigError always says what is wrong"
    return caught.value.problems


def write(tmp_path: Path, text: str, name: str = "notifier.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the valid example ------------------------------------------------------------------------------


def test_contract_example_loads_to_the_expected_settings(tmp_path: Path) -> None:
    (tmp_path / "my-templates").mkdir()
    path = write(tmp_path, CONTRACT_EXAMPLE)

    settings = load(path, ENV)

    shanghai = "dataworks.cn-shanghai.aliyuncs.com"
    assert settings == Settings(
        dataworks=DataWorksSettings(
            region="cn-shanghai",
            endpoint=shanghai,
            protocol="https",
            projects=(
                ProjectSettings(10000, None, "cn-shanghai", shanghai),
                ProjectSettings(10001, "Finance DW", "cn-shanghai", shanghai),
                ProjectSettings(10002, None, "cn-hangzhou", "dataworks.cn-hangzhou.aliyuncs.com"),
            ),
            runs=(),
            lookback=timedelta(hours=1),
        ),
        state=StateSettings(backend="sqlite", path=tmp_path.resolve() / ".dwnotify/state.db"),
        channels={
            "ops": ChannelSettings("ops", "dingtalk", Secret(OPS_URL), secret=None),
            "team": ChannelSettings("team", "slack", Secret(TEAM_URL)),
        },
        rules=(
            RuleSettings("failures", ("run.failed", "stage.failed"), ("ops",), (10000,), "failure"),
            RuleSettings("everything", ("*",), ("team",), None, "default"),
        ),
        templates=tmp_path.resolve() / "my-templates",
        delivery=DeliverySettings(max_age=timedelta(hours=24), timeout=timedelta(seconds=10)),
        source=path,
    )
    assert settings.dataworks.max_qps == 5.0
    assert settings.dataworks.max_attempts == 4
    assert settings.dataworks.console_url == DEFAULT_CONSOLE_URL
    assert settings.state.retention == timedelta(days=30)


def test_contract_example_with_a_signing_secret(tmp_path: Path) -> None:
    (tmp_path / "my-templates").mkdir()
    settings = load(write(tmp_path, CONTRACT_EXAMPLE), {**ENV, "DINGTALK_OPS_SECRET": "SECxyz"})
    assert settings.channels["ops"].secret == Secret("SECxyz")


def test_contract_example_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my-templates").mkdir()
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DINGTALK_OPS_SECRET", raising=False)
    assert load(write(tmp_path, CONTRACT_EXAMPLE)).channels["team"].url.reveal() == TEAM_URL


def test_every_optional_value(tmp_path: Path) -> None:
    data = changed(
        {
            "dataworks.endpoint": "127.0.0.1:8080",
            "dataworks.protocol": "http",
            "dataworks.runs": [{"project": 10003, "id": "  a7ef01  "}, {"project": "10000", "id": 42}],
            "dataworks.lookback": "0s",
            "dataworks.max_qps": "2.5",
            "dataworks.max_attempts": "${ATTEMPTS:-6}",
            "dataworks.timeout": 25,
            "dataworks.console_url": "https://console.example/{region}/{project_id}/runs/{run_id}",
            "state": {
                "backend": "tablestore",
                "endpoint": "https://inst.cn-shanghai.ots.aliyuncs.com",
                "instance": "inst",
                "table": "dw_notify",
                "retention": "7d",
            },
            "channels.ops.keyword": "DataWorks",
            "channels.ops.at_mobiles": [13800000000, "13900000000"],
            "channels.ops.at_user_ids": ["u1"],
            "channels.ops.at_all": "true",
            "rules[0].projects": [10000, "10003"],
            "delivery": {"max_age": "1h30m", "timeout": "5s"},
        }
    )
    settings = parse(data, tmp_path, ENV)

    dataworks = settings.dataworks
    assert (dataworks.endpoint, dataworks.protocol) == ("127.0.0.1:8080", "http")
    assert dataworks.runs == (TrackedRun(10003, "a7ef01"), TrackedRun(10000, "42"))
    assert dataworks.lookback == timedelta(0)
    assert (dataworks.max_qps, dataworks.max_attempts) == (2.5, 6)
    assert dataworks.timeout == timedelta(seconds=25)
    assert (
        dataworks.console_url.format(region="r", project_id=1, run_id="x")
        == "https://console.example/r/1/runs/x"
    )
    assert settings.state == StateSettings(
        "tablestore",
        tmp_path / ".dwnotify/state.db",
        "https://inst.cn-shanghai.ots.aliyuncs.com",
        "inst",
        "dw_notify",
        timedelta(days=7),
    )
    ops = settings.channels["ops"]
    assert ops == ChannelSettings(
        "ops",
        "dingtalk",
        Secret(OPS_URL),
        Secret("SECabc"),
        "DataWorks",
        ("13800000000", "13900000000"),
        ("u1",),
        True,
    )
    assert settings.rules[0].projects == (10000, 10003)
    assert settings.delivery == DeliverySettings(timedelta(hours=1, minutes=30), timedelta(seconds=5))


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        (90, timedelta(seconds=90)),
        ("90", timedelta(seconds=90)),
        (" 2m ", timedelta(minutes=2)),
    ],
)
def test_durations(tmp_path: Path, written: object, expected: timedelta) -> None:
    settings = parse(changed({"dataworks.lookback": written}), tmp_path, ENV)
    assert settings.dataworks.lookback == expected


@pytest.mark.parametrize(
    ("written", "expected"), [(True, True), (False, False), ("True", True), ("false", False)]
)
def test_booleans(tmp_path: Path, written: object, expected: bool) -> None:
    settings = parse(changed({"channels.ops.at_all": written}), tmp_path, ENV)
    assert settings.channels["ops"].at_all is expected


# --- interpolation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-${B}-post", {"A": "1", "B": "2"}, "pre-1-2-post"),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": ""}, "fallback"),
        ("${A:-}", {}, ""),
        ("${A}", {"A": ""}, ""),
        ("$${A}", {"A": "x"}, "${A}"),
        ("cost: 5$ and $$5", {}, "cost: 5$ and $5"),
        ("no references", {}, "no references"),
    ],
)
def test_expand(text: str, environ: dict[str, str], expected: str) -> None:
    expanded = expand(text, environ)
    assert expanded.text == expected
    assert not expanded.missing and not expanded.malformed


def test_interpolation_reaches_every_string_in_lists_and_mappings(tmp_path: Path) -> None:
    data = changed(
        {
            "dataworks.region": "${REGION}",
            "dataworks.projects": ["${PROJECT}", {"id": "${PROJECT2}", "name": "${NAME:-Finance}"}],
            "rules[0].events": ["${EVENT}"],
            "rules[0].channels": ["${CHANNEL:-ops}"],
        }
    )
    environ = {**ENV, "REGION": "cn-beijing", "PROJECT": "20000", "PROJECT2": "20001", "EVENT": "stage.*"}
    settings = parse(data, tmp_path, environ)
    assert settings.dataworks.region == "cn-beijing"
    assert [(p.id, p.name) for p in settings.dataworks.projects] == [(20000, None), (20001, "Finance")]
    assert settings.rules[0].events == ("stage.*",)
    assert settings.rules[0].channels == ("ops",)


def test_double_dollar_is_a_literal_dollar_in_a_config(tmp_path: Path) -> None:
    settings = parse(changed({"channels.ops.keyword": "costs $$5, not ${PRICE:-$$6}"}), tmp_path, ENV)
    assert settings.channels["ops"].keyword == "costs $5, not $6"


def test_keys_are_not_interpolated(tmp_path: Path) -> None:
    data = changed({"channels.${NAME}": {"type": "slack", "url": TEAM_URL}})
    assert "channels['${NAME}']: channel names may only contain letters, digits, '_' and '-'" in problems_of(
        data, tmp_path, {**ENV, "NAME": "x"}
    )


# --- paths and endpoints -----------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    (folder / "tpl").mkdir(parents=True)
    text = CONTRACT_EXAMPLE.replace("./my-templates", "tpl").replace(".dwnotify/state.db", "data/state.db")
    write(folder, text)
    monkeypatch.chdir(tmp_path)  # the process runs elsewhere; paths still follow the config file

    settings = load(Path("conf/notifier.yaml"), ENV)

    assert settings.state.path == folder.resolve() / "data/state.db"
    assert settings.templates == folder.resolve() / "tpl"


def test_absolute_paths_stay(tmp_path: Path) -> None:
    data = changed({"state": {"path": str(tmp_path / "abs.db")}, "templates": str(tmp_path)})
    settings = parse(data, Path("/elsewhere"), ENV)
    assert settings.state.path == tmp_path / "abs.db"
    assert settings.templates == tmp_path


def test_default_state_is_sqlite_in_the_config_folder(tmp_path: Path) -> None:
    settings = parse(BASE, tmp_path, ENV)
    assert settings.state == StateSettings(path=tmp_path / ".dwnotify" / "state.db")
    assert settings.templates is None
    assert settings.delivery == DeliverySettings()


@pytest.mark.parametrize(
    ("dataworks", "expected_top", "expected_projects"),
    [
        (
            {"region": "cn-shanghai", "projects": [1]},
            "dataworks.cn-shanghai.aliyuncs.com",
            ["dataworks.cn-shanghai.aliyuncs.com"],
        ),
        (
            {
                "region": "cn-shanghai",
                "endpoint": "127.0.0.1:9000",
                "projects": [1, {"id": 2, "region": "cn-shanghai"}],
            },
            "127.0.0.1:9000",
            ["127.0.0.1:9000", "127.0.0.1:9000"],
        ),
        (
            {
                "region": "cn-shanghai",
                "endpoint": "127.0.0.1:9000",
                "projects": [{"id": 1, "region": "cn-hangzhou"}],
            },
            "127.0.0.1:9000",
            ["dataworks.cn-hangzhou.aliyuncs.com"],
        ),
        (
            {
                "region": "cn-shanghai",
                "projects": [{"id": 1, "region": "cn-hangzhou", "endpoint": "dw.example:81"}],
            },
            "dataworks.cn-shanghai.aliyuncs.com",
            ["dw.example:81"],
        ),
    ],
)
def test_endpoints(
    tmp_path: Path, dataworks: dict[str, Any], expected_top: str, expected_projects: list[str]
) -> None:
    data = changed({"dataworks": dataworks})
    settings = parse(data, tmp_path, ENV)
    assert settings.dataworks.endpoint == expected_top
    assert [project.endpoint for project in settings.dataworks.projects] == expected_projects


@pytest.mark.parametrize(
    ("cli", "environ", "expected"),
    [
        ("given.yaml", {"DWNOTIFY_CONFIG": "env.yaml"}, Path("given.yaml")),
        (None, {"DWNOTIFY_CONFIG": "/etc/env.yaml"}, Path("/etc/env.yaml")),
        (None, {}, Path("notifier.yaml")),
        (None, {"DWNOTIFY_CONFIG": ""}, Path("notifier.yaml")),
    ],
)
def test_resolve_config_path(cli: str | None, environ: dict[str, str], expected: Path) -> None:
    assert resolve_config_path(cli, environ) == expected


# --- problems ----------------------------------------------------------------------------------------

# (change to BASE, dotted path of the problem, a fragment of its message)
PROBLEM_CASES: list[tuple[dict[str, Any], str, str]] = [
    # interpolation
    (
        {"channels.ops.url": "${DINGTALK_OPS_URL_X}"},
        "channels.ops.url",
        "environment variable DINGTALK_OPS_URL_X is not set",
    ),
    ({"rules[1].events": ["${EVENT}"]}, "rules[1].events[0]", "environment variable EVENT is not set"),
    ({"channels.ops.keyword": "${oops"}, "channels.ops.keyword", "starts no ${NAME}"),
    # unknown keys, with suggestions
    (
        {"rules[0].chanels": ["ops"], "rules[0].channels": DELETE},
        "rules[0].chanels",
        "unknown key (did you mean 'channels'?)",
    ),
    ({"extra": 1}, "extra", "unknown key; the keys here are actions, channels, dataworks"),
    ({"dataworks.regoin": "x"}, "dataworks.regoin", "did you mean 'region'?"),
    ({"dataworks.projects[1].nmae": "x"}, "dataworks.projects[1].nmae", "did you mean 'name'?"),
    ({"channels.ops.keywrd": "x"}, "channels.ops.keywrd", "did you mean 'keyword'?"),
    ({"channels.team.secret": "x"}, "channels.team.secret", "unknown key"),
    ({"state": {"bakend": "sqlite"}}, "state.bakend", "did you mean 'backend'?"),
    ({"delivery": {"max_agee": "1h"}}, "delivery.max_agee", "did you mean 'max_age'?"),
    ({"dataworks.runs": [{"project": 1, "id": "r", "idx": 1}]}, "dataworks.runs[0].idx", "unknown key"),
    # required top level and wrong shapes
    ({"dataworks": DELETE}, "dataworks", "this required key is missing"),
    ({"channels": DELETE}, "channels", "this required key is missing"),
    ({"rules": DELETE}, "rules", "this required key is missing"),
    ({"rules": None}, "rules", "this required key has no value"),
    ({"dataworks": "cn-shanghai"}, "dataworks", "expected a mapping, got a string"),
    ({"state": ["sqlite"]}, "state", "expected a mapping, got a list"),
    ({"delivery": 5}, "delivery", "expected a mapping, got an integer"),
    ({"channels": ["ops"]}, "channels", "expected a mapping of channel names to channels, got a list"),
    ({"channels": {}}, "channels", "must define at least one channel"),
    ({"rules": []}, "rules", "must list at least one rule"),
    ({"rules": {"name": "x"}}, "rules", "expected a list, got a mapping"),
    ({"rules[1]": "everything"}, "rules[1]", "expected a mapping, got a string"),
    ({"templates": ["a"]}, "templates", "expected a string, got a list"),
    # dataworks
    ({"dataworks.region": DELETE}, "dataworks.region", "this required key is missing"),
    ({"dataworks.region": "cn_shanghai"}, "dataworks.region", "must be a region id"),
    (
        {"dataworks.endpoint": "https://dataworks.cn-shanghai.aliyuncs.com"},
        "dataworks.endpoint",
        "without scheme",
    ),
    ({"dataworks.protocol": "ftp"}, "dataworks.protocol", "'ftp' is not one of 'https', 'http'"),
    ({"dataworks.projects": DELETE}, "dataworks.projects", "this required key is missing"),
    ({"dataworks.projects": []}, "dataworks.projects", "must list at least one workspace id"),
    ({"dataworks.projects": 10000}, "dataworks.projects", "expected a list, got an integer"),
    (
        {"dataworks.projects[1]": {"id": 10000}},
        "dataworks.projects[1].id",
        "workspace 10000 is listed twice (first at dataworks.projects[0])",
    ),
    ({"dataworks.projects[1]": 10000}, "dataworks.projects[1]", "listed twice"),
    ({"dataworks.projects[1]": [1]}, "dataworks.projects[1]", "expected a workspace id or a mapping"),
    ({"dataworks.projects[1]": "abc"}, "dataworks.projects[1]", "must be a whole number (got 'abc')"),
    ({"dataworks.projects[1]": 0}, "dataworks.projects[1]", "must be at least 1"),
    ({"dataworks.projects[1]": True}, "dataworks.projects[1]", "expected a workspace id or a mapping"),
    ({"dataworks.projects[1].id": DELETE}, "dataworks.projects[1].id", "this required key is missing"),
    ({"dataworks.projects[1].region": "Hangzhou!"}, "dataworks.projects[1].region", "must be a region id"),
    ({"dataworks.runs": [{"project": 1}]}, "dataworks.runs[0].id", "this required key is missing"),
    (
        {"dataworks.runs": [{"project": "x", "id": "r"}]},
        "dataworks.runs[0].project",
        "must be a whole number",
    ),
    (
        {"dataworks.runs": [{"project": 1, "id": "r"}, {"project": 1, "id": " r"}]},
        "dataworks.runs[1]",
        "listed twice",
    ),
    ({"dataworks.runs": {"project": 1, "id": "r"}}, "dataworks.runs", "expected a list, got a mapping"),
    ({"dataworks.lookback": "5x"}, "dataworks.lookback", "must be a duration such as 30s"),
    ({"dataworks.lookback": "1.5h"}, "dataworks.lookback", "must be a duration"),
    ({"dataworks.lookback": -5}, "dataworks.lookback", "must be a duration"),
    ({"dataworks.timeout": "0s"}, "dataworks.timeout", "must be longer than zero"),
    ({"dataworks.timeout": [1]}, "dataworks.timeout", "must be a duration"),
    ({"dataworks.lookback": "99999999999d"}, "dataworks.lookback", "is too long"),
    ({"dataworks.max_qps": 0}, "dataworks.max_qps", "must be a number from 0.2 to 1000"),
    ({"dataworks.max_qps": "fast"}, "dataworks.max_qps", "must be a number from 0.2 to 1000 (got 'fast')"),
    ({"dataworks.max_qps": True}, "dataworks.max_qps", "must be a number from 0.2 to 1000"),
    # every number that sets a wait is bounded: 0.0001 QPS would sleep 10,000 s between two requests
    ({"dataworks.max_qps": 0.0001}, "dataworks.max_qps", "must be a number from 0.2 to 1000 (got 0.0001)"),
    ({"dataworks.max_qps": "1e9"}, "dataworks.max_qps", "must be a number from 0.2 to 1000"),
    ({"dataworks.max_attempts": 1000}, "dataworks.max_attempts", "must be at most 10 (got 1000)"),
    ({"dataworks.timeout": "31s"}, "dataworks.timeout", "must be at most 30s (got '31s')"),
    ({"delivery": {"timeout": "90s"}}, "delivery.timeout", "must be at most 30s (got '90s')"),
    ({"delivery": {"timeout": 10**9}}, "delivery.timeout", "must be at most 30s"),
    ({"dataworks.max_attempts": 0}, "dataworks.max_attempts", "must be at least 1 (got 0)"),
    ({"dataworks.max_attempts": 2.5}, "dataworks.max_attempts", "must be a whole number"),
    ({"dataworks.max_attempts": "three"}, "dataworks.max_attempts", "must be a whole number"),
    ({"dataworks.console_url": "https://x/{foo}"}, "dataworks.console_url", "unknown placeholder {foo}"),
    ({"dataworks.console_url": "https://x/{}"}, "dataworks.console_url", "is not a valid pattern"),
    ({"dataworks.console_url": "https://x/{region"}, "dataworks.console_url", "is not a valid pattern"),
    ({"dataworks.console_url": "x/{region}"}, "dataworks.console_url", "must start with http:// or https://"),
    # state
    ({"state": {"backend": "mysql"}}, "state.backend", "'mysql' is not one of 'sqlite', 'tablestore'"),
    (
        {"state": {"backend": "tablestore", "instance": "i"}},
        "state.endpoint",
        "is required when the backend is tablestore",
    ),
    ({"state": {"backend": "tablestore", "endpoint": "https://i.ots"}}, "state.instance", "is required"),
    (
        {"state": {"backend": "tablestore", "endpoint": "i.ots", "instance": "i"}},
        "state.endpoint",
        "must start with http://",
    ),
    (
        {"state": {"backend": "tablestore", "endpoint": "https://i", "instance": "i", "table": "a-b"}},
        "state.table",
        "table name",
    ),
    (
        {"state": {"backend": "tablestore", "endpoint": "https://i", "instance": "i", "path": "x.db"}},
        "state.path",
        "only used by the sqlite backend",
    ),
    ({"state": {"instance": "i"}}, "state.instance", "only used by the tablestore backend"),
    ({"state": {"retention": "forever"}}, "state.retention", "must be a duration"),
    # templates
    ({"templates": "missing-folder"}, "templates", "does not exist"),
    # channels
    ({"channels.ops": None}, "channels.ops", "expected a mapping, got nothing"),
    ({"channels.ops": "https://x"}, "channels.ops", "expected a mapping, got a string"),
    ({"channels.bad!name": {"type": "slack", "url": TEAM_URL}}, "channels['bad!name']", "letters, digits"),
    (
        {"channels": {**BASE["channels"], 7: {"type": "slack", "url": TEAM_URL}}},
        "channels.7",
        "must be strings",
    ),
    ({"channels.ops.type": DELETE}, "channels.ops.type", "this required key is missing"),
    (
        {"channels.team.type": "slak"},
        "channels.team.type",
        "'slak' is not one of 'dingtalk', 'lark', 'slack', 'slack-app', 'webhook', 'wecom' "
        "(did you mean 'slack'?)",
    ),
    (
        {"templates": "~no-such-user-here/templates"},
        "templates",
        "names the home folder of a user this machine does not know",
    ),
    ({"channels.ops.url": DELETE}, "channels.ops.url", "this required key is missing"),
    ({"channels.ops.url": ""}, "channels.ops.url", "must not be empty"),
    (
        {"channels.ops.url": "ftp://example.com/x"},
        "channels.ops.url",
        "must be an http:// or https:// URL with a host",
    ),
    ({"channels.ops.url": "https://"}, "channels.ops.url", "with a host"),
    ({"channels.ops.url": "hooks.slack.com/x"}, "channels.ops.url", "with a host"),
    ({"channels.ops.url": 5}, "channels.ops.url", "expected a string, got an integer"),
    ({"channels.ops.secret": "abc"}, "channels.ops.secret", "starts with 'SEC'"),
    ({"channels.ops.at_mobiles": "138"}, "channels.ops.at_mobiles", "expected a list, got a string"),
    ({"channels.ops.at_user_ids": [["u"]]}, "channels.ops.at_user_ids[0]", "expected a string, got a list"),
    ({"channels.ops.at_all": "yes"}, "channels.ops.at_all", "must be true or false (got 'yes')"),
    ({"channels.ops.keyword": ["a"]}, "channels.ops.keyword", "expected a string"),
    # rules
    ({"rules[0].name": DELETE}, "rules[0].name", "this required key is missing"),
    ({"rules[1].name": "failures"}, "rules[1].name", "rule name 'failures' is already used by rules[0]"),
    ({"rules[0].events": DELETE}, "rules[0].events", "this required key is missing"),
    ({"rules[0].events": []}, "rules[0].events", "must list at least one event pattern"),
    ({"rules[0].events": "run.failed"}, "rules[0].events", "expected a list, got a string"),
    (
        {"rules[0].events": ["run.failed", "run.fail"]},
        "rules[0].events[1]",
        "'run.fail' is not an event type, 'run.*', 'stage.*' or '*' (did you mean 'run.failed'?)",
    ),
    ({"rules[0].events": ["job.*"]}, "rules[0].events[0]", "is not an event type"),
    ({"rules[0].events": ["run.failed", None]}, "rules[0].events[1]", "this list item is empty"),
    ({"rules[0].channels": []}, "rules[0].channels", "must list at least one channel"),
    (
        {"rules[0].channels": ["opz"]},
        "rules[0].channels[0]",
        "'opz' is not a channel defined under channels (did you mean 'ops'?)",
    ),
    (
        {"rules[0].projects": [10003]},
        "rules[0].projects[0]",
        "workspace 10003 is in neither dataworks.projects nor dataworks.runs",
    ),
    ({"rules[0].projects": []}, "rules[0].projects", "must list at least one workspace id"),
    ({"rules[0].projects": ["x"]}, "rules[0].projects[0]", "must be a whole number"),
    (
        {"rules[0].template": "../etc/passwd"},
        "rules[0].template",
        "may only contain letters, digits, '_' and '-'",
    ),
]


@pytest.mark.parametrize(
    ("change", "where", "fragment"),
    PROBLEM_CASES,
    ids=[f"{where}:{fragment[:30]}" for _, where, fragment in PROBLEM_CASES],
)
def test_problem(tmp_path: Path, change: dict[str, Any], where: str, fragment: str) -> None:
    problems = problems_of(changed(change), tmp_path)
    at_place = [line for line in problems if line.startswith(f"{where}: ")]
    assert at_place, f"no problem at {where}: {problems}"
    assert any(fragment in line for line in at_place), problems


def test_the_contract_error_lines_read_exactly(tmp_path: Path) -> None:
    data = changed(
        {"rules[0].chanels": ["ops"], "rules[0].channels": DELETE, "channels.ops.url": "${DINGTALK_OPS_URL}"}
    )
    assert problems_of(data, tmp_path, {}) == [
        "channels.ops.url: environment variable DINGTALK_OPS_URL is not set",
        "rules[0].chanels: unknown key (did you mean 'channels'?)",
    ]


@pytest.mark.parametrize("channels", [{}, DELETE, ["ops"]])
def test_a_rule_naming_an_undefined_channel_is_reported_even_without_channels(
    tmp_path: Path, channels: object
) -> None:
    problems = problems_of(changed({"channels": channels}), tmp_path)
    assert any(line.startswith("channels: ") for line in problems), problems
    assert any(line.startswith("rules[0].channels[0]: 'ops' is not a channel") for line in problems), problems


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    data = changed(
        {
            "dataworks.protocol": "ftp",
            "dataworks.lookback": "soon",
            "channels.team.type": "teams",
            "channels.ops.at_all": "maybe",
            "rules[0].events": ["nope"],
            "rules[1].channels": ["nobody"],
            "delivery": {"timeout": "never"},
        }
    )
    places = [line.split(": ", 1)[0] for line in problems_of(data, tmp_path)]
    assert sorted(places) == sorted(
        [
            "dataworks.protocol",
            "dataworks.lookback",
            "channels.team.type",
            "channels.ops.at_all",
            "rules[0].events[0]",
            "rules[1].channels[0]",
            "delivery.timeout",
        ]
    )


def test_a_variable_missing_from_a_required_value_is_reported_once(tmp_path: Path) -> None:
    problems = problems_of(changed({"channels.team.url": "${SLACK_URL}"}), tmp_path)
    assert problems == ["channels.team.url: environment variable SLACK_URL is not set"]


def test_every_missing_variable_in_one_string_is_named(tmp_path: Path) -> None:
    problems = problems_of(changed({"channels.team.url": "https://${HOST}/${PATH_PART}"}), tmp_path)
    assert problems == [
        "channels.team.url: environment variable HOST is not set",
        "channels.team.url: environment variable PATH_PART is not set",
    ]


def test_a_missing_variable_is_not_hidden_by_its_field_being_optional(tmp_path: Path) -> None:
    problems = problems_of(changed({"channels.ops.keyword": "${KW}"}), tmp_path)
    assert problems == ["channels.ops.keyword: environment variable KW is not set"]


# --- the file ----------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load(path, ENV)
    assert caught.value.problems == [
        f"{path}: the config file does not exist (set it with --config or $DWNOTIFY_CONFIG)"
    ]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, ENV)  # a folder
    assert caught.value.problems[0].startswith(f"{tmp_path}: the config file cannot be read")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "notifier.yaml"
    path.write_bytes(b"dataworks: \xff\xfe\xfa\n")
    with pytest.raises(ConfigError) as caught:
        load(path, ENV)
    assert caught.value.problems == [f"{path}: the config file is not UTF-8 text"]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("dataworks:\n  region: x\n  bad: : :\n", 3),
        ("dataworks:\n  region: x\n\tprojects: [1]\n", 3),
        ("dataworks: {region: x\nchannels: {}\n", 2),
        ("a: 1\n---\nb: 2\n", 2),
    ],
)
def test_yaml_syntax_error_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path, ENV)
    [problem] = caught.value.problems
    assert re.fullmatch(rf"{re.escape(str(path))}: line {line}: [a-z].+", problem), problem


def test_repeated_keys_are_problems(tmp_path: Path) -> None:
    (tmp_path / "my-templates").mkdir()
    text = CONTRACT_EXAMPLE + "rules:\n  - {name: x, events: ['*'], channels: [ops]}\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path, ENV)
    assert caught.value.problems == [
        f"{path}: line {CONTRACT_EXAMPLE.count(chr(10)) + 1}: key 'rules' is given twice"
    ]


def test_yaml_merge_keys_are_not_repeats(tmp_path: Path) -> None:
    text = """\
dataworks: {region: cn-shanghai, projects: [1]}
channels:
  ops: &base {type: slack, url: "https://hooks.slack.com/a"}
  team:
    <<: *base
    url: "https://hooks.slack.com/b"
rules: [{name: all, events: ["*"], channels: [ops, team]}]
"""
    settings = load(write(tmp_path, text), {})
    assert settings.channels["team"].url == Secret("https://hooks.slack.com/b")


@pytest.mark.parametrize(
    ("text", "fragment"), [("", "the config is empty"), ("- 1\n", "expected a mapping, got a list")]
)
def test_empty_or_wrong_top_level(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path, ENV)
    assert caught.value.problems[0].startswith(f"{path}: {fragment}")


# --- secrets -----------------------------------------------------------------------------------------

URL_SECRET = "tok-URLSECRET-7f3a9"
SIGN_SECRET = "SIGNSECRET-c41d"
PASSWORD = "PWSECRET-e9b2"
TOKEN = "TOKENSECRET-58aa"


def _leaky_configs() -> list[dict[str, Any]]:
    """Bad configs that put each secret where a careless message would quote it."""
    return [
        changed({"channels.ops.url": f"ftp://robot/send?access_token={URL_SECRET}"}),
        changed({"channels.ops.url": URL_SECRET}),
        changed({"channels.team.url": f"https://hooks slack com/{URL_SECRET}"}),
        changed({"channels.ops.secret": SIGN_SECRET}),  # not starting with SEC
        changed({"channels.ops.secret": [SIGN_SECRET]}),
        changed({"channels.ops.url": {"value": URL_SECRET}}),
        changed({"dataworks.protocol": "${DB_PASSWORD}"}),
        changed({"dataworks.lookback": "${API_TOKEN}"}),
        changed({"channels.ops.keyword": "${SIGNING_KEY}", "channels.ops.at_all": "${APP_SECRET}"}),
        changed({"rules[0].channels": ["${API_TOKEN}"], "rules[0].events": ["${DB_PASSWORD}"]}),
        changed({"state": {"backend": "${API_TOKEN}"}}),
        changed({"dataworks.max_qps": "${DB_PASSWORD}", "dataworks.endpoint": "${API_TOKEN}"}),
        changed({"channels.ops.url": "${MISSING_URL:-" + URL_SECRET + "}"}),
    ]


def test_secrets_never_appear_in_problems(tmp_path: Path) -> None:
    environ = {
        **ENV,
        "DB_PASSWORD": PASSWORD,
        "API_TOKEN": TOKEN,
        "SIGNING_KEY": TOKEN,
        "APP_SECRET": PASSWORD,
    }
    for data in _leaky_configs():
        problems = problems_of(data, tmp_path, environ)
        for secret in (URL_SECRET, SIGN_SECRET, PASSWORD, TOKEN):
            assert not any(secret in line for line in problems), problems


def test_a_pasted_secret_that_became_a_key_is_not_printed(tmp_path: Path) -> None:
    secret_key = "SEC" + "0f" * 32
    problems = problems_of(changed({f"channels.ops.{secret_key}": None}), tmp_path)
    assert problems == [
        "channels.ops[<a key of 67 characters>]: unknown key; the keys here are allow_http, at_all, "
        "at_mobiles, at_user_ids, keyword, secret, type, url"
    ]


def test_secrets_never_appear_in_yaml_errors(tmp_path: Path) -> None:
    path = write(tmp_path, f"channels:\n  ops: {{url: https://x/{URL_SECRET}, secret: {SIGN_SECRET}\n")
    with pytest.raises(ConfigError) as caught:
        load(path, ENV)
    assert not any(URL_SECRET in line or SIGN_SECRET in line for line in caught.value.problems)
    assert URL_SECRET not in str(caught.value)


def test_secrets_never_appear_in_settings_repr(tmp_path: Path) -> None:
    (tmp_path / "my-templates").mkdir()
    url = f"https://oapi.dingtalk.com/robot/send?access_token={URL_SECRET}"
    slack = f"https://hooks.slack.com/services/{TOKEN}"
    environ = {"DINGTALK_OPS_URL": url, "DINGTALK_OPS_SECRET": f"SEC{SIGN_SECRET}", "SLACK_TEAM_URL": slack}
    settings = load(write(tmp_path, CONTRACT_EXAMPLE), environ)
    for text in (repr(settings), str(settings), f"{settings.channels['ops']}"):
        for secret in (URL_SECRET, SIGN_SECRET, TOKEN):
            assert secret not in text
    assert settings.channels["ops"].url.reveal() == url
    assert settings.channels["ops"].secret == Secret(f"SEC{SIGN_SECRET}")


def test_two_channels_on_one_webhook_are_refused_without_showing_it(tmp_path: Path) -> None:
    url = "https://oapi.dingtalk.com/robot/send?access_token=tok-twin-8c1f"
    data = {
        "dataworks": {"region": "cn-shanghai", "projects": [10000]},
        "channels": {"a": {"type": "dingtalk", "url": url}, "b": {"type": "dingtalk", "url": url}},
        "rules": [{"name": "all", "events": ["*"], "channels": ["a", "b"]}],
    }
    with pytest.raises(ConfigError) as caught:
        parse(data, tmp_path, {})
    assert caught.value.problems == [
        "channels.b.url: is the same webhook as channels.a; use that channel in both rules"
    ]
    assert "tok-twin" not in str(caught.value)


BILLION_LAUGHS = "".join(
    f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n" if n else "l0: &l0 [lol, lol, lol, lol, lol]\n"
    for n in range(10)
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (BILLION_LAUGHS, "the config expands to more than 100,000 values through its aliases"),
        (
            "dataworks: {region: cn-shanghai}\nunknown_key:\n" + textwrap.indent(BILLION_LAUGHS, "  "),
            "aliases",
        ),
        ("a: &x\n  b: *x\n", "line 1: an alias refers to a value that contains it"),
        ("a: &x [1, *x]\n", "an alias refers to a value that contains it"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "line 1: values are nested more than 50 levels deep"),
        ("a:\n" + "".join(" " * n + f"k{n}:\n" for n in range(1, 1000)), "nested more than 50 levels"),
    ],
)
def test_hostile_yaml_is_one_quick_config_error(tmp_path: Path, text: str, problem: str) -> None:
    """Expansion is sized once per node, so these fail at once instead of hanging or overflowing the stack."""
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text))
    assert len(caught.value.problems) == 1, caught.value.problems
    assert problem in caught.value.problems[0]


def test_shared_anchors_within_bounds_are_fine(tmp_path: Path) -> None:
    text = CONTRACT_EXAMPLE.replace("events: [run.failed, stage.failed]", "events: &failures [run.failed]")
    text = text.replace('events: ["*"]', "events: *failures")
    (tmp_path / "my-templates").mkdir()
    settings = load(write(tmp_path, text), ENV)
    assert [rule.events for rule in settings.rules] == [("run.failed",), ("run.failed",)]


def test_a_huge_config_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "notifier.yaml"
    with path.open("w") as out:
        out.write("x: '")
        out.write("y" * (2 << 20))
        out.write("'\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.problems == [
        f"{path}: the config file is {path.stat().st_size:,} bytes; a config is at most 1 MiB"
    ]


# --- a channel type the config has never heard of ----------------------------------------------------


def test_a_new_channel_type_is_configured_from_its_own_declaration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A type without a webhook URL (a chat API with a bot token), declared only in its own TYPE:
    # the config reads its options by their kinds, requires what it requires, and rejects the rest.
    from dwnotify import channels
    from dwnotify.app import secret_values
    from dwnotify.channels.kind import ChannelType, DigestRules, RateBudget

    api = ChannelType(
        name="chat-api",
        options={"token": "secret", "channel": "text", "api_url": "url", "notify": "flag"},
        formats=channels.CHANNEL_TYPES["slack"].formats,
        rate=RateBudget(1, 1.0),
        digest=DigestRules(10_000),
        sender=channels.CHANNEL_TYPES["slack"].sender,
        required=frozenset({"token", "channel"}),
    )
    monkeypatch.setitem(channels.CHANNEL_TYPES, "chat-api", api)  # type: ignore[index]
    bot = {"type": "chat-api", "token": "xoxb-0123456789-abcdef", "channel": "C0123", "notify": "true"}
    settings = parse(changed({"channels.team": bot}), tmp_path, ENV)
    team = settings.channels["team"]
    assert (team.type, team.url, team.options["channel"], team.options["notify"]) == (
        "chat-api",
        None,
        "C0123",
        True,
    )
    assert team.options["token"] == Secret("xoxb-0123456789-abcdef") and team.options["api_url"] is None
    assert "xoxb-0123456789-abcdef" in secret_values(settings, None)[0]  # masked like any token
    missing = problems_of(changed({"channels.team": {"type": "chat-api", "url": TEAM_URL}}), tmp_path)
    assert any("channels.team" in p and "token" in p for p in missing), missing
    assert any("channels.team.url" in p for p in missing), missing  # not an option of this type


def test_a_run_id_in_a_console_link_is_percent_encoded() -> None:
    from dwnotify.settings import ProjectSettings

    project = ProjectSettings(10000, None, "cn-shanghai", "dataworks.cn-shanghai.aliyuncs.com")
    pattern = "https://console.test/{region}/{project_id}?run={run_id}"
    assert project.console_url(pattern, "a7ef-01") == "https://console.test/cn-shanghai/10000?run=a7ef-01"
    assert (
        project.console_url(pattern, "x&admin=1#y")
        == "https://console.test/cn-shanghai/10000?run=x%26admin%3D1%23y"
    )


# -- the Slack app channel -----------------------------------------------------------------------------
SLACK_APP = {"type": "slack-app", "token": "xoxb-1-2-abc", "channel": "C0123456"}


def test_a_slack_app_channel_needs_a_token_and_a_channel_id_and_nothing_else(tmp_path: Path) -> None:
    settings = parse(changed({"channels.team": SLACK_APP}), tmp_path, ENV)
    team = settings.channels["team"]
    assert team.type == "slack-app" and team.url is None
    assert team.options["token"].reveal() == "xoxb-1-2-abc" and team.options["channel"] == "C0123456"
    assert team.options["api_url"] is None  # https://slack.com/api, the channel's default


@pytest.mark.parametrize(
    ("change", "where", "fragment"),
    [
        ({"channel": "#deploys"}, "channels.team.channel", "must be the channel's ID such as C0123456"),
        ({"channel": "deploys"}, "channels.team.channel", "editing and finding a message need the ID"),
        ({"token": "https://hooks.slack.com/services/T/B/X"}, "channels.team.token", "starts with 'xoxb-'"),
        ({"token": DELETE}, "channels.team.token", "this required key is missing"),
        ({"channel": DELETE}, "channels.team.channel", "this required key is missing"),
        ({"url": TEAM_URL}, "channels.team.url", "unknown key"),
        ({"api_url": "http://slack.example.com/api"}, "channels.team.api_url", "https"),
    ],
)
def test_slack_app_mistakes_are_named_by_their_path(
    tmp_path: Path, change: dict[str, Any], where: str, fragment: str
) -> None:
    channel = {key: value for key, value in {**SLACK_APP, **change}.items() if value is not DELETE}
    problems = problems_of(changed({"channels.team": channel}), tmp_path)
    assert any(line.startswith(f"{where}: ") and fragment in line for line in problems), problems
    assert "xoxb-1-2-abc" not in "\n".join(problems)
