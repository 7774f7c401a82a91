"""How a request ends when nobody waits for its answer: its client went away, or the server is stopping.

uvicorn does not cancel a request whose client has closed the connection: the decode and the detection would run
to the end for nobody. :class:`RequestLifecycleMiddleware` listens, once the body has been read, for the client's
disconnect and cancels the request's task; the pipeline passes the cancellation on to its decode process, which is
killed (``service.decoding``). The request is counted as 499 (nginx's "client closed request").

On SIGTERM uvicorn waits ``SHUTDOWN_TIMEOUT_S`` for requests in flight, then cancels them, and an ASGI app that
lets the ``CancelledError`` out is logged with a traceback and answered 500. Here a request cut that way answers
503 with ``Retry-After`` and code ``shutting_down`` (another replica can take it), logged on one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import problem_bytes

logger = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499
SHUTDOWN_RETRY_AFTER_S = 5


class RequestLifecycleMiddleware:
    """Cancel a request whose client left (499); answer 503 ``shutting_down`` to one cut by shutdown."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        state = {"started": False, "client_left": False}
        watcher: asyncio.Task[Message] | None = None

        async def watch() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not state["started"]:
                state["client_left"] = True
                task.cancel()
            return message

        async def watched_receive() -> Message:
            nonlocal watcher
            if watcher is not None:
                # After the body only the disconnect can come: the watcher is already waiting for it.
                return await asyncio.shield(watcher)
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                watcher = asyncio.create_task(watch(), name="watch-disconnect")
            return message

        async def tracked_send(message: Message) -> None:
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, watched_receive, tracked_send)
        except asyncio.CancelledError:
            if state["started"]:
                raise
            task.uncancel()
            await self._answer_cut(scope, send, client_left=state["client_left"])
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    @staticmethod
    async def _answer_cut(scope: Scope, send: Send, client_left: bool) -> None:
        where = f"{scope['method']} {scope['path']}"
        if client_left:
            logger.info("%s: the client went away; its work was stopped", where)
            # Nobody reads this (uvicorn drops it), but the metrics middleware outside records the 499.
            await send({"type": "http.response.start", "status": CLIENT_CLOSED_REQUEST, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        logger.info("%s: cut by shutdown; answered 503", where)
        detail = "the server is shutting down; retry (another replica, or this one once restarted)"
        body = problem_bytes(503, detail, "shutting_down")
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(SHUTDOWN_RETRY_AFTER_S).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
