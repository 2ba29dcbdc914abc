"""Observability: one trace from an HTTP request into the activities; logs with ids, no secrets."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.deps import TemporalDep
from relay.api_keys import create_key
from relay.crypto import Keyring
from relay.ledger import Ledger
from relay.logging import JsonFormatter, RedactingFilter, configure_logging, redact
from relay.settings import Settings
from relay.telemetry import configure_tracing
from relay.temporal import connect
from relay.worker_context import WorkerContext
from tests.conftest import ServerThread, eventually, free_port, settings_env, task_queue
from tests.support.ops_workflows import (
    LEAKED_TOKEN,
    ChattyInput,
    ChattyWorkflow,
    chatty_activity,
)
from tests.support.workflows import EchoInput, EchoWorkflow, echo_activity
from worker import build_worker


@pytest.fixture
def spans(make_settings: Callable[..., Settings]) -> InMemorySpanExporter:
    """Spans this test produces, through Relay's own tracer provider."""
    exporter = InMemorySpanExporter()
    configure_tracing(make_settings(), processor=SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def traced_settings(
    temporal_env: WorkflowEnvironment, engine: Engine, make_settings: Callable[..., Settings]
) -> Settings:
    return make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=temporal_env.client.service_client.config.target_host,
        temporal_task_queue=task_queue(),
    )


def one(spans: list[ReadableSpan], predicate: Callable[[ReadableSpan], bool]) -> ReadableSpan:
    found = [span for span in spans if predicate(span)]
    assert len(found) == 1, [span.name for span in spans]
    return found[0]


async def test_one_trace_from_http_request_through_workflow_into_activity(
    spans: InMemorySpanExporter, traced_settings: Settings, engine: Engine, keyring: Keyring
) -> None:
    settings = traced_settings
    workflow_id = f"traced-{uuid.uuid4().hex[:8]}"
    # The worker's client is Relay's own, so it carries the tracing interceptor.
    client = await connect(settings, keyring)
    worker = build_worker(
        WorkerContext(settings, engine, keyring, client, Ledger(engine)),
        extra_workflows=[EchoWorkflow],
        extra_activities=[echo_activity],
    )
    app = create_app(settings, engine=engine, keyring=keyring, extra_workflows=[EchoWorkflow])

    @app.post("/test/echo")
    async def start_echo(temporal: TemporalDep) -> dict[str, Any]:
        handle = await temporal.start_workflow(
            EchoWorkflow.run,
            EchoInput("traced", entity_id=workflow_id),
            id=workflow_id,
            task_queue=settings.temporal_task_queue,
        )
        return {"workflowId": handle.id}

    async with worker:
        with ServerThread(app) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                response = await http.post("/test/echo")
            assert response.status_code == 200, response.text
            handle = client.get_workflow_handle(workflow_id)

            async def echoed() -> bool:
                return bool((await handle.query(EchoWorkflow.state)).echoes)

            await eventually(echoed)
            await handle.signal(EchoWorkflow.finish)
            assert await handle.result() == "echo: traced"

    finished = list(spans.get_finished_spans())
    request = one(
        finished, lambda s: s.kind == SpanKind.SERVER and s.name.startswith("POST /test/echo")
    )
    trace_id = request.context.trace_id
    start = one(finished, lambda s: s.name == "StartWorkflow:EchoWorkflow")
    run_activity = one(finished, lambda s: s.name == "RunActivity:echo_activity")
    assert start.context.trace_id == trace_id
    assert run_activity.context.trace_id == trace_id
    assert any(
        s.name == "RunWorkflow:EchoWorkflow" and s.context.trace_id == trace_id for s in finished
    )


async def test_request_spans_are_named_by_route_template_never_by_path(
    spans: InMemorySpanExporter,
    engine: Engine,
    keyring: Keyring,
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=f"127.0.0.1:{free_port()}",
    )
    _, app_key = create_key(engine, f"spans-{uuid.uuid4().hex[:8]}", ["app"])
    app = create_app(settings, engine=engine, keyring=keyring)
    integration_id = uuid.uuid4()
    provider = "github"
    with ServerThread(app) as server:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {app_key}"}, timeout=30
        ) as http:
            # 403: the route's scope check refuses an `app` key; routing has named the span.
            response = await http.get(f"/v1/integrations/{integration_id}/credentials")
            assert response.status_code == 403, response.text
            assert (await http.get(f"/v1/no-such-route/{integration_id}")).status_code == 404
            assert (await http.get("/health")).status_code == 200
            await http.get(f"/v1/integrations/oauth/callback/{provider}?code=c0de&state=st4te")
    server_spans = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    names = [s.name for s in server_spans]
    credentials = one(
        server_spans,
        lambda s: s.name == "GET /v1/integrations/{integration_id}/credentials",
    )
    assert credentials.attributes is not None
    assert credentials.attributes["http.route"] == "/v1/integrations/{integration_id}/credentials"
    assert credentials.attributes["http.response.status_code"] == 403
    # No route matched: named by the method alone, never the raw path.
    assert "GET" in names, names
    assert not any(str(integration_id) in name or "no-such-route" in name for name in names)
    # The probes and the OAuth callback (its query holds the code and state) are not traced.
    assert not any("health" in name or "callback" in name for name in names), names
    assert not any(
        "c0de" in str(s.attributes) or "st4te" in str(s.attributes)
        for s in spans.get_finished_spans()
    )


