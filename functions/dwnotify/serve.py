"""`dwnotify serve`: the HTTP entry on a local port and, with `--every`, ticks in the same process.

For teams that run the notifier on a VM or in a container instead of FC. Requests are answered by
`http_entry.handle` (threaded: a slow request never holds up Slack's next one); ticks run one at a
time on their own thread, each on its own slot of the schedule. SIGTERM or SIGINT stops taking
requests, lets the tick in progress finish and returns 0 (a tick is bounded by its slot and the
delivery timeout, well inside the 10 s a container runtime waits for by default when slots are short).
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

from . import logs
from .http_entry import MAX_BODY_BYTES, HttpRequest, HttpResponse, handle
from .settings import Settings

if TYPE_CHECKING:
    from .acting import Actor

log = logging.getLogger("dwnotify.serve")

MIN_EVERY_S = 10
STOP_WAIT_S = 8.0  # how long a stop waits for clicks still being carried out (a runtime waits 10 s)
_DURATION = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def parse_every(text: str) -> float:
    """`--every`: a duration such as 30s, 1m or 1h30m (a bare number is seconds), at least 10s."""
    value = text.strip()
    match = _DURATION.fullmatch(value)
    if value.isdigit():
        seconds = int(value)
    elif match and value:
        seconds = sum(
            int(part) * unit for part, unit in zip(match.groups(), (3600, 60, 1), strict=True) if part
        )
    else:
        raise ValueError(f"not a duration such as 30s, 1m or 1h30m: {text!r}")
    if seconds < MIN_EVERY_S:
        raise ValueError(f"must be at least {MIN_EVERY_S}s (got {text!r})")
    return float(seconds)


def _request_handler(
    settings: Settings,
    clock: Callable[[], float],
    actor: Callable[[], Actor] | None,
    serial: threading.Lock,
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """Every method goes to the HTTP entry, which answers 404, 405, 401 or 200."""

        server_version = "dwnotify"
        sys_version = ""

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._write(HttpResponse(413, "too large\n"))
                return
            body = self.rfile.read(length) if length > 0 else b""
            request = HttpRequest(self.command, urlsplit(self.path).path, dict(self.headers.items()), body)
            try:
                with serial:
                    response = handle(request, settings, clock(), actor)
            except Exception as error:  # a bug answers 500 and is logged; the server goes on
                log.error("request failed: %s", logs.mask(f"{type(error).__name__}: {error}"))
                response = HttpResponse(500, "internal error\n")
            self._write(response)

        def _write(self, response: HttpResponse) -> None:
            payload = response.body.encode("utf-8")
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s %s", self.address_string(), logs.mask(format % args))

    return Handler


class Deferred:
    """Carries out claimed decisions on threads of their own, after Slack has its answer; `join`
    waits for those still running (a stop lets them finish, as it lets the tick)."""

    def __init__(self, serial: threading.Lock) -> None:
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._serial = serial  # the clicks' one store connection: taken by one request at a time

    def defer(self, work: Callable[[], object]) -> None:
        """Start `work` on its own thread."""
        thread = threading.Thread(target=self._run, args=(work,), name="dwnotify-act", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _run(self, work: Callable[[], object]) -> None:
        try:
            with self._serial:
                work()
        except Exception as error:  # logged; the decision's record says what was reached
            log.error("action failed: %s", logs.mask(f"{type(error).__name__}: {error}"))

    def join(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the deferred work still running."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class Ticker:
    """Runs `tick` now and then every `every` seconds, one at a time, until `stop` is set."""

    def __init__(self, tick: Callable[[float], None], every: float, stop: threading.Event) -> None:
        self._tick, self._every, self._stop = tick, every, stop
        self.ticks = 0
        self.thread = threading.Thread(target=self._loop, name="dwnotify-ticker", daemon=True)

    def _loop(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            slot_end = time.time() + self._every
            try:
                self._tick(slot_end)
            except Exception as error:  # one failed tick is logged; the next slot tries again
                log.error("tick failed: %s", logs.mask(f"{type(error).__name__}: {error}"))
            self.ticks += 1
            next_at = started + self.ticks * self._every
            self._stop.wait(max(0.0, next_at - time.monotonic()))


def run(
    settings: Settings,
    host: str,
    port: int,
    *,
    every: float | None = None,
    tick: Callable[[float], None] | None = None,
    stream: TextIO,
    stop: threading.Event | None = None,
    actor: Callable[[Callable[[str], None]], Actor] | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT (or `stop`); `tick(slot_end)` runs every `every` seconds. Exit 0.

    `actor(defer)` builds what takes verified clicks (`dwnotify.acting`), once; what it defers runs on
    a thread of its own after the answer is sent. Clicks share one store connection, so they are taken
    one at a time (they are rare; a tick has its own)."""
    stop = stop or threading.Event()
    serial = threading.Lock()
    deferred = Deferred(serial)
    built: list[Actor] = []

    def the_actor() -> Actor:
        if not built and actor is not None:
            built.append(actor(lambda key: deferred.defer(lambda: built[0].carry_out(key))))
        return built[0]

    answering = _request_handler(settings, time.time, the_actor if actor is not None else None, serial)
    server = ThreadingHTTPServer((host, port), answering)
    server.daemon_threads = True
    # Signals reach only the main thread; embedded elsewhere (a test, a host program) `stop` stops it.
    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS} if in_main else {}
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    ticker = Ticker(tick, every, stop) if tick is not None and every is not None else None
    try:
        serving.start()
        bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
        print(f"serving on http://{bound_host}:{bound_port}", file=stream, flush=True)
        if ticker is not None:
            ticker.thread.start()
        while not stop.wait(0.5):
            pass
        log.info("stopping: no new requests; the tick in progress finishes")
    finally:
        server.shutdown()
        server.server_close()
        if ticker is not None and ticker.thread.is_alive():
            ticker.thread.join()
        deferred.join(STOP_WAIT_S)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
