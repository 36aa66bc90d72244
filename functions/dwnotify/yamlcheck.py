"""Reading the config's YAML: a strict loader, and typed readers that collect every problem by place.

The config schema itself lives in `config.py`; this module knows nothing of dataworks or channels.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from dwnotify.errors import ConfigError
from dwnotify.interpolate import Loc

NAME = re.compile(r"[A-Za-z0-9_-]+")
_DIGITS = re.compile(r"[0-9]+")
_DURATION = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_DURATION_UNITS = (86400, 3600, 60, 1)
_SECRET_FIELDS = frozenset({"url", "secret"})
_LONGEST_SHOWN = 40  # longer values and keys are never quoted: tokens and secrets are longer


# A real config is a few KB, tens of values deep at most. These bounds keep a hostile or broken file (a
# "billion laughs" of nested aliases, an alias inside itself, thousands of levels) to a quick config error.
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 50
MAX_VALUES = 100_000  # values after aliases are expanded: every later reader walks the expanded tree


class _TooComplex(Exception):
    """The YAML is beyond the bounds above; the message says which."""


def read_yaml(path: Path) -> tuple[object, list[str]]:
    """The file's YAML data and the keys it repeats (as problems); raise `ConfigError` if unreadable."""
    label = str(path)
    loader = _Loader(_read(path), label)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, loader.duplicates
        _check_size(node)
        return loader.construct_document(node), loader.duplicates
    except _TooComplex as exc:
        raise ConfigError([f"{label}: {exc}"]) from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: e.g. an impossible date like 2024-02-30
        raise ConfigError([_yaml_problem(label, exc)]) from None
    finally:
        loader.dispose()


def _check_size(root: yaml.Node) -> None:
    """Refuse an alias that contains itself, or a document that expands past `MAX_VALUES` values.

    Each node is sized once (aliases share nodes), so this is linear in the file, not in its expansion.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_VALUES:
                raise _TooComplex(
                    f"the config expands to more than {MAX_VALUES:,} values through its aliases (*name)"
                )
            continue
        open_nodes.add(id(node))  # a cycle is caught below, when a child that is still open is pushed
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                raise _TooComplex(
                    f"line {child.start_mark.line + 1}: an alias refers to a value that contains it"
                )
            stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _read(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError([f"{path}: the config file is {size:,} bytes; a config is at most 1 MiB"])
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        problem = "the config file does not exist (set it with --config or $DWNOTIFY_CONFIG)"
    except OSError as exc:
        problem = f"the config file cannot be read: {exc.strerror or exc}"
    except UnicodeDecodeError:
        problem = "the config file is not UTF-8 text"
    raise ConfigError([f"{path}: {problem}"])


def _yaml_problem(label: str, exc: Exception) -> str:
    # Only the parser's own words and the line: str(exc) quotes the file's text, which may hold secrets.
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        return f"{label}: line {exc.problem_mark.line + 1}: {exc.problem or 'invalid YAML'}"
    if isinstance(exc, ValueError):
        return f"{label}: a value cannot be read: {exc}"
    return f"{label}: the file is not valid YAML"


class _Loader(yaml.SafeLoader):
    """SafeLoader that records keys repeated within one mapping (PyYAML silently keeps the last)."""

    def __init__(self, text: str, label: str) -> None:
        super().__init__(text)
        self.label = label
        self.duplicates: list[str] = []
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # The composer recurses once per level: stop a deep file before Python's recursion limit does.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
                raise _TooComplex(f"line {line}: values are nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, object]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if (key_node.tag, key_node.value) in seen:
                line = key_node.start_mark.line + 1
                key = f"key {key_node.value!r}" if len(key_node.value) <= _LONGEST_SHOWN else "a long key"
                self.duplicates.append(f"{self.label}: line {line}: {key} is given twice")
            seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep=deep)


def kind(value: object) -> str:
    """How a problem names the type of a YAML value: "a list", "nothing", ...."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    names = {int: "an integer", float: "a number", str: "a string", dict: "a mapping", list: "a list"}
    return names.get(type(value), f"a {type(value).__name__}")


@dataclass(frozen=True)
class Fields:
    """The known keys of one mapping, and where it sits."""

    values: Mapping[str, object]
    loc: Loc

    def at(self, key: str) -> tuple[object, Loc]:
        """The key's value (None if absent) and its place, ready to hand to a reader."""
        return self.values.get(key), (*self.loc, key)


