"""The OAuth providers sandbox driven as Relay drives a provider: the catalog is loaded with
the sandbox's PROVIDERS_FILE overlay by Relay's own loader, authorization URLs and token
requests are built by `relay.oauth.flow` and `relay.oauth.protocol` (and by authlib's OAuth2
client for the providers that follow RFC 6749 to the letter), and the approval page is
answered by posting its own HTML forms."""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
import yaml
from authlib.integrations.httpx_client import OAuth2Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.exceptions import ApplicationError

from relay.errors import ErrorCode
from relay.oauth.catalog import Catalog, ProviderEntry, load_catalog
from relay.oauth.flow import authorization_url, pkce_pair
from relay.oauth.protocol import (
    TokenResponse,
    access_token_request,
    account_facts,
    account_name,
    exchange_grant,
    parse_token_response,
    refresh_grant,
    revocation_request,
    token_request,
)
from relay.sandbox import oauth_providers
from relay.sandbox.oauth_providers import (
    LONG_LIVED_SECONDS,
    SANDBOX_CLIENT_SECRET,
    OAuthProvidersSandbox,
    OAuthProvidersServer,
    client_id_for,
)
from relay.sandbox.server import AppServer
from relay.settings import Settings

REDIRECT_URI = "http://127.0.0.1:8000/v1/oauth/callback"
WAIT_SECONDS = 10
SHOP = {"shop": "acme"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OAuthProvidersServer]:
    sandbox = OAuthProvidersSandbox(port=0, providers_file=tmp_path / "providers.yaml")
    with sandbox.run_in_thread() as running:
        yield running


@pytest.fixture
def catalog(server: OAuthProvidersServer) -> Catalog:
    """Relay's catalog as Relay loads it with the sandbox's environment."""
    env = server.sandbox.environment()
    return load_catalog(Path(env["PROVIDERS_FILE"]))


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": values["action"], "method": values["method"], "data": {}})
        elif tag in ("input", "button") and self.forms and "name" in values:
            self.forms[-1]["data"][values["name"]] = values.get("value", "")


def _config(entry: ProviderEntry) -> dict[str, str]:
    return SHOP if entry.connection_config else {}


def approve(
    url: str, decision: str = "approve", expect: tuple[str, ...] = ()
) -> dict[str, list[str]]:
    """Open the approval page, post its Approve (or Deny) form, and return the redirect's
    query parameters."""
    page = httpx.get(url)
    assert page.status_code == 200, page.text
    for text in expect:
        assert text in page.text
    parser = _Forms()
    parser.feed(page.text)
    (form,) = [f for f in parser.forms if f["data"].get("decision") == decision]
    assert form["method"] == "post"
    answer = httpx.post(urljoin(url, form["action"]), data=form["data"])
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(REDIRECT_URI)
    return parse_qs(urlsplit(location).query)


def authorize(
    entry: ProviderEntry, decision: str = "approve", scopes: list[str] | None = None
) -> tuple[str, str | None, dict[str, list[str]]]:
    """(state, PKCE verifier, redirect query) of one authorization through the page."""
    verifier, challenge = pkce_pair() if entry.pkce else (None, None)
    state = secrets.token_urlsafe(16)
    asked = entry.default_scopes if scopes is None else scopes
    url = authorization_url(
        entry,
        client_id=client_id_for(entry.key),
        redirect_uri=REDIRECT_URI,
        scopes=asked,
        state=state,
        code_challenge=challenge,
        connection_config=_config(entry),
    )
    query = approve(url, decision, expect=(entry.display_name, *asked))
    return state, verifier, query


def post_token(
    entry: ProviderEntry,
    grant: dict[str, str],
    secret: str = SANDBOX_CLIENT_SECRET,
    operation: str = "exchange",
) -> TokenResponse:
    """A token request built and read by Relay's protocol module."""
    request = token_request(
        entry,
        url=entry.refresh_endpoint if operation == "refresh" else entry.token_url,
        client_id=client_id_for(entry.key),
        client_secret=secret,
        grant=grant,
        connection_config=_config(entry),
    )
    answer = httpx.post(request.url, headers=request.headers, data=request.form, json=request.json)
    return parse_token_response(
        entry,
        answer.status_code,
        answer.headers,
        answer.text,
        operation=operation,
        grant_code=ErrorCode.REFRESH_FAILED if operation == "refresh" else ErrorCode.OAUTH_FAILED,
        other_code=ErrorCode.PROVIDER_ERROR,
        secrets=request.secrets,
    )


