"""A test-only workflow whose one activity charges a local provider through the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    import httpx

    from relay.ledger import Ledger
    from relay.provider_errors import raise_for_status

CHARGE_TIMEOUT = timedelta(seconds=10)
CHARGE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=100), backoff_coefficient=1.0, maximum_attempts=100
)


@dataclass
class ChargeInput:
    idempotency_key: str
    url: str
    repeatable: bool = False


class ChargeActivities:
    """Charges through the ledger: at most one provider call per idempotency key."""

    def __init__(self, ledger: Ledger, http: httpx.AsyncClient) -> None:
        self._ledger = ledger
        self._http = http

    @activity.defn
    async def charge(self, params: ChargeInput) -> dict[str, Any]:
        async def call() -> dict[str, Any]:
            response = await self._http.post(params.url)
            raise_for_status("acme", response.status_code, headers=response.headers)
            return response.json()  # type: ignore[no-any-return]

        return await self._ledger.run(  # type: ignore[no-any-return]
            params.idempotency_key,
            call,
            provider="acme",
            operation="charge",
            repeatable=params.repeatable,
        )


@workflow.defn
class ChargeWorkflow:
    @workflow.run
    async def run(self, params: ChargeInput) -> dict[str, Any]:
        return await workflow.execute_activity_method(
            ChargeActivities.charge,
            params,
            start_to_close_timeout=CHARGE_TIMEOUT,
            retry_policy=CHARGE_RETRY,
        )
