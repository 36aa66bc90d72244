"""Shared plumbing for the emulators: a clock tests can drive, and a loopback HTTP server.

Each emulator is a plain object whose `handle(Request) -> Response | None` holds the service logic;
`Emulator` serves it from a `ThreadingHTTPServer` in a daemon thread. Returning `None` closes the
socket without an answer (a network error for the client). A `Response` with `drip_s` is written one
byte per `drip_s` seconds (its body, or with `drip_headers` the whole answer from the status line on):
a slow-drip server that never lets a per-read timeout fire. Paths under `/_emulator` are a small
control API for out-of-process use (a subprocess test can read what arrived and move the clock):

    GET  /_emulator                  snapshot(): clock and what the service recorded
    POST /_emulator/clock            {"set": epoch_s} or {"advance": seconds}
    POST /_emulator/inject           keyword arguments of the service's inject()
    POST /_emulator/drop             {"times": n}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger("emulators")

CONTROL_PREFIX = "/_emulator"
_E = TypeVar("_E", bound="ThreadServed")


class Clock:
    """Epoch-seconds clock that follows a source callable until it is set or advanced by hand."""

    def __init__(self, source: Callable[[], float] | None = None) -> None:
        self._source = source or time.time
        self._manual: float | None = None
        self._lock = threading.Lock()

    def now(self) -> float:
        """Current time in epoch seconds."""
        with self._lock:
            return self._manual if self._manual is not None else self._source()

    @property
    def manual(self) -> bool:
        """True once the clock was set or advanced by hand."""
        return self._manual is not None

    def set(self, epoch_s: float) -> None:
        """Freeze the clock at `epoch_s`; it moves only by set() and advance() from now on."""
        with self._lock:
            self._manual = float(epoch_s)

    def advance(self, seconds: float) -> None:
        """Move the clock forward (switching it to manual time)."""
        with self._lock:
            base = self._manual if self._manual is not None else self._source()
            self._manual = base + seconds


@dataclass(frozen=True)
class Request:
    """One HTTP request as the emulator sees it."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: Message
    body: bytes = b""

    @property
    def args(self) -> dict[str, str]:
        """Query parameters as a dict (the last of repeated names wins)."""
        return dict(self.query)


