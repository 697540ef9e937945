"""One LISTEN connection held for as long as its task runs, for the processes that follow Postgres
notifications: the routing watch (the core database's ``invsaga_routing``) and the sold-out hint (each
shard's ``stock_available``).

Notifications are not queued for a listener that is not connected, so its owner must treat every
(re)connection as "anything may have changed meanwhile": ``on_connect`` runs once the LISTEN is in
place, and ``on_lost`` as soon as the connection ends, before the reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

log = logging.getLogger("invsaga.listening")

#: Seconds between a lost connection (or a failed connect) and the next attempt.
RECONNECT_SECONDS = 1.0


def listen_dsn(url: URL) -> str:
    """The asyncpg DSN of a SQLAlchemy URL (its driver name dropped, the password kept)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def listen_forever(
    dsn: str,
    channel: str,
    on_notify: Callable[..., Any],
    *,
    on_connect: Callable[[], None],
    on_lost: Callable[[], None] = lambda: None,
    name: str,
) -> None:
    """Until cancelled: LISTEN on ``channel`` at ``dsn``, calling ``on_notify`` as asyncpg does
    (connection, pid, channel, payload), and reconnect after every failure. ``name`` says whose
    connection it is in the warning a failure logs."""
    while True:
        connection: asyncpg.Connection | None = None
        lost = asyncio.Event()
        try:
            connection = await asyncpg.connect(dsn, timeout=5)
            connection.add_termination_listener(lambda _c, lost=lost: lost.set())
            await connection.add_listener(channel, on_notify)
            on_connect()
            try:
                await lost.wait()
            finally:
                on_lost()
        except asyncio.CancelledError:
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close(timeout=2)
            raise
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("%s lost its database connection: %s; retrying", name, exc)
        await asyncio.sleep(RECONNECT_SECONDS)
