"""The OAuth 2.0 wire protocol, without I/O: token, refresh and revocation requests
built from a catalog entry, and provider answers turned into values or Temporal failures.

Classification of a token endpoint's answer (RFC 6749 section 5.2):

    2xx with an access_token                         → TokenResponse
    408, 425, 429, 5xx                               → retryable (Retry-After honoured)
    error=temporarily_unavailable | server_error
          | slow_down                                → retryable
    error=invalid_grant (or a provider's synonym)    → non-retryable, `grant_code`
                                                       (REFRESH_FAILED for a refresh)
    any other error, or no access_token              → non-retryable, `other_code`

Failure messages carry the provider's `error` and `error_description`, with every
secret Relay sent (client secret, code, refresh token) cut out, and never a body.

The other fields of a token response (Slack's `team` and `incoming_webhook`, Discord's
`webhook`, Salesforce's `instance_url`) may carry bearer secrets (a webhook URL is one),
so they are all sealed with the tokens (`sealed_extras`); only the paths the catalog
entry lists in `public_extras` are also kept in the clear (`extras`), and never a key
that looks like a credential.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

from temporalio.exceptions import ApplicationError

from relay.errors import ErrorCode
from relay.oauth.catalog import SECRET_WORDS, AccessTokenGrant, ProviderEntry
from relay.provider_errors import error_for_status, is_transient_status

TRANSIENT_OAUTH_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})
# What providers answer instead of RFC 6749's invalid_grant for a dead grant.
GRANT_ERRORS = frozenset(
    {
        "invalid_grant",
        "invalid_refresh_token",
        "invalid_code",
        "bad_verification_code",
        "token_revoked",
        "token_expired",
        "expired_token",
        "invalid_token",
    }
)
_MESSAGE_LIMIT = 300
_EXTRAS_LIMIT = 4096  # the clear part (integrations.provider_data)
_SEALED_EXTRAS_LIMIT = 16384  # the sealed part (integration_credentials.extras)
_STANDARD_FIELDS = frozenset(
    {"access_token", "refresh_token", "token_type", "expires_in", "scope", "id_token"}
)


@dataclass(frozen=True)
class TokenRequest:
    """A prepared POST (or, with `query`, a GET); its repr shows the URL only."""

    url: str
    headers: dict[str, str] = field(repr=False)
    form: dict[str, str] | None = field(default=None, repr=False)
    json: dict[str, str] | None = field(default=None, repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    # Set for the GETs of `access_token_request`; the URL itself never carries a secret.
    query: dict[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TokenResponse:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    token_type: str | None
    expires_in: int | None
    scope: list[str] | None
    # The catalog's `public_extras` of the other fields, without any credential-like key:
    # kept in the clear (the integration's providerData).
    extras: dict[str, Any]
    account_name: str | None = None
    # Every other field of the response (bounded): sealed with the tokens.
    sealed_extras: dict[str, Any] = field(default_factory=dict, repr=False)


def _client_auth(
    entry: ProviderEntry, body: dict[str, str], client_id: str, client_secret: str
) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if entry.token_request_auth_method == "basic":  # noqa: S105 (a name, not a secret)
        # RFC 6749 section 2.3.1: both parts form-urlencoded before base64.
        pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    else:
        body[entry.client_id_param] = client_id
        body[entry.client_secret_param] = client_secret
    return headers


def token_request(
    entry: ProviderEntry,
    *,
    url: str,
    client_id: str,
    client_secret: str,
    grant: Mapping[str, str],
    connection_config: Mapping[str, str],
) -> TokenRequest:
    body = {k: entry.interpolate(v, connection_config) for k, v in entry.token_params.items()}
    body.update(grant)
    headers = _client_auth(entry, body, client_id, client_secret)
    secrets = tuple(
        value
        for value in (client_secret, *(v for k, v in grant.items() if k != "grant_type"))
        if value
    )
    url = entry.interpolate(url, connection_config)
    if entry.token_request_format == "json":  # noqa: S105 (a name, not a secret)
        return TokenRequest(url, headers, json=body, secrets=secrets)
    return TokenRequest(url, headers, form=body, secrets=secrets)


def exchange_grant(
    entry: ProviderEntry, *, code: str, redirect_uri: str, code_verifier: str | None
) -> dict[str, str]:
    grant = {
        "grant_type": "authorization_code",
        entry.code_param: code,
        "redirect_uri": redirect_uri,
    }
    if code_verifier is not None:
        grant["code_verifier"] = code_verifier
    return grant


def access_token_request(
    grant: AccessTokenGrant,
    entry: ProviderEntry,
    *,
    client_id: str,
    client_secret: str,
    access_token: str,
    connection_config: Mapping[str, str],
) -> TokenRequest:
    """The catalog's `exchange` or `refresh`: a GET with the current access token in the
    query (how Instagram and Facebook take it), answered like a token endpoint."""
    query = {"grant_type": grant.grant_type}
    if grant.send_client_id:
        query[entry.client_id_param] = client_id
    if grant.send_client_secret:
        query[entry.client_secret_param] = client_secret
    query[grant.token_param] = access_token
    return TokenRequest(
        entry.interpolate(grant.url, connection_config),
        {"Accept": "application/json"},
        secrets=(client_secret, access_token),
        query=query,
    )


def refresh_grant(refresh_token: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": refresh_token}


def revocation_request(
    entry: ProviderEntry,
    *,
    client_id: str,
    client_secret: str,
    token: str,
    token_type_hint: str,
    connection_config: Mapping[str, str],
) -> TokenRequest:
    """RFC 7009 section 2.1: a form POST with the token and the client's authentication."""
    assert entry.revoke_url is not None
    body = {"token": token, "token_type_hint": token_type_hint}
    headers = _client_auth(entry, body, client_id, client_secret)
    return TokenRequest(
        entry.interpolate(entry.revoke_url, connection_config),
        headers,
        form=body,
        secrets=(client_secret, token),
    )


