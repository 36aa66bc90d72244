"""Function Compute 3.0 API stand-in: fc2-signed requests, the 2023-03-30 invoke path, handlers in-process.

What `dwnotify remote` and its fan-out talk to, judged by the real `fc2` client (PyPI `aliyun-fc2`)
in `tests/test_emulator_fc.py`. Functions are Python callables `handler(event, context)`, registered
by name; each invocation runs one, with a context shaped like FC's Python runtime.

Facts, with sources (issue 14; `../../shared/spec/platform-facts.md`, "Function Compute"):

- Path (FC 3.0 API reference, InvokeFunction 2023-03-30): `POST /2023-03-30/functions/{name}/invocations`,
  query `qualifier` (version or alias, e.g. `LATEST`), headers `x-fc-invocation-type: Sync|Async`,
  `x-fc-log-type: None|Tail`, `x-fc-async-task-id`; the body is the event. fc2 2.5.2's own
  `invoke_function` builds `/2016-08-15/services/{svc}/functions/{fn}/invocations`, which an FC 3.0
  function (no service) lacks: here that path is `PathNotSupported`.
- Signature (FC "Signature authentication", help doc 53252; fc2 2.5.2 `fc2/auth.py` `Auth.sign_request`,
  read for this module): `Authorization: FC <ak>:<base64(HMAC-SHA256(secret, string-to-sign))>`, the
  string being `METHOD\\nContent-MD5\\nContent-Type\\nDate\\n` + every `x-fc-*` header as
  `name:value\\n` (names lower-cased, sorted) + the path, with the query, when there is one, as
  `\\n` + the sorted `k=v` lines (unescaped). Nothing in it depends on the API version, so fc2's
  signer signs a 2023-03-30 path as well as a 2016-08-15 one. A missing or wrong signature is HTTP
  403 (same doc); the code is `SignatureNotMatch` with the message of FC's error-code table (help
  doc 52736). fc2 sends `x-fc-security-token` (it is one of the signed `x-fc-*` headers) when built
  with `securityToken`.
- Date: FC refuses a request whose `Date` is 15 minutes or more off its clock (help doc 53252, the
  Japanese edition: "15 分未満でなければなりません ... FC はリクエストを拒否します"). Checked against this
  emulator's clock. UNCONFIRMED: the code and status of that refusal (here 403 `RequestTimeTooSkewed`,
  as OSS answers), and whether FC reads `x-fc-date` (here: when sent, it is the request time; else `Date`).
- Error bodies: FC 2.0's table documents `{"errorCode", "errorMessage"}`, while fc2 reads `ErrorCode`
  (its `__gen_request_err`) and FC 2.0 answers that way; the 2023-03-30 reference's `Error` struct is
  `{"Code", "Message", "RequestId"}` (example `FunctionNotFound` / "function not found").
  `error_shape="fc3"` (default) answers the latter, `"fc2"` the former; both carry `x-fc-request-id`.
  fc2 raises `FcError` for any status >= 400, with `err_code` '' for an fc3-shaped body.
  Codes from the table: 403 `InvalidAccessKeyID`, 400 `MissingRequiredHeader`, 400
  `PathNotSupported` (`'%s' against '%s' is not supported`), 400 `InvalidArgument`, 404
  `FunctionNotFound`. UNCONFIRMED choices: 403 `AccessDenied` without an `Authorization` header, 403
  `InvalidSecurityToken` for a missing, unknown or unexpected STS token, 404 `AliasNotFound` for an
  unknown qualifier.
- Sync result (FC "Error handling", Python runtime, help doc 422185): a raised exception answers HTTP 200
  with `X-Fc-Error-Type: UnhandledInvocationError` and `{"errorMessage", "errorType", "stackTrace"}`
  (the retry-policy page lists those errors under status 200). A returned value is the body: bytes as
  they are, str as UTF-8, anything else as JSON (UNCONFIRMED for non-string values).
- Async (FC "Configure a retry mechanism"; `maxAsyncRetryAttempts` in the 2023-03-30
  `PutAsyncInvokeConfigInput`: "The maximum number of retries if an asynchronous invocation fails ...
  default 3"): answered 202 at once (fc2's README; UNCONFIRMED for 2023-03-30), then run in the
  background; a HandledInvocationError or UnhandledInvocationError is retried up to 3 times, i.e. up
  to 4 attempts in all by the documented wording (`async_retries=3`; the issue's "3 attempts in all" is
  `async_retries=2`). A Python handler only makes an UnhandledInvocationError by raising: a returned
  value, even `{"error": ...}`, is a success to FC (HandledInvocationError is Node.js's `callback(err)`),
  so results are not retried unless `retry_result(result)` says so. Sync calls are never retried.
- Context (Python 3.10 runtime): `request_id`, `credentials.access_key_id/access_key_secret/
  security_token`, `function.name/handler/memory/timeout`, `service.name/qualifier/...`, `region`,
  `account_id`. `function.memory_size` is an alias here. Request ids look like the reference's example
  (`1-64e70cf1-5cbef92ea8fc8c42899cf5d1`).

Left out: function timeouts and memory limits, payload size limits, the other FC 3.0 APIs, async task
ids, and the isolation of instances (every invocation runs in this process, sharing module state).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import logging
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from emulators._base import Emulator, Request, Response, cli_parser, serve

API_VERSION = "2023-03-30"
DATE_TOLERANCE_S = 15 * 60
LOG_TAIL_BYTES = 4096
ERROR_SHAPES = {"fc3": ("Code", "Message"), "fc2": ("ErrorCode", "ErrorMessage")}
SIGNATURE_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your access key and signing method"
)
_INVOKE = re.compile(rf"^/{API_VERSION}/functions/(?P<name>[^/]+)/invocations$")

Handler = Callable[[bytes, Any], Any]


@dataclass(frozen=True)
class FcCredentials:
    """`context.credentials`: the function role's STS credentials."""

    access_key_id: str = "test-ak"
    access_key_secret: str = "test-secret"  # noqa: S105 - the contract's test credential
    security_token: str = ""


