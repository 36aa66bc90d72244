"""The command line as users run it: a real process, exit codes, one JSON line, no tracebacks or secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import DING_SECRET, DING_TOKEN, SLACK_HOOK, World
from tests.helpers import cli_env, doc_example, dwnotify

ROOT = Path(__file__).resolve().parents[1]


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
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps(doc_example()), encoding="utf-8")
    result = dwnotify("render", str(run_file), "--type", "dingtalk", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Run: a7ef0634-20ec-4a7c-a214-54020f91XXXX\n- " in result.stdout  # trimmed, no newline inside
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


# -- check renders what each rule really sends ----------------------------------------------------


def config_with_template(tmp_path: Path, events: list[str], source: str) -> Path:
    folder = tmp_path / "my-templates" / "dingtalk"
    folder.mkdir(parents=True)
    (folder / "mine.md.j2").write_text(source, encoding="utf-8")
    data = valid_config()
    data["templates"] = "./my-templates"
    data["rules"] = [{"name": "mine", "events": events, "channels": ["ops"], "template": "mine"}]
    return write(tmp_path, data)


STAGE_NAME = "# {{ events[0].stage.name }} failed"
DURATION = "# took {{ run.duration.total_seconds() }} s"
NOT_ALONE = "# {{ events[0].type }}{% if events | length > 1 %} {{ nothing }}{% endif %}"


@pytest.mark.parametrize(
    ("events", "source", "rendering"),
    [
        (["stage.failed"], STAGE_NAME, None),
        (["run.failed"], STAGE_NAME, "(rendering run.failed)"),
        (["stage.failed", "run.failed"], STAGE_NAME, "(rendering run.failed)"),
        (["run.*"], STAGE_NAME, "(rendering each of run.started, run.succeeded, run.failed,"),
        (["run.succeeded"], DURATION, None),
        (["run.started", "run.succeeded"], DURATION, "(rendering run.started)"),
        (["stage.*"], DURATION, "(rendering each of stage.started, stage.succeeded,"),
        (["run.failed"], NOT_ALONE, None),
        (["stage.failed", "run.failed"], NOT_ALONE, "(rendering stage.failed, run.failed in one message)"),
    ],
)
def test_check_renders_the_events_each_rule_matches(
    tmp_path: Path, events: list[str], source: str, rendering: str | None
) -> None:
    result = dwnotify("--config", str(config_with_template(tmp_path, events, source)), "check", env=TOKEN_ENV)
    if rendering is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 2, result.stdout
    [line] = result.stderr.splitlines()  # one line per distinct failure, whatever the number of events
    assert line.startswith("config error: rules[0].template: ")
    assert "mine.md.j2, line 1: " in line and rendering in line
    assert "Traceback" not in result.stderr


TOKEN_ENV = {"TOKEN": SECRET_TOKEN}


# -- render: the config, clear errors, nothing to show ----------------------------------------------


def pipeline(status: str, stage: str, project: int = 10001) -> dict:  # type: ignore[type-arg]
    stages = [{"Code": "A", "Step": 1, "Name": "部署", "Status": stage}]
    return {"Pipeline": {"Id": "r-1", "ProjectId": project, "Status": status, "Stages": stages}}


def render_setup(tmp_path: Path) -> Path:
    """A run file, and a config whose templates folder and workspace name differ from the defaults."""
    (tmp_path / "run.json").write_text(json.dumps(pipeline("Fail", "Fail")), encoding="utf-8")
    folder = tmp_path / "my-templates" / "dingtalk"
    folder.mkdir(parents=True)
    (folder / "default.md.j2").write_text(
        "### Mine {{ project.label }} {{ run.console_url }}\n", encoding="utf-8"
    )
    data = valid_config()
    data["dataworks"]["projects"] = [{"id": 10001, "name": "Finance DW"}]
    data["dataworks"]["console_url"] = "https://console.example/{project_id}/{run_id}"
    data["templates"] = "./my-templates"
    return write(tmp_path, data)


@pytest.mark.parametrize("how", ["--config", "DWNOTIFY_CONFIG", "./notifier.yaml"])
def test_render_with_a_type_uses_the_config_when_there_is_one(tmp_path: Path, how: str) -> None:
    path = render_setup(tmp_path)
    options = ["--config", str(path)] if how == "--config" else []
    env = {**TOKEN_ENV, "DWNOTIFY_CONFIG": str(path)} if how == "DWNOTIFY_CONFIG" else TOKEN_ENV
    cwd = tmp_path if how == "./notifier.yaml" else ROOT
    result = dwnotify(*options, "render", str(tmp_path / "run.json"), "--type", "dingtalk", env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "### Mine Finance DW https://console.example/10001/r-1" in result.stdout


def test_render_with_a_type_and_no_config_uses_the_builtin_templates(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps(pipeline("Fail", "Fail")), encoding="utf-8")
    result = dwnotify("render", "run.json", "--type", "dingtalk", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "10001" in result.stdout and "Mine" not in result.stdout


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            ["--type", "dingtalk", "--template", "nope"],
            "config error: template: template dingtalk/nope.md.j2",
        ),
        (["--template", "nope"], "config error: template: template dingtalk/nope.md.j2 not found"),
        (["--type", "dingtalk", "--template", "broken"], "config error: template: "),
        (["--channel", "nosuch"], "config error: --channel: no channel 'nosuch' in the config"),
    ],
)
def test_render_problems_are_config_errors(tmp_path: Path, extra: list[str], problem: str) -> None:
    path = render_setup(tmp_path)
    broken = tmp_path / "my-templates" / "dingtalk" / "broken.md.j2"
    broken.write_text("### {{ run.nothing_here }}\n", encoding="utf-8")
    result = dwnotify("--config", str(path), "render", str(tmp_path / "run.json"), *extra, env=TOKEN_ENV)
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(problem), line
    assert result.stdout == "" and "Traceback" not in result.stderr
    if "broken" in extra:
        assert "broken.md.j2, line 1" in line and "(rendering stage.failed, run.failed)" in line


@pytest.mark.parametrize("previous", [True, False])
def test_render_says_so_when_the_run_has_no_events(tmp_path: Path, previous: bool) -> None:
    state = ("Fail", "Fail") if previous else ("Init", "Init")
    (tmp_path / "run.json").write_text(json.dumps(pipeline(*state)), encoding="utf-8")
    extra = ["--previous", "run.json"] if previous else []
    result = dwnotify("render", "run.json", *extra, "--type", "slack", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert line.startswith("no events: ") and line.endswith("nothing to send")
    assert ("--previous" in line) == previous


def test_render_says_so_when_no_rule_sends_the_events_to_the_channel(tmp_path: Path) -> None:
    path = render_setup(tmp_path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["rules"][0]["events"] = ["run.succeeded"]
    write(tmp_path, data)
    result = dwnotify(
        "--config", str(path), "render", "run.json", "--channel", "ops", env=TOKEN_ENV, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no messages: no rule sends this run's events (stage.failed, run.failed)")


# -- secrets on the output paths ------------------------------------------------------------------


def test_tick_errors_never_print_a_secret(world: World) -> None:
    hook = f"{world.dingtalk.base_url}/robot/send?access_token={DING_TOKEN}"
    echo = f"denied: {hook} signed with {DING_SECRET}"  # an API that echoes what it was given
    world.dataworks.inject(None, "Forbidden.Access", 403, times=50, message=echo)
    result = dwnotify("--config", str(world.write_config()), "tick", env=cli_env(world))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["errors"] and all("denied: *** signed with ***" in error for error in summary["errors"])
    for secret in (DING_TOKEN, DING_SECRET):
        assert secret not in result.stdout + result.stderr


def test_status_never_prints_a_secret(world: World) -> None:
    from dwnotify.state.base import FAILED, PENDING, TICK_LEASE, OutboxMessage

    store = world.build().store
    lease = store.acquire_lease(TICK_LEASE, "test", 60, world.clock())
    assert lease is not None
    ding = f"{world.dingtalk.base_url}/robot/send?access_token={DING_TOKEN}"
    slack = f"{world.slack.base_url}/services/{SLACK_HOOK}"
    messages = [
        OutboxMessage(
            f"m{seq}",
            "ops",
            "10000/r1",
            "failures",
            seq,
            "发布失败",
            "text",
            world.clock(),
            status=status,
            attempts=1,
            last_error=f"HTTP 400 for {ding} ({slack}, {DING_SECRET})",
        )
        for seq, status in enumerate((PENDING, FAILED))
    ]
    store.commit(lease, [], [], messages, world.clock())
    store.close()
    result = dwnotify("--config", str(world.write_config()), "status", env=cli_env(world))
    assert result.returncode == 0, result.stderr
    assert "messages pending: 1" in result.stdout and "messages failed: 1" in result.stdout
    assert result.stdout.count("HTTP 400 for *** (***, ***)") == 2
    for secret in (DING_TOKEN, DING_SECRET, SLACK_HOOK):
        assert secret not in result.stdout + result.stderr


def test_a_bare_webhook_token_is_masked_too() -> None:
    from dwnotify import logs
    from dwnotify.app import register_secrets_of
    from dwnotify.config import parse

    data = valid_config()
    data["channels"]["team"] = {
        "type": "slack",
        "url": "https://hooks.slack.com/services/T0/B0/abcdefghijklmnopqrstuvwx",
    }
    data["channels"]["own"] = {"type": "webhook", "url": "https://hooks.example.com/dataworks-notify"}
    data["rules"][0]["channels"] += ["team", "own"]
    settings = parse(data, ROOT, {"TOKEN": SECRET_TOKEN})
    register_secrets_of(settings, None)
    assert (
        logs.mask(f"refused token {SECRET_TOKEN} on hook abcdefghijklmnopqrstuvwx")
        == "refused token *** on hook ***"
    )
    # A path of plain words is masked whole, never by its pieces: ordinary log text stays readable.
    assert logs.mask("dataworks: workspace 10000 skipped; /dataworks-notify said 500") == (
        "dataworks: workspace 10000 skipped; /*** said 500"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "f.yaml", "--log-level", "DEBUG", "check"],
        ["check", "--config", "f.yaml", "--log-level", "DEBUG"],
        ["--config", "f.yaml", "check", "--log-level", "DEBUG"],
        ["--log-level", "DEBUG", "check", "--config", "f.yaml"],
    ],
)
def test_global_options_are_accepted_before_and_after_the_command(argv: list[str]) -> None:
    from dwnotify.cli import _parser

    args = _parser().parse_args(argv)
    assert (args.command, args.config, args.log_level) == ("check", "f.yaml", "DEBUG")


def test_an_option_after_the_command_wins_over_one_before_it() -> None:
    from dwnotify.cli import _parser

    args = _parser().parse_args(["--config", "a.yaml", "tick", "--dry-run", "--config", "b.yaml"])
    assert (args.config, args.dry_run, args.log_level) == ("b.yaml", True, None)


def test_options_after_the_command_reach_it_in_a_real_process(tmp_path: Path) -> None:
    path = write(tmp_path, valid_config())
    result = dwnotify("check", "--config", str(path), "--log-level", "DEBUG", env={"TOKEN": SECRET_TOKEN})
    assert result.returncode == 0, result.stderr
    result = dwnotify("tick", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert "missing.yaml" in result.stderr and "unrecognized" not in result.stderr


def test_version() -> None:
    from dwnotify import __version__

    result = dwnotify("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"dwnotify {__version__}"


def _fragments(secret: str, size: int = 8) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def test_echoed_tokens_cut_short_are_neither_stored_nor_printed(world: World) -> None:
    """A service echoes the token, the channel cuts its answer at 200 characters: no piece survives."""
    world.dataworks.add_run(
        10000, status="Fail", stages=[{"code": "A", "step": 1}], stage_statuses={"A": "Fail"}
    )
    cut_inside_the_token = "x" * 190 + f"token {DING_TOKEN} is not allowed"
    world.dingtalk.inject(body={"errcode": 310000, "errmsg": cut_inside_the_token}, times=5)
    world.slack.inject(status=403, body=f"invalid_token for /services/{SLACK_HOOK}", times=5)
    summary = world.tick()
    assert summary.messages_failed == 2
    store = world.build().store
    stored = repr(store.report()).encode()
    store.close()
    result = dwnotify("--config", str(world.write_config()), "status", env=cli_env(world))
    assert result.returncode == 0 and "messages failed: 2" in result.stdout, result.stdout
    for secret in (DING_TOKEN, SLACK_HOOK.rsplit("/", 1)[1]):
        for fragment in _fragments(secret):
            assert fragment.encode() not in stored, fragment
            assert fragment not in result.stdout + result.stderr, fragment


def test_a_url_password_is_a_secret_too() -> None:
    from dwnotify import logs

    assert logs.mask("POST https://bot:hunter2-pass@chat.example.com/hook failed") == (
        "POST https://***@chat.example.com/hook failed"
    )


def test_render_for_a_slack_app_shows_the_living_message_and_its_thread_reply(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps(pipeline("Fail", "Fail")), encoding="utf-8")
    result = dwnotify("render", "run.json", "--type", "slack-app", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--- slack-app (slack-app, rule render) ---\n" in result.stdout
    assert "--- slack-app (slack-app, rule render), thread reply ---\n" in result.stdout
    assert "发布失败 · Deployment failed" in result.stdout
