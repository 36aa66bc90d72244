"""The command line: `dwnotify tick|check|demo|render|status|remote|serve` (also `python -m dwnotify`).

`remote tick|track` invokes the deployed function (see `remote`); it needs no config file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO
from urllib.parse import urlsplit

from . import __version__, config, logs
from .channels import CHANNEL_TYPES
from .errors import ConfigError, NotifierError, TemplateError
from .living import reply_template
from .settings import ProjectSettings, RuleSettings, Settings

if TYPE_CHECKING:
    from .credentials import Credentials
    from .render import MessageContext, Renderer

log = logging.getLogger("dwnotify")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


class _Parser(argparse.ArgumentParser):
    """argparse, except that a parser marked `one_line` reports a mistake in one line, without usage."""

    one_line = False

    def error(self, message: str) -> NoReturn:
        if not self.one_line:
            super().error(message)
        self.exit(EXIT_CONFIG, _argument_error(self.prog, message))


def _argument_error(prog: str, message: str) -> str:
    return f"{prog}: error: {message}\n"


def _global_options(*, top_level: bool) -> _Parser:
    """`--config` and `--log-level`, accepted before the command and after it (as git and kubectl do).

    After the command they default to SUPPRESS, so an option given before it is not reset to None.
    """
    options = _Parser(add_help=False)
    default = None if top_level else argparse.SUPPRESS
    options.add_argument(
        "--config", default=default, help="config file (default: $DWNOTIFY_CONFIG, then ./notifier.yaml)"
    )
    options.add_argument(
        "--log-level", default=default, help="DEBUG, INFO (default; WARNING for demo), WARNING, ERROR"
    )
    return options


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dwnotify", description=__doc__, parents=[_global_options(top_level=True)])
    parser.add_argument("--version", action="version", version=f"dwnotify {__version__}")
    after = _global_options(top_level=False)
    commands = parser.add_subparsers(dest="command", required=True)
    tick = commands.add_parser(
        "tick", parents=[after], help="run one tick and print its summary as one JSON line"
    )
    tick.add_argument("--dry-run", action="store_true", help="diff and render, but store and send nothing")
    check = commands.add_parser(
        "check", parents=[after], help="validate the config and render a sample message per rule and channel"
    )
    check.add_argument(
        "--online", action="store_true", help="also ask each Slack app channel's API whether its token works"
    )
    demo = commands.add_parser(
        "demo", parents=[after], help="play a scripted morning of deployments on local emulators"
    )
    demo.add_argument("--state", choices=("sqlite", "tablestore"), default="sqlite")
    demo.add_argument("--ticks", type=int, default=0, help="stop after this many ticks (0: the whole script)")
    render = commands.add_parser(
        "render", parents=[after], help="render the messages for a run (a GetPipelineRun response)"
    )
    render.add_argument("run", type=Path, help="JSON file: a GetPipelineRun response or its Pipeline object")
    render.add_argument(
        "--previous", type=Path, help="an earlier response for the same run (default: first sight)"
    )
    target = render.add_mutually_exclusive_group()
    target.add_argument("--channel", help="a channel of the config (default: every channel a rule routes to)")
    target.add_argument(
        "--type",
        choices=sorted(CHANNEL_TYPES),
        help="a channel type, every event in one message (the config's templates and names if one is found)",
    )
    render.add_argument("--template", default=None, help="template name (default: the rule's)")
    commands.add_parser("status", parents=[after], help="list tracked runs and pending or failed messages")
    _remote_parser(commands, after)
    serve = commands.add_parser(
        "serve", parents=[after], help="serve the HTTP entry (Slack actions) locally; with --every, also tick"
    )
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free port)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this host only)"
    )
    serve.add_argument("--every", default=None, help="also run a tick this often, e.g. 1m (at least 10s)")
    return parser


def _remote_parser(commands: argparse._SubParsersAction[_Parser], after: _Parser) -> None:
    """`remote tick|track`, its options accepted before the subcommand and after it."""
    from .remote import FUNCTION_NAME, QUALIFIER

    def matching(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
        def check(value: str) -> str:
            if not pattern.fullmatch(value):
                raise argparse.ArgumentTypeError(f"not {what}: {value!r}")
            return value

        return check

    def options(*, top_level: bool) -> _Parser:
        parser = _Parser(add_help=False)
        default = None if top_level else argparse.SUPPRESS
        parser.add_argument("--endpoint", type=_endpoint, default=default, help="FC endpoint URL")
        parser.add_argument(
            "--account-id",
            type=matching(re.compile(r"[0-9]+"), "an account ID (digits)"),
            default=default,
            help="with --region: https://<account-id>.<region>.fc.aliyuncs.com",
        )
        parser.add_argument(
            "--region", type=matching(re.compile(r"[a-z0-9-]+"), "a region ID"), default=default
        )
        parser.add_argument(
            "--function",
            type=matching(FUNCTION_NAME, "an FC function name"),
            default=default,
            help="function name (default: dwnotify)",
        )
        parser.add_argument(
            "--qualifier",
            type=matching(QUALIFIER, "a version or alias"),
            default=default,
            help="version or alias (default: none sent)",
        )
        parser.add_argument(
            "--async",
            dest="asynchronous",
            action="store_true",
            default=False if top_level else argparse.SUPPRESS,
            help="queue the invocation and return at once",
        )
        return parser

    remote = commands.add_parser(
        "remote", parents=[after, options(top_level=True)], help="invoke the deployed function"
    )
    remote.one_line = True
    actions = remote.add_subparsers(dest="remote_command", metavar="{tick,track}", required=True)
    after_remote = [after, options(top_level=False)]
    actions.add_parser("tick", parents=after_remote, help="run one tick there").one_line = True
    track = actions.add_parser("track", parents=after_remote, help="track a run there from now on")
    track.one_line = True
    track.add_argument("--project", type=_workspace_id, required=True, help="DataWorks workspace ID")
    track.add_argument("--id", dest="run_id", type=_run_id, required=True, help="pipeline run ID")


def _endpoint(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise argparse.ArgumentTypeError(f"not an endpoint URL (http[s]://host[:port]): {value!r}")
    return value.rstrip("/")


def _workspace_id(value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise argparse.ArgumentTypeError(f"not a workspace ID: {value!r}")
    return int(value)


def _run_id(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("empty")
    return value.strip()


def _config_errors(error: ConfigError, stream: TextIO) -> int:
    for problem in error.problems:
        print(f"config error: {problem}", file=stream)
    return EXIT_CONFIG


def load_settings(value: str | None) -> Settings:
    """The validated settings from `--config`, `$DWNOTIFY_CONFIG` or ./notifier.yaml."""
    return config.load(config.resolve_config_path(value, os.environ))


def check_templates(settings: Settings) -> list[str]:
    """Compile every template a rule needs and render its samples per rule and channel.

    The samples (see `samples.rule_samples`) are the event types the rule's patterns match, together
    and each alone, so a template that breaks on one of the rule's real events fails here.
    """
    from .model import EVENT_TYPES
    from .render import Renderer, builtin_templates_dir
    from .rules import matches
    from .samples import rule_samples

    renderer = Renderer(settings.templates, builtin_templates_dir())
    problems: dict[str, None] = {}  # ordered and without repeats: two channels of one type fail alike
    now = datetime.now(timezone.utc)
    for index, rule in enumerate(settings.rules):
        event_types = [kind for kind in EVENT_TYPES if any(matches(p, kind) for p in rule.events)]
        project_id = rule.projects[0] if rule.projects else settings.dataworks.projects[0].id
        project = settings.dataworks.project(project_id)
        if rule.digest is not None:  # its one message a day, not per-run messages
            for name in rule.channels:
                channel_type = settings.channels[name].type
                for problem in _digest_problems(renderer, rule, project, name, channel_type, now):
                    problems.setdefault(f"rules[{index}].digest: {problem}")
            continue
        for name in rule.channels:
            channel = settings.channels[name]
            templates = [rule.template]
            if CHANNEL_TYPES[channel.type].living:  # its thread replies have templates of their own
                templates.append(reply_template(rule.template, partial(renderer.exists, channel.type)))
            contexts = rule_samples(
                event_types,
                name,
                channel.type,
                rule.name,
                project,
                now,
                console_url=settings.dataworks.console_url,
            )
            for template in templates:
                for problem in _sample_problems(renderer, channel.type, template, contexts):
                    problems.setdefault(f"rules[{index}].template: {problem}")
    return list(problems)


def _digest_problems(
    renderer: Renderer,
    rule: RuleSettings,
    project: ProjectSettings,
    channel_name: str,
    channel_type: str,
    now: datetime,
) -> list[str]:
    """What goes wrong rendering the rule's `digest` template for a day with the sample run, and for
    a day without runs."""
    from dataclasses import replace

    from .diff import diff
    from .digest import DigestDue, render_digest, summarize
    from .samples import sample_run

    at = now.timestamp()
    _, state = diff(None, sample_run(project.id, now), at - 3600)
    window = DigestDue(now.date().isoformat(), at, at - 86400)
    every_run = replace(rule, events=("*",), projects=None)
    problems = []
    for chosen, states in ((every_run, [(state, at - 60)]), (rule, [])):
        view = summarize(chosen, states, window, [], {project.id: project.label})
        _, failures = render_digest(
            renderer, view, rule_name=rule.name, channel_name=channel_name, channel_type=channel_type, now=now
        )
        problems += [str(error) for _, error in failures]
    return problems


def _sample_problems(
    renderer: Renderer, channel_type: str, template: str, contexts: Sequence[MessageContext]
) -> list[str]:
    """`<template>: <what failed> (rendering <event types>)`, one line per distinct failure.

    A failure is a render error, or a limit of the chat service that the output breaks (Slack Block
    Kit's, for a `.blocks.json.j2`: the message would be cut to fit, or sent in another layout).
    """
    kind = CHANNEL_TYPES[channel_type]
    try:
        renderer.compile(channel_type, template)
    except TemplateError as error:
        return [str(error)]
    alone: dict[str, list[str]] = {}
    together: dict[str, str] = {}
    for ctx in contexts:
        try:
            message = renderer.render(channel_type, template, ctx)
            failures = []
            if kind.layout_problems is not None and message.blocks is not None:
                ext = next(fmt.ext for fmt in kind.formats if fmt.is_json)  # only that kind renders blocks
                path = f"{channel_type}/{template}.{ext}.j2"
                failures = [f"{path}: {problem}" for problem in kind.layout_problems(message.blocks)]
        except TemplateError as error:
            failures = [str(error)]
        types = [event.type for event in ctx.events]
        for failure in failures:
            if len(types) == 1:
                alone.setdefault(failure, []).append(types[0])
            else:
                together.setdefault(failure, ", ".join(types))
    lines = [
        f"{message} (rendering {types[0] if len(types) == 1 else 'each of ' + ', '.join(types)})"
        for message, types in alone.items()
    ]
    lines.extend(
        f"{message} (rendering {types} in one message)"
        for message, types in together.items()
        if message not in alone
    )
    return lines


def _validated(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    problems = check_templates(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def cmd_check(args: argparse.Namespace) -> int:
    """`check`: exit 0 when the config and every template are valid (and, `--online`, every token)."""
    settings = _validated(args)
    pairs = sum(len(rule.channels) for rule in settings.rules)
    if args.online:
        from .app import register_secrets_of

        register_secrets_of(settings, None)  # an answer or an error must not show a token
        problems = online_problems(settings, sys.stdout)
        if problems:
            raise ConfigError(problems)
    print(
        f"config ok: {len(settings.dataworks.projects)} workspace(s), {len(settings.channels)} channel(s), "
        f"{len(settings.rules)} rule(s), {pairs} sample message(s) rendered"
    )
    return EXIT_OK


def online_problems(settings: Settings, stream: TextIO) -> list[str]:
    """Ask each Slack app channel's Web API who its token is (`auth.test`); the refusals, by dotted path.

    What each accepted token is (team and bot user) is printed to `stream`.
    """
    from .app import ChannelFactory
    from .channels.slack_app import SlackAppChannel
    from .errors import DeliveryError

    factory = ChannelFactory(settings.delivery.timeout.total_seconds(), time.time)
    problems: list[str] = []
    try:
        for name, channel in settings.channels.items():
            sender = factory(channel)
            if not isinstance(sender, SlackAppChannel):
                continue
            try:
                who = sender.auth_test()
            except DeliveryError as error:
                problems.append(f"channels.{name}.token: Slack refused it: {logs.mask(str(error))}")
                continue
            team, user = who.get("team") or who.get("team_id"), who.get("user") or who.get("user_id")
            print(f"channels.{name}: auth.test ok (team {team}, bot user {user})", file=stream)
    finally:
        factory.close()
    return problems


def _credentials() -> Credentials:
    from .credentials import credentials_from_env

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
        summary = app.notifier.run(dry_run=args.dry_run)
    finally:
        app.close()
    print(summary.to_json(), flush=True)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """`status`: tracked runs still moving, then pending and failed messages."""
    from .app import open_state
    from .credentials import credentials_from_env

    settings = load_settings(args.config)
    # A stored delivery error may quote what a service echoed back: its secrets are masked.
    store = open_state(settings, credentials_from_env(os.environ))
    try:
        report = store.report()
    finally:
        store.close()
    lines = [f"runs still moving: {len(report.runs)}"]
    for state in report.runs:
        stages = ", ".join(f"{key}={status}" for key, status in state.stage_statuses.items())
        lines.append(f"  {state.project_id}/{state.run_id}  {state.status}  [{stages}]")
    pending = [m for m in report.messages if m.status == "pending"]
    failed = [m for m in report.messages if m.status == "failed"]
    lines.append(f"messages pending: {len(pending)}")
    for message in pending:
        when = datetime.fromtimestamp(message.next_attempt_at, tz=timezone.utc).strftime("%H:%M:%S")
        detail = f"attempts {message.attempts}, next {when}" + (
            f", {message.last_error}" if message.last_error else ""
        )
        lines.append(f"  {message.channel}  {message.run_key}  {message.title}  ({detail})")
    lines.append(f"messages failed: {len(failed)}")
    for message in failed:
        lines.append(f"  {message.channel}  {message.run_key}  {message.title}  ({message.last_error})")
    for line in lines:
        print(logs.mask(line))
    return EXIT_OK


def _render_settings(args: argparse.Namespace) -> Settings | None:
    """The validated config for `render`; None with `--type` when no config is given or found."""
    path = config.resolve_config_path(args.config, os.environ)
    given = args.config is not None or bool(os.environ.get(config.CONFIG_ENV))
    if args.type is not None and not given and not path.exists():
        return None
    return _validated(args)


def cmd_render(args: argparse.Namespace) -> int:
    """`render`: print the messages a run would produce, sending nothing."""
    from .preview import render_preview

    settings = _render_settings(args)
    if settings is not None and args.channel is not None and args.channel not in settings.channels:
        raise ConfigError([f"--channel: no channel {args.channel!r} in the config"])
    preview = render_preview(args.run, args.previous, settings, args.channel, args.type, args.template)
    if not preview.events:
        if args.previous:
            print("no events: the run has not changed since the --previous response; nothing to send")
        else:
            print("no events: the run and its stages have not started (first sight); nothing to send")
        return EXIT_OK
    if not preview.messages:
        types = ", ".join(event.type for event in preview.events)
        where = f"channel {args.channel!r}" if args.channel else "any channel"
        print(f"no messages: no rule sends this run's events ({types}) to {where}")
    for label, text in preview.messages:
        print(f"--- {label} ---")
        print(text)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """`demo`: the product end to end on local emulators."""
    repo_root = Path(__file__).resolve().parents[2]
    if str(repo_root) not in sys.path:
        sys.path.insert(0, str(repo_root))
    from .demo import run_demo

    return run_demo(state_backend=args.state, max_ticks=args.ticks)


def remote_endpoint(args: argparse.Namespace) -> str:
    """The endpoint `remote` invokes: `--endpoint`, or the one `--account-id` and `--region` name."""
    from .remote import endpoint_for

    by_account = args.account_id is not None or args.region is not None
    if args.endpoint is not None and by_account:
        raise ValueError("give --endpoint or --account-id and --region, not both")
    if args.endpoint is not None:
        return str(args.endpoint)
    if args.account_id is None or args.region is None:
        raise ValueError("give --endpoint, or --account-id and --region")
    return endpoint_for(args.account_id, args.region)


def cmd_remote(args: argparse.Namespace) -> int:
    """`remote tick|track`: invoke the deployed function, print its result as returned."""
    from .remote import RemoteError, invoke

    try:
        endpoint = remote_endpoint(args)
    except ValueError as error:
        print(_argument_error(f"dwnotify remote {args.remote_command}", str(error)), end="", file=sys.stderr)
        return EXIT_CONFIG
    # urllib3 warns on each retried connection; the one error line at the end says what failed.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    event: dict[str, object] = {"action": args.remote_command}
    if args.remote_command == "track":
        event.update(project=args.project, id=args.run_id)
    try:
        answer = invoke(
            endpoint,
            _credentials(),
            args.function or "dwnotify",
            event,
            asynchronous=args.asynchronous,
            qualifier=args.qualifier,
        )
    except RemoteError as error:
        print(f"error: {logs.mask(str(error))}", file=sys.stderr)
        return EXIT_FAILURE
    if args.asynchronous:  # FC answers 202 with no body: what it queued is the request id
        print(json.dumps({"accepted": True, "request_id": answer.request_id}), flush=True)
    else:
        text = answer.body.decode("utf-8", errors="replace")
        print(text, end="" if text.endswith("\n") else "\n", flush=True)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """`serve`: the HTTP entry on `--host`:`--port` and, with `--every`, a tick on that schedule."""
    from . import serve
    from .app import App, build_app, register_secrets_of

    try:
        every = serve.parse_every(args.every) if args.every is not None else None
    except ValueError as error:
        print(_argument_error("dwnotify serve", f"--every: {error}"), end="", file=sys.stderr)
        return EXIT_CONFIG
    settings = load_settings(args.config)
    problems = check_templates(settings) if every is not None or settings.actions.enabled else []
    if problems:  # what ticks, or edits messages, renders them
        raise ConfigError(problems)
    apps: list[App] = []  # closed at the end: the tick's, and the one that takes clicks

    def app() -> App:
        apps.append(build_app(settings, _credentials()))
        return apps[-1]

    actor = (lambda defer: app().actor(defer)) if settings.actions.enabled else None
    tick = None
    if every is not None:
        ticking = app()

        def tick(slot_end: float) -> None:
            # A send starts only if it can end before the deadline: a slot as short as --every 10s
            # would never send. The tick may run one send past its slot (the next slot waits for it).
            summary = ticking.notifier.tick(deadline=slot_end + settings.delivery.timeout.total_seconds())
            print(summary.to_json(), flush=True)

    register_secrets_of(settings, None)
    try:
        return serve.run(
            settings, args.host, args.port, every=every, tick=tick, stream=sys.stdout, actor=actor
        )
    finally:
        for each in apps:
            each.close()


COMMANDS = {
    "tick": cmd_tick,
    "check": cmd_check,
    "demo": cmd_demo,
    "render": cmd_render,
    "status": cmd_status,
    "remote": cmd_remote,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = _parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        message = f"unrecognized arguments: {' '.join(extras)}"
        if args.command != "remote":
            parser.error(message)
        print(_argument_error(f"dwnotify remote {args.remote_command}", message), end="", file=sys.stderr)
        return EXIT_CONFIG
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
