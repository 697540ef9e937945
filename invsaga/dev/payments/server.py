"""Run the sandbox provider with uvicorn on a background thread, for the tests and the benchmarks.

The database is checked before serving, so a bad DSN fails ``start()`` with the real reason.
"""

from __future__ import annotations

import asyncio

from invsaga.dev.asgi_thread import ThreadedAsgiServer
from invsaga.dev.payments.sandbox import check_database, create_app, database_url


class SandboxServer(ThreadedAsgiServer):
    """One sandbox on ``host:port`` (port 0 picks a free one); use as a context manager, sync or async."""

    def __init__(
        self, dsn: str, *, host: str = "127.0.0.1", port: int = 0, shutdown_grace_seconds: int = 2
    ) -> None:
        db_url = database_url(dsn)
        super().__init__(
            create_app(dsn),
            name="payment sandbox",
            host=host,
            port=port,
            grace_seconds=shutdown_grace_seconds,
            before_serve=lambda: asyncio.run(check_database(db_url)),
        )