# --- answers -----------------------------------------------------------------------------


def _payload(text: str) -> dict[str, Any]:
    text = text.strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        # Some endpoints (GitHub without Accept) answer form-encoded.
        pairs = parse_qsl(text, keep_blank_values=True)
        return dict(pairs) if pairs and all(k for k, _ in pairs) else {}
    return value if isinstance(value, dict) else {}


def dig(value: Any, path: str | None) -> Any:
    """`a.b.0.c` into nested objects and lists; None when any step is missing."""
    if not path:
        return value
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text[:_MESSAGE_LIMIT]


def _secret_key(key: object) -> bool:
    return any(word in str(key).lower() for word in SECRET_WORDS)


def _bounded(value: Any, depth: int = 0, *, public: bool = False) -> Any:
    """The value as plain JSON, at most 5 levels deep and 50 items a list; `public` also
    drops every key that could hold a credential, at any depth."""
    if depth > 4:
        return None
    if isinstance(value, dict):
        return {
            str(k): _bounded(v, depth + 1, public=public)
            for k, v in value.items()
            if not (public and _secret_key(k))
        }
    if isinstance(value, list):
        return [_bounded(item, depth + 1, public=public) for item in value[:50]]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return None


def _extras(payload: dict[str, Any]) -> dict[str, Any]:
    """Every field of a token response besides the tokens themselves, to be sealed."""
    extras = _bounded({k: v for k, v in payload.items() if k not in _STANDARD_FIELDS})
    if len(json.dumps(extras, default=str)) > _SEALED_EXTRAS_LIMIT:
        return {}
    return extras  # type: ignore[no-any-return]


