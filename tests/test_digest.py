"""Daily digests (issue 13): when one is due, which runs it summarizes, and how each channel shows it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import pytest

from dwnotify.channels import CHANNEL_TYPES
from dwnotify.channels.wecom import MAX_CONTENT_BYTES, build_payload
from dwnotify.digest import (
    MAX_WINDOW,
    DigestDue,
    DigestView,
    due,
    event_type,
    plain_digest,
    render_digest,
    selects,
    summarize,
)
from dwnotify.errors import TemplateError, TemplateLimitError
from dwnotify.message import Message
from dwnotify.model import CANCELED, FAIL, RUNNING, SUCCESS, TERMINATED, RunState
from dwnotify.render import Renderer, builtin_templates_dir
from dwnotify.sandbox import RenderLimits
from dwnotify.settings import ChannelSettings, DigestSettings, RuleSettings
from dwnotify.zones import zone
from tests.helpers import write
from tests.test_dingtalk import undocumented_markdown

SHANGHAI = DigestSettings(time(18, 0), "Asia/Shanghai")
NEW_YORK = "America/New_York"
DAY = 86_400.0


def local(text: str, tz: str = "Asia/Shanghai") -> float:
    """Epoch seconds of a local `YYYY-MM-DD HH:MM` in zone `tz`."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=zone(tz)).timestamp()


LONG_AGO = local("2026-01-01 00:00")
TODAY = ("2026-11-28", "2026-11-28 18:00", "2026-11-27 18:00")
TOMORROW = ("2026-11-29", "2026-11-29 18:00", "2026-11-28 18:00")


# --- when a digest is due -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "first_seen", "last_day", "expected"),
    [
        # before today's time: yesterday's was sent, nothing is due
        ("2026-11-28 17:59", LONG_AGO, "2026-11-27", None),
        # at the time exactly: today's, over the day since yesterday's time
        ("2026-11-28 18:00", LONG_AGO, "2026-11-27", ("2026-11-28", "2026-11-28 18:00", "2026-11-27 18:00")),
        # a tick missed the time: the next one sends it late, once
        ("2026-11-28 20:40", LONG_AGO, "2026-11-27", ("2026-11-28", "2026-11-28 18:00", "2026-11-27 18:00")),
        ("2026-11-28 20:40", LONG_AGO, "2026-11-28", None),
        # before today's time, yesterday's never sent: yesterday's, late
        ("2026-11-28 09:00", LONG_AGO, "2026-11-26", ("2026-11-27", "2026-11-27 18:00", "2026-11-26 18:00")),
        # a later day already sent (the clock went back): not again
        ("2026-11-28 20:40", LONG_AGO, "2026-11-29", None),
        # days missed: one digest, covering everything since the last one sent
        ("2026-11-28 20:40", LONG_AGO, "2026-11-25", ("2026-11-28", "2026-11-28 18:00", "2026-11-25 18:00")),
        # ... but not more than a week
        ("2026-11-28 20:40", LONG_AGO, "2026-11-01", ("2026-11-28", "2026-11-28 18:00", "2026-11-21 18:00")),
        # the first digest: the day before it
        ("2026-11-28 20:40", LONG_AGO, None, ("2026-11-28", "2026-11-28 18:00", "2026-11-27 18:00")),
        # a day the tick cannot read counts as none
        ("2026-11-28 20:40", LONG_AGO, "yesterday", ("2026-11-28", "2026-11-28 18:00", "2026-11-27 18:00")),
        # the time passed before the rule was first seen: not caught up ...
        ("2026-11-28 20:40", local("2026-11-28 18:30"), None, None),
        ("2026-11-28 20:40", local("2026-11-28 18:00"), None, None),
        # ... but a rule seen just before it gets it
        ("2026-11-28 20:40", local("2026-11-28 17:59"), None, TODAY),
        # and the next day's is due as usual
        ("2026-11-29 18:01", local("2026-11-28 18:30"), None, TOMORROW),
    ],
)  # fmt: skip
def test_when_a_digest_is_due(
    now: str, first_seen: float, last_day: str | None, expected: tuple[str, str, str] | None
) -> None:
    found = due(SHANGHAI, local(now), first_seen, last_day)
    if expected is None:
        assert found is None
    else:
        day, at, since = expected
        assert found == DigestDue(day, local(at), local(since))


