"""Lark/Feishu custom bot, WeCom group robot and generic JSON webhook stand-ins.

Same records and canned answers as `emulators.webhooks` (`received`, `attempts`, `inject`), written
from each service's documentation, never from dwnotify's code.

Lark (`POST /open-apis/bot/v2/hook/<token>`, "自定义机器人使用指南"), always HTTP 200 + `code`,
checked in this order: 19001 unknown token; 11232 over 5 messages a second or 100 a minute; 9499 body
over 20 KB or not JSON; 19021 `timestamp`/`sign` missing, wrong, or over an hour off (signing bots);
9499 unknown `msg_type` or missing content (`content.text`, `content.post`, or a `card` with elements);
19024 none of the bot's keywords in the message text. Success: `{"StatusCode": 0, "StatusMessage":
"success", "code": 0, "data": {}, "msg": "success"}`. `mentions(token)` lists the `<at id=...>` (and
`user_id=`, `open_id=`, `email=`, `ids=`) of accepted messages, `all` for everyone.

WeCom (`POST /cgi-bin/webhook/send?key=K`, "群机器人配置说明"), always HTTP 200 + `errcode`: 93000 unknown
key; 45009 over 20 messages a minute; 47001 not JSON; 40008 unknown `msgtype`; 44004 empty content;
40058 text over 2,048 or markdown over 4,096 bytes. `errmsg` ends with WeCom's `, hint: [...], from
ip: ..., more info at ...` tail. `mentions(key)` lists the `<@userid>` of accepted markdown.

Generic webhook (dwnotify's own format, see the README): 404 unknown path; 405 not POST; 413 over
64 KiB; 401 signature header missing, not `sha256=<hex>` HMAC-SHA256(secret, f"{timestamp}." + body),
or timestamp over 5 minutes off (hooks with a secret); 400 not a JSON object with string `title` and
`text`; 429 over `per_minute` (default 60) with `Retry-After`; else 200 `{"ok": true}`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import random
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from emulators._base import Request, Response, cli_parser, serve, split_pairs
from emulators.webhooks import _json, _RobotWebhook, _Webhook, robot_options


def _window(sent: dict[str, deque[float]], target: str, now: float, span: float) -> deque[float]:
    """The send times of `target` within the last `span` seconds."""
    times = sent.setdefault(target, deque())
    while times and now - times[0] >= span:
        times.popleft()
    return times


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


# ------------------------------------------------------------------------------------------- Lark
LARK_MAX_BYTES = 20 * 1024
LARK_OK = {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}
_LARK_MSG_TYPES = {"text", "post", "image", "share_chat", "interactive"}


def lark_sign(secret: str, timestamp: str) -> str:
    """base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")), as the guide's Python sample."""
    string_to_sign = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(string_to_sign, digestmod=hashlib.sha256).digest()).decode()


_LARK_AT = re.compile(r"<at\s+(?:id|ids|user_id|open_id|email)\s*=\s*['\"]?([^'\"<>\s]+)", re.IGNORECASE)


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
            for text in _strings(body.get("card") or body.get("content")):
                for ids in _LARK_AT.findall(text):
                    found += ids.split(",")
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


# ------------------------------------------------------------------------------------------ WeCom
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
        """The `<@userid>` mentions in the accepted markdown messages of one robot, in order."""
        found: list[str] = []
        for body in self.messages(key):
            found += _MENTION.findall(str((body.get("markdown") or {}).get("content", "")))
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


