"""`dwnotify demo`: a scripted morning of deployments, end to end on loopback emulators.

The only module of the package that imports `emulators`: it starts them, writes a config that points
at them, runs real ticks one scripted minute apart and prints each chat message as it arrives.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from . import config
from .app import build_app
from .credentials import Credentials, Secret

SCENARIO = Path(__file__).resolve().parents[2] / "emulators" / "scenarios" / "morning.yaml"
TICK_S = 60.0
DING_TOKEN = "demo-ops"  # noqa: S105 - the emulator's robot, not a credential
DING_SECRET = "SECdemo0000000000000000000000000000000000000000"  # noqa: S105
SLACK_HOOK = "T000/B000/demo"
SLACK_BOT_TOKEN = "xoxb-test-token"  # noqa: S105 - the emulator's bot, not a credential
SLACK_CHANNEL = "C0123456"  # the emulator's #deploys
# The scenario's creators as the `people` map would name them: failures mention them in the threads.
PEOPLE = {
    "137946317766XXXX": {
        "name": "李雷 Li Lei",
        "slack_user_id": "U0LILEI01",
        "dingtalk_mobile": "13800000001",
    },
    "204517703358XXXX": {
        "name": "韩梅梅 Han Meimei",
        "slack_user_id": "U0HANMM02",
        "dingtalk_user_id": "hanmeimei",
    },
}
BEIJING = timezone(timedelta(hours=8))


class _DemoClock:
    """Scenario time: moves a minute per tick, and whenever the code under test sleeps."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


def _config(workdir: Path, dataworks_url: str, ding_url: str, slack_url: str, state: dict[str, Any]) -> Path:
    data = {
        "dataworks": {
            "region": "cn-shanghai",
            "endpoint": dataworks_url.removeprefix("http://"),
            "protocol": "http",
            "projects": [
                {"id": 10000, "name": "金融数仓 Finance DW"},
                {"id": 10001, "name": "Marketing Analytics"},
                {"id": 10002, "name": "风控 Risk"},
            ],
            "lookback": "1h",
        },
        "state": state,
        "channels": {
            "ops": {
                "type": "dingtalk",
                "url": f"{ding_url}/robot/send?access_token={DING_TOKEN}",
                "secret": DING_SECRET,
            },
            "team": {"type": "slack", "url": f"{slack_url}/services/{SLACK_HOOK}"},
            "deploys": {
                "type": "slack-app",
                "token": SLACK_BOT_TOKEN,
                "channel": SLACK_CHANNEL,
                "api_url": f"{slack_url}/api",
            },
        },
        "people": PEOPLE,
        "rules": [
            {
                "name": "failures",
                "events": ["run.failed", "run.terminated", "run.canceled", "stage.failed"],
                "channels": ["ops"],
                "template": "failure",
                "mention": "creator",
            },
            {"name": "landed", "events": ["run.succeeded"], "channels": ["ops"]},
            {"name": "everything", "events": ["*"], "channels": ["team"]},
            {"name": "living", "events": ["*"], "channels": ["deploys"], "mention": "creator"},
        ],
    }
    path = workdir / "notifier.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _card(service: str, title: str, body: str) -> str:
    lines = [f"  ┌─ {service}: {title}"]
    lines += [f"  │ {line}" if line else "  │" for line in body.splitlines()]
    lines.append("  └" + "─" * 60)
    return "\n".join(lines)


def _show_dingtalk(message: dict[str, Any]) -> str:
    markdown = message.get("markdown", {})
    return _card("DingTalk #ops", str(markdown.get("title", "")), str(markdown.get("text", "")))


def _show_slack(message: dict[str, Any]) -> str:
    return _card("Slack #team", str(message.get("text", "")), _section_texts(message))


def _section_texts(message: dict[str, Any]) -> str:
    texts = [
        block["text"]["text"]
        for block in message.get("blocks") or []
        if block.get("type") == "section" and isinstance(block.get("text"), dict)
    ]
    return "\n".join(texts) or str(message.get("text", ""))


