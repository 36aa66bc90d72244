"""Invoking a deployed FC 3.0 function (`dwnotify remote`, later a fan-out coordinator) through fc2.

What this rests on, read in aliyun-fc2 2.5.2's source (`fc2/client.py`, `fc2/auth.py`):

- fc2 speaks FC 2.0's API: `Client.api_version = '2016-08-15'` (client.py:80), and
  `invoke_function(service, function, ...)` builds `/2016-08-15/services/{service}/functions/{fn}/invocations`
  (client.py:884), with a qualifier folded into the service name (client.py:883). An FC 3.0 function
  has no service, so `invoke_function` cannot reach it.
- FC 3.0 invokes at `POST /2023-03-30/functions/{name}/invocations[?qualifier=...]` on
  `https://<account-id>.<region>.fc.aliyuncs.com`, with `x-fc-invocation-type: Sync|Async` and
  `x-fc-log-type`. So this module sets the client's `api_version` to `2023-03-30`, builds that path
  itself, and uses fc2's own header builder `_build_common_headers` (client.py:105: date, content
  type, `x-fc-security-token` for an STS key, then `Auth.sign_request`) and fc2's sender
  `requestWithTry` (client.py:47). No fc2 method is patched.
- The signature (auth.py:18) is `FC <ak>:<base64(HMAC-SHA256(secret, string))>` over the method,
  Content-MD5, Content-Type, Date, the sorted `x-fc-*` headers and the path, then one `k=v` line per
  query parameter, sorted, when the queries are given as a dict (auth.py:42). Passing `{}` instead
  of None would sign `path + "\\n"`: without a qualifier no queries are passed at all.
- The fc3 deployment component (devsapp/fc3 `src/resources/fc/index.ts`, `instanceExec`) drives
  the Node fc2 client with `client.version = '2023-03-30'` and fc2's scheme on a 2023-03-30 path, and
  fc2's Python signer produces the same bytes for such a path. So fc2's signer on the FC 3.0 invoke
  path is expected to work, but no one has run it against the live service. If the service refuses
  it, swap `_send` for the FC 3.0 SDK (`alibabacloud_fc20230330`, `invoke_function_with_options`);
  nothing else here depends on fc2.
- Not `Client._do_request` (client.py:140): it formats `r.json()` into its log line before raising,
  so a non-JSON error body raises a JSONDecodeError that loses the status and request id
  (client.py:154, 161); it reads only `ErrorCode` (client.py:183); and it logs the request headers
  (`x-fc-security-token`, `authorization`) at ERROR (client.py:156, 163).
- fc2 logs through the root logger (`logging.debug`/`logging.error`, not its `fc2` logger, which
  only gets a NullHandler: __init__.py:23), and the signer logs its string to sign, STS token line
  included, at DEBUG (auth.py:36). `quiet_fc2_logs` drops every record logged from fc2's files, and
  the secret, the token and each request's signature are registered with `logs` to be masked.
- `requestWithTry` retries a refused connection 5 times with backoff (about 30 s in all), but never
  a POST that reached the server (urllib3's Retry does not retry POST on read errors or statuses):
  an invocation is not sent twice.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import logs
from .credentials import Credentials
from .errors import NotifierError

API_VERSION = "2023-03-30"
# The function's timeout in s.yaml is 80 s; a synchronous invocation is answered when it returns.
DEFAULT_TIMEOUT = 90.0
FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
QUALIFIER = re.compile(r"[A-Za-z0-9_-]{1,128}")  # LATEST, a version number or an alias name
_ERROR_SHAPES = (("ErrorCode", "ErrorMessage"), ("Code", "Message"), ("errorCode", "errorMessage"))


class RemoteError(NotifierError):
    """FC refused or failed an invocation, the function raised, or FC could not be reached."""

    def __init__(
        self, message: str, *, code: str, request_id: str = "", http_status: int | None = None
    ) -> None:
        self.code = code
        self.message = message
        self.request_id = request_id
        self.http_status = http_status
        super().__init__(f"{code}: {message} (request id {request_id or 'unknown'})")


@dataclass(frozen=True)
class Invocation:
    """FC's answer: the function's result as returned (empty for an async invocation)."""

    status: int
    body: bytes
    request_id: str


def endpoint_for(account_id: str, region: str) -> str:
    """The public FC endpoint of an account in a region."""
    return f"https://{account_id}.{region}.fc.aliyuncs.com"


def invoke(
    endpoint: str,
    credentials: Credentials,
    function: str,
    event: Mapping[str, Any],
    *,
    asynchronous: bool = False,
    qualifier: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Invocation:
    """Invoke `function` with `event` as JSON; the answer, or `RemoteError`."""
    if not FUNCTION_NAME.fullmatch(function):
        raise ValueError(f"not an FC function name: {function!r}")
    if qualifier is not None and not QUALIFIER.fullmatch(qualifier):
        raise ValueError(f"not an FC qualifier: {qualifier!r}")
    body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    status, headers, content = _send(endpoint, credentials, function, body, asynchronous, qualifier, timeout)
    request_id = headers.get("x-fc-request-id", "")
    if status >= 400 or headers.get("x-fc-error-type"):
        raise parse_error(status, content, headers)
    return Invocation(status, content, request_id)


def invoke_async(
    endpoint: str,
    credentials: Credentials,
    function: str,
    event: Mapping[str, Any],
    *,
    qualifier: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Invocation:
    """Queue one asynchronous invocation (FC answers 202 at once); what a fan-out sends per shard."""
    return invoke(
        endpoint, credentials, function, event, asynchronous=True, qualifier=qualifier, timeout=timeout
    )


def _send(
    endpoint: str,
    credentials: Credentials,
    function: str,
    body: bytes,
    asynchronous: bool,
    qualifier: str | None,
    timeout: float,
) -> tuple[int, Mapping[str, str], bytes]:
    """POST the invocation with fc2's signer and sender: status, headers (any case) and body."""
    import fc2  # type: ignore[import-untyped]
    import fc2.client  # type: ignore[import-untyped]
    import requests

    quiet_fc2_logs()
    token = credentials.security_token.reveal() if credentials.security_token else ""
    logs.register_secrets([credentials.access_key_secret.reveal(), token])
    client = fc2.Client(
        endpoint=endpoint.rstrip("/"),
        accessKeyID=credentials.access_key_id,
        accessKeySecret=credentials.access_key_secret.reveal(),
        securityToken=token,
        Timeout=timeout,
    )
    client.api_version = API_VERSION
    path = f"/{client.api_version}/functions/{function}/invocations"
    queries = {"qualifier": qualifier} if qualifier else None
    invocation = {"x-fc-invocation-type": "Async" if asynchronous else "Sync", "x-fc-log-type": "None"}
    headers = client._build_common_headers("POST", path, invocation, queries)
    # A signature is good for another identical request while its Date is accepted: never shown.
    logs.register_secrets([headers["authorization"].rpartition(":")[2]], pieces=False)
    try:
        response = fc2.client.requestWithTry(
            "POST", client.endpoint + path, headers=headers, params=queries, data=body, timeout=timeout
        )
    except requests.RequestException as error:
        raise RemoteError(logs.mask(_one_line(str(error))), code=type(error).__name__) from None
    return response.status_code, response.headers, response.content


