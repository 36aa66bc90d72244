"""DingTalk custom robot and Slack incoming webhook stand-ins that keep what they receive.

Both record accepted messages in `received` (parsed JSON bodies, arrival order) and every attempt in
`attempts`; `inject(status=, body=, times=, headers=, drip_s=, drip_headers=)` makes the next answers
canned ones, written one byte per `drip_s` seconds when given (the body, or the whole answer with
`drip_headers`): a slow drip that no per-read timeout ends.

DingTalk (`POST /robot/send?access_token=T[&timestamp=ms&sign=S]`, always HTTP 200 + errcode), checked
in this order: 300001 unknown token; 130101 robot silenced; 310000 sign missing/wrong or timestamp
over 1 h off; 460101 body over 20,000 bytes; 40035 invalid JSON, missing/unknown msgtype or missing
content; 400402 markdown without title; 310000 keyword missing; 130101 the 21st message within 60 s,
which also silences the robot for 10 minutes.

Slack (`POST /services/<T/B/X>`): 404 `no_service`; 429 `rate_limited` with `Retry-After` from a token
bucket per hook (1 message/s, burst of 3); 400 `invalid_payload` (bad JSON, none of text, blocks or
legacy attachments, attachments not a list of objects); 400 `too_many_attachments` (over 100);
400 `invalid_blocks` (in the message or in an attachment: over 50 blocks, an unknown block type, a
header not plain_text of 1-150 characters, section text over 3,000, a section with neither text nor
fields, over 10 fields or a field over 2,000, over 10 context elements, an empty text object or one
over 3,000, a block_id over 255, or anything slack_sdk's Block Kit models refuse:
`Block.parse(block)` must know the block and `validate_json()` and `to_dict()` must pass); else 200
`ok`. Why each 400 was given is kept in `SlackEmulator.refused`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from emulators._base import Emulator, Request, Response, cli_parser, serve, split_pairs


@dataclass(frozen=True)
class Attempt:
    """One request to a webhook and how it was answered."""

    target: str
    body: Any
    status: int
    result: str
    at: float


@dataclass
class _Canned:
    status: int
    body: bytes
    headers: dict[str, str]
    remaining: int
    drip_s: float = 0.0
    drip_headers: bool = False


class _Webhook(Emulator):
    """Records, canned answers and the control snapshot shared by both webhooks."""

    def __init__(self, clock: Callable[[], float] | None, verbose: bool) -> None:
        super().__init__(clock, verbose=verbose)
        self.received: list[Any] = []
        self.attempts: list[Attempt] = []
        self._canned: deque[_Canned] = deque()

    def inject(
        self,
        status: int = 200,
        body: bytes | str | Mapping[str, Any] | None = None,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        drip_s: float = 0.0,
        drip_headers: bool = False,
    ) -> None:
        """Answer the next `times` requests with this status, body and headers, dripped if `drip_s`."""
        if body is None:
            body = self.default_body(status)
        if isinstance(body, Mapping):
            raw, kind = json.dumps(body, ensure_ascii=False).encode(), "application/json;charset=utf-8"
        else:
            raw, kind = (body.encode() if isinstance(body, str) else body), "text/plain; charset=utf-8"
        with self._lock:
            all_headers = {"Content-Type": kind, **(headers or {})}
            self._canned.append(_Canned(status, raw, all_headers, times, drip_s, drip_headers))

    def default_body(self, status: int) -> str | Mapping[str, Any]:
        """The body an injected answer gets when none is given."""
        return ""

    def snapshot(self) -> dict[str, Any]:
        """Clock, accepted messages and attempts (for GET /_emulator)."""
        with self._lock:
            return {
                **super().snapshot(),
                "received": list(self.received),
                "attempts": [asdict(a) for a in self.attempts],
            }

    def _canned_answer(self) -> Response | None:
        with self._lock:
            while self._canned and self._canned[0].remaining <= 0:
                self._canned.popleft()
            if not self._canned:
                return None
            canned = self._canned[0]
            canned.remaining -= 1
            return Response(
                canned.status, canned.body, dict(canned.headers), canned.drip_s, canned.drip_headers
            )

    def _log(self, target: str, body: Any, status: int, result: str, accepted: bool) -> None:
        with self._lock:
            self.attempts.append(Attempt(target, body, status, result, self.now()))
            if accepted:
                self.received.append(body)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


# --------------------------------------------------------------------------------------- DingTalk
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


class _RobotWebhook(_Webhook):
    """Robots addressed by a token, each with an optional signing secret and required keywords.

    Subclasses check one send (`_check` -> code, message; 0 is accepted) and shape the answer.
    """

    def __init__(
        self,
        robots: Mapping[str, str | None] | None,
        keywords: Mapping[str, str | Sequence[str]] | None,
        clock: Callable[[], float] | None,
        verbose: bool,
    ) -> None:
        super().__init__(clock, verbose)
        self.robots = dict(robots if robots is not None else {"demo": None})
        self.keywords = {t: [k] if isinstance(k, str) else list(k) for t, k in (keywords or {}).items()}
        self._sent: dict[str, deque[float]] = {}

    def messages(self, token: str) -> list[Any]:
        """Accepted message bodies for one robot."""
        with self._lock:
            return [a.body for a in self.attempts if a.target == token and a.result == "0"]

    def _answer(self, token: str, request: Request, reply: Callable[[int, str], Response]) -> Response:
        """An injected answer if one waits, else the checked one, logged either way."""
        body = _json(request.body)
        canned = self._canned_answer()
        if canned is not None:
            self._log(token, body, canned.status, "injected", accepted=False)
            return canned
        with self._lock:
            code, message = self._check(token, request, body)
        self._log(token, body, 200, str(code), accepted=code == 0)
        return reply(code, message)

    def _check(self, token: str, request: Request, body: Any) -> tuple[int, str]:
        raise NotImplementedError


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


def _visible_text(content: Mapping[str, Any]) -> str:
    parts = [str(content.get(k, "")) for k in ("content", "title", "text")]
    parts += [str(link.get("title", "")) for link in content.get("links") or () if isinstance(link, dict)]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ Slack
SLACK_MAX_BLOCKS = 50
SLACK_MAX_TEXT = 40_000
SLACK_MAX_ATTACHMENTS = 100
_SLACK_BLOCK_TYPES = {"section", "header", "divider", "context", "actions", "image", "rich_text", "file"}
_SLACK_ERROR_BODIES = {
    400: "invalid_payload",
    403: "invalid_token",
    404: "no_service",
    410: "channel_is_archived",
    429: "rate_limited",
    500: "rollup_error",
}


class SlackEmulator(_Webhook):
    """Slack incoming webhooks: payload and Block Kit checks, a per-hook rate limit."""

    service = "slack"

    def __init__(
        self,
        hooks: Iterable[str] | None = None,
        clock: Callable[[], float] | None = None,
        *,
        rate_per_s: float = 1.0,
        burst: int = 3,
        verbose: bool = False,
    ) -> None:
        super().__init__(clock, verbose)
        self.hooks = {h.removeprefix("/services/").strip("/") for h in (hooks or {"T000/B000/demo"})}
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}
        # Why each 400 was given, e.g. "invalid_blocks: blocks[0] (header): ..."; tests read and clear it.
        self.refused: list[str] = []
        _slack_sdk_models()  # the Block Kit judge is required: fail here, not on the first message

    def default_body(self, status: int) -> str:
        """Slack's error word for the status."""
        return _SLACK_ERROR_BODIES.get(status, "ok" if status == 200 else "internal_error")

    def messages(self, hook: str) -> list[Any]:
        """Accepted payloads for one hook path."""
        with self._lock:
            return [a.body for a in self.attempts if a.target == hook and a.result == "ok"]

    def handle(self, request: Request) -> Response:
        """Answer one webhook post."""
        hook = request.path.removeprefix("/services/").strip("/")
        payload = _slack_payload(request)
        canned = self._canned_answer()
        if canned is not None:
            self._log(hook, payload, canned.status, "injected", accepted=False)
            return canned
        status, word, headers = self._check(hook, request, payload)
        if status == 200 and isinstance(payload, dict) and len(payload.get("text") or "") > SLACK_MAX_TEXT:
            payload = {**payload, "text": payload["text"][:SLACK_MAX_TEXT]}
        self._log(hook, payload, status, word, accepted=status == 200)
        return Response.text(status, word, headers)

    def _check(self, hook: str, request: Request, payload: Any) -> tuple[int, str, dict[str, str]]:
        if not request.path.startswith("/services/") or hook not in self.hooks:
            return 404, "no_service", {}
        if request.method != "POST":
            return 405, "invalid_method", {}
        wait = self._take_token(hook)
        if wait > 0:
            return 429, "rate_limited", {"Retry-After": str(math.ceil(wait))}
        refusal = _slack_refusal(payload)
        if refusal is not None:
            word, why = refusal
            with self._lock:
                self.refused.append(f"{word}: {why}")
            return 400, word, {}
        return 200, "ok", {}

    def snapshot(self) -> dict[str, Any]:
        """The shared snapshot plus why each 400 was given."""
        with self._lock:
            return {**super().snapshot(), "refused": list(self.refused)}

    def _take_token(self, hook: str) -> float:
        """Spend one token of the hook's bucket; return 0, or the seconds until one is available."""
        with self._lock:
            now = self.now()
            tokens, last = self._buckets.get(hook, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_s)
            if tokens < 1:
                self._buckets[hook] = (tokens, now)
                return (1 - tokens) / self.rate_per_s
            self._buckets[hook] = (tokens - 1, now)
            return 0.0


