"""The real Serverless Devs CLI judges s.yaml, offline: what `s deploy` hands the fc3 component.

`s` is `@serverless-devs/s` at the version package-lock.json pins, installed in node_modules/ by
`make serverless-devs` (which `make test` runs). `s preview` renders s.yaml as the component receives
it. `s deploy` and `s plan` run against a local stand-in for fc3 (Serverless Devs 3 loads
`component: <a folder that exists>` from that folder instead of its registry) that records the props,
access alias and credential it gets and deploys nothing; the copy of s.yaml changes only `component`.
HOME is a temporary folder (the access file and the logs go there), and NODE_ENV=test keeps `s` from
spawning its report and update-check daemons, which would go to the network (checked with strace: with
it, these commands connect nowhere). `s config add` would too (it asks STS), so no test runs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
S_CLI = ROOT / "node_modules" / ".bin" / "s"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TABLE_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| (yes|no) \|", re.MULTILINE)

pytestmark = pytest.mark.slow  # each case starts the Node CLI (about a second)

# A value for every variable README's Deploy table marks required ...
REQUIRED = {
    "DWNOTIFY_ROLE_ARN": "acs:ram::1234567890123456:role/dwnotify",
    "TABLESTORE_ENDPOINT": "https://dwnotify.cn-shanghai.ots.aliyuncs.com",
    "TABLESTORE_INSTANCE": "dwnotify",
    "DINGTALK_OPS_URL": "https://oapi.dingtalk.com/robot/send?access_token=0123456789abcdef",
    "SLACK_TEAM_URL": "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
}
# ... and a value other than the default for every optional one.
OPTIONAL = {
    "DINGTALK_OPS_SECRET": "SEC0123456789abcdef",
    "TABLESTORE_TABLE": "dwnotify_staging",
    "DWNOTIFY_REGION": "cn-hangzhou",
    "DWNOTIFY_RUNTIME": "python3.12",
    "DWNOTIFY_SCHEDULE": "@every 15m",
    "DWNOTIFY_FUNCTION_NAME": "dwnotify-staging",
    "DWNOTIFY_LOG_LEVEL": "DEBUG",
    "SLACK_BOT_TOKEN": "xoxb-1-0123456789",
    "SLACK_SIGNING_SECRET": "8f742231b10e8888abcd99yyyzzz85a5",
}
# Keys under two aliases, as `s config add -a <alias>` stores them (README's prerequisites).
ALIASES = {
    "default": {
        "AccessKeyID": "default-ak",
        "AccessKeySecret": "default-secret",
        "AccountID": "1234567890123456",
    },
    "ci": {"AccessKeyID": "ci-ak", "AccessKeySecret": "ci-secret", "AccountID": "6543210987654321"},
}
OLD_ACCESS_LINE = "access: \"${env('DWNOTIFY_ACCESS', 'default')}\""

# A stand-in for the fc3 component: what Serverless Devs hands a component's deploy/plan, written to
# $STANDIN_RECORD, with whether the pre-deploy action had built the code folder by then.
STANDIN_JS = r"""'use strict';
const fs = require('fs');
const path = require('path');

class Fc3StandIn {
  async record(command, inputs) {
    const credential = await inputs.getCredential();
    const project = path.dirname(inputs.yaml.path);
    const makeLog = path.join(project, 'make.log');
    fs.writeFileSync(process.env.STANDIN_RECORD, JSON.stringify({
      command,
      props: inputs.props,
      resource: inputs.resource,
      args: inputs.args,
      credential: {
        AccessKeyID: credential.AccessKeyID,
        AccessKeySecret: credential.AccessKeySecret,
        AccountID: credential.AccountID,
      },
      codeBuilt: fs.existsSync(path.join(path.resolve(project, inputs.props.code), 'index.py')),
      makeLog: fs.existsSync(makeLog) ? fs.readFileSync(makeLog, 'utf8') : null,
    }));
    return { recorded: command };
  }

  async deploy(inputs) { return this.record('deploy', inputs); }

  async plan(inputs) { return this.record('plan', inputs); }
}

