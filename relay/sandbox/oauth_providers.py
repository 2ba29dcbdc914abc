"""The OAuth providers sandbox: one HTTP server playing the OAuth 2.0 authorize, token,
revocation and userinfo endpoints of every provider in Relay's catalog
(relay/catalog/providers.yaml), since no provider can be reached from here without
credentials.

`relay dev` runs it (`plan`) in development with SANDBOX=auto and no PROVIDERS_FILE, for
every catalog provider that has no `<KEY>_CLIENT_ID`/`<KEY>_CLIENT_SECRET` of its own (a
provider with real credentials keeps its real URLs); the tests run it in a thread
(`OAuthProvidersSandbox(port=0).run_in_thread()`). Relay points its catalog at it with a
PROVIDERS_FILE overlay that `environment()` writes (the catalog has no per-provider base
URL setting; PROVIDERS_FILE is how its URLs are overridden), plus `<KEY>_CLIENT_ID` and
`<KEY>_CLIENT_SECRET` for each provider it stands in for. Never outside development.

Routes, one prefix per catalog key (`/google_calendar/…`, `/twitter/…`):

    GET  /{provider}/authorize     the approval page (HTML): the provider's name, the scopes
                                   asked, Approve and Deny buttons (forms POSTing back)
    POST /{provider}/authorize     the decision: 302 to redirect_uri with code and state
                                   (TikTok for Business: auth_code), or error=access_denied
    POST /{provider}/token         authorization_code (PKCE S256 checked when the
                                   authorize request carried a challenge; redirect_uri must
                                   match) and refresh_token grants; Facebook and Meta Ads
                                   also take GET and grant_type=fb_exchange_token
    POST /{provider}/revoke        RFC 7009 (where the catalog has a revoke_url)
    GET  /{provider}/userinfo      the account: `id` and `sub` (the token's subject, which
                                   the token sinks are told), Instagram's `user_id` too,
                                   and a name at the catalog's account_name_field
    GET  /instagram/access_token          ?grant_type=ig_exchange_token&client_secret=
                                          &access_token=   short-lived → long-lived
    GET  /instagram/refresh_access_token  ?grant_type=ig_refresh_token&access_token=
                                          a long-lived token at least 24 hours old →
                                          a new long-lived one

Shopify's URLs carry the shop as `?shop=` (the catalog's `${connectionConfig.shop}`).

Client authentication is the catalog's: HTTP Basic where it says `basic` (X, Zoom), the
body otherwise, under the catalog's parameter names (TikTok's `client_key`, TikTok for
Business's JSON `app_id`/`secret`); the other method is refused with invalid_client, so a
client that does not follow the catalog fails here as it would at the provider. The
client id is `sandbox-<key>-client`, the secret SANDBOX_CLIENT_SECRET.

What each provider does, as the real one does (PROVIDERS below): lifetimes (Google 3599 s,
X 7200 s, Zoom 3600 s, LinkedIn 60 days, Shopify/GitHub/Mailchimp no expiry), whether a
refresh token is issued (Google only with access_type=offline, X only with offline.access,
never for LinkedIn, Facebook, Instagram, Shopify, Slack, GitHub, Mailchimp) and whether
refreshing rotates it (X, Zoom, TikTok, Discord rotate: the old refresh token then answers
invalid_grant; Google, HubSpot, Salesforce keep it). Facebook's and Instagram's code
exchanges give short-lived user tokens (an hour, `short_lived_seconds`; Instagram's answer
has no expires_in, as Instagram's has none) and no refresh token; `fb_exchange_token` and
`ig_exchange_token` give long-lived ones (5183944 s, about 60 days), and `ig_refresh_token`
a new long-lived one for a token at least `refresh_min_age_seconds` (24 hours) old. The
overlay points the catalog's `exchange` and `refresh` blocks here too. Slack and GitHub answer errors with HTTP 200
(`{"ok": false, "error": …}` / `{"error": …}`), TikTok for Business wraps its answer in
`{code, message, data}`, Salesforce adds instance_url and id, Slack team and bot_user_id,
TikTok open_id, Instagram user_id.

Errors have RFC 6749 section 5.2's shape, `{error, error_description}`: invalid_client
(401), invalid_grant (unknown, used,
expired or revoked code or refresh token, wrong PKCE verifier, redirect_uri mismatch),
unsupported_grant_type, invalid_request. A code used twice also revokes the tokens it
gave (RFC 6749 section 4.1.2).

Controls for `/sandbox` and tests (not the providers'; JSON, camelCase):

    GET  /_sandbox/tokens                 {data: issued tokens, newest first, masked,
                                          with provider, kind, scopes, expiresAt, revoked}
    POST /_sandbox/tokens/{token}/revoke  revoke an access or refresh token (full value)
    POST /_sandbox/introspect             {token} → RFC 7662-like {active, provider, scope,
                                          exp, sub}: how another sandbox can check a token
    POST /_sandbox/faults                 {count, status? (503)}: the next `count` provider
                                          requests answer `status` (429 with Retry-After: 1)
    GET|POST /_sandbox/token-sinks        list / add {url}

Token sinks: every access token issued (code exchange, refresh, long-lived exchange) is
POSTed as JSON to each registered sink URL, `{event: "issued", provider, accessToken,
scopes, expiresAt (ISO 8601 or null), subject}`, and every revocation as `{event:
"revoked", provider, accessToken}`, up to three attempts. So the Google Calendar, Zoom and
publishing sandboxes can accept exactly the tokens issued here: register their intake URL
with `OAuthProvidersSandbox.register_token_sink(url)` (or check a token with
/_sandbox/introspect). Sinks are trusted loopback receivers: they get bearer tokens.

Not modelled: consent screens beyond one approval, id_token (OpenID Connect), Facebook Page
tokens (`/me/accounts` is the Graph API's, not OAuth's: the publishing sandbox plays it for
the users this sandbox tells it of), real scope policy (what is asked is
granted; Zoom, Mailchimp and TikTok for Business grant the app's scopes when none are
asked). State lives in memory. No token or secret is logged.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import logging
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import httpx
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from relay.oauth.catalog import Catalog, ProviderEntry, load_catalog
from relay.sandbox.server import AppServer, Delivery, Poster, free_port, port_open, wait_for_port
from relay.settings import Settings

logger = logging.getLogger(__name__)

READY_SECONDS = 30
SANDBOX_CLIENT_SECRET = "relay-sandbox-oauth-secret"  # noqa: S105 - a local sandbox's credential
CODE_SECONDS = 600
SHORT_LIVED_SECONDS = 3600
LONG_LIVED_SECONDS = 5_183_944  # what Instagram and Facebook answer: about 60 days
IG_REFRESH_MIN_AGE_SECONDS = 86_400
TOKENS_LIMIT = 500
# The page's own policy: its forms post back here and nowhere else.
PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"


@dataclass(frozen=True)
class Behaviour:
    """How one provider's token endpoint answers."""

    expires_in: int | None = 3600
    refresh: str = "always"  # always | never | offline (access_type=offline) | scope:<s>
    rotates: bool = False
    show_expires_in: bool = True
    errors_as_200: bool = False  # Slack, GitHub
    extras: Callable[[str, list[str]], dict[str, Any]] | None = None
    # Scopes granted when none are asked (scopes configured on the app).
    app_scopes: tuple[str, ...] = ()
    # Meta's short-lived user tokens: their lifetime is the state's `short_lived_seconds`.
    short_lived: bool = False


