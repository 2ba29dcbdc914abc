"""Relay's settings: one class, read from the environment and `.env`.

This is the only module that reads `os.environ`. Every process (API, worker, CLI,
tests) builds a `Settings` and passes it down; nothing reads configuration at
import time.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from relay.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """`"15s"`, `"5m"`, `"2h"`, `"5d"`, `"250ms"` or plain seconds."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float):
        return timedelta(seconds=text)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 15s, 5m, 2h, 5d)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _split(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


Duration = Annotated[timedelta, NoDecode]
CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Configuration names are a contract (see docs/ARCHITECTURE and README)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # The .env files this instance was built from (`_env_file=` overrides the class's),
    # so `oauth_clients` reads the same files the fields were read from.
    _env_files: tuple[Path, ...] = PrivateAttr(default=())

    def __init__(self, **values: Any) -> None:
        env_file = values["_env_file"] if "_env_file" in values else self.model_config["env_file"]
        super().__init__(**values)
        if env_file is None:
            self._env_files = ()
        elif isinstance(env_file, str | os.PathLike):
            self._env_files = (Path(env_file),)
        else:
            self._env_files = tuple(Path(item) for item in env_file)

    relay_env: Literal["development", "production", "test"] = "development"
    data_dir: Path = Path(".data")
    database_url: str | None = None
    database_pool_size: int = 10

    temporal_address: str | None = None
    temporal_namespace: str = "default"
    temporal_task_queue: str = "relay"
    temporal_api_key: SecretStr | None = None
    # Unset (None) lets the Temporal SDK decide: TLS whenever an API key is set. An
    # explicit false would send TEMPORAL_API_KEY in the clear, so production refuses it.
    temporal_tls: bool | None = None

    api_host: str = "127.0.0.1"
    # Origins of Temporal UIs that call /codec; outside production the dev server's UI
    # (TEMPORAL_UI_PORT on localhost) is allowed as well.
    temporal_ui_origins: CommaList = Field(default_factory=list)
    api_port: int = 8000
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    public_base_url: str | None = None
    # Request-body caps (api/limits.py), checked before anything is read or authenticated:
    # every route, and /codec, where one Temporal UI call carries one history field's
    # payloads (the server's default blob limit, 2 MiB, is about 2.7 MiB base64-encoded).
    api_max_body_bytes: int = Field(default=1_048_576, ge=1)
    codec_max_body_bytes: int = Field(default=3_145_728, ge=1)

    encryption_keys: SecretStr | None = None
    worker_metrics_port: int | None = None
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "relay"
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    webhook_retry_schedule: Annotated[list[timedelta], NoDecode] = Field(
        default_factory=lambda: [parse_duration(d) for d in "5s,5m,30m,2h,5h,10h,10h".split(",")]
    )
    webhook_timeout: Duration = timedelta(seconds=15)
    webhook_disable_after: Duration = timedelta(days=5)
    webhook_allowed_networks: Annotated[
        list[ipaddress.IPv4Network | ipaddress.IPv6Network], NoDecode
    ] = Field(default_factory=list)
    webhook_require_https: bool | None = None
    webhook_max_payload_bytes: int = 262_144
    # Outgoing webhooks dispatcher (docs/webhooks.md): shards of the long-lived
    # dispatcher workflow, the lease a worker holds on claimed deliveries (longer
    # than WEBHOOK_TIMEOUT), deliveries claimed per batch, concurrent requests per
    # worker, how often an idle dispatcher polls the outbox, and how overdue a
    # retry held on a Temporal timer must be before the database sweep takes it.
    webhook_dispatch_shards: int = Field(default=1, ge=1, le=64)
    webhook_lease: Duration = timedelta(seconds=60)
    webhook_batch_size: int = Field(default=500, ge=1, le=5000)
    webhook_concurrency: int = Field(default=256, ge=1, le=4096)
    webhook_poll_interval: Duration = timedelta(milliseconds=25)
    webhook_sweep_grace: Duration = timedelta(seconds=60)

    providers_file: Path | None = None
    oauth_allowed_redirects: CommaList = Field(
        default_factory=lambda: ["http://localhost", "http://127.0.0.1"]
    )
    # Connection fixation defence (docs/oauth.md): requireConfirmation's default, and how
    # long a connection waits for the application's confirmation before it expires.
    oauth_require_confirmation: bool = False
    oauth_confirmation_window: Duration = Field(
        default=timedelta(minutes=10), ge=timedelta(seconds=1), le=timedelta(days=1)
    )

    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    # Inbound provider webhooks (docs/inbound.md): how often the forwarder looks for
    # events still waiting to be forwarded (recorded while Temporal was down).
    inbound_poll_interval: Duration = timedelta(milliseconds=500)
    # Billing (docs/billing.md): how long a subscription whose renewal failed stays
    # entitled while Stripe retries the card.
    billing_grace_period: Duration = timedelta(days=7)
    # How often a Temporal Schedule lists Stripe's events and feeds the inbox any it lacks
    # (an event lost while Relay or its endpoint was down still reaches its subscription).
    stripe_reconcile_interval: Duration = timedelta(minutes=10)
    # Payments (docs/payments.md): a payment with no event for this long is re-read from
    # its provider; one still awaiting the payer after PAYMENT_EXPIRY is canceled.
    payment_poll_interval: Duration = timedelta(minutes=10)
    payment_expiry: Duration = timedelta(hours=24)
    paypal_client_id: str | None = None
    paypal_client_secret: SecretStr | None = None
    paypal_mode: Literal["sandbox", "live"] = "sandbox"
    paypal_api_base: str | None = None
    paypal_webhook_id: str | None = None
    # `auto`: in development, `relay dev` runs a local sandbox (localstripe, …) for each
    # provider without credentials; `off`: none. Never in production.
    sandbox: Literal["auto", "off"] = "auto"
    sendgrid_api_key: SecretStr | None = None
    sendgrid_api_base: str | None = None
    # The Event Webhook's verification key (base64 DER, as SendGrid's settings show it).
    sendgrid_webhook_public_key: str | None = None
    email_from: str | None = None
    # <templateId>/subject.txt, body.html, body.txt: rendered with Jinja2 for SMTP sends.
    email_templates_dir: Path | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: bool = True
    # The SMTP sandbox's HTTP interface (what it captured), for /sandbox; set by `relay dev`.
    smtp_sandbox_url: str | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_whatsapp_number: str | None = None
    twilio_api_base: str | None = None
    # Notifications (docs/notifications.md): how long a multi-channel notification waits for
    # delivery on one channel before the next; how often the send pump looks for new work.
    notification_fallback_after: Duration = timedelta(minutes=10)
    notification_poll_interval: Duration = timedelta(milliseconds=200)
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    aws_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    # Files (docs/files.md): the largest upload accepted, the most pixels an image may
    # decode to (decompression bombs), the thumbnails' longest sides, how long a
    # rendition's URL stays valid, and how long an upload may wait to be completed.
    file_max_bytes: int = Field(default=26_214_400, ge=1)
    image_max_pixels: int = Field(default=50_000_000, ge=1)
    thumbnail_sizes: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [64, 128, 256, 512]
    )
    file_url_ttl: Duration = timedelta(hours=1)
    upload_expiry: Duration = timedelta(hours=24)
    # Signed CDN URLs instead of presigned S3 URLs when all three are set.
    cloudfront_domain: str | None = None
    cloudfront_key_pair_id: str | None = None
    cloudfront_private_key: SecretStr | None = None
    # SNS topics whose S3 event notifications POST /webhooks/s3 accepts (comma-separated ARNs).
    s3_events_topic_arns: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The S3 sandbox's SNS signing certificate (PEM, or its base64), trusted for loopback
    # SigningCertURLs outside production with the sandbox in use; `relay dev` sets it.
    s3_events_sandbox_certificate: str | None = None
    firebase_credentials: str | None = None
    fcm_api_base: str | None = None
    # Google Calendar v3's base (`https://www.googleapis.com/calendar/v3/` when unset).
    google_api_base: str | None = None
    # Zoom: server-to-server OAuth (all three set) for meetings, and the webhook secret token.
    zoom_account_id: str | None = None
    zoom_client_id: str | None = None
    zoom_client_secret: SecretStr | None = None
    zoom_webhook_secret: SecretStr | None = None
    zoom_api_base: str = "https://api.zoom.us"
    zoom_oauth_base: str = "https://zoom.us"
    # Publishing: each platform's API base, scheme, host and port only (the platform's
    # documented paths, Graph's /vNN.N included, hang off it); unset: the platform's own.
    twitter_api_base: str | None = None
    linkedin_api_base: str | None = None
    facebook_api_base: str | None = None
    instagram_api_base: str | None = None
    youtube_api_base: str | None = None
    tiktok_api_base: str | None = None
    # Client-side publish limits per provider and connection, shared by every worker:
    # `provider=count/window` comma-separated (`twitter=100/15m`); a provider not named
    # keeps its default (relay.publishing.limits.DEFAULT_LIMITS).
    publish_rate_limits: str | None = None
    # How often a post the platform is still processing (YouTube, TikTok) is looked at.
    publish_poll_interval: Duration = timedelta(seconds=5)

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _schedule(cls, value: object) -> object:
        value = _split(value)
        if isinstance(value, list):
            return [parse_duration(item) for item in value]
        return value

    @field_validator(
        "webhook_timeout",
        "webhook_disable_after",
        "webhook_lease",
        "webhook_poll_interval",
        "webhook_sweep_grace",
        "oauth_confirmation_window",
        "inbound_poll_interval",
        "billing_grace_period",
        "stripe_reconcile_interval",
        "payment_poll_interval",
        "payment_expiry",
        "file_url_ttl",
        "upload_expiry",
        "notification_fallback_after",
        "notification_poll_interval",
        "publish_poll_interval",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str | int | float):
            return parse_duration(value)
        return value

    @field_validator("thumbnail_sizes", mode="before")
    @classmethod
    def _sizes(cls, value: object) -> object:
        value = _split(value)
        if isinstance(value, list):
            sizes = [int(item) for item in value]
            if not sizes or any(size < 1 for size in sizes):
                raise ValueError("THUMBNAIL_SIZES needs one or more positive sizes")
            return sorted(set(sizes))
        return value

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        value = _split(value)
        if isinstance(value, list):
            return [ipaddress.ip_network(item, strict=False) for item in value]
        return value

    @field_validator(
        "oauth_allowed_redirects", "temporal_ui_origins", "s3_events_topic_arns", mode="before"
    )
    @classmethod
    def _redirects(cls, value: object) -> object:
        return _split(value)

    @field_validator("temporal_tls", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        # `TEMPORAL_TLS=` (as left by uncommenting .env.example) means unset, not false.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    # Derived values: the defaults in the configuration table that depend on others.

    @property
    def is_production(self) -> bool:
        return self.relay_env == "production"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'relay.db').resolve()}"

    @property
    def temporal_target(self) -> str:
        return self.temporal_address or f"localhost:{self.temporal_port}"

    @property
    def manages_dev_server(self) -> bool:
        """`relay dev` starts a Temporal dev server only when no address is given."""
        return not self.temporal_address

    @property
    def base_url(self) -> str:
        return (self.public_base_url or f"http://localhost:{self.api_port}").rstrip("/")

    @property
    def requires_https_webhooks(self) -> bool:
        if self.webhook_require_https is None:
            return self.is_production
        return self.webhook_require_https

    @property
    def dev_keys_file(self) -> Path:
        return self.data_dir / "encryption.keys"

    @cached_property
    def oauth_clients(self) -> dict[str, tuple[str, SecretStr]]:
        """`<KEY>_CLIENT_ID` / `<KEY>_CLIENT_SECRET` pairs, by lower-case catalog key."""
        found: dict[str, dict[str, str]] = {}
        sources: list[dict[str, str | None]] = [
            dotenv_values(path) for path in self._env_files if path.is_file()
        ]
        sources.append(dict(os.environ))
        for source in sources:
            for name, value in source.items():
                upper = name.upper()
                for suffix, part in (("_CLIENT_ID", "id"), ("_CLIENT_SECRET", "secret")):
                    if upper.endswith(suffix) and value:
                        found.setdefault(upper[: -len(suffix)].lower(), {})[part] = value
        return {
            key: (parts["id"], SecretStr(parts["secret"]))
            for key, parts in found.items()
            if "id" in parts and "secret" in parts
        }

    def unsafe_problems(self) -> list[str]:
        """What is unsafe in every environment."""
        problems = []
        if wildcards := [_shown(origin) for origin in self.temporal_ui_origins if "*" in origin]:
            # CORS with credentials and "*" would let any web page read /codec's answers
            # with the operator's cookie (Starlette echoes the caller's origin back).
            problems.append(
                f"TEMPORAL_UI_ORIGINS contains {', '.join(wildcards)} (name each UI origin;"
                " wildcards would let any site call /codec with the operator's cookie)"
            )
        return problems

    def production_problems(self) -> list[str]:
        """What keeps this configuration from being safe to run in production."""
        problems = []
        if not self.encryption_keys:
            problems.append("ENCRYPTION_KEYS is unset (development generates a key on disk)")
        if self.sqlalchemy_url.startswith("sqlite"):
            problems.append("DATABASE_URL points at SQLite (use PostgreSQL)")
        if not self.public_base_url:
            problems.append("PUBLIC_BASE_URL is unset")
        elif not _is_https(self.public_base_url):
            problems.append(f"PUBLIC_BASE_URL is not an https URL ({_shown(self.public_base_url)})")
        if insecure := [_shown(u) for u in self.oauth_allowed_redirects if not _is_https(u)]:
            problems.append(
                f"OAUTH_ALLOWED_REDIRECTS allows non-https redirects ({', '.join(insecure)};"
                " list https prefixes, or set it empty)"
            )
        if self.temporal_api_key and self.temporal_tls is False:
            problems.append(
                "TEMPORAL_TLS=false would send TEMPORAL_API_KEY in the clear"
                " (unset TEMPORAL_TLS, or set it true)"
            )
        origins = [origin for origin in self.temporal_ui_origins if "*" not in origin]
        if insecure := [_shown(origin) for origin in origins if not _is_https(origin)]:
            problems.append(f"TEMPORAL_UI_ORIGINS has non-https origins ({', '.join(insecure)})")
        if self.s3_events_sandbox_certificate:
            problems.append(
                "S3_EVENTS_SANDBOX_CERTIFICATE is set (it trusts the development S3 sandbox's"
                " SNS key; unset it)"
            )
        return problems

    def check(self) -> None:
        """Refuse unsafe settings, and development defaults in production, naming each one.

        Every problem goes into one error, so an operator fixes them in one pass.
        """
        problems = self.unsafe_problems()
        if self.is_production:
            problems = self.production_problems() + problems
            if problems:
                raise ConfigError(
                    "RELAY_ENV=production refuses development defaults and unsafe settings: "
                    + "; ".join(problems)
                )
        if problems:
            raise ConfigError("refusing unsafe settings: " + "; ".join(problems))


def _is_https(url: str) -> bool:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return parts.scheme.lower() == "https" and bool(parts.hostname)


def _shown(url: str) -> str:
    """A URL as an error message may show it: no credentials, query or fragment."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "an unparsable URL"
    if not parts.scheme:
        return repr(url.strip()[:60].split("@")[-1])
    return f"{parts.scheme}://{host}{port}{parts.path}"


def child_environment(overrides: dict[str, str]) -> dict[str, str]:
    """The environment of a child process (`relay dev`'s worker and API): this process's,
    with `overrides` (the settings that point them at a sandbox)."""
    return {**os.environ, **overrides}


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's validation report into one clear line."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]).upper()
        raise ConfigError(f"invalid setting {field}: {first['msg']}") from None
