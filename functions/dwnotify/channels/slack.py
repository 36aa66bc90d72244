"""Slack incoming webhooks: mrkdwn laid out as Block Kit sections, template blocks fitted to Block Kit.

Block Kit's documented limits have their one home here: at most 50 blocks a message; a header's
plain_text up to 150 characters; a section's text up to 3,000 and at most 10 fields of 2,000; at most
10 context elements; any other text object 1 to 3,000 characters; a `block_id` up to 255. Slack
refuses a message that breaks one (400 `invalid_blocks`, for good), so nothing sent here breaks one:

- the mrkdwn layout (`sections`) splits long text at line breaks, else at whitespace, never inside an
  entity such as `&amp;` or a `<url|text>` link;
- what a `.blocks.json.j2` renders is fitted (`fit_blocks`): a long text is cut and ends with `…`,
  extra blocks, fields or elements give way to a `…(truncated)` marker, an empty text object (which
  Slack refuses) is left out. Blocks that cutting cannot repair (a header without plain_text) are sent
  as the mrkdwn layout of the message text instead. `dwnotify check` reports every limit a template's
  sample output breaks (`layout_problems`), so the cut is a safety net, not the design.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import DeliveryError
from ..message import Message
from ..settings import PersonSettings
from ..text import TRIM_MARKER, trim_utf8
from .base import HttpChannel, Markup, retry_after_seconds
from .kind import WEBHOOK, ChannelType, DigestRules, PersonId, RateBudget, TemplateFormat

log = logging.getLogger(__name__)

MAX_BLOCKS = 50
MAX_HEADER_CHARS = 150
MAX_SECTION_CHARS = 3_000
MAX_FIELDS = 10
MAX_FIELD_CHARS = 2_000
MAX_CONTEXT_ELEMENTS = 10
MAX_TEXT_OBJECT_CHARS = 3_000
MAX_BLOCK_ID_CHARS = 255
MAX_TEXT_CHARS = 40_000  # the top-level `text`: Slack truncates past it
ELLIPSIS = "…"

# A `<url|text>` link, `<!here>` or `<@U123>`, or an entity: a cut inside one breaks it.
_UNBREAKABLE = re.compile(r"<[^<>\n]*>|&(?:#[0-9]+|#x[0-9a-fA-F]+|[A-Za-z]+);")
_TEXT_TYPES = ("mrkdwn", "plain_text")


# --- cutting text -------------------------------------------------------------------------------


def split_text(text: str, size: int) -> tuple[str, str]:
    """`text` in two, the first part at most `size` characters, cut where a reader would cut it.

    At whitespace in the second half of the room, else as late as possible outside any entity or
    link: never inside one, unless one alone is longer than `size`. The whitespace at the cut belongs
    to neither part.
    """
    if len(text) <= size:
        return text, ""
    inside = [False] * (size + 1)
    for match in _UNBREAKABLE.finditer(text):
        if match.start() >= size:
            break
        for index in range(match.start() + 1, min(match.end(), size + 1)):
            inside[index] = True
    safe = [index for index in range(size, 0, -1) if not inside[index]]
    spaced = (index for index in safe if index > size // 2 and text[index].isspace())
    cut = next(spaced, safe[0] if safe else size)
    return text[:cut].rstrip(), text[cut:].lstrip()


def truncate(text: str, size: int) -> str:
    """At most `size` characters of `text`, cut as `split_text` cuts and ending with `…` when cut."""
    if len(text) <= size:
        return text
    head, _ = split_text(text, size - len(ELLIPSIS))
    return head + ELLIPSIS


# --- the mrkdwn layout --------------------------------------------------------------------------


def _chunks(text: str, size: int) -> list[str]:
    """Split text into pieces of at most `size` characters, at line breaks where possible."""
    pieces: list[str] = []
    current = ""
    for full_line in text.splitlines():
        line = full_line
        quote = "> " if line.startswith("> ") else ""  # a quoted line stays quoted on its next piece
        while len(line) > size:
            room = size - len(current) - 1 if current else size
            if room < size // 2:  # too little left beside the lines before: start a new section
                pieces.append(current)
                current, room = "", size
            head, rest = split_text(line, room)
            pieces.append(f"{current}\n{head}" if current else head)
            current = ""
            line = quote + rest if rest and len(quote + rest) < len(line) else rest
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > size:
            pieces.append(current)
            current = line
        else:
            current = candidate
    if current:
        pieces.append(current)
    return [piece for piece in pieces if piece.strip()]


def _marker() -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": TRIM_MARKER}]}


def _fit_count(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most MAX_BLOCKS: the first ones, a marker, and the last one (the console link)."""
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    return [*blocks[: MAX_BLOCKS - 2], _marker(), blocks[-1]]


