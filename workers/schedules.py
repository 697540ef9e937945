"""The maintenance schedules a worker creates at start: the hold sweeper and the order reconciler."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from activities.reconcile import ReconcileInput
from workflows import order_reconciler
from workflows.hold_sweeper import SCHEDULE_ID, SWEEP_EVERY, HoldSweeperWorkflow


async def ensure_sweeper_schedule(client: Client, task_queue: str) -> bool:
    """Create the hold-sweeper schedule once; returns False when it already exists."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            HoldSweeperWorkflow.run, id=f"{SCHEDULE_ID}-run", task_queue=task_queue
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=SWEEP_EVERY)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:
        return False
    return True


async def ensure_reconciler_schedule(client: Client, task_queue: str, every: timedelta) -> bool:
    """Create the order-reconciler schedule, or bring its interval and task queue in line with the
    settings (``INVSAGA_RECONCILE_EVERY_SECONDS`` takes effect at the next worker start); returns
    whether anything changed."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            order_reconciler.OrderReconcilerWorkflow.run,
            ReconcileInput(),
            id=f"{order_reconciler.SCHEDULE_ID}-run",
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # A run slower than the interval makes the next one skip, never pile up; a run missed while
        # Temporal was down is not made up, since the next run reads everything again anyway.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=every),
    )
    try:
        await client.create_schedule(order_reconciler.SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:
        pass
    else:
        return True
    changed = False

    def update(current: ScheduleUpdateInput) -> ScheduleUpdate | None:
        nonlocal changed
        existing = current.description.schedule
        action = existing.action
        if (
            isinstance(action, ScheduleActionStartWorkflow)
            and action.task_queue == task_queue
            and [interval.every for interval in existing.spec.intervals] == [every]
        ):
            return None
        changed = True
        return ScheduleUpdate(schedule=schedule)

    await client.get_schedule_handle(order_reconciler.SCHEDULE_ID).update(update)
    return changed
