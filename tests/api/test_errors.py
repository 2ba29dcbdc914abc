"""Every error is the envelope with a contract code: never a stack trace, never a bare 500."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest_asyncio
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from api.app import create_app
from relay.settings import Settings
from tests.conftest import ServerThread, Stack
from tests.support.api import api_routes, bearer, closed_address, new_key

SECRET_DETAIL = "db password is hunter2"


class LineItem(BaseModel):
    sku: str = Field(min_length=1)
    quantity: int = Field(ge=1)


class Order(BaseModel):
    customer_id: str
    items: list[LineItem]


def _test_routes() -> APIRouter:
    router = APIRouter(prefix="/test")

    @router.post("/orders")
    async def create_order(order: Order) -> dict[str, str]:
        return {"customerId": order.customer_id}

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError(SECRET_DETAIL)

    return router


@dataclass
class Api:
    url: str
    key: str


def _app(settings: Settings, engine: Engine) -> FastAPI:
    app = create_app(settings, engine=engine)
    app.include_router(_test_routes())
    return app


@pytest_asyncio.fixture(loop_scope="session")
async def offline_api(engine: Engine, make_settings: Callable[..., Settings]) -> AsyncIterator[Api]:
    """The real app with two test routes, and Temporal unreachable."""
    app = _app(make_settings(temporal_address=closed_address()), engine)
    with ServerThread(app) as server:
        yield Api(server.url, new_key(engine))


async def test_validation_error_lists_every_offending_field(offline_api: Api) -> None:
    async with httpx.AsyncClient(base_url=offline_api.url) as http:
        response = await http.post(
            "/test/orders", json={"items": [{"sku": "", "quantity": 0}, {"sku": "a"}]}
        )
    assert response.status_code == 422
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert body["error"]["message"] == "the request is invalid"
    fields = {(item["in"], item["field"]) for item in body["error"]["details"]}
    assert fields == {
        ("body", "customer_id"),
        ("body", "items.0.sku"),
        ("body", "items.0.quantity"),
        ("body", "items.1.quantity"),
    }
    assert all(item["message"] for item in body["error"]["details"])


async def test_malformed_json_is_a_validation_error(offline_api: Api) -> None:
    async with httpx.AsyncClient(base_url=offline_api.url) as http:
        response = await http.post(
            "/test/orders", content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_query_validation_names_the_query_fields(stack: Stack) -> None:
    async with stack.http() as http:
        response = await http.get("/v1/runs", params={"limit": 0, "status": "Sleeping"})
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert {(item["in"], item["field"]) for item in details} == {
        ("query", "limit"),
        ("query", "status"),
    }


async def test_unknown_route_is_404_envelope(offline_api: Api) -> None:
    async with httpx.AsyncClient(base_url=offline_api.url) as http:
        response = await http.get("/v1/nothing-here", headers=bearer(offline_api.key))
        unauthenticated = await http.get("/nothing-here")
    for answer in (response, unauthenticated):
        assert answer.status_code == 404
        assert answer.json() == {
            "success": False,
            "error": {"code": "NOT_FOUND", "message": "Not Found", "details": None},
        }


async def test_wrong_method_is_an_envelope(offline_api: Api) -> None:
    async with httpx.AsyncClient(base_url=offline_api.url) as http:
        response = await http.delete("/health")
    assert response.status_code == 405
    assert response.json()["success"] is False
    assert response.json()["error"]["code"] == "NOT_FOUND"


async def test_internal_error_is_500_envelope_without_a_stack_trace(offline_api: Api) -> None:
    async with httpx.AsyncClient(base_url=offline_api.url) as http:
        response = await http.get("/test/boom")
    assert response.status_code == 500
    assert response.json() == {
        "success": False,
        "error": {
            "code": "INTERNAL_ERROR",
            "message": "an internal error occurred",
            "details": None,
        },
    }
    assert "Traceback" not in response.text
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text


async def test_temporal_unreachable_on_v1_runs_is_503_not_500(offline_api: Api) -> None:
    async with httpx.AsyncClient(base_url=offline_api.url, headers=bearer(offline_api.key)) as http:
        responses = [
            await http.get("/v1/runs"),
            await http.get("/v1/runs/some-run"),
            await http.post("/v1/runs/some-run/cancel"),
        ]
    for response in responses:
        assert response.status_code == 503, response.text
        assert response.json() == {
            "success": False,
            "error": {
                "code": "TEMPORAL_UNAVAILABLE",
                "message": "Temporal is not reachable",
                "details": None,
            },
        }


async def test_openapi_lists_every_route_with_a_summary(
    offline_api: Api, engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    async with httpx.AsyncClient(base_url=offline_api.url) as http:
        schema = (await http.get("/openapi.json")).json()
        docs = await http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()

    app = create_app(
        make_settings(temporal_address=closed_address()), engine=engine
    )  # Relay's own routes, without this module's test routes
    expected = {
        (method.lower(), path)
        for path, route in api_routes(app)
        if route.include_in_schema
        for method in route.methods
    }
    documented = {
        (method, path): operation
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    assert expected <= set(documented), expected - set(documented)
    for required in [
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/v1/runs"),
        ("get", "/v1/runs/{workflow_id}"),
        ("post", "/v1/runs/{workflow_id}/cancel"),
        ("post", "/codec/encode"),
        ("post", "/codec/decode"),
    ]:
        assert required in documented
    missing = [key for key in expected if not documented[key].get("summary")]
    assert missing == [], f"routes without a summary: {missing}"
    # Protected routes say so in the schema.
    assert documented[("get", "/v1/runs")].get("security")
