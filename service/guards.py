"""ASGI middleware that refuses ambiguous requests and bounds how long a request body may take.

* A request with both ``Content-Length`` and ``Transfer-Encoding`` is answered 400 before the app sees it: a proxy
  in front may frame the body by the other header, and the difference is how requests are smuggled (RFC 9112
  section 6.3 lets a server reject such a message).
* A query parameter given twice is refused (422 naming it): taking the first or the last would be a guess, and a
  proxy and the service could guess differently.
* The whole body must arrive within ``body_timeout_s`` of the request head; a client sending one byte a second
  gets 408 (``BodyTimeoutError``) and its connection closed, so slow uploads cannot hold workers or shutdown.
* More than ``max_header_count`` header fields, or a request line and headers over ``max_header_bytes``, is
  answered 431. (Under ``age-serve`` a head over ``MAX_HEADER_BYTES`` is already answered 431 by
  ``service.connections`` while it arrives; the size check here serves any other ASGI server.)
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PROBLEM_MEDIA_TYPE, BodyTimeoutError, problem_bytes


class RequestGuardMiddleware:
    """Refuse oversized heads (431), ``Content-Length`` with ``Transfer-Encoding`` (400); bound the body (408)."""

    def __init__(
        self, app: ASGIApp, body_timeout_s: float, max_header_count: int = 100, max_header_bytes: int = 32 * 1024
    ) -> None:
        self.app = app
        self.body_timeout_s = body_timeout_s
        self.max_header_count = max_header_count
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = self._head_too_large(scope)
        if too_large:
            await _refuse(send, 431, too_large, "headers_too_large")
            return
        names = {name.lower() for name, _ in scope["headers"]}
        if b"content-length" in names and b"transfer-encoding" in names:
            await _refuse(send, 400, "a request may not carry both Content-Length and Transfer-Encoding", "bad_request")
            return
        repeated = _repeated_query_parameter(scope.get("query_string", b""))
        if repeated is not None:
            detail = f"query parameter '{repeated}' is given more than once; give it once"
            await _refuse(send, 422, detail, "invalid_parameter")
            return
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        body_done = False

        async def bounded_receive() -> Message:
            nonlocal body_done
            if body_done:
                # After the body only a disconnect can come, which a response may wait for as long as it likes.
                return await receive()
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.0))
            except TimeoutError:
                raise BodyTimeoutError(
                    f"the request body did not arrive within {self.body_timeout_s:g} s (BODY_TIMEOUT_S)"
                ) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, bounded_receive, send)

    def _head_too_large(self, scope: Scope) -> str | None:
        headers = scope["headers"]
        if len(headers) > self.max_header_count:
            return f"the request has {len(headers)} header fields; at most {self.max_header_count} are read"
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        size += sum(len(name) + len(value) + 4 for name, value in headers)
        if size > self.max_header_bytes:
            return f"the request line and headers are {size} bytes; at most {self.max_header_bytes} are read"
        return None


def _repeated_query_parameter(query: bytes) -> str | None:
    names = [name for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)]
    return next((name for name in names if names.count(name) > 1), None)


async def _refuse(send: Send, status: int, detail: str, code: str) -> None:
    body = problem_bytes(status, detail, code)
    headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
