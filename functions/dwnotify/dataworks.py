"""The DataWorks OpenAPI client: aliyun-python-sdk-core `CommonRequest` in, domain `Run`s out.

The SDK retries nothing that DataWorks answers (its retry table lists ECS only), so retries with
exponential backoff and jitter, the client-side QPS limit and the count of every request are here.
So is a total deadline on each request: the SDK's timeouts are per socket operation, and an answer
dripped one byte at a time never trips them; a `Watchdog` ends the request when its budget (the
timeout, or what is left before the tick's deadline) is spent.

Writes (`exec_stage`, `abolish_run`) are POSTs with a form body, as the official SDK sends them, and
carry no idempotency token: one is retried only when its answer proves it was not carried out
(throttling, HTTP 429, a connection that was never made). A 5xx, a dropped connection or no answer
in time may follow a write that happened; such an error is not retried, and `ambiguous(error)` says
so, for the caller to tell "result unknown, the next poll shows it" from a refusal. Where the
gateway has only the old names (SDK 6.2 and older), they are `ExecDeploymentStage` and
`AbolishDeployment`, with the same parameters.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .answers import RunPage, parse_item_page, parse_page, parse_run
from .credentials import Credentials
from .errors import DataWorksError
from .model import Run, RunItem
from .settings import DataWorksSettings, ProjectSettings
from .timing import backoff, time_left
from .watchdog import Watchdog

log = logging.getLogger(__name__)

API_VERSION = "2024-05-18"
MAX_PAGE_SIZE = 100
MAX_ITEM_PAGES = 20  # 2,000 items: far past what a message shows, and a bound on a lying TotalCount
_BACKOFF_BASE_S = 0.5
_BACKOFF_CAP_S = 8.0
# Codes the gateway may give for an action this API surface does not have (which one is unconfirmed).
_UNKNOWN_ACTION_CODES = frozenset({"InvalidAction.NotFound", "InvalidAction", "InvalidApi.NotFound"})
_NOT_FOUND_HINTS = ("NotFound", "NotExist")
_CONNECT_TIMEOUT_S = 5.0
_SDK_POOL_SIZE = 10  # what the SDK mounts by default
# The codes of failures inside the SDK and of answers that did not come in time: they hint at none
# of the gateway's (not "NotFound": a run that cannot be read is not a run that is gone).
_SDK_FAILURE = "SDK.UnexpectedError"
_SDK_NO_ANSWER = "SDK.NoAnswer"
_SDK_HTTP_ERROR = "SDK.HttpError"  # the SDK's own code for a network failure
_SDK_NOT_CONNECTED = "SDK.NotConnected"  # a network failure before any byte was sent
_SDK_UNREADABLE = "SDK.UnreadableAnswer"  # an answer came, but it says nothing that can be read
_NOT_SUCCESS = "Success.False"  # a write answered {"Success": false} without a code of its own
# What urllib3 raises only while opening a connection, before the request is written.
_CONNECT_FAILURES = ("NewConnectionError", "ConnectTimeoutError")


class _RateLimiter:
    """At most `max(1, floor(qps))` request starts in any window of that many / qps seconds (5 a second
    at 5 QPS), for every thread that shares it: the API's limits are per account and region, counted
    over a second, so a burst up to the limit goes at once and the rest waits for the window to pass.
    """

    def __init__(self, qps: float, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self._burst = max(1, int(qps))
        self._window = self._burst / qps
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque(maxlen=self._burst)  # the latest starts, some reserved ahead
        self._waiting = 0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Wait for this caller's turn: reserve the next start under the lock, sleep outside it."""
        with self._lock:
            now = self._clock()
            # Each waiting caller reserves at most one window ahead: a start further off was taken on a
            # clock that has stepped back since, and must not turn into an hour-long wait.
            horizon = now + self._window * (self._waiting + 1)
            if self._starts and self._starts[-1] > horizon:
                self._starts = deque((min(start, now) for start in self._starts), maxlen=self._burst)
            start = now
            if len(self._starts) == self._burst:
                start = max(now, self._starts[0] + self._window)
            self._starts.append(start)
            self._waiting += start > now
        if start > now:
            try:
                self._sleep(start - now)
            finally:
                with self._lock:
                    self._waiting -= 1