def _slack(subject: str, scopes: list[str]) -> dict[str, Any]:
    return {
        "ok": True,
        "token_type": "bot",
        "app_id": "A0SANDBOX",
        "bot_user_id": "U0SANDBOXBOT",
        "team": {"id": "T0SANDBOX", "name": "Sandbox Workspace"},
        "enterprise": None,
        "is_enterprise_install": False,
        "authed_user": {"id": f"U{subject[:8].upper()}"},
    }


def _discord(subject: str, scopes: list[str]) -> dict[str, Any]:
    if "webhook.incoming" not in scopes:
        return {}
    return {
        "webhook": {
            "id": "1100000000000000001",
            "name": "Sandbox",
            "channel_id": "1100000000000000002",
            "guild_id": "1100000000000000003",
            "token": secrets.token_urlsafe(48),
            "url": "https://discord.com/api/webhooks/1100000000000000001/sandbox",
        }
    }


_GOOGLE = Behaviour(expires_in=3599, refresh="offline")
_META = Behaviour(expires_in=SHORT_LIVED_SECONDS, refresh="never", short_lived=True)
PROVIDERS: dict[str, Behaviour] = {
    "tiktok": Behaviour(
        expires_in=86_400,
        rotates=True,
        extras=lambda subject, _: {"open_id": subject, "refresh_expires_in": 31_536_000},
    ),
    "instagram": Behaviour(
        expires_in=SHORT_LIVED_SECONDS,
        refresh="never",
        show_expires_in=False,
        short_lived=True,
        extras=lambda subject, scopes: {"user_id": subject, "permissions": ",".join(scopes)},
    ),
    "facebook": _META,
    "meta_ads": _META,
    "youtube": _GOOGLE,
    "google_ads": _GOOGLE,
    "google_calendar": _GOOGLE,
    "twitter": Behaviour(expires_in=7200, refresh="scope:offline.access", rotates=True),
    "linkedin": Behaviour(expires_in=5_184_000, refresh="never"),
    "hubspot": Behaviour(expires_in=1800),
    "salesforce": Behaviour(
        expires_in=None,
        extras=lambda subject, _: {
            "instance_url": "https://sandbox.my.salesforce.com",
            "id": f"https://login.salesforce.com/id/00D000000000SBX/{subject}",
            "issued_at": str(int(time.time() * 1000)),
        },
    ),
    "shopify": Behaviour(expires_in=None, refresh="never"),
    "mailchimp": Behaviour(expires_in=None, refresh="never"),
    "tiktok_ads": Behaviour(
        expires_in=None,
        refresh="never",
        extras=lambda *_: {"advertiser_ids": ["7000000000000000001"]},
        app_scopes=("ad.read", "ad.manage"),
    ),
    "slack": Behaviour(expires_in=None, refresh="never", errors_as_200=True, extras=_slack),
    "discord": Behaviour(expires_in=604_800, rotates=True, extras=_discord),
    "github": Behaviour(expires_in=None, refresh="never", errors_as_200=True),
    "zoom": Behaviour(
        expires_in=3600, rotates=True, app_scopes=("meeting:read", "meeting:write", "user:read")
    ),
}
DEFAULT_BEHAVIOUR = Behaviour()