def sections(text: str) -> list[dict[str, Any]]:
    """Block Kit sections for mrkdwn text, within Slack's per-section and per-message limits.

    `verbatim` keeps Slack from turning bare URLs, channel names and mentions in values into links:
    the template's own `<url|text>` links are what links.
    """
    return _fit_count(
        [
            {"type": "section", "text": {"type": "mrkdwn", "text": chunk, "verbatim": True}}
            for chunk in _chunks(text, MAX_SECTION_CHARS)
        ]
    )


# --- fitting template blocks --------------------------------------------------------------------


class _Unfit(Exception):
    """A block that no cut makes acceptable to Slack."""


@dataclass(frozen=True)
class Fitted:
    """Template blocks fitted to Block Kit: what to send (None: the mrkdwn layout) and what was wrong."""

    blocks: list[dict[str, Any]] | None
    problems: list[str]


_Note = Callable[[str], None]


def _prefixed(note: _Note, prefix: str) -> _Note:
    return lambda what: note(prefix + what)


def _text_object(value: object, limit: int, note: _Note, types: Sequence[str] = _TEXT_TYPES) -> Any:
    """A text object cut to `limit` characters; None when empty (Slack wants at least one character)."""
    if not isinstance(value, Mapping) or value.get("type") not in types:
        raise _Unfit(f"text must be a {' or '.join(types)} text object")
    if not isinstance(value.get("text"), str):
        raise _Unfit("a text object's text must be a string")
    if not value["text"]:
        note("empty text, which Slack refuses (left out)")
        return None
    if len(value["text"]) > limit:
        note(f"text over Block Kit's limit of {limit:,} characters")
        return {**value, "text": truncate(value["text"], limit)}
    return dict(value)


def _capped(items: list[Any], limit: int, what: str, note: _Note) -> list[Any]:
    """At most `limit` items: the first ones and a marker saying how many more there were."""
    if len(items) <= limit:
        return items
    note(f"more than {limit} {what}, Block Kit's limit")
    more = len(items) - limit + 1
    return [*items[: limit - 1], {"type": "mrkdwn", "text": f"{ELLIPSIS}(+{more} more)"}]


def _fit_section(block: dict[str, Any], note: _Note) -> dict[str, Any] | None:
    if "text" in block:
        text = _text_object(block.pop("text"), MAX_SECTION_CHARS, note)
        if text is not None:
            block["text"] = text
    if "fields" in block:
        if not isinstance(block["fields"], list):
            raise _Unfit("fields must be a list of text objects")
        field_note = _prefixed(note, "a field's ")
        fields = [_text_object(field, MAX_FIELD_CHARS, field_note) for field in block.pop("fields")]
        fields = _capped([field for field in fields if field is not None], MAX_FIELDS, "fields", note)
        if fields:
            block["fields"] = fields
    if "text" not in block and "fields" not in block:  # Slack wants one; an accessory alone is refused
        return None
    return block


def _fit_context(block: dict[str, Any], note: _Note) -> dict[str, Any] | None:
    elements = block.get("elements")
    if not isinstance(elements, list) or not all(isinstance(e, Mapping) for e in elements):
        raise _Unfit("elements must be a list of text objects and images")
    kept = []
    for element in elements:
        if element.get("type") in _TEXT_TYPES:
            text = _text_object(element, MAX_TEXT_OBJECT_CHARS, _prefixed(note, "an element's "))
            kept.extend([] if text is None else [text])
        else:
            kept.append(dict(element))
    block["elements"] = _capped(kept, MAX_CONTEXT_ELEMENTS, "elements", note)
    return block if block["elements"] else None


def _fit_block(block: Mapping[str, Any], note: _Note) -> dict[str, Any] | None:
    """One block within its limits (a copy), or None when nothing of it is left to show."""
    fitted = dict(block)
    block_id = fitted.get("block_id")
    if isinstance(block_id, str) and len(block_id) > MAX_BLOCK_ID_CHARS:
        note(f"block_id over Block Kit's limit of {MAX_BLOCK_ID_CHARS} characters")
        fitted["block_id"] = block_id[:MAX_BLOCK_ID_CHARS]
    kind = fitted.get("type")
    if kind == "header":
        text = _text_object(fitted.get("text"), MAX_HEADER_CHARS, note, types=("plain_text",))
        return None if text is None else {**fitted, "text": text}
    if kind == "section":
        return _fit_section(fitted, note)
    if kind == "context":
        return _fit_context(fitted, note)
    return fitted  # other kinds are Slack's to judge


