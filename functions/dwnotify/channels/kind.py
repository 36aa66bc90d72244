"""What a chat type is, declared once in its own module (`TYPE` in `channels/<type>.py`).

Its config options and their checks, its template formats and escaping, its rate budget, how several
waiting messages are merged into one digest, and its sender: config, render, delivery and the command
line read these from the registry (`channels.CHANNEL_TYPES`) and know no type by name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .base import Markup

if TYPE_CHECKING:
    import httpx

    from ..actions import Offer
    from ..message import Message
    from ..settings import ChannelSettings, PersonSettings
    from .base import Channel

# Keys every channel type accepts besides its own options.
COMMON_KEYS = frozenset({"type", "allow_http"})
# How the config reads an option's value: a secret (masked, never printed), a text, a list of
# strings, a true/false flag, or an https URL (held as a secret: webhook URLs carry their token).
OPTION_KINDS = frozenset({"secret", "text", "strings", "flag", "url"})
# The options of a webhook: its URL, and no other required key.
WEBHOOK = {"url": "url"}


@dataclass(frozen=True)
class RateBudget:
    """At most `messages` sends per `window_s` seconds; a tick may wait `inline_wait_s` for room."""

    messages: int
    window_s: float
    inline_wait_s: float = 0.0

    def capacity(self, remaining: int) -> int:
        """How many sends one tick can make: what the window has left, plus what waiting frees."""
        return remaining + int(self.inline_wait_s * self.messages / self.window_s)


@dataclass(frozen=True)
class TemplateFormat:
    """One kind of template (`<name>.<ext>.j2`): its markup, and whether the file renders JSON."""

    ext: str
    markup: Markup
    is_json: bool = False

    def escape_text(self, text: str) -> str:
        """A value made inert inside the markup."""
        return self.markup.escape(text)

    def escape_output(self, markup: str) -> str:
        """Markup made safe inside the file: a JSON string's content for Block Kit templates."""
        return json.dumps(markup, ensure_ascii=False)[1:-1] if self.is_json else markup


@dataclass(frozen=True)
class PersonId:
    """How a chat service writes a person's id (a `people` entry's field): the form and, if it is not
    met, the problem to report. The forms leave out every character that could end a mention or start
    other markup: these ids go into messages as they are, unlike the values templates interpolate."""

    pattern: re.Pattern[str]
    problem: str


@dataclass(frozen=True)
class DigestRules:
    """How waiting messages merge into one post: its size limit, what parts them, its first line."""

    max_bytes: int
    separator: str = "\n\n"
    heading: str = "*{title}*"


# A check of a configured channel's option values, as text (secrets revealed; None: not set).
OptionCheck = Callable[[Mapping[str, str | None]], Iterable[tuple[str, str]]]


def _no_problems(options: Mapping[str, str | None]) -> Iterable[tuple[str, str]]:
    return ()


def _no_mention(person: PersonSettings) -> str:
    return ""


@dataclass(frozen=True)
class ChannelType:
    """One chat service's knowledge. `formats` are in lookup order within one template folder.

    `options` maps each option key to its kind (OPTION_KINDS); `required` are the keys a channel must
    set. `check(options)` (each option's value as text) gives the (option, problem) pairs of a
    configured channel beyond the generic checks (a URL of the wrong service, a token where the
    signing secret belongs, a channel name where its ID belongs).
    `layout_problems(blocks)`, for a type whose templates may render JSON blocks, lists the service's
    limits that blocks break (what `dwnotify check` reports of a template's sample output).
    `mention(person)` is the live mention of a person in this type's markup ("" when the person has
    no id this service knows): the only live mention a message holds, values stay inert;
    `person_ids` are the `people` fields that hold this service's ids, with their forms.
    `living` types keep one message per run and edit it (their sender is a `living.LivingChannel`);
    their messages are never merged into digests. `with_offers` puts a run's action buttons on it.
    """

    name: str
    options: Mapping[str, str]
    formats: tuple[TemplateFormat, ...]
    rate: RateBudget
    digest: DigestRules
    sender: Callable[..., Channel]
    check: OptionCheck = field(default=_no_problems)
    layout_problems: Callable[[Sequence[Mapping[str, Any]]], list[str]] | None = None
    required: frozenset[str] = frozenset({"url"})
    mention: Callable[[PersonSettings], str] = field(default=_no_mention)
    person_ids: Mapping[str, PersonId] = field(default_factory=dict)
    living: bool = False
    # The message with buttons for what the run offers (`dwnotify.actions`), for a type whose clicks
    # come back signed; None: the type shows none.
    with_offers: Callable[[Message, Sequence[Offer]], Message] | None = None

    def __post_init__(self) -> None:
        unknown = {kind for kind in self.options.values() if kind not in OPTION_KINDS}
        if unknown or not self.required <= set(self.options):
            raise ValueError(
                f"channel type {self.name}: bad option kinds {unknown} or required {self.required}"
            )

    @property
    def keys(self) -> frozenset[str]:
        """Every key a channel of this type accepts."""
        return COMMON_KEYS | set(self.options)

    @property
    def markup(self) -> Markup:
        """The markup of its first format: what a note or a plain message is escaped for."""
        return self.formats[0].markup

    def build(
        self, settings: ChannelSettings, client: httpx.Client, timeout_s: float, clock: Callable[[], float]
    ) -> Channel:
        """The sender for one configured channel."""
        return self.sender(settings, client, timeout_s=timeout_s, clock=clock)


def url_must_contain(piece: str, problem: str) -> OptionCheck:
    """A `check` that the URL holds `piece` (what the service's webhook URLs always hold)."""

    def check(options: Mapping[str, str | None]) -> Iterable[tuple[str, str]]:
        url = options.get("url")
        return [("url", problem)] if url is not None and piece not in url else []

    return check
