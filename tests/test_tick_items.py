"""A run's items in its messages: read once when the run is first announced and once at its first
failure, never per tick nor for silent history, counted in api_calls, and never holding a message back.
"""

from __future__ import annotations

from typing import Any

import pytest

from dwnotify.render import Renderer, builtin_templates_dir
from dwnotify.render.context import RunView, template_context
from tests.conftest import World
from tests.helpers import TWO_STAGES, context, ding_texts, event, make_run, slack_text

ITEMS: list[dict[str, Any]] = [
    {"name": "ods_user", "type": "Node", "version": 3, "owner": "137946317766XXXX"},
    {"name": "dwd_order", "type": "Node", "version": 7},
    {"name": "wf_daily", "type": "WorkflowDefinition", "version": 1},
]


def _items_calls(world: World) -> int:
    return world.dataworks.call_count("ListPipelineRunItems")


def _start(world: World, items: list[dict[str, Any]] = ITEMS) -> str:
    world.config_overrides["dataworks.items"] = True
    return world.dataworks.add_run(
        10000, status="Running", stages=TWO_STAGES, stage_statuses={"BUILD": "Running"}, items=items
    )


def test_a_run_costs_one_items_call_until_it_fails_then_one_more(world: World) -> None:
    run_id = _start(world)
    first = world.tick()
    assert _items_calls(world) == 1
    assert first.api_calls == world.dataworks.call_count()  # the items call is in the summary's count
    announced = slack_text(world.slack_messages()[-1])
    assert "发布内容 Items* (3)" in announced and "ods_user · Node v3 · 137946317766XXXX" in announced

    world.dataworks.set_run_status(run_id, stages={"BUILD": "Success", "DEPLOY": "Running"})
    world.tick()
    world.tick()  # nothing moved
    assert _items_calls(world) == 1
    assert "Items" not in slack_text(world.slack_messages()[-1])  # a progress message has none

    world.dataworks.set_run_status(
        run_id,
        stages={"DEPLOY": {"status": "Fail", "message": "部署失败"}},
        items={"dwd_order": {"status": "Fail", "message": "节点 dwd_order 依赖缺失"}},
    )
    world.tick()
    assert _items_calls(world) == 2
    failure = ding_texts(world)[-1]
    shown = failure[failure.index("发布内容 Items") :]
    assert shown.index("dwd_order") < shown.index("ods_user")  # the failing item first
    assert "节点 dwd_order 依赖缺失" in shown

    world.dataworks.set_run_status(run_id, "Fail", message="部署失败")
    world.tick()  # the run's own failure, a tick later: its items were read at the first failure
    world.tick()
    assert _items_calls(world) == 2


def test_a_run_announced_failed_at_first_sight_costs_one_call(world: World) -> None:
    world.config_overrides["dataworks.items"] = True
    world.dataworks.add_run(
        10000, status="Fail", stages=TWO_STAGES, items=ITEMS, stage_statuses={"BUILD": "Fail"}
    )
    world.tick()
    world.tick()
    assert _items_calls(world) == 1
    assert len(world.ding()) == 1 and "ods_user" in ding_texts(world)[0]


def test_silent_history_costs_no_items_call(world: World) -> None:
    world.config_overrides["dataworks.items"] = True
    world.primed = False  # an empty store: runs that finished before the lookback are history
    world.dataworks.add_run(10000, status="Success", items=ITEMS, created=-7200)
    world.tick()
    assert _items_calls(world) == 0 and world.slack_messages() == []


def test_items_off_costs_no_call(world: World) -> None:
    _start(world)
    world.config_overrides["dataworks.items"] = False
    world.tick()
    assert _items_calls(world) == 0
    assert "Items" not in slack_text(world.slack_messages()[-1])


