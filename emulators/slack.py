"""Slack incoming webhook stand-in that keeps what it receives (records and `inject` from `_chat`).

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

import json
import math
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from emulators._base import Request, Response, cli_parser, serve
from emulators._chat import _json, _Webhook

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


def main_slack(argv: Sequence[str]) -> int:
    """`python -m emulators slack`: serve incoming webhooks until SIGTERM/SIGINT."""
    parser = cli_parser("slack", "Slack incoming webhook stand-in.")
    parser.add_argument("--hook", action="append", default=[], metavar="PATH", help="default: T000/B000/demo")
    args = parser.parse_args(argv)
    return serve(SlackEmulator(args.hook or None, verbose=args.verbose), args.host, args.port)