def test_the_day_is_the_local_one_not_utcs() -> None:
    early = DigestSettings(time(7, 0), "Asia/Shanghai")  # 23:00 UTC the day before
    found = due(early, local("2026-11-28 07:30"), LONG_AGO, None)
    assert found is not None and found.day == "2026-11-28"
    assert found.at == datetime(2026, 11, 27, 23, 0, tzinfo=timezone.utc).timestamp()


def test_the_longest_window_is_a_week() -> None:
    found = due(SHANGHAI, local("2026-11-28 20:00"), LONG_AGO, "2026-10-01")
    assert found is not None and found.at - found.since == MAX_WINDOW.total_seconds()


def test_a_daylight_saving_zone_keeps_the_local_time() -> None:
    evening = DigestSettings(time(18, 0), NEW_YORK)
    # New York leaves daylight saving time on 2026-11-01: that day has 25 hours.
    found = due(evening, local("2026-11-01 18:05", NEW_YORK), LONG_AGO, "2026-10-31")
    assert found is not None and found.day == "2026-11-01"
    assert found.at == datetime(2026, 11, 1, 23, 0, tzinfo=timezone.utc).timestamp()  # 18:00 EST
    assert found.since == datetime(2026, 10, 31, 22, 0, tzinfo=timezone.utc).timestamp()  # 18:00 EDT
    assert found.at - found.since == 25 * 3600
    assert due(evening, local("2026-11-01 17:55", NEW_YORK), LONG_AGO, "2026-10-31") is None


def test_a_time_the_clocks_skip_is_sent_an_hour_later() -> None:
    night = DigestSettings(time(2, 30), NEW_YORK)  # 2026-03-08 goes from 02:00 to 03:00
    at = datetime(2026, 3, 8, 7, 30, tzinfo=timezone.utc).timestamp()  # 03:30 EDT
    assert due(night, at - 60, LONG_AGO, "2026-03-07") is None
    found = due(night, at, LONG_AGO, "2026-03-07")
    assert found is not None and (found.day, found.at) == ("2026-03-08", at)
    assert found.at - found.since == 24 * 3600  # both read as 07:30 UTC: the skipped hour is not lost twice


# --- which runs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("run:running", "run.started"),
        ("run:success", "run.succeeded"),
        ("run:fail", "run.failed"),
        ("run:terminated", "run.terminated"),
        ("run:canceled", "run.canceled"),
        ("run:(gone)", "run.changed"),
        ("run:Paused", "run.changed"),
        ("stage:BUILD:fail", "stage.failed"),
        ("stage:BUILD:running", "stage.started"),
        ("stage:step-2:success", "stage.succeeded"),
        ("stage:a:b:canceled", "stage.canceled"),  # a code with a colon in it
        ("stage:DEPLOY:init", "stage.changed"),
        ("remind\x1fstage.waiting\x1fDEPLOY\x1f1.000\x1f0", None),
        ("run:", None),
        ("job:x:fail", None),
    ],
)
def test_announced_keys_map_back_to_event_types(key: str, expected: str | None) -> None:
    assert event_type(key) == expected


AT = local("2026-11-28 18:00")
WINDOW = DigestDue("2026-11-28", AT, AT - DAY)
ALL = RuleSettings("daily", ("*",), ("ops",), digest=SHANGHAI)
STARTED = {"run:running"}
SUCCEEDED = {"run:running", "stage:BUILD:running", "stage:BUILD:success", "run:success"}
FAILED = {"run:running", "stage:BUILD:running", "stage:BUILD:fail", "run:fail"}


def state(
    run_id: str,
    status: str,
    announced: set[str],
    *,
    project: int = 10000,
    took_s: float | None = None,
    created: float = AT - 7200,
    description: str = "",
    message: str = "",
) -> RunState:
    return RunState(
        project_id=project,
        run_id=run_id,
        status=status,
        stage_statuses={},
        announced=frozenset(announced),
        create_time_ms=int(created * 1000),
        description=description,
        message=message,
        finished_ms=int((created + took_s) * 1000) if took_s is not None else None,
    )


def run_ids(view: DigestView) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for workspace in view.workspaces:
        failures = [run.id for run in workspace.failures]
        moving = [run.id for run in workspace.still_running]
        found[workspace.project_id] = failures + moving + [f"runs={workspace.runs}"]
    return found


