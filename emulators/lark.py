"""Lark/Feishu custom bot stand-in, written from the guide, never from dwnotify's code.

Same records and canned answers as the other chat stand-ins (`emulators._chat`: `received`,
`attempts`, `inject`).

Lark (`POST /open-apis/bot/v2/hook/<token>`, "自定义机器人使用指南"), always HTTP 200 + `code`,
checked in this order: 19001 unknown token; 11232 over 5 messages a second or 100 a minute; 9499 body
over 20 KB or not JSON; 19021 `timestamp`/`sign` missing, wrong, or over an hour off (signing bots);
9499 unknown `msg_type` or missing content (`content.text`, `content.post`, or a `card` with elements);
19024 none of the bot's keywords in the message text. Success: `{"StatusCode": 0, "StatusMessage":
"success", "code": 0, "data": {}, "msg": "success"}`.

`mentions(token)` lists who the accepted messages mention, `all` for everyone, each in the syntax of
its message type, as Lark reads them: in a card's markdown `<at id=...></at>` or `<at ids=a,b></at>`
(the card rich text component); in `text` and `post` content `<at user_id="...">` (the message
content page). Either form in the other place is shown as text and mentions no one, and a custom bot
mentions by open_id (`ou_...`) only ("自定义机器人仅支持使用open_id@人"), so other ids are no mention.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from emulators._base import Request, Response, serve
from emulators._chat import _RobotWebhook, _window, robot_options


def _strings(value: Any) -> Iterable[str]:
    """Every string inside a JSON value (what a keyword check reads)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


LARK_MAX_BYTES = 20 * 1024
LARK_OK = {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}
_LARK_MSG_TYPES = {"text", "post", "image", "share_chat", "interactive"}


def lark_sign(secret: str, timestamp: str) -> str:
    """base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")), as the guide's Python sample."""
    string_to_sign = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(string_to_sign, digestmod=hashlib.sha256).digest()).decode()


# The attribute that names who an `<at>` mentions, per message type (see the module docstring).
_AT_ATTRIBUTES = {"interactive": ("id", "ids"), "text": ("user_id",), "post": ("user_id",)}
_LARK_AT = re.compile(r"<at\s+([a-z_]+)\s*=\s*['\"]?([^'\"<>\s]+)", re.IGNORECASE)
_OPEN_ID = re.compile(r"ou_[0-9A-Za-z]+|all")


class LarkEmulator(_RobotWebhook):
    """Lark/Feishu custom bots: token, rate, size, signature, content and keyword checks."""

    service = "lark"

    def __init__(
        self,
        bots: Mapping[str, str | None] | None = None,
        keywords: Mapping[str, str | Sequence[str]] | None = None,
        clock: Callable[[], float] | None = None,
        *,
        per_second: int = 5,
        per_minute: int = 100,
        verbose: bool = False,
    ) -> None:
        super().__init__(bots, keywords, clock, verbose)
        self.per_second = per_second
        self.per_minute = per_minute

    def default_body(self, status: int) -> Mapping[str, Any]:
        """Lark's rate-limit answer."""
        return {"code": 11232, "msg": "frequency limited psm[lark.oapi.app_platform_runtime]", "data": {}}

    def mentions(self, token: str) -> list[str]:
        """Who the accepted messages of one bot mention (`<at id=all>` gives `all`), in order."""
        found: list[str] = []
        for body in self.messages(token):
            kind = body.get("msg_type")
            attributes = _AT_ATTRIBUTES.get(kind, ())
            texts = (
                _card_markdown(body.get("card")) if kind == "interactive" else _strings(body.get("content"))
            )
            for text in texts:
                for attribute, ids in _LARK_AT.findall(text):
                    if attribute.lower() in attributes:
                        found += [who for who in ids.split(",") if _OPEN_ID.fullmatch(who)]
        return found

    def handle(self, request: Request) -> Response:
        """Answer one bot send."""
        prefix = "/open-apis/bot/v2/hook/"
        if request.method != "POST" or not request.path.startswith(prefix):
            return Response.json(404, {"code": 404, "msg": "404 page not found"})
        token = request.path[len(prefix) :].strip("/")

        def reply(code: int, msg: str) -> Response:
            return Response.json(200, LARK_OK if code == 0 else {"code": code, "data": {}, "msg": msg})

        return self._answer(token, request, reply)

    def _check(self, token: str, request: Request, body: Any) -> tuple[int, str]:
        if token not in self.robots:
            return 19001, "param invalid: incoming webhook access token invalid"
        now = self.now()
        second = _window(self._sent, f"{token}/s", now, 1.0)
        minute = _window(self._sent, f"{token}/m", now, 60.0)
        if len(second) >= self.per_second or len(minute) >= self.per_minute:
            return 11232, "frequency limited psm[lark.oapi.app_platform_runtime]"
        if len(request.body) > LARK_MAX_BYTES or not isinstance(body, dict):
            return 9499, "Bad Request"
        secret = self.robots[token]
        if secret is not None and not self._signed(secret, body):
            return 19021, "sign match fail or timestamp is not within one hour from current time"
        problem = _lark_content_problem(body)
        if problem:
            return 9499, f"Bad Request: {problem}"
        words = self.keywords.get(token)
        text = "\n".join(_strings(body.get("content") or body.get("card")))
        if words and not any(word in text for word in words):
            return 19024, "Key Words Not Found"
        second.append(now)
        minute.append(now)
        return 0, "success"

    def _signed(self, secret: str, body: Mapping[str, Any]) -> bool:
        timestamp, sign = str(body.get("timestamp", "")), str(body.get("sign", ""))
        if not timestamp.isdigit() or abs(self.now() - int(timestamp)) > 3600:
            return False
        return hmac.compare_digest(lark_sign(secret, timestamp), sign)


def _card_markdown(card: Any) -> Iterable[str]:
    """The markdown a card renders: `markdown` elements and `lark_md` texts (a header is plain text)."""
    if not isinstance(card, dict):
        return
    elements = card.get("elements") or (card.get("body") or {}).get("elements") or []
    for element in elements if isinstance(elements, list) else []:
        if not isinstance(element, dict):
            continue
        text = element.get("text")
        if element.get("tag") == "markdown" and isinstance(element.get("content"), str):
            yield element["content"]
        elif isinstance(text, dict) and text.get("tag") == "lark_md" and isinstance(text.get("content"), str):
            yield text["content"]


def _lark_content_problem(body: Mapping[str, Any]) -> str | None:
    msg_type = body.get("msg_type")
    if msg_type not in _LARK_MSG_TYPES:
        return f"unknown msg_type {msg_type!r}"
    if msg_type == "interactive":
        card = body.get("card")
        has_elements = isinstance(card, dict) and bool(card.get("elements") or card.get("body"))
        return None if has_elements else "fail to parse content: card has no elements"
    content = body.get("content")
    if not isinstance(content, dict) or not content:
        return "fail to parse content"
    if msg_type == "text" and not content.get("text"):
        return "fail to parse content: text is empty"
    return None


def main_lark(argv: Sequence[str]) -> int:
    """`python -m emulators lark`: serve custom bots until SIGTERM/SIGINT."""
    args, bots, keywords = robot_options("lark", "Lark/Feishu custom bot webhook stand-in.", "bot", argv)
    return serve(LarkEmulator(bots, keywords, verbose=args.verbose), args.host, args.port)
