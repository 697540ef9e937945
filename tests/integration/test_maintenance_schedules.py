"""The maintenance schedules a worker creates: each follows its setting, and by default a new stack
starts at most two maintenance runs in its first 90 seconds, so the Web UI's list shows checkouts."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleOverlapPolicy

from invsaga.settings import Settings
from workers.schedules import ensure_reconciler_schedule, ensure_sweeper_schedule
from workflows import hold_sweeper, order_reconciler

_SCHEDULES = (hold_sweeper.SCHEDULE_ID, order_reconciler.SCHEDULE_ID)


@pytest.fixture
async def no_schedules(temporal_client: Client) -> AsyncIterator[None]:
    """Schedule ids are per namespace: start without them and leave none behind."""

    async def delete_all() -> None:
        for schedule_id in _SCHEDULES:
            with contextlib.suppress(Exception):
                await temporal_client.get_schedule_handle(schedule_id).delete()

    await delete_all()
    yield
    await delete_all()


async def test_the_sweeper_schedule_is_created_once_and_follows_the_setting(temporal_client, no_schedules):
    handle = temporal_client.get_schedule_handle(hold_sweeper.SCHEDULE_ID)
    task_queue = f"test-{uuid.uuid4()}"
    assert await ensure_sweeper_schedule(temporal_client, task_queue, timedelta(seconds=600))
    assert not await ensure_sweeper_schedule(temporal_client, task_queue, timedelta(seconds=600))
    assert await ensure_sweeper_schedule(temporal_client, task_queue, timedelta(seconds=900))
    other_queue = f"test-{uuid.uuid4()}"
    assert await ensure_sweeper_schedule(temporal_client, other_queue, timedelta(seconds=900))
    schedule = (await handle.describe()).schedule
    assert [i.every for i in schedule.spec.intervals] == [timedelta(seconds=900)]
    assert schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
    assert isinstance(schedule.action, ScheduleActionStartWorkflow)
    assert (schedule.action.workflow, schedule.action.task_queue) == ("HoldSweeperWorkflow", other_queue)


async def test_by_default_a_new_stack_starts_at_most_two_maintenance_runs_in_90_seconds(
    temporal_client, no_schedules
):
    """What the Temporal server itself plans to start, from the schedules a worker creates with the
    default settings (the old 30 s sweeper alone planned 3)."""
    defaults = Settings()
    task_queue = f"test-{uuid.uuid4()}"
    created = datetime.now(UTC)
    await ensure_sweeper_schedule(
        temporal_client, task_queue, timedelta(seconds=defaults.sweep_every_seconds)
    )
    await ensure_reconciler_schedule(
        temporal_client, task_queue, timedelta(seconds=defaults.reconcile_every_seconds)
    )
    planned = []
    for schedule_id in _SCHEDULES:
        info = (await temporal_client.get_schedule_handle(schedule_id).describe()).info
        assert info.next_action_times, schedule_id
        # The server lists several upcoming starts; the last one must lie past the window, or the
        # list would not show every start inside it.
        assert info.next_action_times[-1] > created + timedelta(seconds=90)
        planned += [at for at in info.next_action_times if at < created + timedelta(seconds=90)]
    assert len(planned) <= 2, planned