@pytest.mark.parametrize(("code", "status"), [("Forbidden.Access", 403), ("InternalError", 500)])
def test_a_failing_items_call_leaves_the_message_without_items(world: World, code: str, status: int) -> None:
    _start(world)
    world.dataworks.inject("ListPipelineRunItems", code, status, times=10)
    summary = world.tick()
    assert summary.messages_sent == 1 and "Items" not in slack_text(world.slack_messages()[-1])
    assert any("items not read" in error for error in summary.errors)
    assert summary.api_calls == world.dataworks.call_count()  # retries of the items call included


def test_a_malformed_items_answer_leaves_the_message_without_items(world: World) -> None:
    _start(world)
    world.dataworks.inject_answer("ListPipelineRunItems", {"PagingInfo": "nope"})
    summary = world.tick()
    assert summary.messages_sent == 1
    assert any("items not read" in error for error in summary.errors)


# -- the template context and the built-in templates --------------------------------------------
def _items(count: int, failed: int = 0, name: str = "node") -> tuple[Any, ...]:
    from dwnotify.model import RunItem

    return tuple(
        RunItem(
            f"{name}_{i:02d}", "Node", i, "fail" if i < failed else "success", "坏了" if i < failed else ""
        )
        for i in range(count)
    )


def _render(channel_type: str, template: str, items: tuple[Any, ...], status: str = "fail") -> str:
    from dataclasses import replace

    ctx = replace(context(make_run(status), (event("run.failed", "fail"),), channel_type), items=items)
    message = Renderer(builtin_templates_dir()).render(channel_type, template, ctx)
    return (
        message.text
        if channel_type != "slack"
        else "\n".join(b["text"]["text"] for b in message.blocks or () if b.get("type") == "section")
        or message.text
    )


def test_run_items_is_the_view_field_never_a_dict_method() -> None:
    ctx = context(make_run(), (event("run.failed", "fail"),))
    view = template_context(ctx)["run"]
    assert isinstance(view, RunView) and view.items == ()
    assert not callable(view.items)


@pytest.mark.parametrize("channel_type", ["dingtalk", "slack", "lark", "wecom", "webhook"])
@pytest.mark.parametrize("template", ["default", "failure"])
def test_the_builtin_templates_show_ten_items_and_how_many_more(channel_type: str, template: str) -> None:
    items = _items(12, failed=2)
    text = _render(channel_type, template, items[2:] + items[:2])  # the failed ones listed last
    assert "and 2 more" in text
    assert text.count("node_") == 10
    assert sum("node_" in line for line in text.splitlines()) == 10  # one line each
    assert text.index("node_00") < text.index("node_02") and "坏了" in text  # failing first, with why
    assert "node_11" not in text and "node_10" not in text


@pytest.mark.parametrize("channel_type", ["dingtalk", "slack"])
def test_no_items_no_section(channel_type: str) -> None:
    assert "Items" not in _render(channel_type, "default", ())


HOSTILE = "*x* [点我](http://evil.example/x) <@U0123> <!channel> _y_"


def test_an_item_name_with_markup_stays_inert_on_dingtalk() -> None:
    text = _render("dingtalk", "default", _items(1, failed=1, name=HOSTILE))
    assert "](http://evil" not in text and "[点我]" not in text
    assert "\\*x\\*" in text or "&#42;x&#42;" in text


def test_an_item_name_with_markup_stays_inert_on_slack() -> None:
    text = _render("slack", "default", _items(1, failed=1, name=HOSTILE))
    assert "<@U0123>" not in text and "<!channel>" not in text
    assert "&lt;@U0123&gt;" in text


@pytest.mark.parametrize("channel_type", ["dingtalk", "slack", "lark", "wecom", "webhook"])
def test_checks_sample_message_shows_items_with_the_failed_one_first(channel_type: str) -> None:
    from datetime import datetime, timezone

    from dwnotify.samples import sample_context
    from tests.helpers import PROJECT

    ctx = sample_context("c", channel_type, "all", PROJECT, datetime(2026, 11, 28, tzinfo=timezone.utc))
    text = Renderer(builtin_templates_dir()).render(channel_type, "default", ctx).text
    assert text.index("dwd_trade_order_di") < text.index("ods_trade_order_di") < text.index("wf_trade_daily")