class OAuthError(Exception):
    """An RFC 6749 error answer."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def response(self, errors_as_200: bool = False) -> Response:
        body: dict[str, Any] = {"error": self.error, "error_description": self.description}
        status = self.status
        if errors_as_200 and status < 500:
            body["ok"] = False  # Slack's envelope; GitHub ignores it
            status = 200
        headers = {"Cache-Control": "no-store"}
        if self.error == "invalid_client" and status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="sandbox"'
        if status == 429:
            headers["Retry-After"] = "1"
        return JSONResponse(body, status, headers=headers)


def mask(token: str) -> str:
    return f"{token[:6]}…{token[-4:]}" if len(token) > 12 else "…"


def _iso(moment: float | None) -> str | None:
    return datetime.fromtimestamp(moment, UTC).isoformat() if moment is not None else None


@dataclass
class _Authorization:
    provider: str
    client_id: str
    redirect_uri: str
    scopes: list[str]
    challenge: str | None
    offline: bool
    expires: float
    used: bool = False
    issued: list[str] = field(default_factory=list)


@dataclass
class IssuedToken:
    token: str = field(repr=False)
    provider: str
    kind: str  # access | refresh
    client_id: str
    subject: str
    scopes: list[str]
    issued: float
    expires: float | None
    long_lived: bool = False
    revoked: bool = False
    # A refresh token's access tokens, and an access token's refresh token.
    family: list[str] = field(default_factory=list, repr=False)

    def public(self) -> dict[str, Any]:
        return {
            "token": mask(self.token),
            "provider": self.provider,
            "kind": self.kind,
            "clientId": self.client_id,
            "subject": self.subject,
            "scopes": self.scopes,
            "issuedAt": _iso(self.issued),
            "expiresAt": _iso(self.expires),
            "longLived": self.long_lived,
            "revoked": self.revoked,
        }


def client_id_for(provider: str) -> str:
    return f"sandbox-{provider}-client"


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _same(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode(), b.encode())


class OAuthProvidersState:
    """The sandbox's memory: pending codes, issued tokens, faults and token sinks."""

    def __init__(
        self,
        catalog: Catalog,
        client_secret: str = SANDBOX_CLIENT_SECRET,
        clock: Callable[[], float] = time.time,
        *,
        short_lived_seconds: int = SHORT_LIVED_SECONDS,
        refresh_min_age_seconds: int = IG_REFRESH_MIN_AGE_SECONDS,
    ) -> None:
        self.catalog = catalog
        self.clock = clock
        # Instagram's and Facebook's code tokens, and how old an Instagram long-lived
        # token must be to be refreshed (tests shorten both).
        self.short_lived_seconds = short_lived_seconds
        self.refresh_min_age_seconds = refresh_min_age_seconds
        self._secret = client_secret
        self._codes: dict[str, _Authorization] = {}
        self._tokens: dict[str, IssuedToken] = {}
        self._faults: list[int] = []
        self._sinks: list[str] = []
        self._lock = threading.Lock()
        self._poster = Poster("oauth-sandbox")

    def close(self) -> None:
        self._poster.close()

    def entry(self, provider: str) -> ProviderEntry:
        entry = self.catalog.get(provider)
        if entry is None:
            raise OAuthError(404, "invalid_request", f"no provider {provider!r} in the catalog")
        return entry

    # -- faults and sinks -------------------------------------------------------------------

    def fail_next(self, count: int, status: int) -> None:
        with self._lock:
            self._faults = [status] * count

    def take_fault(self) -> None:
        with self._lock:
            status = self._faults.pop() if self._faults else None
        if status is not None:
            error = "slow_down" if status == 429 else "temporarily_unavailable"
            raise OAuthError(status, error, "the sandbox was told to fail this request")

    def add_sink(self, url: str) -> list[str]:
        with self._lock:
            if url not in self._sinks:
                self._sinks.append(url)
            return list(self._sinks)

    def sinks(self) -> list[str]:
        with self._lock:
            return list(self._sinks)

    def _notify(self, body: dict[str, Any]) -> None:
        # Told before the token endpoint answers: a client that uses its new token at once
        # (a retry right after a refresh) must find the platform sandbox knows it already.
        content = json.dumps(body).encode()
        for url in self.sinks():
            self._poster.post(
                Delivery(url),
                headers={"Content-Type": "application/json"},
                content=content,
                now=True,
            )

    # -- authorization ----------------------------------------------------------------------

    def authorize(self, provider: str, params: Mapping[str, str]) -> str:
        """A code for an approved request (already checked by `check_request`)."""
        entry = self.entry(provider)
        behaviour = PROVIDERS.get(provider, DEFAULT_BEHAVIOUR)
        code = secrets.token_urlsafe(24)
        scopes = self.requested_scopes(entry, params) or list(behaviour.app_scopes)
        with self._lock:
            self._codes[code] = _Authorization(
                provider=provider,
                client_id=params[entry.client_id_param],
                redirect_uri=params["redirect_uri"],
                scopes=scopes,
                challenge=params.get("code_challenge") or None,
                offline=params.get("access_type") == "offline",
                expires=self.clock() + CODE_SECONDS,
            )
        return code

    @staticmethod
    def requested_scopes(entry: ProviderEntry, params: Mapping[str, str]) -> list[str]:
        raw = params.get("scope", "")
        return [s for s in raw.split(entry.scope_separator.strip() or None) if s.strip()]

    def check_request(self, provider: str, params: Mapping[str, str]) -> ProviderEntry:
        """The authorization request's errors that cannot go back to redirect_uri."""
        entry = self.entry(provider)
        client_id = params.get(entry.client_id_param, "")
        if not _same(client_id, client_id_for(provider)):
            raise OAuthError(400, "invalid_client", f"unknown {entry.client_id_param}")
        redirect = urlsplit(params.get("redirect_uri", ""))
        if redirect.scheme not in ("http", "https") or not redirect.hostname or redirect.fragment:
            raise OAuthError(400, "invalid_request", "redirect_uri must be an absolute URL")
        if params.get("response_type", "code") != "code":
            raise OAuthError(400, "unsupported_response_type", "only response_type=code")
        if params.get("code_challenge") and params.get("code_challenge_method") != "S256":
            raise OAuthError(400, "invalid_request", "code_challenge_method must be S256")
        return entry

    # -- the token endpoint ----------------------------------------------------------------

    def check_secret(self, secret: str) -> None:
        if not _same(secret, self._secret):
            raise OAuthError(401, "invalid_client", "client authentication failed")

    def authenticate(
        self, entry: ProviderEntry, authorization: str | None, body: Mapping[str, str]
    ) -> str:
        """The client id, authenticated the way the catalog says; invalid_client if not."""
        provider = entry.key
        scheme, _, encoded = (authorization or "").partition(" ")
        basic = scheme.lower() == "basic"
        if entry.token_request_auth_method == "basic":  # noqa: S105 (a name, not a secret)
            try:
                user, _, password = base64.b64decode(encoded).decode().partition(":")
            except ValueError:
                user = password = ""
            client_id, secret = unquote(user), unquote(password)
            if not basic:
                raise OAuthError(401, "invalid_client", "client authentication is HTTP Basic")
        else:
            if basic:
                raise OAuthError(401, "invalid_client", "client credentials go in the request body")
            client_id = str(body.get(entry.client_id_param, ""))
            secret = str(body.get(entry.client_secret_param, ""))
        good_id = _same(client_id, client_id_for(provider))
        if not (_same(secret, self._secret) and good_id):
            raise OAuthError(401, "invalid_client", "client authentication failed")
        return client_id

    def exchange_code(
        self, entry: ProviderEntry, client_id: str, body: Mapping[str, str]
    ) -> dict[str, Any]:
        code = str(body.get(entry.code_param, ""))
        now = self.clock()
        with self._lock:
            grant = self._codes.get(code)
            if grant is None or grant.provider != entry.key or grant.client_id != client_id:
                raise OAuthError(400, "invalid_grant", "the authorization code is not valid")
            if grant.used:
                # RFC 6749 section 4.1.2: a replayed code revokes what it gave.
                for token in grant.issued:
                    self._revoke_locked(token)
                raise OAuthError(400, "invalid_grant", "the authorization code was already used")
            grant.used = True
            if grant.expires < now:
                raise OAuthError(400, "invalid_grant", "the authorization code expired")
            if body.get("redirect_uri") != grant.redirect_uri:
                raise OAuthError(400, "invalid_grant", "redirect_uri does not match")
            verifier = str(body.get("code_verifier", ""))
            if grant.challenge is not None and not (
                verifier and _same(_challenge(verifier), grant.challenge)
            ):
                raise OAuthError(400, "invalid_grant", "the PKCE code_verifier does not match")
        behaviour = PROVIDERS.get(entry.key, DEFAULT_BEHAVIOUR)
        refresh = {
            "always": True,
            "never": False,
            "offline": grant.offline,
        }.get(behaviour.refresh, behaviour.refresh.removeprefix("scope:") in grant.scopes)
        subject = f"{entry.key[:3]}{secrets.randbelow(10**12):012d}"
        answer, issued = self._issue(entry, client_id, subject, grant.scopes, refresh)
        with self._lock:
            grant.issued.extend(issued)
        return answer

    def refresh(
        self, entry: ProviderEntry, client_id: str, body: Mapping[str, str]
    ) -> dict[str, Any]:
        value = str(body.get("refresh_token", ""))
        behaviour = PROVIDERS.get(entry.key, DEFAULT_BEHAVIOUR)
        with self._lock:
            old = self._tokens.get(value)
            if (
                old is None
                or old.kind != "refresh"
                or old.provider != entry.key
                or old.client_id != client_id
                or old.revoked
            ):
                raise OAuthError(400, "invalid_grant", "the refresh token is not valid")
            if behaviour.rotates:
                old.revoked = True
        answer, _ = self._issue(
            entry, client_id, old.subject, old.scopes, behaviour.rotates, keep=old
        )
        return answer

    def _issue(
        self,
        entry: ProviderEntry,
        client_id: str,
        subject: str,
        scopes: list[str],
        refresh: bool,
        keep: IssuedToken | None = None,
    ) -> tuple[dict[str, Any], list[str]]:
        """A token answer; `keep` is a refresh token that stays (no rotation)."""
        behaviour = PROVIDERS.get(entry.key, DEFAULT_BEHAVIOUR)
        lifetime = self.short_lived_seconds if behaviour.short_lived else behaviour.expires_in
        now = self.clock()
        access = self._record(
            IssuedToken(
                token=f"sbx-{entry.key}-{secrets.token_urlsafe(32)}",
                provider=entry.key,
                kind="access",
                client_id=client_id,
                subject=subject,
                scopes=scopes,
                issued=now,
                expires=now + lifetime if lifetime else None,
            )
        )
        answer: dict[str, Any] = {"access_token": access.token, "token_type": "Bearer"}
        if lifetime and behaviour.show_expires_in:
            answer["expires_in"] = lifetime
        answer["scope"] = entry.scope_string(scopes)
        issued = [access.token]
        refresh_token = keep
        if refresh:
            refresh_token = self._record(
                IssuedToken(
                    token=f"sbx-{entry.key}-r-{secrets.token_urlsafe(32)}",
                    provider=entry.key,
                    kind="refresh",
                    client_id=client_id,
                    subject=subject,
                    scopes=scopes,
                    issued=now,
                    expires=None,
                )
            )
            answer["refresh_token"] = refresh_token.token
            issued.append(refresh_token.token)
        if refresh_token is not None:
            with self._lock:
                refresh_token.family.append(access.token)
        if behaviour.extras is not None:
            answer.update(behaviour.extras(subject, scopes))
        return answer, issued

    def _record(self, token: IssuedToken) -> IssuedToken:
        with self._lock:
            self._tokens[token.token] = token
        if token.kind == "access":
            self._notify(
                {
                    "event": "issued",
                    "provider": token.provider,
                    "accessToken": token.token,
                    "scopes": token.scopes,
                    "expiresAt": _iso(token.expires),
                    "subject": token.subject,
                }
            )
        return token

    # -- Meta's long-lived tokens ---------------------------------------------------------

    def _access(self, provider: str, value: str) -> IssuedToken:
        with self._lock:
            token = self._tokens.get(value)
        if (
            token is None
            or token.kind != "access"
            or token.provider != provider
            or token.revoked
            or (token.expires is not None and token.expires <= self.clock())
        ):
            raise OAuthError(400, "invalid_grant", "the access token is not valid or expired")
        return token

    def long_lived(self, provider: str, value: str, *, refresh: bool) -> dict[str, Any]:
        """Instagram's ig_exchange_token / ig_refresh_token, Facebook's fb_exchange_token."""
        token = self._access(provider, value)
        now = self.clock()
        if refresh:
            if not token.long_lived:
                raise OAuthError(400, "invalid_grant", "only a long-lived token can be refreshed")
            if now - token.issued < self.refresh_min_age_seconds:
                raise OAuthError(
                    400, "invalid_grant", "a long-lived token can be refreshed once 24 hours old"
                )
        elif token.long_lived and provider == "instagram":
            raise OAuthError(400, "invalid_grant", "the token is already long-lived")
        new = self._record(
            IssuedToken(
                token=f"sbx-{provider}-ll-{secrets.token_urlsafe(40)}",
                provider=provider,
                kind="access",
                client_id=token.client_id,
                subject=token.subject,
                scopes=token.scopes,
                issued=now,
                expires=now + LONG_LIVED_SECONDS,
                long_lived=True,
            )
        )
        return {"access_token": new.token, "token_type": "bearer", "expires_in": LONG_LIVED_SECONDS}

    # -- revocation, introspection, userinfo ----------------------------------------------

    def _revoke_locked(self, value: str) -> IssuedToken | None:
        token = self._tokens.get(value)
        if token is None or token.revoked:
            return None
        token.revoked = True
        for child in token.family:  # a refresh token's access tokens go with it
            if child in self._tokens:
                self._tokens[child].revoked = True
        return token

    def revoke(self, value: str, provider: str | None = None) -> bool:
        with self._lock:
            token = self._tokens.get(value)
            if token is None or (provider is not None and token.provider != provider):
                return False
            revoked = self._revoke_locked(value)
        if revoked is not None and revoked.kind == "access":
            self._notify({"event": "revoked", "provider": revoked.provider, "accessToken": value})
        return True

    def introspect(self, value: str) -> dict[str, Any]:
        with self._lock:
            token = self._tokens.get(value)
        active = (
            token is not None
            and not token.revoked
            and (token.expires is None or token.expires > self.clock())
        )
        if token is None or not active:
            return {"active": False}
        return {
            "active": True,
            "provider": token.provider,
            "tokenType": token.kind,
            "scope": " ".join(token.scopes),
            "exp": int(token.expires) if token.expires else None,
            "sub": token.subject,
            "clientId": token.client_id,
        }

    def userinfo(self, provider: str, authorization: str | None) -> dict[str, Any]:
        _, _, value = (authorization or "").partition(" ")
        token = self._access(provider, value.strip())
        entry = self.entry(provider)
        name = f"Sandbox {entry.display_name} User"
        info: dict[str, Any] = {"id": token.subject, "sub": token.subject}
        if provider == "instagram":
            # Instagram Login's /me names the professional account `user_id` (and `id`).
            info["user_id"] = token.subject
        path = entry.account_name_field
        if path:
            _place(info, path.split("."), name)
        return info

    def tokens(self) -> list[dict[str, Any]]:
        with self._lock:
            return [t.public() for t in reversed(self._tokens.values())][:TOKENS_LIMIT]


