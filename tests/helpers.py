"""Helpers that several test modules share, so that no test module imports another.

Fixtures stay in conftest.py; what is here is plain functions, constants and small classes, grouped by
the seam they serve. A helper used by one module only stays in that module.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from dwnotify.channels import Channel, build_channel
from dwnotify.credentials import Secret
from dwnotify.errors import DeliveryError, StateError
from dwnotify.message import Message
from dwnotify.model import CANCELED, FAIL, RUNNING, SUCCESS, TERMINATED, Event, Run, Stage, run_key
from dwnotify.render import MessageContext
from dwnotify.settings import DEFAULT_CONSOLE_URL, ChannelSettings, ProjectSettings
from emulators.lark import LarkEmulator
from emulators.wecom import WeComEmulator
from tests.conftest import ROOT, World

DATA = Path(__file__).resolve().parent / "data"
T = TypeVar("T")

# --- the DataWorks API page's example -----------------------------------------------------------------


def doc_example() -> dict:  # type: ignore[type-arg]
    """The success response printed in the GetPipelineRun API doc (copied to tests/data: see its README)."""
    body = json.loads((DATA / "GetPipelineRun-doc-example.json").read_text(encoding="utf-8"))
    return body  # type: ignore[no-any-return]


# --- runs on the DataWorks emulator and what the chats received ---------------------------------------

STAGES = [
    {"code": "BUILD", "step": 1, "type": "Build", "name": "发布包构建"},
    {"code": "CHECK", "step": 2, "type": "Check", "name": "发布检查"},
    {"code": "DEPLOY", "step": 3, "type": "Deploy", "name": "发布到生产环境"},
]
# The two stages of the runs `fail_run` and `start_run` add.
TWO_STAGES = [
    {"code": "BUILD", "step": 1, "type": "Build", "name": "发布包构建"},
    {"code": "DEPLOY", "step": 2, "type": "Deploy", "name": "发布到生产环境"},
]
RUN_ID = re.compile(r"\b([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b")  # a run Id


def fail_run(world: World, project: int = 10000, message: str = "节点依赖缺失") -> str:
    return world.dataworks.add_run(
        project,
        status="Fail",
        message="部署失败",
        stages=TWO_STAGES,
        stage_statuses={"BUILD": "Success", "DEPLOY": {"status": "Fail", "message": message}},
    )


def start_run(world: World) -> str:
    return world.dataworks.add_run(
        10000, status="Running", stages=TWO_STAGES, stage_statuses={"BUILD": "Running"}
    )


def slack_text(message: Any) -> str:
    return "\n".join(block["text"]["text"] for block in message["blocks"] if block.get("type") == "section")


def ids_in(texts: list[str]) -> list[str]:
    return [run_id for text in texts for run_id in RUN_ID.findall(text)]


def ding_texts(world: World) -> list[str]:
    return [message["markdown"]["text"] for message in world.ding()]


def delivered(world: World) -> tuple[Counter[str], Counter[str]]:
    ding = Counter(ids_in(ding_texts(world)))
    slack = Counter(ids_in([slack_text(m) for m in world.slack_messages()]))
    return ding, slack


# --- a tick that dies -----------------------------------------------------------------------------------


class Killed(BaseException):
    """The process died here: nothing after this point runs (not even `except Exception`)."""


class StoreSwitch:
    """A fault seam for `build_app(wrap_store=switch.wrap)`: the notifier's store is the real one,
    or, while `armed` is set, a faulty stand-in wrapped around it (`switch.real`)."""

    def __init__(self) -> None:
        self.real: Any = None
        self.armed: Any = None

    def wrap(self, store: Any) -> Any:
        """What `build_app` calls with the real store: the switch stands in for it."""
        self.real = store
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self.armed if self.armed is not None else self.real, name)


class StateInterposer:
    """Forwards every state call to a real store, counting them; `_before(name)` may fault one."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls = 0

    def _before(self, name: str) -> None:
        """Runs before call number `self.calls` (from 1) of method `name` reaches the store."""

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not callable(target) or name == "close":
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            self._before(name)
            return target(*args, **kwargs)

        return call


class CrashingStore(StateInterposer):
    """Forwards to a real store until call number `crash_at`, then dies and stays dead."""

    def __init__(self, inner: Any, crash_at: int) -> None:
        super().__init__(inner)
        self._crash_at = crash_at

    def _before(self, name: str) -> None:
        if self.calls > self._crash_at:
            raise Killed(f"killed at state call {self._crash_at} ({name})")


