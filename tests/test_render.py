"""Tests for dwnotify.render: lookup, sandbox, escaping, filters and the built-in templates."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from dwnotify.channels import CHANNEL_TYPES
from dwnotify.errors import TemplateError
from dwnotify.message import Message
from dwnotify.model import (
    EVENT_TYPES,
    FAIL,
    INIT,
    RUNNING,
    SUCCESS,
)
from dwnotify.render import (
    MessageContext,
    Renderer,
    builtin_templates_dir,
    format_datetime,
    format_duration,
    status_emoji,
    status_label,
    truncate_bytes,
)
from dwnotify.samples import rule_samples, sample_context
from dwnotify.settings import ProjectSettings
from dwnotify.text import TRIM_MARKER
from tests.helpers import (
    CHECK_MESSAGE,
    CONSOLE,
    HEADLINES,
    NOW,
    PROJECT,
    context,
    event,
    make_run,
    one_event_context,
    stage,
    write,
)

UNNAMED = ProjectSettings(id=10000, name=None, region="cn-shanghai", endpoint="dw.example")


def render_source(
    tmp_path: Path, channel_type: str, source: str, ext: str, ctx: MessageContext | None = None
) -> Message:
    write(tmp_path, f"{channel_type}/t.{ext}.j2", source)
    run = make_run()
    return Renderer(tmp_path).render(
        channel_type, "t", ctx or context(run, (event("run.failed", FAIL),), channel_type)
    )


# --- every event type x every channel type x every built-in template -------------------------


@pytest.mark.parametrize("template", ["default", "failure"])
@pytest.mark.parametrize("channel_type", ["dingtalk", "slack"])
@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_renders_with_every_builtin_template(
    event_type: str, channel_type: str, template: str
) -> None:
    message = Renderer(None).render(channel_type, template, one_event_context(event_type, channel_type))
    assert HEADLINES[event_type] in message.title
    run_id = "a7ef0634-20ec-4a7c-a214-54020f91XXXX"
    assert (run_id if channel_type == "dingtalk" else f"`{run_id}`") in message.text  # no inline code there
    assert "Finance DW" in message.text
    assert CONSOLE in message.text
    assert message.blocks is None
    if event_type.startswith("stage.") and (template == "default" or event_type in {"stage.failed"}):
        assert "生产发布检查" in message.text
    if event_type in {"stage.failed", "run.failed"}:
        assert CHECK_MESSAGE in message.text
    if channel_type == "dingtalk":
        assert "`" not in message.text
        assert not any(line.startswith("|") for line in message.text.splitlines())
        assert max(len(line) for line in message.text.splitlines() if "](" not in line) < 80


def test_default_dingtalk_message_for_a_failed_run() -> None:
    build, check = stage("发布包构建", SUCCESS, "", 1), stage()
    run = make_run(FAIL, (build, check))
    events = (
        event("stage.succeeded", SUCCESS, INIT, build),
        event("stage.failed", FAIL, RUNNING, check),
        event("run.failed", FAIL),
    )
    message = Renderer(None).render("dingtalk", "default", context(run, events))
    assert message.title == "❌ 发布失败 · Deployment failed"
    assert message.text.startswith("### ❌ 发布失败 · Deployment failed\n")
    assert "- 运行 Run: a7ef0634-20ec-4a7c-a214-54020f91XXXX\n" in message.text
    assert "**Finance DW**" in message.text
    assert "- ❌ 生产发布检查: 失败 Failed" in message.text
    assert "- ✅ 发布包构建: 成功 Succeeded" in message.text
    assert message.text.index("发布包构建") < message.text.index("生产发布检查")
    assert f"> {CHECK_MESSAGE}" in message.text
    assert "> 发布检查未通过" in message.text
    assert "1379463177661024" in message.text and "订单宽表上线" in message.text
    assert "3m 12s" in message.text
    assert f"]({CONSOLE})" in message.text


def test_unnamed_workspace_shows_its_id() -> None:
    ctx = context(make_run(), (event("run.failed", FAIL),), project=UNNAMED)
    assert "**10000**" in Renderer(None).render("dingtalk", "default", ctx).text


def test_sample_context_renders_with_every_builtin_template() -> None:
    renderer = Renderer(None)
    for channel_type in ("dingtalk", "slack"):
        ctx = sample_context("ops", channel_type, "failures", PROJECT, NOW)
        assert ctx.run.id.endswith("\n") and ctx.console_url == CONSOLE
        for name in ("default", "failure"):
            renderer.compile(channel_type, name)
            text = renderer.render(channel_type, name, ctx).text
            assert "生产发布检查" in text and "ads_order_summary_d" in text and "4m 22s" in text


FINAL_VERBS = (".succeeded", ".failed", ".terminated", ".canceled")


@pytest.mark.parametrize("channel_type", sorted(CHANNEL_TYPES))
def test_every_rule_sample_renders_with_every_builtin_template(channel_type: str) -> None:
    renderer = Renderer(None)
    contexts = rule_samples(EVENT_TYPES, "ops", channel_type, "all", PROJECT, NOW)
    assert len(contexts) == 1 + len(EVENT_TYPES)
    assert [event.type for event in contexts[0].events] == [
        "run.started",
        "stage.succeeded",
        "stage.failed",
        *("stage.started", "stage.terminated", "stage.canceled", "stage.changed"),
        *("stage.waiting", "stage.stuck"),
        *("run.succeeded", "run.failed", "run.terminated", "run.canceled", "run.changed"),
    ]  # the contract's order: run.started, stage events by Step, then the run's end
    for ctx in contexts[1:]:
        [alone] = ctx.events
        assert (alone.stage is None) == alone.type.startswith("run.")
        assert ctx.run.final == (alone.type.startswith("run.") and alone.type.endswith(FINAL_VERBS))
    for name in ("default", "failure"):
        for ctx in contexts:
            assert renderer.render(channel_type, name, ctx).title


def test_rule_samples_of_one_event_type_render_it_alone() -> None:
    [ctx] = rule_samples(["run.started"], "ops", "dingtalk", "all", PROJECT, NOW)
    assert [event.type for event in ctx.events] == ["run.started"] and ctx.run.status == RUNNING


# --- lookup, compile errors, render errors ---------------------------------------------------


def test_builtin_templates_dir_is_the_repository_templates_folder() -> None:
    assert builtin_templates_dir() == Path(__file__).resolve().parents[1] / "templates"


def test_user_folder_overrides_a_builtin_template(tmp_path: Path) -> None:
    write(tmp_path, "dingtalk/default.md.j2", "### Custom {{ run.id }}\n")
    renderer = Renderer(tmp_path)
    ctx = context(make_run(), (event("run.failed", FAIL),))
    assert (
        renderer.render("dingtalk", "default", ctx).text == "### Custom a7ef0634-20ec-4a7c-a214-54020f91XXXX"
    )
    assert "Finance DW" in renderer.render("dingtalk", "failure", ctx).text  # still the built-in


BLOCKS = '[{"type": "section", "text": {"type": "mrkdwn", "text": "*b*"}}]'


def test_a_user_mrkdwn_template_beats_a_builtin_blocks_json(tmp_path: Path) -> None:
    user, builtin = tmp_path / "user", tmp_path / "builtin"
    write(user, "slack/default.mrkdwn.j2", "*user mrkdwn*")
    write(builtin, "slack/default.blocks.json.j2", BLOCKS)
    message = Renderer(user, builtin).render("slack", "default", context(make_run(), (), "slack"))
    assert (message.title, message.text, message.blocks) == ("user mrkdwn", "*user mrkdwn*", None)


@pytest.mark.parametrize("folder", ["user", "builtin"])
def test_within_one_folder_blocks_json_wins_over_mrkdwn(tmp_path: Path, folder: str) -> None:
    user, builtin = tmp_path / "user", tmp_path / "builtin"
    write(tmp_path / folder, "slack/default.mrkdwn.j2", "*mrkdwn*")
    write(tmp_path / folder, "slack/default.blocks.json.j2", BLOCKS)
    write(builtin, "slack/other.mrkdwn.j2", "*builtin*")
    message = Renderer(user, builtin).render("slack", "default", context(make_run(), (), "slack"))
    assert message.blocks == ({"type": "section", "text": {"type": "mrkdwn", "text": "*b*"}},)
    assert (message.title, message.text) == ("b", "*b*")


def test_a_user_blocks_json_beats_a_builtin_mrkdwn(tmp_path: Path) -> None:
    user, builtin = tmp_path / "user", tmp_path / "builtin"
    write(user, "slack/default.blocks.json.j2", BLOCKS)
    write(builtin, "slack/default.mrkdwn.j2", "*builtin mrkdwn*")
    message = Renderer(user, builtin).render("slack", "default", context(make_run(), (), "slack"))
    assert message.text == "*b*" and message.blocks is not None


@pytest.mark.parametrize(
    ("channel_type", "name", "expected"),
    [
        ("dingtalk", "nope", "dingtalk/nope.md.j2 not found"),
        ("slack", "nope", "slack/nope.blocks.json.j2 or slack/nope.mrkdwn.j2 not found"),
        ("teams", "default", "no templates for channel type 'teams'"),
    ],
)
def test_missing_template_is_a_template_error(channel_type: str, name: str, expected: str) -> None:
    with pytest.raises(TemplateError, match=expected):
        Renderer(None).compile(channel_type, name)


def test_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "dingtalk/broken.md.j2", "### ok\n\n{% if run.id %}\nno endif\n")
    with pytest.raises(TemplateError) as caught:
        Renderer(tmp_path).compile("dingtalk", "broken")
    assert str(path) in str(caught.value) and "line 4" in str(caught.value)
    assert "Traceback" not in str(caught.value)
    assert caught.value.template == "dingtalk/broken.md.j2"


def test_compile_checks_included_templates(tmp_path: Path) -> None:
    write(tmp_path, "dingtalk/main.md.j2", '### x\n{% include "dingtalk/_missing.md.j2" %}\n')
    with pytest.raises(TemplateError, match=r"dingtalk/_missing\.md\.j2 not found"):
        Renderer(tmp_path).compile("dingtalk", "main")


def test_compiled_templates_are_cached(tmp_path: Path) -> None:
    path = write(tmp_path, "dingtalk/once.md.j2", "### {{ headline }}")
    renderer = Renderer(tmp_path)
    renderer.compile("dingtalk", "once")
    path.unlink()
    assert (
        renderer.render("dingtalk", "once", context(make_run(), ())).title == "发布失败 · Deployment failed"
    )


def test_undefined_variable_is_a_template_error_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as caught:
        render_source(tmp_path, "dingtalk", "### title\n{{ run.no_such_field }}\n", "md")
    assert "t.md.j2, line 2" in str(caught.value) and "no_such_field" in str(caught.value)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ run.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ lipsum.__globals__ }}",
        "{{ range(10**9) | list }}",
        "{{ env }}",
    ],
)
def test_sandbox_refuses_unsafe_access(tmp_path: Path, source: str) -> None:
    with pytest.raises(TemplateError):
        render_source(tmp_path, "dingtalk", "### x\n" + source, "md")


def test_empty_output_is_a_template_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="empty message"):
        render_source(tmp_path, "dingtalk", "{% if false %}x{% endif %}\n", "md")


# --- escaping --------------------------------------------------------------------------------


def test_slack_escapes_values_but_keeps_template_links() -> None:
    odd = stage(name="a<b>&c", message="x < y && z > w")
    ctx = context(make_run(FAIL, (odd,)), (event("stage.failed", FAIL, on=odd),), "slack")
    text = Renderer(None).render("slack", "default", ctx).text
    assert "a&lt;b&gt;&amp;c" in text and "a<b>" not in text
    assert "> x &lt; y &amp;&amp; z &gt; w" in text
    assert f"<{CONSOLE}|" in text


@pytest.mark.parametrize(
    ("channel_type", "value", "expected"),
    [
        ("dingtalk", "<b>&</b>", "&lt;b&gt;&&lt;/b&gt;"),
        ("dingtalk", "[x](http://evil)", "\\[x\\]\\(http://evil)"),
        ("dingtalk", "**b** ods_user_daily _i_", "\\*\\*b\\*\\* ods_user_daily \\_i\\_"),
        ("dingtalk", "# h\n- item\n1. x\n---", "\\# h\n\\- item\n1\\. x\n\\---"),
        ("dingtalk", "`code` | ~~s~~ C:\\x", "\\`code\\` \\| \\~\\~s\\~\\~ C:\\\\x"),
        ("dingtalk", "    indented", "\u00a0\u00a0\u00a0\u00a0indented"),
        ("webhook", "[x](http://evil) <b>", "\\[x\\]\\(http://evil) &lt;b&gt;"),
        ("lark", "<at id=all></at> build", "&#60;at id=all&#62;&#60;/at&#62; build"),
        ("lark", "[x](http://evil) **b**", "&#91;x&#93;(http://evil) &#42;&#42;b&#42;&#42;"),
        ("lark", "_i_ ods_user & &lt;", "&#95;i&#95; ods_user & &#38;lt;"),
        ("lark", "# h\n- item", "&#35; h\n&#45; item"),
        ("wecom", "<@U0123ABCD>", "<\u200b@U0123ABCD>"),
        ("wecom", '<font color="info">x</font>', '<\u200bfont color="info">x<\u200b/font>'),
        ("wecom", "[x](http://evil) **b**", "[x]\u200b(http://evil) *\u200b*b*\u200b*"),
        ("wecom", "# h\n> q", "\u200b# h\n\u200b> q"),
        ("slack", "<!channel> <@U0123> &", "&lt;!channel&gt; &lt;@U0123&gt; &amp;"),
        ("slack", "<http://evil|x>", "&lt;http://evil|x&gt;"),
    ],
)  # fmt: skip
def test_each_channel_type_escapes_values_its_own_way(
    tmp_path: Path, channel_type: str, value: str, expected: str
) -> None:
    ext = "mrkdwn" if channel_type == "slack" else "md"
    ctx = value_context(value, channel_type)
    message = render_source(tmp_path, channel_type, "*t*\n{{ run.description }}{{ none }}", ext, ctx)
    assert message.text.split("\n", 1)[1] == expected


def value_context(value: str, channel_type: str) -> MessageContext:
    return context(make_run(description=value), (event("run.failed", FAIL),), channel_type)


def test_template_markup_is_left_alone_and_the_console_link_is_a_link_target(tmp_path: Path) -> None:
    source = "### **{{ headline }}** [open]({{ run.console_url }}) {{ run.console_url | link('R&D [ops]') }}"
    odd = replace(PROJECT, id=10001)
    ctx = MessageContext(make_run(), (), odd, "r", "ops", "dingtalk", "https://x/a b(c)?q=[1]", NOW)
    text = render_source(tmp_path, "dingtalk", source, "md", ctx).text
    assert text == (
        "### **发布失败 · Deployment failed** [open](https://x/a%20b%28c%29?q=%5B1%5D) "
        "[R&D \\[ops\\]](https://x/a%20b%28c%29?q=%5B1%5D)"
    )


def test_slack_filters_escape_what_they_wrap(tmp_path: Path) -> None:
    source = "*t*\n{{ 'a>b' | quote }}\n{{ 'https://x/?a=1&b=2' | link('R&D | ops') }}\n"
    source += "{{ {'k': '<v>'} | tojson }}"
    text = render_source(tmp_path, "slack", source, "mrkdwn").text
    assert text.splitlines()[1:] == [
        "> a&gt;b",
        "<https://x/?a=1&amp;b=2|R&amp;D / ops>",
        '{"k": "&lt;v&gt;"}',
    ]


def test_blocks_json_template_is_escaped_and_parsed(tmp_path: Path) -> None:
    odd = stage(name='say "hi" <now> & go\\', message="line1\nline2")
    ctx = context(make_run(FAIL, (odd,)), (event("stage.failed", FAIL, on=odd),), "slack")
    source = """{"text": "*{{ headline }}*", "blocks": [
      {"type": "section",
       "text": {"type": "mrkdwn", "text": "{{ events[0].stage.name }}\\n<{{ run.console_url }}|Open>"}},
      {"type": "section", "text": {"type": "mrkdwn", "text": "{{ events[0].stage.message | quote }}"}},
      {"type": "context", "elements": [{"type": "mrkdwn", "text": {{ run.description | tojson }}}]}
    ]}"""
    message = render_source(tmp_path, "slack", source, "blocks.json", ctx)
    assert message.blocks is not None and len(message.blocks) == 3
    assert message.blocks[0]["text"]["text"] == f'say "hi" &lt;now&gt; &amp; go\\\n<{CONSOLE}|Open>'
    assert message.blocks[1]["text"]["text"] == "> line1\n> line2"
    assert message.blocks[2]["elements"][0]["text"] == "订单宽表上线"
    assert (message.title, message.text) == ("阶段失败 · Stage failed", "*阶段失败 · Stage failed*")


def test_blocks_json_list_without_text_derives_it(tmp_path: Path) -> None:
    source = '[{"type": "header", "text": {"type": "plain_text", "text": "{{ headline }}"}},'
    source += ' {"type": "section", "fields": [{"type": "mrkdwn", "text": "{{ project.label }}"}]}]'
    message = render_source(tmp_path, "slack", source, "blocks.json")
    assert message.text == "发布失败 · Deployment failed\nFinance DW"


@pytest.mark.parametrize("source", ['[{"type": "section",]', '{"text": "x"}', "[1, 2]"])
def test_invalid_blocks_json_is_a_template_error(tmp_path: Path, source: str) -> None:
    with pytest.raises(TemplateError, match=r"blocks\.json\.j2"):
        render_source(tmp_path, "slack", source, "blocks.json")


# --- filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "0s"), (45, "45s"), (192, "3m 12s"), (180, "3m"), (3780, "1h 3m"), (3605, "1h"), (90061, "1d 1h")],
)
def test_duration(seconds: int, expected: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == expected


def test_duration_of_none_and_negative() -> None:
    assert format_duration(None) == ""
    assert format_duration(timedelta(seconds=-5)) == "0s"


def test_datetime_defaults_to_china_time() -> None:
    assert format_datetime(NOW) == "2026-05-01 16:00"
    assert format_datetime(NOW.replace(tzinfo=None), "%H:%M", "UTC") == "08:00"
    assert format_datetime(None) == ""
    with pytest.raises(ValueError, match="unknown time zone"):
        format_datetime(NOW, tz="Mars/Olympus")


@pytest.mark.parametrize(
    ("status", "emoji", "label"),
    [
        ("Success", "✅", "成功 Succeeded"),
        ("FAIL", "❌", "失败 Failed"),
        ("running", "⏳", "运行中 Running"),
        ("Init", "⏸", "未开始 Pending"),
        ("Termination", "⛔", "已终止 Terminated"),
        ("Cancelled", "🚫", "已取消 Canceled"),
        ("Paused", "❔", "Paused"),
    ],
)
def test_status_emoji_and_label(status: str, emoji: str, label: str) -> None:
    assert (status_emoji(status), status_label(status)) == (emoji, label)


def test_status_label_languages() -> None:
    assert (status_label(FAIL, "zh"), status_label(FAIL, "en")) == ("失败", "Failed")


def test_truncate_bytes_cuts_chinese_on_a_character_boundary() -> None:
    text = "发布检查未通过" * 20
    for limit in range(len(TRIM_MARKER.encode()), 60):
        cut = truncate_bytes(text, limit)
        assert len(cut.encode()) <= limit
        assert cut.endswith(TRIM_MARKER)
        assert text.startswith(cut.removesuffix(TRIM_MARKER))
    assert truncate_bytes("短文本", 9) == "短文本"
    assert truncate_bytes(None, 5) == ""


def test_truncate_bytes_never_exceeds_its_limit_even_below_the_marker_size() -> None:
    text = "发布检查未通过" * 20
    for limit in range(len(TRIM_MARKER.encode())):
        assert len(truncate_bytes(text, limit).encode()) <= limit  # the marker is dropped, not overflowed
    assert truncate_bytes(text, 7) == "发布"


def test_truncate_bytes_in_a_template(tmp_path: Path) -> None:
    text = render_source(tmp_path, "dingtalk", "### {{ '发布检查未通过' | truncate_bytes(20) }}", "md").text
    assert text == "### 发布…(truncated)"


def test_template_sees_the_contract_context(tmp_path: Path) -> None:
    source = (
        "### {{ run.id }}|{{ run.project_id }}|{{ run.status }}|{{ run.final }}|"
        "{{ run.duration | duration }}\n"
        "{{ run.create_time | datetime('%H:%M') }}|{{ run.stages | map(attribute='step') | join(',') }}\n"
        "{% for e in events %}{{ e.type }} {{ e.stage.code if e.stage else 'none' }} "
        "{{ e.status }}<{{ e.previous }}\n"
        "{% endfor %}{{ project.id }}|{{ project.name }}|{{ project.label }}|{{ rule.name }}|"
        "{{ channel.name }}|{{ channel.type }}|{{ now.isoformat() }}|{{ outcome }}"
    )
    build, check = stage("发布包构建", SUCCESS, "", 1), stage()
    run = make_run(FAIL, (check, build))
    events = (event("stage.failed", FAIL, RUNNING, check), event("run.failed", FAIL))
    text = render_source(tmp_path, "dingtalk", source, "md", context(run, events, project=UNNAMED)).text
    assert text.splitlines() == [
        "### a7ef0634-20ec-4a7c-a214-54020f91XXXX|10001|fail|True|3m 12s",
        "15:56|1,2",
        "stage.failed S2 fail<running",
        "run.failed none fail<running",
        f"10000||10000|failures|ops|dingtalk|{NOW.isoformat()}|fail",
    ]


def test_running_run_has_no_duration(tmp_path: Path) -> None:
    ctx = context(make_run(RUNNING), (event("run.started", RUNNING, None),))
    text = render_source(
        tmp_path, "dingtalk", "### {{ run.duration is none }} {{ run.final }}", "md", ctx
    ).text
    assert text == "### True False"
    assert json.dumps(text)  # plain str, not a wrapper type


@pytest.mark.parametrize("channel_type", sorted(CHANNEL_TYPES))
def test_the_plain_fallback_keeps_the_console_link_a_link_target(channel_type: str) -> None:
    from dwnotify.render.context import Url
    from dwnotify.render.fallback import plain_message

    link = "https://dataworks.test/cn-shanghai/datastudio?defaultProjectId=10000&tab=[ops]"
    ctx = replace(one_event_context("run.failed", channel_type), console_url=Url(link))
    message = plain_message(ctx, "note", 10_000)
    # Escaped as the templates escape a link target, not as text (Lark made `[` an entity, Slack `&` one).
    assert message.text.splitlines()[-1] == CHANNEL_TYPES[channel_type].markup.url(link)


# -- stage views: durations from dwnotify's sightings ---------------------------------------------------
def test_a_stage_view_measures_from_first_seen_running_to_first_seen_final_or_now() -> None:
    from datetime import datetime, timedelta, timezone

    from dwnotify.model import Run, Stage
    from dwnotify.render.context import RunView

    def stage(code: str, step: int, status: str) -> Stage:
        return Stage(code, step, "Deploy", code, "", status, "")

    run = Run(
        "r1",
        10000,
        "running",
        stages=(stage("C", 3, "init"), stage("A", 1, "success"), stage("B", 2, "running")),
    )
    now = datetime.fromtimestamp(1000, tz=timezone.utc)
    view = RunView.of(
        run,
        "",
        now=now,
        stage_since={"A": 400.0, "B": 400.0, "C": 100.0},
        stage_started={"A": 100.0, "B": 400.0},
    )
    a, b, c = view.stages
    assert (a.code, b.code, c.code) == ("A", "B", "C")  # Step order
    assert a.duration == timedelta(seconds=300)  # started 100, seen succeeded at 400
    assert b.duration == timedelta(seconds=600)  # running since 400, now 1000
    assert c.duration is None and c.since == datetime.fromtimestamp(100, tz=timezone.utc)
    unseen = RunView.of(run, "", now=now).stages[0]
    assert unseen.duration is None and unseen.started_at is None


def test_a_stage_duration_lies_within_the_runs_own_times() -> None:
    """Sightings are up to a poll late; DataWorks' creation and end times of the run are not."""
    from datetime import datetime, timedelta, timezone

    from dwnotify.model import Run, Stage
    from dwnotify.render.context import RunView

    def at(epoch: float) -> datetime:
        return datetime.fromtimestamp(epoch, tz=timezone.utc)

    stage = Stage("A", 1, "Deploy", "A", "", "fail", "")
    run = Run("r1", 10000, "fail", create_time=at(130), modify_time=at(250), stages=(stage,))
    [view] = RunView.of(run, "", now=at(400), stage_since={"A": 300.0}, stage_started={"A": 100.0}).stages
    assert view.duration == timedelta(seconds=120)  # 130 (created) to 250 (ended), not 100 to 300


def test_whether_a_template_exists_is_looked_up_once_per_renderer(tmp_path: Path) -> None:
    """A tick asks for every living message it renders; the folders are read once, as templates are
    compiled once (a template added later is seen by the next process)."""
    renderer = Renderer(tmp_path)
    assert not renderer.exists("slack-app", "mine-reply")
    (tmp_path / "slack-app").mkdir()
    (tmp_path / "slack-app" / "mine-reply.mrkdwn.j2").write_text("*x*", encoding="utf-8")
    assert not renderer.exists("slack-app", "mine-reply")
    assert Renderer(tmp_path).exists("slack-app", "mine-reply")
