"""What follows a status change, wherever it was recorded (the send pump, a provider
callback's route, the recovery activity): the outgoing webhook, and the word to a
multi-channel notification's workflow that its channel settled."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.engine import Engine
from temporalio.client import Client

from relay.notifications.contracts import (
    CHANNEL_OUTCOME_SIGNAL,
    CONFIRMS_DELIVERY,
    FINAL,
    ChannelOutcome,
    NotificationStatus,
    notification_workflow_id,
)
from relay.notifications.repository import Change
from relay.webhooks.publish import publish_event

log = logging.getLogger("relay.notifications")

EVENT_TYPES = {
    NotificationStatus.DELIVERED: "notification.delivered",
    NotificationStatus.FAILED: "notification.failed",
    NotificationStatus.UNDELIVERED: "notification.failed",
    NotificationStatus.BOUNCED: "notification.bounced",
}


def settles(change: Change) -> bool:
    """Whether a channel's message is done for its notification: a final status, or SENT
    where the provider never reports delivery (SMTP, FCM)."""
    if change.status in FINAL:
        return True
    return change.status is NotificationStatus.SENT and change.provider not in {
        p.value for p in CONFIRMS_DELIVERY
    }


def publish_changes(engine: Engine, changes: list[Change]) -> None:
    """One outgoing webhook per final status; the key makes a repeat a no-op."""
    for change in changes:
        event_type = EVENT_TYPES.get(change.status)
        if event_type is None:
            continue
        publish_event(
            engine,
            event_type,
            {
                "notificationId": change.id,
                "parentId": change.parent_id,
                "channel": change.channel,
                "status": change.status.value,
                "provider": change.provider,
                "errorCode": change.error_code,
            },
            idempotency_key=f"notification-{change.id}:{change.status.value}",
        )


async def signal_parents(client: Client | None, changes: list[Change]) -> None:
    """Tell each multi-channel notification its channel settled. Best effort: a lost signal
    only delays the workflow until its fallback timer, which reads the status itself."""
    if client is None:
        return
    for change in changes:
        if change.parent_id is None or not settles(change):
            continue
        with contextlib.suppress(Exception):
            handle = client.get_workflow_handle(notification_workflow_id(change.parent_id))
            await handle.signal(
                CHANNEL_OUTCOME_SIGNAL, ChannelOutcome(change.id, change.status.value)
            )


async def follow_up(engine: Engine, client: Client | None, changes: list[Change]) -> None:
    if not changes:
        return
    await asyncio.to_thread(publish_changes, engine, changes)
    await signal_parents(client, changes)
