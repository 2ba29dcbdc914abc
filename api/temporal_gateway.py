"""The API's one Temporal client, connected on first use and kept for the process.

The API must start, and answer /health, while Temporal is down; a request that
needs Temporal then gets 503 TEMPORAL_UNAVAILABLE. Once connected, the SDK
re-establishes the connection by itself after an outage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from relay.errors import ErrorCode, RelayError

# A server that accepts the connection but never answers must not hold requests for the
# SDK's own 30-second timeout: they get 503 TEMPORAL_UNAVAILABLE after this instead.
CONNECT_TIMEOUT = timedelta(seconds=5)

UNAVAILABLE_STATUSES = frozenset(
    {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED}
)


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, RPCError) and exc.status in UNAVAILABLE_STATUSES


class TemporalGateway:
    def __init__(self, connect: Callable[[], Awaitable[Client]]) -> None:
        self._connect = connect
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT.total_seconds()):
                        self._client = await self._connect()
                except Exception as exc:  # connect failures are RuntimeErrors from the core SDK
                    raise RelayError(
                        ErrorCode.TEMPORAL_UNAVAILABLE, "Temporal is not reachable"
                    ) from exc
        return self._client

    @property
    def connected_client(self) -> Client | None:
        return self._client
