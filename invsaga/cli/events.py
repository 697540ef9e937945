"""``invsaga relay``: the event relay on its own, for operators who run it apart from the workers."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer

from invsaga.cli.errors import run
from invsaga.settings import Settings, load_settings


async def _relay_until_signalled(settings: Settings) -> None:
    from invsaga.events.relay import run_relay

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_relay(settings, stop)


def relay() -> None:
    """Stamp, deliver and prune stock and order events until SIGTERM or Ctrl-C.

    Safe to run many: one is active per shard and for the core database, the others stand by.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    logging.getLogger("invsaga.relay").info("configuration from %s", settings.loaded_from)
    run(_relay_until_signalled(settings))


def mount(app: typer.Typer) -> None:
    app.command("relay")(relay)