def _slack_payload(request: Request) -> Any:
    content_type = request.headers.get("Content-Type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = dict(parse_qsl(request.body.decode("utf-8", "replace")))
        return _json(form.get("payload", "").encode())
    return _json(request.body)


def _slack_refusal(payload: Any) -> tuple[str, str] | None:
    """Slack's error word and why, for a payload an incoming webhook refuses; None when it takes it."""
    if not isinstance(payload, dict):
        return "invalid_payload", "not a JSON object"
    attachments = payload.get("attachments")
    if not (payload.get("text") or payload.get("blocks") or attachments):
        return "invalid_payload", "none of text, blocks or attachments"
    if attachments is not None:
        if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
            return "invalid_payload", "attachments must be a list of objects"
        if len(attachments) > SLACK_MAX_ATTACHMENTS:
            return "too_many_attachments", f"{len(attachments)} attachments"
    lists = [("blocks", payload["blocks"])] if "blocks" in payload else []
    for index, attachment in enumerate(attachments or ()):
        if "blocks" in attachment:
            lists.append((f"attachments[{index}].blocks", attachment["blocks"]))
    for where, blocks in lists:
        problem = _blocks_problem(blocks)
        if problem is not None:
            return "invalid_blocks", f"{where}{problem}"
    return None


def _blocks_problem(blocks: Any) -> str | None:
    if not isinstance(blocks, list):
        return ": not a list"
    if len(blocks) > SLACK_MAX_BLOCKS:
        return f": {len(blocks)} blocks, over {SLACK_MAX_BLOCKS}"
    for index, block in enumerate(blocks):
        problem = _block_problem(block) or _sdk_problem(block)
        if problem is not None:
            kind = block.get("type") if isinstance(block, dict) else None
            return f"[{index}] ({kind}): {problem}"
    return None


def _text_problem(text: Any, limit: int, types: Sequence[str] = ("plain_text", "mrkdwn")) -> str | None:
    if not isinstance(text, dict) or text.get("type") not in types:
        return f"text must be a {' or '.join(types)} text object"
    value = text.get("text")
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        return f"text must be 1 to {limit} characters"
    return None


def _block_problem(block: Any) -> str | None:
    """Block Kit's documented limits, checked here (slack_sdk leaves some out: field length, emptiness)."""
    if not isinstance(block, dict) or block.get("type") not in _SLACK_BLOCK_TYPES:
        return "unknown block type"
    if len(str(block.get("block_id", ""))) > 255:
        return "block_id over 255 characters"
    kind = block["type"]
    if kind == "header":
        return _text_problem(block.get("text"), 150, ("plain_text",))
    if kind == "section":
        fields = block.get("fields")
        if "text" not in block and not fields:
            return "neither text nor fields"
        if "text" in block and (problem := _text_problem(block["text"], 3000)):
            return problem
        if fields is not None and (not isinstance(fields, list) or not 0 < len(fields) <= 10):
            return "fields must be a list of 1 to 10 text objects"
        return next((f"field {p}" for p in (_text_problem(f, 2000) for f in fields or ()) if p), None)
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 0 < len(elements) <= 10:
            return "elements must be a list of 1 to 10"
        texts = [e for e in elements if isinstance(e, dict) and e.get("type") in ("plain_text", "mrkdwn")]
        return next((f"element {p}" for p in (_text_problem(t, 3000) for t in texts) if p), None)
    return None


@lru_cache(maxsize=1)
def _slack_sdk_models() -> tuple[Any, type[Exception]]:
    """slack_sdk's Block Kit models: a judge no one here wrote (a development dependency)."""
    from slack_sdk.errors import SlackObjectFormationError
    from slack_sdk.models.blocks import Block

    return Block, SlackObjectFormationError


def _sdk_problem(block: dict[str, Any]) -> str | None:
    """What slack_sdk finds wrong with one block; a type it cannot parse is wrong too."""
    block_class, formation_error = _slack_sdk_models()
    try:
        parsed = block_class.parse(json.loads(json.dumps(block)))
        if parsed is None:
            return "slack_sdk: unknown block"
        parsed.validate_json()
        serialized = parsed.to_dict()  # validates the text objects and elements inside too
    except (formation_error, TypeError, KeyError, AttributeError, ValueError) as error:
        return f"slack_sdk: {type(error).__name__}: {error}"
    if _holds_none(serialized):
        return "slack_sdk: an element it does not know"
    return None


def _holds_none(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_holds_none(item) for item in value.values())
    if isinstance(value, list):
        return any(item is None or _holds_none(item) for item in value)
    return False


# -------------------------------------------------------------------------------------------- CLI
def robot_options(
    service: str, description: str, flag: str, argv: Sequence[str]
) -> tuple[argparse.Namespace, dict[str, str | None], dict[str, list[str]]]:
    """Parse `--<flag> TOKEN[=SECRET]` and `--keyword TOKEN=WORD` (both repeatable) for a bot service."""
    parser = cli_parser(service, description)
    parser.add_argument(
        f"--{flag}", action="append", default=[], metavar="TOKEN[=SECRET]", help="repeatable; default: demo"
    )
    parser.add_argument("--keyword", action="append", default=[], metavar="TOKEN=WORD", help="repeatable")
    args = parser.parse_args(argv)
    robots = dict(split_pairs(getattr(args, flag), f"--{flag}")) or {"demo": None}
    keywords: dict[str, list[str]] = {}
    for token, word in split_pairs(args.keyword, "--keyword"):
        keywords.setdefault(token, []).append(word or "")
    return args, robots, keywords


def main_dingtalk(argv: Sequence[str]) -> int:
    """`python -m emulators dingtalk`: serve robots until SIGTERM/SIGINT."""
    args, robots, keywords = robot_options(
        "dingtalk", "DingTalk custom robot webhook stand-in.", "robot", argv
    )
    return serve(DingTalkEmulator(robots, keywords, verbose=args.verbose), args.host, args.port)


def main_slack(argv: Sequence[str]) -> int:
    """`python -m emulators slack`: serve incoming webhooks until SIGTERM/SIGINT."""
    parser = cli_parser("slack", "Slack incoming webhook stand-in.")
    parser.add_argument("--hook", action="append", default=[], metavar="PATH", help="default: T000/B000/demo")
    args = parser.parse_args(argv)
    return serve(SlackEmulator(args.hook or None, verbose=args.verbose), args.host, args.port)
