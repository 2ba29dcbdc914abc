"""The Facebook adapter finds the Page to post on and its Page token at /me/accounts with
the connection's user token (the publishing sandbox, in a thread): the user's only Page, or
the one `pageId` names; no Page, several without a choice, or a Page the user does not
manage is ACCOUNT_INCOMPLETE. The Page token reaches no result, message or repr."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from relay.publishing.adapters import (
    MediaItem,
    PublishError,
    PublishRequest,
    PublishState,
)
from relay.publishing.facebook import FacebookAdapter
from relay.sandbox.publishing import (
    SANDBOX_PAGE_ID,
    SANDBOX_TOKENS,
    SANDBOX_USER,
    PublishingSandbox,
    PublishingServer,
    page_id_for,
)

USER_TOKEN = SANDBOX_TOKENS["facebook"]
SECOND_PAGE = page_id_for(SANDBOX_USER, 1)
IMAGE_URL = MediaItem("image/jpeg", 4096, url="https://cdn.example.com/launch.jpg")


@pytest.fixture
def server() -> Iterator[PublishingServer]:
    with PublishingSandbox(port=0).run_in_thread() as running:
        yield running


@pytest.fixture
async def facebook(server: PublishingServer) -> AsyncIterator[FacebookAdapter]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield FacebookAdapter(client, server.sandbox.bases()["facebook"])


def ask(page_id: str | None = None, media: list[MediaItem] | None = None) -> PublishRequest:
    return PublishRequest(
        text="Relay finds the Page",
        access_token=USER_TOKEN,
        media=list(media or []),
        account={"page_id": page_id} if page_id else {},
    )


def posts(server: PublishingServer) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = server.state.posts()["data"]["facebook"]
    return listed


def page_token(server: PublishingServer, page_id: str) -> str:
    (page,) = [p for p in server.state.facebook_pages(SANDBOX_USER) if p.id == page_id]
    return page.token


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def test_posts_on_the_users_only_page_with_its_page_token(
    server: PublishingServer, facebook: FacebookAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    result = await facebook.publish(ask())

    assert result.state is PublishState.PUBLISHED
    assert result.remote_id is not None and result.remote_id.startswith(f"{SANDBOX_PAGE_ID}_")
    (post,) = posts(server)
    assert post["account"] == SANDBOX_PAGE_ID
    token = page_token(server, SANDBOX_PAGE_ID)
    assert post["tokenSha256"] == sha256(token) != sha256(USER_TOKEN)
    assert token not in repr(result) and token not in caplog.text


async def test_several_pages_without_a_choice_is_account_incomplete(
    server: PublishingServer, facebook: FacebookAdapter
) -> None:
    server.state.set_facebook_pages(SANDBOX_USER, 2)

    with pytest.raises(PublishError) as refused:
        await facebook.publish(ask())

    error = refused.value
    assert error.permanent and error.platform_code == "ACCOUNT_INCOMPLETE"
    assert "manages 2 Pages" in error.message and "pageId" in error.message
    failure = error.as_application_error()
    assert failure.type == "ACCOUNT_INCOMPLETE" and failure.non_retryable
    assert posts(server) == []
    for page in server.state.facebook_pages(SANDBOX_USER):
        assert page.token not in str(error) and page.token not in str(failure)


@pytest.mark.parametrize(
    ("pages", "page_id", "says"),
    [
        (0, None, "manages no Page"),
        (1, "999000111222333", "does not manage the Page 999000111222333"),
    ],
)
async def test_no_page_or_a_page_not_managed_is_account_incomplete(
    server: PublishingServer, facebook: FacebookAdapter, pages: int, page_id: str | None, says: str
) -> None:
    server.state.set_facebook_pages(SANDBOX_USER, pages)

    with pytest.raises(PublishError) as refused:
        await facebook.publish(ask(page_id))

    assert refused.value.platform_code == "ACCOUNT_INCOMPLETE" and says in refused.value.message
    assert posts(server) == []


async def test_page_id_chooses_among_pages_across_answers_and_deletes_with_its_token(
    server: PublishingServer,
) -> None:
    server.state.set_facebook_pages(SANDBOX_USER, 2)
    async with httpx.AsyncClient(timeout=30) as client:
        # One Page per answer: the second Page is on /me/accounts' `next`.
        facebook = FacebookAdapter(client, server.sandbox.bases()["facebook"], accounts_page_size=1)

        text = await facebook.publish(ask(SECOND_PAGE))
        photo = await facebook.publish(ask(SECOND_PAGE, [IMAGE_URL]))

        token = page_token(server, SECOND_PAGE)
        assert {p["account"] for p in posts(server)} == {SECOND_PAGE}
        assert {p["tokenSha256"] for p in posts(server)} == {sha256(token)}
        assert text.remote_id is not None and text.remote_id.startswith(f"{SECOND_PAGE}_")
        # The photo's id is bare: its Page is the one in its post URL.
        assert photo.url is not None and f"/{SECOND_PAGE}_" in photo.url
        for result in (text, photo):
            deleted = await facebook.delete(result, USER_TOKEN)
            assert deleted.deleted
        assert all(p["deleted"] for p in posts(server))


async def test_a_user_token_refused_at_me_accounts_is_a_token_rejection(
    server: PublishingServer, facebook: FacebookAdapter
) -> None:
    server.state.revoke_token(USER_TOKEN)

    with pytest.raises(PublishError) as rejected:
        await facebook.publish(ask())

    assert rejected.value.token_rejected
    assert posts(server) == []


async def test_a_5xx_at_me_accounts_is_transient_and_posts_nothing(
    server: PublishingServer, facebook: FacebookAdapter
) -> None:
    server.state.fail_next("facebook", 1, 503, 1)

    with pytest.raises(PublishError) as failed:
        await facebook.publish(ask())

    assert failed.value.transient and failed.value.status == 503
    assert posts(server) == []
    assert (await facebook.publish(ask())).state is PublishState.PUBLISHED


def test_next_keeps_the_token_out_of_the_url_and_stays_on_graphs_host() -> None:
    adapter = FacebookAdapter(httpx.AsyncClient(), "https://graph.facebook.com/v21.0")

    url, query = adapter._next(
        "https://graph.facebook.com/v21.0/me/accounts?access_token=secret&limit=1&after=QQ"
    )
    elsewhere = adapter._next("https://evil.example/v21.0/me/accounts?after=QQ")

    assert url == "https://graph.facebook.com/v21.0/me/accounts"
    assert query == {"limit": "1", "after": "QQ"}
    assert elsewhere == (None, None)
