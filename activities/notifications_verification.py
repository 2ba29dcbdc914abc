"""Verification codes' side effect: queueing a code's message.

`VerificationActivities.send_code` makes the code (six digits from an HMAC of the
verification id, the workflow chain's first run id and the code's number: no random
number in the workflow, and a retried activity makes the same code) and queues it in the
notifications outbox with an idempotency key of the workflow, its run chain and the send's
number, so a retry queues nothing twice; the send pump then sends it exactly once and
tracks it. It answers the code's digest and the notification's id only: the code and the
destination never leave the database and the message (both sealed there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from relay.crypto import Keyring
from relay.errors import ErrorCode
from relay.notifications import repository
from relay.notifications.contracts import Channel, verification_workflow_id
from relay.notifications.verification import (
    SendCodeInput,
    SentCode,
    VerificationKey,
    load_destination,
    message_content,
)
from relay.worker_context import WorkerContext


class VerificationActivities:
    """Queues verification codes; idempotent per (verification, run chain, send number)."""

    def __init__(self, *, engine: Engine, keyring: Keyring, key: VerificationKey) -> None:
        self._engine = engine
        self._keyring = keyring
        self._key = key

    @classmethod
    def from_context(cls, context: WorkerContext) -> VerificationActivities:
        return cls(
            engine=context.engine,
            keyring=context.keyring,
            key=VerificationKey.from_settings(context.settings),
        )

    def activities(self) -> list[Callable[..., Any]]:
        return [self.send_code]

    @activity.defn
    async def send_code(self, params: SendCodeInput) -> SentCode:
        return await asyncio.to_thread(self._send_code, params)

    def _send_code(self, params: SendCodeInput) -> SentCode:
        destination = load_destination(self._engine, self._keyring, params.verification_id)
        if destination is None:
            # The route records the destination before it starts the workflow.
            raise ApplicationError(
                "the verification has no destination on record",
                type=ErrorCode.NOT_FOUND.value,
                non_retryable=True,
            )
        channel = Channel(params.channel)
        code = self._key.code(params.verification_id, params.seed, params.code_number)
        workflow_id = verification_workflow_id(params.verification_id)
        queued = repository.enqueue(
            self._engine,
            self._keyring,
            [
                repository.NewMessage(
                    channel=channel,
                    to=destination,
                    content=message_content(channel, code),
                    idempotency_key=f"{workflow_id}:{params.seed}:{params.send_number}",
                    # A code the user asked for goes even to a suppressed address.
                    critical=True,
                )
            ],
        )
        return SentCode(
            digest=self._key.digest(params.verification_id, code),
            notification_id=queued[0].id,
        )
