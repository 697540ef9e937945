"""Connecting to Temporal the same way everywhere: the pydantic data converter, end to end."""

from __future__ import annotations

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from domain.errors import ConfigurationError
from invsaga.settings import Settings
from workflows.hold_sweeper import SCHEDULE_ID, SWEEP_EVERY, HoldSweeperWorkflow


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=pydantic_data_converter,
            runtime=runtime,
        )
    except RuntimeError as exc:
        raise ConfigurationError(
            f"cannot reach Temporal at {settings.temporal_address} "
            f"(namespace {settings.temporal_namespace}): {exc}"
        ) from exc


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
