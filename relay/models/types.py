"""Column types shared by the models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

from relay.db import as_utc


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware on PostgreSQL; on SQLite naive values come back marked UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> datetime | None:
        # SQLite stores the wall-clock digits and drops the offset, so an aware value
        # in another zone would come back hours off: store every instant as UTC.
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value  # type: ignore[no-any-return]

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        return as_utc(value)


# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")