@dataclass(frozen=True)
class FcFunctionMeta:
    """`context.function`."""

    name: str
    handler: str = "index.handler"
    memory: int = 512
    timeout: int = 60
    initializer: str | None = None
    initialization_timeout: int | None = None

    @property
    def memory_size(self) -> int:
        """The function's memory in MB (FC's configuration name for `memory`)."""
        return self.memory


@dataclass(frozen=True)
class FcServiceMeta:
    """`context.service` (FC 3.0 has no services; the runtime still fills qualifier and version)."""

    name: str = ""
    log_project: str = ""
    log_store: str = ""
    qualifier: str = "LATEST"
    version_id: str = ""


@dataclass(frozen=True)
class FcContext:
    """The context object a handler gets, shaped like FC's Python runtime's."""

    request_id: str
    credentials: FcCredentials
    function: FcFunctionMeta
    service: FcServiceMeta
    region: str
    account_id: str


@dataclass(frozen=True)
class FcFunction:
    """A registered function: the callable and the configuration its context reports."""

    handler: Handler
    timeout: int = 60
    memory: int = 512
    handler_name: str = "index.handler"
    qualifiers: frozenset[str] = frozenset({"LATEST"})


@dataclass(frozen=True)
class Invocation:
    """One handler run (each async attempt is one), as the emulator saw it.

    `error_type` is `UnhandledInvocationError` (the handler raised; `error` holds FC's error body),
    `HandledInvocationError` (`retry_result` judged the returned `result` an error), or None.
    """

    function: str
    qualifier: str
    type: str  # Sync | Async
    event: bytes
    request_id: str
    attempt: int
    result: Any = None
    error: dict[str, Any] | None = None
    error_type: str | None = None
    at: float = 0.0

    @property
    def failed(self) -> bool:
        """True when FC would count this run as an error (and retry it, if async)."""
        return self.error_type is not None


