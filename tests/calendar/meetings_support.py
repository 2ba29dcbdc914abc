"""Helpers for the meeting tests: a meeting request, what a run's history holds (decoded
with the stack's codec), and the outgoing events published for a meeting."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.engine import Engine
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from relay.calendar.contracts import meeting_workflow_id
from relay.models.webhooks import WebhookEvent

events_table = WebhookEvent.__table__  # type: ignore[attr-defined]

START = "2026-12-01T15:00:00Z"


def meeting_request(**extra: Any) -> dict[str, Any]:
    return {
        "topic": "Quarterly planning",
        "startTime": START,
        "duration": 45,
        "timezone": "Europe/Paris",
        "agenda": "Q1 goals",
        "settings": {"hostVideo": True, "waitingRoom": True},
    } | extra


def _payloads(message: Message, found: list[Payload]) -> None:
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if descriptor.message_type.GetOptions().map_entry:
            items = list(value.values())
        elif isinstance(value, Message):
            items = [value]
        else:  # a repeated field
            items = list(value)
        for item in items:
            if isinstance(item, Payload):
                found.append(item)
            elif isinstance(item, Message):
                _payloads(item, found)


async def history_text(client: Client, meeting_id: str) -> bytes:
    """Every payload of the meeting's runs, decoded (what an operator could read)."""
    handle = client.get_workflow_handle(meeting_workflow_id(meeting_id))
    history = await handle.fetch_history()
    payloads: list[Payload] = []
    for event in history.events:
        _payloads(event, payloads)
    codec = client.data_converter.payload_codec
    decoded = await codec.decode(payloads) if codec is not None else payloads
    return b"\n".join(payload.data for payload in decoded)


def published(engine: Engine, meeting_id: str) -> list[dict[str, Any]]:
    """The outgoing events published about the meeting: [{type, data}]."""
    with engine.connect() as connection:
        rows = connection.execute(select(events_table.c.type, events_table.c.data))
        return [
            {"type": row.type, "data": row.data}
            for row in rows
            if (row.data or {}).get("meetingId") == meeting_id
        ]
