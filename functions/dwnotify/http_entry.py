"""The HTTP entry: one request (method, path, headers, raw body) in, one response out; no framework.

FC's HTTP trigger (`functions/index.py`) and `dwnotify serve` (`dwnotify.serve`) both answer through
`handle`. Only `POST /slack/actions` exists, and only with `actions.enabled`:

- actions disabled: 404 for everything, and nothing else is done (no store, no DataWorks call);
- another path: 404; another method: 405;
- a signature that is missing, wrong, made with another channel's secret, or a timestamp more than
  five minutes from now: 401, and nothing else is done;
- a verified interaction: 200 with an empty body (Slack wants an answer within 3 s), once the
  click is judged and its decision claimed (`dwnotify.acting.Actor.take`); the DataWorks call and
  the message's edit are deferred by the actor.

Secrets never reach a response or a log line: a response body says only what failed.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import logs
from .credentials import Secret
from .errors import ConfigError, NotifierError
from .settings import Settings
from .slack_verify import parse_payload, retry_number, verify

if TYPE_CHECKING:
    from .acting import Actor

log = logging.getLogger("dwnotify.http")

ACTIONS_PATH = "/slack/actions"
MAX_BODY_BYTES = 1 << 20  # Slack's payloads are a few KB


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request as the entry reads it: the body as the raw bytes that were signed."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class HttpResponse:
    """One HTTP response; `to_fc` is the form FC's HTTP trigger maps back to the client."""

    status: int
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": "text/plain; charset=utf-8"})

    def to_fc(self) -> dict[str, Any]:
        """`{statusCode, headers, body}` (and `isBase64Encoded: false`), as FC 3.0 expects back."""
        return {
            "statusCode": self.status,
            "headers": dict(self.headers),
            "body": self.body,
            "isBase64Encoded": False,
        }


def handle(
    request: HttpRequest, settings: Settings, now: float, actor: Callable[[], Actor] | None = None
) -> HttpResponse:
    """Answer one request (see the module docstring); `now` is epoch seconds. `actor` builds what takes
    a verified click (the state store, the clients): only once a request is verified."""
    if not settings.actions.enabled or request.path != ACTIONS_PATH:
        return HttpResponse(404, "not found\n")
    if request.method.upper() != "POST":
        return HttpResponse(405, "method not allowed\n", {"Allow": "POST", "Content-Type": "text/plain"})
    if len(request.body) > MAX_BODY_BYTES:
        return HttpResponse(413, "too large\n")
    interaction = parse_payload(request.body)
    secrets = signing_secrets(settings, interaction.channel_id if interaction else "")
    problem = verify(request.headers, request.body, secrets, now)
    if problem is not None:
        log.warning("slack request refused (401): %s", problem)
        return HttpResponse(401, "unauthorized\n")
    assert interaction is not None  # a verified request has a channel, hence a payload
    if interaction.type != "block_actions":
        log.info("slack request of type %r ignored", interaction.type[:40])
        return HttpResponse(200, "")
    if actor is None:
        raise NotifierError("the HTTP entry has no actor to take a verified click")
    actor().take(interaction, retry_number(request.headers))
    return HttpResponse(200, "")


def signing_secrets(settings: Settings, channel_id: str) -> list[Secret]:
    """The signing secrets of the slack-app channels posting to Slack channel `channel_id`."""
    from .actions import slack_app_channels

    found = (
        c.options.get("signing_secret") for c in slack_app_channels(settings.channels.values(), channel_id)
    )
    return [secret for secret in found if secret]


# FC's HTTP trigger --------------------------------------------------------------------------------


def fc_http_request(event: object) -> HttpRequest | None:
    """The request in an FC 3.0 HTTP-trigger event; None for any other event (timer, explicit).

    FC 3.0 maps a function URL's request into a JSON event for built-in runtimes (Alibaba Cloud,
    "Use an HTTP trigger to invoke a function", Function Compute 3.0 user guide,
    https://www.alibabacloud.com/help/en/functioncompute/fc-3-0/user-guide/http-trigger-invoking-function):
    `{"version": "v1", "rawPath": "/example", "body": "...", "isBase64Encoded": false,
    "headers": {"Header1": "value1", ...}, "queryParameters": {...}, "requestContext": {"accountId",
    "domainName", "domainPrefix", "http": {"method", "path", "protocol", "sourceIp", "userAgent"},
    "requestId", "time", "timeEpoch"}}`. Header keys are canonicalized (first letters upper-case),
    so they are read case-insensitively; a binary body comes base64-encoded and is decoded here,
    before the signature check, since Slack signs the raw bytes.
    """
    if isinstance(event, bytes | bytearray | str):
        try:
            event = json.loads(event)
        except ValueError:
            return None
    if not isinstance(event, Mapping):
        return None
    context = event.get("requestContext")
    http = context.get("http") if isinstance(context, Mapping) else None
    if not isinstance(http, Mapping) or "rawPath" not in event or "method" not in http:
        return None
    headers = event.get("headers")
    return HttpRequest(
        method=str(http.get("method") or ""),
        path=str(event.get("rawPath") or "/"),
        headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, Mapping) else {},
        body=_fc_body(event.get("body"), event.get("isBase64Encoded") is True),
    )


def _fc_body(body: object, encoded: bool) -> bytes:
    if not isinstance(body, str):
        return b""
    if not encoded:
        return body.encode("utf-8")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return b"\x00invalid base64"  # matches no signature: refused with 401


class SettingsCache:
    """The settings an instance reads once per config path for its HTTP requests (no clients built)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[str, Settings] = {}

    def get(self, path: Path) -> Settings:
        """The validated settings at `path`, read on first use; ConfigError when they are not valid."""
        with self._lock:
            if str(path) not in self._loaded:
                from .app import register_secrets_of
                from .config import load

                settings = load(path)
                register_secrets_of(settings, None)
                self._loaded[str(path)] = settings
            return self._loaded[str(path)]


settings_cache = SettingsCache()


def answer_fc(request: HttpRequest, path: Path, now: float, actor: Callable[[], Actor]) -> dict[str, Any]:
    """FC's answer to an HTTP-trigger request: the config at `path` read (once), then `handle`."""
    try:
        settings = settings_cache.get(path)
    except ConfigError as error:
        for problem in error.problems:
            log.error("config error: %s", logs.mask(problem))
        return HttpResponse(500, "the notifier's config is not valid; see the function's log\n").to_fc()
    except OSError as error:
        log.error("reading the config failed: %s", logs.mask(str(error)))
        return HttpResponse(500, "the notifier's config cannot be read; see the function's log\n").to_fc()
    try:
        return handle(request, settings, now, actor).to_fc()
    except (NotifierError, OSError) as error:  # e.g. the state store cannot be reached: Slack retries
        log.error("a verified click was not taken: %s", logs.mask(f"{type(error).__name__}: {error}"))
        return HttpResponse(500, "the click could not be taken; see the function's log\n").to_fc()