@dataclass(frozen=True)
class Refusal:
    """A request answered with an FC error instead of a run (`string_to_sign` for signature errors)."""

    method: str
    path: str
    status: int
    code: str
    message: str
    string_to_sign: str | None = None


class _FcError(Exception):
    def __init__(self, status: int, code: str, message: str, string_to_sign: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.string_to_sign = status, code, message, string_to_sign


def string_to_sign(request: Request) -> str:
    """FC's string to sign for `request`, from what arrived (method, headers, path, query)."""
    headers = request.headers
    fc_headers = sorted(
        (name.lower(), value) for name, value in headers.items() if name.lower().startswith("x-fc-")
    )
    canonical_headers = "".join(f"{name}:{value}\n" for name, value in fc_headers)
    resource = request.path
    if request.query:
        resource += "\n" + "\n".join(sorted(f"{key}={value}" for key, value in request.query))
    parts = [request.method.upper(), headers.get("Content-MD5", ""), headers.get("Content-Type", "")]
    return "\n".join([*parts, headers.get("Date", ""), canonical_headers + resource])


def fc_signature(secret: str, text: str) -> str:
    """base64(HMAC-SHA256(secret, text))."""
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()).decode()


def new_request_id(now: float) -> str:
    """A request id in FC 3.0's shape: `1-<8 hex of the time>-<24 hex>`."""
    return f"1-{int(now):08x}-{uuid.uuid4().hex[:24]}"


def error_answer(exc: BaseException) -> dict[str, Any]:
    """FC's body for an unhandled exception: errorMessage, errorType, stackTrace (frames as lists)."""
    frames = traceback.extract_tb(exc.__traceback__)
    stack = [[f'File "{f.filename}"', f"line {f.lineno}", f"in {f.name}", f.line or ""] for f in frames]
    return {"errorMessage": str(exc), "errorType": type(exc).__name__, "stackTrace": stack}


def result_body(result: Any) -> tuple[bytes, str]:
    """What FC answers for a returned value, and its content type."""
    if isinstance(result, bytes | bytearray):
        return bytes(result), "application/octet-stream"
    if isinstance(result, str):
        return result.encode(), "text/plain; charset=utf-8"
    return json.dumps(result, ensure_ascii=False).encode(), "application/json"


