"""The emulator's HTTP side: a loopback server that authenticates, dispatches and signs answers."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import tablestore.protobuf.table_store_pb2 as pb

from emulators._base import ThreadServed
from emulators.tablestore import api, persist
from emulators.tablestore.auth import Credentials, authenticate, response_headers
from emulators.tablestore.errors import MESSAGE_BY_CODE, ServiceError
from emulators.tablestore.store import Store

log = logging.getLogger("emulators.tablestore")


@dataclass
class _Fault:
    """One injected failure waiting for its request: an error answer, or (code None) a dropped socket."""

    operation: str | None
    code: str | None
    message: str
    status: int | None
    remaining: int
    skip: int
    applied: bool


@dataclass(frozen=True)
class Served:
    """An injected failure as it was served: the operation it hit and what the client got."""

    operation: str
    code: str | None  # None: the connection was dropped without an answer
    applied: bool
    rows: tuple[tuple[Any, ...], ...] = ()  # the primary keys the request named (values only)


class _Clock:
    """Epoch seconds from a source, until set or advanced by hand (TTL tests move it)."""

    def __init__(self, source: Callable[[], float]) -> None:
        self._source = source
        self._offset = 0.0
        self._fixed: float | None = None
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._fixed if self._fixed is not None else self._source() + self._offset

    def set(self, epoch_s: float) -> None:
        with self._lock:
            self._fixed = float(epoch_s)

    def advance(self, seconds: float) -> None:
        with self._lock:
            if self._fixed is not None:
                self._fixed += seconds
            else:
                self._offset += seconds


class TablestoreEmulator(ThreadServed):
    """A Tablestore instance on 127.0.0.1 that the real `tablestore` SDK can talk to.

    `clock` (epoch seconds) drives cell timestamps, TTL and the write-timestamp window; request
    dates are checked against the wall clock, as the client signs with it. Set
    `tamper_response_signature` to answer with a wrong signature (the SDK must refuse it).

    Faults for the client's defences: `inject(operation, code)` answers an authenticated request with
    a service error (503 `OTSServerUnavailable`, 403 `OTSConditionCheckFail`, ...) and
    `drop_connections()` closes the socket without an answer; both may let `skip` matching requests
    through first, and with `applied=True` carry the request out before failing it (a write whose
    answer was lost). `faults_served` lists what was served (with the rows the request named),
    `faults_pending()` what still waits.
    """

    service = "tablestore"

    def __init__(
        self,
        access_key_id: str = "test-ak",
        access_key_secret: str = "test-secret",  # noqa: S107 - the emulator's test credential
        instance: str = "dwnotify",
        persist_path: str | Path | None = None,
        *,
        sts_token: str | None = None,
        clock: Callable[[], float] | None = None,
        latency_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.latency_s = latency_s
        self.credentials = Credentials(access_key_id, access_key_secret, instance, sts_token)
        self.clock = _Clock(clock or time.time)
        self.store = Store(self.clock)
        self.persist_path = Path(persist_path) if persist_path is not None else None
        self.tamper_response_signature = False
        self._counts: Counter[str] = Counter()
        self._faults: list[_Fault] = []
        self.faults_served: list[Served] = []
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        if self.persist_path is not None:
            persist.load(self.store, self.persist_path)

    # -- lifecycle --------------------------------------------------------------------------
    def make_server(self, address: tuple[str, int]) -> ThreadingHTTPServer:
        """The server that answers the SDK's requests."""
        return _Server(address, self)

    @property
    def endpoint(self) -> str:
        """`http://HOST:PORT`: what `OTSClient` takes as its end point."""
        return self.base_url

    # -- observation and time ---------------------------------------------------------------
    def request_count(self, api: str | None = None) -> int:
        """Requests received, all of them or those of one API name (e.g. "PutRow")."""
        with self._lock:
            return sum(self._counts.values()) if api is None else self._counts[api]

    def advance(self, seconds: float) -> None:
        """Move the data clock forward (cells age towards their TTL)."""
        self.clock.advance(seconds)

    def set_time(self, epoch_s: float) -> None:
        """Freeze the data clock at `epoch_s`."""
        self.clock.set(epoch_s)

    # -- faults -----------------------------------------------------------------------------
    def inject(
        self,
        operation: str | None,
        code: str,
        times: int = 1,
        *,
        message: str | None = None,
        status: int | None = None,
        skip: int = 0,
        applied: bool = False,
    ) -> None:
        """Answer `times` authenticated requests of `operation` (e.g. "UpdateRow"; None: any) with an error.

        The first `skip` matching requests go through. The status is the service's for the code
        (`errors.STATUS_BY_CODE`) unless given; the message is the service's wording unless given.
        With `applied`, the request is carried out first, so a write is made and still reported failed.
        """
        text = message if message is not None else MESSAGE_BY_CODE.get(code, f"Injected {code}.")
        with self._lock:
            self._faults.append(_Fault(operation, code, text, status, times, skip, applied))

    def drop_connections(
        self, times: int = 1, operation: str | None = None, *, skip: int = 0, applied: bool = False
    ) -> None:
        """Close the socket of `times` requests of `operation` (None: any) without answering.

        With `applied`, the request is carried out first (the client cannot tell whether it was).
        """
        with self._lock:
            self._faults.append(_Fault(operation, None, "", None, times, skip, applied))

    def faults_pending(self) -> int:
        """Injected failures not served yet (counting each of a fault's `times`)."""
        with self._lock:
            return sum(fault.remaining for fault in self._faults)

    def clear_faults(self) -> None:
        """Forget every injected failure not served yet."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, operation: str, body: bytes) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.operation not in (None, operation):
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                rows = api.rows_named(operation, body)
                self.faults_served.append(Served(operation, fault.code, fault.applied, rows))
                return fault
        return None

    # -- one request ------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        """Answer one HTTP request: status, headers and protobuf body; None closes the socket unanswered."""
        operation = path.rstrip("/").rsplit("/", 1)[-1]
        with self._lock:
            self._counts[operation] += 1
        if self.latency_s > 0:
            time.sleep(self.latency_s)  # a network between client and service: the answer comes later
        now = datetime.now(timezone.utc)
        key: bytes | None = None
        try:
            if method != "POST":
                raise ServiceError(
                    "OTSMethodNotAllowed", "OTSMethodNotAllowedOnly POST method for requests is supported."
                )
            key = authenticate(self.credentials, operation, headers, body, now)
            fault = self._take_fault(operation, body)
            if fault is None or fault.applied:
                status, answer = 200, api.handle(self.store, operation, body)
                if operation in api.MUTATING and self.persist_path is not None:
                    with self._save_lock:  # saves in order, so the last file written is the newest state
                        persist.save(self.store, self.persist_path)
            if fault is not None:
                if fault.code is None:
                    return None
                raise ServiceError(fault.code, fault.message, fault.status)
        except ServiceError as exc:
            status, answer = exc.status, pb.Error(code=exc.code, message=exc.message).SerializeToString()
            if exc.code == "OTSAuthFailed":
                key = None
        except Exception:
            log.exception("tablestore emulator failed on %s", operation)
            status = 500
            answer = pb.Error(
                code="OTSInternalServerError", message="Internal server error."
            ).SerializeToString()
        if key is not None and self.tamper_response_signature:
            key = b"not-the-secret"
        request_id = uuid.uuid4().hex
        out = response_headers(operation, answer, request_id, now, self.credentials.access_key_id, key)
        return status, out, answer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; do not wait for an ACK
    server: _Server
    timeout = 60

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        served = self.server.emulator.handle(self.command, self.path.split("?", 1)[0], headers, body)
        if served is None:  # a dropped connection: no answer at all
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, out, answer = served
        self.send_response(status)
        for name, value in out.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_POST = do_GET = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: TablestoreEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)
