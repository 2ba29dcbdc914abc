"""GET /health and GET /ready: up, ready, and naming the part that is down."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from relay.db import make_engine
from relay.settings import Settings
from tests.conftest import ServerThread, Stack, eventually, free_port
from tests.support.api import DevServer, bearer, closed_address, new_key


async def test_health_is_200_even_without_temporal(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(temporal_address=closed_address())
    with ServerThread(create_app(settings, engine=engine)) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"success": True, "data": {"status": "ok"}}


async def test_ready_is_200_with_the_dev_server(stack: Stack) -> None:
    async with stack.http(authenticated=False) as http:
        response = await http.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "success": True,
        "data": {"status": "ready", "checks": {"database": "ok", "temporal": "ok"}},
    }


async def test_ready_is_503_naming_temporal_when_it_is_unreachable(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(temporal_address=closed_address())
    with ServerThread(create_app(settings, engine=engine)) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.get("/ready")
    assert response.status_code == 503
    assert response.json() == {
        "success": False,
        "error": {
            "code": "TEMPORAL_UNAVAILABLE",
            "message": "Temporal is not reachable",
            "details": {"database": "ok", "temporal": "down"},
        },
    }


async def test_ready_answers_503_when_temporal_accepts_but_never_answers(
    engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """A hung server (TCP accepted, no gRPC answer) is reported, not waited on."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        settings = make_settings(temporal_address=address)
        key = new_key(engine)
        with ServerThread(create_app(settings, engine=engine)) as server:
            # The client timeout only guards against a hang; Relay answers well before it.
            async with httpx.AsyncClient(base_url=server.url, timeout=25) as http:
                ready = await http.get("/ready")
                runs = await http.get("/v1/runs", headers=bearer(key))
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "TEMPORAL_UNAVAILABLE"
    assert runs.status_code == 503
    assert runs.json()["error"]["code"] == "TEMPORAL_UNAVAILABLE"


async def test_ready_is_503_naming_the_database_when_it_is_unreachable(
    temporal_env: WorkflowEnvironment, make_settings: Callable[..., Settings]
) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/relay"
    settings = make_settings(
        database_url=url, temporal_address=temporal_env.client.service_client.config.target_host
    )
    down = make_engine(url)
    with ServerThread(create_app(settings, engine=down)) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            ready = await http.get("/ready")
            # Authentication needs the database too: an outage is 503, never 500 or 401.
            runs = await http.get("/v1/runs", headers=bearer("rk_anything"))
    down.dispose()
    assert ready.status_code == 503
    assert ready.json()["error"] == {
        "code": "DATABASE_UNAVAILABLE",
        "message": "the database is not reachable",
        "details": {"database": "down", "temporal": "ok"},
    }
    assert runs.status_code == 503
    assert runs.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
    assert "Traceback" not in runs.text


async def test_ready_follows_temporal_going_away_and_coming_back(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """Stop the Temporal server under a running API, then start it again on the same
    port: /ready and /v1 recover without restarting the API."""
    database_url = f"sqlite:///{tmp_path / 'relay.db'}"
    from relay.migrate import upgrade

    upgrade(database_url)
    engine = make_engine(database_url)
    key = new_key(engine)
    temporal = DevServer(tmp_path)
    settings = make_settings(database_url=database_url, temporal_address=temporal.address)
    temporal.start()
    try:
        with ServerThread(create_app(settings, engine=engine)) as server:
            async with httpx.AsyncClient(
                base_url=server.url, headers=bearer(key), timeout=30
            ) as http:

                async def status(path: str) -> int:
                    return (await http.get(path)).status_code

                async def answers(path: str, expected: int) -> httpx.Response | None:
                    response = await http.get(path)
                    return response if response.status_code == expected else None

                await eventually(lambda: answers("/ready", 200), timeout=60)
                assert await status("/v1/runs") == 200

                temporal.stop()
                ready = await eventually(lambda: answers("/ready", 503), timeout=30)
                assert isinstance(ready, httpx.Response)
                assert ready.json()["error"]["code"] == "TEMPORAL_UNAVAILABLE"
                assert ready.json()["error"]["details"] == {"database": "ok", "temporal": "down"}
                runs = await http.get("/v1/runs")
                assert runs.status_code == 503
                assert runs.json()["error"]["code"] == "TEMPORAL_UNAVAILABLE"

                temporal.start()
                await eventually(lambda: answers("/ready", 200), timeout=60)
                await eventually(lambda: answers("/v1/runs", 200), timeout=30)
    finally:
        temporal.stop()
        engine.dispose()