class _ThreadLog(logging.Handler):
    """Collects the log lines one thread emits (`x-fc-log-type: Tail`)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.thread = threading.get_ident()
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(self.format(record))

    def tail(self) -> str:
        data = "".join(line + "\n" for line in self.lines).encode()[-LOG_TAIL_BYTES:]
        return base64.b64encode(data).decode()


class FcEmulator(Emulator):
    """FC 3.0 endpoint: fc2 signatures, dates and STS tokens checked; registered handlers invoked.

    `functions` maps a name to a handler or an `FcFunction`. `access_keys` maps access key ids to
    secrets; `security_tokens` (None: none expected) are the STS tokens accepted with them.
    """

    service = "fc"

    def __init__(
        self,
        functions: Mapping[str, Handler | FcFunction] | None = None,
        *,
        access_keys: Mapping[str, str] | None = None,
        security_tokens: Sequence[str] | None = None,
        clock: Callable[[], float] | None = None,
        error_shape: str = "fc3",
        async_retries: int = 3,
        async_retry_delay_s: float = 0.0,
        retry_result: Callable[[Any], bool] | None = None,
        credentials: FcCredentials | None = None,
        region: str = "cn-shanghai",
        account_id: str = "1234567890123456",
        verbose: bool = False,
    ) -> None:
        super().__init__(clock, verbose=verbose)
        if error_shape not in ERROR_SHAPES:
            raise ValueError(f"error_shape: expected one of {sorted(ERROR_SHAPES)}, got {error_shape!r}")
        self.functions: dict[str, FcFunction] = {}
        for name, target in (functions or {}).items():
            self.register(name, target)
        self.access_keys = dict(access_keys) if access_keys is not None else {"test-ak": "test-secret"}
        self.security_tokens = None if security_tokens is None else frozenset(security_tokens)
        self.error_shape = error_shape
        self.async_retries = async_retries
        self.async_retry_delay_s = async_retry_delay_s
        self.retry_result = retry_result
        self.credentials = credentials or FcCredentials()
        self.region = region
        self.account_id = account_id
        self._invocations: list[Invocation] = []
        self._refused: list[Refusal] = []
        self._failures: dict[str, int] = {}
        self._pending = 0
        self._idle = threading.Condition(self._lock)

    # -- registration and test accessors ---------------------------------------------------------
    def register(self, name: str, target: Handler | FcFunction) -> None:
        """Add or replace function `name` (a handler callable or an `FcFunction`)."""
        function = target if isinstance(target, FcFunction) else FcFunction(target)
        with self._lock:
            self.functions[name] = function

    @property
    def invocations(self) -> list[Invocation]:
        """Every handler run so far, in the order they ended."""
        with self._lock:
            return list(self._invocations)

    @property
    def refused(self) -> list[Refusal]:
        """Every request answered with an FC error."""
        with self._lock:
            return list(self._refused)

    def fail_next(self, function: str, times: int = 1) -> None:
        """Make the next `times` runs of `function` raise instead of calling its handler."""
        with self._lock:
            self._failures[function] = self._failures.get(function, 0) + times

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no async invocation is queued or running; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def snapshot(self) -> dict[str, Any]:
        """Clock, functions, runs and refusals, JSON-able (events as UTF-8 text)."""
        with self._lock:
            runs = [
                {
                    "function": i.function,
                    "qualifier": i.qualifier,
                    "type": i.type,
                    "event": i.event.decode("utf-8", errors="replace"),
                    "request_id": i.request_id,
                    "attempt": i.attempt,
                    "result": _jsonable(i.result),
                    "error": i.error,
                    "error_type": i.error_type,
                    "at": i.at,
                }
                for i in self._invocations
            ]
            refused = [vars(r) for r in self._refused]
            return {
                **super().snapshot(),
                "functions": sorted(self.functions),
                "invocations": runs,
                "refused": refused,
                "pending": self._pending,
            }

    # -- the API ---------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Authenticate, route and answer one API request."""
        request_id = new_request_id(self.now())
        try:
            self._authenticate(request)
            return self._invoke(request, request_id)
        except _FcError as error:
            with self._lock:
                self._refused.append(
                    Refusal(
                        request.method,
                        request.path,
                        error.status,
                        error.code,
                        error.message,
                        error.string_to_sign,
                    )
                )
            return self._error(error, request_id)

    def _error(self, error: _FcError, request_id: str) -> Response:
        code_key, message_key = ERROR_SHAPES[self.error_shape]
        body: dict[str, Any] = {code_key: error.code, message_key: error.message}
        if self.error_shape == "fc3":
            body["RequestId"] = request_id
        return Response.json(error.status, body, {"x-fc-request-id": request_id})

    def _authenticate(self, request: Request) -> None:
        authorization = request.headers.get("Authorization")
        if not authorization:
            raise _FcError(403, "AccessDenied", "required HTTP header Authorization was not specified")
        date = request.headers.get("Date")
        if not date:
            raise _FcError(400, "MissingRequiredHeader", "required HTTP header Date was not specified")
        self._check_date(request.headers.get("x-fc-date") or date)
        scheme, _, credential = authorization.partition(" ")
        access_key_id, _, signature = credential.strip().partition(":")
        if scheme != "FC" or not access_key_id or not signature:
            raise _FcError(403, "SignatureNotMatch", SIGNATURE_MESSAGE)
        secret = self.access_keys.get(access_key_id)
        if secret is None:
            raise _FcError(403, "InvalidAccessKeyID", f"invalid access key ID '{access_key_id}'")
        self._check_token(request.headers.get("x-fc-security-token"))
        text = string_to_sign(request)
        if not hmac.compare_digest(fc_signature(secret, text), signature):
            raise _FcError(403, "SignatureNotMatch", SIGNATURE_MESSAGE, text)

    def _check_date(self, value: str) -> None:
        try:
            sent = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError):
            raise _FcError(
                400, "InvalidArgument", f"the request date {value!r} is not an HTTP date"
            ) from None
        skew = abs(self.now() - sent)
        if skew >= DATE_TOLERANCE_S:
            raise _FcError(
                403,
                "RequestTimeTooSkewed",
                f"the difference between the request time {value!r} and the server's time is {skew:.0f} s, "
                f"{DATE_TOLERANCE_S // 60} minutes or more",
            )

    def _check_token(self, token: str | None) -> None:
        if self.security_tokens is None:
            if token:
                raise _FcError(
                    403, "InvalidSecurityToken", "a security token was sent with a permanent access key"
                )
        elif not token:
            raise _FcError(
                403, "InvalidSecurityToken", "required HTTP header x-fc-security-token was not specified"
            )
        elif token not in self.security_tokens:
            raise _FcError(403, "InvalidSecurityToken", "the security token is invalid or expired")

    def _invoke(self, request: Request, request_id: str) -> Response:
        match = _INVOKE.match(request.path)
        if match is None or request.method != "POST":
            raise _FcError(
                400, "PathNotSupported", f"'{request.method}' against '{request.path}' is not supported"
            )
        name = match.group("name")
        with self._lock:
            function = self.functions.get(name)
        if function is None:
            raise _FcError(404, "FunctionNotFound", "function not found")
        qualifier = request.args.get("qualifier") or "LATEST"
        if qualifier not in function.qualifiers:
            raise _FcError(404, "AliasNotFound", f"alias '{qualifier}' of function '{name}' does not exist")
        kind = request.headers.get("x-fc-invocation-type") or "Sync"
        if kind not in ("Sync", "Async"):
            raise _FcError(
                400, "InvalidArgument", f"x-fc-invocation-type: {kind!r} is neither Sync nor Async"
            )
        log_type = request.headers.get("x-fc-log-type") or "None"
        if log_type not in ("None", "Tail"):
            raise _FcError(400, "InvalidArgument", f"x-fc-log-type: {log_type!r} is neither None nor Tail")
        if kind == "Async":
            with self._lock:
                self._pending += 1
            worker = threading.Thread(
                target=self._run_async,
                args=(name, function, qualifier, request.body, request_id),
                name=f"fc-async-{name}",
                daemon=True,
            )
            worker.start()
            return Response(202, b"", {"x-fc-request-id": request_id})
        return self._run_sync(name, function, qualifier, request.body, request_id, tail=log_type == "Tail")

    # -- running handlers ------------------------------------------------------------------------
    def _run_sync(
        self, name: str, function: FcFunction, qualifier: str, event: bytes, request_id: str, *, tail: bool
    ) -> Response:
        capture = _ThreadLog() if tail else None
        if capture is not None:
            logging.getLogger().addHandler(capture)
        try:
            run = self._run(name, function, qualifier, event, request_id, "Sync", 1)
        finally:
            if capture is not None:
                logging.getLogger().removeHandler(capture)
        headers = {"x-fc-request-id": request_id}
        if capture is not None:
            headers["x-fc-log-result"] = capture.tail()
        if run.error is not None:
            headers["x-fc-error-type"] = "UnhandledInvocationError"
            return Response.json(200, run.error, headers)
        body, content_type = result_body(run.result)
        return Response(200, body, {"Content-Type": content_type, **headers})

    def _run_async(
        self, name: str, function: FcFunction, qualifier: str, event: bytes, request_id: str
    ) -> None:
        try:
            for attempt in range(1, self.async_retries + 2):
                if attempt > 1 and self.async_retry_delay_s > 0:
                    time.sleep(self.async_retry_delay_s)
                if not self._run(name, function, qualifier, event, request_id, "Async", attempt).failed:
                    break
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def _run(
        self,
        name: str,
        function: FcFunction,
        qualifier: str,
        event: bytes,
        request_id: str,
        kind: str,
        attempt: int,
    ) -> Invocation:
        context = self._context(name, function, qualifier, request_id)
        result: Any = None
        error: dict[str, Any] | None = None
        error_type: str | None = None
        try:
            with self._lock:
                injected = self._failures.get(name, 0) > 0
                if injected:
                    self._failures[name] -= 1
            if injected:
                raise RuntimeError(f"injected failure of {name} (fail_next)")
            result = function.handler(event, context)
        except Exception as exc:  # the handler's own error: FC's UnhandledInvocationError
            error, error_type = error_answer(exc), "UnhandledInvocationError"
        else:
            if kind == "Async" and self.retry_result is not None and self.retry_result(result):
                error_type = "HandledInvocationError"
        run = Invocation(
            name, qualifier, kind, event, request_id, attempt, result, error, error_type, self.now()
        )
        with self._lock:
            self._invocations.append(run)
        return run

    def _context(self, name: str, function: FcFunction, qualifier: str, request_id: str) -> FcContext:
        meta = FcFunctionMeta(name, function.handler_name, function.memory, function.timeout)
        return FcContext(
            request_id,
            self.credentials,
            meta,
            FcServiceMeta(qualifier=qualifier),
            self.region,
            self.account_id,
        )


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def load_handler(spec: str) -> Handler:
    """`path/to/module.py:function` -> that function, the module imported by path (its folder on sys.path)."""
    path_text, sep, attribute = spec.rpartition(":")
    if not sep or not path_text or not attribute:
        raise SystemExit(f"--function: expected NAME=PATH.py:FUNCTION, got {spec!r}")
    path = Path(path_text).resolve()
    if not path.is_file():
        raise SystemExit(f"--function: no such file {path}")
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # as FC puts the code folder on the path
    module_name = f"_fc_function_{path.stem}_{abs(hash(str(path))):x}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise SystemExit(f"--function: cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise SystemExit(f"--function: {path} has no callable {attribute!r}")
    return handler  # type: ignore[no-any-return]


