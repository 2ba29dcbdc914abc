"""The response envelope and the camelCase base model every wire schema uses."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from relay.errors import ErrorCode, RelayError

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; both accepted on input."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class Envelope(ApiModel, Generic[T]):
    success: bool = True
    data: T


class Page(ApiModel, Generic[T]):
    success: bool = True
    data: list[T]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page."
    )


class ErrorBody(ApiModel):
    code: str = Field(examples=["WEBHOOK_NOT_FOUND"])
    message: str = Field(examples=["no webhook endpoint with that id"])
    details: Any = None


class ErrorEnvelope(ApiModel):
    success: bool = False
    error: ErrorBody


def ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries documenting the error envelope for a route's failure statuses."""
    return {status: {"model": ErrorEnvelope} for status in statuses}


def encode_cursor(moment: datetime, row_id: uuid.UUID) -> str:
    """An opaque keyset cursor: the (time, id) of the last row of a page."""
    raw = json.dumps([moment.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    try:
        moment, row_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(moment), uuid.UUID(row_id)
    except (binascii.Error, ValueError, TypeError):
        raise RelayError(
            ErrorCode.VALIDATION_ERROR,
            "cursor is not valid",
            [{"field": "cursor", "in": "query", "message": "pass nextCursor unchanged"}],
        ) from None