class FailingStore(StateInterposer):
    """Forwards to a real store, but the call number `fail_at` raises a StateError (as a lock past the
    busy timeout, a full disk or a store outage would); every other call goes through."""

    def __init__(self, inner: Any, fail_at: int) -> None:
        super().__init__(inner)
        self._fail_at = fail_at
        self.failed: str | None = None

    def _before(self, name: str) -> None:
        if self.calls == self._fail_at + 1:
            self.failed = name
            raise StateError(f"database is locked (injected at state call {self._fail_at}, {name})")


# --- the command line in a real process ---------------------------------------------------------------


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


def cli_env(world: World) -> dict[str, str]:
    return {
        **world.environ(),
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "test-ak",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "test-secret",
    }


# --- a run, its events and a message context to render -------------------------------------------------

NOW = datetime(2026, 5, 1, 8, 0, tzinfo=timezone.utc)
PROJECT = ProjectSettings(id=10001, name="Finance DW", region="cn-shanghai", endpoint="dw.example")
CONSOLE = DEFAULT_CONSOLE_URL.format(region="cn-shanghai", project_id=10001)
DOC_RUN_ID = "a7ef0634-20ec-4a7c-a214-54020f91XXXX\n"  # the API doc's example, newline included
CHECK_MESSAGE = "节点 dwd_order 的下游依赖检查未通过"


def stage(
    name: str = "生产发布检查", status: str = FAIL, message: str = CHECK_MESSAGE, step: int = 2
) -> Stage:
    return Stage(f"S{step}", step, "Check", name, "", status, message)


def make_run(status: str = FAIL, stages: tuple[Stage, ...] = (), **fields: object) -> Run:
    values: dict[str, object] = {
        "id": DOC_RUN_ID,
        "project_id": PROJECT.id,
        "status": status,
        "creator": "1379463177661024",
        "description": "订单宽表上线",
        "message": "发布检查未通过",
        "create_time": NOW - timedelta(minutes=3, seconds=12),
        "modify_time": NOW,
        "stages": stages or (stage("发布包构建", SUCCESS, "", 1), stage()),
    }
    values.update(fields)
    return Run(**values)  # type: ignore[arg-type]


def event(type_: str, status: str, previous: str | None = RUNNING, on: Stage | None = None) -> Event:
    return Event(
        type=type_,
        run_key=run_key(PROJECT.id, DOC_RUN_ID.strip()),
        status=status,
        previous=previous,
        stage=on,
    )


def context(
    run: Run, events: tuple[Event, ...], channel_type: str = "dingtalk", project: ProjectSettings = PROJECT
) -> MessageContext:
    return MessageContext(run, events, project, "failures", "ops", channel_type, CONSOLE, NOW)


def write(folder: Path, relative: str, text: str) -> Path:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


_STATUS_OF = {"started": RUNNING, "succeeded": SUCCESS, "failed": FAIL, "terminated": TERMINATED}
_STATUS_OF |= {"canceled": CANCELED, "changed": "Paused", "waiting": "init", "stuck": RUNNING}
HEADLINES = {
    "run.started": "发布开始",
    "run.succeeded": "发布成功",
    "run.failed": "发布失败",
    "run.terminated": "发布已终止",
    "run.canceled": "发布已取消",
    "run.changed": "Paused",
    "stage.started": "发布进行中",
    "stage.succeeded": "发布进行中",
    "stage.failed": "阶段失败",
    "stage.terminated": "阶段已终止",
    "stage.canceled": "阶段已取消",
    "stage.changed": "发布进行中",
    "stage.waiting": "等待人工推进",
    "stage.stuck": "阶段运行过久",
}


def one_event_context(event_type: str, channel_type: str) -> MessageContext:
    subject, _, verb = event_type.partition(".")
    status = _STATUS_OF[verb]
    if subject == "run":
        return context(make_run(status), (event(event_type, status),), channel_type)
    changed = stage(status=status, message=CHECK_MESSAGE if status == FAIL else "")
    run = make_run(RUNNING, (stage("发布包构建", SUCCESS, "", 1), changed), message="")
    happened = event(event_type, status, on=changed)
    if event_type in ("stage.waiting", "stage.stuck"):  # a reminder: its stage's status, and a wait
        happened = replace(
            happened, previous=status, reminder=f"test:{event_type}", waited=timedelta(minutes=45)
        )
    return context(run, (happened,), channel_type)


