"""Generic JSON webhook receiver stand-in that keeps what it receives.

Same records and canned answers as the chat stand-ins (`emulators._chat`: `received`, `attempts`,
`inject`).

Generic webhook (dwnotify's own format, see the README): 404 unknown path; 405 not POST; 413 over
64 KiB; 401 signature header missing, not `sha256=<hex>` HMAC-SHA256(secret, f"{timestamp}." + body),
or timestamp over 5 minutes off (hooks with a secret); 400 not a JSON object with string `title` and
`text`; 429 over `per_minute` (default 60) with `Retry-After`; else 200 `{"ok": true}`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from emulators._base import Request, Response, cli_parser, serve, split_pairs
from emulators._chat import _json, _Webhook, _window

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