def connect(entry: ProviderEntry) -> TokenResponse:
    _, verifier, query = authorize(entry)
    code = query[entry.code_param][0]
    grant = exchange_grant(entry, code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier)
    return post_token(entry, grant)


def introspect(server: OAuthProvidersServer, token: str) -> dict[str, Any]:
    answer = httpx.post(f"{server.api_base}/_sandbox/introspect", json={"token": token})
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def raw_error(answer: httpx.Response) -> str:
    error: str = answer.json()["error"]
    return error


# --- the overlay -----------------------------------------------------------------------------


def test_environment_points_every_catalog_provider_at_the_sandbox(
    server: OAuthProvidersServer, catalog: Catalog
) -> None:
    builtin = load_catalog()
    env = server.sandbox.environment()
    assert {entry.key for entry in catalog} == {entry.key for entry in builtin}
    for entry in catalog:
        original = builtin.require(entry.key)
        assert entry.authorization_url.startswith(f"{server.api_base}/{entry.key}/")
        assert entry.token_url.startswith(f"{server.api_base}/{entry.key}/")
        assert (entry.revoke_url is None) == (original.revoke_url is None)
        assert (entry.userinfo_url is None) == (original.userinfo_url is None)
        # Everything else (PKCE, client auth, parameter names) stays the catalog's.
        assert entry.pkce == original.pkce
        assert entry.token_request_auth_method == original.token_request_auth_method
        assert env[f"{entry.key.upper()}_CLIENT_ID"] == client_id_for(entry.key)
        assert env[f"{entry.key.upper()}_CLIENT_SECRET"] == SANDBOX_CLIENT_SECRET


# --- every provider, through Relay's protocol module ------------------------------------------


@pytest.mark.parametrize("key", sorted(entry.key for entry in load_catalog()))
def test_every_provider_connects_and_names_the_account(
    server: OAuthProvidersServer, catalog: Catalog, key: str
) -> None:
    entry = catalog.require(key)
    state, _, query = authorize(entry)
    assert query["state"] == [state]
    tokens = connect(entry)
    assert tokens.access_token.startswith(f"sbx-{key}-")
    assert introspect(server, tokens.access_token)["active"] is True
    if entry.userinfo_url:
        auth = {"Authorization": f"{entry.userinfo_auth_scheme} {tokens.access_token}"}
        answer = httpx.get(entry.userinfo_url, headers=auth)
        assert answer.status_code == 200
        assert account_name(entry, answer.text) == f"Sandbox {entry.display_name} User"
        # The account's ids the catalog keeps (account_fields) are the token's subject.
        subject = introspect(server, tokens.access_token)["sub"]
        facts = account_facts(entry, answer.text)
        assert facts == dict.fromkeys(entry.account_fields, subject), facts
    elif entry.account_name_field:  # Slack names the workspace in the token answer
        assert tokens.account_name == "Sandbox Workspace"
    if entry.public_extras:  # the ids the catalog keeps in the clear are answered
        assert tokens.extras, entry.public_extras


def test_provider_quirks_in_token_answers(server: OAuthProvidersServer, catalog: Catalog) -> None:
    tiktok = connect(catalog.require("tiktok"))
    assert tiktok.extras["open_id"] and tiktok.refresh_token and tiktok.expires_in == 86_400
    ads = connect(catalog.require("tiktok_ads"))  # JSON request, answer inside `data`
    assert ads.extras == {"advertiser_ids": ["7000000000000000001"]}
    assert ads.scope == ["ad.read", "ad.manage"]
    salesforce = connect(catalog.require("salesforce"))
    assert salesforce.extras["instance_url"].startswith("https://")
    shopify = connect(catalog.require("shopify"))
    assert shopify.refresh_token is None and shopify.expires_in is None
    linkedin = connect(catalog.require("linkedin"))
    assert linkedin.refresh_token is None and linkedin.expires_in == 5_184_000
    google = connect(catalog.require("google_calendar"))
    assert google.refresh_token and google.expires_in == 3599
    assert google.scope == catalog.require("google_calendar").default_scopes


