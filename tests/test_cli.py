"""The command line as users run it: a real process, exit codes, one JSON line, no tracebacks or secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import DING_SECRET, DING_TOKEN, SLACK_HOOK, World

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT.parent / "shared" / "spec" / "GetPipelineRun-api-doc.txt"


def dwnotify(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ALIYUN_", "ALIBABA_CLOUD_", "DWNOTIFY_"))
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "dwnotify", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=120,
        check=False,
    )


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "notifier.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def valid_config() -> dict:  # type: ignore[type-arg]
    return {
        "dataworks": {"region": "cn-shanghai", "projects": [10000]},
        "channels": {
            "ops": {"type": "dingtalk", "url": "https://oapi.dingtalk.com/robot/send?access_token=${TOKEN}"},
        },
        "rules": [{"name": "all", "events": ["*"], "channels": ["ops"]}],
    }


SECRET_TOKEN = "tok-d41d8cd98f00b204e980"


@pytest.mark.parametrize(
    ("mutate", "dotted"),
    [
        (lambda c: c["dataworks"].pop("region"), "dataworks.region"),
        (lambda c: c["dataworks"].update(projects=[]), "dataworks.projects"),
        (lambda c: c["dataworks"].update(lookback="soon"), "dataworks.lookback"),
        (lambda c: c["dataworks"].update(protocol="ftp"), "dataworks.protocol"),
        (lambda c: c["rules"][0].update(chanels=["ops"]), "rules[0].chanels"),
        (lambda c: c["rules"][0].update(channels=["nowhere"]), "rules[0].channels"),
        (lambda c: c["rules"][0].update(events=["run.exploded"]), "rules[0].events"),
        (lambda c: c["channels"]["ops"].update(type="pager"), "channels.ops.type"),
        (lambda c: c["channels"]["ops"].update(url="not a url ${TOKEN}"), "channels.ops.url"),
        (lambda c: c["channels"]["ops"].update(url="https://x/?t=${MISSING_TOKEN}"), "channels.ops.url"),
        (lambda c: c.update(state={"backend": "tablestore"}), "state."),
        (lambda c: c["rules"][0].update(template="nonexistent"), "rules[0].template"),
    ],
)
def test_config_errors_exit_2_with_the_dotted_path(tmp_path: Path, mutate, dotted: str) -> None:  # type: ignore[no-untyped-def]
    data = valid_config()
    mutate(data)
    path = write(tmp_path, data)
    for command in ("check", "tick"):
        result = dwnotify("--config", str(path), command, env={"TOKEN": SECRET_TOKEN})
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("config error: ")]
        assert any(line.removeprefix("config error: ").startswith(dotted) for line in lines), result.stderr
        assert "Traceback" not in result.stderr
        assert SECRET_TOKEN not in result.stderr + result.stdout
        assert result.stdout == ""


def test_check_accepts_a_valid_config_and_renders_samples(tmp_path: Path) -> None:
    result = dwnotify("--config", str(write(tmp_path, valid_config())), "check", env={"TOKEN": SECRET_TOKEN})
    assert result.returncode == 0, result.stderr
    assert "1 sample message(s) rendered" in result.stdout


def test_config_path_comes_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, valid_config())
    result = dwnotify("check", env={"TOKEN": SECRET_TOKEN, "DWNOTIFY_CONFIG": str(path)})
    assert result.returncode == 0, result.stderr


def test_tick_prints_one_json_line_and_keeps_secrets_out_of_logs(world: World) -> None:
    world.dataworks.add_run(
        10000,
        status="Fail",
        message="boom",
        stages=[{"code": "A", "step": 1, "name": "构建"}],
        stage_statuses={"A": "Fail"},
    )
    env = {
        **world.environ(),
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "test-ak",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "test-secret",
        "DWNOTIFY_LOG_LEVEL": "DEBUG",
    }
    result = dwnotify("--config", str(world.write_config()), "tick", env=env)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    summary = json.loads(line)
    for key in (
        "runs_checked",
        "events",
        "messages_sent",
        "messages_failed",
        "messages_pending",
        "api_calls",
        "duration_ms",
    ):
        assert isinstance(summary[key], int)
    assert summary["events"] == 2 and summary["messages_sent"] == 2  # stage.failed, run.failed
    for logged in result.stderr.splitlines():
        json.loads(logged)  # every log line is one JSON object
    for secret in (DING_TOKEN, DING_SECRET, SLACK_HOOK, "test-secret"):
        assert secret not in result.stderr + result.stdout

    status = dwnotify("--config", str(world.write_config()), "status", env=env)
    assert status.returncode == 0
    assert "messages pending: 0" in status.stdout and "messages failed: 0" in status.stdout


def test_tick_without_credentials_is_a_clear_error(tmp_path: Path) -> None:
    result = dwnotify("--config", str(write(tmp_path, valid_config())), "tick", env={"TOKEN": SECRET_TOKEN})
    assert result.returncode == 2
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in result.stderr and "Traceback" not in result.stderr


def test_render_the_doc_example_without_a_config(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("{", text.index("JSON format"))
    body, _ = json.JSONDecoder().raw_decode(text[start:])
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps(body), encoding="utf-8")
    result = dwnotify("render", str(run_file), "--type", "dingtalk", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "a7ef0634-20ec-4a7c-a214-54020f91XXXX`" in result.stdout  # trimmed, no newline inside
    assert "Publish package build" in result.stdout


def test_render_against_a_previous_state(tmp_path: Path) -> None:
    def pipeline(status: str, stage: str) -> dict:  # type: ignore[type-arg]
        stages = [{"Code": "A", "Step": 1, "Name": "部署", "Status": stage}]
        return {"Pipeline": {"Id": "r-1", "ProjectId": 10000, "Status": status, "Stages": stages}}

    (tmp_path / "before.json").write_text(json.dumps(pipeline("Running", "Running")), encoding="utf-8")
    (tmp_path / "after.json").write_text(json.dumps(pipeline("Success", "Success")), encoding="utf-8")
    result = dwnotify("render", "after.json", "--previous", "before.json", "--type", "slack", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "部署" in result.stdout and "Deployment started" not in result.stdout
