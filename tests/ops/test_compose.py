"""docker-compose.yml and the Dockerfile, checked by reading them (Docker does not run here)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay import search_attributes
from relay.settings import Settings
from worker import GRACEFUL_SHUTDOWN

ROOT = Path(__file__).resolve().parents[2]
RELAY_SERVICES = ("migrate", "api", "worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def depends(service: dict[str, Any]) -> dict[str, str]:
    value = service.get("depends_on", {})
    if isinstance(value, list):
        return dict.fromkeys(value, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in value.items()}


def duration_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", text)
    assert match, text
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_every_part_of_the_stack_is_a_service(services: dict[str, Any]) -> None:
    images = {name: str(service.get("image", "")) for name, service in services.items()}
    assert images["postgresql"].startswith("postgres:")
    assert images["temporal"].startswith("temporalio/server:")
    assert images["temporal-schema"].startswith("temporalio/admin-tools:")
    assert images["temporal-setup"].startswith("temporalio/admin-tools:")
    assert images["temporal-ui"].startswith("temporalio/ui:")
    for name in RELAY_SERVICES:
        assert services[name]["build"] == "."
        assert services[name]["image"] == services["api"]["image"]
    assert services["migrate"]["command"] == ["relay", "migrate"]
    assert services["api"]["command"] == ["relay", "api"]
    assert services["worker"]["command"] == ["relay", "worker"]


def test_start_order_follows_readiness(services: dict[str, Any]) -> None:
    assert depends(services["temporal-schema"]) == {"postgresql": "service_healthy"}
    assert depends(services["temporal"]) == {"temporal-schema": "service_completed_successfully"}
    assert depends(services["temporal-setup"]) == {"temporal": "service_healthy"}
    assert depends(services["temporal-ui"]) == {"temporal": "service_healthy"}
    assert depends(services["migrate"]) == {"postgresql": "service_healthy"}
    for name in ("api", "worker"):
        assert depends(services[name]) == {
            "migrate": "service_completed_successfully",
            "temporal-setup": "service_completed_successfully",
        }
    for name, service in services.items():
        for target, condition in depends(service).items():
            assert target in services, f"{name} depends on unknown {target}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"


def test_long_running_services_have_healthchecks(services: dict[str, Any]) -> None:
    for name in ("postgresql", "temporal", "api", "worker"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] in {"CMD", "CMD-SHELL"}
        if test[1] == "python":
            compile(test[3], f"{name} healthcheck", "exec")
    assert "/health" in services["api"]["healthcheck"]["test"][3]
    metrics_port = services["worker"]["environment"]["WORKER_METRICS_PORT"]
    assert f":{metrics_port}/metrics" in services["worker"]["healthcheck"]["test"][3]


def test_temporal_persists_to_postgresql(services: dict[str, Any]) -> None:
    env = services["temporal"]["environment"]
    assert env["DB"] == "postgres12"
    assert env["POSTGRES_SEEDS"] == "postgresql"
    assert env["POSTGRES_USER"] == services["postgresql"]["environment"]["POSTGRES_USER"]
    assert env["POSTGRES_PWD"] == services["postgresql"]["environment"]["POSTGRES_PASSWORD"]
    assert env["BIND_ON_IP"] == "0.0.0.0"
    config_dir = services["temporal"]["volumes"][0].split(":")[0]
    assert (ROOT / config_dir / Path(env["DYNAMIC_CONFIG_FILE_PATH"]).name).is_file()
    assert any("/var/lib/postgresql/data" in v for v in services["postgresql"]["volumes"])


def test_setup_scripts_are_mounted_and_register_relays_search_attributes(
    services: dict[str, Any],
) -> None:
    for name, script in (
        ("temporal-schema", "setup-schema.sh"),
        ("temporal-setup", "setup-namespace.sh"),
    ):
        service = services[name]
        host, container = service["volumes"][0].split(":")[:2]
        assert (ROOT / host / script).is_file()
        assert service["command"] == [f"{container}/{script}"]
    text = (ROOT / "deploy/temporal/setup-namespace.sh").read_text()
    assert "temporal operator search-attribute create" in text
    assert "--type Keyword" in text
    for key in search_attributes.ALL:
        assert key.name in text
    schema = (ROOT / "deploy/temporal/setup-schema.sh").read_text()
    for database in ("temporal", "temporal_visibility"):
        assert f"--db {database} update-schema" in schema
    for script in ("setup-schema.sh", "setup-namespace.sh"):
        subprocess.run(["sh", "-n", str(ROOT / "deploy/temporal" / script)], check=True)


def test_relay_services_share_one_configuration(services: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for name in RELAY_SERVICES:
        service = services[name]
        env = service["environment"]
        assert env["RELAY_ENV"] == "production"
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["DATABASE_URL"].endswith("@postgresql:5432/relay")
        assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
        assert env["ENCRYPTION_KEYS"].startswith("${ENCRYPTION_KEYS:?")
        assert env["PUBLIC_BASE_URL"].startswith("${PUBLIC_BASE_URL:?")
        for variable in env:
            assert variable.lower() in fields, f"{name}: {variable} is not a Relay setting"
        assert service["env_file"] == [{"path": ".env", "required": False}]
    assert services["postgresql"]["environment"]["POSTGRES_DB"] == "relay"


def test_ui_decodes_through_the_apis_codec_endpoint(services: dict[str, Any]) -> None:
    ui = services["temporal-ui"]["environment"]
    assert ui["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert ui["TEMPORAL_CODEC_ENDPOINT"].startswith("${PUBLIC_BASE_URL")
    assert ui["TEMPORAL_CODEC_ENDPOINT"].endswith("}/codec")
    assert ui["TEMPORAL_CODEC_INCLUDE_CREDENTIALS"] == "true"
    # The API lets the UI's origin call /codec with credentials.
    assert services["api"]["environment"]["TEMPORAL_UI_ORIGINS"] == ui["TEMPORAL_CORS_ORIGINS"]
    ui_port = services["temporal-ui"]["ports"][0]
    assert ui_port.endswith(":8080")


def test_api_and_worker_scale(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert "container_name" not in service, f"{name} has a container_name"
    worker = services["worker"]
    assert "ports" not in worker
    assert duration_seconds(worker["stop_grace_period"]) > GRACEFUL_SHUTDOWN.total_seconds()
    api = services["api"]
    assert api["environment"]["API_HOST"] == "0.0.0.0"
    assert api["ports"] == ["${RELAY_API_HOST_PORT:-8000}:8000"]
    assert api["environment"]["API_PORT"] == 8000


def test_required_variables_are_documented_in_env_example(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert {"POSTGRES_PASSWORD", "ENCRYPTION_KEYS", "PUBLIC_BASE_URL"} <= required
    example = (ROOT / ".env.example").read_text()
    for variable in required | set(re.findall(r"\$\{([A-Z0-9_]+):-", text)):
        assert re.search(rf"^#?\s*{variable}=", example, re.M), f"{variable} not in .env.example"


def test_dockerfile_installs_relay_and_runs_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert all(re.match(r"python:3\.(1[1-9])", image) for image in stages)
    assert "COPY relay ./relay" in text and "COPY pyproject.toml" in text
    assert re.search(r"pip wheel .* \.$", text, re.M)
    assert re.search(r"pip install .*/wheels/\*\.whl", text)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(rf"useradd .*{users[-1]}$", text, re.M)
    assert re.search(r'^CMD \["relay", "api"\]', text, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".env", ".git", ".data"} <= set(ignored)


# --- published ports (docs/security.md, "Transport") -----------------------------------------

_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ${V}, ${V:-default}, ${V-default}, ${V:?err}, ${V?err}."""

    def value(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        present = name in env
        empty = not env.get(name)
        if operator in (":-", "-"):
            unset = empty if operator == ":-" else not present
            return argument if unset else env[name]
        if operator in (":?", "?"):
            unset = empty if operator == ":?" else not present
            if unset:
                raise LookupError(f"{name}: {argument}")
        return env.get(name, "")

    return _VARIABLE.sub(value, text.replace("$$", "\0")).replace("\0", "$")


def published(entry: str | dict[str, Any], env: dict[str, str]) -> tuple[str, str]:
    """(host address, host port) of a `ports:` entry; no address means every interface."""
    if isinstance(entry, dict):
        return entry.get("host_ip", "0.0.0.0"), str(entry.get("published", ""))
    parts = interpolate(entry, env).split(":")
    if len(parts) == 3:
        return parts[0], parts[1]
    return "0.0.0.0", parts[0] if len(parts) == 2 else ""


def test_the_port_parser_sees_a_mapping_on_every_interface() -> None:
    # The mapping this file used to have: Temporal's gRPC on every interface, no auth.
    assert published("${TEMPORAL_HOST_PORT:-7233}:7233", {}) == ("0.0.0.0", "7233")
    assert published({"target": 8080, "published": "8080"}, {}) == ("0.0.0.0", "8080")
    assert published("127.0.0.1:${TEMPORAL_HOST_PORT:-7233}:7233", {}) == ("127.0.0.1", "7233")


@pytest.mark.parametrize(
    "env",
    [{}, {"TEMPORAL_HOST_PORT": "17233", "TEMPORAL_UI_HOST_PORT": "18080"}],
    ids=["defaults", "other host ports"],
)
def test_temporal_and_its_ui_are_published_on_loopback_only(
    services: dict[str, Any], env: dict[str, str]
) -> None:
    """Neither has authentication: reachable from this host only, whatever the ports."""
    for name in ("temporal", "temporal-ui"):
        ports = services[name]["ports"]
        assert ports, f"{name} publishes no port"
        for entry in ports:
            address, port = published(entry, env)
            assert address == "127.0.0.1", f"{name} publishes {entry!r} beyond loopback"
            assert port
    assert published(services["temporal"]["ports"][0], env)[1] == env.get(
        "TEMPORAL_HOST_PORT", "7233"
    )


def test_only_the_api_is_published_beyond_loopback(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if name == "api":
            continue  # it authenticates every /v1 request, and providers must reach it
        for entry in service.get("ports", []):
            assert published(entry, {})[0] == "127.0.0.1", f"{name}: {entry!r}"


def _relay_environment(services: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    return {
        name.lower(): interpolate(str(value), env)
        for name, value in services["api"]["environment"].items()
    }


def test_the_documented_env_passes_the_production_checks(
    services: dict[str, Any], keyring_spec: str
) -> None:
    """What README's Production section says to set is enough for RELAY_ENV=production."""
    documented = {
        "POSTGRES_PASSWORD": "change-me",
        "ENCRYPTION_KEYS": keyring_spec,
        "PUBLIC_BASE_URL": "https://relay.example.com",
        "TEMPORAL_UI_PUBLIC_URL": "https://temporal.example.com",
        "OAUTH_ALLOWED_REDIRECTS": "https://app.example.com/done",
    }
    settings = Settings(_env_file=None, **_relay_environment(services, documented))  # type: ignore[arg-type]
    assert settings.is_production
    settings.check()
    # No redirects at all is a valid choice too.
    empty = Settings(  # type: ignore[arg-type]
        _env_file=None,
        **_relay_environment(services, {**documented, "OAUTH_ALLOWED_REDIRECTS": ""}),
    )
    assert empty.oauth_allowed_redirects == []
    empty.check()


@pytest.mark.parametrize("missing", ["TEMPORAL_UI_PUBLIC_URL", "OAUTH_ALLOWED_REDIRECTS"])
def test_compose_stops_on_settings_production_would_refuse(
    services: dict[str, Any], missing: str
) -> None:
    """Unset, these would fall back to http defaults that RELAY_ENV=production refuses."""
    env = {
        "POSTGRES_PASSWORD": "change-me",
        "ENCRYPTION_KEYS": "k1:x",
        "PUBLIC_BASE_URL": "https://relay.example.com",
        "TEMPORAL_UI_PUBLIC_URL": "https://temporal.example.com",
        "OAUTH_ALLOWED_REDIRECTS": "",
    }
    del env[missing]
    with pytest.raises(LookupError, match=missing):
        _relay_environment(services, env)
