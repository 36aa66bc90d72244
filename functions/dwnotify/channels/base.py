"""The one small Protocol every chat service implements, and helpers they share."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from ..errors import DeliveryError
from ..message import Message
from ..settings import ChannelSettings
from ..timing import time_left
from ..watchdog import Watchdog

if TYPE_CHECKING:  # httpx is imported when the first message goes out, not on a quiet tick
    import httpx

MAX_ANSWER_BYTES = 64 * 1024  # of a service's answer; more is not read


def _as_is(text: str) -> str:
    return text


@dataclass(frozen=True)
class Markup:
    """How a chat type's markup takes the values a template interpolates (names, messages, creators).

    `escape` makes a value inert text: it cannot become a link, a mention, a tag or formatting.
    `plain` reads a line of markup back as plain text (a notification title), once `title_marks` are
    stripped from its ends. `url` makes a URL safe as a link target. `link_syntax(url, label)` writes
    a link from values already escaped; None is markdown's `[label](url)`.
    """

    escape: Callable[[str], str]
    plain: Callable[[str], str] = _as_is
    url: Callable[[str], str] = _as_is
    link_syntax: Callable[[str, str], str] | None = None
    title_marks: str = "# \t"

    def link(self, url: str, label: str) -> str:
        """A link to `url` showing `label`, both made inert."""
        if self.link_syntax is not None:
            return self.link_syntax(url, label)
        return f"[{self.escape(label)}]({self.url(url)})"


class Channel(Protocol):
    """A chat destination. `send` returns once the service accepted the message.

    It raises DeliveryError otherwise: `retryable` when trying later may work (network errors,
    timeouts, 5xx, rate limits, with `retry_after` when the service says how long), not when the
    service refused the message itself (bad token, bad signature, message too large).

    `deadline` (epoch seconds, None: none) is the tick's: whoever sends may set it, and no send
    outlasts it (nor the channel's timeout), however slowly the service answers.
    """

    name: str
    deadline: float | None

    def send(self, message: Message) -> None:
        """Deliver one message."""
        ...


class HttpChannel:
    """What every webhook channel holds: its settings, the shared httpx client, a timeout, a clock.

    `deadline` (epoch seconds on `clock`, None: none) is the tick's: no send outlasts it, nor its
    timeout, whatever the service drips (see `_post`).
    """

    def __init__(
        self,
        settings: ChannelSettings,
        client: httpx.Client,
        *,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = settings.name
        self._settings = settings
        self._client = client
        self._timeout_s = timeout_s
        self._clock = clock
        self.deadline: float | None = None

    def _hook_url(self) -> str:
        """The webhook URL a type with a `url` option posts to (the config requires it)."""
        if self._settings.url is None:
            raise DeliveryError("the channel has no url", channel=self.name, retryable=False)
        return self._settings.url.reveal()

    def _post(
        self,
        url: str,
        payload: dict[str, Any] | None = None,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST JSON (or raw bytes) and read the answer, all within one total time budget.

        The budget is the timeout, or what is left before `deadline` if that is less; per-operation
        timeouts alone would let an answer dripped one byte at a time run on for ever, so a
        `Watchdog` ends the exchange when the budget is spent (a retryable "no answer within N s").
        A URL or header that cannot make a request is a permanent error of this channel; network
        failures are retryable. No error shows the URL.
        """
        import httpx

        budget = time_left(self._timeout_s, self.deadline, self._clock)
        if budget <= 0:
            raise DeliveryError("not sent: the tick's deadline has passed", channel=self.name, retryable=True)
        watchdog = Watchdog(budget)
        try:
            request = self._client.build_request(
                "POST",
                url,
                json=payload,
                content=content,
                # A fresh connection for every post: its socket is known from the start, so the
                # watchdog covers the answer's headers too, not only its body.
                headers={**(headers or {}), "Connection": "close"},
                timeout=budget,
                extensions={"trace": _watch_sockets(watchdog)},
            )
            with watchdog:
                return _read_answer(self._client, request, watchdog)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError, ValueError) as error:
            if watchdog.fired:
                raise self._no_answer(budget) from None
            what = f"the URL or a header cannot be sent ({type(error).__name__})"
            reason = f"{what}: check channels.{self.name}"
            raise DeliveryError(reason, channel=self.name, retryable=False) from None
        except httpx.HTTPError as error:
            if watchdog.fired or isinstance(error, httpx.TimeoutException):
                raise self._no_answer(budget) from None
            reason = f"network error: {type(error).__name__}"
            raise DeliveryError(reason, channel=self.name, retryable=True) from None

    def _no_answer(self, budget: float) -> DeliveryError:
        return DeliveryError(f"no answer within {budget:.3g}s", channel=self.name, retryable=True)


