"""Sending notifications: the send pump, provider callbacks' recovery path, and the steps of
a multi-channel notification.

Throughput comes from not spending a workflow per message (the dev server here runs about
35 one-activity workflows a second): the routes queue rows, and `pump_notifications`,
kept running by the long-lived dispatcher workflow, claims due rows in batches under a
lease, sends them concurrently and records the results in one transaction per batch.

Exactly once toward the provider: SendGrid and Twilio take no idempotency key, so each
send runs in the provider-call ledger (`relay.ledger`) under `notification-{id}:{provider}`
(a bulk chunk: `notification-bulk-{batch}:{chunk}:sendgrid`). A retried send whose first
call reached the provider gets the recorded result; a call whose outcome is unknown (the
request left, no answer came) marks the notification UNKNOWN instead of sending again.
When the provider did not act (5xx, 429, connection refused), email goes to SMTP at once
if SendGrid failed, and otherwise the message is queued again with backoff.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.notifications_verification import VerificationActivities
from relay.crypto import Keyring
from relay.db import utcnow
from relay.errors import ErrorCode
from relay.inbound import repository as inbox
from relay.ledger import Ledger
from relay.notifications import devices, effects, repository
from relay.notifications.contracts import (
    ApplyEventsInput,
    ApplyEventsResult,
    Channel,
    EnqueueChannelInput,
    EnqueueChannelResult,
    FinishNotificationInput,
    MessageSettlement,
    NotificationStatus,
    Provider,
    ProviderEvent,
    SendPumpInput,
    SendPumpResult,
    suppression_channel,
)
from relay.notifications.providers import Providers
from relay.notifications.repository import Claimed, NewMessage, Outcome
from relay.notifications.senders import Outgoing, Sender, Sent
from relay.settings import Settings
from relay.worker_context import WorkerContext

# Sends in flight at once per pump; a slow provider holds at most this many.
SEND_CONCURRENCY = 64
# Attempts of a message whose providers keep failing without acting, then FAILED.
MAX_ATTEMPTS = 8
FIRST_RETRY = timedelta(seconds=5)
MAX_RETRY = timedelta(minutes=10)
UNKNOWN_OUTCOME = ErrorCode.UNKNOWN_OUTCOME.value
IN_PROGRESS = "CALL_IN_PROGRESS"
HEARTBEAT_SECONDS = 5.0


def retry_delay(attempt: int, asked: timedelta | None = None) -> timedelta:
    """5 s, 10 s, 20 s … up to 10 min; at least what the provider asked for (Retry-After)."""
    delay = min(FIRST_RETRY * (2 ** max(attempt - 1, 0)), MAX_RETRY)
    return max(delay, asked) if asked else delay


def mask_token(token: str) -> str:
    return f"…{token[-8:]}" if len(token) > 8 else "…"


class NotificationActivities:
    """The send pump and the multi-channel steps, over the worker's senders."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        keyring: Keyring,
        client: Client,
        ledger: Ledger,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._keyring = keyring
        self._client = client
        self._ledger = ledger
        self._clock = clock
        self.providers = Providers(settings)
        self._verification: VerificationActivities | None = None

    @classmethod
    def from_context(cls, context: WorkerContext) -> NotificationActivities:
        activities = cls(
            settings=context.settings,
            engine=context.engine,
            keyring=context.keyring,
            client=context.client,
            ledger=context.ledger,
        )
        context.closers.append(activities.providers.close)
        activities._verification = VerificationActivities.from_context(context)
        return activities

    def activities(self) -> list[Callable[..., Any]]:
        own: list[Callable[..., Any]] = [
            self.pump_notifications,
            self.apply_provider_events,
            self.enqueue_channel,
            self.message_status,
            self.finish_notification,
        ]
        # Verification codes are this capability's too (activities/notifications_verification.py).
        if self._verification is not None:
            own += self._verification.activities()
        return own

    # --- the pump ---------------------------------------------------------------------------

    @activity.defn
    async def pump_notifications(self, params: SendPumpInput) -> SendPumpResult:
        """Claim due messages, send them, record the results; repeat for `budget_seconds`
        (heartbeating), then return so the workflow can continue-as-new."""
        result = SendPumpResult()
        deadline = time.monotonic() + params.budget_seconds
        lease = timedelta(seconds=params.lease_seconds)
        # A slow provider may hold a batch longer than the heartbeat timeout: beat apart.
        beating = asyncio.create_task(_heartbeat_every(HEARTBEAT_SECONDS))
        try:
            await self._pump(params, result, deadline, lease)
        finally:
            beating.cancel()
        return result

    async def _pump(
        self, params: SendPumpInput, result: SendPumpResult, deadline: float, lease: timedelta
    ) -> None:
        # A worker shutting down finishes its batch and returns (the next pump, on whichever
        # worker runs, takes what is left).
        while time.monotonic() < deadline and not activity.is_worker_shutdown():
            claimed = await asyncio.to_thread(
                repository.claim,
                self._engine,
                now=self._clock(),
                lease=lease,
                limit=params.batch_size,
            )
            if not claimed:
                await asyncio.sleep(params.poll_seconds)
                continue
            outcomes = await self.send_claimed(claimed)
            changes = await asyncio.to_thread(
                repository.record, self._engine, outcomes, now=self._clock()
            )
            await effects.follow_up(self._engine, self._client, changes)
            for outcome in outcomes:
                if outcome.status is NotificationStatus.SENT:
                    result.sent += 1
                elif outcome.status is not None:
                    result.failed += 1

    async def send_claimed(self, claimed: list[Claimed]) -> list[Outcome]:
        """One outcome per claimed message: bulk chunks as one request each; the rest
        through the ledger as one batch per provider (`SEND_CONCURRENCY` calls at a time),
        falling back message by message to the channel's next provider."""
        gate = asyncio.Semaphore(SEND_CONCURRENCY)
        chunks: dict[tuple[str, int], list[Claimed]] = defaultdict(list)
        singles: list[Claimed] = []
        for message in claimed:
            if message.batch_id is not None and message.batch_chunk is not None:
                chunks[(message.batch_id, message.batch_chunk)].append(message)
            else:
                singles.append(message)

        async def chunk(key: tuple[str, int], messages: list[Claimed]) -> list[Outcome]:
            async with gate:
                return await self._send_chunk(key, messages)

        parts = await asyncio.gather(
            self._send_singles(singles, gate),
            *(chunk(key, messages) for key, messages in chunks.items()),
        )
        return [outcome for part in parts for outcome in part]

    def _outgoing(self, message: Claimed, content: dict[str, Any]) -> Outgoing:
        callback = None
        if message.channel in (Channel.SMS, Channel.WHATSAPP):
            callback = (
                f"{self._settings.base_url}/webhooks/twilio/status?notificationId={message.id}"
            )
        return Outgoing(
            id=message.id,
            channel=message.channel,
            to=message.to,
            content=content,
            status_callback=callback,
        )

    async def _prepare(self, message: Claimed) -> Outgoing | Outcome:
        """The message opened for sending, or the outcome that settles it unsent."""
        content = repository.open_content(self._keyring, message.id, message.content)
        outgoing = self._outgoing(message, content)
        if message.channel is Channel.PUSH:
            tokens = content.get("tokens") or await asyncio.to_thread(
                devices.tokens_for_user, self._engine, message.user_id or ""
            )
            if not tokens:
                return Outcome(
                    message.id,
                    message.attempts,
                    NotificationStatus.FAILED,
                    error_code="NO_DEVICES",
                    error_message="the user has no registered device",
                )
            outgoing.tokens = list(tokens)
        if not self.providers.for_channel(message.channel):
            return Outcome(
                message.id,
                message.attempts,
                NotificationStatus.FAILED,
                error_code=ErrorCode.PROVIDER_NOT_CONFIGURED.value,
                error_message=f"no provider is configured for {message.channel.value}",
            )
        return outgoing

    async def _send_singles(
        self, messages: list[Claimed], gate: asyncio.Semaphore
    ) -> list[Outcome]:
        outcomes: dict[str, Outcome] = {}
        by_provider: dict[Provider, list[tuple[Claimed, Outgoing, Sender]]] = defaultdict(list)
        for message in messages:
            prepared = await self._prepare(message)
            if isinstance(prepared, Outcome):
                outcomes[message.id] = prepared
                continue
            first = self.providers.for_channel(message.channel)[0]
            by_provider[first.provider].append((message, prepared, first))

        def call(sender: Sender, outgoing: Outgoing) -> Callable[[], Any]:
            async def send() -> dict[str, Any]:
                async with gate:
                    return (await sender.send(outgoing)).as_dict()

            return send

        async def batch(provider: Provider, items: list[tuple[Claimed, Outgoing, Sender]]) -> None:
            results = await self._ledger.run_many(
                [(_key(m.id, s), call(s, o)) for m, o, s in items],
                provider=provider.value,
                operation="send",
            )
            for (message, outgoing, sender), result in zip(items, results, strict=True):
                if not isinstance(result, ApplicationError):
                    outcomes[message.id] = await self._sent(message, Sent.from_dict(result))
                    continue
                settled = self._settled_failure(message, sender, result)
                if settled is not None:
                    outcomes[message.id] = settled
                else:  # the provider did not act: the channel's next one may
                    outcomes[message.id] = await self._send_one(
                        message, outgoing, skip=1, last=result
                    )

        await asyncio.gather(*(batch(p, items) for p, items in by_provider.items()))
        return [outcomes[message.id] for message in messages]

    async def _send_one(
        self,
        message: Claimed,
        outgoing: Outgoing | None = None,
        *,
        skip: int = 0,
        last: ApplicationError | None = None,
    ) -> Outcome:
        """One message through the channel's providers in order (after `skip` of them)."""
        if outgoing is None:
            prepared = await self._prepare(message)
            if isinstance(prepared, Outcome):
                return prepared
            outgoing = prepared
        for sender in self.providers.for_channel(message.channel)[skip:]:
            try:
                raw = await self._ledger.run(
                    _key(message.id, sender),
                    lambda sender=sender: _as_dict(sender.send(outgoing)),  # type: ignore[misc]
                    provider=sender.provider.value,
                    operation="send",
                )
            except ApplicationError as exc:
                settled = self._settled_failure(message, sender, exc)
                if settled is not None:
                    return settled
                last = exc  # the provider did not act: the next one may, or a retry
                continue
            return await self._sent(message, Sent.from_dict(raw))
        return self._retry_or_fail(message, last)

    def _settled_failure(
        self, message: Claimed, sender: Sender, exc: ApplicationError
    ) -> Outcome | None:
        if exc.type == UNKNOWN_OUTCOME:
            return Outcome(
                message.id,
                message.attempts,
                NotificationStatus.UNKNOWN,
                provider=sender.provider.value,
                error_code=UNKNOWN_OUTCOME,
                error_message="the send's outcome is unknown; it is not sent again blindly",
            )
        if exc.non_retryable:
            return Outcome(
                message.id,
                message.attempts,
                NotificationStatus.FAILED,
                provider=sender.provider.value,
                error_code=exc.type or ErrorCode.PROVIDER_ERROR.value,
                error_message=exc.message,
            )
        return None

    def _retry_or_fail(self, message: Claimed, last: ApplicationError | None) -> Outcome:
        code = (last.type if last else None) or ErrorCode.PROVIDER_ERROR.value
        text = last.message if last else "no provider answered"
        if code != IN_PROGRESS and message.attempts >= MAX_ATTEMPTS:
            return Outcome(
                message.id,
                message.attempts,
                NotificationStatus.FAILED,
                error_code=code,
                error_message=text,
            )
        asked = last.next_retry_delay if last else None
        if code == IN_PROGRESS:  # another attempt holds the call: look again shortly
            delay = asked or timedelta(seconds=2)
        else:
            delay = retry_delay(message.attempts, asked)
        return Outcome(
            message.id,
            message.attempts,
            retry_at=self._clock() + delay,
            error_code=code,
            error_message=text,
        )

    async def _sent(self, message: Claimed, sent: Sent) -> Outcome:
        result = None
        if sent.tokens:
            dead = [t.token for t in sent.tokens if t.remove]
            if dead:
                await asyncio.to_thread(devices.remove_tokens, self._engine, dead)
            result = {
                "sent": sum(1 for t in sent.tokens if t.ok),
                "failed": sum(1 for t in sent.tokens if not t.ok),
                "removedTokens": [mask_token(token) for token in dead],
                "errors": sorted({t.error_code for t in sent.tokens if t.error_code}),
            }
        return Outcome(
            message.id,
            message.attempts,
            sent.status,
            provider=sent.provider.value,
            provider_message_id=sent.provider_message_id,
            error_code=sent.error_code,
            error_message=sent.error_message,
            result=result,
        )

    async def _send_chunk(self, key: tuple[str, int], messages: list[Claimed]) -> list[Outcome]:
        """A bulk chunk: one SendGrid request for up to 1,000 recipients; without SendGrid
        (or when it fails without acting) each recipient goes on its own (SMTP)."""
        from relay.notifications import sendgrid

        if not sendgrid.SendGridSender.configured(self._settings):
            return [await self._send_one(message) for message in messages]
        sender = self.providers.for_channel(Channel.EMAIL)[0]
        batch, chunk = key
        outgoing = [
            self._outgoing(m, repository.open_content(self._keyring, m.id, m.content))
            for m in messages
        ]

        async def call() -> dict[str, Any]:
            sent = await sender.send_bulk(outgoing)  # type: ignore[attr-defined]
            return {m.id: s.as_dict() for m, s in zip(outgoing, sent, strict=True)}

        try:
            raw = await self._ledger.run(
                f"notification-bulk-{batch}:{chunk}:sendgrid",
                call,
                provider="sendgrid",
                operation="send_bulk",
            )
        except ApplicationError as exc:
            if exc.type == UNKNOWN_OUTCOME or exc.non_retryable:
                return [
                    self._settled_failure(m, sender, exc) or self._retry_or_fail(m, exc)
                    for m in messages
                ]
            return [await self._send_one(message) for message in messages]
        return [await self._sent(m, Sent.from_dict(raw[m.id])) for m in messages]

    # --- provider callbacks: the recovery path ------------------------------------------------

    @activity.defn
    async def apply_provider_events(self, params: ApplyEventsInput) -> ApplyEventsResult:
        """Apply inbox events a route recorded but could not apply (it died, or the database
        failed after recording): the inbound forwarder signalled them to the dispatcher."""
        parsed: list[ProviderEvent] = []
        for inbox_id in params.inbox_ids:
            row = await asyncio.to_thread(inbox.load, self._engine, uuid.UUID(inbox_id))
            if row is None:
                continue
            payload = inbox.open_payload(self._keyring, row)
            parsed.extend(parse_stored(row.provider, payload))
        changes, applied = await asyncio.to_thread(
            repository.apply, self._engine, parsed, now=self._clock()
        )
        await effects.follow_up(self._engine, self._client, changes)
        return ApplyEventsResult(applied=applied)

    # --- a multi-channel notification ---------------------------------------------------------

    @activity.defn
    async def enqueue_channel(self, params: EnqueueChannelInput) -> EnqueueChannelResult:
        """Queue the notification's message for one channel (once per step: the key makes
        a retried activity land on the same message)."""
        return await asyncio.to_thread(self._enqueue_channel, params)

    def _enqueue_channel(self, params: EnqueueChannelInput) -> EnqueueChannelResult:
        parent = repository.load(self._engine, params.notification_id)
        if parent is None:
            return EnqueueChannelResult(None, NotificationStatus.FAILED.value, "NOT_FOUND")
        content = repository.open_content(self._keyring, parent.id, parent.content)
        channel = Channel(params.channel)
        part: dict[str, Any] = dict(content.get(channel.value) or {})
        to = part.pop("to", None)
        kind = suppression_channel(channel)
        if (
            kind is not None
            and to
            and not parent.critical
            and repository.suppressed(self._engine, kind, [to])
        ):
            return EnqueueChannelResult(
                None, NotificationStatus.FAILED.value, "RECIPIENT_SUPPRESSED"
            )
        (queued,) = repository.enqueue(
            self._engine,
            self._keyring,
            [
                NewMessage(
                    channel=channel,
                    content=part,
                    to=to,
                    user_id=parent.user_id,
                    idempotency_key=f"{parent.id}:step:{params.step}",
                    critical=parent.critical,
                    parent_id=parent.id,
                )
            ],
        )
        return EnqueueChannelResult(queued.id, queued.status)

    @activity.defn
    async def message_status(self, message_id: str) -> MessageSettlement:
        row = await asyncio.to_thread(repository.load, self._engine, message_id)
        if row is None:
            return MessageSettlement(NotificationStatus.FAILED.value, settled=True)
        status = NotificationStatus(row.status)
        change = repository.Change(row.id, status, row.provider, row.parent_id, row.channel)
        return MessageSettlement(status.value, settled=effects.settles(change))

    @activity.defn
    async def finish_notification(self, params: FinishNotificationInput) -> None:
        changes = await asyncio.to_thread(
            repository.finish_parent, self._engine, params, now=self._clock()
        )
        await effects.follow_up(self._engine, None, changes)


def _key(notification_id: str, sender: Sender) -> str:
    return f"notification-{notification_id}:{sender.provider.value}"


async def _heartbeat_every(seconds: float) -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(seconds)


async def _as_dict(sending: Any) -> dict[str, Any]:
    sent: Sent = await sending
    return sent.as_dict()


def parse_stored(provider: str, payload: Any) -> list[ProviderEvent]:
    """An inbox row's payload back into events (as its route stored it)."""
    if provider == "sendgrid":
        from relay.notifications import sendgrid_events

        return sendgrid_events.parse(json.dumps([payload]).encode())
    if provider == "twilio":
        from relay.notifications import twilio_events

        return [twilio_events.parse_status(payload["params"], payload.get("notificationId"))]
    return []


ACTIVITIES = NotificationActivities