module.exports = Fc3StandIn;
"""
# Takes the place of the repository's Makefile next to the copy of s.yaml: `make build` there records
# its arguments and lays out build/code, instead of vendoring wheels from the package index.
STUB_MAKEFILE = (
    "build:\n"
    "\tprintf '%s\\n' 'make build FC_PYTHON=$(FC_PYTHON)' >> make.log\n"
    "\tmkdir -p build/code && touch build/code/index.py\n"
)


@pytest.fixture(scope="module")
def s_cli() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (the Serverless Devs CLI runs on it)")
    if not S_CLI.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed, so the Serverless Devs CLI cannot be")
        pytest.fail(f"{S_CLI.relative_to(ROOT)} is missing: run `make serverless-devs` (make test does)")
    return S_CLI


def run_s(
    *args: str, home: Path, cwd: Path, variables: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`s <args>` with only PATH, a temporary HOME and `variables` in its environment.

    Nothing else from this environment leaks in: `s` takes AccountID/AccessKeyID/AccessKeySecret from
    the environment over any alias, and the deployer's own DWNOTIFY_* would change the rendering.
    """
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "NODE_ENV": "test"}
    env.update(variables or {})
    result = subprocess.run(
        [str(S_CLI), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result.stdout, result.stderr = ANSI.sub("", result.stdout), ANSI.sub("", result.stderr)
    return result


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, s_cli: Path) -> Path:
    """A HOME whose ~/.s/access.yaml holds the aliases `default` and `ci`.

    Written here rather than by `s config add`, which asks STS about the key (the network). `s config
    add` encrypts each value; `s` reads a value it cannot decrypt as it is, so plain values do.
    """
    home = tmp_path_factory.mktemp("home")
    (home / ".s").mkdir()
    access = (home / ".s" / "access.yaml").open("w", encoding="utf-8")
    with access:
        for alias, keys in ALIASES.items():
            access.write(f"{alias}:\n" + "".join(f"  {name}: '{value}'\n" for name, value in keys.items()))
    return home


def readme_variables() -> dict[str, bool]:
    """Variable -> required, from the table in README's Deploy section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Deploy\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    assert match is not None, "README.md has no '## Deploy' section"
    rows = {name: required == "yes" for name, required in TABLE_ROW.findall(match.group(1))}
    assert rows, "README's Deploy section has no variable table"
    return rows


def required_variables() -> dict[str, str]:
    names = [name for name, required in readme_variables().items() if required]
    assert set(names) <= set(REQUIRED), f"no sample value for {set(names) - set(REQUIRED)}"
    return {name: REQUIRED[name] for name in names}


def preview(home: Path, variables: dict[str, str]) -> dict[str, Any]:
    """`s preview -o json` of the repository's s.yaml: the document after Serverless Devs' rendering."""
    result = run_s(
        "preview", "-t", str(ROOT / "s.yaml"), "-o", "json", home=home, cwd=ROOT, variables=variables
    )
    assert result.returncode == 0, output(result)
    start = re.search(r"^\{", result.stdout, re.MULTILINE)  # after any warning (running as root)
    assert start is not None, result.stdout
    document, _ = json.JSONDecoder().raw_decode(result.stdout[start.start() :])
    assert isinstance(document, dict)
    return document


def only_resource(document: dict[str, Any]) -> dict[str, Any]:
    [resource] = document["resources"].values()
    assert isinstance(resource, dict)
    return resource


@pytest.fixture(scope="module")
def defaults(home: Path) -> dict[str, Any]:
    """s.yaml rendered with README's required variables only."""
    return preview(home, required_variables())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of s.yaml whose component is the stand-in, beside a stub Makefile."""
    standin = tmp_path / "fc3-standin"
    standin.mkdir()
    (standin / "package.json").write_text(json.dumps({"name": "fc3-standin", "main": "index.js"}))
    (standin / "index.js").write_text(STANDIN_JS, encoding="utf-8")
    project = tmp_path / "project"
    project.mkdir()
    text = (ROOT / "s.yaml").read_text(encoding="utf-8")
    assert text.count("component: fc3") == 1, "s.yaml should deploy one resource with fc3"
    (project / "s.yaml").write_text(text.replace("component: fc3", f"component: {standin}"), encoding="utf-8")
    (project / "Makefile").write_text(STUB_MAKEFILE, encoding="utf-8")
    return project


def recorded(project: Path) -> Iterator[dict[str, Any]]:
    path = project / "record.json"
    if path.exists():
        yield json.loads(path.read_text(encoding="utf-8"))


def deploy(project: Path, home: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """`s <args>` in the project folder, with README's required variables and `variables` set."""
    env = {**required_variables(), "STANDIN_RECORD": str(project / "record.json"), **variables}
    return run_s(*args, home=home, cwd=project, variables=env)


def test_every_variable_the_readme_lists_has_a_value_here() -> None:
    listed = readme_variables()
    assert {name for name, required in listed.items() if required} == set(REQUIRED)
    assert {name for name, required in listed.items() if not required} == set(OPTIONAL)


def test_s_preview_renders_what_the_fc3_component_receives(defaults: dict[str, Any]) -> None:
    document = defaults
    assert "${" not in json.dumps(document), "Serverless Devs left an expression unrendered"
    assert document["edition"] == "3.0.0"
    assert document["access"] == "default"  # a literal alias: `access` is not interpolated
    resource = only_resource(document)
    assert resource["component"] == "fc3"
    assert resource["actions"] == {"pre-deploy": [{"run": "make build FC_PYTHON=python3.10", "path": "./"}]}
    props = resource["props"]
    assert props["region"] == "cn-shanghai"
    assert props["functionName"] == "dwnotify"
    assert props["runtime"] == "python3.10"
    assert props["code"] == "./build/code"
    assert props["handler"] == "index.handler"
    assert props["role"] == REQUIRED["DWNOTIFY_ROLE_ARN"]
    assert props["logConfig"] == "auto"
    assert props["triggers"] == [
        {
            "triggerName": "tick",
            "triggerType": "timer",
            "qualifier": "LATEST",
            "triggerConfig": {"cronExpression": "@every 1m", "enable": True, "payload": '{"dry_run": false}'},
        },
        {
            "triggerName": "slack-actions",
            "triggerType": "http",
            "qualifier": "LATEST",
            "triggerConfig": {"authType": "anonymous", "methods": ["POST"], "disableURLInternet": False},
        },
    ]
    assert props["environmentVariables"] == {
        "DWNOTIFY_CONFIG": "notifier.yaml",
        "DWNOTIFY_LOG_LEVEL": "INFO",
        "DWNOTIFY_REGION": "cn-shanghai",
        "TABLESTORE_ENDPOINT": REQUIRED["TABLESTORE_ENDPOINT"],
        "TABLESTORE_INSTANCE": REQUIRED["TABLESTORE_INSTANCE"],
        "TABLESTORE_TABLE": "dwnotify",
        "DINGTALK_OPS_URL": REQUIRED["DINGTALK_OPS_URL"],
        "DINGTALK_OPS_SECRET": "",
        "SLACK_TEAM_URL": REQUIRED["SLACK_TEAM_URL"],
        "SLACK_BOT_TOKEN": "",
        "SLACK_SIGNING_SECRET": "",
    }


def test_s_preview_follows_every_optional_variable(home: Path) -> None:
    document = preview(home, {**required_variables(), **OPTIONAL})
    assert document["access"] == "default"
    resource = only_resource(document)
    assert resource["actions"]["pre-deploy"] == [{"run": "make build FC_PYTHON=python3.12", "path": "./"}]
    props = resource["props"]
    assert (props["region"], props["functionName"], props["runtime"]) == (
        "cn-hangzhou",
        "dwnotify-staging",
        "python3.12",
    )
    [trigger] = [t for t in props["triggers"] if t["triggerType"] == "timer"]
    assert trigger["triggerConfig"]["cronExpression"] == "@every 15m"
    env = props["environmentVariables"]
    assert env["DWNOTIFY_REGION"] == "cn-hangzhou"
    assert env["DWNOTIFY_LOG_LEVEL"] == "DEBUG"
    assert env["TABLESTORE_TABLE"] == "dwnotify_staging"
    assert env["DINGTALK_OPS_SECRET"] == OPTIONAL["DINGTALK_OPS_SECRET"]
    assert env["SLACK_SIGNING_SECRET"] == OPTIONAL["SLACK_SIGNING_SECRET"]
    assert all(isinstance(value, str) for value in env.values()), env  # FC takes strings only


def test_an_empty_optional_variable_takes_its_default(home: Path, defaults: dict[str, Any]) -> None:
    empty = {name: "" for name in OPTIONAL}
    assert preview(home, {**required_variables(), **empty}) == defaults


def render_without(home: Path, name: str, empty: bool) -> subprocess.CompletedProcess[str]:
    variables = required_variables()
    del variables[name]
    if empty:
        variables[name] = ""
    return run_s("preview", "-t", str(ROOT / "s.yaml"), home=home, cwd=ROOT, variables=variables)


@pytest.mark.parametrize(
    ("name", "empty"), [*((name, False) for name in sorted(REQUIRED)), ("SLACK_TEAM_URL", True)]
)
def test_a_required_variable_unset_or_empty_stops_s_naming_it(home: Path, name: str, empty: bool) -> None:
    result = render_without(home, name, empty)
    assert result.returncode != 0, output(result)
    assert f"env('{name}') not found" in output(result)


def test_s_deploy_builds_then_hands_the_component_the_default_alias_and_the_props(
    project: Path, home: Path, defaults: dict[str, Any]
) -> None:
    result = deploy(project, home, "deploy", "-y")  # README: `s deploy -y`
    assert result.returncode == 0, output(result)
    [record] = recorded(project)
    assert record["command"] == "deploy"
    assert record["resource"]["access"] == "default"
    assert record["credential"] == ALIASES["default"]
    assert record["props"] == only_resource(defaults)["props"]
    assert "-y" in record["args"]
    # The pre-deploy action ran `make build FC_PYTHON=<runtime>` in the project folder, before deploy.
    assert record["makeLog"] == "make build FC_PYTHON=python3.10\n"
    assert record["codeBuilt"] is True


def test_s_deploy_a_alias_deploys_with_that_key(project: Path, home: Path) -> None:
    result = deploy(project, home, "deploy", "-y", "-a", "ci", DWNOTIFY_RUNTIME="python3.12")
    assert result.returncode == 0, output(result)
    [record] = recorded(project)
    assert record["resource"]["access"] == "ci"
    assert record["credential"] == ALIASES["ci"]
    assert record["props"]["runtime"] == "python3.12"
    assert record["makeLog"] == "make build FC_PYTHON=python3.12\n"


def test_s_plan_hands_the_component_the_same_and_builds_nothing(
    project: Path, home: Path, defaults: dict[str, Any]
) -> None:
    result = deploy(project, home, "plan", "-a", "ci")
    assert result.returncode == 0, output(result)
    [record] = recorded(project)
    assert record["command"] == "plan"
    assert record["resource"]["access"] == "ci"
    assert record["credential"] == ALIASES["ci"]
    assert record["props"] == only_resource(defaults)["props"]
    assert record["makeLog"] is None  # pre-deploy is for deploy only


def test_s_deploy_names_an_alias_that_is_not_configured(project: Path, tmp_path: Path, s_cli: Path) -> None:
    bare = tmp_path / "bare-home"
    bare.mkdir()
    result = deploy(project, bare, "deploy", "-y")
    assert result.returncode != 0
    assert "Not found access: default" in output(result)
    assert list(recorded(project)) == []


def test_serverless_devs_does_not_interpolate_access(project: Path, home: Path) -> None:
    """Why s.yaml names a literal alias: the `${env(...)}` form reached the component as it was written."""
    path = project / "s.yaml"
    text = path.read_text(encoding="utf-8")
    assert re.search(r"^access: ", text, re.MULTILINE), "s.yaml names no access alias"
    path.write_text(
        re.sub(r"^access: .*$", lambda _: OLD_ACCESS_LINE, text, flags=re.MULTILINE), encoding="utf-8"
    )
    for variables in ({}, {"DWNOTIFY_ACCESS": "ci"}):
        result = deploy(project, home, "deploy", "-y", **variables)
        assert result.returncode != 0, output(result)
        assert "Not found access: ${env('DWNOTIFY_ACCESS', 'default')}" in output(result)
        assert list(recorded(project)) == []


def test_s_deploy_with_a_required_variable_unset_builds_and_deploys_nothing(
    project: Path, home: Path
) -> None:
    variables = required_variables()
    del variables["SLACK_TEAM_URL"]
    env = {**variables, "STANDIN_RECORD": str(project / "record.json")}
    result = run_s("deploy", "-y", home=home, cwd=project, variables=env)
    assert result.returncode != 0
    assert "env('SLACK_TEAM_URL') not found" in output(result)
    assert list(recorded(project)) == []
    assert not (project / "make.log").exists()


def test_keys_in_the_environment_take_the_place_of_any_alias(project: Path, home: Path) -> None:
    """README: with AccountID, AccessKeyID and AccessKeySecret all set, `s` deploys with those."""
    keys = {"AccessKeyID": "env-ak", "AccessKeySecret": "env-secret", "AccountID": "1111222233334444"}
    result = deploy(project, home, "deploy", "-y", "-a", "ci", **keys)
    assert result.returncode == 0, output(result)
    [record] = recorded(project)
    assert record["credential"] == keys
    assert record["resource"]["access"] == "ci"  # what the component is told; not the key it gets
