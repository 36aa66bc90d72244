"""`dwnotify serve` as users run it: a real process on 127.0.0.1 answering the HTTP entry, ticking with
`--every`, and stopping with exit 0 within 10 s of SIGTERM or SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from dwnotify.serve import parse_every
from tests.conftest import ROOT, World, wait_for
from tests.helpers import SLACK_APP_CHANNEL, STAGES, cli_env, dwnotify, use_slack_app
from tests.test_http_entry import click
from tests.test_slack_verify import SECRET, slack_headers


@pytest.fixture
def serve_world(world: World) -> World:
    use_slack_app(world, signing_secret=SECRET)
    world.config_overrides["people"] = {"alice": {"slack_user_id": "U0ALICE01"}}
    world.config_overrides["actions"] = {
        "enabled": True,
        "approvers": ["alice"],
        "response_hosts": ["127.0.0.1"],
    }
    return world


@contextmanager
def serving(world: World, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ALIYUN_", "ALIBABA_CLOUD_", "DWNOTIFY_"))
    }
    env.update(cli_env(world), SLACK_SIGNING_SECRET=SECRET)
    path = world.write_config()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dwnotify", "--config", str(path), "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("serving on http://"), first + (proc.stderr.read() if proc.stderr else "")
        yield proc, first.removeprefix("serving on ")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, float]:
    sent = time.monotonic()
    proc.send_signal(sig)
    code = proc.wait(timeout=15)
    return code, time.monotonic() - sent


def test_serve_binds_loopback_answers_and_stops_on_sigterm(serve_world: World) -> None:
    with serving(serve_world) as (proc, base):
        assert base.startswith("http://127.0.0.1:")
        raw = click()
        with httpx.Client(timeout=5) as client:
            ok = client.post(
                f"{base}/slack/actions", content=raw, headers=slack_headers(raw, int(time.time()))
            )
            bad = client.post(
                f"{base}/slack/actions", content=raw, headers=slack_headers(raw, int(time.time()), "x")
            )
            other = client.post(f"{base}/elsewhere", content=raw)
            wrong_method = client.get(f"{base}/slack/actions")
        assert (ok.status_code, ok.text) == (200, "")
        assert (bad.status_code, other.status_code, wrong_method.status_code) == (401, 404, 405)
        code, took = stop(proc)
        assert code == 0 and took < 10
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert SECRET not in err and "Traceback" not in err
        audit = err.replace('\\"', '"')
        assert '"result": "claimed"' in audit and '"result": "refused"' in audit  # run-1 is unknown
    # Without --every nothing polls: the one call is the click's read of its run.
    assert [call.action for call in serve_world.dataworks.calls] == ["GetPipelineRun"]


def test_serve_every_ticks_and_answers_clicks_in_the_same_process_and_stops_on_sigterm(
    serve_world: World,
) -> None:
    """The tick posts the waiting run's message with its buttons; a click on it, sent by the Slack
    stand-in as Slack sends it, advances the stage in the same process."""
    run_id = serve_world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Success", "CHECK": "Success"}
    )
    with serving(serve_world, "--every", "10s") as (proc, base):
        assert wait_for(lambda: bool(serve_world.slack.posted(SLACK_APP_CHANNEL)), 20), "no tick posted"
        [message] = serve_world.slack.posted(SLACK_APP_CHANNEL)
        [attempt] = serve_world.slack.click(
            f"{base}/slack/actions",
            user_id="U0ALICE01",
            channel_id=SLACK_APP_CHANNEL,
            message_ts=message["ts"],
            action_id="dwnotify:advance",
            signing_secret=SECRET,
            timestamp=int(time.time()),
        )
        assert attempt.status == 200
        assert wait_for(lambda: serve_world.dataworks.call_count("ExecPipelineRunStage") == 1, 20)
        code, took = stop(proc)
        assert code == 0 and took < 10
        assert proc.stdout is not None
        assert '"api_calls"' in proc.stdout.read()  # the tick's summary line
    [call] = [c for c in serve_world.dataworks.calls if c.action == "ExecPipelineRunStage"]
    assert (call.params["Id"], call.params["Code"]) == (run_id, "DEPLOY")


def test_serve_stops_on_sigint_too(serve_world: World) -> None:
    with serving(serve_world) as (proc, _):
        code, took = stop(proc, signal.SIGINT)
        assert code == 0 and took < 10


def test_serve_with_actions_disabled_answers_404(serve_world: World) -> None:
    serve_world.config_overrides["actions"] = {"enabled": False}
    with serving(serve_world) as (proc, base):
        raw = click()
        answer = httpx.post(
            f"{base}/slack/actions", content=raw, headers=slack_headers(raw, int(time.time()))
        )
        assert answer.status_code == 404
        assert stop(proc)[0] == 0


@pytest.mark.parametrize("every", ["5s", "9", "soon", "1x"])
def test_every_below_10s_or_not_a_duration_is_refused(tmp_path: Path, every: str) -> None:
    result = dwnotify("serve", "--every", every, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("dwnotify serve: error: --every: ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10), ("10", 10), ("1m", 60), ("1h30m", 5400), ("2m5s", 125)]
)
def test_parse_every(text: str, seconds: float) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["", "9s", "0", "m", "1d"])
def test_parse_every_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_every(text)
