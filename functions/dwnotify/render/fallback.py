"""What stands in when templates fail: the note saying so, the default template's message, plain text."""

from __future__ import annotations

from collections.abc import Sequence

from dwnotify.channels import CHANNEL_TYPES
from dwnotify.channels.base import Markup
from dwnotify.errors import TemplateError, TemplateLimitError
from dwnotify.message import Message
from dwnotify.text import trim_utf8

from .context import MessageContext

_MAX_PLAIN_EVENTS = 50
_MAX_PLAIN_VALUE_BYTES = 300


def _markup(channel_type: str) -> Markup:
    known = CHANNEL_TYPES.get(channel_type)
    return known.markup if known else Markup(str)


def fallback_note(failures: Sequence[tuple[str, TemplateError]], stand_in: str) -> str:
    """The line a fallback message ends with: which template failed, roughly why, and what stands in."""
    names = " / ".join(name for name, _ in failures)
    first = failures[0][1] if failures else None
    why = (
        first.reason if isinstance(first, TemplateLimitError) else "it failed; the error is in the tick's log"
    )
    zh, en = ("纯文本", "plain text") if stand_in == "plain" else ("默认模板", "the default template")
    return (
        f"⚠️ 模板 {names} 未能生成此消息，已改用{zh} · "
        f"Template {names} could not render this message ({why}); {en} stands in."
    )


def with_note(message: Message, note: str, channel_type: str) -> Message:
    """`message` with `note` before its last line (and, for Block Kit, as its last block).

    The last line stays last: it is the console link, which the channels keep when they trim a message.
    """
    escaped = _markup(channel_type).escape(note)
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
    markup = _markup(ctx.channel_type)
    escape = markup.escape

    def value(text: object) -> str:
        return escape(trim_utf8("" if text is None else str(text).strip(), _MAX_PLAIN_VALUE_BYTES))

    title = f"DataWorks run {ctx.run.id.strip()} in workspace {ctx.project.label}"
    lines = [escape(trim_utf8(title, _MAX_PLAIN_VALUE_BYTES))]
    for event in ctx.events[:_MAX_PLAIN_EVENTS]:
        lines.append(f"- {value(event.type)}: {value(event.stage.name if event.stage else ctx.run.id)}")
    if len(ctx.events) > _MAX_PLAIN_EVENTS:
        lines.append(f"- … {len(ctx.events) - _MAX_PLAIN_EVENTS} more")
    # The link last, escaped as a link target (as a template's is): trimming keeps the last line.
    lines += [escape(note), markup.url(ctx.console_url.strip())]
    return Message(title=trim_utf8(title, _MAX_PLAIN_VALUE_BYTES), text="\n".join(lines)[:max_chars])