def _place(target: Any, parts: list[str], value: Any) -> None:
    """Put `value` at the dotted path (`items.0.snippet.title`) inside `target`."""
    head, rest = parts[0], parts[1:]
    child: Any
    if isinstance(target, list):
        if not rest:
            target.append(value)
            return
        child = [] if rest[0].isdigit() else {}
        target.append(child)
    else:
        if not rest:
            target[head] = value
            return
        child = target.setdefault(head, [] if rest[0].isdigit() else {})
    _place(child, rest, value)


# --- HTTP ----------------------------------------------------------------------------------

_Handler = Callable[[OAuthProvidersState, Request], Awaitable[Response]]


def _state(request: Request) -> OAuthProvidersState:
    state: OAuthProvidersState = request.app.state.oauth
    return state


def _route(
    handler: _Handler, *, provider_api: bool = True
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state = _state(request)
        provider = request.path_params.get("provider", "")
        as_200 = PROVIDERS.get(provider, DEFAULT_BEHAVIOUR).errors_as_200
        try:
            if provider_api:
                state.take_fault()
            return await handler(state, request)
        except OAuthError as exc:
            return exc.response(as_200 and provider_api)

    return endpoint


async def _form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise OAuthError(400, "invalid_request", "the body must be a JSON object")
        return {str(k): str(v) for k, v in body.items()}
    return dict(parse_qsl((await request.body()).decode("utf-8", "replace")))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name} (sandbox): authorize</title>
