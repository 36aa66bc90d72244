"""WeCom group robot stand-in, written from the robot guide, never from dwnotify's code.

Same records and canned answers as the other chat stand-ins (`emulators._chat`: `received`,
`attempts`, `inject`).

WeCom (`POST /cgi-bin/webhook/send?key=K`, "群机器人配置说明"), always HTTP 200 + `errcode`: 93000 unknown
key; 45009 over 20 messages a minute; 47001 not JSON; 40008 unknown `msgtype`; 44004 empty content;
40058 text over 2,048 or markdown over 4,096 bytes. `errmsg` ends with WeCom's `, hint: [...], from
ip: ..., more info at ...` tail. `mentions(key)` lists who accepted messages mention, in the guide's
two ways: `<@userid>` in markdown content, `mentioned_list` beside a text (a `<@userid>` in a text, or
a `mentioned_list` beside markdown, mentions no one).
"""

from __future__ import annotations

import random
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from emulators._base import Request, Response, cli_parser, serve
from emulators._chat import _json, _Webhook, _window

WECOM_MAX_MARKDOWN_BYTES = 4096
WECOM_MAX_TEXT_BYTES = 2048
_WECOM_TYPES = {"text", "markdown", "markdown_v2", "image", "news", "file", "voice", "template_card"}
_MENTION = re.compile(r"<@([^<>\s]+)>")


class WeComEmulator(_Webhook):
    """WeCom group robots: key, rate, JSON, type, content and size checks answered with errcodes."""

    service = "wecom"

    def __init__(
        self,
        keys: Iterable[str] | None = None,
        clock: Callable[[], float] | None = None,
        *,
        per_minute: int = 20,
        verbose: bool = False,
    ) -> None:
        super().__init__(clock, verbose)
        self.keys = set(keys if keys is not None else {"demo"})
        self.per_minute = per_minute
        self._sent: dict[str, deque[float]] = {}

    def default_body(self, status: int) -> Mapping[str, Any]:
        """WeCom's "system busy" answer."""
        return {"errcode": -1, "errmsg": _wecom_errmsg(-1, "system busy")}

    def messages(self, key: str) -> list[Any]:
        """Accepted bodies for one robot."""
        with self._lock:
            return [a.body for a in self.attempts if a.target == key and a.result == "0"]

    def mentions(self, key: str) -> list[str]:
        """Who the accepted messages of one robot mention, in order (see the module docstring)."""
        found: list[str] = []
        for body in self.messages(key):
            if body.get("msgtype") == "markdown":
                found += _MENTION.findall(str((body.get("markdown") or {}).get("content", "")))
            elif body.get("msgtype") == "text":
                found += [str(who) for who in (body.get("text") or {}).get("mentioned_list") or ()]
        return found

    def handle(self, request: Request) -> Response:
        """Answer one robot send."""
        if request.path != "/cgi-bin/webhook/send" or request.method != "POST":
            return Response.json(404, {"errcode": 404, "errmsg": "not found"})
        key = request.args.get("key", "")
        body = _json(request.body)
        canned = self._canned_answer()
        if canned is not None:
            self._log(key, body, canned.status, "injected", accepted=False)
            return canned
        with self._lock:
            errcode, what = self._check(key, body)
        self._log(key, body, 200, str(errcode), accepted=errcode == 0)
        return Response.json(200, {"errcode": errcode, "errmsg": _wecom_errmsg(errcode, what)})

    def _check(self, key: str, body: Any) -> tuple[int, str]:
        if key not in self.keys:
            return 93000, "invalid webhook url"
        window = _window(self._sent, key, self.now(), 60.0)
        if len(window) >= self.per_minute:
            return 45009, "api freq out of limit"
        if not isinstance(body, dict):
            return 47001, "data format error"
        msgtype = body.get("msgtype")
        if msgtype not in _WECOM_TYPES:
            return 40008, "invalid message type"
        content = body.get(msgtype)
        text = content.get("content") if isinstance(content, dict) else None
        if msgtype in ("text", "markdown", "markdown_v2"):
            if not text:
                return 44004, "empty content"
            limit = WECOM_MAX_TEXT_BYTES if msgtype == "text" else WECOM_MAX_MARKDOWN_BYTES
            if len(str(text).encode("utf-8")) > limit:
                return 40058, f"{msgtype}.content exceed max length {limit}. invalid Request Parameter"
        window.append(self.now())
        return 0, "ok"


def _wecom_errmsg(errcode: int, what: str) -> str:
    if errcode == 0:
        return what
    hint = f"{random.randrange(10**18, 10**19)}"
    return (
        f"{what}, hint: [{hint}], from ip: 127.0.0.1, "
        f"more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}"
    )


def main_wecom(argv: Sequence[str]) -> int:
    """`python -m emulators wecom`: serve group robots until SIGTERM/SIGINT."""
    parser = cli_parser("wecom", "WeCom group robot webhook stand-in.")
    parser.add_argument("--key", action="append", default=[], metavar="KEY", help="repeatable; default: demo")
    args = parser.parse_args(argv)
    return serve(WeComEmulator(args.key or None, verbose=args.verbose), args.host, args.port)