# --- text that JSON escaping grows ----------------------------------------------------------------------

# Units of text that JSON escaping grows: a quote or a backslash takes two bytes, a control character six.
HOSTILE = {
    "quotes": 'SQL 报错: "id","name","ds" ',
    "backslashes": r"C:\dataworks\nodes\ods_user\run.log ",
    "control characters": "节点\x01\x02\x1b[31m失败\x7f\t",
    "newlines": "未通过\n\n",
    "mixed": 'line "a"\\b\r\n\x00任务 ',
}


def about(unit: str, size: int) -> str:
    """`unit` repeated to about `size` bytes of UTF-8."""
    return unit * (size // len(unit.encode()))


# --- chat channels built by hand and sent to their emulators (Lark, WeCom, the generic webhook) ----------

CHANNEL_NOW = 1_795_680_000.0  # epoch seconds, the emulators' and the channels' clock (NOW is a datetime)
SECRET = "lark-or-hook-secret-7f3a"
LARK_TOKEN = "0d5b2c1e-lark-token-9a7f"
WECOM_KEY = "693a91f6-wecom-key-0ec2"
HOOK = "/hooks/dwnotify-b41c9e"
CONSOLE_LINE = "[打开 DataWorks 控制台 · Open DataWorks](https://dataworks.data.aliyun.com/x)"
MESSAGE = Message(
    "❌ 发布失败 · Deployment failed",
    f"### ❌ 发布失败 · Deployment failed\n\n- 运行 Run: `a7ef`\n\n#### 原因 Reason\n\n{CONSOLE_LINE}",
)
BIG = Message("❌ 发布失败", "### ❌ 发布失败\n" + "节点依赖缺失，请检查。\n" * 3000 + CONSOLE_LINE)


def channel(
    http: httpx.Client, kind: str, url: str, clock: Callable[[], float] = lambda: CHANNEL_NOW, **extra: Any
) -> Channel:
    """A channel "chat" of `kind` from settings built by hand (config bypassed), sending through `http`."""
    secret = extra.pop("secret", None)
    settings = ChannelSettings("chat", kind, Secret(url), Secret(secret) if secret else None, **extra)
    return build_channel(settings, http, 5.0, clock)


def refused(chat: Channel, message: Message = MESSAGE) -> DeliveryError:
    """The DeliveryError `chat` raises sending `message`: it names the channel and shows no secret."""
    with pytest.raises(DeliveryError) as caught:
        chat.send(message)
    error = caught.value
    assert error.channel == "chat"
    for secret in (LARK_TOKEN, WECOM_KEY, HOOK, "signed-bot-token", "127.0.0.1", SECRET):
        assert secret not in str(error) and secret not in repr(error.args)
    return error


def lark_url(lark: LarkEmulator, token: str = LARK_TOKEN) -> str:
    return f"{lark.base_url}/open-apis/bot/v2/hook/{token}"


def wecom_url(wecom: WeComEmulator, key: str = WECOM_KEY) -> str:
    return f"{wecom.base_url}/cgi-bin/webhook/send?key={key}"


# --- a Slack app channel, and ticks started together ------------------------------------------------------

SLACK_APP_CHANNEL = "C0123456"  # the Slack stand-in's #deploys
EVERYTHING_TO_DEPLOYS = [{"name": "everything", "events": ["*"], "channels": ["deploys"]}]


def use_slack_app(world: World, rules: list[dict[str, Any]] | None = None, **options: Any) -> None:
    """Make the World's one channel `deploys`, a Slack app on the Slack stand-in's Web API, and its
    rules `rules` (default: every event to it)."""
    world.config_overrides["channels"] = {
        "deploys": {
            "type": "slack-app",
            "token": "${SLACK_BOT_TOKEN}",
            "channel": SLACK_APP_CHANNEL,
            "api_url": f"{world.slack.base_url}/api",
            **options,
        }
    }
    world.config_overrides["rules"] = rules if rules is not None else EVERYTHING_TO_DEPLOYS


def at_once(calls: Sequence[Callable[[], T]], timeout_s: float = 120.0) -> list[T]:
    """Run each call in a thread of its own, all released together; their results, in order (an
    error in one is raised here, not lost in its thread)."""
    barrier = threading.Barrier(len(calls), timeout=timeout_s)

    def released(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(released, call) for call in calls]
    return [future.result(timeout=timeout_s) for future in futures]
