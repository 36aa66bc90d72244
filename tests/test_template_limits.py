"""Runaway templates: each render is bounded in work, time and size, and what fails falls back visibly.

Time is a fake clock handed to the Renderer: tests count what happened, never wall time.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dwnotify import config
from dwnotify.app import build_app
from dwnotify.cli import check_templates
from dwnotify.errors import TemplateError, TemplateLimitError
from dwnotify.model import FAIL
from dwnotify.render import Renderer, builtin_templates_dir
from dwnotify.sandbox import Meter, OverLimit, RenderLimits
from dwnotify.tick import Notifier
from tests.conftest import CREDENTIALS, World
from tests.helpers import STAGES, context, event, make_run, slack_text, stage, write


class FakeClock:
    """Seconds that move on by `per_reading` each time they are read."""

    def __init__(self, per_reading: float) -> None:
        self.per_reading = per_reading
        self.now = 1000.0
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        self.now += self.per_reading
        return self.now


def render(tmp_path: Path, source: str, renderer: Renderer | None = None) -> str:
    name = f"t{len(list(tmp_path.glob('dingtalk/*.j2')))}"  # a new name: a Renderer caches what it compiled
    write(tmp_path, f"dingtalk/{name}.md.j2", "### title\n" + source)
    ctx = context(make_run(), (event("run.failed", FAIL),))
    # A stopped clock unless the test brings its own: what stops a render here is never the machine's speed.
    return (renderer or Renderer(tmp_path, clock=FakeClock(0.0))).render("dingtalk", name, ctx).text


def limit_of(tmp_path: Path, source: str, renderer: Renderer | None = None) -> str:
    with pytest.raises(TemplateLimitError) as caught:
        render(tmp_path, source, renderer)
    assert ".md.j2, line 2: " in str(caught.value) or "rendered more than" in str(caught.value)
    assert caught.value.template.startswith("dingtalk/t")
    return caught.value.limit


# --- work ---------------------------------------------------------------------------------------

TEN = "[0,1,2,3,4,5,6,7,8,9]"  # a constant list: Jinja2 folds constants, the meter must still count


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
        "".join(f"{{% for v{n} in {TEN} %}}" for n in range(6)) + "{% endfor %}" * 6,
        "{% for x in range(10) recursive %}{% if loop.depth < 7 %}{{ loop(range(10)) }}{% endif %}"
        "{% endfor %}",
        "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(20) }}",
    ],
    ids=["nested-range", "nested-constants", "recursive-loop", "macro-fan-out"],
)
def test_loops_and_calls_stop_at_the_work_budget(tmp_path: Path, source: str) -> None:
    assert limit_of(tmp_path, source) == "steps"


def test_the_time_budget_reads_the_injected_clock_at_every_step(tmp_path: Path) -> None:
    clock = FakeClock(per_reading=0.1)
    renderer = Renderer(tmp_path, limits=RenderLimits(seconds=1.0), clock=clock)
    assert limit_of(tmp_path, "{% for i in range(5000) %}{{ i }}{% endfor %}", renderer) == "time"
    assert clock.readings <= 12  # stopped about ten readings (one second) in, not 5,000


def test_range_is_bounded(tmp_path: Path) -> None:
    assert limit_of(tmp_path, "{{ range(10001) | list | length }}") == "size"
    assert render(tmp_path, "{{ range(10000) | list | length }}").endswith("10000")


# --- size: refused before it is made ------------------------------------------------------------

JUST_OVER = [  # past the 262,144-character cap, but quick for the old code to make
    "{{ 'x' * 300000 }}",
    "{{ (['x'] * 300000) | length }}",
    "{{ '%300000d' % 1 }}",
    "{{ '%*d' % (300000, 1) }}",
    "{{ '%(a)s' * 3 % {'a': 'y' * 200000} }}",
    "{{ (2 ** 20000) % 7 }}",
    "{{ ((10 ** 4000) * (10 ** 4000)) % 7 }}",
    "{{ 'x'.ljust(300000) | length }}",
    "{{ 'x'.center(300000) | length }}",
    "{{ '1'.zfill(300000) | length }}",
    "{{ '{:300000}'.format(1) | length }}",
    "{{ '{:{w}}'.format(1, w=300000) | length }}",
    "{{ 'x' | center(300000) | length }}",
    "{{ 'a\\nb' | indent(200000) | length }}",
    "{{ '%300000d' | format(1) | length }}",
    "{{ ('x' * 1000) | replace('', 'y' * 300) | length }}",
    "{{ range(10000) | join('x' * 30) | length }}",
    "{{ ('x' * 40).join(range(10000) | map('string')) | length }}",
    "{{ 'aaaa'.translate({97: 'x' * 100000}) | length }}",
    "{{ [1] | batch(300000, 0) | list | length }}",
    "{{ [[0] * 1000] * 1000 }}",
    "{% set ns = namespace(s='x') %}{% for i in range(20) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
    "{{ ns.s | length }}",
    "{% set ns = namespace(t=[1]) %}{% for i in range(20) %}{% set ns.t = [ns.t, ns.t] %}{% endfor %}"
    "{{ ns.t | length }}",
]


@pytest.mark.parametrize("source", JUST_OVER)
def test_values_past_the_size_cap_are_refused(tmp_path: Path, source: str) -> None:
    assert limit_of(tmp_path, source) == "size"


THE_ISSUES_EXAMPLES = [  # each ran for 20 s or more, or made a gigabyte, in the plain sandbox
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ 'x' * 10**9 }}",
    "{{ '%999999999d' % 1 }}",
    "{{ 2 ** (10**9) }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ '{:999999999}'.format(1) }}",
    "{{ range(100000) | join('x' * 10**4) }}",
]


@pytest.mark.parametrize("source", THE_ISSUES_EXAMPLES)
def test_the_issues_runaway_examples_stop_at_once(tmp_path: Path, source: str) -> None:
    clock = FakeClock(per_reading=0.0)
    assert limit_of(tmp_path, source, Renderer(tmp_path, clock=clock)) in ("size", "steps")
    assert clock.readings < 10  # refused before doing the work, not after a second of it


def test_a_quadratic_codec_is_not_available(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="punycode"):
        render(tmp_path, "{{ ('ä' * 1000).encode('punycode') }}")


def test_a_long_value_from_dataworks_may_pass_through_filters(tmp_path: Path) -> None:
    long = stage(message="日志 " * 150_000)  # 450,000 characters: more than the cap, but not made here
    ctx = context(make_run(FAIL, (long,)), (event("stage.failed", FAIL, on=long),))
    write(
        tmp_path,
        "dingtalk/t.md.j2",
        "### x\n{{ events[0].stage.message | replace('日志', 'log') | truncate(20) }}",
    )
    assert Renderer(tmp_path).render("dingtalk", "t", ctx).text.endswith("log log log log...")


# --- size: what a render writes -----------------------------------------------------------------


def test_the_output_is_capped(tmp_path: Path) -> None:
    assert limit_of(tmp_path, "{% for i in range(300) %}{{ 'x' * 1000 }}{% endfor %}") == "output"
    assert limit_of(tmp_path, "{% for i in range(300) %}" + "y" * 1000 + "{% endfor %}") == "output"


def test_what_a_render_makes_in_all_is_capped(tmp_path: Path) -> None:
    piles = [
        "{% set l = [] %}{% for i in range(30) %}{% set _ = l.append('x' * 200000) %}{% endfor %}"
        "{{ l | length }}",
        "{% set s %}{% for i in range(100) %}{% for j in range(400) %}" + "z" * 200 + "{% endfor %}"
        "{% endfor %}{% endset %}{{ s | length }}",
    ]
    for source in piles:
        assert limit_of(tmp_path, source) == "made"


def test_limits_are_the_renderers_to_choose(tmp_path: Path) -> None:
    small = Renderer(tmp_path, limits=RenderLimits(output_chars=100, steps=50))
    assert limit_of(tmp_path, "{{ 'x' * 200 }}", small) == "size"
    assert limit_of(tmp_path, "{% for i in range(60) %}{% endfor %}", small) == "steps"
    assert render(tmp_path, "{% for i in range(40) %}{% endfor %}{{ 'x' * 80 }}", small).endswith("x" * 80)


def test_a_meter_once_over_stays_over() -> None:
    meter = Meter(RenderLimits(steps=2), FakeClock(0.0))
    meter.step()
    meter.step()
    with pytest.raises(OverLimit):
        meter.step()
    meter.steps = 0  # even if whatever caught the first error carried on
    with pytest.raises(OverLimit):
        meter.step()


# --- what templates do every day still works ----------------------------------------------------


def test_everyday_template_features_render_as_before(tmp_path: Path) -> None:
    source = (
        "{% set bad = ['fail', 'terminated'] %}{% set ns = namespace(n=0) %}{% set names = [] %}"
        "{% for s in run.stages %}{% set ns.n = ns.n + 1 %}{% set _ = names.append(s.name) %}"
        "{{ loop.index }}/{{ loop.length }} {{ s.name }}{% if not loop.last %}, {% endif %}{% endfor %}\n\n"
        "{{ names | join(' > ') }} {{ ns.n }} {{ '-' * 3 }} {{ '%-4s|%5.1f' % ('ab', 3.14159) }}"
        " {{ '{:>4}|{}'.format('x', 2 ** 10) }} {{ ([1, 2] + [3]) | sum }} {{ run.id[:8] ~ '…' }}"
        " {{ events | map(attribute='type') | join(',') }} {{ (run.stages | selectattr('status', 'in', bad)"
        " | list | length) }} {{ 'a-b' | replace('-', '+') | center(5) }}\n"
        "{% macro item(x) %}<{{ x }}>{% endmacro %}{{ item(1) }}{{ item('b') }}"
        "{% for n in [[1, [2]], [3]] recursive %}{{ n if n is number else loop(n) }}{% endfor %}"
    )
    # What the sandbox rendered before it was metered (DingTalk escaping included), character for character.
    assert render(tmp_path, source).splitlines()[1:] == [
        "1/2 发布包构建, 2/2 生产发布检查",
        "发布包构建 &gt; 生产发布检查 2 \\--- ab  \\|  3.1 \xa0\xa0\xa0x\\|1024 6 a7ef0634…"
        " run.failed 1 \xa0a+b ",
        "&lt;1&gt;&lt;b&gt;123",
    ]


# --- falling back, visibly ----------------------------------------------------------------------

RUNAWAY = "### runaway\n{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"


def test_a_runaway_template_falls_back_to_default_with_a_note(tmp_path: Path) -> None:
    write(tmp_path, "dingtalk/slow.md.j2", RUNAWAY)
    ctx = context(make_run(), (event("run.failed", FAIL),))
    message, failures = Renderer(tmp_path, clock=FakeClock(0.0)).render_or_fall_back("dingtalk", "slow", ctx)
    assert [name for name, _ in failures] == ["slow"]
    assert isinstance(failures[0][1], TemplateLimitError)
    assert message.title == "❌ 发布失败 · Deployment failed"  # the built-in default's
    *_, note, last = message.text.splitlines()
    assert "slow" in note and "work budget of 100,000 steps" in note and "default template" in note
    assert "defaultProjectId=" in last  # the console link stays last, where trimming keeps it


def test_when_default_runs_away_too_plain_text_stands_in_escaped_and_short(tmp_path: Path) -> None:
    write(tmp_path, "dingtalk/slow.md.j2", RUNAWAY)
    write(tmp_path, "dingtalk/default.md.j2", "### mine\n{{ 'x' * 10**9 }}")
    hostile = stage(name="[点我](http://evil.example) " + "名" * 50_000)
    ctx = context(make_run(FAIL, (hostile,)), (event("stage.failed", FAIL, on=hostile),) * 200)
    message, failures = Renderer(tmp_path, clock=FakeClock(0.0)).render_or_fall_back("dingtalk", "slow", ctx)
    assert [name for name, _ in failures] == ["slow", "default"]
    assert "[点我](http" not in message.text and r"\[点我\]" in message.text  # stays text
    assert len(message.text.encode()) < 20_000  # one line per event, each cut short, at most 50
    *_, note, last = message.text.splitlines()
    assert "more" in message.text and "plain text" in note and "defaultProjectId=" in last


def test_a_fallback_too_long_for_dingtalk_keeps_its_console_link(tmp_path: Path) -> None:
    from dwnotify.text import fit_text

    write(tmp_path, "dingtalk/slow.md.j2", RUNAWAY)
    long = stage(name="名" * 30_000)
    ctx = context(make_run(FAIL, (long,)), (event("stage.failed", FAIL, on=long),))
    message, _ = Renderer(tmp_path, clock=FakeClock(0.0)).render_or_fall_back("dingtalk", "slow", ctx)
    fitted = fit_text(message.text, 20_000)
    assert "defaultProjectId=" in fitted.splitlines()[-1]


def test_a_block_kit_fallback_gets_its_note_as_a_block(tmp_path: Path) -> None:
    write(tmp_path, "slack/slow.mrkdwn.j2", RUNAWAY)
    write(
        tmp_path,
        "slack/default.blocks.json.j2",
        '[{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]',
    )
    ctx = context(make_run(), (event("run.failed", FAIL),), "slack")
    message, _ = Renderer(tmp_path, clock=FakeClock(0.0)).render_or_fall_back("slack", "slow", ctx)
    assert message.blocks is not None and message.blocks[-1]["type"] == "context"
    assert "slow" in message.blocks[-1]["elements"][0]["text"]


# --- a tick: one rule's template never holds up another rule's channel --------------------------


def test_a_template_out_of_time_is_not_started_again_for_the_same_tick(tmp_path: Path) -> None:
    clock = FakeClock(per_reading=0.01)
    renderer = Renderer(tmp_path, clock=clock)
    write(tmp_path, "dingtalk/slow.md.j2", "### slow\n{% for i in range(5000) %}{{ i }}{% endfor %}")
    ctx = context(make_run(), (event("run.failed", FAIL),))
    with pytest.raises(TemplateLimitError, match="time budget"):
        renderer.render("dingtalk", "slow", ctx)
    first = clock.readings
    with pytest.raises(TemplateLimitError, match="time budget"):
        renderer.render("dingtalk", "slow", replace(ctx, events=(event("stage.failed", FAIL),)))
    assert clock.readings == first  # skipped: a tick pays one time budget per template, not one per message
    with pytest.raises(TemplateLimitError):
        renderer.render("dingtalk", "slow", replace(ctx, now=ctx.now.replace(minute=1)))  # a later tick
    assert clock.readings > first


def slow_rule(world: World, tmp_path: Path, source: str) -> None:
    write(tmp_path / "my-templates", "dingtalk/slow.md.j2", source)
    world.config_overrides["templates"] = str(tmp_path / "my-templates")
    world.config_overrides["rules"] = [
        {"name": "runaway", "events": ["run.failed"], "channels": ["ops"], "template": "slow"},
        {"name": "everything", "events": ["*"], "channels": ["team"]},
    ]


def test_a_runaway_template_does_not_hold_up_the_other_rules_channel(world: World, tmp_path: Path) -> None:
    slow_rule(world, tmp_path, RUNAWAY)
    run_id = world.dataworks.add_run(10000, status="Fail", stages=STAGES, stage_statuses={"BUILD": "Fail"})
    summary = world.tick()
    assert (summary.messages_sent, summary.messages_pending, summary.messages_failed) == (2, 0, 0)
    assert any(run_id in slack_text(message) for message in world.slack_messages())
    [ding] = world.ding()
    *_, note, link = ding["markdown"]["text"].splitlines()
    assert run_id in ding["markdown"]["text"] and "slow" in note and "defaultProjectId=" in link
    [error] = summary.errors
    assert "template 'slow' for dingtalk failed" in error
    assert "work budget" in error or "time budget" in error  # steps, unless this machine is very slow


def test_a_slow_template_costs_one_time_budget_per_tick(world: World, tmp_path: Path) -> None:
    slow_rule(world, tmp_path, "### slow\n{% for i in range(10000) %}{{ i }}{% endfor %}")
    settings = config.load(world.write_config(), world.environ())
    world.app = build_app(settings, CREDENTIALS, clock=world.clock, sleep=world.clock.sleep)
    render_clock = FakeClock(per_reading=0.001)  # a millisecond a step: the slow one needs ten seconds
    world.app.notifier = Notifier(
        settings,
        source=world.app.client,
        store=world.app.store,
        make_channel=world.app.channels,
        renderer=lambda: Renderer(settings.templates, builtin_templates_dir(), clock=render_clock),
        clock=world.clock,
        sleep=world.clock.sleep,
    )
    runs = [
        world.dataworks.add_run(10000, status="Fail", stages=STAGES, stage_statuses={"BUILD": "Fail"})
        for _ in range(3)
    ]
    summary = world.tick()
    assert summary.messages_sent == 6 and summary.messages_pending == 0
    assert {run for run in runs for m in world.slack_messages() if run in slack_text(m)} == set(runs)
    assert all("time budget" in ding["markdown"]["text"] for ding in world.ding())
    # One second of render time for the slow template, not three: the second and third were not started.
    assert render_clock.readings < 1000 + 3 * 2 * 200
    assert sum("time budget of 1 s" in error for error in summary.errors) == 3


# --- check --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "says"),
    [
        (RUNAWAY, "budget of"),  # of 100,000 steps (or of 1 s on a very slow machine)
        ("### big\n{{ 'x' * 300000 }}", "more than the 262,144 characters"),
        ("### long\n{% for i in range(300) %}{{ 'y' * 1000 }}{% endfor %}", "rendered more than 262,144"),
    ],
)
def test_check_reports_a_template_past_its_limits(
    world: World, tmp_path: Path, source: str, says: str
) -> None:
    slow_rule(world, tmp_path, source)
    problems = check_templates(config.load(world.write_config(), world.environ()))
    [problem] = problems
    assert problem.startswith("rules[0].template: ") and "slow.md.j2" in problem and says in problem
