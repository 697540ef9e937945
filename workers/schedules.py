"""The maintenance schedules a worker creates at start: the hold sweeper and the order reconciler.

Both run rarely by default (every 5 minutes, from the settings). Each checkout releases or commits its
own holds, so the sweeper only frees what a terminated workflow left behind, and the reconciler reads
everything again on each run; a frequent schedule would mostly fill the Web UI's list with maintenance
runs. An interval schedule fires on multiples of its interval, so with the defaults a new stack starts
at most one run of each in any 90 seconds.
"""

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
from workflows import hold_sweeper, order_reconciler


async def ensure_sweeper_schedule(client: Client, task_queue: str, every: timedelta) -> bool:
    """Create the hold-sweeper schedule, or bring its interval and task queue in line with the settings
    (``INVSAGA_SWEEP_EVERY_SECONDS``); returns whether anything changed."""
    action = ScheduleActionStartWorkflow(
        hold_sweeper.HoldSweeperWorkflow.run, id=f"{hold_sweeper.SCHEDULE_ID}-run", task_queue=task_queue
    )
    return await _ensure_schedule(client, hold_sweeper.SCHEDULE_ID, action, every)


async def ensure_reconciler_schedule(client: Client, task_queue: str, every: timedelta) -> bool:
    """Create the order-reconciler schedule, or bring its interval and task queue in line with the
    settings (``INVSAGA_RECONCILE_EVERY_SECONDS``); returns whether anything changed."""
    action = ScheduleActionStartWorkflow(
        order_reconciler.OrderReconcilerWorkflow.run,
        ReconcileInput(),
        id=f"{order_reconciler.SCHEDULE_ID}-run",
        task_queue=task_queue,
    )
    return await _ensure_schedule(client, order_reconciler.SCHEDULE_ID, action, every)


async def _ensure_schedule(
    client: Client, schedule_id: str, action: ScheduleActionStartWorkflow, every: timedelta
) -> bool:
    """Create ``schedule_id`` or update it in place; a change takes effect at the next worker start."""
    schedule = Schedule(
        action=action,
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # A run slower than the interval makes the next one skip, never pile up; a run missed while
        # Temporal was down is not made up, since the next run does all of the work again anyway.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=every),
    )
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        pass
    else:
        return True
    changed = False

    def update(current: ScheduleUpdateInput) -> ScheduleUpdate | None:
        nonlocal changed
        existing = current.description.schedule
        if (
            isinstance(existing.action, ScheduleActionStartWorkflow)
            and existing.action.task_queue == action.task_queue
            and [interval.every for interval in existing.spec.intervals] == [every]
        ):
            return None
        changed = True
        return ScheduleUpdate(schedule=schedule)

    await client.get_schedule_handle(schedule_id).update(update)
    return changed
