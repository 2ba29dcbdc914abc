"""A small OAuth 2.0 authorization server built with authlib, for what oidc-provider-mock
lacks: PKCE enforcement (S256, required), refresh-token rotation with reuse detection,
invalid_grant and outages on demand, an RFC 7009 revocation endpoint, and counters.

It runs on loopback in a thread (werkzeug), speaks the real protocol over HTTP, and the
test reads and steers it through `AuthServer.state` (same process):

    with AuthServer(rotate_refresh_tokens=True, expires_in=3600) as server:
        server.url                     # http://127.0.0.1:PORT
        server.catalog_entry("acme")   # a PROVIDERS_FILE entry pointing at it
        server.state.fail_refresh.append("invalid_grant")
        server.state.refresh_count     # successful refreshes
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import flask
import werkzeug.serving
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    ClientMixin,
    InvalidRequestError,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge

CLIENT_ID = "relay-test-client"
CLIENT_SECRET = "relay-test-secret-5b1f0c"  # noqa: S105 (a test server's fixed secret)
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

# authlib refuses http:// unless told this is a test.
os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")


@dataclass
class Client(ClientMixin):
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: Any) -> str:
        return scope if isinstance(scope, str) else " ".join(scope or [])

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return True

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in AUTH_METHODS

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in {"authorization_code", "refresh_token"}

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    user: str
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class Token(TokenMixin):
    access_token: str
    refresh_token: str | None
    user: str
    scope: str
    expires_in: int | None
    issued_at: float
    access_revoked: bool = False
    refresh_revoked: bool = False

    def check_client(self, client: ClientMixin) -> bool:
        return client.get_client_id() == CLIENT_ID

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in or 0

    def is_expired(self) -> bool:
        return bool(self.expires_in) and time.time() > self.issued_at + (self.expires_in or 0)

    def is_revoked(self) -> bool:
        return self.access_revoked


@dataclass
class ProviderState:
    """Everything the server knows, plus the knobs a test turns."""

    expires_in: int | None = 3600
    issue_refresh_token: bool = True
    rotate_refresh_tokens: bool = False
    require_pkce: bool = True
    user: str = "alice"
    # Seconds a refresh takes: widens the window in which concurrent refreshes would overlap.
    refresh_delay: float = 0.0
    # Next refresh answers, consumed in order: "invalid_grant", "invalid_client", or a status.
    fail_refresh: deque[str | int] = field(default_factory=deque)
    # Extra fields of the code exchange's answer (Slack's incoming_webhook, Discord's webhook).
    token_extras: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    codes: dict[str, Code] = field(default_factory=dict)
    issued_codes: list[str] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)
    refresh_count: int = 0
    refresh_attempts: int = 0
    exchange_count: int = 0
    pkce_verified: int = 0
    revoked: list[tuple[str, str]] = field(default_factory=list)
    userinfo_calls: int = 0

    def issued(self) -> list[str]:
        """Every code and token this server ever issued (to search for in the clear)."""
        with self.lock:
            values = list(self.issued_codes)
            values += [t.access_token for t in self.tokens]
            values += [t.refresh_token for t in self.tokens if t.refresh_token]
        return values

    def by_access(self, value: str) -> Token | None:
        return next((t for t in self.tokens if t.access_token == value), None)

    def by_refresh(self, value: str) -> Token | None:
        return next((t for t in self.tokens if t.refresh_token == value), None)

    def live_refresh_tokens(self) -> list[str]:
        return [t.refresh_token for t in self.tokens if t.refresh_token and not t.refresh_revoked]


def build_app(state: ProviderState) -> flask.Flask:
    app = flask.Flask("relay-test-provider")
    server = AuthorizationServer()

    def save_token(token: dict[str, Any], request: Any) -> None:
        with state.lock:
            state.tokens.append(
                Token(
                    access_token=token["access_token"],
                    refresh_token=token.get("refresh_token"),
                    user=request.user,
                    scope=token.get("scope", ""),
                    expires_in=token.get("expires_in"),
                    issued_at=time.time(),
                )
            )

    server.init_app(
        app, query_client=lambda cid: Client() if cid == CLIENT_ID else None, save_token=save_token
    )

    def access_token(client: Any, grant_type: str, user: Any = None, scope: Any = None) -> str:
        return "at-" + secrets.token_urlsafe(24)

    def refresh_token(client: Any, grant_type: str, user: Any = None, scope: Any = None) -> str:
        return "rt-" + secrets.token_urlsafe(24)

    server.register_token_generator(
        "default",
        BearerTokenGenerator(
            access_token, refresh_token, lambda client, grant_type: state.expires_in
        ),
    )

    class RequiredPkce(CodeChallenge):
        def validate_code_challenge(self, grant: Any, redirect_uri: Any) -> None:
            if state.require_pkce and not grant.request.payload.data.get("code_challenge"):
                raise InvalidRequestError("PKCE (S256) is required")
            super().validate_code_challenge(grant, redirect_uri)

        def validate_code_verifier(self, grant: Any, result: Any) -> None:
            super().validate_code_verifier(grant, result)
            if grant.request.form.get("code_verifier"):
                state.pkce_verified += 1

    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

        def save_authorization_code(self, code: str, request: Any) -> None:
            data = request.payload.data
            state.issued_codes.append(code)
            state.codes[code] = Code(
                code=code,
                user=request.user,
                redirect_uri=data.get("redirect_uri", ""),
                scope=data.get("scope", ""),
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
            )

        def query_authorization_code(self, code: str, client: Any) -> Code | None:
            return state.codes.get(code)

        def delete_authorization_code(self, authorization_code: Code) -> None:
            state.codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code: Code) -> str:
            return authorization_code.user

    class RefreshGrant(grants.RefreshTokenGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

        @property
        def INCLUDE_NEW_REFRESH_TOKEN(self) -> bool:  # noqa: N802 (authlib's name)
            return state.rotate_refresh_tokens

        def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
            with state.lock:
                token = state.by_refresh(refresh_token)
                if token is None:
                    return None
                if token.refresh_revoked:
                    # Reuse of a rotated refresh token: revoke the whole grant (RFC 9700).
                    for other in state.tokens:
                        if other.user == token.user:
                            other.refresh_revoked = other.access_revoked = True
                    return None
                return token

        def authenticate_user(self, refresh_token: Token) -> str:
            return refresh_token.user

        def revoke_old_credential(self, refresh_token: Token) -> None:
            with state.lock:
                refresh_token.access_revoked = True
                if state.rotate_refresh_tokens:
                    refresh_token.refresh_revoked = True

    class Revocation(RevocationEndpoint):
        CLIENT_AUTH_METHODS = AUTH_METHODS

        def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
            with state.lock:
                return state.by_refresh(token_string) or state.by_access(token_string)

        def revoke_token(self, token: Token, request: Any) -> None:
            hint = request.form.get("token_type_hint") or "access_token"
            with state.lock:
                token.access_revoked = True
                if hint == "refresh_token":
                    token.refresh_revoked = True
                state.revoked.append((hint, request.form["token"]))

    server.register_grant(CodeGrant, [RequiredPkce(required=True)])
    server.register_grant(RefreshGrant)
    server.register_endpoint(Revocation)

    @app.get("/authorize")
    def authorize() -> Any:
        if flask.request.args.get("deny"):
            return server.create_authorization_response(grant_user=None)
        try:
            server.get_consent_grant(end_user=state.user)
        except InvalidRequestError as error:
            return {"error": error.error, "error_description": error.description}, 400
        return server.create_authorization_response(grant_user=state.user)

    @app.post("/token")
    def token() -> Any:
        grant_type = flask.request.form.get("grant_type")
        if grant_type == "refresh_token":
            with state.lock:
                state.refresh_attempts += 1
                failure = state.fail_refresh.popleft() if state.fail_refresh else None
            if state.refresh_delay:
                time.sleep(state.refresh_delay)
            if isinstance(failure, int):
                return {"error": "temporarily_unavailable"}, failure, {"Retry-After": "0"}
            if failure is not None:
                return {"error": failure, "error_description": f"{failure} (on demand)"}, 400
            response = server.create_token_response()
            if response.status_code == 200:
                with state.lock:
                    state.refresh_count += 1
            return response
        response = server.create_token_response()
        if response.status_code == 200:
            with state.lock:
                state.exchange_count += 1
            if state.token_extras:
                response.set_data(json.dumps({**response.get_json(), **state.token_extras}))
        return response

    @app.post("/revoke")
    def revoke() -> Any:
        return server.create_endpoint_response(Revocation.ENDPOINT_NAME)

    @app.get("/userinfo")
    def userinfo() -> Any:
        header = flask.request.headers.get("Authorization", "")
        with state.lock:
            state.userinfo_calls += 1
            token = state.by_access(header.removeprefix("Bearer ").strip())
        if token is None or token.access_revoked or token.is_expired():
            return {"error": "invalid_token"}, 401
        return {
            "sub": token.user,
            "login": f"{token.user}-login",
            "email": f"{token.user}@example.test",
        }

    return app


class AuthServer:
    """The provider on a free loopback port, in a thread; stopped on exit."""

    def __init__(self, **knobs: Any) -> None:
        self.state = ProviderState(**knobs)
        self._server = werkzeug.serving.make_server(
            "127.0.0.1", 0, build_app(self.state), threaded=True
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def catalog_entry(self, **overrides: Any) -> dict[str, Any]:
        entry = {
            "display_name": "Test Provider",
            "auth_mode": "OAUTH2",
            "authorization_url": f"{self.url}/authorize",
            "token_url": f"{self.url}/token",
            "revoke_url": f"{self.url}/revoke",
            "userinfo_url": f"{self.url}/userinfo",
            "account_name_field": "login",
            "default_scopes": ["profile", "email"],
            "scope_separator": " ",
            "pkce": True,
            "token_request_auth_method": "basic",
            "token_expiration_buffer": 300,
        }
        entry.update(overrides)
        return entry

    def __enter__(self) -> AuthServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