class Checker:
    """Collects problems and reads typed values; an invalid value yields the default after a problem."""

    def __init__(self, root: str, sensitive: Collection[Loc]) -> None:
        self.root = root
        self.sensitive = sensitive
        self.problems: list[str] = []
        self.blamed: set[Loc] = set()  # places already reported; one problem per place is enough

    def where(self, loc: Loc) -> str:
        """The dotted path of a place: `rules[1].channels`, `channels.ops.url`."""
        text = ""
        for part in loc:
            if isinstance(part, int):
                text += f"[{part}]"
            elif len(part) > _LONGEST_SHOWN:  # a key that long is likely a pasted value: maybe a secret
                text += f"[<a key of {len(part)} characters>]"
            elif NAME.fullmatch(part):
                text += f".{part}" if text else part
            else:
                text += f"[{part!r}]"
        return text or self.root

    def add(self, loc: Loc, message: str, value: object = None) -> None:
        """Record a problem at `loc`, quoting `value` only where it cannot be a secret."""
        if loc in self.blamed:
            return
        self.blamed.add(loc)
        shown = "" if value is None or self._hidden(loc, value) else f" (got {value!r})"
        self.problems.append(f"{self.where(loc)}: {message}{shown}")

    def quote(self, loc: Loc, value: object) -> str:
        """`value` quoted for a problem at `loc`, or "the value" where it could be a secret or is long."""
        return "the value" if self._hidden(loc, value) else repr(value)

    def _hidden(self, loc: Loc, value: object) -> bool:
        # Never url or secret fields, nor values from variables named like secrets, nor anything long.
        secret = loc in self.sensitive or _SECRET_FIELDS.intersection(str(part) for part in loc)
        return bool(secret) or len(repr(value)) > _LONGEST_SHOWN

    def wrong_type(self, loc: Loc, expected: str, value: object) -> None:
        """Record that `value` has the wrong type."""
        self.add(loc, f"expected {expected}, got {kind(value)}")

    def section(
        self, value: object, loc: Loc, required: Collection[str] = (), optional: Collection[str] = ()
    ) -> Fields | None:
        """The mapping's keys with a value; unknown, missing and empty required keys are problems."""
        if not isinstance(value, dict):
            self.wrong_type(loc, "a mapping", value)
            return None
        allowed = sorted({*required, *optional})
        misspelt: set[str] = set()  # keys an unknown key was taken for: do not also call them missing
        for key in value:
            if key not in allowed:
                self.add((*loc, str(key)), _unknown_key(key, allowed))
                misspelt.update(difflib.get_close_matches(str(key), allowed, n=1))
        for key in required:
            if value.get(key) is None and key not in misspelt:
                self.add(
                    (*loc, key),
                    "this required key has no value" if key in value else "this required key is missing",
                )
        known = {key: item for key, item in value.items() if key in allowed and item is not None}
        return Fields(known, loc)

    def items(self, value: object, loc: Loc, empty: str | None = None) -> list[tuple[object, Loc]]:
        """The list's non-null items with their places; `empty` is the problem for an empty list, if any."""
        if value is None:  # absent: `section` reports it if it is required
            return []
        if not isinstance(value, list):
            self.wrong_type(loc, "a list", value)
            return []
        if not value and empty:
            self.add(loc, empty)
        for index, item in enumerate(value):
            if item is None:
                self.add((*loc, index), "this list item is empty")
        return [(item, (*loc, index)) for index, item in enumerate(value) if item is not None]

    def text(self, value: object, loc: Loc, *, numbers: bool = False, empty_ok: bool = False) -> str | None:
        """A stripped non-empty string, else None (`numbers`: YAML integers too; `empty_ok`: "" is None)."""
        if value is None:
            return None
        if numbers and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.wrong_type(loc, "a string", value)
            return None
        if not value.strip() and not empty_ok:
            self.add(loc, "must not be empty")
        return value.strip() or None

    def matching(self, value: object, loc: Loc, pattern: re.Pattern[str], rule: str) -> str | None:
        """A string that `pattern` matches in full; `rule` says what it may be."""
        text = self.text(value, loc)
        if text is not None and not pattern.fullmatch(text):
            self.add(loc, rule, text)
            return None
        return text

    def name(self, value: object, loc: Loc) -> str | None:
        """A name made of letters, digits, '_' and '-'."""
        return self.matching(value, loc, NAME, "may only contain letters, digits, '_' and '-'")

    def choice(self, value: object, loc: Loc, options: Collection[str]) -> str | None:
        """One of `options`."""
        text = self.text(value, loc)
        if text is not None and text not in options:
            allowed = ", ".join(map(repr, options))
            self.add(loc, f"{self.quote(loc, text)} is not one of {allowed}{suggest(text, options)}")
            return None
        return text

    def integer(self, value: object, loc: Loc, minimum: int = 1, maximum: int | None = None) -> int | None:
        """A whole number (or a string of digits, as interpolation yields) from `minimum` to `maximum`."""
        if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
            value = int(value.strip())
        if value is None:
            return None
        if isinstance(value, (str, float)):
            self.add(loc, "must be a whole number", value)
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong_type(loc, "a whole number", value)
            return None
        if value < minimum:
            self.add(loc, f"must be at least {minimum}", value)
            return None
        if maximum is not None and value > maximum:
            self.add(loc, f"must be at most {maximum}", value)
            return None
        return value

    def number(self, value: object, loc: Loc, default: float, minimum: float, maximum: float) -> float:
        """A number from `minimum` to `maximum` (or a string holding one)."""
        if value is None:
            return default
        number = _float(value)
        if number is None or not minimum <= number <= maximum:
            self.add(loc, f"must be a number from {minimum:g} to {maximum:g}", value)
            return default
        return number

    def boolean(self, value: object, loc: Loc, default: bool) -> bool:
        """true or false (also as the strings "true" and "false")."""
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if value is None or isinstance(value, bool):
            return default if value is None else value
        self.add(loc, "must be true or false", value)
        return default

    def duration(
        self,
        value: object,
        loc: Loc,
        default: timedelta,
        *,
        zero_ok: bool = False,
        maximum: timedelta | None = None,
    ) -> timedelta:
        """A duration such as 30s, 10m, 24h, 7d or 1h30m, at most `maximum`; a bare number means seconds."""
        if value is None:
            return default
        seconds = _seconds(value)
        if seconds is None:
            self.add(loc, "must be a duration such as 30s, 10m, 24h, 7d or 1h30m", value)
        elif seconds == 0 and not zero_ok:
            self.add(loc, "must be longer than zero", value)
        elif maximum is not None and seconds > maximum.total_seconds():
            self.add(loc, f"must be at most {format_seconds(int(maximum.total_seconds()))}", value)
        elif seconds > 10**9:
            self.add(loc, "is too long", value)
        else:
            return timedelta(seconds=seconds)
        return default

    def strings(self, value: object, loc: Loc) -> tuple[str, ...]:
        """A list of strings (YAML integers, such as phone numbers, are taken as strings)."""
        if value is None:
            return ()
        found = (self.text(item, here, numbers=True) for item, here in self.items(value, loc))
        return tuple(text for text in found if text is not None)

    def path(self, value: object, loc: Loc, base_dir: Path) -> Path | None:
        """A file system path; a relative one is taken from `base_dir`."""
        text = self.text(value, loc)
        if text is None:
            return None
        if "\0" in text or len(text) > 4096 or any(len(part.encode()) > 255 for part in Path(text).parts):
            self.add(loc, "is not a usable path (a NUL character, or a name too long for the file system)")
            return None
        try:
            return base_dir / Path(text).expanduser()
        except RuntimeError:  # `~user` for a user this machine does not know
            self.add(
                loc, f"{self.quote(loc, text)} names the home folder of a user this machine does not know"
            )
            return None


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _seconds(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if _DIGITS.fullmatch(text):
        return int(text)
    match = _DURATION.fullmatch(text)
    if match is None:
        return None
    return sum(int(part) * unit for part, unit in zip(match.groups(), _DURATION_UNITS, strict=True) if part)


def format_seconds(seconds: int) -> str:
    """A whole number of seconds the way durations are written: 30s, 10m, 1h30m."""
    parts = []
    for unit, name in zip(_DURATION_UNITS, "dhms", strict=True):
        if seconds >= unit:
            parts.append(f"{seconds // unit}{name}")
            seconds %= unit
    return "".join(parts) or "0s"


def suggest(word: str, options: Collection[str]) -> str:
    """A " (did you mean 'x'?)" hint for a misspelt `word`, or ""."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_key(key: object, allowed: Collection[str]) -> str:
    if not isinstance(key, str):
        return f"keys must be strings, not {kind(key)}"
    return f"unknown key{suggest(key, allowed) or '; the keys here are ' + ', '.join(allowed)}"
