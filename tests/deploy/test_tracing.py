"""Optional OpenTelemetry tracing of the worker."""

from __future__ import annotations

import sys
import uuid

import pytest

from invsaga.client import CheckoutClient
from invsaga.domain.checkout import CheckoutStatus
from invsaga.domain.errors import ConfigurationError
from invsaga.settings import Settings
from tests.integration.test_checkout_saga import catalog, order
from workers.tracing import tracing
from workers.worker import WorkerDeps, build_worker


def test_tracing_is_off_without_an_endpoint():
    with tracing(Settings()) as interceptors:
        assert interceptors == []


def test_a_missing_extra_is_a_clear_configuration_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if never installed
    settings = Settings(otel_endpoint="http://127.0.0.1:4317")
    with pytest.raises(ConfigurationError, match=r"install the otel extra"), tracing(settings):
        pass


def test_the_otlp_exporter_is_built_from_the_endpoint():
    pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    from temporalio.contrib.opentelemetry import TracingInterceptor

    with tracing(Settings(otel_endpoint="http://127.0.0.1:4317")) as interceptors:
        assert [type(i) for i in interceptors] == [TracingInterceptor]


async def test_workflows_and_activities_are_traced(
    saga_settings, temporal_client, databases, store, clean_shards, payment_sandbox
):
    memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    exporter = memory.InMemorySpanExporter()
    settings = saga_settings.model_copy(update={"otel_endpoint": "http://collector.invalid:4317"})
    task_queue = f"test-traced-{uuid.uuid4()}"
    sku = f"TRACE-{uuid.uuid4().hex[:8]}"
    await catalog(databases, store, (sku, 3))
    with tracing(settings, exporter=exporter) as interceptors:
        async with (
            WorkerDeps.open(settings) as deps,
            build_worker(temporal_client, settings, deps, task_queue=task_queue, interceptors=interceptors),
        ):
            result = await CheckoutClient(temporal_client, task_queue=task_queue).checkout(order((sku, 1)))
    assert result.status is CheckoutStatus.CONFIRMED
    names = {span.name for span in exporter.get_finished_spans()}
    assert {"RunWorkflow:Checkout", "RunActivity:charge_payment", "RunActivity:confirm_order"} <= names
