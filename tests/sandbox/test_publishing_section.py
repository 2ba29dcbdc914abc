"""The /sandbox page's publishing section against the publishing sandbox in a thread: which
settings make it apply, what it lists (platforms, posts with their status, media being
processed) and what its controls do to the sandbox. The page around it, with `relay dev`,
is tests/ops/test_dev_publishing.py and tests/ops/test_sandbox_publishing_browser.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from relay.sandbox.publishing import SANDBOX_TOKENS, PublishingSandbox, PublishingServer
from relay.sandbox.sections import PublishingSection, SandboxError, sections_for
from relay.settings import Settings
from tests.sandbox.test_publishing_server import auth, tiktok_init


@pytest.fixture
def server() -> Iterator[PublishingServer]:
    with PublishingSandbox(port=0, processing_seconds=600).run_in_thread() as s:
        yield s


def pointed_at(
    make_settings: Callable[..., Settings], base: str, *providers: str, **extra: Any
) -> Settings:
    return make_settings(
        relay_env="development", **{f"{p}_api_base": base for p in providers}, **extra
    )


def test_applies_to_loopback_bases_in_development_only(
    make_settings: Callable[..., Settings],
) -> None:
    local = "http://127.0.0.1:4321"

    assert PublishingSection in sections_for(pointed_at(make_settings, local, "tiktok"))
    assert PublishingSection not in sections_for(make_settings(relay_env="development"))
    assert PublishingSection not in sections_for(
        pointed_at(make_settings, "https://api.x.com", "twitter")
    )
    assert PublishingSection not in sections_for(
        make_settings(relay_env="production", twitter_api_base=local)
    )


async def test_lists_posts_and_runs_its_controls(
    server: PublishingServer, make_settings: Callable[..., Settings]
) -> None:
    settings = pointed_at(make_settings, server.api_base, "twitter", "tiktok")
    bases = server.sandbox.bases()
    tweet = httpx.post(
        f"{bases['twitter']}/2/tweets", json={"text": "hello " * 30}, headers=auth("twitter")
    )
    tiktok_init(bases["tiktok"], {"source": "PULL_FROM_URL", "video_url": "https://x.test/v"})

    async with httpx.AsyncClient() as http:
        section = PublishingSection(settings, http)
        view = await section.view()
        platforms, posts, processing = view.tables
        assert not view.problems
        assert [row.key for row in platforms.rows] == ["twitter", "tiktok"]
        assert [c.action for c in platforms.rows[0].controls] == [
            "next-429",
            "next-500",
            "fail-next-media",
        ]
        by_platform = {row.cells[0]: row for row in posts.rows}
        x_row, tiktok_row = by_platform["X"], by_platform["TikTok"]
        assert x_row.key == tweet.json()["data"]["id"]
        assert x_row.cells[2].endswith("…") and len(x_row.cells[2]) == 80
        assert x_row.cells[3:5] == ("published", "no") and not x_row.controls
        assert tiktok_row.cells[3] == "processing"
        assert [c.target for c in tiktok_row.controls] == [f"tiktok:{tiktok_row.key}"] * 2
        # TikTok's publish_id ("v_pub_file~…") is no page target: it is ended by its post.
        assert processing.rows[0].cells[3] == "processing" and not processing.rows[0].controls

        said = await section.act("fail", f"tiktok:{tiktok_row.key}")
        assert said == f"TikTok {tiktok_row.key}: processing failed"
        assert await section.act("next-500", "twitter") == "X: the next API call answers 500"
        with pytest.raises(SandboxError, match="already failed"):
            await section.act("finish", f"tiktok:{tiktok_row.key}")
        with pytest.raises(SandboxError, match="not a sandboxed platform"):
            await section.act("next-429", "youtube")
        with pytest.raises(SandboxError, match="names no post"):
            await section.act("finish", "linkedin:urn")

        view = await section.view()
        assert {row.cells[0]: row.cells[3] for row in view.tables[1].rows}["TikTok"] == "failed"
        assert SANDBOX_TOKENS["twitter"] not in repr(view)

    failing = httpx.post(
        f"{bases['twitter']}/2/tweets", json={"text": "x"}, headers=auth("twitter")
    )
    assert failing.status_code == 500


async def test_a_sandbox_that_is_down_is_a_problem_not_an_error(
    make_settings: Callable[..., Settings],
) -> None:
    gone = PublishingSandbox()  # a free port nothing listens on
    settings = pointed_at(make_settings, gone.api_base, "linkedin")
    async with httpx.AsyncClient() as http:
        view = await PublishingSection(settings, http).view()
    assert view.tables == () and view.problems[0].startswith("Posts: the Publishing sandbox")