@pytest.mark.parametrize(
    ("events", "projects", "selected"),
    [
        (("*",), None, {"ok", "bad", "moving", "elsewhere"}),
        (("run.failed",), None, {"bad"}),
        (("stage.failed",), None, {"bad"}),
        (("stage.*",), None, {"ok", "bad"}),
        (("run.started",), None, {"ok", "bad", "moving", "elsewhere"}),
        (("run.succeeded", "run.failed"), None, {"ok", "bad", "elsewhere"}),
        (("run.canceled",), None, set()),
        (("*",), (10000,), {"ok", "bad", "moving"}),
        (("run.failed",), (10001,), set()),
    ],
)
def test_a_rules_events_and_projects_select_its_runs(
    events: tuple[str, ...], projects: tuple[int, ...] | None, selected: set[str]
) -> None:
    rule = RuleSettings("r", events, ("ops",), projects=projects, digest=SHANGHAI)
    runs = [
        state("ok", SUCCESS, SUCCEEDED, took_s=60),
        state("bad", FAIL, FAILED, took_s=60),
        state("moving", RUNNING, STARTED),
        state("elsewhere", SUCCESS, {"run:running", "run:success"}, project=10001, took_s=60),
    ]
    assert {run.run_id for run in runs if selects(rule, run)} == selected


def test_the_window_holds_the_runs_updated_since_the_last_digest_and_before_this_one() -> None:
    states = [
        (state("late", SUCCESS, SUCCEEDED, took_s=60), AT),  # updated at the time: the next digest's
        (state("last", SUCCESS, SUCCEEDED, took_s=60), AT - 1),
        (state("first", SUCCESS, SUCCEEDED, took_s=60), AT - DAY),
        (state("before", SUCCESS, SUCCEEDED, took_s=60), AT - DAY - 1),  # the previous digest's
    ]
    view = summarize(ALL, states, WINDOW, (), {})
    assert [workspace.runs for workspace in view.workspaces] == [2]
    assert view.succeeded == 2


def test_runs_still_moving_are_in_whenever_they_last_changed() -> None:
    moving = state("moving", RUNNING, STARTED, created=AT - 3 * DAY)
    also_stored = state("stored", FAIL, FAILED, took_s=60)
    states = [(also_stored, AT - 60)]
    now_moving = replace(also_stored, status=RUNNING, finished_ms=None)  # what moves now wins
    view = summarize(ALL, states, WINDOW, [moving, now_moving], {})
    (workspace,) = view.workspaces
    assert workspace.runs == 2 and workspace.failed == 0
    assert [run.id for run in workspace.still_running] == ["moving", "stored"]  # oldest first
    assert workspace.still_running[0].created_at == datetime.fromtimestamp(AT - 3 * DAY, timezone.utc)


def test_counts_and_durations_per_workspace() -> None:
    states = [
        (state("s1", SUCCESS, SUCCEEDED, took_s=60), AT - 10),
        (state("s2", SUCCESS, SUCCEEDED, took_s=600), AT - 10),
        (state("f1", FAIL, FAILED, took_s=3600, created=AT - 9000, message="BUILD: 节点依赖缺失"), AT - 10),
        (state("t1", TERMINATED, {"run:running", "run:terminated"}, took_s=120), AT - 10),
        (state("c1", CANCELED, {"run:running", "run:canceled"}, created=AT - 3600), AT - 10),  # no end
        (state("o1", SUCCESS, SUCCEEDED, project=10001, took_s=30), AT - 10),
        (state("o2", SUCCESS, SUCCEEDED, project=10001, took_s=90), AT - 10),
    ]
    moving = [state("m1", RUNNING, STARTED)]
    view = summarize(ALL, states, WINDOW, moving, {10000: "Finance DW"})
    finance, other = view.workspaces
    assert (finance.label, finance.project_id, other.label) == ("Finance DW", 10000, "10001")
    assert (finance.runs, finance.succeeded, finance.failed, finance.running) == (6, 2, 3, 1)
    assert [run.id for run in finance.failures] == ["f1", "t1", "c1"]  # oldest first
    assert finance.failures[0].message == "BUILD: 节点依赖缺失"
    # finished with both times: 60, 120, 600, 3600 -> median of the middle two
    assert finance.median_duration == timedelta(seconds=360)
    assert finance.longest_duration == timedelta(hours=1) and finance.longest is not None
    assert finance.longest.id == "f1"
    assert other.median_duration == timedelta(seconds=60) and other.longest_duration == timedelta(seconds=90)
    odd = summarize(ALL, states[:3], WINDOW, (), {})
    assert odd.workspaces[0].median_duration == timedelta(seconds=600)
    assert (view.runs, view.succeeded, view.failed, view.running) == (8, 4, 3, 1)
    assert (view.day, view.timezone) == ("2026-11-28", "Asia/Shanghai")
    assert (view.since, view.at) == (
        datetime(2026, 11, 27, 10, tzinfo=timezone.utc),
        datetime(2026, 11, 28, 10, tzinfo=timezone.utc),
    )


