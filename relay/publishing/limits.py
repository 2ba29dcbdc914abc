"""Client-side publish limits, per provider and per connection, shared by every worker.

Each platform caps how often one account may post; going over earns 429s and, on some
platforms, a penalty box. Relay counts publishes itself, before the call, in a fixed window
per `provider:integration` kept in the database (`publish_rate_windows`), so every worker
process draws from the same budget:

    take a slot       UPDATE … SET count = count + 1 WHERE key AND window current AND
                      count < limit                         (one row changed: go)
    window over       UPDATE … SET window_start = now, count = 1 WHERE key AND window
                      ended                                 (one row changed: go)
    first publish     INSERT … ON CONFLICT DO NOTHING        (inserted: go; else look again)
    otherwise         full: wait until the window ends

Each step is one conditional statement, atomic on SQLite (writes are serialized) and on
PostgreSQL (an UPDATE re-checks its WHERE on the row it locked), so two workers never both
take the last slot. The publish activity turns "wait" into a retryable failure whose
`next_retry_delay` is the time until a slot frees: Temporal waits, nothing polls.

`PUBLISH_RATE_LIMITS` overrides the defaults: `twitter=100/15m,youtube=6/1d`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from relay.models.publishing import PublishRateWindow
from relay.settings import parse_duration


@dataclass(frozen=True)
class Limit:
    count: int
    window: timedelta

    def __str__(self) -> str:
        return f"{self.count} per {int(self.window.total_seconds())}s"


# From each platform's documented posting limits for one account:
#   X: POST /2/tweets, 100 requests per 15 minutes per user;
#   LinkedIn: member posts, 150 a day (kept to 100 under the application's daily quota);
#   Facebook Pages: 200 calls per hour per user (Graph's platform rate limit);
#   Instagram: 100 API-published posts per 24 hours (content_publishing_limit);
#   YouTube: videos.insert costs 1,600 of the default 10,000 daily quota units: 6 a day;
#   TikTok: the Content Posting API's init allows 6 requests a minute per user token.
DEFAULT_LIMITS: dict[str, Limit] = {
    "twitter": Limit(100, timedelta(minutes=15)),
    "linkedin": Limit(100, timedelta(days=1)),
    "facebook": Limit(200, timedelta(hours=1)),
    "instagram": Limit(100, timedelta(days=1)),
    "youtube": Limit(6, timedelta(days=1)),
    "tiktok": Limit(6, timedelta(minutes=1)),
}

_TABLE = PublishRateWindow.__table__  # type: ignore[attr-defined]
_INSERT_ATTEMPTS = 3


def parse_limits(text: str | None) -> dict[str, Limit]:
    """DEFAULT_LIMITS with `text`'s `provider=count/window` entries over them."""
    limits = dict(DEFAULT_LIMITS)
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        provider, _, rule = item.partition("=")
        count, _, window = rule.partition("/")
        if not provider.strip() or not count.strip().isdigit() or not window.strip():
            raise ValueError(
                f"PUBLISH_RATE_LIMITS: {item!r} is not provider=count/window (twitter=100/15m)"
            )
        limits[provider.strip()] = Limit(int(count), parse_duration(window.strip()))
    return limits


def rate_key(provider: str, integration_id: str) -> str:
    return f"{provider}:{integration_id}"


class RateLimiter:
    """The shared windows (see the module docstring). Synchronous: call it in a thread."""

    def __init__(self, engine: Engine, limits: dict[str, Limit]) -> None:
        self._engine = engine
        self._limits = limits

    def limit_for(self, provider: str) -> Limit | None:
        return self._limits.get(provider)

    def acquire(self, provider: str, integration_id: str, now: float | None = None) -> timedelta:
        """Take a slot: timedelta(0) when taken, else how long until one frees."""
        limit = self._limits.get(provider)
        if limit is None or limit.count <= 0:
            return timedelta(0)
        key = rate_key(provider, integration_id)
        now_ms = int((now if now is not None else time.time()) * 1000)
        window_ms = int(limit.window.total_seconds() * 1000)
        current = _TABLE.c.window_start_ms > now_ms - window_ms
        for _ in range(_INSERT_ATTEMPTS):
            with self._engine.begin() as connection:
                taken = connection.execute(
                    update(_TABLE)
                    .where(_TABLE.c.key == key, current, _TABLE.c.count < limit.count)
                    .values(count=_TABLE.c.count + 1)
                ).rowcount
                if taken:
                    return timedelta(0)
                renewed = connection.execute(
                    update(_TABLE)
                    .where(_TABLE.c.key == key, _TABLE.c.window_start_ms <= now_ms - window_ms)
                    .values(window_start_ms=now_ms, count=1)
                ).rowcount
                if renewed:
                    return timedelta(0)
                start = connection.execute(
                    select(_TABLE.c.window_start_ms).where(_TABLE.c.key == key)
                ).scalar()
                if start is not None:
                    return timedelta(milliseconds=max(1, int(start) + window_ms - now_ms))
                upsert = (
                    postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
                )
                # RETURNING, not rowcount: psycopg reports -1 for an INSERT … ON CONFLICT.
                inserted = connection.execute(
                    upsert(_TABLE)
                    .values(key=key, window_start_ms=now_ms, count=1)
                    .on_conflict_do_nothing(index_elements=["key"])
                    .returning(_TABLE.c.key)
                ).first()
                if inserted is not None:
                    return timedelta(0)
            # Another worker inserted the window first: take a slot in it.
        return timedelta(seconds=1)
