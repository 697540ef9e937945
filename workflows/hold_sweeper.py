"""Expire abandoned holds on every shard. Run by a Temporal Schedule (``workers.schedules``, every
``INVSAGA_SWEEP_EVERY_SECONDS``), so it survives worker restarts.

Holds normally end through their checkout's compensation; only a terminated workflow (or a crash
before a workflow adopted its hold) leaves one behind, which its TTL then frees here.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.inventory import InventoryActivities
    from activities.models import ExpireOutput

SCHEDULE_ID = "inventory-hold-sweeper"


@workflow.defn
class HoldSweeperWorkflow:
    @workflow.run
    async def run(self) -> ExpireOutput:
        return await workflow.execute_activity_method(
            InventoryActivities.expire_holds,
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
