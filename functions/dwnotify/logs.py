"""Logging as one JSON object per line (FC ships stderr to SLS), with secrets masked on the way out."""

from __future__ import annotations

import json
import logging
import re
import sys
import urllib.parse
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TextIO

_CONTEXT_FIELDS = ("run_id", "project_id", "request_id", "status", "channel")
_secrets: set[str] = set()
# Any run of this many characters from a token is masked too: a service that echoes a request cut
# short, or a message cut to fit, leaves a token's prefix or middle rather than the whole value.
FRAGMENT = 8
_fragments: set[str] = set()
_USERINFO = re.compile(r"(?<=://)[^/?#@\s]+@")


def register_secrets(values: Iterable[str], *, pieces: bool = True) -> None:
    """Values that must never reach a log line, whatever code tries to print them (also URL-encoded).

    With `pieces`, any run of `FRAGMENT` characters of a value is masked too: for random tokens only.
    """
    for value in values:
        if value and len(value) >= 4:
            forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
            _secrets.update(forms)
            if pieces and len(value) >= 2 * FRAGMENT - 4:
                _fragments.update(
                    form[i : i + FRAGMENT] for form in forms for i in range(len(form) - FRAGMENT + 1)
                )


def mask(text: str) -> str:
    """`text` with every registered secret, any fragment of a token and any URL's `user:pass@` as `***`."""
    for secret in sorted(_secrets, key=len, reverse=True):  # a whole URL before the token inside it
        if secret in text:
            text = text.replace(secret, "***")
    return _USERINFO.sub("***@", _mask_fragments(text))


def _mask_fragments(text: str) -> str:
    if not _fragments or len(text) < FRAGMENT:
        return text
    hidden = bytearray(len(text))
    for start in range(len(text) - FRAGMENT + 1):
        if text[start : start + FRAGMENT] in _fragments:
            hidden[start : start + FRAGMENT] = b"\x01" * FRAGMENT
    if not any(hidden):
        return text
    out: list[str] = []
    for index, char in enumerate(text):
        if not hidden[index]:
            out.append(char)
        elif index == 0 or not hidden[index - 1]:
            out.append("***")
    return "".join(out)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and the context fields given as `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = mask(f"{record.exc_info[0].__name__}: {record.exc_info[1]}")
        return json.dumps(entry, ensure_ascii=False)


class _ContextFilter(logging.Filter):
    def __init__(self, fields: dict[str, object]) -> None:
        super().__init__()
        self.fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in self.fields.items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


def setup(level: str = "INFO", stream: TextIO | None = None, **context: object) -> None:
    """Send dwnotify's logs as JSON lines to `stream` (stderr); quiet the HTTP libraries."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_ContextFilter(dict(context)))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_dwnotify", False):
            root.removeHandler(old)
    handler._dwnotify = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request URL at INFO (webhook URLs carry access tokens); the cloud SDKs log
    # the gateway's string-to-sign (with the STS token) at ERROR. dwnotify logs their errors itself.
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for sdk in ("aliyunsdkcore", "tablestore"):
        logging.getLogger(sdk).setLevel(logging.CRITICAL + 1)