def test_google_gives_no_refresh_token_without_offline_access(catalog: Catalog) -> None:
    entry = catalog.require("youtube").model_copy(update={"authorization_params": {}})
    assert connect(entry).refresh_token is None


def test_x_gives_a_refresh_token_only_for_offline_access(catalog: Catalog) -> None:
    entry = catalog.require("twitter")
    _, verifier, query = authorize(entry, scopes=["tweet.read", "users.read"])
    grant = exchange_grant(
        entry, code=query["code"][0], redirect_uri=REDIRECT_URI, code_verifier=verifier
    )
    assert post_token(entry, grant).refresh_token is None


# --- authlib's OAuth2 client ------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["google_calendar", "youtube", "zoom", "twitter", "linkedin", "facebook", "instagram"],
)
def test_authlib_client_completes_the_flow(
    monkeypatch: pytest.MonkeyPatch, catalog: Catalog, key: str
) -> None:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # loopback http
    entry = catalog.require(key)
    method = (
        "client_secret_basic"
        if entry.token_request_auth_method == "basic"
        else "client_secret_post"
    )
    with OAuth2Client(
        client_id_for(key),
        SANDBOX_CLIENT_SECRET,
        scope=entry.scope_string(entry.default_scopes) or None,
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256" if entry.pkce else None,
        token_endpoint_auth_method=method,
    ) as client:
        verifier = secrets.token_urlsafe(48) if entry.pkce else None
        url, state = client.create_authorization_url(
            entry.authorization_url, code_verifier=verifier, **entry.authorization_params
        )
        query = approve(url, expect=(entry.display_name,))
        location = f"{REDIRECT_URI}?code={query['code'][0]}&state={query['state'][0]}"
        token = client.fetch_token(
            entry.token_url, authorization_response=location, code_verifier=verifier, state=state
        )
        assert token["access_token"].startswith(f"sbx-{key}-")
        if key in ("zoom", "twitter"):  # they rotate the refresh token
            refreshed = client.refresh_token(entry.token_url, refresh_token=token["refresh_token"])
            assert refreshed["refresh_token"] != token["refresh_token"]
            assert refreshed["access_token"] != token["access_token"]


# --- the approval page -----------------------------------------------------------------------


def test_deny_redirects_with_access_denied(catalog: Catalog) -> None:
    entry = catalog.require("linkedin")
    state, _, query = authorize(entry, decision="deny")
    assert query["error"] == ["access_denied"]
    assert query["state"] == [state]
    assert "code" not in query


def test_approval_page_escapes_what_it_shows(server: OAuthProvidersServer) -> None:
    url = f"{server.api_base}/github/authorize"
    params = {
        "client_id": client_id_for("github"),
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": "<script>alert(1)</script>",
        "state": '"><b>',
    }
    page = httpx.get(url, params=params)
    assert page.status_code == 200
    assert "<script>" not in page.text and '"><b>' not in page.text
    assert "form-action 'self'" in page.headers["content-security-policy"]


def test_unknown_client_is_refused_on_the_page(server: OAuthProvidersServer) -> None:
    params = {"client_id": "someone-else", "redirect_uri": REDIRECT_URI, "response_type": "code"}
    answer = httpx.get(f"{server.api_base}/zoom/authorize", params=params)
    assert answer.status_code == 400 and raw_error(answer) == "invalid_client"


# --- grants and their failures ----------------------------------------------------------------


@pytest.mark.parametrize("key", ["twitter", "zoom", "tiktok", "discord"])
def test_refresh_rotates_and_the_old_refresh_token_dies(catalog: Catalog, key: str) -> None:
    entry = catalog.require(key)
    first = connect(entry)
    assert first.refresh_token is not None
    second = post_token(entry, refresh_grant(first.refresh_token), operation="refresh")
    assert second.refresh_token and second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    with pytest.raises(ApplicationError) as caught:
        post_token(entry, refresh_grant(first.refresh_token), operation="refresh")
    assert caught.value.type == ErrorCode.REFRESH_FAILED.value
    third = post_token(entry, refresh_grant(second.refresh_token), operation="refresh")
    assert third.access_token