def test_workspaces_with_failures_come_first_then_by_name() -> None:
    states = [
        (state("a", SUCCESS, SUCCEEDED, project=1, took_s=1), AT - 10),
        (state("b", FAIL, FAILED, project=2, took_s=1), AT - 10),
        (state("c", SUCCESS, SUCCEEDED, project=3, took_s=1), AT - 10),
    ]
    view = summarize(ALL, states, WINDOW, (), {1: "beta", 2: "zeta", 3: "Alpha"})
    assert [workspace.label for workspace in view.workspaces] == ["zeta", "Alpha", "beta"]


def test_runs_read_as_one_line_each_and_never_take_less_than_nothing() -> None:
    bad = state(" b \n", FAIL, FAILED, took_s=-5, description="a\n# b", message="BUILD: x\n\n> y\tz")
    (workspace,) = summarize(ALL, [(bad, AT - 1)], WINDOW, (), {10000: ""}).workspaces
    (run,) = workspace.failures
    assert (run.id, run.description, run.message) == ("b", "a # b", "BUILD: x > y z")
    assert run.duration == timedelta(0) and workspace.label == "10000"


# --- the message --------------------------------------------------------------------------------------

HOSTILE_LABEL = "Ops <!channel>"
HOSTILE_DESCRIPTION = "<@U1> <!channel> [x](http://evil)"
HOSTILE_MESSAGE = "BUILD: <at id=all></at> [x](http://evil) <@U1>"
HOSTILES = ("<@U1>", "<!channel>", "[x](http://evil)", "<at id=all></at>")
NOW = datetime.fromtimestamp(AT + 60, timezone.utc)


def sample_view() -> DigestView:
    states = [
        (state("a7ef-01", SUCCESS, SUCCEEDED, took_s=192, description="发布 ods_user_daily"), AT - 600),
        (
            state(
                "a7ef-02",
                FAIL,
                FAILED,
                took_s=3780,
                description="修复 dim_shop 分区",
                message="BUILD: 节点依赖缺失 dwd_order_di",
            ),
            AT - 600,
        ),
        (state("c3d4-07", SUCCESS, SUCCEEDED, project=10001, took_s=300), AT - 600),
    ]
    moving = [state("c3d4-08", RUNNING, STARTED, project=10001, created=AT - 1800, description="nightly")]
    return summarize(ALL, states, WINDOW, moving, {10000: "Finance DW", 10001: "Growth DW"})


def hostile_view() -> DigestView:
    bad = state("r1", FAIL, FAILED, took_s=60, description=HOSTILE_DESCRIPTION, message=HOSTILE_MESSAGE)
    moving = state("r2", RUNNING, STARTED, description=HOSTILE_DESCRIPTION)
    return summarize(ALL, [(bad, AT - 1)], WINDOW, [moving], {10000: HOSTILE_LABEL})


def digest_of(
    channel_type: str, view: DigestView, renderer: Renderer | None = None
) -> tuple[Message, list[tuple[str, TemplateError]]]:
    renderer = renderer or Renderer(None)
    return render_digest(
        renderer, view, rule_name="daily", channel_name="ops", channel_type=channel_type, now=NOW
    )


def render(channel_type: str, view: DigestView) -> str:
    message, failures = digest_of(channel_type, view)
    assert failures == []
    return message.text


def test_every_channel_type_has_a_builtin_digest() -> None:
    renderer = Renderer(None, builtin_templates_dir())
    for channel_type in CHANNEL_TYPES:
        assert renderer.exists(channel_type, "digest"), channel_type
        renderer.compile(channel_type, "digest")


