"""Connections made through the OAuth flow with NO metadata publish: the account is what
the provider told at connect (the userinfo's ids, the catalog's `account_fields`: LinkedIn's
`sub` → urn:li:person:{sub}, Instagram's `user_id`), and Facebook's Page and its Page token
come from /me/accounts with the connection's long-lived user token at each publish and
delete. Checked at the sandboxes: who posted, and with which token."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest
from sqlmodel import Session

from relay.models.oauth import Integration
from relay.sandbox.publishing import page_id_for
from tests.publishing.conftest import PublishingStack

pytestmark = [pytest.mark.e2e]

JPEG = b"\xff\xd8\xff\xe0" + b"j" * 2000


def _by_provider(publication: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {target["provider"]: target for target in publication["targets"]}


async def _integration(stack: PublishingStack, integration_id: str) -> dict[str, Any]:
    async with stack.http() as http:
        answer = await http.get(f"/v1/integrations/{integration_id}")
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def _subject(stack: PublishingStack, integration_id: str) -> str:
    """The provider's user behind the connection (the OAuth sandbox's subject)."""
    assert stack.oauth is not None
    sub = stack.oauth.state.introspect(stack.access_token(integration_id))["sub"]
    assert isinstance(sub, str) and sub
    return sub


def _provider_data(stack: PublishingStack, integration_id: str) -> dict[str, Any]:
    with Session(stack.engine) as session:
        row = session.get(Integration, uuid.UUID(integration_id))
        assert row is not None
        return dict(row.provider_data or {})


async def _api_provider_data(stack: PublishingStack, integration_id: str) -> dict[str, Any]:
    async with stack.http() as http:
        answer = await http.get(f"/v1/integrations/{integration_id}")
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]["providerData"]
    return data


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def test_connections_without_metadata_publish_as_the_providers_account(
    publishing_stack: PublishingStack,
) -> None:
    stack = publishing_stack
    ids = {p: await stack.connect(p) for p in ("linkedin", "facebook", "instagram")}
    subjects = {p: _subject(stack, i) for p, i in ids.items()}
    # What the userinfo told at connect, kept in the clear (ids, no token).
    assert _provider_data(stack, ids["linkedin"])["sub"] == subjects["linkedin"]
    assert _provider_data(stack, ids["facebook"])["id"] == subjects["facebook"]
    assert _provider_data(stack, ids["instagram"])["user_id"] == subjects["instagram"]
    # The API shows them as providerData (account_fields are public, like public_extras).
    assert (await _api_provider_data(stack, ids["linkedin"]))["sub"] == subjects["linkedin"]
    assert (await _api_provider_data(stack, ids["facebook"]))["id"] == subjects["facebook"]

    text = await stack.publish(
        text="Found my own accounts", integrationIds=[ids["linkedin"], ids["facebook"]]
    )
    image = stack.stored_file(JPEG, "image/jpeg", "launch.jpg", "user-1")
    media = await stack.publish(
        text="And my Instagram", mediaFileIds=[image], integrationIds=[ids["instagram"]]
    )
    assert text.status_code == 201 and media.status_code == 201, (text.text, media.text)
    done = await stack.settled(text.json()["data"]["id"])
    pictured = await stack.settled(media.json()["data"]["id"])

    assert done["status"] == "PUBLISHED", done
    assert pictured["status"] == "PUBLISHED", pictured["targets"]
    (linkedin,) = stack.posts("linkedin")
    assert linkedin["account"] == f"urn:li:person:{subjects['linkedin']}"
    (instagram,) = stack.posts("instagram")
    assert instagram["account"] == subjects["instagram"]
    # Facebook: on the user's Page, with that Page's token (not the user's).
    (page,) = stack.platform.state.facebook_pages(subjects["facebook"])
    assert page.id == page_id_for(subjects["facebook"], 0)
    (facebook,) = stack.posts("facebook")
    assert facebook["account"] == page.id
    assert facebook["tokenSha256"] == _sha256(page.token)
    assert facebook["tokenSha256"] != _sha256(stack.access_token(ids["facebook"]))
    target = _by_provider(done)["facebook"]
    assert target["remoteId"].startswith(f"{page.id}_")

    # Unpublish deletes the Facebook post with the Page's token, read again.
    async with stack.http() as http:
        removed = await http.delete(f"/v1/publications/{done['id']}")
    assert removed.status_code == 200, removed.text
    targets = _by_provider(removed.json()["data"])
    assert targets["facebook"]["status"] == "UNPUBLISHED", targets["facebook"]
    assert targets["linkedin"]["status"] == "UNPUBLISHED", targets["linkedin"]
    assert stack.posts("facebook")[0]["deleted"] is True
    # The Page token is nowhere Relay keeps anything: not in the rows, not in the errors.
    for row in removed.json()["data"]["targets"] + pictured["targets"]:
        assert page.token not in str(row)


async def test_a_user_with_two_pages_needs_a_page_id_and_the_page_id_chooses(
    publishing_stack: PublishingStack,
) -> None:
    stack = publishing_stack
    linkedin = await stack.connect("linkedin")
    facebook = await stack.connect("facebook")
    user = _subject(stack, facebook)
    first, second = stack.platform.state.set_facebook_pages(user, 2)

    created = await stack.publish(text="Which Page?", integrationIds=[linkedin, facebook])
    assert created.status_code == 201, created.text
    done = await stack.settled(created.json()["data"]["id"])

    targets = _by_provider(done)
    assert done["status"] == "PARTIAL", done
    assert targets["linkedin"]["status"] == "PUBLISHED"
    assert targets["facebook"]["status"] == "FAILED", targets["facebook"]
    assert targets["facebook"]["errorCode"] == "ACCOUNT_INCOMPLETE"
    assert "manages 2 Pages" in targets["facebook"]["lastError"]
    assert "pageId" in targets["facebook"]["lastError"]
    assert stack.publishes("facebook") == 0
    for page in (first, second):
        assert page.token not in targets["facebook"]["lastError"]
    assert page.token not in str(await _integration(stack, facebook))

    # The application names the Page in the connection's metadata (what it passes as
    # `metadata` at initiate; the sandbox user, and so the Page ids, exist only after the
    # approval, so it is written here as initiate would have).
    with Session(stack.engine) as session:
        row = session.get(Integration, uuid.UUID(facebook))
        assert row is not None
        row.meta = {"pageId": second.id}
        session.add(row)
        session.commit()
    chosen = await stack.publish(text="This Page", integrationIds=[facebook])
    assert chosen.status_code == 201, chosen.text
    posted = await stack.settled(chosen.json()["data"]["id"])

    assert posted["status"] == "PUBLISHED", posted
    (post,) = stack.posts("facebook")
    assert post["account"] == second.id and post["tokenSha256"] == _sha256(second.token)
    async with stack.http() as http:
        removed = await http.delete(f"/v1/publications/{posted['id']}")
    assert _by_provider(removed.json()["data"])["facebook"]["status"] == "UNPUBLISHED"
    assert stack.posts("facebook")[0]["deleted"] is True