@pytest.mark.parametrize("key", ["google_calendar", "hubspot", "salesforce"])
def test_refresh_keeps_the_refresh_token_where_the_provider_does(
    catalog: Catalog, key: str
) -> None:
    entry = catalog.require(key)
    first = connect(entry)
    assert first.refresh_token is not None
    for _ in range(2):
        again = post_token(entry, refresh_grant(first.refresh_token), operation="refresh")
        assert again.refresh_token is None and again.access_token != first.access_token


def test_wrong_pkce_verifier_is_invalid_grant(catalog: Catalog) -> None:
    entry = catalog.require("google_calendar")
    _, verifier, query = authorize(entry)
    assert verifier is not None
    grant = exchange_grant(
        entry, code=query["code"][0], redirect_uri=REDIRECT_URI, code_verifier=verifier + "x"
    )
    with pytest.raises(ApplicationError) as caught:
        post_token(entry, grant)
    assert caught.value.type == ErrorCode.OAUTH_FAILED.value
    assert caught.value.details[0]["error"] == "invalid_grant"
    missing = exchange_grant(
        entry, code=query["code"][0], redirect_uri=REDIRECT_URI, code_verifier=None
    )
    with pytest.raises(ApplicationError):
        post_token(entry, missing)


def test_redirect_uri_must_match(catalog: Catalog) -> None:
    entry = catalog.require("hubspot")
    _, _, query = authorize(entry)
    grant = exchange_grant(
        entry, code=query["code"][0], redirect_uri=REDIRECT_URI + "/other", code_verifier=None
    )
    with pytest.raises(ApplicationError) as caught:
        post_token(entry, grant)
    assert caught.value.details[0]["error"] == "invalid_grant"


@pytest.mark.parametrize("key", ["twitter", "facebook", "tiktok"])
def test_wrong_client_secret_is_invalid_client(catalog: Catalog, key: str) -> None:
    entry = catalog.require(key)
    _, verifier, query = authorize(entry)
    grant = exchange_grant(
        entry, code=query["code"][0], redirect_uri=REDIRECT_URI, code_verifier=verifier
    )
    with pytest.raises(ApplicationError) as caught:
        post_token(entry, grant, secret="not-the-secret")
    assert caught.value.type == ErrorCode.PROVIDER_ERROR.value
    assert caught.value.details[0]["error"] == "invalid_client"
    assert "not-the-secret" not in str(caught.value)


def test_client_auth_must_be_the_catalogs_method(catalog: Catalog) -> None:
    # X takes HTTP Basic; credentials in the body are refused, and the reverse for LinkedIn.
    x = catalog.require("twitter").model_copy(update={"token_request_auth_method": "body"})
    linkedin = catalog.require("linkedin").model_copy(update={"token_request_auth_method": "basic"})
    for entry in (x, linkedin):
        _, verifier, query = authorize(entry)
        grant = exchange_grant(
            entry, code=query["code"][0], redirect_uri=REDIRECT_URI, code_verifier=verifier
        )
        with pytest.raises(ApplicationError) as caught:
            post_token(entry, grant)
        assert caught.value.details[0]["error"] == "invalid_client"


def test_code_reuse_is_invalid_grant_and_revokes_what_it_gave(
    server: OAuthProvidersServer, catalog: Catalog
) -> None:
    entry = catalog.require("zoom")
    _, verifier, query = authorize(entry)
    grant = exchange_grant(
        entry, code=query["code"][0], redirect_uri=REDIRECT_URI, code_verifier=verifier
    )
    first = post_token(entry, grant)
    with pytest.raises(ApplicationError) as caught:
        post_token(entry, grant)
    assert caught.value.details[0]["error"] == "invalid_grant"
    assert introspect(server, first.access_token) == {"active": False}
    assert first.refresh_token is not None
    assert introspect(server, first.refresh_token) == {"active": False}


def test_slack_answers_errors_with_http_200(catalog: Catalog) -> None:
    entry = catalog.require("slack")
    request = token_request(
        entry,
        url=entry.token_url,
        client_id=client_id_for("slack"),
        client_secret=SANDBOX_CLIENT_SECRET,
        grant=exchange_grant(entry, code="nope", redirect_uri=REDIRECT_URI, code_verifier=None),
        connection_config={},
    )
    answer = httpx.post(request.url, headers=request.headers, data=request.form)
    assert answer.status_code == 200
    assert answer.json()["ok"] is False and answer.json()["error"] == "invalid_grant"


