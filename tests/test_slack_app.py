"""The Slack app channel end to end: whole ticks against the Slack Web API stand-in (judged by Block Kit's
limits and slack_sdk's models), on SQLite and on Tablestore. One message per run, created once and
edited at each change, thread replies for a failure and the end, across restarts, concurrent ticks,
lost answers, deleted messages and rate limits."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import SLACK_BOT_TOKEN, World
from tests.helpers import (
    SLACK_APP_CHANNEL,
    STAGES,
    Killed,
    StateInterposer,
    at_once,
    cli_env,
    dwnotify,
    use_slack_app,
)

CHANNEL = SLACK_APP_CHANNEL


@pytest.fixture
def app_world(world: World) -> World:
    """The World with one Slack app channel that every event goes to."""
    use_slack_app(world)
    return world


def messages(world: World) -> list[dict[str, Any]]:
    return world.slack.posted(CHANNEL)


def text_of(message: dict[str, Any]) -> str:
    blocks = message.get("blocks") or []
    return "\n".join(b["text"]["text"] for b in blocks if b.get("type") == "section") or message["text"]


def start(world: World) -> str:
    return world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
    )


def fail(world: World, run_id: str) -> None:
    world.dataworks.set_run_status(
        run_id,
        status="Fail",
        message="部署失败",
        stages={"BUILD": "Success", "CHECK": {"status": "Fail", "message": "节点 ods_user 依赖缺失"}},
    )


def api(world: World, method: str) -> int:
    return sum(1 for call in world.slack.api_calls if call.method == method and call.result == "ok")


def test_a_run_has_one_message_edited_at_each_change_with_replies_for_failure(app_world: World) -> None:
    world = app_world
    run_id = start(world)
    first = world.tick()
    assert first.messages_sent == 1
    [message] = messages(world)
    assert run_id in text_of(message) and "运行中 Running" in text_of(message)
    assert message["metadata"]["event_payload"] == {"run": f"10000/{run_id}", "channel": "deploys"}

    world.dataworks.set_run_status(run_id, stages={"BUILD": "Success", "CHECK": "Running"})
    world.tick()
    [message] = messages(world)
    assert len(message["edits"]) == 1
    assert "✅ 发布包构建 · 成功 Succeeded" in text_of(message)  # the checklist, stage by stage
    assert "⏳ 发布检查 · 运行中 Running" in text_of(message)
    assert world.slack.replies(CHANNEL, message["ts"]) == []  # progress edits, nobody is pinged

    fail(world, run_id)
    world.tick()
    [message] = messages(world)
    assert len(message["edits"]) == 2
    assert "节点 ods_user 依赖缺失" in text_of(message) and "失败 Failed" in text_of(message)
    [reply] = world.slack.replies(CHANNEL, message["ts"])
    assert "节点 ods_user 依赖缺失" in reply["text"]
    assert api(world, "chat.postMessage") == 2 and api(world, "chat.update") == 2

    quiet = world.tick()
    assert quiet.messages_sent == 0 and len(messages(world)[0]["edits"]) == 2


def test_a_run_that_succeeds_replies_with_its_result(app_world: World) -> None:
    world = app_world
    run_id = start(world)
    world.tick()
    world.dataworks.set_run_status(
        run_id, status="Success", stages={"BUILD": "Success", "CHECK": "Success", "DEPLOY": "Success"}
    )
    world.tick()
    [message] = messages(world)
    assert "成功 Succeeded" in text_of(message)
    [reply] = world.slack.replies(CHANNEL, message["ts"])
    assert "发布成功" in reply["text"]


def test_the_message_survives_a_restart(app_world: World) -> None:
    world = app_world
    run_id = start(world)
    world.tick()
    assert world.app is not None
    world.app.close()
    world.app = None  # a new FC instance: nothing in memory
    fail(world, run_id)
    world.tick()
    [message] = messages(world)
    assert len(message["edits"]) == 1 and len(world.slack.replies(CHANNEL, message["ts"])) == 1


def test_two_ticks_at_once_make_one_message_per_run(app_world: World) -> None:
    world = app_world
    run_ids = [start(world) for _ in range(4)]
    apps = [world.build() for _ in range(2)]
    world.clock.advance(60)
    at_once([app.notifier.tick for app in apps])
    world.app = apps[0]
    world.tick(advance=120)  # whatever a lease kept back goes now
    runs = sorted(m["metadata"]["event_payload"]["run"] for m in messages(world))
    assert runs == sorted(f"10000/{run_id}" for run_id in run_ids)
    apps[1].close()


def test_a_post_whose_answer_was_lost_is_found_not_posted_again(app_world: World) -> None:
    world = app_world
    run_id = start(world)
    world.slack.lose_answer("chat.postMessage")  # it lands in Slack, the answer is an HTTP 500
    first = world.tick()
    assert first.messages_pending == 1 and len(messages(world)) == 1
    world.dataworks.set_run_status(run_id, stages={"BUILD": "Success", "CHECK": "Running"})
    world.tick(advance=180)  # the retry: the history has the message
    [message] = messages(world)
    assert api(world, "conversations.history") == 1
    assert len(message["edits"]) == 1 and "发布检查 · 运行中 Running" in text_of(message)


class _KilledAfterPosting(StateInterposer):
    """The process dies on the write that would record a post's ts (the post has landed)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.living_writes = 0

    def _before(self, name: str) -> None:
        if name == "store_living":
            self.living_writes += 1
            if self.living_writes == 2:  # the first stored the intent; the post went out since
                raise Killed("killed between the post and its record")


