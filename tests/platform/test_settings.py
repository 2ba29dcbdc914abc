"""Settings read from the environment and .env, derived defaults, and production refusals."""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from pathlib import Path

import pytest

from relay.errors import ConfigError
from relay.settings import Settings, load_settings, parse_duration


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean environment: no Relay variable set, and a working directory without .env."""
    names = {name.upper() for name in Settings.model_fields}
    for name in list(os.environ):
        upper = name.upper()
        if upper in names or upper.endswith(("_CLIENT_ID", "_CLIENT_SECRET")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250ms", timedelta(milliseconds=250)),
        ("15s", timedelta(seconds=15)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("5d", timedelta(days=5)),
        ("1.5h", timedelta(minutes=90)),
        (" 30 ", timedelta(seconds=30)),
        (12, timedelta(seconds=12)),
    ],
)
def test_parse_duration(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "5 weeks", "-5s", "5x"])
def test_parse_duration_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_defaults_follow_the_configuration_table(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.relay_env == "development"
    assert settings.sqlalchemy_url == f"sqlite:///{tmp_path / '.data' / 'relay.db'}"
    assert settings.temporal_target == "localhost:7233"
    assert settings.manages_dev_server is True
    # Unset, so the Temporal SDK's rule applies: TLS whenever TEMPORAL_API_KEY is set.
    assert settings.temporal_tls is None
    assert settings.base_url == "http://localhost:8000"
    assert settings.requires_https_webhooks is False
    assert settings.webhook_retry_schedule == [
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        timedelta(hours=5),
        timedelta(hours=10),
        timedelta(hours=10),
    ]
    assert settings.webhook_timeout == timedelta(seconds=15)
    assert settings.webhook_disable_after == timedelta(days=5)
    assert settings.webhook_allowed_networks == []
    assert settings.webhook_max_payload_bytes == 262_144
    assert settings.oauth_allowed_redirects == ["http://localhost", "http://127.0.0.1"]
    assert settings.oauth_clients == {}


def test_durations_and_lists_from_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("WEBHOOK_RETRY_SCHEDULE", "1s, 2m,3h ,1d")
    env.setenv("WEBHOOK_TIMEOUT", "250ms")
    env.setenv("WEBHOOK_DISABLE_AFTER", "2d")
    env.setenv("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8, 10.1.2.3/16,::1")
    env.setenv("OAUTH_ALLOWED_REDIRECTS", "https://app.example.com/, http://localhost:3000")
    env.setenv("TEMPORAL_UI_ORIGINS", "https://ui.example.com")
    env.setenv("API_PORT", "9001")
    env.setenv("TEMPORAL_ADDRESS", "temporal.internal:7233")

    settings = load_settings()

    assert settings.webhook_retry_schedule == [
        timedelta(seconds=1),
        timedelta(minutes=2),
        timedelta(hours=3),
        timedelta(days=1),
    ]
    assert settings.webhook_timeout == timedelta(milliseconds=250)
    assert settings.webhook_disable_after == timedelta(days=2)
    assert settings.webhook_allowed_networks == [
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("::1/128"),
    ]
    assert settings.oauth_allowed_redirects == [
        "https://app.example.com/",
        "http://localhost:3000",
    ]
    assert settings.temporal_ui_origins == ["https://ui.example.com"]
    assert settings.base_url == "http://localhost:9001"
    assert settings.temporal_target == "temporal.internal:7233"
    assert settings.manages_dev_server is False


def test_dotenv_file_is_read_and_environment_wins(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "TEMPORAL_NAMESPACE=from-dotenv\n"
        "TEMPORAL_TASK_QUEUE=from-dotenv\n"
        "WEBHOOK_TIMEOUT=30s\n"
        "DATABASE_URL=postgresql+psycopg://relay@db:5432/relay\n"
    )
    env.setenv("TEMPORAL_TASK_QUEUE", "from-environment")

    settings = load_settings()

    assert settings.temporal_namespace == "from-dotenv"
    assert settings.temporal_task_queue == "from-environment"
    assert settings.webhook_timeout == timedelta(seconds=30)
    assert settings.sqlalchemy_url == "postgresql+psycopg://relay@db:5432/relay"


def test_oauth_clients_pair_ids_with_secrets_from_env_and_dotenv(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "GITHUB_CLIENT_ID=gh-id\nGITHUB_CLIENT_SECRET=gh-secret\nSLACK_CLIENT_ID=from-dotenv\n"
    )
    env.setenv("SLACK_CLIENT_ID", "slack-id")
    env.setenv("slack_client_secret", "slack-secret")
    env.setenv("GOOGLE_CLIENT_ID", "google-id-without-secret")

    clients = load_settings().oauth_clients

    assert set(clients) == {"github", "slack"}
    github_id, github_secret = clients["github"]
    assert github_id == "gh-id"
    assert github_secret.get_secret_value() == "gh-secret"
    assert "gh-secret" not in repr(clients)
    assert clients["slack"][0] == "slack-id"
    assert clients["slack"][1].get_secret_value() == "slack-secret"


def test_oauth_clients_read_the_env_file_the_settings_were_built_from(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("GITLAB_CLIENT_ID=cwd-id\nGITLAB_CLIENT_SECRET=cwd-secret\n")
    other = tmp_path / "other.env"
    other.write_text("NOTION_CLIENT_ID=n-id\nNOTION_CLIENT_SECRET=n-secret\nAPI_PORT=9100\n")

    chosen = Settings(_env_file=other)  # type: ignore[call-arg]
    assert chosen.api_port == 9100
    assert set(chosen.oauth_clients) == {"notion"}

    isolated = Settings(_env_file=None)  # type: ignore[call-arg]
    assert isolated.oauth_clients == {}


def test_production_refuses_every_development_default_and_names_each(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv("RELAY_ENV", "production")
    settings = load_settings()
    assert settings.requires_https_webhooks is True

    with pytest.raises(ConfigError) as caught:
        settings.check()
    message = str(caught.value)
    assert "RELAY_ENV=production" in message
    assert "ENCRYPTION_KEYS" in message
    assert "DATABASE_URL" in message and "SQLite" in message
    assert "PUBLIC_BASE_URL" in message


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("ENCRYPTION_KEYS", "ENCRYPTION_KEYS"),
        ("DATABASE_URL", "DATABASE_URL"),
        ("PUBLIC_BASE_URL", "PUBLIC_BASE_URL"),
    ],
)
def test_production_names_the_one_default_left(
    env: pytest.MonkeyPatch, keyring_spec: str, missing: str, named: str
) -> None:
    values = {
        "RELAY_ENV": "production",
        "ENCRYPTION_KEYS": keyring_spec,
        "DATABASE_URL": "postgresql+psycopg://relay@db:5432/relay",
        "PUBLIC_BASE_URL": "https://relay.example.com",
        # Production refuses the http default, so a real deployment sets it.
        "OAUTH_ALLOWED_REDIRECTS": "https://app.example.com/done",
    }
    del values[missing]
    for name, value in values.items():
        env.setenv(name, value)

    with pytest.raises(ConfigError) as caught:
        load_settings().check()
    message = str(caught.value)
    assert named in message
    others = {"ENCRYPTION_KEYS", "DATABASE_URL", "PUBLIC_BASE_URL"} - {named}
    assert not any(other in message for other in others)


def test_production_with_real_settings_starts(env: pytest.MonkeyPatch, keyring_spec: str) -> None:
    env.setenv("RELAY_ENV", "production")
    env.setenv("ENCRYPTION_KEYS", keyring_spec)
    env.setenv("DATABASE_URL", "postgresql+psycopg://relay@db:5432/relay")
    env.setenv("PUBLIC_BASE_URL", "https://relay.example.com/")
    env.setenv("OAUTH_ALLOWED_REDIRECTS", "https://app.example.com/done")
    settings = load_settings()
    settings.check()
    assert settings.base_url == "https://relay.example.com"
    assert settings.encryption_keys is not None
    assert keyring_spec not in repr(settings)


def test_production_refusal_stops_the_api(env: pytest.MonkeyPatch) -> None:
    from api.app import create_app

    env.setenv("RELAY_ENV", "production")
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
        create_app(load_settings())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("API_PORT", "eighty"),
        ("WEBHOOK_TIMEOUT", "soon"),
        ("WEBHOOK_RETRY_SCHEDULE", "5s,later"),
        ("WEBHOOK_ALLOWED_NETWORKS", "not-a-network"),
        ("RELAY_ENV", "staging"),
        ("WEBHOOK_MAX_PAYLOAD_BYTES", "big"),
        ("SMTP_TLS", "perhaps"),
    ],
)
def test_invalid_value_is_a_config_error_naming_the_setting(
    env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    env.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"invalid setting {name}:")
    assert "\n" not in message


# --- transport and production hardening (docs/security.md) --------------------------------


@pytest.fixture
def production(env: pytest.MonkeyPatch, keyring_spec: str) -> pytest.MonkeyPatch:
    """A production configuration that passes every check; tests then spoil one thing."""
    env.setenv("RELAY_ENV", "production")
    env.setenv("ENCRYPTION_KEYS", keyring_spec)
    env.setenv("DATABASE_URL", "postgresql+psycopg://relay@db:5432/relay")
    env.setenv("PUBLIC_BASE_URL", "https://relay.example.com")
    env.setenv("OAUTH_ALLOWED_REDIRECTS", "https://app.example.com/done")
    env.setenv("TEMPORAL_UI_ORIGINS", "https://temporal.example.com")
    load_settings().check()
    return env


def refusal(**variables: str) -> str:
    """The one-line error `check()` raises once `variables` are set."""
    with pytest.raises(ConfigError) as caught:
        load_settings(**{name.lower(): value for name, value in variables.items()}).check()
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("", None), ("true", True), ("false", False)]
)
def test_temporal_tls_is_unset_unless_configured(
    env: pytest.MonkeyPatch, value: str | None, expected: bool | None
) -> None:
    if value is not None:
        env.setenv("TEMPORAL_TLS", value)
    assert load_settings().temporal_tls is expected


def test_production_refuses_an_api_key_over_plaintext(production: pytest.MonkeyPatch) -> None:
    production.setenv("TEMPORAL_API_KEY", "tmprl-key-that-must-not-leak")
    load_settings().check()  # unset TEMPORAL_TLS: the SDK uses TLS with a key
    production.setenv("TEMPORAL_TLS", "true")
    load_settings().check()

    production.setenv("TEMPORAL_TLS", "false")
    message = refusal()
    assert "TEMPORAL_TLS=false" in message and "TEMPORAL_API_KEY" in message
    assert "tmprl-key-that-must-not-leak" not in message


def test_plaintext_without_an_api_key_is_allowed(production: pytest.MonkeyPatch) -> None:
    # A private self-hosted cluster without TLS sends no credential to protect.
    production.setenv("TEMPORAL_TLS", "false")
    load_settings().check()


@pytest.mark.parametrize(
    "url", ["http://relay.example.com", "relay.example.com", "ftp://relay.example.com", "https://"]
)
def test_production_refuses_a_public_base_url_that_is_not_https(
    production: pytest.MonkeyPatch, url: str
) -> None:
    production.setenv("PUBLIC_BASE_URL", url)
    message = refusal()
    assert "PUBLIC_BASE_URL is not an https URL" in message


def test_the_error_shows_no_credentials_of_a_url(production: pytest.MonkeyPatch) -> None:
    production.setenv("PUBLIC_BASE_URL", "http://ops:hunter2@relay.example.com/?token=abc")
    message = refusal()
    assert "http://relay.example.com/" in message
    assert "hunter2" not in message and "abc" not in message


def test_production_refuses_http_oauth_redirects_naming_each(
    production: pytest.MonkeyPatch,
) -> None:
    production.delenv("OAUTH_ALLOWED_REDIRECTS")
    message = refusal()
    assert "OAUTH_ALLOWED_REDIRECTS" in message
    assert "http://localhost" in message and "http://127.0.0.1" in message

    production.setenv(
        "OAUTH_ALLOWED_REDIRECTS", "https://app.example.com, http://app.example.com/back"
    )
    message = refusal()
    assert "http://app.example.com/back" in message
    assert "https://app.example.com" not in message

    production.setenv("OAUTH_ALLOWED_REDIRECTS", "")  # no redirects at all is safe
    assert load_settings().oauth_allowed_redirects == []
    load_settings().check()


def test_production_refuses_http_temporal_ui_origins(production: pytest.MonkeyPatch) -> None:
    production.setenv("TEMPORAL_UI_ORIGINS", "https://temporal.example.com,http://ui.example.com")
    message = refusal()
    assert "TEMPORAL_UI_ORIGINS has non-https origins (http://ui.example.com)" in message


def test_development_allows_http_urls(env: pytest.MonkeyPatch) -> None:
    env.setenv("PUBLIC_BASE_URL", "http://localhost:8000")
    env.setenv("TEMPORAL_UI_ORIGINS", "http://localhost:8080")
    env.setenv("TEMPORAL_API_KEY", "tmprl-dev")
    env.setenv("TEMPORAL_TLS", "false")
    load_settings().check()


@pytest.mark.parametrize("relay_env", ["development", "test", "production"])
@pytest.mark.parametrize(
    "origins", ["*", "https://temporal.example.com,*", "https://*.example.com"]
)
def test_a_wildcard_ui_origin_is_refused_in_every_environment(
    production: pytest.MonkeyPatch, relay_env: str, origins: str
) -> None:
    production.setenv("RELAY_ENV", relay_env)
    production.setenv("TEMPORAL_UI_ORIGINS", origins)
    message = refusal()
    assert "TEMPORAL_UI_ORIGINS contains" in message and "*" in message
    # Refused once, as a wildcard, not again as a non-https origin.
    assert "non-https origins" not in message


def test_production_names_every_problem_in_one_error(env: pytest.MonkeyPatch) -> None:
    env.setenv("RELAY_ENV", "production")
    env.setenv("PUBLIC_BASE_URL", "http://relay.example.com")
    env.setenv("OAUTH_ALLOWED_REDIRECTS", "http://app.example.com")
    env.setenv("TEMPORAL_API_KEY", "tmprl-key")
    env.setenv("TEMPORAL_TLS", "false")
    env.setenv("TEMPORAL_UI_ORIGINS", "*,http://ui.example.com")

    message = refusal()

    assert message.startswith("RELAY_ENV=production refuses")
    for named in (
        "ENCRYPTION_KEYS is unset",
        "DATABASE_URL points at SQLite",
        "PUBLIC_BASE_URL is not an https URL (http://relay.example.com)",
        "OAUTH_ALLOWED_REDIRECTS allows non-https redirects (http://app.example.com",
        "TEMPORAL_TLS=false would send TEMPORAL_API_KEY in the clear",
        "TEMPORAL_UI_ORIGINS contains '*'",
        "TEMPORAL_UI_ORIGINS has non-https origins (http://ui.example.com)",
    ):
        assert named in message, named
    assert message.count(";") >= 6
