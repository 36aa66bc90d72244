"""The one small Protocol every chat service implements, and helpers they share."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import DeliveryError
from ..settings import ChannelSettings

if TYPE_CHECKING:  # httpx is imported when the first message goes out, not on a quiet tick
    import httpx

TRIM_MARKER = "…(truncated)"


@dataclass(frozen=True)
class ChannelMessage:
    """What a channel sends: a plain title, the text in the service's markup, optional Block Kit."""

    title: str
    text: str
    blocks: tuple[dict[str, Any], ...] | None = None


class Channel(Protocol):
    """A chat destination. `send` returns once the service accepted the message.

    It raises DeliveryError otherwise: `retryable` when trying later may work (network errors,
    timeouts, 5xx, rate limits, with `retry_after` when the service says how long), not when the
    service refused the message itself (bad token, bad signature, message too large).
    """

    name: str

    def send(self, message: ChannelMessage) -> None:
        """Deliver one message."""
        ...


class HttpChannel:
    """What every webhook channel holds: its settings, the shared httpx client, a timeout, a clock."""

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

    def _post(
        self,
        url: str,
        payload: dict[str, Any] | None = None,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST JSON (or raw bytes); network failures become retryable errors that never show the URL."""
        import httpx

        try:
            return self._client.post(
                url, json=payload, content=content, headers=headers, timeout=self._timeout_s
            )
        except httpx.TimeoutException:
            raise DeliveryError("timed out", channel=self.name, retryable=True) from None
        except httpx.HTTPError as error:
            reason = f"network error: {type(error).__name__}"
            raise DeliveryError(reason, channel=self.name, retryable=True) from None


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


def trim_utf8(text: str, max_bytes: int, marker: str = TRIM_MARKER) -> str:
    """Cut `text` to at most `max_bytes` UTF-8 bytes on a character boundary, ending with `marker`."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    if len(marker.encode("utf-8")) > max_bytes:
        marker = ""
    room = max_bytes - len(marker.encode("utf-8"))
    return encoded[:room].decode("utf-8", errors="ignore") + marker


def encode_json(payload: dict[str, Any]) -> bytes:
    """A JSON request body as sent: compact, non-ASCII kept as UTF-8 (what a service measures)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def fit_encoded(text: str, size: Callable[[str], int], max_bytes: int) -> str:
    """The longest `fit_text` of `text` whose `size` (e.g. of the encoded request body) is <= `max_bytes`.

    JSON escaping makes a body larger than its text, by up to six times (a quote or a newline takes
    two bytes, a control character six), so the room for the text is searched for, measuring each try.
    """
    if size(text) <= max_bytes:
        return text
    fitted = ""
    low, high = 0, min(len(text.encode("utf-8")), max_bytes)  # encoding never shrinks a text
    while low < high:
        room = (low + high + 1) // 2
        candidate = fit_text(text, room)
        if size(candidate) <= max_bytes:
            low, fitted = room, candidate
        else:
            high = room - 1
    return fitted


def fit_text(text: str, max_bytes: int) -> str:
    """Fit a message into `max_bytes`, trimming the body but keeping its last line (the console link)."""
    if len(text.encode("utf-8")) <= max_bytes:
        return text
    body, _, last_line = text.rstrip("\n").rpartition("\n")
    tail = "\n" + last_line
    if not body or len(tail.encode("utf-8")) > max_bytes // 2:
        return trim_utf8(text, max_bytes)
    return trim_utf8(body, max_bytes - len(tail.encode("utf-8"))) + tail