def parse_error(status: int, body: bytes, headers: Mapping[str, str]) -> RemoteError:
    """The error in a failed answer, whichever shape its body has (FC 2.0's, FC 3.0's, a function's).

    `headers` must look names up in any case (requests' and httpx's do).
    """
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    text = body.decode("utf-8", errors="replace")
    request_id = headers.get("x-fc-request-id", "")
    code, message = "", ""
    if isinstance(data, dict):
        request_id = request_id or str(data.get("RequestId") or data.get("requestId") or "")
        for code_key, message_key in _ERROR_SHAPES:
            if data.get(code_key) or data.get(message_key):
                code, message = str(data.get(code_key) or ""), str(data.get(message_key) or "")
                break
        code = code or str(data.get("errorType") or "")  # a function that raised: errorType
    else:
        message = text
    code = code or headers.get("x-fc-error-type", "") or f"HTTP {status}"
    message = _one_line(message) or _one_line(text) or f"HTTP {status}"
    return RemoteError(logs.mask(message), code=code, request_id=request_id, http_status=status)


def _one_line(text: str, limit: int = 500) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class _DropFc2Records(logging.Filter):
    """Drops the records fc2 logs through the root logger: they carry the token and the signature."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(self.folder)


def quiet_fc2_logs() -> None:
    """Keep fc2's log lines (request headers, the string to sign) out of every handler; idempotent."""
    import fc2

    root = logging.getLogger()
    if not any(isinstance(existing, _DropFc2Records) for existing in root.filters):
        # A record's pathname is its code's co_filename, which import sets to the module's __file__.
        root.addFilter(_DropFc2Records(os.path.dirname(fc2.__file__) + os.sep))
    logging.getLogger("fc2").setLevel(logging.CRITICAL + 1)
