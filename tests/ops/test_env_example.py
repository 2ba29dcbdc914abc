""".env.example documents every setting, and nothing it documents is misspelt."""

from __future__ import annotations

import re
from pathlib import Path

from relay.settings import Settings, parse_duration

ROOT = Path(__file__).resolve().parents[2]
# Variables docker-compose.yml reads that Relay itself does not.
COMPOSE_ONLY = {
    "POSTGRES_PASSWORD",
    "POSTGRES_USER",
    "TEMPORAL_UI_PUBLIC_URL",
    "RELAY_API_HOST_PORT",
    "TEMPORAL_UI_HOST_PORT",
    "TEMPORAL_HOST_PORT",
    "RELAY_IMAGE_TAG",
    "POSTGRESQL_VERSION",
    "TEMPORAL_VERSION",
    "TEMPORAL_ADMINTOOLS_VERSION",
    "TEMPORAL_UI_VERSION",
}


def documented() -> dict[str, str]:
    """NAME -> value of every `NAME=value` or `# NAME=value` line."""
    text = (ROOT / ".env.example").read_text()
    return {
        match.group(1): match.group(2)
        for match in re.finditer(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", text, re.M)
    }


def test_every_setting_is_documented() -> None:
    names = documented()
    missing = [field.upper() for field in Settings.model_fields if field.upper() not in names]
    assert not missing, f".env.example lacks {missing}"


def test_every_documented_variable_is_read_by_something() -> None:
    fields = {field.upper() for field in Settings.model_fields}
    for name in documented():
        if name.endswith(("_CLIENT_ID", "_CLIENT_SECRET")):
            continue  # per-provider OAuth clients, read by Settings.oauth_clients
        assert name in fields or name in COMPOSE_ONLY, f"{name} is not a setting"


def test_nothing_is_set_by_default_so_defaults_apply() -> None:
    text = (ROOT / ".env.example").read_text()
    active = re.findall(r"^[A-Z][A-Z0-9_]*=", text, re.M)
    assert active == []


def test_documented_defaults_match_the_code() -> None:
    names = documented()
    defaults = Settings.model_construct()
    for field in (
        "temporal_namespace",
        "temporal_task_queue",
        "api_host",
        "api_port",
        "temporal_port",
        "temporal_ui_port",
        "log_level",
        "log_format",
        "webhook_max_payload_bytes",
        "webhook_dispatch_shards",
        "webhook_batch_size",
        "webhook_concurrency",
        "otel_service_name",
    ):
        assert names[field.upper()] == str(getattr(defaults, field)), field
    for field in (
        "webhook_timeout",
        "webhook_disable_after",
        "webhook_lease",
        "webhook_poll_interval",
        "webhook_sweep_grace",
    ):
        assert parse_duration(names[field.upper()]) == getattr(defaults, field), field
    schedule = [parse_duration(item) for item in names["WEBHOOK_RETRY_SCHEDULE"].split(",")]
    assert schedule == defaults.webhook_retry_schedule
    assert names["OAUTH_ALLOWED_REDIRECTS"].split(",") == defaults.oauth_allowed_redirects
    assert names["DATA_DIR"] == str(defaults.data_dir)


def test_example_loads_as_settings(tmp_path: Path) -> None:
    """Uncommenting the example values yields valid settings (placeholders aside)."""
    placeholders = {"ENCRYPTION_KEYS", "PROVIDERS_FILE"}
    lines = [
        f"{name}={value}"
        for name, value in documented().items()
        if value and name not in placeholders and name not in COMPOSE_ONLY
    ]
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(lines) + "\n")
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.worker_metrics_port == 9464
    assert settings.public_base_url == "https://relay.example.com"
