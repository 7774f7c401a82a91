"""Connection-level protection for ``age-serve``: what uvicorn's own options do not bound.

uvicorn (0.54, h11) closes a keep-alive connection that stays idle after a response (``timeout_keep_alive``), but a
connection that never sends a request head, or sends it one byte a second, stays open forever, and nothing caps
how many sockets are open. :func:`guarded_h11` returns uvicorn's h11 protocol with both bounds added:

* a connection that has not sent a whole request head within ``head_timeout_s`` of opening (or of its last
  response) is closed;
* a connection beyond ``max_connections`` is closed as soon as it is accepted, so the process keeps file
  descriptors (and answers) for the ones it has;
* a request head (line and headers) longer than ``max_head_bytes`` is answered 431 and the connection closed,
  however it arrives: h11's own limit applies only to a head still incomplete when a read ends (a 400), so whether
  a 119 KB head was refused depended on how the kernel cut it into reads.

:class:`AcceptErrorFilter` keeps the event loop's "socket.accept() out of system resource" error, logged with a
traceback for every failed accept, to one line per ``interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from uvicorn.protocols.http.h11_impl import H11Protocol

from service.errors import problem_bytes

logger = logging.getLogger(__name__)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the bounds of :func:`guarded_h11` (class attributes set there)."""

    head_timeout_s: float = 10.0
    max_connections: int = 1024
    max_head_bytes: int = 32 * 1024
    _head_timer: asyncio.TimerHandle | None = None
    _head: bytearray | None = None
    _head_seen = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            _refusals.note(f"closed a connection: {self.max_connections} are open (MAX_CONNECTIONS)")
            transport.abort()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        waiting = self._between_requests()
        if self._head_timer is None and waiting:
            self._arm()
        if waiting and self._head_too_long(data):
            self._refuse_head()
            return
        super().data_received(data)
        if not self._between_requests():
            self._disarm()
            self._head, self._head_seen = None, 0

    def _head_too_long(self, data: bytes) -> bool:
        """Whether the head being received has passed ``max_head_bytes`` without ending (CRLF CRLF)."""
        if self._head is None:
            self._head = bytearray()
        self._head += data[: max(0, self.max_head_bytes - len(self._head))]
        self._head_seen += len(data)
        return self._head_seen > self.max_head_bytes and b"\r\n\r\n" not in self._head

    def _refuse_head(self) -> None:
        self._disarm()
        detail = f"the request line and headers are over {self.max_head_bytes} bytes (MAX_HEADER_BYTES)"
        body = problem_bytes(431, detail, "headers_too_large")
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/problem+json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body)
        )
        self.transport.write(head + body)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._between_requests() and not self.transport.is_closing():
            self.transport.close()


def guarded_h11(head_timeout_s: float, max_connections: int, max_head_bytes: int = 32 * 1024) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a request-head timeout, a head size limit and a cap on open connections."""
    bounds = {"head_timeout_s": head_timeout_s, "max_connections": max_connections, "max_head_bytes": max_head_bytes}
    return type("GuardedH11Protocol", (GuardedH11Protocol,), bounds)


class _RateLimitedNote:
    """Logs a warning at most once per ``interval_s``, with the count of the ones it held back."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._last = -float("inf")
        self._held = 0

    def note(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._held += 1
            return
        suffix = f" ({self._held} more since the last report)" if self._held else ""
        self._last, self._held = now, 0
        logger.warning("%s%s", message, suffix)


_refusals = _RateLimitedNote()


class AcceptErrorFilter(logging.Filter):
    """Let one "socket.accept() out of system resource" record through per ``interval_s``, without traceback."""

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last = -float("inf")
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("socket.accept() out of system resource"):
            return True
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._held += 1
            return False
        held, self._last, self._held = self._held, now, 0
        record.msg = f"accept() failed: out of file descriptors or memory ({held} more held back); see MAX_CONNECTIONS"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


def raise_open_file_limit(wanted: int) -> int:
    """Raise this process's soft open-file limit towards ``wanted`` (within the hard limit); return the new one."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return int(soft)