@dataclass
class Response:
    """What the emulator answers."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drip_s: float = 0.0  # > 0: one byte per drip_s seconds
    drip_headers: bool = False  # drip the status line and headers too, not only the body

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
        """A JSON response (UTF-8, non-ASCII kept as is, as Chinese services answer)."""
        body = json.dumps(obj, ensure_ascii=False).encode()
        return cls(status, body, {"Content-Type": "application/json;charset=utf-8", **(headers or {})})

    @classmethod
    def text(cls, status: int, text: str, headers: dict[str, str] | None = None) -> Response:
        """A plain-text response."""
        return cls(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **(headers or {})})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle + delayed ACK add ~40 ms a call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        url = urlsplit(self.path)
        request = Request(
            self.command, url.path, parse_qsl(url.query, keep_blank_values=True), self.headers, body
        )
        try:
            response = self.server.emulator.dispatch(request)
        except Exception:
            log.exception("emulator %s failed on %s %s", self.server.emulator.service, self.command, url.path)
            response = Response.text(500, "emulator error")
        if response is None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if response.drip_s > 0:
            self._drip(response)
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def _drip(self, response: Response) -> None:
        """Write the answer one byte at a time, until it is out or the client hangs up."""
        self.close_connection = True
        lines = [f"{self.protocol_version} {response.status} {self.responses.get(response.status, ('',))[0]}"]
        headers = {**response.headers, "Content-Length": str(len(response.body)), "Connection": "close"}
        lines += [f"{name}: {value}" for name, value in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        slow = head + response.body if response.drip_headers else response.body
        try:
            if not response.drip_headers:
                self.wfile.write(head)
                self.wfile.flush()
            for index in range(len(slow)):
                time.sleep(response.drip_s)
                self.wfile.write(slow[index : index + 1])
                self.wfile.flush()
        except OSError:  # the client gave up: what a drip test expects
            self.server.emulator.on_hang_up()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.emulator.verbose:
            sys.stderr.write(f"[{self.server.emulator.service}] {format % args}\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)


class ThreadServed:
    """An HTTP server in a daemon thread on loopback: start() gives its URL, stop() frees the port."""

    service: ClassVar[str] = "emulator"

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def make_server(self, address: tuple[str, int]) -> ThreadingHTTPServer:
        """The server that answers for this emulator."""
        raise NotImplementedError

    def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Serve in a daemon thread; return the base URL `http://HOST:PORT`."""
        if self._server is None:
            self._server = self.make_server((host, port))
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},  # stop() waits up to one poll interval
                name=f"{self.service}-emulator",
                daemon=True,
            )
            self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving and free the port."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        """`http://HOST:PORT` of the running server."""
        if self._server is None:
            raise RuntimeError(f"{self.service} emulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self: _E) -> _E:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Emulator(ThreadServed):
    """Base of every HTTP/JSON emulator: a drivable clock, dropped connections, slow answers.

    `latency_s` (`response_delay_s`, settable at any time) delays every service request's answer, as a
    network between client and service would; the control API under `/_emulator` is never delayed.
    """

    def __init__(
        self, clock: Callable[[], float] | None = None, *, verbose: bool = False, latency_s: float = 0.0
    ) -> None:
        super().__init__()
        self.clock = Clock(clock)
        self.verbose = verbose
        self._lock = threading.RLock()
        self._drops = 0
        # Every service request is answered this much later (a network round trip); 0: at once.
        self.response_delay_s = latency_s
        self.hang_ups = 0  # dripping answers the client gave up on

    def make_server(self, address: tuple[str, int]) -> ThreadingHTTPServer:
        """The server that routes every request to `dispatch`."""
        return _Server(address, self)

    # -- time and faults ---------------------------------------------------------------------
    def now(self) -> float:
        """The emulator's current time in epoch seconds."""
        return self.clock.now()

    def set_time(self, epoch_s: float) -> None:
        """Switch to a manual clock showing `epoch_s`."""
        self.clock.set(epoch_s)

    def advance(self, seconds: float) -> None:
        """Move the (now manual) clock forward by `seconds`."""
        self.clock.advance(seconds)

    def drop_connections(self, times: int = 1) -> None:
        """Close the next `times` connections without answering (the client sees a network error)."""
        with self._lock:
            self._drops += times

    # -- request handling --------------------------------------------------------------------
    def dispatch(self, request: Request) -> Response | None:
        """Route one request: control API, pending drops, then the service."""
        if request.path == CONTROL_PREFIX or request.path.startswith(CONTROL_PREFIX + "/"):
            return self._control(request)
        with self._lock:
            if self._drops > 0:
                self._drops -= 1
                self.on_drop(request)
                return None
        if self.response_delay_s > 0:
            time.sleep(self.response_delay_s)  # a slow service: answers arrive this much later
        return self.handle(request)

    def handle(self, request: Request) -> Response | None:
        """Answer one service request; subclasses implement the protocol."""
        raise NotImplementedError

    def on_drop(self, request: Request) -> None:
        """Hook: a request was dropped (subclasses may record it)."""

    def on_hang_up(self) -> None:
        """A client closed the connection while an answer was still dripping out."""
        with self._lock:
            self.hang_ups += 1

    def snapshot(self) -> dict[str, Any]:
        """JSON-able view of the emulator's records, served at GET /_emulator."""
        return {"service": self.service, "now": self.now()}

    def _control(self, request: Request) -> Response:
        action = request.path[len(CONTROL_PREFIX) :].strip("/")
        if request.method == "GET" and action == "":
            return Response.json(200, self.snapshot())
        if request.method != "POST":
            return Response.json(405, {"error": "use GET /_emulator or POST /_emulator/<action>"})
        try:
            args = json.loads(request.body or b"{}")
            if action == "clock":
                if "set" in args:
                    self.set_time(float(args["set"]))
                else:
                    self.advance(float(args["advance"]))
            elif action == "inject" and hasattr(self, "inject"):
                self.inject(**args)
            elif action == "drop":
                self.drop_connections(int(args.get("times", 1)))
            else:
                return Response.json(404, {"error": f"unknown control action {action!r}"})
        except (ValueError, TypeError, KeyError) as exc:
            return Response.json(400, {"error": str(exc)})
        return Response.json(200, {"ok": True, "now": self.now()})


def cli_parser(service: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every emulator command shares."""
    parser = argparse.ArgumentParser(prog=f"python -m emulators {service}", description=description)
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request on stderr")
    return parser


def serve(emulator: ThreadServed, host: str, port: int) -> int:
    """Start, print the base URL as the first stdout line, serve until SIGTERM/SIGINT."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(emulator.start(port=port, host=host), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


def split_pairs(items: Sequence[str], option: str) -> list[tuple[str, str | None]]:
    """Parse repeated `NAME[=VALUE]` command-line values."""
    pairs: list[tuple[str, str | None]] = []
    for item in items:
        name, sep, value = item.partition("=")
        if not name:
            raise SystemExit(f"{option}: expected NAME[=VALUE], got {item!r}")
        pairs.append((name, value if sep else None))
    return pairs
