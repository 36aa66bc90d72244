"""DingTalk custom robot stand-in that keeps what it receives (records and `inject` from `_chat`).

DingTalk (`POST /robot/send?access_token=T[&timestamp=ms&sign=S]`, always HTTP 200 + errcode), checked
in this order: 300001 unknown token; 130101 robot silenced; 310000 sign missing/wrong or timestamp
over 1 h off; 460101 body over 20,000 bytes; 40035 invalid JSON, missing/unknown msgtype or missing
content; 400402 markdown without title; 40035 an `at` that is not `{atMobiles: [str], atUserIds: [str],
isAtAll: bool}` (the guide's types; which errcode DingTalk gives a malformed one is not documented, so
this stand-in is the stricter); 310000 keyword missing; 130101 the 21st message within 60 s, which also
silences the robot for 10 minutes.

`mentions(token)` is who the accepted messages highlight, as the guide has it ("在 content 里添加@人的
手机号 / userid"): a mobile or userid that is both in the `at` lists and written `@<it>` in the text (an
`@13800000000` in the text alone, or an at entry the text does not show, mentions no one); `all` for
`isAtAll`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from emulators._base import Request, Response, serve
from emulators._chat import _RobotWebhook, robot_options

DINGTALK_MAX_BYTES = 20_000
_DINGTALK_CONTENT = {
    "text": ("content",),
    "markdown": ("title", "text"),
    "link": ("title", "text", "messageUrl"),
    "actionCard": ("title", "text"),
    "feedCard": ("links",),
}


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")), before URL-encoding."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class DingTalkEmulator(_RobotWebhook):
    """DingTalk custom robots: sign, keyword, size, type and rate checks answered with errcodes."""

    service = "dingtalk"

    def __init__(
        self,
        robots: Mapping[str, str | None] | None = None,
        keywords: Mapping[str, str | Sequence[str]] | None = None,
        clock: Callable[[], float] | None = None,
        *,
        per_minute: int = 20,
        silence_s: float = 600.0,
        verbose: bool = False,
    ) -> None:
        super().__init__(robots, keywords, clock, verbose)
        self.per_minute = per_minute
        self.silence_s = silence_s
        self._silenced_until: dict[str, float] = {}

    def default_body(self, status: int) -> Mapping[str, Any]:
        """DingTalk's "system busy" answer."""
        return {"errcode": -1, "errmsg": "系统繁忙"}

    def mentions(self, token: str) -> list[str]:
        """Who the accepted messages of one robot mention (`all` for everyone), in order."""
        found: list[str] = []
        for body in self.messages(token):
            at = body.get("at") or {}
            text = _visible_text(body.get(body.get("msgtype"), {}))
            listed = [*at.get("atMobiles", []), *at.get("atUserIds", [])]
            found += [who for who in listed if _written(who, text)]
            found += ["all"] if at.get("isAtAll") else []
        return found

    def silenced(self, token: str) -> bool:
        """Whether the robot is serving its 10-minute penalty for sending too fast."""
        with self._lock:
            return self.now() < self._silenced_until.get(token, float("-inf"))

    def handle(self, request: Request) -> Response:
        """Answer one robot send."""
        if request.path != "/robot/send" or request.method != "POST":
            return Response.json(404, {"errcode": 404, "errmsg": "not found"})
        token = request.args.get("access_token", "")
        return self._answer(
            token, request, lambda code, text: Response.json(200, {"errcode": code, "errmsg": text})
        )

    def _check(self, token: str, request: Request, body: Any) -> tuple[int, str]:
        if token not in self.robots:
            return 300001, "token is not exist"
        if self.silenced(token):
            return 130101, "send too fast, exceed 20 times per minute"
        secret = self.robots[token]
        if secret is not None:
            problem = self._check_sign(
                secret, request.args.get("timestamp", ""), request.args.get("sign", "")
            )
            if problem:
                return 310000, problem
        if len(request.body) > DINGTALK_MAX_BYTES:
            return 460101, f"message too long, exceed {DINGTALK_MAX_BYTES} bytes"
        if not isinstance(body, dict):
            return 40035, "缺少参数 json"
        msgtype = body.get("msgtype")
        if msgtype not in _DINGTALK_CONTENT:
            return 40035, f"不合法的参数 msgtype: {msgtype!r}"
        content = body.get(msgtype)
        if not isinstance(content, dict):
            return 40035, f"缺少参数 {msgtype}"
        for name in _DINGTALK_CONTENT[msgtype]:
            if not content.get(name):
                return (
                    (400402, "缺少参数 title") if name == "title" else (40035, f"缺少参数 {msgtype}.{name}")
                )
        if _at_problem(body.get("at")):
            return 40035, f"不合法的参数 at: {_at_problem(body.get('at'))}"
        words = self.keywords.get(token)
        if words and not any(w in _visible_text(content) for w in words):
            return 310000, "关键词不匹配 (keywords not in content)"
        return self._check_rate(token)

    def _check_sign(self, secret: str, timestamp: str, sign: str) -> str | None:
        if not timestamp or not sign:
            return "sign not match, timestamp and sign are required"
        try:
            stamped_ms = int(timestamp)
        except ValueError:
            return "invalid timestamp"
        if abs(self.now() * 1000 - stamped_ms) > 3600 * 1000:
            return "invalid timestamp: more than one hour off"
        if not hmac.compare_digest(dingtalk_sign(secret, timestamp).encode(), sign.encode()):
            return "sign not match"
        return None

    def _check_rate(self, token: str) -> tuple[int, str]:
        now = self.now()
        window = self._sent.setdefault(token, deque())
        while window and now - window[0] >= 60:
            window.popleft()
        if len(window) >= self.per_minute:
            self._silenced_until[token] = now + self.silence_s
            return 130101, "send too fast, exceed 20 times per minute"
        window.append(now)
        return 0, "ok"


def _at_problem(at: Any) -> str | None:
    if at is None:
        return None
    if not isinstance(at, dict):
        return "at must be an object"
    for key in ("atMobiles", "atUserIds"):
        value = at.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            return f"{key} must be a list of non-empty strings"
    if not isinstance(at.get("isAtAll", False), bool):
        return "isAtAll must be true or false"
    return None


def _written(who: str, text: str) -> bool:
    """Whether `@<who>` is in the text as a whole mention (not the start of a longer number or id)."""
    return re.search(rf"@{re.escape(who)}(?![0-9A-Za-z_.-])", text) is not None


def _visible_text(content: Mapping[str, Any]) -> str:
    parts = [str(content.get(k, "")) for k in ("content", "title", "text")]
    parts += [str(link.get("title", "")) for link in content.get("links") or () if isinstance(link, dict)]
    return "\n".join(parts)


def main_dingtalk(argv: Sequence[str]) -> int:
    """`python -m emulators dingtalk`: serve robots until SIGTERM/SIGINT."""
    args, robots, keywords = robot_options(
        "dingtalk", "DingTalk custom robot webhook stand-in.", "robot", argv
    )
    return serve(DingTalkEmulator(robots, keywords, verbose=args.verbose), args.host, args.port)