<style>body{{font-family:sans-serif;max-width:32em;margin:3em auto}}
button{{font-size:1em;margin-right:1em}}</style></head>
<body><h1>{name}</h1><p>Sandbox: <strong>{client}</strong> asks for access to your
{name} account.</p><p>Scopes asked:</p><ul>{scopes}</ul>
<form method="post" action="{action}" style="display:inline">{hidden}
<button type="submit" name="decision" value="approve">Approve</button></form>
<form method="post" action="{action}" style="display:inline">{hidden}
<button type="submit" name="decision" value="deny">Deny</button></form>
</body></html>"""


async def _authorize_page(state: OAuthProvidersState, request: Request) -> Response:
    provider = request.path_params["provider"]
    params = dict(request.query_params)
    entry = state.check_request(provider, params)
    scopes = state.requested_scopes(entry, params)
    items = "".join(f"<li>{html.escape(s)}</li>" for s in scopes) or "<li>(the app's scopes)</li>"
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in params.items()
    )
    page = _PAGE.format(
        name=html.escape(entry.display_name),
        client=html.escape(params[entry.client_id_param]),
        scopes=items,
        action=html.escape(request.url.path),
        hidden=hidden,
    )
    headers = {"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"}
    return HTMLResponse(page, headers=headers)


async def _authorize_decision(state: OAuthProvidersState, request: Request) -> Response:
    provider = request.path_params["provider"]
    params = await _form(request)
    decision = params.pop("decision", "")
    entry = state.check_request(provider, params)
    answer: dict[str, str] = {}
    if decision == "approve":
        answer[entry.code_param] = state.authorize(provider, params)
    else:
        answer["error"] = "access_denied"
        answer["error_description"] = "The user denied the request"
    if "state" in params:
        answer["state"] = params["state"]
    parts = urlsplit(params["redirect_uri"])
    query = parse_qsl(parts.query, keep_blank_values=True) + list(answer.items())
    location = urlunsplit(parts._replace(query=urlencode(query)))
    return RedirectResponse(location, 302, headers={"Cache-Control": "no-store"})


async def _token(state: OAuthProvidersState, request: Request) -> Response:
    provider = request.path_params["provider"]
    entry = state.entry(provider)
    meta = provider in ("facebook", "meta_ads")
    if request.method == "GET" and not meta:
        raise OAuthError(405, "invalid_request", "the token endpoint takes POST")
    body = dict(request.query_params) if request.method == "GET" else await _form(request)
    client_id = state.authenticate(entry, request.headers.get("authorization"), body)
    grant_type = body.get("grant_type", "authorization_code" if meta else "")
    if grant_type == "authorization_code":
        answer = state.exchange_code(entry, client_id, body)
    elif (
        grant_type == "refresh_token"
        and PROVIDERS.get(provider, DEFAULT_BEHAVIOUR).refresh != "never"
    ):
        answer = state.refresh(entry, client_id, body)
    elif grant_type == "fb_exchange_token" and meta:
        answer = state.long_lived(provider, body.get("fb_exchange_token", ""), refresh=False)
    else:
        raise OAuthError(
            400, "unsupported_grant_type", f"grant_type {grant_type!r} is not supported"
        )
    if entry.token_response_path:
        answer = {
            "code": 0,
            "message": "OK",
            "request_id": secrets.token_hex(8),
            entry.token_response_path: answer,
        }
    return JSONResponse(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


async def _instagram(state: OAuthProvidersState, request: Request, *, refresh: bool) -> Response:
    query = dict(request.query_params)
    expected = "ig_refresh_token" if refresh else "ig_exchange_token"
    if query.get("grant_type") != expected:
        raise OAuthError(400, "unsupported_grant_type", f"grant_type must be {expected}")
    if not refresh:
        # Instagram authenticates this exchange by the app secret alone.
        state.check_secret(query.get("client_secret", ""))
    answer = state.long_lived("instagram", query.get("access_token", ""), refresh=refresh)
    return JSONResponse(answer, headers={"Cache-Control": "no-store"})


async def _ig_exchange(state: OAuthProvidersState, request: Request) -> Response:
    return await _instagram(state, request, refresh=False)


async def _ig_refresh(state: OAuthProvidersState, request: Request) -> Response:
    return await _instagram(state, request, refresh=True)


async def _revoke(state: OAuthProvidersState, request: Request) -> Response:
    provider = request.path_params["provider"]
    entry = state.entry(provider)
    if entry.revoke_url is None:
        raise OAuthError(404, "invalid_request", f"{provider} has no revocation endpoint")
    body = {**dict(request.query_params), **await _form(request)}
    state.authenticate(entry, request.headers.get("authorization"), body)
    # RFC 7009 section 2.2: 200 also for a token the server does not know.
    state.revoke(body.get("token", ""), provider)
    return Response(status_code=200)


async def _userinfo(state: OAuthProvidersState, request: Request) -> Response:
    try:
        info = state.userinfo(request.path_params["provider"], request.headers.get("authorization"))
    except OAuthError:
        return JSONResponse(
            {"error": "invalid_token", "error_description": "the access token is not valid"},
            401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return JSONResponse(info)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise OAuthError(400, "invalid_request", "the body must be a JSON object")
    return body


async def _control_tokens(state: OAuthProvidersState, request: Request) -> Response:
    return JSONResponse({"data": state.tokens()})


async def _control_revoke(state: OAuthProvidersState, request: Request) -> Response:
    if not state.revoke(request.path_params["token"]):
        raise OAuthError(404, "invalid_request", "no such token")
    return JSONResponse({"revoked": True})


async def _control_introspect(state: OAuthProvidersState, request: Request) -> Response:
    token = (await _json_body(request)).get("token")
    if not isinstance(token, str):
        raise OAuthError(400, "invalid_request", "token must be a string")
    return JSONResponse(state.introspect(token))


async def _control_faults(state: OAuthProvidersState, request: Request) -> Response:
    body = await _json_body(request)
    count, status = body.get("count"), body.get("status", 503)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise OAuthError(400, "invalid_request", "count must be a whole number")
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        raise OAuthError(400, "invalid_request", "status must be an HTTP error status")
    state.fail_next(count, status)
    return JSONResponse({"count": count, "status": status})


async def _control_sinks(state: OAuthProvidersState, request: Request) -> Response:
    if request.method == "POST":
        url = (await _json_body(request)).get("url")
        if not (isinstance(url, str) and urlsplit(url).scheme in ("http", "https")):
            raise OAuthError(400, "invalid_request", "url must be an http(s) URL")
        return JSONResponse({"data": state.add_sink(url)}, 201)
    return JSONResponse({"data": state.sinks()})


def create_app(state: OAuthProvidersState) -> Starlette:
    """The ASGI app serving `state`."""
    routes = [
        Route("/instagram/access_token", _route(_ig_exchange), methods=["GET"]),
        Route("/instagram/refresh_access_token", _route(_ig_refresh), methods=["GET"]),
        Route("/{provider}/authorize", _route(_authorize_page), methods=["GET"]),
        Route("/{provider}/authorize", _route(_authorize_decision), methods=["POST"]),
        Route("/{provider}/token", _route(_token), methods=["GET", "POST"]),
        Route("/{provider}/revoke", _route(_revoke), methods=["POST"]),
        Route("/{provider}/userinfo", _route(_userinfo), methods=["GET"]),
        Route("/_sandbox/tokens", _route(_control_tokens, provider_api=False), methods=["GET"]),
        Route(
            "/_sandbox/tokens/{token}/revoke",
            _route(_control_revoke, provider_api=False),
            methods=["POST"],
        ),
        Route(
            "/_sandbox/introspect",
            _route(_control_introspect, provider_api=False),
            methods=["POST"],
        ),
        Route("/_sandbox/faults", _route(_control_faults, provider_api=False), methods=["POST"]),
        Route(
            "/_sandbox/token-sinks",
            _route(_control_sinks, provider_api=False),
            methods=["GET", "POST"],
        ),
    ]
    app = Starlette(routes=routes)
    app.state.oauth = state
    return app


# --- running it ----------------------------------------------------------------------------


def overlay(
    catalog: Catalog, base: str, only: frozenset[str] | None = None
) -> dict[str, dict[str, Any]]:
    """The PROVIDERS_FILE entries that point every catalog provider's URLs (or those of the
    providers in `only`) at `base`."""
    fields: dict[str, dict[str, Any]] = {}
    for entry in catalog:
        if only is not None and entry.key not in only:
            continue
        prefix = f"{base.rstrip('/')}/{entry.key}"
        # Shopify's host name carries the shop; here it rides in the query instead.
        shop = "?shop=${connectionConfig.shop}" if "shop" in entry.connection_config else ""
        urls = {
            "authorization_url": f"{prefix}/authorize{shop}",
            "token_url": f"{prefix}/token{shop}",
        }
        if entry.refresh_url is not None:
            urls["refresh_url"] = f"{prefix}/token{shop}"
        if entry.revoke_url is not None:
            urls["revoke_url"] = f"{prefix}/revoke{shop}"
        if entry.userinfo_url is not None:
            query = urlsplit(entry.userinfo_url).query
            urls["userinfo_url"] = f"{prefix}/userinfo" + (f"?{query}" if query else "")
        fields[entry.key] = urls
        # The catalog's long-lived exchange and access-token refresh, whole blocks (the
        # PROVIDERS_FILE merge replaces a field): Facebook's is its token endpoint,
        # Instagram's its own paths (/instagram/access_token, …/refresh_access_token).
        for name in ("exchange", "refresh"):
            grant = getattr(entry, name)
            if grant is None:
                continue
            url = f"{prefix}/token{shop}"
            if grant.url != entry.token_url:
                url = f"{prefix}/{urlsplit(grant.url).path.rstrip('/').rsplit('/', 1)[-1]}"
            fields[entry.key][name] = {**grant.model_dump(), "url": url}
    return fields


@dataclass
class OAuthProvidersSandbox:
    """One OAuth providers sandbox server: its command, the settings that point Relay's
    catalog at it, and a way to run it in this process (tests). `port=0` with
    `run_in_thread` binds a free port."""

    port: int = field(default_factory=free_port)
    client_secret: str = SANDBOX_CLIENT_SECRET
    # Where environment() writes the PROVIDERS_FILE overlay (default: the temp directory).
    providers_file: Path | None = None
    catalog_file: Path | None = None  # a PROVIDERS_FILE the catalog is read with, if any
    host: str = "127.0.0.1"
    # The catalog keys it stands in for (None: all); the others keep their real URLs.
    providers: frozenset[str] | None = None
    # URLs registered as token sinks each time the server starts (a restart forgets them).
    token_sinks: tuple[str, ...] = ()
    # Instagram's and Facebook's short-lived code tokens; Instagram's refresh minimum age.
    short_lived_seconds: int = SHORT_LIVED_SECONDS
    refresh_min_age_seconds: int = IG_REFRESH_MIN_AGE_SECONDS

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def catalog(self) -> Catalog:
        return load_catalog(self.catalog_file)

    def command(self) -> list[str]:
        """The command line; the default secret is not on it (a non-default one would be)."""
        command = [sys.executable, "-m", "relay.sandbox.oauth_providers", "--port", str(self.port)]
        command += ["--host", self.host]
        if self.catalog_file is not None:
            command += ["--catalog-file", str(self.catalog_file)]
        if self.client_secret != SANDBOX_CLIENT_SECRET:
            command += ["--client-secret", self.client_secret]
        for url in self.token_sinks:
            command += ["--token-sink", url]
        if self.short_lived_seconds != SHORT_LIVED_SECONDS:
            command += ["--short-lived-seconds", str(self.short_lived_seconds)]
        if self.refresh_min_age_seconds != IG_REFRESH_MIN_AGE_SECONDS:
            command += ["--refresh-min-age-seconds", str(self.refresh_min_age_seconds)]
        return command

    def stands_in_for(self) -> list[str]:
        """The catalog keys this sandbox plays, sorted."""
        return sorted(
            entry.key
            for entry in self.catalog()
            if self.providers is None or entry.key in self.providers
        )

    def write_providers_file(self) -> Path:
        """Write the overlay (pointing every provider here) and return its path."""
        path = self.providers_file or Path(tempfile.gettempdir()) / (
            f"relay-oauth-sandbox-{self.port}.yaml"
        )
        # Relay reads one PROVIDERS_FILE: a catalog_file's entries are carried over, with
        # their URLs replaced, so the providers it adds or removes stay so.
        merged: dict[str, Any] = {}
        if self.catalog_file is not None:
            merged = yaml.safe_load(self.catalog_file.read_text(encoding="utf-8")) or {}
        for key, urls in overlay(self.catalog(), self.api_base, self.providers).items():
            merged[key] = {**(merged.get(key) or {}), **urls}
        text = "# Written by relay.sandbox.oauth_providers: every provider → the sandbox.\n"
        text += yaml.safe_dump(merged, sort_keys=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        self.providers_file = path
        return path

    def environment(self) -> dict[str, str]:
        """The settings (as environment variables) that point Relay's catalog here: a
        PROVIDERS_FILE overlay (written now) and every provider's client credentials."""
        env = {"PROVIDERS_FILE": str(self.write_providers_file())}
        for key in self.stands_in_for():
            env[f"{key.upper()}_CLIENT_ID"] = client_id_for(key)
            env[f"{key.upper()}_CLIENT_SECRET"] = self.client_secret
        return env

    def state(self) -> OAuthProvidersState:
        state = OAuthProvidersState(
            self.catalog(),
            self.client_secret,
            short_lived_seconds=self.short_lived_seconds,
            refresh_min_age_seconds=self.refresh_min_age_seconds,
        )
        for url in self.token_sinks:
            state.add_sink(url)
        return state

    def ready(self) -> bool:
        return port_open(self.host, self.port)

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        wait_for_port(self.host, self.port, "the OAuth providers sandbox", timeout)

    def register_token_sink(self, url: str) -> None:
        """Have the running sandbox POST every access token it issues to `url`."""
        response = httpx.post(f"{self.api_base}/_sandbox/token-sinks", json={"url": url})
        response.raise_for_status()

    def run_in_thread(self) -> OAuthProvidersServer:
        """Start serving in a thread of this process; stop it with `.stop()` or `with`."""
        return OAuthProvidersServer(self).start()


