"""The publishing sandbox's Facebook Pages: GET /me/accounts hands a user's Pages out with
their Page tokens (Graph's shape, paged), Page edges take only that Page's token, and the
control gives a user a second Page or none."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.oauth.catalog import load_catalog
from relay.sandbox.oauth_providers import OAuthProvidersSandbox
from relay.sandbox.publishing import (
    SANDBOX_PAGE_ID,
    SANDBOX_TOKENS,
    SANDBOX_USER,
    PublishingSandbox,
    PublishingServer,
    page_id_for,
)
from tests.sandbox.test_oauth_providers_server import connect
from tests.sandbox.test_publishing_server import eventually

USER_TOKEN = SANDBOX_TOKENS["facebook"]


@pytest.fixture
def server() -> Iterator[PublishingServer]:
    with PublishingSandbox(port=0).run_in_thread() as running:
        yield running


@pytest.fixture
def base(server: PublishingServer) -> str:
    return server.sandbox.bases()["facebook"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def accounts(base: str, token: str = USER_TOKEN, **params: str) -> httpx.Response:
    return httpx.get(f"{base}/me/accounts", params=params, headers=bearer(token))


def set_pages(server: PublishingServer, count: int, **who: str) -> dict[str, Any]:
    answer = httpx.post(f"{server.api_base}/_sandbox/facebook-pages", json={"count": count} | who)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def forbidden(answer: httpx.Response) -> bool:
    error = answer.json()["error"]
    return (
        answer.status_code == 403
        and error["code"] == 200
        and error["type"] == "OAuthException"
        and "requires a Page access token" in error["message"]
    )


def test_me_accounts_lists_the_users_page_with_its_page_token(base: str) -> None:
    answer = accounts(base)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    (page,) = body["data"]
    assert page["id"] == SANDBOX_PAGE_ID and page["name"] == "Sandbox Page"
    assert page["category"] and "CREATE_CONTENT" in page["tasks"]
    assert page["access_token"] and page["access_token"] != USER_TOKEN
    assert set(body["paging"]["cursors"]) == {"before", "after"} and "next" not in body["paging"]
    # The same Page token each time; `fields` narrows the answer.
    narrowed = accounts(base, fields="id,access_token").json()["data"]
    assert narrowed == [{"id": SANDBOX_PAGE_ID, "access_token": page["access_token"]}]


def test_page_edges_take_only_that_pages_token(server: PublishingServer, base: str) -> None:
    (page,) = accounts(base).json()["data"]
    set_pages(server, 1, user="someone-else")
    other = server.state.facebook_pages("someone-else")[0]
    server.sandbox.register_token("facebook", "someone-elses-user-token")

    as_user = httpx.post(
        f"{base}/{page['id']}/feed", data={"message": "hi"}, headers=bearer(USER_TOKEN)
    )
    as_other_page = httpx.post(
        f"{base}/{page['id']}/feed", data={"message": "hi"}, headers=bearer(other.token)
    )
    photo_as_user = httpx.post(
        f"{base}/{page['id']}/photos",
        data={"url": "https://x.test/a.jpg"},
        headers=bearer(USER_TOKEN),
    )
    posted = httpx.post(
        f"{base}/{page['id']}/feed", data={"message": "hi"}, headers=bearer(page["access_token"])
    )

    assert forbidden(as_user) and forbidden(as_other_page) and forbidden(photo_as_user)
    assert posted.status_code == 200, posted.text
    post_id = posted.json()["id"]
    (listed,) = server.state.posts()["data"]["facebook"]
    assert listed["account"] == page["id"]
    assert listed["tokenSha256"] == hashlib.sha256(page["access_token"].encode()).hexdigest()
    assert forbidden(httpx.delete(f"{base}/{post_id}", headers=bearer(USER_TOKEN)))
    assert forbidden(httpx.delete(f"{base}/{post_id}", headers=bearer(other.token)))
    deleted = httpx.delete(f"{base}/{post_id}", headers=bearer(page["access_token"]))
    assert deleted.json() == {"success": True}
    # A Page token is not a user's: it has no Pages of its own.
    as_page = accounts(base, page["access_token"])
    assert as_page.status_code == 400 and as_page.json()["error"]["code"] == 100


def test_a_second_page_none_and_paging(server: PublishingServer, base: str) -> None:
    two = set_pages(server, 2, token=USER_TOKEN)
    assert two["user"] == SANDBOX_USER
    assert [p["id"] for p in two["pages"]] == [SANDBOX_PAGE_ID, page_id_for(SANDBOX_USER, 1)]
    first = accounts(base, limit="1").json()
    assert [p["id"] for p in first["data"]] == [SANDBOX_PAGE_ID]
    # `next` repeats the query; a token given in the header is not put into it.
    assert "access_token" not in first["paging"]["next"]
    second = httpx.get(first["paging"]["next"], headers=bearer(USER_TOKEN)).json()
    assert [p["id"] for p in second["data"]] == [page_id_for(SANDBOX_USER, 1)]
    assert "next" not in second["paging"]
    assert len(accounts(base).json()["data"]) == 2

    # Each Page's token posts on that Page only.
    pages = {p["id"]: p["access_token"] for p in accounts(base).json()["data"]}
    second_page = page_id_for(SANDBOX_USER, 1)
    on_second = httpx.post(
        f"{base}/{second_page}/feed", data={"message": "two"}, headers=bearer(pages[second_page])
    )
    assert on_second.json()["id"].startswith(f"{second_page}_")
    assert forbidden(
        httpx.post(
            f"{base}/{second_page}/feed", data={"m": "x"}, headers=bearer(pages[SANDBOX_PAGE_ID])
        )
    )

    dropped = pages[second_page]
    assert set_pages(server, 0, user=SANDBOX_USER)["pages"] == []
    assert accounts(base).json() == {"data": []}
    # The Page token of a Page the user no longer manages stops working.
    gone = httpx.post(f"{base}/{second_page}/feed", data={"message": "x"}, headers=bearer(dropped))
    assert gone.status_code == 401


def test_an_oauth_sandbox_user_has_a_page_of_their_own(
    server: PublishingServer, base: str, tmp_path: Path
) -> None:
    oauth = OAuthProvidersSandbox(port=0, providers_file=tmp_path / "providers.yaml")
    with oauth.run_in_thread() as running:
        running.sandbox.register_token_sink(server.sandbox.token_sink)
        catalog = load_catalog(Path(running.sandbox.environment()["PROVIDERS_FILE"]))
        facebook = catalog.require("facebook")
        token = connect(facebook).access_token
        subject = running.state.introspect(token)["sub"]
        # The OAuth sandbox tells the publishing sandbox (its token sink) in a moment.
        assert eventually(lambda: server.state.facebook_user(token) == subject)

    answer = accounts(base, token)

    assert answer.status_code == 200, answer.text
    (page,) = answer.json()["data"]
    assert page["id"] == page_id_for(subject, 0) != SANDBOX_PAGE_ID
    # Another user's Pages are not this token's to read.
    other = httpx.get(f"{base}/{SANDBOX_USER}/accounts", headers=bearer(token))
    assert other.status_code == 400


def test_the_control_refuses_bad_input(server: PublishingServer) -> None:
    url = f"{server.api_base}/_sandbox/facebook-pages"

    for body in (
        {"count": 1},
        {"user": "u", "count": -1},
        {"user": "u", "count": 21},
        {"token": "not-a-user-token", "count": 1},
        {"user": "u"},
    ):
        assert httpx.post(url, json=body).status_code == 400, body
