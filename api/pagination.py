"""The one keyset page loader every list route uses: newest first, opaque cursors."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy.engine import Engine

from api.envelope import decode_cursor, encode_cursor
from relay.db import as_utc


def after_cursor(table: Any, cursor: Any, order_column: str = "created_at") -> Any:
    """Newest first: rows strictly after the cursor's (moment, id)."""
    if cursor is None:
        return None
    moment, row_id = cursor
    column = table.c[order_column]
    return or_(column < moment, and_(column == moment, table.c.id < row_id))


async def newest_first_page(
    engine: Engine,
    table: Any,
    query: Any,
    cursor: str | None,
    limit: int,
    *,
    order_column: str = "created_at",
) -> tuple[list[Any], str | None]:
    """One page of `query` (a Core select over `table`), ordered by `order_column` then id,
    newest first, and the cursor of the next page (None on the last one). A bad cursor
    is a 422 before the database is touched."""
    if (after := after_cursor(table, decode_cursor(cursor), order_column)) is not None:
        query = query.where(after)
    column = table.c[order_column]
    query = query.order_by(column.desc(), table.c.id.desc()).limit(limit + 1)

    def load() -> list[Any]:
        with engine.connect() as connection:
            return list(connection.execute(query))

    rows = await asyncio.to_thread(load)
    page = rows[:limit]
    if len(rows) <= limit:
        return page, None
    last = page[-1]
    return page, encode_cursor(as_utc(getattr(last, order_column)), last.id)  # type: ignore[arg-type]


def page(data: list[Any], next_cursor: str | None) -> dict[str, Any]:
    """The list envelope."""
    return {"success": True, "data": data, "nextCursor": next_cursor}