class OAuthProvidersServer:
    """A sandbox served in a daemon thread; `state` is there to inspect."""

    def __init__(self, sandbox: OAuthProvidersSandbox) -> None:
        self.sandbox = sandbox
        self.state = sandbox.state()
        self._server = AppServer(
            create_app(self.state), sandbox.host, sandbox.port, "OAuth providers", self.state.close
        )
        sandbox.port = self._server.port

    @property
    def api_base(self) -> str:
        return self.sandbox.api_base

    def start(self) -> OAuthProvidersServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> OAuthProvidersServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


OVERLAY_FILE_NAME = "oauth-sandbox-providers.yaml"


def _in_development(settings: Settings) -> bool:
    return settings.sandbox == "auto" and settings.relay_env == "development"


def sandboxed_providers(settings: Settings) -> frozenset[str]:
    """The catalog keys `relay dev` points at the sandbox: in development with SANDBOX=auto
    and no PROVIDERS_FILE (a catalog of the developer's own is left alone), every provider
    without a client of its own. Empty otherwise, and always in production."""
    if not _in_development(settings) or settings.providers_file is not None:
        return frozenset()
    configured = settings.oauth_clients
    return frozenset(entry.key for entry in load_catalog() if entry.key not in configured)


def wanted(settings: Settings) -> bool:
    """Development, SANDBOX=auto, no PROVIDERS_FILE, and a catalog provider without
    credentials: the sandbox stands in for those providers."""
    return bool(sandboxed_providers(settings))


