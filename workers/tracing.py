"""Optional OpenTelemetry tracing of workflows and activities, exported over OTLP/gRPC.

It is on only when ``INVSAGA_OTEL_ENDPOINT`` is set (for example ``http://otel-collector:4317``), and
needs the ``otel`` extra: ``pip install 'inventory-saga[otel]'``. The packages are imported only then,
so a worker without the extra runs exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from temporalio.worker import Interceptor

from invsaga.domain.errors import ConfigurationError
from invsaga.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

SERVICE_NAME = "inventory-saga-worker"


@contextmanager
def tracing(settings: Settings, *, exporter: SpanExporter | None = None) -> Iterator[list[Interceptor]]:
    """The worker interceptors that trace, for as long as the block runs; none when tracing is off.

    ``exporter`` replaces the OTLP exporter (the tests collect spans in memory).
    """
    if not settings.otel_endpoint:
        yield []
        return
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from temporalio.contrib.opentelemetry import TracingInterceptor
    except ImportError as exc:
        raise ConfigurationError(
            f"INVSAGA_OTEL_ENDPOINT is set but OpenTelemetry is not installed ({exc.name} is missing): "
            "install the otel extra, pip install 'inventory-saga[otel]', or unset INVSAGA_OTEL_ENDPOINT"
        ) from None

    attributes = {"service.name": SERVICE_NAME, "temporal.task_queue": settings.task_queue}
    if settings.worker_build_id:
        attributes["service.version"] = settings.worker_build_id
    # A provider of our own rather than the global one, so tracing ends cleanly with the worker.
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter is None:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_endpoint)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Checkouts are started by the API and the CLI, whose clients do not trace (yet), so workflow
    # spans are created even without a client span to hang them from.
    interceptor = TracingInterceptor(provider.get_tracer("invsaga.worker"), always_create_workflow_spans=True)
    try:
        yield [interceptor]
    finally:
        provider.shutdown()
