"""The provider catalog: the built-in entries, PROVIDERS_FILE merging, and the errors a
bad file produces at start-up of the API and the worker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy.engine import Engine

from api.app import create_app
from relay.crypto import Keyring
from relay.errors import ConfigError
from relay.oauth.catalog import load_catalog
from relay.settings import Settings

BUILTIN = {
    "tiktok", "instagram", "facebook", "youtube", "twitter", "linkedin", "hubspot",
    "salesforce", "shopify", "mailchimp", "meta_ads", "google_ads", "tiktok_ads", "slack",
    "discord", "google_calendar", "github", "zoom",
}  # fmt: skip

ACME = {
    "display_name": "Acme",
    "auth_mode": "OAUTH2",
    "authorization_url": "https://acme.example/oauth/authorize",
    "token_url": "https://acme.example/oauth/token",
    "default_scopes": ["openid", "profile"],
}


def _write(tmp_path: Path, content: Any) -> Path:
    path = tmp_path / "providers.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_the_builtin_catalog_ships_with_the_package_and_has_every_provider() -> None:
    assert (resources.files("relay") / "catalog" / "providers.yaml").is_file()
    catalog = load_catalog()
    assert {entry.key for entry in catalog} == BUILTIN
    for entry in catalog:
        for url in (entry.authorization_url, entry.token_url, entry.revoke_url, entry.userinfo_url):
            if url is not None:
                assert urlsplit(url).scheme == "https", (entry.key, url)
        if entry.userinfo_url:
            assert entry.account_name_field
    shopify = catalog.require("SHOPIFY")  # keys are case-insensitive, like seed 003's enum
    assert shopify.connection_config == ["shop"]
    assert "${connectionConfig.shop}" in shopify.authorization_url
    assert shopify.interpolate(shopify.token_url, {"shop": "acme"}) == (
        "https://acme.myshopify.com/admin/oauth/access_token"
    )
    assert catalog.require("tiktok").client_id_param == "client_key"
    assert catalog.require("twitter").token_request_auth_method == "basic"
    assert "offline.access" in catalog.require("twitter").default_scopes
    assert catalog.require("youtube").authorization_params["access_type"] == "offline"
    assert catalog.require("tiktok_ads").token_response_path == "data"
    assert sum(1 for entry in catalog if entry.revoke_url) >= 8


def test_the_builtin_catalog_keeps_webhook_urls_out_of_the_clear() -> None:
    """Slack's and Discord's token responses carry webhook URLs (bearer secrets): only ids
    and names of theirs are public extras, and nothing is public unless listed."""
    catalog = load_catalog()
    whole_or_url = {"incoming_webhook", "incoming_webhook.url", "webhook", "webhook.url"}
    for entry in catalog:
        assert not whole_or_url & set(entry.public_extras), entry.key
    assert "team.name" in catalog.require("slack").public_extras
    assert "webhook.channel_id" in catalog.require("discord").public_extras
    assert catalog.require("github").public_extras == []


def test_providers_file_adds_overrides_and_removes(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "acme": ACME,
            "github": {"default_scopes": ["repo"]},
            "zoom": None,
        },
    )
    catalog = load_catalog(path)
    assert "acme" in catalog and "zoom" not in catalog
    github = catalog.require("github")
    assert github.default_scopes == ["repo"]
    assert github.token_url == "https://github.com/login/oauth/access_token"  # kept
    acme = catalog.require("acme")
    assert acme.pkce is True and acme.token_request_auth_method == "body"
    assert acme.refresh_endpoint == acme.token_url
    assert acme.token_expiration_buffer == 300


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            {"acme": {k: v for k, v in ACME.items() if k != "token_url"}},
            "provider 'acme', field token_url: Field required",
        ),
        (
            {"acme": {**ACME, "tokn_url": "https://x.example"}},
            "provider 'acme', field tokn_url: unknown field",
        ),
        (
            {"acme": {**ACME, "token_url": "http://acme.example/token"}},
            "field token_url: must use https",
        ),
        (
            {"acme": {**ACME, "token_url": "acme.example/token"}},
            "field token_url: 'acme.example/token' is not an absolute http(s) URL",
        ),
        (
            {
                "acme": {
                    **ACME,
                    "authorization_url": "https://${connectionConfig.shop}.acme.example/a",
                }
            },
            "field authorization_url: uses ${connectionConfig.shop} but connection_config does not declare 'shop'",
        ),
        ({"Acme-Corp": ACME}, "provider 'Acme-Corp', field key: "),
        ({"acme": {**ACME, "pkce": "sometimes"}}, "provider 'acme', field pkce:"),
        ({"acme": {**ACME, "token_expiration_buffer": -1}}, "field token_expiration_buffer:"),
        (
            {"acme": {**ACME, "token_request_auth_method": "jwt"}},
            "field token_request_auth_method:",
        ),
        (
            {"acme": {**ACME, "userinfo_url": "https://acme.example/me"}},
            "field account_name_field: required with userinfo_url",
        ),
        (
            {"acme": {**ACME, "authorization_params": {"state": "fixed"}}},
            "field authorization_params: 'state' is set by Relay",
        ),
        (
            {"acme": {**ACME, "public_extras": ["webhook.token"]}},
            "field public_extras: 'webhook.token' names a field that may hold a credential",
        ),
        (
            {"acme": {**ACME, "public_extras": ["team..name"]}},
            "field public_extras: 'team..name' is not a dotted path",
        ),
        (
            {"acme": {**ACME, "exchange": {"url": "http://acme.example/x", "grant_type": "x"}}},
            "field exchange.url: must use https",
        ),
        (
            {"acme": {**ACME, "refresh": {"url": "https://acme.example/r"}}},
            "field refresh.grant_type: Field required",
        ),
        (
            {
                "acme": {
                    **ACME,
                    "refresh_url": "https://acme.example/token",
                    "refresh": {"url": "https://acme.example/r", "grant_type": "r"},
                }
            },
            "field refresh: a provider refreshes with refresh_url or refresh, not both",
        ),
        ({"acme": ["not", "a", "mapping"]}, "provider 'acme': must be a mapping of fields"),
        (["acme"], "must be a mapping of provider key to entry"),
        ("acme: {display_name: [unclosed\n", "not valid YAML at line"),
    ],
)
def test_a_bad_entry_is_named_with_its_field(tmp_path: Path, content: Any, expected: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(ConfigError) as error:
        load_catalog(path)
    message = str(error.value)
    assert message.startswith(f"PROVIDERS_FILE {path}: "), message
    assert expected in message, message


def test_an_override_that_breaks_a_builtin_entry_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"github": {"token_url": "ftp://github.com/token"}})
    with pytest.raises(ConfigError, match=r"PROVIDERS_FILE .*provider 'github', field token_url"):
        load_catalog(path)


def test_a_missing_providers_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_catalog(tmp_path / "nowhere.yaml")


def test_the_api_and_the_worker_refuse_to_start_on_a_bad_catalog(
    tmp_path: Path, make_settings: Callable[..., Settings], engine: Engine, keyring: Keyring
) -> None:
    from activities.oauth import OAuthActivities
    from relay.worker_context import WorkerContext

    path = _write(tmp_path, {"acme": {**ACME, "scope_separator": ""}})
    settings = make_settings(providers_file=path)
    with pytest.raises(ConfigError, match="provider 'acme', field scope_separator"):
        create_app(settings, engine=engine, keyring=keyring)
    context = WorkerContext(settings, engine, keyring, client=None, ledger=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="provider 'acme', field scope_separator"):
        OAuthActivities.from_context(context)
    assert context.closers == []  # nothing was opened


def test_relay_api_prints_one_line_and_exits(tmp_path: Path) -> None:
    path = _write(tmp_path, {"acme": {**ACME, "token_url": "http://acme.example/token"}})
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "PROVIDERS_"))},
        "RELAY_ENV": "test",
        "DATA_DIR": str(tmp_path / "data"),
        "PROVIDERS_FILE": str(path),
        "API_PORT": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "relay.cli", "api"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("relay: PROVIDERS_FILE ")
    assert "provider 'acme', field token_url: must use https" in lines[0]
