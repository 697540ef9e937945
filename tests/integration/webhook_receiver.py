"""A webhook receiver on loopback for the event tests: records every delivery, and can answer 500 or
answer slowly on demand. It runs on its own thread (uvicorn), so a relay in this process or in a
subprocess delivers to it the way it would to a real consumer."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from invsaga.dev.asgi_thread import ThreadedAsgiServer
from invsaga.events.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, verify


@dataclass(frozen=True)
class Delivery:
    event: dict[str, Any]
    body: bytes
    signature: str
    event_id_header: str

    def signed_by(self, secret: str) -> bool:
        return verify(secret, self.signature, self.body)


@dataclass
class WebhookReceiver:
    #: Answer 500 to this many requests before accepting any.
    fail_next: int = 0
    #: Seconds to wait before answering each request.
    delay: float = 0.0
    #: Every request as it arrived, before its answer.
    arrived: list[Delivery] = field(default_factory=list)
    accepted: list[Delivery] = field(default_factory=list)
    refused: list[Delivery] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadedAsgiServer | None = None

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        delivery = Delivery(
            json.loads(body),
            body,
            request.headers.get(SIGNATURE_HEADER, ""),
            request.headers.get(EVENT_ID_HEADER, ""),
        )
        with self._lock:
            self.arrived.append(delivery)
        if self.delay:
            await asyncio.sleep(self.delay)
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                self.refused.append(delivery)
                return Response(status_code=500)
            self.accepted.append(delivery)
        return Response(status_code=204)

    def __enter__(self) -> WebhookReceiver:
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        self._server = ThreadedAsgiServer(app, name="webhook receiver", grace_seconds=1)
        self._server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.__exit__(*exc)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"{self._server.url}/hook"

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self.arrived) - len(self.accepted) - len(self.refused)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [d.event for d in self.accepted]

    async def wait_for(self, predicate: Any, *, within: float = 30.0) -> list[dict[str, Any]]:
        """Wait until ``predicate(events accepted so far)`` holds; return those events."""
        deadline = time.monotonic() + within
        while True:
            events = self.events()
            if predicate(events):
                return events
            assert time.monotonic() < deadline, f"{len(events)} events received, not what was awaited"
            await asyncio.sleep(0.05)


def unique_in_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At-least-once deliveries deduped by id, as a consumer would: the first arrival of each."""
    seen: set[str] = set()
    kept = []
    for event in events:
        if event["id"] not in seen:
            seen.add(event["id"])
            kept.append(event)
    return kept
