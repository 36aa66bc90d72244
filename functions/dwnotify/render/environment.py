"""The sandboxed Jinja2 environment of each template format: its loader, filters and per-channel escaping."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jinja2

from dwnotify.channels import CHANNEL_TYPES
from dwnotify.channels.kind import TemplateFormat
from dwnotify.sandbox import MeteredEnvironment, RenderLimits

from .context import Mention, Url
from .filters import (
    event_emoji,
    event_label,
    format_datetime,
    format_duration,
    status_emoji,
    status_label,
    truncate_bytes,
)

# The dwnotify package (functions/dwnotify, or dwnotify/ in the FC code package), not this sub-package.
_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_KEPT_GLOBALS = ("range", "dict", "namespace")  # the sandbox's metered range; nothing reaches the OS


def builtin_templates_dir() -> Path:
    """The built-in `templates/` folder: beside the package when deployed, at the checkout's top."""
    candidates = (_PACKAGE_DIR.parent / "templates", _PACKAGE_DIR.parent.parent / "templates")
    return next((path for path in candidates if path.is_dir()), candidates[-1])


def template_loader(search_path: Sequence[Path]) -> jinja2.FileSystemLoader:
    """The loader of templates from `search_path`, the first folder first."""
    return jinja2.FileSystemLoader([str(path) for path in search_path])


def _formats(channel_type: str) -> tuple[TemplateFormat, ...] | None:
    known = CHANNEL_TYPES.get(channel_type)
    return known.formats if known else None


class _Raw(str):
    """Output a filter has already escaped for its channel: `finalize` lets it through."""

    __slots__ = ()


class _Environment(MeteredEnvironment):
    """A strict, metered sandbox for one template format, escaping every output through `finalize`."""

    def __init__(self, loader: jinja2.BaseLoader, fmt: TemplateFormat, limits: RenderLimits) -> None:
        self.format = fmt
        super().__init__(
            limits=limits,
            loader=loader,
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # chat markup, not HTML: finalize escapes per channel
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            auto_reload=False,
            finalize=self._finalize,
        )
        self.globals = {name: self.globals[name] for name in _KEPT_GLOBALS}
        self.filters.update(
            duration=format_duration,
            datetime=format_datetime,
            status_emoji=status_emoji,
            status_label=status_label,
            event_emoji=event_emoji,
            event_label=event_label,
            truncate_bytes=truncate_bytes,
            quote=self._quote,
            link=self._link,
            tojson=self._tojson,
        )
        self.meter_filters()

    def _finalize(self, value: object) -> str:
        if isinstance(value, _Raw):
            return value
        if isinstance(value, Mention):
            return self.format.escape_output(value)
        if value is None:
            return ""
        if isinstance(value, Url):
            return self.format.escape_output(self.format.markup.url(value))
        return self.format.escape_output(self.format.escape_text(str(value)))

    def _quote(self, value: object) -> _Raw:
        """A block quote of a (multi-line) text, one `> ` per line."""
        lines = ("" if value is None else str(value)).strip().splitlines() or [""]
        body = "\n".join(f"> {self.format.escape_text(line.rstrip())}".rstrip() for line in lines)
        return _Raw(self.format.escape_output(body))

    def _link(self, url: object, text: object = None) -> _Raw:
        """A link in the channel's syntax: `<url|text>` (Slack) or `[text](url)` (DingTalk)."""
        label = str(url if text is None else text)
        return _Raw(self.format.escape_output(self.format.markup.link(str(url), label)))

    def _tojson(self, value: object) -> str:
        """A JSON literal; in a `.blocks.json.j2` its strings are escaped for mrkdwn too."""
        if not self.format.is_json:
            return json.dumps(value, ensure_ascii=False, default=str)
        return _Raw(json.dumps(_map_strings(value, self.format.escape_text), ensure_ascii=False, default=str))


def _map_strings(value: object, func: Callable[[str], str]) -> object:
    if isinstance(value, str):
        return func(value)
    if isinstance(value, Mapping):
        return {key: _map_strings(item, func) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_map_strings(item, func) for item in value]
    return value