def public_extras(extras: Mapping[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """The parts of `extras` that `paths` (the catalog's `public_extras`, dotted into
    objects: `team.name`) name, in their nesting, with no credential-like key anywhere.
    Nothing is public unless named."""
    kept: dict[str, Any] = {}
    for path in paths:
        parts = path.split(".")
        if any(_secret_key(part) for part in parts):
            continue
        value: Any = extras
        for part in parts:
            value = value.get(part) if isinstance(value, Mapping) else None
            if value is None:
                break
        if value is None:
            continue
        target = kept
        for part in parts[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = target[part] = {}
            target = child
        target[parts[-1]] = _bounded(value, len(parts), public=True)
    if len(json.dumps(kept, default=str)) > _EXTRAS_LIMIT:
        return {}
    return kept


def _scopes(value: Any, separator: str) -> list[str] | None:
    if isinstance(value, list):
        return [str(item) for item in value if str(item)]
    if isinstance(value, str):
        parts = (
            value.replace(",", " ").split() if separator in {" ", ","} else value.split(separator)
        )
        return [part.strip() for part in parts if part.strip()]
    return None


def _expires_in(value: Any) -> int | None:
    try:
        seconds = int(float(value))
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


def _reason(payload: dict[str, Any]) -> tuple[str | None, str]:
    error: Any = payload.get("error")
    description: Any
    if isinstance(error, dict):  # {"error": {"code": …, "message": …}}
        error, description = error.get("code") or error.get("type"), error.get("message")
    else:
        description = (
            payload.get("error_description") or payload.get("message") or payload.get("msg")
        )
    error_text = str(error) if error not in (None, "") else None
    return error_text, str(description) if description not in (None, "") else ""


def token_failure(
    provider: str,
    operation: str,
    status: int,
    headers: Mapping[str, str],
    payload: dict[str, Any],
    *,
    grant_code: ErrorCode,
    other_code: ErrorCode,
    secrets: tuple[str, ...],
) -> ApplicationError:
    error, description = _reason(payload)
    reason = ": ".join(part for part in (error, description) if part) or "no error given"
    message = scrub(f"{provider} refused the {operation}: {reason}", secrets)
    details = {"provider": provider, "status": status, "error": error}
    if is_transient_status(status):
        return error_for_status(provider, status, headers=headers, reason=scrub(reason, secrets))
    if error in TRANSIENT_OAUTH_ERRORS:
        return ApplicationError(message, details, type=ErrorCode.PROVIDER_ERROR.value)
    code = grant_code if error in GRANT_ERRORS else other_code
    return ApplicationError(message, details, type=code.value, non_retryable=True)


def parse_token_response(
    entry: ProviderEntry,
    status: int,
    headers: Mapping[str, str],
    text: str,
    *,
    operation: str,
    grant_code: ErrorCode,
    other_code: ErrorCode,
    secrets: tuple[str, ...] = (),
) -> TokenResponse:
    """The tokens of a 2xx answer, or the classified failure (raised)."""
    payload = _payload(text)
    data = dig(payload, entry.token_response_path) if status < 400 else payload
    if not isinstance(data, dict):
        data = {}
    access_token = data.get("access_token")
    if status >= 400 or not isinstance(access_token, str) or not access_token:
        raise token_failure(
            entry.key,
            operation,
            status if status >= 400 else 400,
            headers,
            payload,
            grant_code=grant_code,
            other_code=other_code,
            secrets=secrets,
        )
    refresh = data.get("refresh_token")
    account_name = None
    if entry.account_name_field and not entry.userinfo_url:
        found = dig(payload, entry.account_name_field)
        account_name = str(found)[:255] if isinstance(found, str | int) else None
    return TokenResponse(
        access_token=access_token,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        token_type=str(data.get("token_type") or "Bearer")[:40],
        expires_in=_expires_in(data.get("expires_in")),
        scope=_scopes(data.get("scope"), entry.scope_separator),
        extras=public_extras(sealed := _extras(data), entry.public_extras),
        account_name=account_name,
        sealed_extras=sealed,
    )


def account_name(entry: ProviderEntry, text: str) -> str | None:
    """The display name from a userinfo answer (`account_name_field`)."""
    found = dig(_payload(text), entry.account_name_field)
    if isinstance(found, str | int) and str(found).strip():
        return str(found).strip()[:255]
    return None


def account_facts(entry: ProviderEntry, text: str) -> dict[str, Any]:
    """The catalog's `account_fields` of a userinfo answer (the account's ids), kept in the
    clear like `public_extras`: in their nesting, no credential-like key, bounded."""
    if not entry.account_fields:
        return {}
    return public_extras(_payload(text), entry.account_fields)


def with_account_facts(
    provider_data: Mapping[str, Any], facts: Mapping[str, Any]
) -> dict[str, Any]:
    """The integration's providerData with the userinfo's `facts` over it; unchanged when
    the two together would pass the clear part's bound."""
    merged = dict(provider_data) | dict(facts)
    if len(json.dumps(merged, default=str)) > _EXTRAS_LIMIT:
        return dict(provider_data)
    return merged


def revocation_outcome(
    provider: str, status: int, headers: Mapping[str, str], text: str, secrets: tuple[str, ...]
) -> bool:
    """True when revoked (RFC 7009 answers 200 also for unknown tokens), False when the
    server does not revoke this token type; raises the classified failure otherwise."""
    if 200 <= status < 300:
        return True
    payload = _payload(text)
    error, _ = _reason(payload)
    if status == 400 and error == "unsupported_token_type":
        return False
    raise token_failure(
        provider,
        "revocation",
        status,
        headers,
        payload,
        grant_code=ErrorCode.PROVIDER_ERROR,
        other_code=ErrorCode.PROVIDER_ERROR,
        secrets=secrets,
    )