def plan(settings: Settings) -> OAuthProvidersSandbox | None:
    """The sandbox `relay dev` runs for these settings, or None. Its overlay is written to
    DATA_DIR (PROVIDERS_FILE for the worker and the API)."""
    providers = sandboxed_providers(settings)
    if not providers:
        return None
    return OAuthProvidersSandbox(
        providers_file=settings.data_dir.resolve() / OVERLAY_FILE_NAME, providers=providers
    )


def describe(settings: Settings, sandbox: OAuthProvidersSandbox | None) -> str:
    """The banner's line for the OAuth providers."""
    if sandbox is not None:
        played = sandbox.stands_in_for()
        real = sorted(settings.oauth_clients)
        line = f"sandboxed (local OAuth server at {sandbox.api_base} for {len(played)} providers"
        return line + (f"; real: {', '.join(real)})" if real else ")")
    if settings.providers_file is not None:
        return f"real (PROVIDERS_FILE {settings.providers_file})"
    return "real (<PROVIDER>_CLIENT_ID / <PROVIDER>_CLIENT_SECRET per provider)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m relay.sandbox.oauth_providers",
        description="Relay's local OAuth providers sandbox.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--client-secret", default=SANDBOX_CLIENT_SECRET)
    parser.add_argument("--catalog-file", type=Path)
    parser.add_argument("--token-sink", action="append", default=[], dest="token_sinks")
    parser.add_argument("--short-lived-seconds", type=int, default=SHORT_LIVED_SECONDS)
    parser.add_argument("--refresh-min-age-seconds", type=int, default=IG_REFRESH_MIN_AGE_SECONDS)
    args = parser.parse_args(argv)
    sandbox = OAuthProvidersSandbox(
        port=args.port,
        host=args.host,
        client_secret=args.client_secret,
        catalog_file=args.catalog_file,
        token_sinks=tuple(args.token_sinks),
        short_lived_seconds=args.short_lived_seconds,
        refresh_min_age_seconds=args.refresh_min_age_seconds,
    )
    logging.basicConfig(level=logging.INFO, format="oauth-sandbox: %(message)s")
    state = sandbox.state()
    try:
        # No access log: Instagram's exchanges carry tokens in the query string.
        uvicorn.run(
            create_app(state), host=args.host, port=args.port, log_level="info", access_log=False
        )
    finally:
        state.close()


if __name__ == "__main__":
    main()
