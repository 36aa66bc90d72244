"""The emulator's HTTP side: a loopback server that authenticates, dispatches and signs answers."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import tablestore.protobuf.table_store_pb2 as pb

from emulators._base import ThreadServed
from emulators.tablestore import api, persist
from emulators.tablestore.auth import Credentials, authenticate, response_headers
from emulators.tablestore.errors import ServiceError
from emulators.tablestore.store import Store

log = logging.getLogger("emulators.tablestore")


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
    ) -> None:
        super().__init__()
        self.credentials = Credentials(access_key_id, access_key_secret, instance, sts_token)
        self.clock = _Clock(clock or time.time)
        self.store = Store(self.clock)
        self.persist_path = Path(persist_path) if persist_path is not None else None
        self.tamper_response_signature = False
        self._counts: Counter[str] = Counter()
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

    # -- one request ------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one HTTP request: status, headers and protobuf body."""
        operation = path.rstrip("/").rsplit("/", 1)[-1]
        with self._lock:
            self._counts[operation] += 1
        now = datetime.now(timezone.utc)
        key: bytes | None = None
        try:
            if method != "POST":
                raise ServiceError(
                    "OTSMethodNotAllowed", "OTSMethodNotAllowedOnly POST method for requests is supported."
                )
            key = authenticate(self.credentials, operation, headers, body, now)
            status, answer = 200, api.handle(self.store, operation, body)
            if operation in api.MUTATING and self.persist_path is not None:
                with self._save_lock:  # saves in order, so the last file written is the newest state
                    persist.save(self.store, self.persist_path)
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
        status, out, answer = self.server.emulator.handle(
            self.command, self.path.split("?", 1)[0], headers, body
        )
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
