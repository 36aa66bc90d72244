"""`dwnotify render`: the messages a run would produce, from saved API responses, sending nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from .answers import parse_run
from .channels import CHANNEL_TYPES
from .diff import diff
from .errors import ConfigError, TemplateError
from .living import reply_template, wants_reply
from .model import Event, Run
from .rules import route
from .settings import DEFAULT_CONSOLE_URL, ProjectSettings, RuleSettings, Settings


def read_run(path: Path) -> Run:
    """A run from a JSON file holding a GetPipelineRun response or its `Pipeline` object."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError([f"{path}: not a readable JSON file ({error})"]) from None
    if isinstance(data, dict):
        data = data.get("Pipeline") or data.get("Deployment") or data
    if not isinstance(data, dict) or "Id" not in data:
        raise ConfigError([f"{path}: no pipeline run (an object with Id, Status, Stages) found"])
    return parse_run(data)


@dataclass(frozen=True)
class Preview:
    """A run's new events against the previous state, and the messages they make: (label, text)."""

    events: tuple[Event, ...]
    messages: tuple[tuple[str, str], ...]


def render_preview(
    run_path: Path,
    previous_path: Path | None,
    settings: Settings | None,
    channel_name: str | None,
    channel_type: str | None,
    template: str | None,
) -> Preview:
    """Every message the run's events would produce: through the config's rules, or for one channel type.

    With `channel_type`, every event goes into one message for that type; the config, when given,
    still supplies the templates folder, the workspace names and the console link.
    A template that is missing or fails is a ConfigError (`template: ...`).
    """
    from .render import MessageContext, Renderer, builtin_templates_dir

    run = read_run(run_path)
    previous = diff(None, read_run(previous_path))[1] if previous_path else None
    events, _ = diff(previous, run)
    if not events:
        return Preview((), ())
    if channel_type is not None:
        rule = RuleSettings(
            name="render", events=("*",), channels=(channel_type,), template=template or "default"
        )
        targets = [(channel_type, channel_type, rule, tuple(events))]
    else:
        assert settings is not None
        targets = [
            (r.channel, settings.channels[r.channel].type, r.rule, r.events)
            for r in route(events, run.project_id, settings.rules)
            if channel_name is None or r.channel == channel_name
        ]
    if settings is None:
        project = ProjectSettings(run.project_id, None, "cn-shanghai", "")
        renderer = Renderer(None, builtin_templates_dir())
        link = project.console_url(DEFAULT_CONSOLE_URL, run.id)
    else:
        project = settings.dataworks.project(run.project_id)
        renderer = Renderer(settings.templates, builtin_templates_dir())
        link = project.console_url(settings.dataworks.console_url, run.id)
    now = datetime.now(timezone.utc)
    person = settings.person(run.creator) if settings is not None else None
    output = []
    for name, kind, rule, chosen in targets:
        context = MessageContext(run, chosen, project, rule.name, name, kind, link, now, person=person)
        label = f"{name} ({kind}, rule {rule.name})"
        names = [template or rule.template]
        if CHANNEL_TYPES[kind].living and wants_reply(chosen):  # and its thread reply
            names.append(reply_template(names[0], partial(renderer.exists, kind)))
        for index, chosen_template in enumerate(names):
            try:
                rendered = renderer.render(kind, chosen_template, context)
            except TemplateError as error:
                types = ", ".join(event.type for event in chosen)
                raise ConfigError([f"template: {error} (rendering {types})"]) from None
            output.append((f"{label}, thread reply" if index else label, rendered.text))
    return Preview(tuple(events), tuple(output))