def test_a_crash_between_the_post_and_its_record_never_makes_a_second_message(app_world: World) -> None:
    world = app_world
    run_id = start(world)
    dying = world.build(wrap_store=_KilledAfterPosting)
    world.clock.advance(60)
    with pytest.raises(Killed):
        dying.notifier.tick()
    assert len(messages(world)) == 1
    fail(world, run_id)
    world.tick(advance=120)  # a new process, after the channel lease expired
    [message] = messages(world)
    assert message["edits"] and "失败 Failed" in text_of(message)
    assert len(world.slack.replies(CHANNEL, message["ts"])) == 1


def test_a_message_deleted_in_slack_is_posted_anew(app_world: World) -> None:
    world = app_world
    run_id = start(world)
    world.tick()
    [first] = messages(world)
    world.slack.delete_message(CHANNEL, first["ts"])
    fail(world, run_id)
    world.tick()
    old, new = messages(world)
    assert old["deleted"] and not new["deleted"] and "失败 Failed" in text_of(new)
    assert len(world.slack.replies(CHANNEL, new["ts"])) == 1


def test_a_rate_limited_edit_waits_and_later_changes_land_in_order(app_world: World) -> None:
    world = app_world
    run_id = start(world)
    world.tick()
    world.slack.fail_next("chat.update", "ratelimited", status=429, retry_after=30, times=1)
    world.dataworks.set_run_status(run_id, stages={"BUILD": "Success", "CHECK": "Running"})
    held = world.tick()
    assert held.messages_pending == 1
    fail(world, run_id)
    world.tick(advance=60)  # both changes are due: one edit shows the newest, then the failure reply
    [message] = messages(world)
    assert "失败 Failed" in text_of(message)
    assert len(message["edits"]) == 1  # the superseded rendering is never shown after a newer one
    assert len(world.slack.replies(CHANNEL, message["ts"])) == 1


def test_a_refused_token_gives_up_with_the_slack_error_and_shows_no_token(app_world: World) -> None:
    world = app_world
    world.slack.fail_next("chat.postMessage", "invalid_auth")
    start(world)
    summary = world.tick()
    assert summary.messages_failed == 1
    assert world.app is not None
    [failed] = [m for m in world.app.store.report().messages if m.status == "failed"]
    assert "invalid_auth" in failed.last_error and SLACK_BOT_TOKEN not in failed.last_error


def test_check_calls_auth_test_only_when_asked(app_world: World) -> None:
    world = app_world
    config = world.write_config()
    plain = dwnotify("check", "--config", str(config), env=cli_env(world))
    assert plain.returncode == 0, plain.stderr
    assert not world.slack.api_calls
    online = dwnotify("check", "--online", "--config", str(config), env=cli_env(world))
    assert online.returncode == 0, online.stderr
    assert "channels.deploys: auth.test ok" in online.stdout
    assert [call.method for call in world.slack.api_calls] == ["auth.test"]
    bad = dwnotify(
        "check", "--online", "--config", str(config), env={**cli_env(world), "SLACK_BOT_TOKEN": "xoxb-nope"}
    )
    assert bad.returncode == 2
    assert "config error: channels.deploys.token: Slack refused it: auth.test: invalid_auth" in bad.stderr
    assert "xoxb-nope" not in bad.stderr + bad.stdout


