"""Reconcile orders across the core DB, the shards, Temporal and the payment provider, on a Schedule.

One activity does the work (``activities.reconcile``); the workflow exists so a Temporal Schedule can
run it, survive worker restarts and keep its runs from overlapping. It retries little on purpose: the
schedule's next run is the retry, and every fix it applies is idempotent.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.reconcile import ReconcileActivities, ReconcileInput, ReconcileSummary

SCHEDULE_ID = "order-reconciler"


@workflow.defn
class OrderReconcilerWorkflow:
    @workflow.run
    async def run(self, inp: ReconcileInput) -> ReconcileSummary:
        return await workflow.execute_activity_method(
            ReconcileActivities.reconcile_orders,
            inp,
            start_to_close_timeout=timedelta(hours=1),
            # A worker that dies mid-run is noticed within a minute, not at the hour.
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(maximum_attempts=2),
        )