# --- Instagram's and Facebook's long-lived tokens ---------------------------------------------


def test_instagram_short_lived_token_exchanged_and_refreshed(
    server: OAuthProvidersServer, catalog: Catalog
) -> None:
    entry = catalog.require("instagram")
    short = connect(entry)
    assert short.expires_in is None and short.refresh_token is None  # as Instagram answers
    assert short.extras["user_id"]
    listed = httpx.get(f"{server.api_base}/_sandbox/tokens").json()["data"]
    (record,) = [t for t in listed if t["provider"] == "instagram"]
    assert record["longLived"] is False and record["expiresAt"] is not None

    base = f"{server.api_base}/instagram"
    wrong = httpx.get(
        f"{base}/access_token",
        params={"grant_type": "ig_exchange_token", "client_secret": "x", "access_token": "y"},
    )
    assert wrong.status_code == 401 and raw_error(wrong) == "invalid_client"
    answer = httpx.get(
        f"{base}/access_token",
        params={
            "grant_type": "ig_exchange_token",
            "client_secret": SANDBOX_CLIENT_SECRET,
            "access_token": short.access_token,
        },
    )
    assert answer.status_code == 200, answer.text
    long_lived = answer.json()
    assert long_lived["expires_in"] == LONG_LIVED_SECONDS and long_lived["token_type"] == "bearer"

    refresh = {"grant_type": "ig_refresh_token", "access_token": long_lived["access_token"]}
    too_young = httpx.get(f"{base}/refresh_access_token", params=refresh)
    assert too_young.status_code == 400 and raw_error(too_young) == "invalid_grant"
    now = time.time()
    server.state.clock = lambda: now + 2 * 86_400
    renewed = httpx.get(f"{base}/refresh_access_token", params=refresh)
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["expires_in"] == LONG_LIVED_SECONDS
    assert renewed.json()["access_token"] != long_lived["access_token"]
    # The short-lived one has expired by now; the long-lived one works for userinfo.
    assert introspect(server, short.access_token) == {"active": False}
    me = httpx.get(
        entry.userinfo_url or "",
        headers={"Authorization": f"Bearer {renewed.json()['access_token']}"},
    )
    assert me.status_code == 200 and me.json()["username"]


def test_facebook_short_lived_token_exchanged_for_a_long_lived_one(
    server: OAuthProvidersServer, catalog: Catalog
) -> None:
    entry = catalog.require("facebook")
    short = connect(entry)
    assert short.expires_in == 3600 and short.refresh_token is None
    params = {
        "grant_type": "fb_exchange_token",
        "client_id": client_id_for("facebook"),
        "client_secret": SANDBOX_CLIENT_SECRET,
        "fb_exchange_token": short.access_token,
    }
    answer = httpx.get(entry.token_url, params=params)
    assert answer.status_code == 200, answer.text
    assert answer.json()["expires_in"] == LONG_LIVED_SECONDS
    assert introspect(server, answer.json()["access_token"])["active"] is True
    bad = httpx.get(entry.token_url, params={**params, "client_secret": "nope"})
    assert bad.status_code == 401 and raw_error(bad) == "invalid_client"


def _access_token_grant(
    entry: ProviderEntry, name: str, access_token: str, operation: str
) -> TokenResponse:
    """The catalog's `exchange` or `refresh` block, built and read by Relay's protocol."""
    grant = getattr(entry, name)
    assert grant is not None
    request = access_token_request(
        grant,
        entry,
        client_id=client_id_for(entry.key),
        client_secret=SANDBOX_CLIENT_SECRET,
        access_token=access_token,
        connection_config={},
    )
    assert access_token not in request.url and SANDBOX_CLIENT_SECRET not in request.url
    answer = httpx.get(request.url, headers=request.headers, params=request.query)
    return parse_token_response(
        entry,
        answer.status_code,
        answer.headers,
        answer.text,
        operation=operation,
        grant_code=ErrorCode.OAUTH_FAILED,
        other_code=ErrorCode.OAUTH_FAILED,
        secrets=request.secrets,
    )