# -------------------------------------------------------------------------------- generic webhook
WEBHOOK_MAX_BYTES = 64 * 1024
WEBHOOK_TOLERANCE_S = 300


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256(key=secret, msg=f"{timestamp}." + raw body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class GenericWebhookEmulator(_Webhook):
    """A receiver of dwnotify's generic webhook: signature, size, shape and rate checks."""

    service = "webhook"

    def __init__(
        self,
        hooks: Mapping[str, str | None] | None = None,
        clock: Callable[[], float] | None = None,
        *,
        per_minute: int = 60,
        verbose: bool = False,
    ) -> None:
        super().__init__(clock, verbose)
        raw = hooks if hooks is not None else {"/hook/demo": None}
        self.hooks = {"/" + path.strip("/"): secret for path, secret in raw.items()}
        self.per_minute = per_minute
        self._sent: dict[str, deque[float]] = {}

    def default_body(self, status: int) -> Mapping[str, Any]:
        """A JSON error naming the status."""
        return {"ok": status < 400, "error": f"injected {status}"}

    def messages(self, path: str) -> list[Any]:
        """Accepted bodies for one hook path."""
        target = "/" + path.strip("/")
        with self._lock:
            return [a.body for a in self.attempts if a.target == target and a.result == "ok"]

    def handle(self, request: Request) -> Response:
        """Answer one webhook post."""
        body = _json(request.body)
        canned = self._canned_answer()
        if canned is not None:
            self._log(request.path, body, canned.status, "injected", accepted=False)
            return canned
        with self._lock:
            status, word, headers = self._check(request, body)
        self._log(request.path, body, status, word, accepted=status == 200)
        payload = {"ok": True} if status == 200 else {"ok": False, "error": word}
        return Response.json(status, payload, headers)

    def _check(self, request: Request, body: Any) -> tuple[int, str, dict[str, str]]:
        if request.path not in self.hooks:
            return 404, "unknown hook", {}
        if request.method != "POST":
            return 405, "use POST", {}
        if len(request.body) > WEBHOOK_MAX_BYTES:
            return 413, "body over 64 KiB", {}
        secret = self.hooks[request.path]
        if secret is not None:
            problem = self._signature_problem(secret, request)
            if problem:
                return 401, problem, {}
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("title", "text")):
            return 400, "expected a JSON object with string title and text", {}
        window = _window(self._sent, request.path, self.now(), 60.0)
        if len(window) >= self.per_minute:
            wait = math.ceil(window[0] + 60.0 - self.now())
            return 429, "rate limited", {"Retry-After": str(max(1, wait))}
        window.append(self.now())
        return 200, "ok", {}

    def _signature_problem(self, secret: str, request: Request) -> str | None:
        timestamp = request.headers.get("X-Dwnotify-Timestamp", "")
        signature = request.headers.get("X-Dwnotify-Signature", "")
        if not timestamp or not signature:
            return "missing signature"
        if not timestamp.isdigit() or abs(self.now() - int(timestamp)) > WEBHOOK_TOLERANCE_S:
            return "stale timestamp"
        if not hmac.compare_digest(webhook_signature(secret, timestamp, request.body), signature):
            return "bad signature"
        return None


# -------------------------------------------------------------------------------------------- CLI
def main_lark(argv: Sequence[str]) -> int:
    """`python -m emulators lark`: serve custom bots until SIGTERM/SIGINT."""
    args, bots, keywords = robot_options("lark", "Lark/Feishu custom bot webhook stand-in.", "bot", argv)
    return serve(LarkEmulator(bots, keywords, verbose=args.verbose), args.host, args.port)


def main_wecom(argv: Sequence[str]) -> int:
    """`python -m emulators wecom`: serve group robots until SIGTERM/SIGINT."""
    parser = cli_parser("wecom", "WeCom group robot webhook stand-in.")
    parser.add_argument("--key", action="append", default=[], metavar="KEY", help="repeatable; default: demo")
    args = parser.parse_args(argv)
    return serve(WeComEmulator(args.key or None, verbose=args.verbose), args.host, args.port)


def main_webhook(argv: Sequence[str]) -> int:
    """`python -m emulators webhook`: serve generic JSON webhooks until SIGTERM/SIGINT."""
    parser = cli_parser("webhook", "Receiver of dwnotify's generic JSON webhook.")
    parser.add_argument(
        "--hook", action="append", default=[], metavar="PATH[=SECRET]", help="repeatable; default: /hook/demo"
    )
    parser.add_argument("--per-minute", type=int, default=60, help="rate limit per hook (default: 60)")
    args = parser.parse_args(argv)
    hooks = dict(split_pairs(args.hook, "--hook")) or {"/hook/demo": None}
    emulator = GenericWebhookEmulator(hooks, per_minute=args.per_minute, verbose=args.verbose)
    return serve(emulator, args.host, args.port)
