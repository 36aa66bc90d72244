"""Chat messages from Jinja2 templates, rendered in a sandbox and compiled once at start.

A template `name` for a channel type is looked up as `<type>/<name>.<ext>.j2`, first in the config's
`templates` folder, then in the built-in `templates/`:

- dingtalk: `<name>.md.j2` renders DingTalk markdown; its first line, stripped of `#`, is the title.
- slack: `<name>.blocks.json.j2` renders Block Kit JSON (a list of blocks, or
  `{"blocks": [...], "text": "..."}`), `<name>.mrkdwn.j2` renders mrkdwn text. The folder comes
  first: a user's `mrkdwn` beats a built-in `blocks.json`; within one folder `blocks.json` wins.

Every `{{ ... }}` output is escaped for its channel by the environment's `finalize` hook, so a
template cannot forget it and a value from DataWorks (a stage name, a message, a creator) stays
text: no link, mention, tag or formatting. Each channel type's escaping is its own (`MARKUP` in its
channel module): DingTalk and the generic webhook escape CommonMark, Lark writes
special characters as the `&#NN;` entities it documents, WeCom breaks mentions, tags and links with
a zero-width space, Slack gets `&`, `<`, `>` as entities. A `.blocks.json.j2` also gets JSON string
escaping, so `"{{ stage.name }}"` is always a valid JSON string; `{{ value | tojson }}` writes a
whole JSON literal, quotes included. `{{ run.console_url }}` is escaped as a link target. Text
written in the template itself (a `<url|text>` link, `*bold*`) is left alone, and `None` prints as
nothing. The title is the first line read back as plain text.

Each render is metered (`dwnotify.sandbox`): past its work or time budget, or making more than a
message may hold, it stops with a TemplateLimitError. `Renderer.render_or_fall_back` is what a tick
uses: the rule's template, else `default`, else plain text, with a note in the message saying so.

Variables: `run` (see `RunView`), `events` (model `Event`s: `type`, `stage`, `status`, `previous`),
`project` (`id`, `name` or None, `label` = name or id), `rule.name`, `channel.name`, `channel.type`,
`now`, and `headline` / `outcome`: a short bilingual headline for the message and the status it reports.
Filters: `duration`, `datetime(fmt, tz)`, `status_emoji`, `status_label(lang)`, `truncate_bytes(n)`,
`quote` (a block quote), `link(text)` (a link in the channel's syntax), `tojson`.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from jinja2 import meta

from dwnotify.channels import CHANNEL_TYPES
from dwnotify.channels.kind import TemplateFormat
from dwnotify.errors import TemplateError, TemplateLimitError
from dwnotify.message import Message
from dwnotify.model import (
    CANCELED,
    FAIL,
    INIT,
    RUNNING,
    SUCCESS,
    TERMINATED,
    Event,
    Run,
    normalize_status,
)
from dwnotify.sandbox import Meter, MeteredEnvironment, RenderLimits, metered
from dwnotify.settings import ProjectSettings
from dwnotify.text import trim_utf8

DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_DATETIME_FORMAT = "%Y-%m-%d %H:%M"

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # dwnotify/, not this sub-package
_KEPT_GLOBALS = ("range", "dict", "namespace")  # the sandbox's metered range; nothing reaches the OS
DEFAULT_LIMITS = RenderLimits()


def builtin_templates_dir() -> Path:
    """The built-in `templates/` folder: beside the package when deployed, at the checkout's top."""
    candidates = (_PACKAGE_DIR.parent / "templates", _PACKAGE_DIR.parent.parent / "templates")
    return next((path for path in candidates if path.is_dir()), candidates[-1])


@dataclass(frozen=True)
class MessageContext:
    """Everything one message is rendered from: a run, its events for one rule and channel, and where."""

    run: Run
    events: tuple[Event, ...]
    project: ProjectSettings
    rule_name: str
    channel_name: str
    channel_type: str
    console_url: str
    now: datetime


class Url(str):
    """A URL from the settings (the console link): escaped as a link target, not as text."""

    __slots__ = ()


@dataclass(frozen=True)
class RunView(Run):
    """The `run` a template sees: Id trimmed, stages in Step order, plus `console_url` and `duration`."""

    console_url: str = ""
    duration: timedelta | None = None

    @classmethod
    def of(cls, run: Run, console_url: str) -> RunView:
        """The view of `run` with its console link."""
        duration = None
        if run.final and run.create_time is not None and run.modify_time is not None:
            duration = max(run.modify_time - run.create_time, timedelta(0))
        values = {item.name: getattr(run, item.name) for item in fields(Run)}
        values.update(id=run.id.strip(), stages=tuple(sorted(run.stages, key=lambda stage: stage.step)))
        return cls(**values, console_url=Url(console_url), duration=duration)