@pytest.mark.parametrize("channel_type", sorted(CHANNEL_TYPES))
def test_the_digest_shows_counts_failures_what_runs_and_durations(channel_type: str) -> None:
    message, failures = digest_of(channel_type, sample_view())
    assert failures == []
    assert message.title == "📋 发布日报 · Daily deployment digest 2026-11-28" or (
        channel_type == "wecom" and message.title == "📋 发布日报 · Daily digest 2026-11-28"
    )
    text = CHANNEL_TYPES[channel_type].markup.plain(message.text)
    assert "11-27 18:00 – 11-28 18:00" in text
    assert "Finance DW" in text and "Growth DW" in text
    assert text.index("Finance DW") < text.index("Growth DW")  # its failure puts it first
    assert "修复 dim_shop 分区" in text
    escape = CHANNEL_TYPES[channel_type].markup.escape
    assert escape("BUILD: 节点依赖缺失 dwd_order_di") in message.text
    assert "nightly" in text and "17:30" in text  # still running, since when (local time)
    assert "1h 3m" in text and "33m 6s" in text  # longest and median in Finance DW


@pytest.mark.parametrize("channel_type", sorted(CHANNEL_TYPES))
def test_hostile_values_stay_text_in_every_channels_digest(channel_type: str) -> None:
    text = render(channel_type, hostile_view())
    escape = CHANNEL_TYPES[channel_type].markup.escape
    for hostile in HOSTILES:
        # Slack's mrkdwn has no [text](url) link: its escaping leaves that as it is, and so may the digest.
        assert hostile not in text or escape(hostile) == hostile == "[x](http://evil)", (
            channel_type,
            hostile,
        )
    assert channel_type.startswith("slack") or "[x](http://evil)" not in text
    assert escape(HOSTILE_MESSAGE) in text  # shown, escaped by the channel's own rules
    assert escape(HOSTILE_LABEL) in text
    assert escape(HOSTILE_DESCRIPTION) in text


@pytest.mark.parametrize("channel_type", sorted(CHANNEL_TYPES))
def test_a_day_without_runs_says_so_in_one_line(channel_type: str) -> None:
    empty = summarize(ALL, [], WINDOW, [], {})
    lines = [line for line in render(channel_type, empty).splitlines() if line.strip()]
    assert len(lines) == 2 and "No deployment runs" in lines[1]


@pytest.mark.parametrize("channel_type", sorted(set(CHANNEL_TYPES) - {"wecom"}))
def test_long_lists_are_cut_and_say_how_many_more(channel_type: str) -> None:
    states = [
        (state(f"f-{project}-{number}", FAIL, FAILED, project=project, took_s=1), AT - 10)
        for project in range(22)
        for number in range(12)
    ]
    moving = [
        state(f"m-{project}-{number}", RUNNING, STARTED, project=project)
        for project in range(22)
        for number in range(7)
    ]
    view = summarize(ALL, states, WINDOW, moving, {})
    text = render(channel_type, view)
    lines = text.splitlines()
    assert text.count("and 2 more failed") == 20
    assert sum("❌" in line and "f-0-" in line for line in lines) == 10
    assert text.count("and 2 more running") == 20
    assert sum("⏳" in line and "m-0-" in line for line in lines) == 5
    assert text.count("and 2 more workspaces") == 1
    assert all(f"f-{workspace.project_id}-" not in text for workspace in view.workspaces[20:])


def test_the_dingtalk_digest_keeps_to_the_documented_markdown() -> None:
    for view in (sample_view(), summarize(ALL, [], WINDOW, [], {})):
        assert undocumented_markdown(render("dingtalk", view)) == []


def test_no_digest_puts_values_in_inline_code() -> None:
    for path in builtin_templates_dir().glob("*/digest.*.j2"):
        assert "`" not in path.read_text(encoding="utf-8"), path


def crowded_view(workspaces: int) -> DigestView:
    states = []
    for project in range(workspaces):
        for number in range(15):
            long_message = ("<@U1> **节点依赖缺失** [x](http://evil) " * 20).strip()
            failed = state(
                f"run-{project}-{number}",
                FAIL,
                FAILED,
                project=project,
                took_s=60 * number,
                description="<!channel> 修复分区 " * 10,
                message=long_message,
            )
            states.append((failed, AT - 10))
    moving = [state(f"m-{project}", RUNNING, STARTED, project=project) for project in range(workspaces)]
    labels = {project: f"工作空间 <b>{project}</b> " * 4 for project in range(workspaces)}
    return summarize(ALL, states, WINDOW, moving, labels)


