"""The event relay as a worker component: started beside the Temporal worker, stopped after it drains.

Every worker runs one unless ``INVSAGA_RELAY_ENABLED`` is off; only one per database is active at a
time (see invsaga/events/relay.py), so scaling workers out adds standbys, not duplicate deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from invsaga.events.metrics import RELAY_METRICS
from invsaga.events.relay import Relay
from invsaga.settings import Settings
from invsaga.store.databases import Databases

log = logging.getLogger("invsaga.relay")

#: How long a stopping relay may take to finish the delivery pass it is in.
STOP_GRACE_SECONDS = 15.0


@asynccontextmanager
async def running_relay(settings: Settings, databases: Databases) -> AsyncIterator[Relay]:
    if settings.relay_metrics_port:
        RELAY_METRICS.serve(settings.relay_metrics_port)
        log.info("relay metrics on port %d", settings.relay_metrics_port)
    relay = Relay(settings, databases)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop), name="event-relay")
    try:
        yield relay
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, STOP_GRACE_SECONDS)
        except TimeoutError:
            log.warning(
                "relay did not stop within %.0fs; its deliveries in flight are retried later",
                STOP_GRACE_SECONDS,
            )
        except Exception as exc:
            log.warning("relay ended with %s: %s", type(exc).__name__, exc)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