# --- headlines and status words ---------------------------------------------------------------

_STATUS_WORDS: Mapping[str, tuple[str, str, str]] = {
    SUCCESS: ("✅", "成功", "Succeeded"),
    FAIL: ("❌", "失败", "Failed"),
    RUNNING: ("⏳", "运行中", "Running"),
    INIT: ("⏸", "未开始", "Pending"),
    TERMINATED: ("⛔", "已终止", "Terminated"),
    CANCELED: ("🚫", "已取消", "Canceled"),
}
_RUN_HEADLINES: Mapping[str, str] = {
    SUCCESS: "发布成功 · Deployment succeeded",
    FAIL: "发布失败 · Deployment failed",
    RUNNING: "发布进行中 · Deployment in progress",
    INIT: "发布待开始 · Deployment pending",
    TERMINATED: "发布已终止 · Deployment terminated",
    CANCELED: "发布已取消 · Deployment canceled",
}
_STAGE_HEADLINES: Mapping[str, str] = {
    FAIL: "阶段失败 · Stage failed",
    TERMINATED: "阶段已终止 · Stage terminated",
    CANCELED: "阶段已取消 · Stage canceled",
}


def status_emoji(status: object) -> str:
    """The emoji of a status (any spelling); ❔ for an unknown one."""
    return _STATUS_WORDS.get(normalize_status(status), ("❔", "", ""))[0]


def status_label(status: object, lang: str = "both") -> str:
    """A status in words: `失败 Failed` (lang `both`), `失败` (`zh`), `Failed` (`en`); unknown as it came."""
    normal = normalize_status(status)
    if normal not in _STATUS_WORDS:
        return normal
    _, chinese, english = _STATUS_WORDS[normal]
    return {"zh": chinese, "en": english}.get(lang, f"{chinese} {english}")


def headline(run_status: str, events: Sequence[Event]) -> tuple[str, str]:
    """A message's headline and the status it reports: the run's end, else a stage failure, else progress."""
    for event in reversed(events):
        if event.stage is None and event.type != "run.started":
            return _RUN_HEADLINES.get(event.status, f"发布状态 · Deployment {event.status}"), event.status
    for event in events:
        if event.stage is not None and event.status in _STAGE_HEADLINES:
            return _STAGE_HEADLINES[event.status], event.status
    if any(event.type == "run.started" for event in events):
        return "发布开始 · Deployment started", RUNNING
    return _RUN_HEADLINES.get(run_status, f"发布状态 · Deployment {run_status}"), run_status


def template_context(ctx: MessageContext) -> dict[str, Any]:
    """The variables a template is rendered with (listed in the module docstring)."""
    title, outcome = headline(ctx.run.status, ctx.events)
    return {
        "run": RunView.of(ctx.run, ctx.console_url),
        "events": list(ctx.events),
        "project": ctx.project,
        "rule": {"name": ctx.rule_name},
        "channel": {"name": ctx.channel_name, "type": ctx.channel_type},
        "now": ctx.now,
        "headline": title,
        "outcome": outcome,
    }


# --- plain filters ------------------------------------------------------------------------------


def format_duration(value: timedelta | None) -> str:
    """A duration in its two largest units: `1h 3m`, `3m 12s`, `45s`; empty for None."""
    if value is None:
        return ""
    rest = max(0, int(value.total_seconds()))
    amounts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, rest = divmod(rest, size)
        amounts.append((amount, unit))
    first = next((i for i, (amount, _) in enumerate(amounts) if amount), len(amounts) - 1)
    return " ".join(f"{amount}{unit}" for amount, unit in amounts[first : first + 2] if amount) or "0s"


@lru_cache(maxsize=32)
def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if name == DEFAULT_TIMEZONE:  # a runtime without tz data; China keeps UTC+8 all year
            return timezone(timedelta(hours=8), "CST")
        raise ValueError(f"unknown time zone {name!r}") from None


