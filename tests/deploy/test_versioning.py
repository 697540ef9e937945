"""Worker Versioning from the environment, and the compose job that promotes a build, against a real
Temporal dev server."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.api.enums.v1 import EventType, VersioningBehavior
from temporalio.common import WorkerDeploymentVersion

from invsaga.client import CheckoutClient
from invsaga.domain.checkout import CheckoutStatus
from invsaga.domain.errors import ConfigurationError
from invsaga.settings import Settings
from tests.deploy.support import ROOT, run_script
from tests.integration.test_checkout_saga import catalog, order
from workers.versioning import DEFAULT_VERSIONING_BEHAVIOR, deployment_config, deployment_version
from workers.worker import WorkerDeps, build_worker

SET_CURRENT_VERSION = ROOT / "docker" / "temporal" / "set-current-version.sh"


def versioned(settings: Settings, name: str = "", build_id: str = "") -> Settings:
    return settings.model_copy(update={"worker_deployment_name": name, "worker_build_id": build_id})


def test_versioning_is_off_unless_both_name_and_build_id_are_set():
    base = Settings()
    assert deployment_config(base) is None
    assert deployment_version(versioned(base, "inventory-saga", "b1")) == WorkerDeploymentVersion(
        "inventory-saga", "b1"
    )
    config = deployment_config(versioned(base, " inventory-saga ", "b1"))
    assert config is not None and config.use_worker_versioning
    assert config.default_versioning_behavior == DEFAULT_VERSIONING_BEHAVIOR


@pytest.mark.parametrize(
    ("name", "build_id", "complaint"),
    [
        ("inventory-saga", "", "INVSAGA_WORKER_BUILD_ID is not set"),
        ("", "b1", "INVSAGA_WORKER_DEPLOYMENT_NAME is not set"),
        ("inventory.saga", "b1", "must not contain '.'"),
    ],
)
def test_a_half_or_badly_configured_deployment_is_refused(name: str, build_id: str, complaint: str):
    with pytest.raises(ConfigurationError, match=complaint):
        deployment_config(versioned(Settings(), name, build_id))


async def test_a_versioned_worker_serves_checkouts_once_the_job_makes_its_build_current(
    saga_settings, temporal_client, databases, store, clean_shards, payment_sandbox
):
    deployment, build_id = f"invsaga-test-{uuid.uuid4().hex[:8]}", "build-1"
    settings = versioned(saga_settings, deployment, build_id)
    task_queue = f"test-versioned-{uuid.uuid4()}"
    saga = CheckoutClient(temporal_client, task_queue=task_queue)
    sku = f"VER-{uuid.uuid4().hex[:8]}"
    await catalog(databases, store, (sku, 5))
    async with (
        WorkerDeps.open(settings) as deps,
        build_worker(temporal_client, settings, deps, task_queue=task_queue),
    ):
        early = order((sku, 1))
        await saga.start_without_waiting(early)
        await asyncio.sleep(1.5)
        events = [e.event_type async for e in saga.handle(early.order_id).fetch_history_events()]
        assert EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED not in events, "no build is current yet"

        code, output = await run_script(
            SET_CURRENT_VERSION,
            TEMPORAL_ADDRESS=settings.temporal_address,
            TEMPORAL_NAMESPACE=settings.temporal_namespace,
            INVSAGA_WORKER_DEPLOYMENT_NAME=deployment,
            INVSAGA_WORKER_BUILD_ID=build_id,
        )
        assert code == 0, output

        assert (await asyncio.wait_for(saga.result(early.order_id), 60)).status is CheckoutStatus.CONFIRMED
        later = order((sku, 1))
        assert (await saga.checkout(later)).status is CheckoutStatus.CONFIRMED
    description = await saga.handle(later.order_id).describe()
    info = description.raw_description.workflow_execution_info.versioning_info
    assert info.behavior == VersioningBehavior.VERSIONING_BEHAVIOR_AUTO_UPGRADE
    assert (info.deployment_version.deployment_name, info.deployment_version.build_id) == (
        deployment,
        build_id,
    )


async def test_the_promotion_job_does_nothing_without_versioning():
    code, output = await run_script(SET_CURRENT_VERSION, INVSAGA_WORKER_BUILD_ID="")
    assert code == 0 and "nothing to promote" in output


async def test_the_worker_refuses_a_half_configured_deployment_before_connecting():
    from workers.worker import run_worker

    settings = Settings(temporal_address="127.0.0.1:9", worker_deployment_name="inventory-saga")
    with pytest.raises(ConfigurationError, match="INVSAGA_WORKER_BUILD_ID"):
        await asyncio.wait_for(run_worker(settings), timeout=5)