class DataWorksClient:
    """Lists and gets pipeline runs, advances and abolishes them, with retries, a QPS limit per region
    and a call count.

    Safe to call from several threads at once (discovery reads workspaces in parallel): the workspaces
    of one region share its limiter, and every request is counted.
    """

    def __init__(
        self,
        settings: DataWorksSettings,
        credentials: Credentials,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._sleep = sleep
        self._jitter = jitter
        self._limiters: dict[str, _RateLimiter] = {}
        self._sdk_clients: dict[str, Any] = {}
        self._clock = clock
        self._lock = threading.Lock()
        self.legacy_api = False
        self.items_unavailable = False  # the gateway said it has no ListPipelineRunItems
        self.calls = 0
        self.call_limit: int | None = None  # `calls` may not pass it (the daily call budget's cap)
        self._max_qps = settings.max_qps

    def list_runs(
        self, project: ProjectSettings, page_number: int, *, deadline: float | None = None
    ) -> RunPage:
        """One page (100 runs, with their stages) of a workspace's pipeline runs.

        No request outlasts `deadline` (epoch seconds), and no retry starts that could not end before it.
        """
        params = {"ProjectId": project.id, "PageNumber": page_number, "PageSize": MAX_PAGE_SIZE}
        body = self._call(project, ("ListPipelineRuns", "ListDeployments"), params, deadline)
        return parse_page("ListPipelineRuns", body, project.id)

    def get_run(self, project: ProjectSettings, run_id: str, *, deadline: float | None = None) -> Run | None:
        """One run by id, or None when DataWorks no longer knows it; `deadline` as for `list_runs`."""
        params = {"ProjectId": project.id, "Id": run_id}
        try:
            body = self._call(project, ("GetPipelineRun", "GetDeployment"), params, deadline)
        except DataWorksError as error:
            if error.http_status == 404 or any(hint in error.code for hint in _NOT_FOUND_HINTS):
                return None
            raise
        raw = body.get("Pipeline") or body.get("Deployment")
        if not isinstance(raw, Mapping):
            raise DataWorksError(f"GetPipelineRun for run {run_id} returned no Pipeline object")
        return parse_run(raw, project.id)  # MalformedRun: that run is skipped this tick

    def list_run_items(
        self, project: ProjectSettings, run_id: str, *, deadline: float | None = None
    ) -> tuple[RunItem, ...]:
        """Every item (node, workflow, resource...) a run deploys, page by page, `MAX_ITEM_PAGES` at most.

        A malformed item is left out with a WARNING; an answer that is no page is a DataWorksError. A
        gateway without the action (the old API) gives no items, and is not asked again.
        """
        if self.items_unavailable:
            return ()
        items: list[RunItem] = []
        read = 0
        for page_number in range(1, MAX_ITEM_PAGES + 1):
            params = {
                "ProjectId": project.id,
                "PipelineRunId": run_id,
                "PageNumber": page_number,
                "PageSize": MAX_PAGE_SIZE,
            }
            try:
                body = self._call_with_retries(project, "ListPipelineRunItems", params, deadline)
            except DataWorksError as error:
                if error.code not in _UNKNOWN_ACTION_CODES:
                    raise
                # The old API surface (SDK 6.2 and older) has no items action under any name: asked
                # once, then messages go without items.
                log.warning("dataworks: ListPipelineRunItems is not available here; messages show no items")
                self.items_unavailable = True
                return ()
            page = parse_item_page(body)
            for reason in page.malformed:
                log.warning("dataworks: an item of run %s/%s is skipped: %s", project.id, run_id, reason)
            items.extend(page.items)
            served = len(page.items) + len(page.malformed)
            read += served
            # The pages' own size decides where the next one starts (a gateway may serve fewer than
            # asked), so the count read so far, not the page number, says when the list is done.
            if served == 0 or read >= page.total_count:
                return tuple(items)
        log.warning("dataworks: run %s/%s has more items than %d pages", project.id, run_id, MAX_ITEM_PAGES)
        return tuple(items)

    def exec_stage(
        self, project: ProjectSettings, run_id: str, code: str, *, deadline: float | None = None
    ) -> str:
        """Advance the run's stage `code` (its gate) with `ExecPipelineRunStage`; DataWorks' RequestId.

        Asynchronous: the stage's progress shows in later reads. A refusal (the stage is not waiting,
        the run has ended or is unknown) is a DataWorksError with the gateway's code; see `ambiguous`
        for an error after which the stage may have been executed all the same.
        """
        body = self._call(
            project,
            ("ExecPipelineRunStage", "ExecDeploymentStage"),
            {"ProjectId": project.id},
            deadline,
            form={"Id": run_id, "Code": code},
        )
        return _write_answer("ExecPipelineRunStage", body)

    def abolish_run(self, project: ProjectSettings, run_id: str, *, deadline: float | None = None) -> str:
        """End a run that still moves with `AbolishPipelineRun`; DataWorks' RequestId (errors as for
        `exec_stage`)."""
        body = self._call(
            project,
            ("AbolishPipelineRun", "AbolishDeployment"),
            {},
            deadline,
            form={"Id": run_id, "ProjectId": project.id},
        )
        return _write_answer("AbolishPipelineRun", body)

    def _call(
        self,
        project: ProjectSettings,
        actions: tuple[str, str],
        params: Mapping[str, object],
        deadline: float | None,
        *,
        form: Mapping[str, object] | None = None,
    ) -> dict[str, Any]:
        """Call the new action, falling back to the old name once the gateway says it has none (an
        answer that proves a write was not carried out, so the old name may be tried)."""
        if not self.legacy_api:
            try:
                return self._call_with_retries(project, actions[0], params, deadline, form)
            except DataWorksError as error:
                if error.code not in _UNKNOWN_ACTION_CODES:
                    raise
                log.warning("dataworks: %s is not available here, falling back to %s", actions[0], actions[1])
                self.legacy_api = True
        return self._call_with_retries(project, actions[1], params, deadline, form)

    def _call_with_retries(
        self,
        project: ProjectSettings,
        action: str,
        params: Mapping[str, object],
        deadline: float | None,
        form: Mapping[str, object] | None = None,
    ) -> dict[str, Any]:
        """A read (`form` None) is retried while its error is retryable; a write (a POST of `form`)
        only while its error proves it was not carried out."""
        attempts = self._settings.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return self._call_once(project, action, params, deadline, body=form)
            except DataWorksError as error:
                if form is not None and not _undone(error):
                    raise _as_write_error(error) from None
                delay = backoff(attempt, _BACKOFF_BASE_S, _BACKOFF_CAP_S, self._jitter())
                late = deadline is not None and self._clock() + delay >= deadline
                if not error.retryable or attempt == attempts or late:
                    raise
                log.info(
                    "dataworks: %s failed with %s, retry %d/%d in %.2fs",
                    action,
                    error.code or "a network error",
                    attempt,
                    attempts - 1,
                    delay,
                )
                self._sleep(delay)
        raise AssertionError("unreachable")

    def _call_once(
        self,
        project: ProjectSettings,
        action: str,
        params: Mapping[str, object],
        deadline: float | None,
        *,
        body: Mapping[str, object] | None = None,
    ) -> dict[str, Any]:
        """One request: GET with `params` in the query, or POST with `body` as a form (both signed)."""
        from aliyunsdkcore.request import CommonRequest

        request = CommonRequest()
        request.set_domain(project.endpoint)
        request.set_protocol_type(self._settings.protocol)
        request.set_version(API_VERSION)
        request.set_action_name(action)
        request.set_method("GET" if body is None else "POST")
        for name, value in params.items():
            request.add_query_param(name, str(value))
        # The SDK sends body params urlencoded (application/x-www-form-urlencoded), and its HMAC-SHA1
        # signature covers them together with the query.
        for name, value in (body or {}).items():
            request.add_body_params(name, str(value))
        self._limiter(project.region).wait()
        budget = time_left(self._settings.timeout.total_seconds(), deadline, self._clock)
        if budget <= 0:
            raise DataWorksError(f"{action} not sent: the tick's deadline has passed", retryable=True)
        # The SDK's timeouts are per socket operation; the watchdog bounds the whole request.
        request.set_connect_timeout(min(budget, _CONNECT_TIMEOUT_S))
        request.set_read_timeout(budget)
        sdk = self._sdk_client(project.region)
        with self._lock:
            if self.call_limit is not None and self.calls >= self.call_limit:
                raise DataWorksError(
                    f"{action} not sent: this poll's share of the daily call budget is spent"
                )
            self.calls += 1
        watchdog = Watchdog(budget)
        try:
            with watchdog:
                raw = sdk.do_action_with_exception(request)
        except Exception as error:  # the SDK's own, and whatever escapes it (it has bugs)
            raise _converted(action, project, error, watchdog) from None
        if watchdog.fired:  # a body cut short by the watchdog may still have parsed
            raise _no_answer(action, watchdog)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise DataWorksError(
                f"{action} returned a body that is not JSON (or nested past reading)", code=_SDK_UNREADABLE
            ) from None
        if not isinstance(body, dict):
            raise DataWorksError(f"{action} returned JSON that is not an object", code=_SDK_UNREADABLE)
        return body

    def share_qps(self, shares: int) -> None:
        """Keep to a `shares`-th of `max_qps` from now on: the account's limit is shared by that many
        invocations polling at once (shards).

        A whole number of requests a second, rounded down (2.5 becomes 2): each shard's limiter then
        counts over the same one-second window as the account's, so that together they never start
        more than `max_qps` in any second (a fractional rate is kept over a longer window, and the
        shards' windows, which start together, would add up to more).
        """
        share = self._settings.max_qps / max(1, shares)
        qps = float(math.floor(share)) if shares > 1 and share >= 1 else share
        with self._lock:
            if qps != self._max_qps:
                self._max_qps = qps
                self._limiters.clear()

    def _limiter(self, region: str) -> _RateLimiter:
        with self._lock:
            limiter = self._limiters.get(region)
            if limiter is None:
                limiter = self._limiters[region] = _RateLimiter(self._max_qps, self._clock, self._sleep)
            return limiter

    def _sdk_client(self, region: str) -> Any:
        with self._lock:
            client = self._sdk_clients.get(region)
            if client is None:
                timeout_s = self._settings.timeout.total_seconds()
                client = self._sdk_clients[region] = _make_sdk_client(self._credentials, region, timeout_s)
            return client


def ambiguous(error: DataWorksError) -> bool:
    """True when the request may have been carried out although it failed: no answer in time, a
    network failure once the connection was made, an answer that cannot be read, or a 5xx (not a
    throttling one). False for refusals and for errors before anything was sent."""
    if _throttled(error):
        return False
    if error.code in (_SDK_NO_ANSWER, _SDK_HTTP_ERROR, _SDK_FAILURE, _SDK_UNREADABLE):
        return True
    return isinstance(error.http_status, int) and error.http_status >= 500


def _undone(error: DataWorksError) -> bool:
    """True when the error proves the request was not carried out and may be sent again: throttled
    (a `Throttling*` code or HTTP 429), or no connection made."""
    return _throttled(error) or error.code == _SDK_NOT_CONNECTED


def _throttled(error: DataWorksError) -> bool:
    return error.code.startswith("Throttling") or error.http_status == 429


def _as_write_error(error: DataWorksError) -> DataWorksError:
    """A write's error as the caller sees it: never retryable once it may have been carried out."""
    if not ambiguous(error):
        return error
    return DataWorksError(
        str(error),
        code=error.code,
        http_status=error.http_status,
        request_id=error.request_id,
        retryable=False,
    )


def _write_answer(action: str, body: Mapping[str, Any]) -> str:
    """The RequestId of a write's `{RequestId, Success}` answer; Success false is a refusal."""
    success = body.get("Success")
    request_id = str(body.get("RequestId") or "")
    if isinstance(success, str):  # the models say bool; a string form is read the same way
        success = {"true": True, "false": False}.get(success.strip().lower(), success)
    if success is False:
        code = str(body.get("Code") or _NOT_SUCCESS)
        raise DataWorksError(
            f"{action} failed: {code}: {_safe_message(body.get('Message'))}",
            code=code,
            request_id=request_id,
        )
    if success is not True:  # an answer that does not say whether it was done
        raise DataWorksError(
            f"{action} returned no Success flag", code=_SDK_UNREADABLE, request_id=request_id
        )
    return request_id


def _converted(action: str, project: ProjectSettings, error: Exception, watchdog: Watchdog) -> DataWorksError:
    """The DataWorksError for whatever the SDK raised; nothing of the SDK's escapes this module."""
    from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException

    if watchdog.fired:  # whatever the SDK made of an answer cut short
        return _no_answer(action, watchdog)
    if isinstance(error, ServerException):
        return _server_error(action, error)
    if isinstance(error, ClientException):
        code = str(error.get_error_code())
        # Only the kind of failure is read from its text: the text quotes the signed URL.
        if code == _SDK_HTTP_ERROR and any(kind in str(error.get_error_msg()) for kind in _CONNECT_FAILURES):
            code = _SDK_NOT_CONNECTED
        return DataWorksError(
            f"{action} could not reach {project.endpoint}: {code}", code=code, retryable=True
        )
    return _unexpected(action, error)


def _unexpected(action: str, error: Exception) -> DataWorksError:
    """A bug inside the SDK, such as the IndexError of `message.split(':')[1]` on a 400
    SignatureDoesNotMatch whose message has no colon, or a UnicodeDecodeError on an error answer
    that is not UTF-8. Retryable only when it is a network error; its text is not shown (it may
    quote the answer).
    """
    network = isinstance(error, OSError)
    log.warning("dataworks: the SDK failed on %s with %s", action, type(error).__name__)
    return DataWorksError(
        f"{action} failed inside the SDK ({type(error).__name__}): "
        + ("a network error" if network else "the answer could not be read"),
        code=_SDK_FAILURE,
        retryable=network,
    )


def _no_answer(action: str, watchdog: Watchdog) -> DataWorksError:
    return DataWorksError(
        f"{action}: no answer within {watchdog.seconds:.3g}s", code=_SDK_NO_ANSWER, retryable=True
    )


def _server_error(action: str, error: Any) -> DataWorksError:
    code = str(error.get_error_code() or "")
    status = error.get_http_status()
    # Throttling comes as HTTP 400 (`Throttling`, `Throttling.User`, `Throttling.Api`) as often as 429,
    # so the code decides, not the status.
    retryable = code.startswith("Throttling") or code.startswith("ServiceUnavailable")
    retryable = retryable or status == 429 or (isinstance(status, int) and status >= 500)
    return DataWorksError(
        f"{action} failed: HTTP {status} {code}: {_safe_message(error.get_error_msg())}",
        code=code,
        http_status=status,
        request_id=str(error.get_request_id() or ""),
        retryable=retryable,
    )


def _safe_message(message: object) -> str:
    """The gateway's message without the string-to-sign it echoes (it carries the STS token)."""
    text = str(message or "")
    cut = text.lower().find("string to sign")
    if cut >= 0:
        text = text[:cut].rstrip(" :,;")
    return text[:300]


def _make_sdk_client(credentials: Credentials, region: str, timeout_s: float) -> Any:
    from aliyunsdkcore.auth.credentials import StsTokenCredential
    from aliyunsdkcore.auth.signers.sts_token_signer import StsTokenSigner
    from aliyunsdkcore.client import AcsClient

    secret = credentials.access_key_secret.reveal()
    client = AcsClient(
        credentials.access_key_id,
        secret,
        region,
        auto_retry=False,  # every retry is ours, so that every request is counted
        connect_timeout=min(5, int(timeout_s) or 1),
        timeout=int(timeout_s) or 1,
    )
    if credentials.security_token:
        # The SDK lets ALIYUN_ACCESS_KEY_* in the environment override a `credential=` object, so
        # the STS signer is set directly: the function's own role must be the one that signs.
        token = credentials.security_token.reveal()
        client._signer = StsTokenSigner(StsTokenCredential(credentials.access_key_id, secret, token))
    _watch_sdk_sockets(client)
    return client


def _watch_sdk_sockets(client: Any) -> None:
    """Let the watchdog see the sockets of the SDK's requests, through the session's transport adapter.

    The SDK sends with a vendored `requests` Session, its public `session`: mounting an adapter is
    how `requests` is meant to be extended (no SDK method is replaced). The adapter's connection
    pools make connections that hand each socket to the running exchange's `Watchdog` when it is
    opened and whenever an answer is read from it (a kept-alive connection too). Should a later
    SDK vendor its HTTP stack differently, requests keep the per-request timeouts only.
    """
    try:
        adapter = _watched_adapter_class()(_SDK_POOL_SIZE, _SDK_POOL_SIZE)
        for prefix in ("https://", "http://"):
            client.session.mount(prefix, adapter)
    except (ImportError, AttributeError, TypeError) as error:
        log.warning("dataworks: requests are bounded by their timeouts only: %s", type(error).__name__)


@functools.cache
def _watched_adapter_class() -> Any:
    from aliyunsdkcore.vendored.requests.adapters import HTTPAdapter
    from aliyunsdkcore.vendored.requests.packages.urllib3 import connection, connectionpool

    def watch(sock: Any) -> None:
        watchdog = Watchdog.current()
        if watchdog is not None:
            watchdog.watch(sock)

    class WatchedMixin:
        sock: Any

        def _new_conn(self) -> Any:  # the bare socket: the TLS handshake is watched too
            sock = super()._new_conn()  # type: ignore[misc]
            watch(sock)
            return sock

        def connect(self) -> None:
            super().connect()  # type: ignore[misc]
            watch(self.sock)

        def getresponse(self, *args: Any, **kwargs: Any) -> Any:  # also on a kept-alive connection
            watch(self.sock)
            return super().getresponse(*args, **kwargs)  # type: ignore[misc]

    class WatchedHTTPConnection(WatchedMixin, connection.HTTPConnection):  # type: ignore[misc]
        pass

    class WatchedHTTPSConnection(WatchedMixin, connection.HTTPSConnection):  # type: ignore[misc]
        pass

    class WatchedHTTPPool(connectionpool.HTTPConnectionPool):  # type: ignore[misc]
        ConnectionCls = WatchedHTTPConnection

    class WatchedHTTPSPool(connectionpool.HTTPSConnectionPool):  # type: ignore[misc]
        ConnectionCls = WatchedHTTPSConnection

    pools = {"http": WatchedHTTPPool, "https": WatchedHTTPSPool}

    class WatchedAdapter(HTTPAdapter):  # type: ignore[misc]
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = dict(pools)  # per instance, as urllib3 allows

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **kwargs)
            if not proxy.lower().startswith("socks"):  # SOCKS pools are their own; left as they are
                manager.pool_classes_by_scheme = dict(pools)
            return manager

    return WatchedAdapter
