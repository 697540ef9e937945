"""What a worker is doing, for the operator: a tiny HTTP health endpoint and an in-flight activity count.

``GET /healthz`` answers 200 only while the worker is polling its task queue, and 503 while it starts,
drains after SIGTERM, or has stopped, so a load balancer or orchestrator stops counting on it as soon
as it begins to drain. ``GET /livez`` answers 200 whenever the process can answer at all: use it for
liveness, so that a slow drain is never mistaken for a hung process. Both return the same JSON body.

``python -m workers.health`` probes the endpoint of this container and exits 0 only on a 200: it is
the Docker healthcheck of the worker image.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from enum import StrEnum
from http import HTTPStatus
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

log = logging.getLogger("invsaga.worker")

_MAX_REQUEST_BYTES = 8192
_READ_TIMEOUT_SECONDS = 5.0


class WorkerState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass
class WorkerHealth:
    """The live state the endpoint reports; the worker moves it along, the tracker counts activities."""

    task_queue: str
    namespace: str
    deployment_name: str = ""
    build_id: str = ""
    state: WorkerState = WorkerState.STARTING
    in_flight: Counter[str] = field(default_factory=Counter)
    activities_finished: int = 0
    started_at: float = field(default_factory=time.monotonic)

    @property
    def ready(self) -> bool:
        return self.state is WorkerState.RUNNING

    @property
    def in_flight_activities(self) -> int:
        return sum(self.in_flight.values())

    def activity_started(self, activity_type: str) -> None:
        self.in_flight[activity_type] += 1

    def activity_finished(self, activity_type: str) -> None:
        self.in_flight[activity_type] -= 1
        if self.in_flight[activity_type] <= 0:
            del self.in_flight[activity_type]
        self.activities_finished += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "task_queue": self.task_queue,
            "namespace": self.namespace,
            "deployment_name": self.deployment_name or None,
            "build_id": self.build_id or None,
            "in_flight_activities": self.in_flight_activities,
            "in_flight_by_type": dict(sorted(self.in_flight.items())),
            "activities_finished": self.activities_finished,
            "uptime_seconds": round(time.monotonic() - self.started_at, 1),
        }


class ActivityTracker(Interceptor):
    """Counts the activities this worker is executing, so a drain can say what it is waiting for."""

    def __init__(self, health: WorkerHealth) -> None:
        self.health = health

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _TrackedActivity(next, self.health)


class _TrackedActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, health: WorkerHealth) -> None:
        super().__init__(next)
        self._health = health

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        activity_type = activity.info().activity_type
        self._health.activity_started(activity_type)
        try:
            return await super().execute_activity(input)
        finally:
            self._health.activity_finished(activity_type)


# --- the HTTP endpoint ----------------------------------------------------------------------------


def _response(status: HTTPStatus, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + payload


def _answer(health: WorkerHealth, method: str, path: str) -> bytes:
    if method != "GET":
        return _response(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "only GET is served"})
    route = path.split("?", 1)[0]
    if route == "/livez":
        return _response(HTTPStatus.OK, health.snapshot())
    if route in ("/healthz", "/readyz", "/"):
        status = HTTPStatus.OK if health.ready else HTTPStatus.SERVICE_UNAVAILABLE
        return _response(status, health.snapshot())
    return _response(HTTPStatus.NOT_FOUND, {"error": f"no route {route}; try /healthz or /livez"})


async def _handle(health: WorkerHealth, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        async with asyncio.timeout(_READ_TIMEOUT_SECONDS):
            head = await reader.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            writer.write(_response(HTTPStatus.BAD_REQUEST, {"error": "malformed request line"}))
        else:
            writer.write(_answer(health, parts[0], parts[1]))
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


@asynccontextmanager
async def serve_health(
    health: WorkerHealth, port: int, host: str = "0.0.0.0", *, fall_back: bool = False
) -> AsyncIterator[int]:
    """Serve the endpoint while the block runs; yields the bound port (useful with ``port=0``).

    With ``fall_back``, a port that is taken (a second worker on one machine) is replaced by a free
    one, logged, rather than ending the worker: a container has the port to itself, so there the
    configured one is always what its healthcheck probes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle(health, reader, writer)

    try:
        server = await asyncio.start_server(handle, host, port, limit=_MAX_REQUEST_BYTES)
    except OSError as exc:
        if not fall_back or exc.errno != errno.EADDRINUSE:
            raise
        server = await asyncio.start_server(handle, host, 0, limit=_MAX_REQUEST_BYTES)
        log.warning(
            "health port %d is taken (another worker on this machine?); serving /healthz on %d instead; "
            "set INVSAGA_WORKER_HEALTH_PORT to a free port to pin it",
            port,
            server.sockets[0].getsockname()[1],
        )
    bound = server.sockets[0].getsockname()[1]
    try:
        yield int(bound)
    finally:
        server.close()
        await server.wait_closed()


# --- the probe the container healthcheck runs -----------------------------------------------------


def probe(port: int, *, path: str = "/healthz", host: str = "127.0.0.1", timeout: float = 3.0) -> int:
    """The HTTP status of the endpoint, or 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0


def main() -> int:
    from invsaga.settings import load_settings

    port = load_settings().worker_health_port
    if not port:
        print("INVSAGA_WORKER_HEALTH_PORT is not set: the worker serves no health endpoint", file=sys.stderr)
        return 2
    status = probe(port)
    print(f"worker health on port {port}: {status or 'no answer'}")
    return 0 if status == HTTPStatus.OK else 1


if __name__ == "__main__":
    sys.exit(main())