def test_the_catalogs_exchange_and_refresh_blocks_play_against_the_sandbox(
    tmp_path: Path,
) -> None:
    received: list[dict[str, Any]] = []

    async def intake(request: Request) -> Response:
        received.append(await request.json())
        return Response(status_code=204)

    sink = AppServer(
        Starlette(routes=[Route("/tokens", intake, methods=["POST"])]),
        "127.0.0.1",
        0,
        "sink",
        lambda: None,
    )
    sink.start()
    sandbox = OAuthProvidersSandbox(
        port=0,
        providers_file=tmp_path / "providers.yaml",
        short_lived_seconds=120,
        refresh_min_age_seconds=0,
        token_sinks=(f"http://127.0.0.1:{sink.port}/tokens",),
    )
    try:
        with sandbox.run_in_thread() as running:
            catalog = load_catalog(Path(sandbox.environment()["PROVIDERS_FILE"]))
            instagram, facebook = catalog.require("instagram"), catalog.require("facebook")
            assert instagram.exchange is not None and instagram.refresh is not None
            assert instagram.exchange.url == f"{running.api_base}/instagram/access_token"
            assert instagram.refresh.url == f"{running.api_base}/instagram/refresh_access_token"
            assert instagram.refresh.min_token_age == 86_400  # Relay's check stays the catalog's
            assert facebook.exchange is not None and facebook.exchange.url == facebook.token_url

            short = connect(facebook)
            assert short.expires_in == 120 and short.refresh_token is None
            long_lived = _access_token_grant(facebook, "exchange", short.access_token, "exchange")
            assert long_lived.expires_in == LONG_LIVED_SECONDS

            ig_short = connect(instagram)
            ig_long = _access_token_grant(instagram, "exchange", ig_short.access_token, "exchange")
            renewed = _access_token_grant(instagram, "refresh", ig_long.access_token, "refresh")
            assert renewed.expires_in == LONG_LIVED_SECONDS
            assert renewed.access_token != ig_long.access_token
            with pytest.raises(ApplicationError, match="already long-lived"):
                _access_token_grant(instagram, "exchange", ig_long.access_token, "exchange")

            # Other sandboxes hear of every exchanged token, as of any other.
            wanted = {long_lived.access_token, ig_long.access_token, renewed.access_token}
            deadline = time.monotonic() + WAIT_SECONDS
            while not wanted <= {r["accessToken"] for r in received}:
                assert time.monotonic() < deadline, received
                time.sleep(0.05)
            notice = next(r for r in received if r["accessToken"] == renewed.access_token)
            assert notice["event"] == "issued" and notice["provider"] == "instagram"
            assert notice["expiresAt"]
    finally:
        sink.stop()


# --- revocation, controls, faults, sinks ------------------------------------------------------


def test_revoke_control_kills_the_token(server: OAuthProvidersServer, catalog: Catalog) -> None:
    entry = catalog.require("twitter")
    tokens = connect(entry)
    assert tokens.refresh_token is not None
    answer = httpx.post(f"{server.api_base}/_sandbox/tokens/{tokens.access_token}/revoke")
    assert answer.status_code == 200
    me = httpx.get(
        entry.userinfo_url or "", headers={"Authorization": f"Bearer {tokens.access_token}"}
    )
    assert me.status_code == 401
    httpx.post(f"{server.api_base}/_sandbox/tokens/{tokens.refresh_token}/revoke")
    with pytest.raises(ApplicationError) as caught:
        post_token(entry, refresh_grant(tokens.refresh_token), operation="refresh")
    assert caught.value.type == ErrorCode.REFRESH_FAILED.value
    missing = httpx.post(f"{server.api_base}/_sandbox/tokens/nope/revoke")
    assert missing.status_code == 404


def test_rfc7009_revocation_by_relays_request(
    server: OAuthProvidersServer, catalog: Catalog
) -> None:
    entry = catalog.require("google_calendar")
    tokens = connect(entry)
    assert tokens.refresh_token is not None
    request = revocation_request(
        entry,
        client_id=client_id_for(entry.key),
        client_secret=SANDBOX_CLIENT_SECRET,
        token=tokens.refresh_token,
        token_type_hint="refresh_token",  # noqa: S106 (a hint, not a secret)
        connection_config={},
    )
    answer = httpx.post(request.url, headers=request.headers, data=request.form)
    assert answer.status_code == 200
    # A refresh token's access tokens go with it.
    assert introspect(server, tokens.access_token) == {"active": False}