def format_datetime(
    value: datetime | None, fmt: str = DEFAULT_DATETIME_FORMAT, tz: str = DEFAULT_TIMEZONE
) -> str:
    """A datetime shown in time zone `tz` (naive ones are taken as UTC); empty for None."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(_zone(tz)).strftime(fmt)


def truncate_bytes(value: object, n: int) -> str:
    """At most `n` bytes of UTF-8, cut on a character boundary and ending with a visible marker."""
    return trim_utf8("" if value is None else str(value), n)


# --- channel formats and escaping ---------------------------------------------------------------


def _formats(channel_type: str) -> tuple[TemplateFormat, ...] | None:
    known = CHANNEL_TYPES.get(channel_type)
    return known.formats if known else None


class _Raw(str):
    """Output a filter has already escaped for its channel: `finalize` lets it through."""

    __slots__ = ()


class _Environment(MeteredEnvironment):
    """A strict, metered sandbox for one template format, escaping every output through `finalize`."""

    def __init__(self, loader: jinja2.BaseLoader, fmt: TemplateFormat, limits: RenderLimits) -> None:
        self.format = fmt
        super().__init__(
            limits=limits,
            loader=loader,
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # chat markup, not HTML: finalize escapes per channel
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            auto_reload=False,
            finalize=self._finalize,
        )
        self.globals = {name: self.globals[name] for name in _KEPT_GLOBALS}
        self.filters.update(
            duration=format_duration,
            datetime=format_datetime,
            status_emoji=status_emoji,
            status_label=status_label,
            truncate_bytes=truncate_bytes,
            quote=self._quote,
            link=self._link,
            tojson=self._tojson,
        )
        self.meter_filters()

    def _finalize(self, value: object) -> str:
        if isinstance(value, _Raw):
            return value
        if value is None:
            return ""
        if isinstance(value, Url):
            return self.format.escape_output(self.format.markup.url(value))
        return self.format.escape_output(self.format.escape_text(str(value)))

    def _quote(self, value: object) -> _Raw:
        """A block quote of a (multi-line) text, one `> ` per line."""
        lines = ("" if value is None else str(value)).strip().splitlines() or [""]
        body = "\n".join(f"> {self.format.escape_text(line.rstrip())}".rstrip() for line in lines)
        return _Raw(self.format.escape_output(body))

    def _link(self, url: object, text: object = None) -> _Raw:
        """A link in the channel's syntax: `<url|text>` (Slack) or `[text](url)` (DingTalk)."""
        label = str(url if text is None else text)
        return _Raw(self.format.escape_output(self.format.markup.link(str(url), label)))

    def _tojson(self, value: object) -> str:
        """A JSON literal; in a `.blocks.json.j2` its strings are escaped for mrkdwn too."""
        if not self.format.is_json:
            return json.dumps(value, ensure_ascii=False, default=str)
        return _Raw(json.dumps(_map_strings(value, self.format.escape_text), ensure_ascii=False, default=str))


def _map_strings(value: object, func: Callable[[str], str]) -> object:
    if isinstance(value, str):
        return func(value)
    if isinstance(value, Mapping):
        return {key: _map_strings(item, func) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_map_strings(item, func) for item in value]
    return value


# --- the renderer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    template: jinja2.Template
    format: TemplateFormat
    path: str