def main(argv: Sequence[str]) -> int:
    """`python -m emulators fc`: serve the FC 3.0 invoke API until SIGTERM/SIGINT."""
    parser = cli_parser("fc", "Function Compute 3.0 API (2023-03-30 invoke) running handlers in-process.")
    parser.add_argument(
        "--function",
        action="append",
        default=[],
        metavar="NAME=PATH.py:FUNCTION",
        help="repeatable, e.g. dwnotify=functions/index.py:handler",
    )
    parser.add_argument("--access-key-id", default="test-ak")
    parser.add_argument("--access-key-secret", default="test-secret")
    parser.add_argument(
        "--security-token", action="append", default=None, help="accepted STS token; repeatable"
    )
    parser.add_argument("--error-shape", choices=sorted(ERROR_SHAPES), default="fc3")
    parser.add_argument(
        "--async-retries", type=int, default=3, help="retries after a failed async run (default 3)"
    )
    parser.add_argument(
        "--qualifier", action="append", default=[], help="accepted qualifier (default: LATEST)"
    )
    parser.add_argument("--region", default="cn-shanghai")
    parser.add_argument("--account-id", default="1234567890123456")
    args = parser.parse_args(argv)
    qualifiers = frozenset(args.qualifier or ["LATEST"])
    functions: dict[str, Handler | FcFunction] = {}
    for item in args.function:
        name, sep, spec = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--function: expected NAME=PATH.py:FUNCTION, got {item!r}")
        functions[name] = FcFunction(load_handler(spec), qualifiers=qualifiers)
    emulator = FcEmulator(
        functions,
        access_keys={args.access_key_id: args.access_key_secret},
        security_tokens=args.security_token,
        error_shape=args.error_shape,
        async_retries=args.async_retries,
        region=args.region,
        account_id=args.account_id,
        verbose=args.verbose,
    )
    return serve(emulator, args.host, args.port)