def test_tokens_control_masks_tokens(server: OAuthProvidersServer, catalog: Catalog) -> None:
    tokens = connect(catalog.require("discord"))
    answer = httpx.get(f"{server.api_base}/_sandbox/tokens")
    assert tokens.access_token not in answer.text
    assert tokens.refresh_token is not None and tokens.refresh_token not in answer.text
    kinds = {(t["provider"], t["kind"]) for t in answer.json()["data"]}
    assert kinds == {("discord", "access"), ("discord", "refresh")}
    (access,) = [t for t in answer.json()["data"] if t["kind"] == "access"]
    assert access["scopes"] == ["identify", "guilds", "webhook.incoming"]
    assert access["expiresAt"] and access["revoked"] is False


def test_faults_answer_the_status_then_recover(
    server: OAuthProvidersServer, catalog: Catalog
) -> None:
    entry = catalog.require("zoom")
    _, verifier, query = authorize(entry)
    grant = exchange_grant(
        entry, code=query["code"][0], redirect_uri=REDIRECT_URI, code_verifier=verifier
    )
    httpx.post(f"{server.api_base}/_sandbox/faults", json={"count": 1, "status": 429})
    request = token_request(
        entry,
        url=entry.token_url,
        client_id=client_id_for("zoom"),
        client_secret=SANDBOX_CLIENT_SECRET,
        grant=grant,
        connection_config={},
    )
    limited = httpx.post(request.url, headers=request.headers, data=request.form)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    with pytest.raises(ApplicationError) as caught:  # Relay reads it as retryable
        parse_token_response(
            entry,
            limited.status_code,
            limited.headers,
            limited.text,
            operation="exchange",
            grant_code=ErrorCode.OAUTH_FAILED,
            other_code=ErrorCode.PROVIDER_ERROR,
        )
    assert not caught.value.non_retryable
    assert post_token(entry, grant).access_token  # the code was not spent by the fault


def test_token_sinks_receive_every_issued_access_token(
    server: OAuthProvidersServer, catalog: Catalog
) -> None:
    received: list[dict[str, Any]] = []
    arrived = threading.Event()

    async def intake(request: Request) -> Response:
        received.append(await request.json())
        arrived.set()
        return Response(status_code=204)

    app = Starlette(routes=[Route("/tokens", intake, methods=["POST"])])
    sink = AppServer(app, "127.0.0.1", 0, "sink", lambda: None)
    sink.start()
    try:
        server.sandbox.register_token_sink(f"http://127.0.0.1:{sink.port}/tokens")
        tokens = connect(catalog.require("google_calendar"))
        deadline = time.monotonic() + WAIT_SECONDS
        while not any(r["accessToken"] == tokens.access_token for r in received):
            assert time.monotonic() < deadline, received
            arrived.wait(0.1)
        (issued,) = [r for r in received if r["accessToken"] == tokens.access_token]
        assert issued["event"] == "issued" and issued["provider"] == "google_calendar"
        assert "https://www.googleapis.com/auth/calendar.events" in issued["scopes"]
        assert issued["expiresAt"]
        httpx.post(f"{server.api_base}/_sandbox/tokens/{tokens.access_token}/revoke")
        while not any(r["event"] == "revoked" for r in received):
            assert time.monotonic() < deadline, received
            arrived.wait(0.1)
    finally:
        sink.stop()