_ANSWER_HEADERS_DROPPED = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def _watch_sockets(watchdog: Watchdog) -> Callable[[str, dict[str, Any]], None]:
    """An httpx `trace` extension handing the watchdog each socket the request connects."""

    def trace(event: str, info: dict[str, Any]) -> None:
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            if stream is not None:
                watchdog.watch(stream.get_extra_info("socket"))

    return trace


def _read_answer(client: httpx.Client, request: httpx.Request, watchdog: Watchdog) -> httpx.Response:
    """Send `request` and read at most MAX_ANSWER_BYTES of the answer, stopping when time is up."""
    import httpx

    response = client.send(request, stream=True)
    try:
        stream = response.extensions.get("network_stream")
        if stream is not None:
            watchdog.watch(stream.get_extra_info("socket"))
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            if watchdog.expired():
                raise httpx.ReadTimeout("the answer took too long", request=request)
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_ANSWER_BYTES:
                break  # the rest is not worth reading: services answer in a few hundred bytes
    finally:
        response.close()
    if watchdog.fired:
        raise httpx.ReadTimeout("the answer took too long", request=request)
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _ANSWER_HEADERS_DROPPED]
    body = b"".join(chunks)[:MAX_ANSWER_BYTES]
    return httpx.Response(response.status_code, headers=headers, content=body, request=request)


def raise_for_transport(channel: str, response: httpx.Response, rate_limit_wait_s: float) -> None:
    """For services that answer in the body: 429 and 5xx are retryable, any other non-200 is not."""
    status = response.status_code
    if status == 429:
        wait = retry_after_seconds(response, rate_limit_wait_s)
        raise DeliveryError("HTTP 429", channel=channel, retryable=True, retry_after=wait)
    if status >= 500:
        raise DeliveryError(f"HTTP {status}", channel=channel, retryable=True)
    if status != 200:
        raise DeliveryError(f"HTTP {status}", channel=channel, retryable=False)


def retry_after_seconds(response: httpx.Response, default: float) -> float:
    """The Retry-After header in seconds, or `default` when it is missing or not a number."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", default)))
    except ValueError:
        return default


def encode_json(payload: dict[str, Any]) -> bytes:
    """A JSON request body as sent: compact, non-ASCII kept as UTF-8 (what a service measures)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- markdown (CommonMark) -------------------------------------------------------------------------

_MD_ALWAYS = re.compile(r"[\\`*\[\]|~]")
MD_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")  # not inside a word, where it cannot emphasize
MD_ENTITY = re.compile(r"&(?=#[0-9]+;|#[xX][0-9a-fA-F]+;|[A-Za-z][A-Za-z0-9]*;)")  # shown, not decoded
# What opens a block at a line's start: a heading, a list item, a rule or setext underline.
_MD_LINE_START = re.compile(r"#|[-+](?=[ \t]|$)|[-=]+[ \t]*$|(\d{1,9})(?=[.)](?:[ \t]|$))")
_MD_UNESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_LINE_BREAK = re.compile(r"(\r\n|\r|\n)")
_URL_SAFE = "!#$%&'*+,-./:;=?@_~"  # what a link target keeps as it is; the rest is percent-encoded


def escape_markdown(text: str) -> str:
    """A value as inert CommonMark text: no link, image, HTML, heading, list, quote, code or emphasis.

    Punctuation is backslash-escaped, as CommonMark defines; `<` and `>` become entities. Written so
    that a renderer that ignores backslash escapes still finds no syntax (it shows the backslashes).
    """
    parts = _LINE_BREAK.split(text)
    return "".join(part if index % 2 else _escape_markdown_line(part) for index, part in enumerate(parts))


def _escape_markdown_line(line: str) -> str:
    line = MD_ENTITY.sub("&amp;", line).replace("<", "&lt;").replace(">", "&gt;")
    line = _MD_ALWAYS.sub(r"\\\g<0>", line)
    line = MD_UNDERSCORE.sub(r"\\_", line).replace("\\](", "\\]\\(")
    body = line.lstrip(" \t")
    indent = line[: len(line) - len(body)].replace("\t", "    ").replace(" ", "\u00a0")  # no code block
    match = _MD_LINE_START.match(body)
    if match is None:
        return indent + body
    if match.group(1):  # `1.` or `1)`: an ordered list
        return f"{indent}{match.group(1)}\\{body[match.end() :]}"
    return f"{indent}\\{body}"


def plain_markdown(markup: str) -> str:
    """Markdown text read back as plain text: escapes and entities resolved."""
    return html.unescape(_MD_UNESCAPE.sub(r"\1", markup)).replace("\u00a0", " ")


def markdown_url(url: str) -> str:
    """A URL as a markdown link target: spaces, brackets, parentheses and quotes percent-encoded."""
    return quote(url, safe=_URL_SAFE)


MARKDOWN = Markup(escape_markdown, plain_markdown, markdown_url)
