"""OpenTelemetry: one trace from an HTTP request through a workflow into its activities.

The API is instrumented by opentelemetry-instrumentation-fastapi; the Temporal
client and worker carry the context through `TracingInterceptor` (see
`relay.core.temporal.connect`). Spans are exported over OTLP/HTTP when
OTEL_EXPORTER_OTLP_ENDPOINT is set; otherwise tracing is a no-op.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from relay.core.settings import Settings

_configured = False


def configure_tracing(settings: Settings, *, processor: SpanProcessor | None = None) -> None:
    """Install a tracer provider once per process, when there is somewhere to send spans."""
    global _configured
    if _configured or (processor is None and not settings.otel_exporter_otlp_endpoint):
        return
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    if processor is not None:
        provider.add_span_processor(processor)
    if settings.otel_exporter_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _configured = True
