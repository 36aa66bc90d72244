"""Function Compute entry: the timer event and FC's context in, one tick, the summary out.

The timer trigger in s.yaml calls `handler(event, context)`. An instance keeps the built `App` (the
DataWorks client, the state store, the chat clients) between warm invocations and builds a new one
when the config path or the credentials change (STS credentials rotate). Importing this module loads
only what every tick needs: Jinja2 and httpx come in when there is something to render or send, the
Tablestore SDK when that backend is configured.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dwnotify import logs
from dwnotify.app import App, build_app
from dwnotify.config import CONFIG_ENV, load
from dwnotify.credentials import Credentials, credentials_from_context, credentials_from_env
from dwnotify.errors import ConfigError, NotifierError
from dwnotify.http_entry import answer_fc, fc_http_request
from dwnotify.scaling import shard_count
from dwnotify.settings import DataWorksSettings, ScaleSettings
from dwnotify.shards import MAX_SHARDS
from dwnotify.tick import TickSummary, summary_dict

if TYPE_CHECKING:
    from dwnotify.acting import Actor

log = logging.getLogger("dwnotify.handler")

PACKAGE_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = "notifier.yaml"
# Delivery stops taking new messages this long before FC's timeout; what is left waits for the next
# tick. A send that starts just before the deadline must still end before FC stops the instance:
# one chat post (delivery timeout, 10 s by default) plus one DataWorks request (10 s by default).
# `deadline_for` keeps at least half of a short timeout for work.
SAFETY_MARGIN_S = 20.0
_PAYLOAD_RULE = 'event.payload: must be a JSON object such as {"dry_run": true}'
_NO_FAN_OUT_TARGET = (
    "scale: the context names no account id, region or function to invoke; set scale.endpoint and "
    "scale.function"
)
_NO_CREDENTIALS = (
    "credentials: none found; give the function a role (FC passes its STS credentials) or set "
    "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET"
)


ACTIONS = ("tick", "track", "shard", "act")
_ACTION_RULE = (
    'event.action: must be "tick", "track" (with "project": <workspace id>, "id": "<run id>"), '
    '"shard" (with "index": <0 to of - 1>, "of": <shards>) or "act" (with "key": "<decision>", '
    "which the function sends itself after a Slack click)"
)


@dataclass(frozen=True)
class Options:
    """What one invocation asks for: a tick (the timer's, or `{"action": "tick"}`), or the tracking of
    one run (`{"action": "track", "project": 10000, "id": "<run id>"}`), and whether it is a dry run."""

    dry_run: bool = False
    action: str = "tick"
    project: int | None = None
    run_id: str | None = None
    shard: tuple[int, int] | None = None  # (index, of)
    key: str | None = None  # act: the decision a verified click claimed (`dwnotify.acting`)


class AppCache:
    """The one App an instance keeps between warm invocations, keyed by config path and credentials."""

    def __init__(self) -> None:
        self._key: tuple[str, str, str] | None = None
        self._app: App | None = None

    def get(self, path: Path, credentials: Credentials) -> App:
        """The App for this config and these credentials, built on first use or after a change."""
        token = credentials.security_token.reveal() if credentials.security_token else ""
        key = (str(path), credentials.access_key_id, token)
        if self._app is not None and self._key == key:
            return self._app
        if self._app is not None:
            log.info("credentials or config changed: rebuilding the clients")
            self.forget(self._app)
        app = build_app(load(path), credentials)  # secrets registered before anything can fail
        self._key, self._app = key, app
        return app

    def clear(self) -> None:
        """Close and drop the kept App, if any."""
        if self._app is not None:
            self.forget(self._app)

    def forget(self, app: App) -> None:
        """Close `app` and stop reusing it."""
        if self._app is app:
            self._key, self._app = None, None
        try:
            app.close()
        except (NotifierError, OSError) as error:
            log.warning("closing the old clients failed: %s", logs.mask(str(error)))


class ThreadApps(threading.local):
    """An AppCache per thread: invocations an instance runs at once (FC's instance concurrency, or
    shards on one host) never share a state store or its leases."""

    def __init__(self) -> None:
        self.cache = AppCache()

    def get(self, path: Path, credentials: Credentials) -> App:
        """See AppCache."""
        return self.cache.get(path, credentials)

    def clear(self) -> None:
        """See AppCache."""
        self.cache.clear()

    def forget(self, app: App) -> None:
        """See AppCache."""
        self.cache.forget(app)


apps = ThreadApps()


def handler(event: bytes | str | Mapping[str, Any] | None, context: Any) -> dict[str, Any]:  # noqa: PLR0911
    """Run one tick and return its summary (with FC's `request_id`), or the problems that stopped it.

    An HTTP-trigger event (`dwnotify.http_entry.fc_http_request`) is answered with the HTTP entry's
    `{statusCode, headers, body}` instead, building no clients.
    """
    started = time.time()
    request_id = str(getattr(context, "request_id", "") or "")
    _setup_logging(request_id)
    http_request = fc_http_request(event)  # the HTTP trigger's event: answered, no tick
    if http_request is not None:
        path = config_path(os.environ)
        return answer_fc(http_request, path, time.time(), lambda: _actor(path, context))
    try:
        options = parse_event(event)
        credentials = credentials_from_context(context) or credentials_from_env(os.environ)
        if credentials is None:
            raise ConfigError([_NO_CREDENTIALS])
        app = apps.get(config_path(os.environ), credentials)
    except ConfigError as error:
        return _config_error(error, request_id)
    except (NotifierError, OSError) as error:  # e.g. a state store that cannot be opened
        return _failure("building the clients", error, request_id)
    deadline = deadline_for(started, function_timeout(context))
    scale = app.notifier.settings.scale
    if scale is not None and options.action == "tick" and not options.dry_run:
        fanned = fan_out(scale, app.notifier.settings.dataworks, credentials, context, request_id)
        if fanned is not None:
            return fanned
    try:
        app.client.share_qps(options.shard[1] if options.shard else 1)  # the shards poll at once
        if options.action == "act" and options.key is not None:
            return _carry_out(app, options.key, request_id)
        summary = _work(app, options, deadline)
    except (NotifierError, OSError) as error:
        apps.forget(app)  # a broken store or client is rebuilt by the next invocation
        if options.shard is not None:  # raised, so that FC's async retry tries the shard again
            raise RuntimeError(
                f"shard {options.shard[0]} of {options.shard[1]}: {logs.mask(str(error))}"
            ) from None
        return _failure("tick", error, request_id)
    except Exception as error:  # a bug must still end in a result FC can log, not a raised traceback
        apps.forget(app)
        log.error("tick failed unexpectedly", exc_info=error)
        return _failure("tick", RuntimeError(f"unexpected {type(error).__name__}; see the log"), request_id)
    log.info("%s done: %s", options.action, summary.to_json())
    return {
        **summary_dict(summary),
        "action": options.action,
        "dry_run": options.dry_run,
        "request_id": request_id,
    }


def fan_out(
    scale: ScaleSettings,
    dataworks: DataWorksSettings,
    credentials: Credentials,
    context: Any,
    request_id: str,
) -> dict[str, Any] | None:
    """As the coordinator of `scale`: invoke one asynchronous shard per slice of the workspaces and
    return what was invoked, making no DataWorks call; None when one invocation is enough."""
    shards = shard_count(scale, len(dataworks.projects), dataworks.max_qps)
    if shards <= 1:
        return None
    from dwnotify.remote import RemoteError, invoke_async

    endpoint = scale.endpoint or internal_endpoint(context)
    function = scale.function or str(getattr(getattr(context, "function", None), "name", "") or "")
    if endpoint is None or not function:
        return _config_error(ConfigError([_NO_FAN_OUT_TARGET]), request_id)
    invoked, errors = [], []
    for index in range(shards):
        event = {"action": "shard", "index": index, "of": shards}
        try:
            invoked.append(invoke_async(endpoint, credentials, function, event).request_id)
        except (RemoteError, ValueError) as error:  # the next timer invokes every shard again
            errors.append(logs.mask(f"shard {index}: {error}"))
            log.error("fan-out: shard %d of %d not invoked: %s", index, shards, errors[-1])
    log.info("fan-out: %d of %d shards invoked", len(invoked), shards)
    return {
        "action": "fan-out",
        "shards": shards,
        "invoked": invoked,
        "errors": errors,
        "api_calls": 0,
        "request_id": request_id,
    }


def _work(app: App, options: Options, deadline: float | None) -> TickSummary:
    """The tick, shard or track the invocation asks for."""
    if options.action == "track" and options.project is not None and options.run_id is not None:
        return app.notifier.track(options.project, options.run_id, deadline=deadline)
    if options.shard is not None:
        return app.notifier.shard(*options.shard).tick(deadline=deadline, dry_run=options.dry_run)
    return app.notifier.run(deadline=deadline, dry_run=options.dry_run)


def _carry_out(app: App, key: str, request_id: str) -> dict[str, Any]:
    """The `act` invocation: carry out the decision a verified click claimed (`dwnotify.acting`)."""
    before = app.client.calls
    result = app.actor(defer=None).carry_out(key)
    return {
        "action": "act",
        "result": result,
        "api_calls": app.client.calls - before,
        "request_id": request_id,
    }


def _actor(path: Path, context: Any) -> Actor:
    """The actor of a verified click (only a verified request builds the clients): its deferred step
    is an async invocation of this function (`{"action": "act", "key": ...}`), so that Slack has its
    answer within 3 s whatever DataWorks takes; at once when no invocation target is known."""
    credentials = credentials_from_context(context) or credentials_from_env(os.environ)
    if credentials is None:
        raise ConfigError([_NO_CREDENTIALS])
    app = apps.get(path, credentials)
    scale = app.notifier.settings.scale
    endpoint = (scale.endpoint if scale else None) or internal_endpoint(context)
    function = (scale.function if scale else None) or str(
        getattr(getattr(context, "function", None), "name", "") or ""
    )
    if endpoint is None or not function:
        return app.actor(defer=None)

    def invoke(key: str) -> None:
        from dwnotify.remote import invoke_async

        invoke_async(endpoint, credentials, function, {"action": "act", "key": key})

    return app.actor(defer=invoke)


def internal_endpoint(context: Any) -> str | None:
    """The FC endpoint of the function's own account and region, on the internal network."""
    account, region = getattr(context, "account_id", None), getattr(context, "region", None)
    return f"https://{account}.{region}-internal.fc.aliyuncs.com" if account and region else None


def parse_event(event: bytes | str | Mapping[str, Any] | None) -> Options:
    """Options from the timer event (JSON bytes whose `payload` may hold a JSON object) or `s invoke -e`."""
    if isinstance(event, bytes | bytearray):
        event = event.decode("utf-8", errors="replace")
    if isinstance(event, str):
        try:
            event = json.loads(event) if event.strip() else None
        except ValueError:
            log.warning("event: not JSON, running a plain tick")
            event = None
    if not isinstance(event, Mapping):
        return Options()
    if "action" in event:
        return _action(event)
    options = {key: event[key] for key in ("dry_run",) if key in event}
    options.update(_payload_options(event.get("payload")))
    dry_run = options.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ConfigError(["event.payload.dry_run: must be true or false"])
    return Options(dry_run=dry_run)


def _action(event: Mapping[str, Any]) -> Options:
    """An invocation's explicit action (`dwnotify remote`, a CI job): every mistake by its key."""
    action = event.get("action")
    if action not in ACTIONS:
        raise ConfigError([f"{_ACTION_RULE} (not {json.dumps(action)})"])
    allowed = {"action", "dry_run"} | {
        "track": {"project", "id"},
        "shard": {"index", "of"},
        "act": {"key"},
    }.get(action, set())
    problems = [
        f"event.{key}: is not a key of the {action} action"
        for key in sorted(map(str, event))
        if key not in allowed
    ]
    dry_run = event.get("dry_run", False)
    if not isinstance(dry_run, bool):
        problems.append("event.dry_run: must be true or false")
    if action == "tick":
        if problems:
            raise ConfigError(problems)
        return Options(dry_run=dry_run)
    if action == "shard":
        return _shard(event, dry_run, problems)
    if action == "act":
        return _act(event, dry_run, problems)
    project, run_id = event.get("project"), event.get("id")
    if isinstance(project, str) and project.strip().isdigit():
        project = int(project)
    if isinstance(project, bool) or not isinstance(project, int) or project <= 0:
        problems.append("event.project: must be the run's workspace id, a positive whole number")
    if not isinstance(run_id, str) or not run_id.strip():
        problems.append("event.id: must be the run's id, a non-empty string")
    if dry_run:
        problems.append("event.dry_run: a track stores and announces; it has no dry run")
    if problems:
        raise ConfigError(problems)
    assert isinstance(project, int) and isinstance(run_id, str)
    return Options(action="track", project=project, run_id=run_id.strip())


def _payload_options(payload: object) -> dict[str, object]:
    if payload is None or (isinstance(payload, str) and not payload.strip()):
        return {}
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            raise ConfigError([f"{_PAYLOAD_RULE} (the timer trigger's payload in s.yaml)"]) from None
    if not isinstance(payload, Mapping):
        raise ConfigError([_PAYLOAD_RULE])
    unknown = sorted(str(key) for key in payload if key not in Options.__dataclass_fields__)
    if unknown:
        raise ConfigError(
            [f"event.payload.{key}: is not an option; the options are: dry_run" for key in unknown]
        )
    return dict(payload)


def _shard(event: Mapping[str, Any], dry_run: bool, problems: list[str]) -> Options:
    of, index = event.get("of"), event.get("index")
    whole = lambda value: isinstance(value, int) and not isinstance(value, bool)  # noqa: E731
    if not whole(of) or not 1 <= of <= MAX_SHARDS:
        problems.append(f"event.of: must be the number of shards, 1 to {MAX_SHARDS}")
    elif not whole(index) or not 0 <= index < of:
        problems.append(f"event.index: must be this shard's number, 0 to {of - 1}")
    if problems:
        raise ConfigError(problems)
    return Options(dry_run=dry_run, action="shard", shard=(index, of))


def _act(event: Mapping[str, Any], dry_run: bool, problems: list[str]) -> Options:
    key = event.get("key")
    if not isinstance(key, str) or not key.strip():
        problems.append("event.key: must be the decision's key, a non-empty string")
    if dry_run:
        problems.append("event.dry_run: an act calls DataWorks; it has no dry run")
    if problems:
        raise ConfigError(problems)
    assert isinstance(key, str)
    return Options(action="act", key=key.strip())


def config_path(environ: Mapping[str, str]) -> Path:
    """`$DWNOTIFY_CONFIG`, else notifier.yaml; a relative path is taken from the code package root."""
    path = Path(environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    return path if path.is_absolute() else PACKAGE_ROOT / path


def function_timeout(context: Any) -> float | None:
    """The function's timeout in seconds, from `context.function.timeout`."""
    timeout = getattr(getattr(context, "function", None), "timeout", None)
    try:
        return float(timeout) if timeout else None
    except (TypeError, ValueError):
        return None


def deadline_for(started: float, timeout_s: float | None) -> float | None:
    """When to stop taking new work: `SAFETY_MARGIN_S` before the timeout (at most half of it)."""
    if timeout_s is None or timeout_s <= 0:
        return None
    return started + max(timeout_s - SAFETY_MARGIN_S, timeout_s / 2)


def _failure(step: str, error: Exception, request_id: str) -> dict[str, Any]:
    """The result of a failed `step`, logged at ERROR without a traceback, secrets masked."""
    message = logs.mask(str(error))
    log.error("%s failed: %s", step, message)
    return {"error": "failure", "message": message, "request_id": request_id}


def _config_error(error: ConfigError, request_id: str) -> dict[str, Any]:
    problems = [logs.mask(problem) for problem in error.problems]
    for problem in problems:
        log.error("config error: %s", problem)
    return {"error": "config", "problems": problems, "request_id": request_id}


def _setup_logging(request_id: str) -> None:
    logs.setup(os.environ.get("DWNOTIFY_LOG_LEVEL", "INFO"), request_id=request_id or None)
    if os.environ.get("FC_FUNC_CODE_PATH"):
        # Inside FC the runtime's own root handler would print every record a second time as plain
        # text; the JSON line already carries the request id.
        root = logging.getLogger()
        for other in [h for h in root.handlers if not getattr(h, "_dwnotify", False)]:
            root.removeHandler(other)
