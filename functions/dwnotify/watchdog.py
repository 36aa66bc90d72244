"""A total deadline for one network exchange, which per-operation timeouts do not give.

httpx and `requests` (inside aliyun-python-sdk-core) time each socket operation: a server that
answers one byte every 2 s never lets a 10 s read timeout fire, and keeps the caller for as long as it
likes. A `Watchdog` bounds the whole exchange instead:

    with Watchdog(seconds) as watchdog:      # arms a timer
        ...                                  # the library calls watch(sock) for each socket it uses
    watchdog.fired                           # True: whatever the library raised or returned, time ran out

When the time is up, the timer shuts the watched sockets down (both directions). The read blocked in
the library returns at once, the library raises its own network error, and the caller reports "no
answer within N s". The exchange stays in the caller's thread: nothing is abandoned, nothing runs on
after it. The timer is cancelled and joined when the block ends, so it never outlives the exchange
(an FC instance is frozen between invocations; no thread may be left running). The chat channels
and the DataWorks client (for the SDK's sockets) both use it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from contextvars import ContextVar, Token
from types import TracebackType

_ACTIVE: ContextVar[Watchdog | None] = ContextVar("dwnotify_watchdog", default=None)


class Watchdog:
    """Shuts the watched sockets down once `seconds` have passed since the block was entered."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._fired = False
        self._ends_at = float("inf")
        self._timer: threading.Timer | None = None
        self._token: Token[Watchdog | None] | None = None

    @staticmethod
    def current() -> Watchdog | None:
        """The watchdog of the exchange running in this thread, if any (for transport hooks)."""
        return _ACTIVE.get()

    @property
    def fired(self) -> bool:
        """Whether time ran out: the sockets were shut down, the answer (if any) is not to be trusted."""
        return self._fired

    def expired(self) -> bool:
        """Whether the deadline has passed (checked between chunks, for sockets the hooks never saw)."""
        return self._fired or time.monotonic() >= self._ends_at

    def watch(self, sock: socket.socket | None) -> None:
        """Shut `sock` down with the others when time runs out (at once if it already has)."""
        if sock is None:
            return
        with self._lock:
            if any(known is sock for known in self._sockets):
                return
            self._sockets.append(sock)
            fired = self._fired
        if fired:
            _shut_down(sock)

    def __enter__(self) -> Watchdog:
        self._ends_at = time.monotonic() + self.seconds
        self._timer = threading.Timer(self.seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join()  # a firing in progress finishes before the exchange is over
        with self._lock:
            self._sockets.clear()

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    """Shut the connection down through a duplicate of its descriptor.

    The socket object itself belongs to the thread blocked in it (an `SSLSocket`'s own `shutdown`
    would change its state under that thread); shutting down a duplicate acts on the connection only.
    A closed socket (`fileno()` -1) is left alone, so no descriptor reused since is touched.
    """
    try:
        descriptor = sock.fileno()
        if descriptor < 0:
            return
        duplicate = socket.dup(descriptor)
    except OSError:
        return
    try:
        connection = socket.socket(fileno=duplicate)
    except OSError:
        os.close(duplicate)
        return
    with connection, contextlib.suppress(OSError):  # already shut down or never connected
        connection.shutdown(socket.SHUT_RDWR)
