"""The command line: `dwnotify tick|check|demo|render|status` (also `python -m dwnotify`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from . import config, logs
from .errors import ConfigError, NotifierError, TemplateError
from .settings import CHANNEL_KEYS, Settings

if TYPE_CHECKING:
    from .dataworks import Credentials

log = logging.getLogger("dwnotify")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dwnotify", description=__doc__)
    parser.add_argument("--config", help="config file (default: $DWNOTIFY_CONFIG, then ./notifier.yaml)")
    parser.add_argument("--log-level", help="DEBUG, INFO (default; WARNING for demo), WARNING, ERROR")
    commands = parser.add_subparsers(dest="command", required=True)
    tick = commands.add_parser("tick", help="run one tick and print its summary as one JSON line")
    tick.add_argument("--dry-run", action="store_true", help="diff and render, but store and send nothing")
    commands.add_parser("check", help="validate the config and render a sample message per rule and channel")
    demo = commands.add_parser("demo", help="play a scripted morning of deployments on local emulators")
    demo.add_argument("--state", choices=("sqlite", "tablestore"), default="sqlite")
    demo.add_argument("--ticks", type=int, default=0, help="stop after this many ticks (0: the whole script)")
    render = commands.add_parser("render", help="render the messages for a run (a GetPipelineRun response)")
    render.add_argument("run", type=Path, help="JSON file: a GetPipelineRun response or its Pipeline object")
    render.add_argument(
        "--previous", type=Path, help="an earlier response for the same run (default: first sight)"
    )
    render.add_argument("--channel", help="a channel of the config (default: every channel a rule routes to)")
    render.add_argument("--type", choices=sorted(CHANNEL_KEYS), help="without a config: the channel type")
    render.add_argument("--template", default=None, help="template name (default: the rule's)")
    commands.add_parser("status", help="list tracked runs and pending or failed messages")
    return parser


def _config_errors(error: ConfigError, stream: TextIO) -> int:
    for problem in error.problems:
        print(f"config error: {problem}", file=stream)
    return EXIT_CONFIG


def load_settings(value: str | None) -> Settings:
    """The validated settings from `--config`, `$DWNOTIFY_CONFIG` or ./notifier.yaml."""
    return config.load(config.resolve_config_path(value, os.environ))


def check_templates(settings: Settings) -> list[str]:
    """Compile every template a rule needs and render one sample per rule and channel."""
    from .render import Renderer, builtin_templates_dir
    from .samples import sample_context

    renderer = Renderer(settings.templates, builtin_templates_dir())
    problems = []
    now = datetime.now(timezone.utc)
    for index, rule in enumerate(settings.rules):
        for name in rule.channels:
            channel = settings.channels[name]
            project_id = rule.projects[0] if rule.projects else settings.dataworks.projects[0].id
            project = settings.dataworks.project(project_id)
            try:
                renderer.compile(channel.type, rule.template)
                renderer.render(
                    channel.type, rule.template, sample_context(name, channel.type, rule.name, project, now)
                )
            except TemplateError as error:
                problems.append(f"rules[{index}].template: {error}")
    return problems


def _validated(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    problems = check_templates(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def cmd_check(args: argparse.Namespace) -> int:
    """`check`: exit 0 when the config and every template are valid."""
    settings = _validated(args)
    pairs = sum(len(rule.channels) for rule in settings.rules)
    print(
        f"config ok: {len(settings.dataworks.projects)} workspace(s), {len(settings.channels)} channel(s), "
        f"{len(settings.rules)} rule(s), {pairs} sample message(s) rendered"
    )
    return EXIT_OK


def _credentials() -> Credentials:
    from .dataworks import credentials_from_env

    credentials = credentials_from_env(os.environ)
    if credentials is None:
        raise ConfigError(
            ["environment: ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET must be set"]
        )
    return credentials


def cmd_tick(args: argparse.Namespace) -> int:
    """`tick`: validate, run one tick, print the summary line."""
    from .app import build_app

    settings = _validated(args)
    app = build_app(settings, _credentials())
    try:
        summary = app.notifier.tick(dry_run=args.dry_run)
    finally:
        app.close()
    print(summary.to_json(), flush=True)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """`status`: tracked runs still moving, then pending and failed messages."""
    from .dataworks import credentials_from_env
    from .state import open_store

    settings = load_settings(args.config)
    store = open_store(settings.state, credentials_from_env(os.environ))
    try:
        report = store.report()
    finally:
        store.close()
    print(f"runs still moving: {len(report.runs)}")
    for state in report.runs:
        stages = ", ".join(f"{key}={status}" for key, status in state.stage_statuses.items())
        print(f"  {state.project_id}/{state.run_id}  {state.status}  [{stages}]")
    pending = [m for m in report.messages if m.status == "pending"]
    failed = [m for m in report.messages if m.status == "failed"]
    print(f"messages pending: {len(pending)}")
    for message in pending:
        when = datetime.fromtimestamp(message.next_attempt_at, tz=timezone.utc).strftime("%H:%M:%S")
        detail = f"attempts {message.attempts}, next {when}" + (
            f", {message.last_error}" if message.last_error else ""
        )
        print(f"  {message.channel}  {message.run_key}  {message.title}  ({detail})")
    print(f"messages failed: {len(failed)}")
    for message in failed:
        print(f"  {message.channel}  {message.run_key}  {message.title}  ({message.last_error})")
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    """`render`: print the messages a run would produce, sending nothing."""
    from .preview import render_preview

    settings = None
    if args.type is None or args.channel is not None:
        settings = _validated(args)
    for channel, text in render_preview(
        args.run, args.previous, settings, args.channel, args.type, args.template
    ):
        print(f"--- {channel} ---")
        print(text)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """`demo`: the product end to end on local emulators."""
    repo_root = Path(__file__).resolve().parents[2]
    if str(repo_root) not in sys.path:
        sys.path.insert(0, str(repo_root))
    from .demo import run_demo

    return run_demo(state_backend=args.state, max_ticks=args.ticks)


COMMANDS = {
    "tick": cmd_tick,
    "check": cmd_check,
    "demo": cmd_demo,
    "render": cmd_render,
    "status": cmd_status,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    quiet_default = "WARNING" if args.command == "demo" else "INFO"  # the demo's output is the chat
    logs.setup(args.log_level or os.environ.get("DWNOTIFY_LOG_LEVEL") or quiet_default)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as error:
        return _config_errors(error, sys.stderr)
    except (NotifierError, OSError) as error:
        log.error("%s failed: %s", args.command, error)
        print(f"error: {logs.mask(str(error))}", file=sys.stderr)
        return EXIT_FAILURE


def run() -> None:
    """Console-script entry."""
    sys.exit(main())


if __name__ == "__main__":
    run()
