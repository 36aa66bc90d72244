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
`Renderer.render_variables` renders from other variables, the same way (a daily digest's: see
`dwnotify.digest`).

Variables: `run` (see `RunView`; `run.items` are the `RunItem`s it deploys, failed first: `name`,
`type`, `version`, `status`, `message`, `owner`, `failed`; read only for a run's first message and its
first failure, else empty), `events` (model `Event`s: `type`, `stage`, `status`, `previous`),
`project` (`id`, `name` or None, `label` = name or id), `rule.name`, `channel.name`, `channel.type`,
`now`, and `headline` / `outcome`: a short bilingual headline for the message and the status it reports.
Filters: `duration`, `datetime(fmt, tz)`, `status_emoji`, `status_label(lang)`, `truncate_bytes(n)`,
`quote` (a block quote), `link(text)` (a link in the channel's syntax), `tojson`.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

from dwnotify.channels import CHANNEL_TYPES
from dwnotify.channels.kind import TemplateFormat
from dwnotify.errors import TemplateError, TemplateLimitError
from dwnotify.message import Message
from dwnotify.sandbox import Meter, RenderLimits, metered

from .context import MessageContext, template_context
from .environment import _Environment, _formats, builtin_templates_dir, template_loader
from .fallback import fallback_note, plain_message, with_note
from .filters import (
    format_datetime,
    format_duration,
    status_emoji,
    status_label,
    truncate_bytes,
)

__all__ = [  # what the rest of dwnotify and the tests import from here
    "MessageContext",
    "Renderer",
    "builtin_templates_dir",
    "format_datetime",
    "format_duration",
    "status_emoji",
    "status_label",
    "truncate_bytes",
]

DEFAULT_LIMITS = RenderLimits()


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
        self._loader = template_loader(self.search_path)
        self._environments = {
            (kind.name, fmt.ext): _Environment(self._loader, fmt, limits)
            for kind in CHANNEL_TYPES.values()
            for fmt in kind.formats
        }
        self._compiled: dict[tuple[str, str], _Compiled] = {}
        self._exists: dict[tuple[str, str], bool] = {}
        self._out_of_time: dict[tuple[str, str], tuple[datetime, TemplateLimitError]] = {}

    def compile(self, channel_type: str, name: str) -> None:
        """Load, check and cache template `name` for a channel type; TemplateError if missing or invalid."""
        self._template(channel_type, name)

    def exists(self, channel_type: str, name: str) -> bool:
        """Whether some folder of the search path has template `name` for the channel type (looked for
        once: a tick asks for every living message it renders)."""
        found = self._exists.get((channel_type, name))
        if found is None:
            formats = _formats(channel_type) or ()
            found = self._exists[channel_type, name] = any(
                (folder / f"{channel_type}/{name}.{fmt.ext}.j2").is_file()
                for folder in self.search_path
                for fmt in formats
            )
        return found

    def render(self, channel_type: str, name: str, ctx: MessageContext) -> Message:
        """Render one message; TemplateError names the template file and line when anything fails.

        TemplateLimitError when the render goes past its limits.
        """
        return self._render(channel_type, name, lambda: template_context(ctx), ctx.now)

    def render_variables(
        self, channel_type: str, name: str, variables: Mapping[str, Any], now: datetime
    ) -> Message:
        """Render template `name` from any variables (a daily digest's), escaped, metered and failing
        as `render` does; `now` is the moment whose messages a template out of time is not retried for.
        """
        return self._render(channel_type, name, lambda: dict(variables), now)

    def _render(
        self, channel_type: str, name: str, variables: Callable[[], dict[str, Any]], now: datetime
    ) -> Message:
        # The variables are made inside the metered try, as they always were: a view that fails to
        # build is reported as the template's failure, and its cost counts against the budget.
        compiled = self._template(channel_type, name)
        spent = self._out_of_time.get((channel_type, name))
        if spent is not None and spent[0] == now:
            first = spent[1]
            raise TemplateLimitError(
                str(first), template=first.template, limit=first.limit, reason=first.reason
            )
        with metered(self.limits, self._clock) as meter:
            try:
                text = self._generate(compiled, variables(), meter)
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
                    self._out_of_time[channel_type, name] = (now, error)
                raise error from exc
        return _message(text, compiled)

    def render_or_fall_back(
        self, channel_type: str, name: str, ctx: MessageContext, fallback: str = "default"
    ) -> tuple[Message, list[tuple[str, TemplateError]]]:
        """Template `name`; if it fails, `fallback`, then plain text, with a note saying why. Never raises.

        Returns the message and the failures, (template name, error), for the caller to log.
        """
        failures: list[tuple[str, TemplateError]] = []
        for candidate in dict.fromkeys((name, fallback)):
            try:
                message = self.render(channel_type, candidate, ctx)
            except TemplateError as error:
                failures.append((candidate, error))
                continue
            if failures:
                message = with_note(message, fallback_note(failures, fallback), channel_type)
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
