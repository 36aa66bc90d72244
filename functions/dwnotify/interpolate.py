"""`${NAME}` and `${NAME:-default}` references in config values, replaced from the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# A place in the parsed YAML: mapping keys and list indices from the top, e.g. ("rules", 0, "channels").
Loc = tuple[str | int, ...]

# `$$` (a literal `$`), a well-formed reference, or a `${` that starts no well-formed reference.
_REFERENCE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<bad>\{))"
)

# A value read from a variable whose name contains one of these is never shown in an error.
_SENSITIVE_WORDS = ("TOKEN", "SECRET", "KEY", "PASSWORD")

MALFORMED = (
    "contains a '${' that starts no ${NAME} or ${NAME:-default} reference (write '$$' for a literal '$')"
)


@dataclass(frozen=True)
class Expanded:
    """One string after interpolation, with the variables it named and those it could not find."""

    text: str
    names: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    malformed: bool = False

    @property
    def sensitive(self) -> bool:
        """Whether the text came (partly) from a variable whose name marks it as a secret."""
        return any(word in name.upper() for name in self.names for word in _SENSITIVE_WORDS)


@dataclass
class TreeExpansion:
    """A whole YAML tree after interpolation: the new tree, its problems and its secret-bearing places."""

    data: object = None
    problems: list[tuple[Loc, str]] = field(default_factory=list)
    sensitive: set[Loc] = field(default_factory=set)


def expand(text: str, environ: Mapping[str, str]) -> Expanded:
    """Replace every reference in `text`; an unset or empty variable takes its default, if any."""
    names: list[str] = []
    missing: list[str] = []
    malformed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal malformed
        if match["dollar"]:
            return "$"
        if match["bad"]:
            malformed = True
            return match[0]
        name, default = match["name"], match["default"]
        names.append(name)
        value = environ.get(name)
        if default is not None and not value:
            return default.replace("$$", "$")
        if value is None:
            missing.append(name)
            return ""
        return value

    result = _REFERENCE.sub(replace, text)
    return Expanded(result, tuple(names), tuple(missing), malformed)


def expand_tree(data: object, environ: Mapping[str, str]) -> TreeExpansion:
    """Interpolate every string value (not key) in nested mappings and lists."""
    expansion = TreeExpansion()
    expansion.data = _walk(data, (), environ, expansion)
    return expansion


def _walk(data: object, loc: Loc, environ: Mapping[str, str], out: TreeExpansion) -> object:
    if isinstance(data, dict):
        return {key: _walk(value, (*loc, str(key)), environ, out) for key, value in data.items()}
    if isinstance(data, list):
        return [_walk(item, (*loc, index), environ, out) for index, item in enumerate(data)]
    if not isinstance(data, str):
        return data
    expanded = expand(data, environ)
    for name in dict.fromkeys(expanded.missing):
        out.problems.append((loc, f"environment variable {name} is not set"))
    if expanded.malformed:
        out.problems.append((loc, MALFORMED))
    if expanded.sensitive:
        out.sensitive.add(loc)
    return expanded.text
