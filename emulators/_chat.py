"""What the chat and webhook stand-ins share: records, canned answers, token-addressed robots.

Each records accepted messages in `received` (parsed JSON bodies, arrival order) and every attempt in
`attempts`; `inject(status=, body=, times=, headers=, drip_s=, drip_headers=)` makes the next answers
canned ones, written one byte per `drip_s` seconds when given (the body, or the whole answer with
`drip_headers`): a slow drip that no per-read timeout ends. `_RobotWebhook` is the base of robots
addressed by a token with an optional secret and keywords (DingTalk, Lark), `robot_options` their
command line, `_window` a sliding window of send times (Lark, WeCom, generic webhook).
"""

from __future__ import annotations

import argparse
import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from emulators._base import Emulator, Request, Response, cli_parser, split_pairs


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
    """Records, canned answers and the control snapshot shared by every chat and webhook stand-in."""

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


def _window(sent: dict[str, deque[float]], target: str, now: float, span: float) -> deque[float]:
    """The send times of `target` within the last `span` seconds."""
    times = sent.setdefault(target, deque())
    while times and now - times[0] >= span:
        times.popleft()
    return times


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