class Lines(logging.Handler):
    """Collects formatted records, as the JSON log handler would write them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.addFilter(RedactingFilter())
        self.entries: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entries.append(json.loads(self.format(record)))


@pytest.fixture
def log_lines() -> Iterator[Lines]:
    handler = Lines()
    loggers = [logging.getLogger("temporalio.workflow"), logging.getLogger("temporalio.activity")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_logs_carry_workflow_activity_and_trace_ids_and_no_secret(
    spans: InMemorySpanExporter,
    traced_settings: Settings,
    engine: Engine,
    keyring: Keyring,
    log_lines: Lines,
) -> None:
    settings = traced_settings
    client = await connect(settings, keyring)
    worker = build_worker(
        WorkerContext(settings, engine, keyring, client, Ledger(engine)),
        extra_workflows=[ChattyWorkflow],
        extra_activities=[chatty_activity],
    )
    workflow_id = f"chatty-{uuid.uuid4().hex[:8]}"
    async with worker:
        with trace.get_tracer("tests").start_as_current_span("operator request") as span:
            result = await client.execute_workflow(
                ChattyWorkflow.run,
                ChattyInput("order-7"),
                id=workflow_id,
                task_queue=settings.temporal_task_queue,
            )
    assert result == "done order-7"
    trace_id = format(span.get_span_context().trace_id, "032x")

    mine = [entry for entry in log_lines.entries if entry.get("workflowId") == workflow_id]
    workflow_entry = next(e for e in mine if e["message"].startswith("starting for order-7"))
    assert workflow_entry["workflowType"] == "ChattyWorkflow"
    assert workflow_entry["runId"]
    activity_entries = [e for e in mine if e.get("activityType") == "chatty_activity"]
    assert len(activity_entries) == 2
    for entry in activity_entries:
        assert entry["activityId"] and entry["attempt"] == 1
        assert entry["traceId"] == trace_id
        assert "[REDACTED]" in entry["message"]
    assert LEAKED_TOKEN not in json.dumps(log_lines.entries)


class OtlpCollector:
    """An OTLP/HTTP trace receiver on loopback: what an OpenTelemetry collector would get."""

    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                self.spans += [f"{service}: {span.name}" for span in scope_spans.spans]
        return web.Response(content_type="application/x-protobuf", body=b"")


async def test_api_exports_request_spans_over_otlp(
    engine: Engine, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    collector = OtlpCollector()
    app = web.Application()
    app.router.add_post("/v1/traces", collector.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", collector.port).start()
    api_port = free_port()
    settings = make_settings(
        database_url=engine.url.render_as_string(hide_password=False),
        temporal_address=f"127.0.0.1:{free_port()}",
        api_port=api_port,
        otel_exporter_otlp_endpoint=f"http://127.0.0.1:{collector.port}",
        otel_service_name="relay-api-under-test",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "api"],
        env=settings_env(settings),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as http:

            async def answered() -> int:
                try:
                    return (await http.get("/v1/runs")).status_code
                except httpx.TransportError:
                    return 0

            assert await eventually(answered, timeout=30, interval=0.2) == 401
        # Batched spans are flushed when the API shuts down (uvicorn then re-raises SIGTERM).
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) in (0, -signal.SIGTERM)
        assert "relay-api-under-test: GET /v1/runs" in collector.spans
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await runner.cleanup()


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer rk_abc123secretvalue", "abc123secretvalue"),
        ("Authorization: Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
        ("signing with whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("stripe key sk_test_51Habcdef", "51Habcdef"),
        ("token response {'access_token': 'ya29.a0Af', 'x': 1}", "ya29.a0Af"),
        ('{"refresh_token": "1//0gLx", "expires_in": 3600}', "1//0gLx"),
        ("grant_type=refresh_token&client_secret=s3cr3t&code_verifier=v3r", "s3cr3t"),
        ("code_verifier=abcverifier", "abcverifier"),
        ("password=hunter2", "hunter2"),
        ("connecting to postgresql+psycopg://relay:hunter2@db:5432/relay", "hunter2"),
        ("ENCRYPTION_KEYS=k1:AAAABBBBCCCC", "AAAABBBBCCCC"),
    ],
)
def test_redact_masks_credentials(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert "[REDACTED]" in cleaned


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "delivered event evt_123 to https://example.com/hooks in 120 ms (attempt 2)"
    assert redact(text) == text


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_configured_handler_redacts_messages_and_tracebacks(fmt: str) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("INFO", fmt)  # type: ignore[arg-type]
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        log = logging.getLogger("relay.test")
        log.info("refreshing with refresh_token=%s", "1//secret-refresh")
        try:
            raise ValueError("client_secret=from-an-exception")
        except ValueError:
            log.exception("provider call failed")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    output = stream.getvalue()
    assert "1//secret-refresh" not in output and "from-an-exception" not in output
    assert output.count("[REDACTED]") >= 2
    if fmt == "json":
        entries = [json.loads(line) for line in output.splitlines()]
        assert entries[0]["logger"] == "relay.test" and entries[0]["level"] == "info"
        assert "exception" in entries[1]