def test_command_runs_the_sandbox_as_a_process(tmp_path: Path) -> None:
    sandbox = OAuthProvidersSandbox(providers_file=tmp_path / "providers.yaml")
    process = subprocess.Popen(
        sandbox.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        sandbox.wait_ready(WAIT_SECONDS)
        entry = load_catalog(Path(sandbox.environment()["PROVIDERS_FILE"])).require("zoom")
        assert connect(entry).access_token.startswith("sbx-zoom-")
        assert SANDBOX_CLIENT_SECRET not in " ".join(sandbox.command())
    finally:
        process.terminate()
        process.wait(WAIT_SECONDS)


def test_a_providers_file_of_ones_own_is_carried_into_the_overlay(tmp_path: Path) -> None:
    own = tmp_path / "own.yaml"
    own.write_text(
        "github: null\n"
        "acme:\n"
        "  display_name: Acme\n"
        "  authorization_url: https://acme.example/authorize\n"
        "  token_url: https://acme.example/token\n"
        "  default_scopes: [read]\n",
        encoding="utf-8",
    )
    sandbox = OAuthProvidersSandbox(
        port=0, providers_file=tmp_path / "providers.yaml", catalog_file=own
    )
    with sandbox.run_in_thread() as running:
        catalog = load_catalog(Path(sandbox.environment()["PROVIDERS_FILE"]))
        assert "github" not in catalog
        acme = catalog.require("acme")
        assert acme.token_url == f"{running.api_base}/acme/token"
        assert connect(acme).access_token.startswith("sbx-acme-")


def test_relay_dev_sandboxes_only_providers_without_credentials(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    everything = {entry.key for entry in load_catalog()}
    development = make_settings(relay_env="development", data_dir=tmp_path / "data")
    assert oauth_providers.sandboxed_providers(development) == everything
    planned = oauth_providers.plan(development)
    assert planned is not None and planned.stands_in_for() == sorted(everything)
    assert f"for {len(everything)} providers)" in oauth_providers.describe(development, planned)

    # A provider with credentials of its own keeps its real URLs and its own client.
    env = tmp_path / "real.env"
    env.write_text("GITHUB_CLIENT_ID=real-id\nGITHUB_CLIENT_SECRET=real-secret\n")
    mixed = make_settings(relay_env="development", data_dir=tmp_path / "data", _env_file=env)
    planned = oauth_providers.plan(mixed)
    assert planned is not None and "github" not in planned.stands_in_for()
    environment = planned.environment()
    assert "GITHUB_CLIENT_ID" not in environment and "GITHUB_CLIENT_SECRET" not in environment
    assert environment["GOOGLE_CALENDAR_CLIENT_ID"] == client_id_for("google_calendar")
    assert Path(environment["PROVIDERS_FILE"]) == (tmp_path / "data").resolve() / (
        oauth_providers.OVERLAY_FILE_NAME
    )
    overlaid = yaml.safe_load(Path(environment["PROVIDERS_FILE"]).read_text())
    assert "github" not in overlaid and "google_calendar" in overlaid
    catalog = load_catalog(Path(environment["PROVIDERS_FILE"]))
    assert catalog.require("github").token_url == load_catalog().require("github").token_url
    assert catalog.require("google_calendar").token_url.startswith(planned.api_base)
    assert "real: github" in oauth_providers.describe(mixed, planned)

    # Never outside development, never with SANDBOX=off, never over a PROVIDERS_FILE.
    for settings in (
        make_settings(relay_env="production"),
        make_settings(),  # RELAY_ENV=test
        make_settings(relay_env="development", sandbox="off"),
        make_settings(relay_env="development", providers_file=tmp_path / "own.yaml"),
    ):
        assert not oauth_providers.wanted(settings) and oauth_providers.plan(settings) is None
    own = make_settings(relay_env="development", providers_file=tmp_path / "own.yaml")
    assert "PROVIDERS_FILE" in oauth_providers.describe(own, None)


def test_token_sinks_given_at_start_are_registered(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    async def intake(request: Request) -> Response:
        received.append(await request.json())
        return Response(status_code=204)

    sink = AppServer(
        Starlette(routes=[Route("/sink", intake, methods=["POST"])]),
        "127.0.0.1",
        0,
        "sink",
        lambda: None,
    )
    sink.start()
    try:
        url = f"http://127.0.0.1:{sink.port}/sink"
        sandbox = OAuthProvidersSandbox(providers_file=tmp_path / "p.yaml", token_sinks=(url,))
        assert sandbox.command()[-2:] == ["--token-sink", url]
        process = subprocess.Popen(
            sandbox.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            sandbox.wait_ready(WAIT_SECONDS)
            listed = httpx.get(f"{sandbox.api_base}/_sandbox/token-sinks").json()["data"]
            assert listed == [url]
            entry = load_catalog(Path(sandbox.environment()["PROVIDERS_FILE"]))
            connect(entry.require("google_calendar"))
            deadline = time.monotonic() + WAIT_SECONDS
            while not received:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert received[0]["provider"] == "google_calendar"
        finally:
            process.terminate()
            process.wait(WAIT_SECONDS)
    finally:
        sink.stop()
