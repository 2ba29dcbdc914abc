"""The shared publish limit against the real database (SQLite and PostgreSQL): windows per
provider and connection, concurrent takers never exceeding the limit, the wait until a slot
frees; the limit and API base settings."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from relay.publishing.limits import DEFAULT_LIMITS, Limit, RateLimiter, parse_limits
from relay.publishing.providers import api_bases
from relay.settings import Settings


def test_a_window_fills_then_frees_per_provider_and_connection(engine: Engine) -> None:
    limiter = RateLimiter(engine, {"twitter": Limit(2, timedelta(seconds=10))})
    assert limiter.acquire("twitter", "a", now=100.0) == timedelta(0)
    assert limiter.acquire("twitter", "a", now=101.0) == timedelta(0)
    # Full: the wait is until the window that began at 100 s ends.
    assert limiter.acquire("twitter", "a", now=104.0) == timedelta(seconds=6)
    # Another connection, and a provider with no limit, have their own budgets.
    assert limiter.acquire("twitter", "b", now=104.0) == timedelta(0)
    assert limiter.acquire("linkedin", "a", now=104.0) == timedelta(0)
    # The window over: a new one starts.
    assert limiter.acquire("twitter", "a", now=110.0) == timedelta(0)
    assert limiter.acquire("twitter", "a", now=110.5) == timedelta(0)
    assert limiter.acquire("twitter", "a", now=111.0) == timedelta(seconds=9)


def test_concurrent_workers_never_take_more_than_the_limit(engine: Engine) -> None:
    limiter = RateLimiter(engine, {"tiktok": Limit(5, timedelta(minutes=1))})
    taken: list[bool] = []
    lock = threading.Lock()

    def take() -> None:
        got = limiter.acquire("tiktok", "shared", now=1000.0) == timedelta(0)
        with lock:
            taken.append(got)

    threads = [threading.Thread(target=take) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 12
    assert taken.count(True) == 5


def test_limits_parse_over_the_defaults() -> None:
    limits = parse_limits("twitter=10/1m, youtube=2/1d")
    assert limits["twitter"] == Limit(10, timedelta(minutes=1))
    assert limits["youtube"] == Limit(2, timedelta(days=1))
    assert limits["tiktok"] == DEFAULT_LIMITS["tiktok"]
    with pytest.raises(ValueError, match="provider=count/window"):
        parse_limits("twitter=lots")


def test_api_bases_are_scheme_host_and_port_with_graphs_version_added() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        twitter_api_base="http://127.0.0.1:9400",
        facebook_api_base="http://127.0.0.1:9400/",
        instagram_api_base="http://127.0.0.1:9400/v22.0",
        youtube_api_base="http://127.0.0.1:9400",
    )
    assert api_bases(settings) == {
        "twitter": "http://127.0.0.1:9400",
        "facebook": "http://127.0.0.1:9400/v21.0",
        "instagram": "http://127.0.0.1:9400/v22.0",
        "youtube": "http://127.0.0.1:9400/",
    }
