"""Deployment files: s.yaml names what FC needs, notifier.yaml deploys, the RAM policy is least privilege."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV_REF = re.compile(r"\$\{env\('([A-Za-z_][A-Za-z0-9_]*)'(?:,\s*'([^']*)')?\)\}")
VARS_REF = re.compile(r"\$\{vars\.([A-Za-z_][A-Za-z0-9_]*)\}")
CONFIG_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
FC_PYTHON_RUNTIMES = {"python3.10", "python3.12"}
SAMPLE_ENV = {
    "TABLESTORE_ENDPOINT": "https://dwnotify.cn-shanghai.ots.aliyuncs.com",
    "TABLESTORE_INSTANCE": "dwnotify",
    "DINGTALK_OPS_URL": "https://oapi.dingtalk.com/robot/send?access_token=0123456789abcdef",
    "SLACK_TEAM_URL": "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
}
# Tablestore SDK method -> the RAM action it needs.
OTS_ACTIONS = {
    "create_table": "CreateTable",
    "describe_table": "DescribeTable",
    "list_table": "ListTable",
    "update_table": "UpdateTable",
    "delete_table": "DeleteTable",
    "get_row": "GetRow",
    "put_row": "PutRow",
    "update_row": "UpdateRow",
    "delete_row": "DeleteRow",
    "batch_get_row": "BatchGetRow",
    "batch_write_row": "BatchWriteRow",
    "get_range": "GetRange",
    "xget_range": "GetRange",
    "start_local_transaction": "StartLocalTransaction",
    "commit_transaction": "CommitTransaction",
    "abort_transaction": "AbortTransaction",
}


def s_yaml() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "s.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def strings(node: Any) -> list[str]:
    """Every string value in a YAML tree (comments are not values)."""
    if isinstance(node, dict):
        return [text for value in node.values() for text in strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in strings(value)]
    return [node] if isinstance(node, str) else []


def resolve(value: Any, variables: dict[str, Any]) -> Any:
    """What Serverless Devs would put there when only the defaults apply."""
    if not isinstance(value, str):
        return value
    value = VARS_REF.sub(lambda m: str(resolve(variables[m.group(1)], variables)), value)
    return ENV_REF.sub(lambda m: m.group(2) if m.group(2) is not None else f"<{m.group(1)}>", value)


def function_props() -> tuple[dict[str, Any], dict[str, Any]]:
    data = s_yaml()
    [resource] = data["resources"].values()
    assert resource["component"] == "fc3"
    variables = data.get("vars", {})
    props = {key: resolve(value, variables) for key, value in resource["props"].items()}
    return resource, props


def deploy_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Deploy\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    assert match is not None, "README.md has no '## Deploy' section"
    return match.group(1)


def test_s_yaml_names_what_fc_requires() -> None:
    data = s_yaml()
    assert data["edition"] == "3.0.0"
    resource, props = function_props()
    assert props["runtime"] in FC_PYTHON_RUNTIMES
    assert props["handler"] == "index.handler"
    assert "def handler(" in (ROOT / "functions" / "index.py").read_text(encoding="utf-8")
    assert props["code"] == "./build/code"
    assert "build/code" in (ROOT / "Makefile").read_text(encoding="utf-8")
    assert props["logConfig"] == "auto"
    assert props["role"] == "<DWNOTIFY_ROLE_ARN>"
    [pre_deploy] = resource["actions"]["pre-deploy"]
    assert resolve(pre_deploy["run"], data["vars"]) == f"make build FC_PYTHON={props['runtime']}"


def test_s_yaml_sizes_fit_fc_limits() -> None:
    _, props = function_props()
    cpu, memory_mb, timeout = float(props["cpu"]), int(props["memorySize"]), int(props["timeout"])
    assert round(cpu / 0.05, 6).is_integer() and cpu >= 0.05
    assert memory_mb % 64 == 0 and memory_mb >= 128
    assert 1 <= (memory_mb / 1024) / cpu <= 4  # FC: vCPU to GB between 1:1 and 1:4
    assert 10 < timeout <= 90  # room for the handler's 10 s margin; under the tick lease (90 s)


def test_the_timer_trigger_fires_every_minute_by_default() -> None:
    _, props = function_props()
    [trigger] = [t for t in props["triggers"] if t["triggerType"] == "timer"]
    assert trigger["triggerType"] == "timer" and trigger["qualifier"] == "LATEST"
    config = trigger["triggerConfig"]
    assert resolve(config["cronExpression"], s_yaml()["vars"]) == "@every 1m"
    assert config["enable"] is True
    assert json.loads(config["payload"]) == {"dry_run": False}


def test_the_http_trigger_takes_slacks_posts_anonymously_on_the_same_function() -> None:
    # The request signature is the authentication (dwnotify.slack_verify); FC's own auth would refuse Slack.
    _, props = function_props()
    assert sorted(t["triggerType"] for t in props["triggers"]) == ["http", "timer"]
    [trigger] = [t for t in props["triggers"] if t["triggerType"] == "http"]
    assert trigger["qualifier"] == "LATEST"
    assert trigger["triggerConfig"]["authType"] == "anonymous"
    assert trigger["triggerConfig"]["methods"] == ["POST"]
    assert props["handler"] == "index.handler"  # the same handler tells the events apart


def test_the_actions_policy_is_separate_and_the_main_policy_cannot_act() -> None:
    acting = {"dataworks:ExecPipelineRunStage", "dataworks:AbolishPipelineRun"}
    actions = policy("ram-policy-actions.json")
    [statement] = actions["Statement"]
    assert statement["Effect"] == "Allow" and set(statement["Action"]) == acting
    assert statement["Resource"] == "*"
    granted = {action for s in policy()["Statement"] for action in s["Action"]}
    assert not granted & acting, "the main policy must not let the notifier act on runs"
    assert not any(action in {"dataworks:*", "*"} for action in granted)


def test_every_env_reference_in_s_yaml_is_documented_in_the_readme() -> None:
    names = {match.group(1) for text in strings(s_yaml()) for match in ENV_REF.finditer(text)}
    section = deploy_section()
    assert names, "s.yaml takes nothing from the environment"
    undocumented = sorted(name for name in names if f"`{name}`" not in section)
    assert undocumented == []


def test_the_readme_marks_required_exactly_what_s_yaml_reads_without_a_default() -> None:
    # `${env('X')}` without a default stops `s` when X is unset or empty; with one, X may be left out.
    defaults: dict[str, set[str | None]] = {}
    for text in strings(s_yaml()):
        for match in ENV_REF.finditer(text):
            defaults.setdefault(match.group(1), set()).add(match.group(2))
    assert all(len(found) == 1 for found in defaults.values()), defaults  # one default per variable
    rows = dict(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \| (yes|no) \|", deploy_section(), re.MULTILINE))
    assert {name for name, required in rows.items() if required == "yes"} == {
        name for name, found in defaults.items() if found == {None}
    }
    assert {name for name, required in rows.items() if required == "no"} == {
        name for name, found in defaults.items() if found != {None}
    }


def test_s_yaml_names_a_literal_access_alias() -> None:
    # Serverless Devs renders no expression in `access`: an ${env(...)} there reaches it as written.
    access = s_yaml()["access"]
    assert isinstance(access, str) and "${" not in access
    assert access == "default"
    section = deploy_section()
    assert "s deploy -y -a " in section
    assert f"-a {access}" in section  # how README says to add that key


def test_the_pre_deploy_build_takes_the_runtime_name() -> None:
    # s.yaml runs `make build FC_PYTHON=python3.x`: the Makefile hands it to the build, which reads it.
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "build", "FC_PYTHON=python3.12"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    assert "scripts/build.py --python python3.12 --out build/code" in dry_run.stdout
    spec = importlib.util.spec_from_file_location("dwnotify_build_script", ROOT / "scripts" / "build.py")
    assert spec is not None and spec.loader is not None
    build_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_script)
    assert {build_script.runtime_version(runtime) for runtime in FC_PYTHON_RUNTIMES} == {"3.10", "3.12"}


def test_no_secret_is_written_into_s_yaml() -> None:
    resource, _ = function_props()
    env = resource["props"]["environmentVariables"]
    literal = {name for name, value in env.items() if "${" not in str(value)}
    assert literal == {"DWNOTIFY_CONFIG"}
    for name in SAMPLE_ENV:
        assert env[name] == f"${{env('{name}')}}"


def test_every_variable_notifier_yaml_reads_is_set_on_the_function() -> None:
    config = yaml.safe_load((ROOT / "notifier.yaml").read_text(encoding="utf-8"))
    referenced = {name for text in strings(config) for name in CONFIG_REF.findall(text)}
    assert {"TABLESTORE_ENDPOINT", "DINGTALK_OPS_URL", "SLACK_TEAM_URL"} <= referenced
    _, props = function_props()
    assert referenced <= set(props["environmentVariables"]), referenced - set(props["environmentVariables"])


def test_dwnotify_check_passes_on_the_deployed_config_with_those_variables() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DWNOTIFY_", "ALIBABA_CLOUD_"))}
    env.update(SAMPLE_ENV)
    check = subprocess.run(
        [sys.executable, "-m", "dwnotify", "--config", str(ROOT / "notifier.yaml"), "check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert "config ok" in check.stdout


def policy(name: str = "ram-policy.json") -> dict[str, Any]:
    data = json.loads((ROOT / "deploy" / name).read_text(encoding="utf-8"))
    assert data["Version"] == "1"
    return data


def granted(service: str) -> dict[str, set[str]]:
    """Action name -> resources, for one service's actions in the policy."""
    actions: dict[str, set[str]] = {}
    for statement in policy()["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in listed:
            assert "*" not in action, f"{action}: grant actions by name"
            prefix, _, name = action.partition(":")
            if prefix == service:
                actions.setdefault(name, set()).add(statement["Resource"])
    return actions


def test_the_policy_grants_exactly_the_dataworks_reads_the_client_calls() -> None:
    source = (ROOT / "functions" / "dwnotify" / "dataworks.py").read_text(encoding="utf-8")
    called = set(re.findall(r'"((?:Get|List)[A-Za-z]+)"', source))
    assert {"ListPipelineRuns", "GetPipelineRun", "ListDeployments", "GetDeployment"} <= called
    assert set(granted("dataworks")) == called
    # DataWorks authorizes these actions per operation, not per resource.
    assert all(resources == {"*"} for resources in granted("dataworks").values())


def test_the_policy_grants_tablestore_row_and_table_actions_on_one_table_only() -> None:
    ots = granted("ots")
    assert {"GetRow", "PutRow", "UpdateRow", "GetRange", "BatchWriteRow", "CreateTable"} <= set(ots)
    assert "DeleteTable" not in ots
    assert set(ots) <= set(OTS_ACTIONS.values())
    table_arn = "acs:ots:<region>:<account-id>:instance/<instance>/table/<table>"
    assert all(resources == {table_arn} for resources in ots.values())
    assert set(granted("ots")) | set(granted("dataworks")) | set(granted("fc")) == {
        action.partition(":")[2] for s in policy()["Statement"] for action in s["Action"]
    }


def test_the_policy_lets_the_function_invoke_itself_only() -> None:
    """Fan-out (`scale`): the coordinator invokes its own function's shards, and nothing else."""
    assert granted("fc") == {"InvokeFunction": {"acs:fc:<region>:<account-id>:functions/<function-name>"}}


def test_the_policy_grants_what_the_tablestore_backend_calls_and_no_more() -> None:
    sources = sorted((ROOT / "functions" / "dwnotify" / "state").glob("tablestore*.py"))
    if not sources:
        pytest.skip("no Tablestore backend yet")
    text = "\n".join(path.read_text(encoding="utf-8") for path in sources)
    methods = "|".join(OTS_ACTIONS)
    needed = {OTS_ACTIONS[name] for name in re.findall(rf"\.({methods})\b", text)}
    assert set(granted("ots")) == needed


def test_the_role_trusts_function_compute() -> None:
    [statement] = policy("ram-trust-policy.json")["Statement"]
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Principal"] == {"Service": ["fc.aliyuncs.com"]}


def test_the_event_files_are_timer_events_or_invoke_payloads() -> None:
    for path in sorted((ROOT / "tests" / "events").glob("*.json")):
        event = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(event, dict), path.name
        if "triggerName" in event:
            assert set(event) == {"triggerTime", "triggerName", "payload"}, path.name
            assert isinstance(event["payload"], str), path.name


def _build_script() -> Any:
    spec = importlib.util.spec_from_file_location("dwnotify_build_script", ROOT / "scripts" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_build_checks_the_packaged_config_with_placeholders_and_refuses_a_broken_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_script = _build_script()
    for name in SAMPLE_ENV:
        monkeypatch.delenv(name, raising=False)  # the shell that runs `s deploy` need not set them
    config = (ROOT / "notifier.yaml").read_text(encoding="utf-8")
    (tmp_path / "notifier.yaml").write_text(config, encoding="utf-8")
    build_script.check_config(tmp_path)  # placeholders stand in for every unset variable
    broken = config.replace("template: failure", "template: no-such-template")
    assert broken != config
    (tmp_path / "notifier.yaml").write_text(broken, encoding="utf-8")
    with pytest.raises(SystemExit, match="no-such-template"):
        build_script.check_config(tmp_path)
