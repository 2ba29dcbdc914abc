"""OpenTelemetry: one trace from an HTTP request through a workflow into its activities.

The API's request spans come from FastAPI's own OpenTelemetry support, which uses the
global tracer provider installed here (`api.app.TELEMETRY`: one span per request, named by
route template); the Temporal client and worker carry the context through
`TracingInterceptor` (see `relay.temporal.connect`), so the worker's workflow and
activity spans join the trace of the request that started the run. Spans are exported over OTLP/HTTP
when OTEL_EXPORTER_OTLP_ENDPOINT is set; otherwise tracing is a no-op.

OpenTelemetry allows one global tracer provider per process. Relay installs it on
the first call that has somewhere to send spans; later calls that bring a span
processor (tests, an embedding application) add it to that same provider.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from relay.settings import Settings

_provider: TracerProvider | None = None


def configure_tracing(
    settings: Settings, *, processor: SpanProcessor | None = None
) -> TracerProvider | None:
    """Install Relay's tracer provider (once per process) and add `processor` to it.

    Returns the provider, or None while tracing is off (no endpoint, no processor).
    """
    global _provider
    if _provider is None:
        if processor is None and not settings.otel_exporter_otlp_endpoint:
            return None
        provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: settings.otel_service_name})
        )
        if settings.otel_exporter_otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        trace.set_tracer_provider(provider)
        _provider = provider
    if processor is not None:
        _provider.add_span_processor(processor)
    return _provider


def flush_tracing(timeout: float = 5.0) -> None:
    """Export spans still batched. uvicorn re-raises SIGTERM after its graceful shutdown,
    which ends the process before atexit handlers run, so the API flushes in its lifespan."""
    if _provider is not None:
        _provider.force_flush(int(timeout * 1000))