@pytest.mark.parametrize("workspaces", [1, 2, 3, 5, 6, 10, 11, 40])
def test_the_wecom_digest_of_failing_workspaces_fits_in_4096_bytes(workspaces: int) -> None:
    view = crowded_view(workspaces)
    message, _ = digest_of("wecom", view)
    assert len(message.text.encode("utf-8")) <= MAX_CONTENT_BYTES
    settings = ChannelSettings("ops", "wecom", None)
    assert build_payload(settings, message)["markdown"]["content"] == message.text  # nothing cut
    shown = view.workspaces[:10]
    for workspace in shown:
        assert f"<\u200bb>{workspace.project_id}<\u200b/b>" in message.text
    per = 3 if workspaces <= 2 else 2 if workspaces <= 5 else 1  # the fewer workspaces, the more each shows
    assert message.text.count("❌ **") == per * len(shown)
    assert message.text.count(f"{15 - per} more failed") == len(shown)
    if workspaces > 10:
        assert f"{workspaces - 10} more workspaces" in message.text


# --- when the template fails --------------------------------------------------------------------------


def test_a_failing_digest_template_falls_back_to_plain_text_with_a_note(tmp_path: Path) -> None:
    write(tmp_path, "dingtalk/digest.md.j2", "### digest\n{{ digest.nothing_here }}")
    message, failures = digest_of("dingtalk", hostile_view(), Renderer(tmp_path))
    assert [name for name, _ in failures] == ["digest"]
    assert "dingtalk/digest.md.j2, line 2" in str(failures[0][1])
    assert message.title == "DataWorks daily digest 2026-11-28"
    escape = CHANNEL_TYPES["dingtalk"].markup.escape
    assert f"- {escape(HOSTILE_LABEL)}: 2 runs, 0 succeeded, 1 failed, 1 running" in message.text
    assert "<!channel>" not in message.text
    assert message.text.splitlines()[-1].startswith("⚠️ 模板 digest 未能生成此消息，已改用纯文本")


def test_a_digest_template_over_its_budget_falls_back_and_says_why(tmp_path: Path) -> None:
    loops = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    write(tmp_path, "slack/digest.mrkdwn.j2", "*x*\n" + loops)
    message, failures = digest_of("slack", sample_view(), Renderer(tmp_path))
    assert isinstance(failures[0][1], TemplateLimitError)
    assert "work budget" in message.text and "Growth DW" in message.text


def test_an_unknown_channel_type_still_gets_plain_text() -> None:
    message, failures = digest_of("nope", sample_view())
    assert failures and message.text.startswith("DataWorks daily digest 2026-11-28\n")


def test_the_plain_digest_is_bounded() -> None:
    view = crowded_view(60)
    message = plain_digest(view, "slack", "note", 100_000)
    assert message.text.count("\n- ") == 51 and "… 10 more workspaces" in message.text
    assert len(plain_digest(view, "slack", "note", 500).text) == 500
    assert "No runs." in plain_digest(summarize(ALL, [], WINDOW, [], {}), "slack", "note", 500).text


class StoppedClock:
    """A clock that moves a second at each reading: any template runs out of its 1 s at once."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_a_digest_template_out_of_time_is_not_run_again_for_the_same_moment(tmp_path: Path) -> None:
    write(tmp_path, "dingtalk/digest.md.j2", "### x\n{% for i in range(5000) %}{{ i }}{% endfor %}")
    clock = StoppedClock()
    renderer = Renderer(tmp_path, limits=RenderLimits(seconds=1.0), clock=clock)
    variables = {"digest": sample_view()}
    with pytest.raises(TemplateLimitError):
        renderer.render_variables("dingtalk", "digest", variables, NOW)
    readings = clock.now
    with pytest.raises(TemplateLimitError):
        renderer.render_variables("dingtalk", "digest", variables, NOW)
    assert clock.now == readings  # the same moment: refused without running
    with pytest.raises(TemplateLimitError):
        renderer.render_variables("dingtalk", "digest", variables, NOW + timedelta(minutes=1))
    assert clock.now > readings  # another moment: tried again
