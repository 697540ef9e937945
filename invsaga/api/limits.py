"""Request body limits, enforced before a handler reads a byte too many.

A declared ``Content-Length`` over the limit is refused at once; a streamed (chunked) body is counted as
it arrives and refused when it passes the limit. Either way the answer is a 413 problem, never a 500.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from invsaga.api.errors import PayloadTooLarge
from invsaga.api.problems import problem_response

#: JSON bodies are small: a checkout of the maximum 100 lines is about 10 KiB.
JSON_BODY_LIMIT = 1024 * 1024
#: CSV imports stream to a temporary file, so they may be large.
IMPORT_BODY_LIMIT = 1024 * 1024 * 1024

_LIMITS = {"/v1/stock/import": IMPORT_BODY_LIMIT, "/v1/products/import": IMPORT_BODY_LIMIT}

#: How long the server keeps an idle connection open: longer than a client pool keeps one for reuse
#: (httpx 5 s, most load balancers 60 s). At uvicorn's default of 5 s the server could close a kept-alive
#: connection just as a client sent its next request on it, which the client sees as "server
#: disconnected without sending a response" (seen twice in CI under load).
KEEP_ALIVE_SECONDS = 75


def body_limit_for(path: str) -> int:
    return _LIMITS.get(path, JSON_BODY_LIMIT)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int] = body_limit_for) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = problem_response(
                PayloadTooLarge(f"the body of {declared} bytes exceeds {limit} bytes", limit=limit),
                scope["path"],
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException passes through FastAPI's body parsing untouched, and the problem
                    # handlers answer it as `payload-too-large`.
                    raise HTTPException(413, f"the body exceeds {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)
