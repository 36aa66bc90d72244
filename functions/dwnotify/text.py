"""Byte-exact trimming of UTF-8 text: services measure bytes, and a cut never splits a character."""

from __future__ import annotations

from collections.abc import Callable

TRIM_MARKER = "…(truncated)"


def trim_utf8(text: str, max_bytes: int, marker: str = TRIM_MARKER) -> str:
    """Cut `text` to at most `max_bytes` UTF-8 bytes on a character boundary, ending with `marker`."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    if len(marker.encode("utf-8")) > max_bytes:
        marker = ""
    room = max_bytes - len(marker.encode("utf-8"))
    return encoded[:room].decode("utf-8", errors="ignore") + marker


def fit_encoded(text: str, size: Callable[[str], int], max_bytes: int) -> str:
    """The longest `fit_text` of `text` whose `size` (e.g. of the encoded request body) is <= `max_bytes`.

    JSON escaping makes a body larger than its text, by up to six times (a quote or a newline takes
    two bytes, a control character six), so the room for the text is searched for, measuring each try.
    """
    if size(text) <= max_bytes:
        return text
    fitted = ""
    low, high = 0, min(len(text.encode("utf-8")), max_bytes)  # encoding never shrinks a text
    while low < high:
        room = (low + high + 1) // 2
        candidate = fit_text(text, room)
        if size(candidate) <= max_bytes:
            low, fitted = room, candidate
        else:
            high = room - 1
    return fitted


def fit_text(text: str, max_bytes: int) -> str:
    """Fit a message into `max_bytes`, trimming the body but keeping its last line (the console link)."""
    if len(text.encode("utf-8")) <= max_bytes:
        return text
    body, _, last_line = text.rstrip("\n").rpartition("\n")
    tail = "\n" + last_line
    if not body or len(tail.encode("utf-8")) > max_bytes // 2:
        return trim_utf8(text, max_bytes)
    return trim_utf8(body, max_bytes - len(tail.encode("utf-8"))) + tail