class Renderer:
    """Compiles and renders message templates, searching the user's folder before the built-in one.

    Each render is metered against `limits` on `clock` (see `dwnotify.sandbox`). A template that runs
    out of time is not started again for messages of the same moment (`MessageContext.now`, shared by
    one tick's or one check's messages): a slow template costs a tick one time budget, not one a message.
    """

    def __init__(
        self,
        user_dir: Path | None,
        builtin_dir: Path | None = None,
        *,
        limits: RenderLimits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        builtin = builtin_dir if builtin_dir is not None else builtin_templates_dir()
        self.search_path = tuple(path for path in (user_dir, builtin) if path is not None)
        self.limits = limits
        self._clock = clock
        self._loader = jinja2.FileSystemLoader([str(path) for path in self.search_path])
        self._environments = {
            (kind.name, fmt.ext): _Environment(self._loader, fmt, limits)
            for kind in CHANNEL_TYPES.values()
            for fmt in kind.formats
        }
        self._compiled: dict[tuple[str, str], _Compiled] = {}
        self._out_of_time: dict[tuple[str, str], tuple[datetime, TemplateLimitError]] = {}

    def compile(self, channel_type: str, name: str) -> None:
        """Load, check and cache template `name` for a channel type; TemplateError if missing or invalid."""
        self._template(channel_type, name)

    def render(self, channel_type: str, name: str, ctx: MessageContext) -> Message:
        """Render one message; TemplateError names the template file and line when anything fails.

        TemplateLimitError when the render goes past its limits.
        """
        compiled = self._template(channel_type, name)
        spent = self._out_of_time.get((channel_type, name))
        if spent is not None and spent[0] == ctx.now:
            first = spent[1]
            raise TemplateLimitError(
                str(first), template=first.template, limit=first.limit, reason=first.reason
            )
        with metered(self.limits, self._clock) as meter:
            try:
                text = self._generate(compiled, template_context(ctx), meter)
            except Exception as exc:  # a template can fail in any way; the user needs its file and line
                if meter.over is None:
                    raise TemplateError(_describe(exc, compiled), template=compiled.path) from exc
                over = meter.over  # also when what surfaced is another error, raised after it
                error = TemplateLimitError(
                    _describe(exc, compiled, str(over)),
                    template=compiled.path,
                    limit=over.limit,
                    reason=_reason(over.limit, self.limits),
                )
                if over.limit == "time":
                    self._out_of_time[channel_type, name] = (ctx.now, error)
                raise error from exc
        return _message(text, compiled)

    def render_or_fall_back(
        self, channel_type: str, name: str, ctx: MessageContext
    ) -> tuple[Message, list[tuple[str, TemplateError]]]:
        """Template `name`; if it fails, `default`, then plain text, with a note saying why. Never raises.

        Returns the message and the failures, (template name, error), for the caller to log.
        """
        failures: list[tuple[str, TemplateError]] = []
        for candidate in dict.fromkeys((name, "default")):
            try:
                message = self.render(channel_type, candidate, ctx)
            except TemplateError as error:
                failures.append((candidate, error))
                continue
            if failures:
                message = with_note(message, fallback_note(failures, "default"), channel_type)
            return message, failures
        return plain_message(ctx, fallback_note(failures, "plain"), self.limits.output_chars), failures

    def _generate(self, compiled: _Compiled, variables: dict[str, Any], meter: Meter) -> str:
        """The template's text, stopped once it is longer than the output cap."""
        parts, size = [], 0
        for chunk in compiled.template.generate(variables):
            size += len(chunk)
            if size > self.limits.output_chars:
                meter.fail("output", f"rendered more than {self.limits.output_chars:,} characters")
            parts.append(chunk)
        return "".join(parts)

    def _template(self, channel_type: str, name: str) -> _Compiled:
        cached = self._compiled.get((channel_type, name))
        if cached is not None:
            return cached
        formats = _formats(channel_type)
        if formats is None:
            raise TemplateError(f"no templates for channel type {channel_type!r}", template=name)
        # The contract's order: the user's folder before the built-in one, then the kind within it.
        for folder in self.search_path:
            for fmt in formats:
                path = f"{channel_type}/{name}.{fmt.ext}.j2"
                if not (folder / path).is_file():
                    continue
                # The loader searches the user's folder first: nothing earlier in the order has `path`.
                template = self._load(self._environments[channel_type, fmt.ext], path, required=False)
                if template is not None:
                    compiled = _Compiled(template, fmt, path)
                    self._compiled[channel_type, name] = compiled
                    return compiled
        tried = " or ".join(f"{channel_type}/{name}.{fmt.ext}.j2" for fmt in formats)
        folders = ", ".join(str(path) for path in self.search_path)
        raise TemplateError(f"template {tried} not found in {folders}", template=tried)

    def _load(self, env: _Environment, path: str, *, required: bool) -> jinja2.Template | None:
        """Compile a template and every template it includes, imports or extends by a literal name."""
        try:
            template = env.get_template(path)
            source, _, _ = self._loader.get_source(env, path)
            references = list(meta.find_referenced_templates(env.parse(source)))
        except jinja2.TemplateNotFound as exc:
            if required or exc.name != path:
                message = f"template {exc.name} not found (used by {path})"
                raise TemplateError(message, template=path) from None
            return None
        except jinja2.TemplateSyntaxError as exc:
            where = f"{exc.filename or exc.name or path}, line {exc.lineno}"
            raise TemplateError(f"{where}: {exc.message}", template=path) from None
        for reference in references:
            if reference is not None and reference != path:
                self._load(env, reference, required=True)
        return template


def _reason(limit: str, limits: RenderLimits) -> str:
    """A limit in words, for the note on a fallback message."""
    if limit == "time":
        return f"it ran past its time budget of {limits.seconds:g} s"
    if limit == "steps":
        return f"it ran past its work budget of {limits.steps:,} steps"
    return f"it made more than a message may hold, {limits.output_chars:,} characters"


def _describe(exc: Exception, compiled: _Compiled, what: str | None = None) -> str:
    """`<file>, line <n>: <what went wrong>`, pointing at the innermost template frame."""
    if what is None:
        what = str(exc) if isinstance(exc, jinja2.TemplateError) else f"{type(exc).__name__}: {exc}"
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename.endswith(".j2")]
    if frames:
        return f"{frames[-1].filename}, line {frames[-1].lineno}: {what}"
    return f"{compiled.template.filename or compiled.path}: {what}"