class _LivingView:
    """What changed in the Slack app channel since the last look: messages posted or edited, replies."""

    def __init__(self, slack: Any) -> None:
        self._slack = slack
        self._seen: dict[str, tuple[int, int]] = {}  # ts -> (edits, replies) shown

    def changes(self) -> list[str]:
        cards = []
        for message in self._slack.posted(SLACK_CHANNEL):
            ts = message["ts"]
            edits, replies = self._seen.get(ts, (-1, 0))
            thread = self._slack.replies(SLACK_CHANNEL, ts)
            if len(message["edits"]) != edits:
                what = "posted" if edits < 0 else f"edited ({len(message['edits'])} edits so far)"
                cards.append(_card(f"Slack app #deploys, {what}", "", _section_texts(message)))
            for reply in thread[replies:]:
                cards.append(_card("Slack app #deploys, thread reply", "", _section_texts(reply)))
            self._seen[ts] = (len(message["edits"]), len(thread))
        return cards

    @property
    def edits(self) -> int:
        return sum(edits for edits, _ in self._seen.values())

    @property
    def replies(self) -> int:
        return sum(replies for _, replies in self._seen.values())


@contextmanager
def _state_backend(kind: str, workdir: Path, clock: Callable[[], float]) -> Iterator[dict[str, Any]]:
    if kind == "sqlite":
        yield {"backend": "sqlite", "path": str(workdir / "state.db")}
        return
    from emulators.tablestore import TablestoreEmulator

    emulator = TablestoreEmulator(
        access_key_id="test-ak",
        access_key_secret="test-secret",  # noqa: S106 - what the emulators accept
        instance="dwnotify",
    )
    endpoint = emulator.start()
    try:
        yield {"backend": "tablestore", "endpoint": endpoint, "instance": "dwnotify", "table": "dwnotify"}
    finally:
        emulator.stop()


def run_demo(state_backend: str = "sqlite", max_ticks: int = 0, echo: Callable[[str], None] = print) -> int:
    """Play the scripted morning; print each message as the group would see it, then a summary."""
    from emulators import DataWorksEmulator, DingTalkEmulator, SlackEmulator
    from emulators.scenario import Scenario

    scenario = Scenario.load(SCENARIO, default_start=time.time())
    clock = _DemoClock(scenario.start)
    ticks = max_ticks or int(scenario.duration // TICK_S) + 3
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="dwnotify-demo-") as tmp:
        workdir = Path(tmp)
        dataworks = DataWorksEmulator(scenario, clock=clock)
        dingtalk = DingTalkEmulator({DING_TOKEN: DING_SECRET}, clock=clock)
        slack = SlackEmulator({SLACK_HOOK}, clock=clock)
        dataworks_url, ding_url, slack_url = (emulator.start() for emulator in (dataworks, dingtalk, slack))
        for emulator in (dataworks, dingtalk, slack):
            stack.callback(emulator.stop)
        state = stack.enter_context(_state_backend(state_backend, workdir, clock))
        settings = config.load(_config(workdir, dataworks_url, ding_url, slack_url, state), {})
        app = build_app(
            settings, Credentials("test-ak", Secret("test-secret")), clock=clock, sleep=clock.sleep
        )
        stack.callback(app.close)
        echo(
            f"dwnotify demo: {len(settings.dataworks.projects)} workspaces on {dataworks_url}, "
            f"state in {state_backend}"
        )
        totals = {"events": 0, "sent": 0, "api_calls": 0}
        shown_ding = shown_slack = 0
        living = _LivingView(slack)
        for _ in range(ticks):
            clock.now += TICK_S
            summary = app.notifier.tick()
            totals["events"] += summary.events
            totals["sent"] += summary.messages_sent
            totals["api_calls"] += summary.api_calls
            at = datetime.fromtimestamp(clock.now, tz=BEIJING).strftime("%H:%M")
            echo(
                f"\n[{at}] tick: {summary.runs_checked} runs checked, {summary.events} events, "
                f"{summary.messages_sent} sent, {summary.messages_pending} pending, "
                f"{summary.api_calls} API calls"
            )
            for message in dingtalk.messages(DING_TOKEN)[shown_ding:]:
                echo(_show_dingtalk(message))
            for message in slack.messages(SLACK_HOOK)[shown_slack:]:
                echo(_show_slack(message))
            for card in living.changes():
                echo(card)
            shown_ding = len(dingtalk.messages(DING_TOKEN))
            shown_slack = len(slack.messages(SLACK_HOOK))
        echo(
            f"\nsummary: {ticks} ticks, {totals['events']} events, {totals['sent']} messages delivered "
            f"({shown_ding} DingTalk, {shown_slack} Slack webhook, {len(slack.posted(SLACK_CHANNEL))} "
            f"living Slack app messages edited {living.edits} times with {living.replies} thread replies), "
            f"{totals['api_calls']} DataWorks API calls ({totals['api_calls'] / ticks:.2f} per tick)"
        )
    return 0
