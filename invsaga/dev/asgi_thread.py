"""Serve an ASGI app with uvicorn on a background thread, for the tests and in-process tools.

The listening socket is bound before the thread starts, so the port is known at once and never raced
for; a failed start-up is raised from ``start()`` with its real cause.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from invsaga.api.limits import KEEP_ALIVE_SECONDS


class ThreadedAsgiServer:
    """One app on ``host:port`` (port 0 picks a free one); use as a context manager, sync or async."""

    def __init__(
        self,
        app: Any,
        *,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        grace_seconds: int = 5,
        before_serve: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.name = name
        self.host = host
        self.port = port
        self._grace = grace_seconds
        self._before_serve = before_serve
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        if self._thread is not None:
            raise RuntimeError(f"the {self.name} is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        # log_config=None: leave the host process's logging alone.
        config = uvicorn.Config(
            self.app,
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=self._grace,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
        server = self._server = uvicorn.Server(config)
        self._error = None

        def serve() -> None:
            try:
                if self._before_serve is not None:
                    self._before_serve()
                server.run(sockets=[sock])
            except BaseException as exc:  # uvicorn reports a failed start-up as SystemExit
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=serve, name=f"{self.name}-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                if isinstance(self._error, Exception):
                    raise self._error
                raise RuntimeError(f"the {self.name} at {self.url} did not start") from self._error
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(self._grace + 5)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> ThreadedAsgiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> ThreadedAsgiServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)
