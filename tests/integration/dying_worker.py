"""A checkout worker that is killed (SIGKILL, by itself) right after it records an order's end, as a
crash would kill it: the database holds the end, but the workflow task that ran those local activities
never completes, so Temporal runs the whole task again on another worker.

Run as ``python -m tests.integration.dying_worker`` with the worker's environment (``INVSAGA_*``).
"""

from __future__ import annotations

import asyncio
import os
import signal

from temporalio import activity

from activities.models import FinishOrderInput
from activities.orders import OrderActivities
from invsaga.settings import load_settings
from invsaga.temporal.configured import connect_configured
from workers.worker import WorkerDeps, build_worker


class DiesAfterRecordingAnEnd(OrderActivities):
    @activity.defn(name="finish_order")
    async def finish_order(self, inp: FinishOrderInput) -> str:
        recorded = await super().finish_order(inp)
        if inp.status in ("rejected", "cancelled"):
            os.kill(os.getpid(), signal.SIGKILL)
        return recorded


async def main() -> None:
    settings = load_settings()
    client = await connect_configured(settings)
    async with WorkerDeps.open(settings) as deps:
        orders = DiesAfterRecordingAnEnd(deps.databases, settings)
        async with build_worker(client, settings, deps, orders=orders):
            await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
