"""The OAuth provider catalog: data, not code.

Relay ships `relay/catalog/providers.yaml`; PROVIDERS_FILE is merged over it at start
(a new key adds a provider, an existing key overrides the fields it names, `key: null`
removes one). Every entry is validated with pydantic, and the first problem stops the
API and the worker with a `ConfigError` naming the file, the entry and the field:

    PROVIDERS_FILE /etc/relay/providers.yaml: provider 'acme', field token_url: …

Entries follow the RFC 6749 shape; a few optional fields describe providers that bend
it (TikTok's `client_key`, TikTok for Business's JSON token request answered inside
`data`, Mailchimp's `Authorization: OAuth` header). URLs may use
`${connectionConfig.<name>}` for per-connection values (a Shopify shop), and each
such name must be declared in `connection_config`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from relay.errors import ConfigError, ErrorCode, RelayError

BUILTIN_SOURCE = "built-in catalog (relay/catalog/providers.yaml)"

# Keys become environment variable names (<KEY>_CLIENT_ID), so no dashes.
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_PLACEHOLDER = re.compile(r"\$\{connectionConfig\.([A-Za-z_][A-Za-z0-9_]*)\}")
_ANY_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
# Per-connection values land inside URLs (often the host name), so they are plain
# labels: no slashes, no '@', no ':' that could move a request to another host.
_CONFIG_VALUE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,253}[A-Za-z0-9])?$")
_PARAM = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_LOOPBACK_NAMES = {"localhost"}
_EXTRA_PATH = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,4}$")
# Field names that may hold a credential: never in the clear, whatever the catalog says.
SECRET_WORDS = ("token", "secret", "password", "code", "verifier", "assertion")

URL_FIELDS = ("authorization_url", "token_url", "refresh_url", "revoke_url", "userinfo_url")


class AccessTokenGrant(BaseModel):
    """A GET that trades the current access token for another, for providers whose tokens
    come without a refresh token: `exchange` (at connect, short-lived → long-lived:
    Instagram's ig_exchange_token, Facebook's fb_exchange_token) and `refresh` (before
    expiry, long-lived → a new long-lived one: Instagram's ig_refresh_token)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    grant_type: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    # The query parameter carrying the current access token (Facebook: fb_exchange_token).
    token_param: str = Field(default="access_token", pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # noqa: S105
    send_client_id: bool = False
    send_client_secret: bool = False
    # The provider refuses to refresh a younger token (Instagram: 24 hours).
    min_token_age: int = Field(default=0, ge=0, le=31_536_000)


class ProviderEntry(BaseModel):
    """One provider. Field names are the catalog's YAML keys (see docs/oauth.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    display_name: str = Field(min_length=1, max_length=100)
    auth_mode: Literal["OAUTH2"] = "OAUTH2"
    authorization_url: str
    token_url: str
    refresh_url: str | None = None
    revoke_url: str | None = None
    userinfo_url: str | None = None
    userinfo_auth_scheme: str = Field(default="Bearer", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,31}$")
    account_name_field: str | None = Field(default=None, max_length=200)
    # Fields of the userinfo answer (dotted paths: `data.user.id`) kept in the clear in the
    # integration's providerData: the account's ids (LinkedIn's `sub`, Instagram's
    # `user_id`, Facebook's `id`) that other capabilities need. Never a credential.
    account_fields: list[str] = Field(default_factory=list, max_length=10)
    default_scopes: list[str] = Field(default_factory=list)
    scope_separator: str = Field(default=" ", min_length=1, max_length=3)
    pkce: bool = True
    token_request_auth_method: Literal["body", "basic"] = "body"  # noqa: S105 (a name, not a secret)
    authorization_params: dict[str, str] = Field(default_factory=dict)
    token_params: dict[str, str] = Field(default_factory=dict)
    token_expiration_buffer: int = Field(default=300, ge=0, le=86_400)
    connection_config: list[str] = Field(default_factory=list)
    # For providers that rename RFC 6749's parameters or wrap the token response.
    client_id_param: str = "client_id"
    client_secret_param: str = "client_secret"  # noqa: S105 (a name, not a secret)
    code_param: str = "code"
    token_request_format: Literal["form", "json"] = "form"  # noqa: S105 (a name, not a secret)
    token_response_path: str | None = None
    # Fields of the token response kept in the clear as the integration's providerData
    # (dotted paths: `team.name`); the whole response besides the tokens is sealed with
    # them and served by GET …/credentials. Nothing is in the clear unless listed here.
    public_extras: list[str] = Field(default_factory=list)
    # Providers without refresh tokens (Instagram, Facebook): trade the code's short-lived
    # token for a long-lived one at connect, and refresh with the access token itself.
    exchange: AccessTokenGrant | None = None
    refresh: AccessTokenGrant | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not _KEY.match(value):
            raise ValueError(
                "must be lower-case letters, digits and '_' (it names <KEY>_CLIENT_ID), "
                "starting with a letter"
            )
        return value

    @field_validator("default_scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not scope or any(ch.isspace() for ch in scope) or len(scope) > 200:
                raise ValueError(f"scope {scope!r} is empty, too long or contains whitespace")
        return value

    @field_validator("connection_config")
    @classmethod
    def _config_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", name):
                raise ValueError(f"{name!r} is not a valid name (letters, digits, '_')")
        if len(set(value)) != len(value):
            raise ValueError("names repeat")
        return value

    @field_validator("public_extras", "account_fields")
    @classmethod
    def _public_extras(cls, value: list[str]) -> list[str]:
        for path in value:
            if not _EXTRA_PATH.match(path):
                raise ValueError(f"{path!r} is not a dotted path of field names (team.name)")
            if any(word in part.lower() for part in path.split(".") for word in SECRET_WORDS):
                raise ValueError(f"{path!r} names a field that may hold a credential")
        if len(set(value)) != len(value):
            raise ValueError("paths repeat")
        return value

    @field_validator("client_id_param", "client_secret_param", "code_param")
    @classmethod
    def _param_name(cls, value: str) -> str:
        if not _PARAM.match(value):
            raise ValueError(f"{value!r} is not a valid parameter name")
        return value

    @field_validator("authorization_params", "token_params")
    @classmethod
    def _params(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = {"state", "code_challenge", "code_challenge_method", "code_verifier"}
        for name in value:
            if not _PARAM.match(name):
                raise ValueError(f"{name!r} is not a valid parameter name")
            if name in reserved:
                raise ValueError(f"{name!r} is set by Relay and cannot be overridden")
        return value

    @model_validator(mode="after")
    def _urls(self) -> ProviderEntry:
        declared = set(self.connection_config)
        for name in URL_FIELDS:
            url = getattr(self, name)
            if url is None:
                continue
            _check_url(name, url, declared)
        for name in ("exchange", "refresh"):
            grant = getattr(self, name)
            if grant is not None:
                _check_url(f"{name}.url", grant.url, declared)
        if self.refresh is not None and self.refresh_url is not None:
            raise ValueError("refresh: a provider refreshes with refresh_url or refresh, not both")
        for name in ("authorization_params", "token_params"):
            for param, text in getattr(self, name).items():
                _check_placeholders(f"{name}.{param}", text, declared)
        if self.userinfo_url and not self.account_name_field:
            raise ValueError(
                "account_name_field: required with userinfo_url (e.g. login, email, sub)"
            )
        if self.account_fields and not self.userinfo_url:
            raise ValueError("account_fields: needs userinfo_url (they are read from its answer)")
        return self

    # --- use --------------------------------------------------------------------------

    @property
    def refreshes_access_token(self) -> bool:
        """Refreshed with the access token itself (`refresh`), not a refresh token."""
        return self.refresh is not None

    @property
    def refresh_endpoint(self) -> str:
        return self.refresh_url or self.token_url

    def scope_string(self, scopes: list[str]) -> str:
        return self.scope_separator.join(scopes)

    def check_connection_config(self, values: Mapping[str, Any] | None) -> dict[str, str]:
        """The per-connection values this provider needs; ValueError names the bad one."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(self.connection_config))
        if unknown:
            raise ConnectionConfigError(
                unknown[0], f"{self.key} takes no connection value {unknown[0]!r}"
            )
        checked: dict[str, str] = {}
        for name in self.connection_config:
            value = values.get(name)
            if value is None or value == "":
                raise ConnectionConfigError(name, f"{self.key} needs connectionConfig.{name}")
            if not isinstance(value, str) or not _CONFIG_VALUE.match(value):
                raise ConnectionConfigError(
                    name, f"connectionConfig.{name} must be letters, digits, '.', '_' or '-'"
                )
            checked[name] = value
        return checked

    def interpolate(self, text: str, connection_config: Mapping[str, str]) -> str:
        """`text` with `${connectionConfig.x}` replaced by the (checked) value of x."""

        def replace(match: re.Match[str]) -> str:
            return quote(connection_config[match.group(1)], safe="")

        return _PLACEHOLDER.sub(replace, text)


class ConnectionConfigError(ValueError):
    """A missing or malformed per-connection value; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _check_placeholders(field: str, text: str, declared: set[str]) -> None:
    for match in _ANY_PLACEHOLDER.finditer(text):
        placeholder = _PLACEHOLDER.fullmatch(match.group(0))
        if placeholder is None:
            raise ValueError(f"{field}: {match.group(0)} is not ${{connectionConfig.<name>}}")
        if placeholder.group(1) not in declared:
            raise ValueError(
                f"{field}: uses {match.group(0)} but connection_config does not declare "
                f"{placeholder.group(1)!r}"
            )


def _check_url(field: str, url: str, declared: set[str]) -> None:
    _check_placeholders(field, url, declared)
    parts = urlsplit(_PLACEHOLDER.sub("x", url))
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise ValueError(f"{field}: {url!r} is not an absolute http(s) URL")
    if parts.username or parts.password:
        raise ValueError(f"{field}: must not carry credentials")
    if parts.fragment:
        raise ValueError(f"{field}: must not have a fragment")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"{field}: must use https (plain http is allowed for loopback only)")


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback address (an IPv6 literal with or without brackets)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Catalog:
    """The merged, validated catalog; keys are looked up case-insensitively."""

    def __init__(self, entries: Mapping[str, ProviderEntry]) -> None:
        self._entries = dict(sorted(entries.items()))

    def get(self, key: str) -> ProviderEntry | None:
        return self._entries.get(key.lower())

    def require(self, key: str) -> ProviderEntry:
        entry = self.get(key)
        if entry is None:
            raise RelayError(
                ErrorCode.INVALID_PROVIDER,
                f"unknown provider {key!r}; GET /v1/providers lists them",
            )
        return entry

    def __iter__(self) -> Iterator[ProviderEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._entries


def builtin_text() -> str:
    return (resources.files("relay") / "catalog" / "providers.yaml").read_text(encoding="utf-8")


def load_catalog(providers_file: Path | None = None) -> Catalog:
    """The built-in catalog with PROVIDERS_FILE merged over it, validated."""
    raw = _parse(builtin_text(), BUILTIN_SOURCE)
    sources = dict.fromkeys(raw, BUILTIN_SOURCE)
    overridden: dict[str, set[str]] = {}
    override_source = BUILTIN_SOURCE
    if providers_file is not None:
        override_source = f"PROVIDERS_FILE {providers_file}"
        try:
            text = Path(providers_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"{override_source}: cannot be read ({exc.strerror or exc})"
            ) from None
        for key, fields in _parse(text, override_source).items():
            if fields is None:
                raw.pop(key, None)
            elif raw.get(key) is not None:
                raw[key] = {**raw[key], **fields}
                overridden[key] = set(fields)
            else:
                raw[key] = fields
                sources[key] = override_source

    entries: dict[str, ProviderEntry] = {}
    for key, fields in raw.items():
        if fields is None:
            continue
        try:
            entries[key] = ProviderEntry.model_validate({**fields, "key": key})
        except ValidationError as exc:
            field, message = _first_problem(exc)
            top = field.split(".")[0]
            origin = override_source if top in overridden.get(key, ()) else sources[key]
            where = f"provider {key!r}" + (f", field {field}" if field else "")
            raise ConfigError(f"{origin}: {where}: {message}") from None
    return Catalog(entries)


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{source}: not valid YAML{line}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping of provider key to entry")
    for key, fields in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: provider key {key!r} must be a string")
        if fields is not None and not isinstance(fields, dict):
            raise ConfigError(f"{source}: provider {key!r}: must be a mapping of fields (or null)")
    return data


def _first_problem(exc: ValidationError) -> tuple[str, str]:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    if not field and ": " in message:
        # Model-level checks name the field at the start of their message.
        head, _, rest = message.partition(": ")
        if re.match(r"^[a-z_]+(\.[A-Za-z0-9_.-]+)?$", head):
            return head, rest
    if error.get("type") == "extra_forbidden":
        message = "unknown field (see docs/oauth.md for the catalog format)"
    return field, message
