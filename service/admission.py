"""Admission control on memory: global budgets of in-flight request body bytes and of pixels being decoded.

Each request's body is charged to ``MAX_INFLIGHT_BYTES`` before it is read (its declared ``Content-Length`` at
once; a chunked body chunk by chunk as it arrives) and given back when its answer is sent. A photo's full-size
pixel count, read from its header, is charged to ``MAX_INFLIGHT_PIXELS`` before it is decoded and given back
once its faces are found. A request that would pass either budget is answered 503 with ``Retry-After``
(``OverloadedError``) without reading more: what the service holds is bounded by the budgets, whatever the mix
of clients, instead of by the number of clients.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import OverloadedError


class MemoryBudget:
    """A thread-safe count of units in flight (bytes, pixels) that refuses to pass ``limit``."""

    def __init__(self, limit: int, unit: str, setting: str) -> None:
        self.limit = limit
        self.unit = unit
        self.setting = setting
        self.used = 0
        self.peak = 0
        self.charges = 0
        """How many times something was taken: a clock of activity (``service.memory`` trims when it stops)."""
        self._lock = threading.Lock()

    def take(self, amount: int) -> None:
        """Charge ``amount``, or raise ``OverloadedError`` (nothing charged) if that would pass the limit."""
        with self._lock:
            if self.used + amount > self.limit:
                raise OverloadedError(
                    f"the service holds {self.used} of its {self.limit} {self.unit} in flight ({self.setting}) and "
                    f"this needs {amount} more; retry in a few seconds"
                )
            self.used += amount
            self.charges += 1
            self.peak = max(self.peak, self.used)

    def give(self, amount: int) -> None:
        """Return ``amount`` taken before."""
        with self._lock:
            self.used -= amount

    @contextlib.contextmanager
    def holding(self, amount: int) -> Iterator[None]:
        """Hold ``amount`` for the ``with`` block."""
        self.take(amount)
        try:
            yield
        finally:
            self.give(amount)


class AdmissionMiddleware:
    """Charge every request body to ``budget`` before it is read; raise ``OverloadedError`` past the budget."""

    def __init__(self, app: ASGIApp, budget: MemoryBudget) -> None:
        self.app = app
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        held = 0

        async def charged_receive() -> Message:
            nonlocal held
            if declared and not held:
                # Taken at the app's first read, before a byte of the body is received: a refused upload is never
                # read, and the refusal is raised inside the app, where the error handlers answer it.
                self.budget.take(declared)
                held = declared
            message = await receive()
            if declared is None and message["type"] == "http.request":
                size = len(message.get("body", b""))
                self.budget.take(size)
                held += size
            return message

        try:
            await self.app(scope, charged_receive, send)
        finally:
            self.budget.give(held)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() else None
    return None