def test_a_failure_mentions_its_creator_in_the_thread_and_names_them_in_the_message(app_world: World) -> None:
    world = app_world
    world.config_overrides["people"] = {12345: {"name": "李雷 Li Lei", "slack_user_id": "U0LILEI01"}}
    world.config_overrides["rules"] = [
        {"name": "everything", "events": ["*"], "channels": ["deploys"], "mention": "creator"}
    ]
    run_id = world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}, creator="12345"
    )
    world.tick()
    [message] = messages(world)
    assert "李雷 Li Lei" in text_of(message)
    assert "<@U0LILEI01>" not in text_of(message) + message["text"]  # no ping on progress
    fail(world, run_id)
    world.tick()
    [message] = messages(world)
    assert "<@U0LILEI01>" not in text_of(message) + message["text"]  # the edit notifies no one anyway
    [reply] = world.slack.replies(CHANNEL, message["ts"])
    assert "<@U0LILEI01>" in reply["text"]
    assert any(
        "<@U0LILEI01>" in block["text"]["text"] for block in reply["blocks"]
    )  # shown, not only the fallback


def test_text_from_dataworks_cannot_mention_anyone(app_world: World) -> None:
    world = app_world
    run_id = world.dataworks.add_run(
        10000,
        status="Running",
        stages=STAGES,
        stage_statuses={"BUILD": "Running"},
        creator="<@U0EVIL> <!channel>",
        description="<!here> deploy <https://evil.example|click>",
    )
    world.tick()
    fail(world, run_id)
    world.dataworks.set_run_status(
        run_id,
        stages={"BUILD": "Success", "CHECK": {"status": "Fail", "message": "<!channel> <@U0EVIL> broke"}},
    )
    world.tick()
    [message] = messages(world)
    texts = [text_of(message), *(r["text"] for r in world.slack.replies(CHANNEL, message["ts"]))]
    for text in texts:
        assert "<@U0EVIL>" not in text and "<!channel>" not in text and "<!here>" not in text
        assert "<https://evil.example" not in text
    assert "&lt;@U0EVIL&gt;" in texts[0]


def test_the_living_message_shows_what_the_run_deploys_at_every_edit_read_at_most_twice(
    app_world: World,
) -> None:
    world = app_world
    world.config_overrides["dataworks.items"] = True
    items = [
        {"name": "ods_user", "type": "Node", "version": 3},
        {"name": "dwd_order", "type": "Node", "version": 7},
    ]
    run_id = world.dataworks.add_run(
        10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}, items=items
    )
    world.tick()
    world.dataworks.set_run_status(run_id, stages={"BUILD": "Success", "CHECK": "Running"})
    world.tick()
    [message] = messages(world)
    assert "发布内容 Items* (2)" in text_of(message) and "ods_user · Node v3" in text_of(
        message
    )  # not read again
    assert world.app is not None
    world.app.close()
    world.app = None  # kept in the run's state, so a new instance shows them too
    world.dataworks.set_run_status(
        run_id,
        status="Fail",
        stages={"CHECK": {"status": "Fail", "message": "检查未通过"}},
        items={"dwd_order": {"status": "Fail", "message": "节点 dwd_order 依赖缺失"}},
    )
    world.tick()
    world.dataworks.set_run_status(run_id, stages={"DEPLOY": "Canceled"})
    world.tick()
    [message] = messages(world)
    shown = text_of(message)
    assert shown.index("dwd_order") < shown.index("ods_user") and "节点 dwd_order 依赖缺失" in shown
    assert world.dataworks.call_count("ListPipelineRunItems") == 2


class _CountingStore(StateInterposer):
    """Counts the living-message reads and writes the notifier makes."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.living: dict[str, int] = {"load_living": 0, "store_living": 0}

    def _before(self, name: str) -> None:
        if name in self.living:
            self.living[name] += 1


def test_what_a_living_message_costs_a_new_run_and_an_edit(app_world: World) -> None:
    world = app_world
    counting: list[_CountingStore] = []

    def wrap(store: Any) -> Any:
        counting.append(_CountingStore(store))
        return counting[-1]

    world.app = world.build(wrap_store=wrap)
    run_ids = [start(world) for _ in range(5)]
    world.tick()
    assert counting[0].living == {"load_living": 1, "store_living": 10}  # per new run: "posting", then ts
    assert api(world, "chat.postMessage") == 5
    for run_id in run_ids:
        world.dataworks.set_run_status(run_id, stages={"BUILD": "Success", "CHECK": "Running"})
    counting[0].living = {"load_living": 0, "store_living": 0}
    world.tick()
    assert counting[0].living == {"load_living": 1, "store_living": 0}  # edits write no record
    assert api(world, "chat.update") == 5 and api(world, "chat.postMessage") == 5
    counting[0].living = {"load_living": 0, "store_living": 0}
    world.tick()  # nothing moved: nothing read, nothing called
    assert counting[0].living == {"load_living": 0, "store_living": 0} and api(world, "chat.update") == 5