def _message(text: str, compiled: _Compiled) -> Message:
    """The Message for a template's output: title from the first line, blocks parsed from JSON."""
    blocks = None
    if compiled.format.is_json:
        text, blocks = _parse_blocks(text, compiled)
    text = text.strip("\n")
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    markup = compiled.format.markup
    title = markup.plain(first_line.strip(markup.title_marks))
    if not title:
        raise TemplateError(f"{compiled.path} rendered an empty message", template=compiled.path)
    return Message(title=title, text=text, blocks=blocks)


def _parse_blocks(output: str, compiled: _Compiled) -> tuple[str, tuple[dict[str, Any], ...]]:
    """The Block Kit blocks of a `.blocks.json.j2` output and the text Slack shows in notifications."""
    try:
        data = json.loads(output)
    except json.JSONDecodeError as exc:
        message = f"{compiled.path} rendered invalid JSON, line {exc.lineno} column {exc.colno}: {exc.msg}"
        raise TemplateError(message, template=compiled.path) from None
    text = data.get("text") if isinstance(data, dict) else None
    blocks = data.get("blocks") if isinstance(data, dict) else data
    if not isinstance(blocks, list) or not all(isinstance(block, dict) for block in blocks):
        message = f'{compiled.path} must render a JSON list of blocks or {{"blocks": [...]}}'
        raise TemplateError(message, template=compiled.path)
    if not isinstance(text, str):
        text = "\n".join(_block_texts(blocks))
    return text, tuple(blocks)


def _block_texts(blocks: list[dict[str, Any]]) -> list[str]:
    texts = []
    for block in blocks:
        for item in [block.get("text"), *(block.get("fields") or [])]:
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                texts.append(item["text"])
    return texts


# --- fallbacks ----------------------------------------------------------------------------------

_MAX_PLAIN_EVENTS = 50
_MAX_PLAIN_VALUE_BYTES = 300


def _escape_for(channel_type: str) -> Callable[[str], str]:
    known = CHANNEL_TYPES.get(channel_type)
    return known.markup.escape if known else str


def fallback_note(failures: Sequence[tuple[str, TemplateError]], stand_in: str) -> str:
    """The line a fallback message ends with: which template failed, roughly why, and what stands in."""
    names = " / ".join(name for name, _ in failures)
    first = failures[0][1] if failures else None
    why = (
        first.reason if isinstance(first, TemplateLimitError) else "it failed; the error is in the tick's log"
    )
    zh, en = ("默认模板", "the default template") if stand_in == "default" else ("纯文本", "plain text")
    return (
        f"⚠️ 模板 {names} 未能生成此消息，已改用{zh} · "
        f"Template {names} could not render this message ({why}); {en} stands in."
    )


def with_note(message: Message, note: str, channel_type: str) -> Message:
    """`message` with `note` before its last line (and, for Block Kit, as its last block).

    The last line stays last: it is the console link, which the channels keep when they trim a message.
    """
    escaped = _escape_for(channel_type)(note)
    blocks = message.blocks
    if blocks is not None:
        blocks = (*blocks, {"type": "context", "elements": [{"type": "mrkdwn", "text": escaped}]})
    body, newline, last = message.text.rstrip("\n").rpartition("\n")
    text = f"{body}\n\n{escaped}\n{last}" if newline else f"{escaped}\n{last}"
    return Message(title=message.title, text=text, blocks=blocks)


def plain_message(ctx: MessageContext, note: str, max_chars: int) -> Message:
    """The last resort when templates fail: the run, its events and the console link; no template runs.

    Values are escaped for the channel as a template's would be, and cut short: it cannot fail or grow.
    """
    escape = _escape_for(ctx.channel_type)

    def value(text: object) -> str:
        return escape(trim_utf8("" if text is None else str(text).strip(), _MAX_PLAIN_VALUE_BYTES))

    title = f"DataWorks run {ctx.run.id.strip()} in workspace {ctx.project.label}"
    lines = [escape(trim_utf8(title, _MAX_PLAIN_VALUE_BYTES))]
    for event in ctx.events[:_MAX_PLAIN_EVENTS]:
        lines.append(f"- {value(event.type)}: {value(event.stage.name if event.stage else ctx.run.id)}")
    if len(ctx.events) > _MAX_PLAIN_EVENTS:
        lines.append(f"- … {len(ctx.events) - _MAX_PLAIN_EVENTS} more")
    lines += [escape(note), value(ctx.console_url)]  # the link last: trimming keeps the last line
    return Message(title=trim_utf8(title, _MAX_PLAIN_VALUE_BYTES), text="\n".join(lines)[:max_chars])