def fit_blocks(blocks: Sequence[Mapping[str, Any]]) -> Fitted:
    """`blocks` cut to Block Kit's limits, with one line per limit broken (`block 2 (section): ...`)."""
    problems: dict[str, None] = {}  # ordered, without repeats: twelve long fields are one problem
    fitted: list[dict[str, Any]] = []
    for number, block in enumerate(blocks, 1):
        where = f"block {number} ({block.get('type')})"

        def note(what: str, where: str = where) -> None:
            problems.setdefault(f"{where}: {what}")

        try:
            kept = _fit_block(block, note)
        except _Unfit as error:
            note(f"{error}; the message is sent in the plain mrkdwn layout instead")
            return Fitted(None, list(problems))
        if kept is not None:
            fitted.append(kept)
    if len(fitted) > MAX_BLOCKS:
        problems.setdefault(f"more than {MAX_BLOCKS} blocks, Block Kit's limit for a message")
    if not fitted:
        problems.setdefault("no block left to show; the message is sent in the plain mrkdwn layout instead")
        return Fitted(None, list(problems))
    return Fitted(_fit_count(fitted), list(problems))


def layout_problems(blocks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every Block Kit limit that `blocks` break, one line each (what `dwnotify check` reports)."""
    return fit_blocks(blocks).problems


# --- the channel --------------------------------------------------------------------------------


def build_payload(message: Message, channel: str = "") -> dict[str, Any]:
    """The webhook body: the message's own blocks fitted to Block Kit, else its mrkdwn layout.

    The top-level `text` (the notification, and the fallback where blocks do not show) is the title
    followed by the message's mentions, so the person is named there too, not only in the blocks.
    """
    blocks = None
    if message.blocks is not None:
        fitted = fit_blocks(message.blocks)
        if fitted.problems:
            problems = "; ".join(fitted.problems)
            log.warning(
                "slack: template blocks fitted to Block Kit: %s", problems, extra={"channel": channel}
            )
        blocks = fitted.blocks
    if blocks is None:
        blocks = sections(message.text)
    mentions = " ".join(filter(None, map(slack_mention, message.mentions)))
    text = trim_utf8(message.title or message.text, MAX_TEXT_CHARS - (len(mentions) + 1 if mentions else 0))
    return {"text": f"{text} {mentions}" if mentions else text, "blocks": blocks}


class SlackChannel(HttpChannel):
    """Posts to one Slack incoming webhook."""

    def send(self, message: Message) -> None:
        """Post the message; `ok` in a 200 answer is success."""
        response = self._post(self._hook_url(), build_payload(message, self.name))
        if response.status_code == 200:
            return
        reason = response.text.strip()[:200] or f"HTTP {response.status_code}"
        if response.status_code == 429:
            raise DeliveryError(
                f"rate limited ({reason})",
                channel=self.name,
                retryable=True,
                retry_after=retry_after_seconds(response, 1.0),
            )
        retryable = response.status_code >= 500
        raise DeliveryError(f"HTTP {response.status_code} {reason}", channel=self.name, retryable=retryable)


# --- markup and type ----------------------------------------------------------------------------


def escape_mrkdwn(text: str) -> str:
    """Escape the three characters Slack mrkdwn reads as markup (and so `<!channel>`, `<@U..>`, links)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn_url(url: str) -> str:
    """A URL as the target of a `<url|text>` link: escaped, and a `|` (which would end it) encoded."""
    return escape_mrkdwn(url).replace("|", "%7C")


def slack_mention(person: PersonSettings) -> str:
    """`<@U0123ABCD>`, the mrkdwn that mentions a member (the config checked the id's form), or "".

    An explicit mention works in a `verbatim` section too: `verbatim` only stops Slack from finding
    names and links in plain words (values stay inert because `escape_mrkdwn` took their `<` away).
    """
    return f"<@{person.slack_user_id}>" if person.slack_user_id else ""


def _mrkdwn_link(url: str, label: str) -> str:
    return f"<{mrkdwn_url(url)}|{escape_mrkdwn(label.replace('|', '/'))}>"


MARKUP = Markup(escape_mrkdwn, url=mrkdwn_url, link_syntax=_mrkdwn_link, title_marks="*# \t")

PERSON_IDS = {
    "slack_user_id": PersonId(
        re.compile(r"[UW][A-Z0-9]{2,30}"),
        "must be a Slack member ID such as U0123ABCD (profile, then Copy member ID): U or W, then "
        "upper-case letters and digits",
    ),
}

TYPE = ChannelType(
    name="slack",
    options=WEBHOOK,
    # Within one folder a `blocks.json` template wins over a `mrkdwn` one.
    formats=(TemplateFormat("blocks.json", MARKUP, is_json=True), TemplateFormat("mrkdwn", MARKUP)),
    rate=RateBudget(1, 1.1, inline_wait_s=8.0),  # about one message a second per incoming webhook
    digest=DigestRules(36_000),
    sender=SlackChannel,
    layout_problems=layout_problems,
    mention=slack_mention,
    person_ids=PERSON_IDS,
)
