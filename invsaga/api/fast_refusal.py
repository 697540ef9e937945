"""The sold-out answer to ``POST /v1/checkouts`` without FastAPI's per-request machinery.

In a flash sale nearly every buyer is refused, and a refusal through the route costs FastAPI's
dependency resolution, its request objects and a database round trip of its own: about 2 ms of API CPU,
several times a no-op request. This ASGI layer, in front of the app, answers the refusals the route's
fast path would give, with the same checks made by the same code:

- the same auth (``auth.SERVICE.caller``: FastAPI's ``HTTPBearer`` parsing, the same keys and scope);
- the same ``Idempotency-Key`` rule and the same body model, validated by the route's own FastAPI fields;
- the same hint (``SoldOutScreen.hinted_refusal``) and the same "nothing happened for this request" read
  of the shared core database, batched with the other buyers' reads (``fresh_requests``);
- the same refusal body (``problem_answer`` of ``refusal_for``), unrecorded, as the route answers it.

Anything it would not refuse, or cannot judge as the route would (a missing or bad key, a bad header or
body, another content type, a streamed body, a database error), goes on to the app unchanged with the
body it read, so every other answer, error or not, is the route's own. The OpenAPI document is the
route's; this layer adds nothing to it.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from invsaga.api.auth import SERVICE
from invsaga.api.checkouts import refusal_for
from invsaga.api.deps import ApiDeps
from invsaga.api.idempotency import as_response, problem_answer
from invsaga.api.models import CheckoutIn
from invsaga.domain.errors import InventoryError

PATH = "/v1/checkouts"
#: A checkout of the maximum 100 lines is about 10 KiB; a larger body takes the ordinary route.
MAX_BODY = 64 * 1024
_KEY_HEADER = "Idempotency-Key"


class FastRefusalMiddleware:
    def __init__(self, app: ASGIApp, routes: list[Any]) -> None:
        self.app = app
        self._routes = routes
        self._route: APIRoute | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        deps: ApiDeps | None = None
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == PATH:
            deps = scope["app"].state.deps
        screen = deps.sold_out if deps is not None else None
        # Nothing is sold out (the usual case): not a byte read, not a header parsed.
        if deps is None or screen is None or not screen.hint.any_sold_out() or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length", "")
        if not (length.isdigit() and int(length) <= MAX_BODY and _is_json(headers.get("content-type"))):
            await self.app(scope, receive, send)
            return
        read: list[Message] = []
        body = b""
        while True:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if read[-1]["type"] == "http.request":
            answer = await self._refusal(scope, headers, body, deps)
            if answer is not None:
                # The route's template, so the metrics count this answer under the route.
                scope["route"] = self._checkout_route()
                await answer(scope, receive, send)
                return

        async def replay() -> Message:
            return read.pop(0) if read else await receive()

        await self.app(scope, replay, send)

    async def _refusal(self, scope: Scope, headers: Headers, body: bytes, deps: ApiDeps) -> Response | None:
        """The route's fast-path refusal of this request, or None where the route must answer."""
        screen = deps.sold_out
        assert screen is not None
        try:
            principal = await SERVICE.caller(HTTPConnection(scope))
        except InventoryError:
            return None
        route = self._checkout_route()
        key = headers.get(_KEY_HEADER)
        if key is None or not _valid_header(route, _KEY_HEADER, key):
            return None
        try:
            checkout_in = _valid(route, json.loads(body))
        except (ValueError, RecursionError):  # not JSON, or nested too deep to decode
            return None
        if checkout_in is None:
            return None
        checkout = checkout_in.to_domain()
        sold_out = screen.hinted_refusal(checkout)
        if sold_out is None:
            return None
        try:
            unused = await deps.fresh.is_unused(principal.key_id, key, order_id=checkout.order_id)
        except Exception:  # the core database failed: the route's own read answers, or fails, as ever
            return None
        if not unused:
            return None
        return as_response(problem_answer(refusal_for(sold_out), scope["path"]), replayed=False)

    def _checkout_route(self) -> APIRoute:
        if self._route is None:
            self._route = next(
                route
                for route in self._routes
                if isinstance(route, APIRoute) and route.path == PATH and "POST" in (route.methods or ())
            )
        return self._route


def _is_json(content_type: str | None) -> bool:
    """``application/json``, with or without parameters: what FastAPI parses as JSON for sure."""
    return content_type is not None and content_type.partition(";")[0].strip().lower() == "application/json"


def _valid_header(route: APIRoute, name: str, value: str) -> bool:
    """Whether the route's own header field accepts ``value``."""
    field = next(f for f in route.dependant.header_params if f.alias == name)
    _, errors = field.validate(value, {}, loc=("header", name))
    return not errors


def _valid(route: APIRoute, decoded: Any) -> CheckoutIn | None:
    """The body as the route's own body field validates it, else None."""
    assert route.body_field is not None
    value, errors = route.body_field.validate(decoded, {}, loc=("body",))
    return value if not errors and isinstance(value, CheckoutIn) else None
