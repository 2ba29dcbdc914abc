"""The catalog's `account_fields`: the userinfo's ids (LinkedIn's `sub`, Instagram's
`user_id`, Facebook's `id`) kept in the clear in providerData at connect, never a
credential-like field, bounded like public_extras. End to end (a connection through the
OAuth flow, then a publish as that account): tests/publishing/test_account_discovery.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.errors import ConfigError
from relay.oauth.catalog import load_catalog
from relay.oauth.protocol import account_facts, with_account_facts

ACME = {
    "display_name": "Acme",
    "authorization_url": "https://acme.example/oauth/authorize",
    "token_url": "https://acme.example/oauth/token",
    "userinfo_url": "https://acme.example/me",
    "account_name_field": "name",
}


def _load(tmp_path: Path, entry: dict[str, Any]) -> Any:
    path = tmp_path / "providers.yaml"
    path.write_text(yaml.safe_dump({"acme": entry}))
    return load_catalog(path).require("acme")


def test_the_publishing_platforms_keep_their_account_ids() -> None:
    catalog = load_catalog()

    assert catalog.require("linkedin").account_fields == ["sub"]
    assert catalog.require("instagram").account_fields == ["user_id"]
    assert catalog.require("facebook").account_fields == ["id"]
    assert catalog.require("github").account_fields == []


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"account_fields": ["data.access_token"]}, "may hold a credential"),
        ({"account_fields": ["a..b"]}, "is not a dotted path"),
        ({"account_fields": ["id", "id"]}, "paths repeat"),
        (
            {"account_fields": ["id"], "userinfo_url": None, "account_name_field": None},
            "account_fields: needs userinfo_url",
        ),
    ],
)
def test_a_bad_account_fields_entry_is_refused(
    tmp_path: Path, fields: dict[str, Any], expected: str
) -> None:
    entry = {k: v for k, v in (ACME | fields).items() if v is not None}
    with pytest.raises(ConfigError) as refused:
        _load(tmp_path, entry)
    assert "account_fields" in str(refused.value) and expected in str(refused.value)


def test_account_facts_keep_the_named_ids_in_their_nesting_and_nothing_else(
    tmp_path: Path,
) -> None:
    entry = _load(tmp_path, ACME | {"account_fields": ["sub", "data.user.id", "missing"]})
    answer = {
        "sub": "782bbtaQ",
        "name": "Ada",
        "email": "ada@example.com",
        "data": {"user": {"id": 42, "token": "never"}, "session_token": "never"},
    }

    facts = account_facts(entry, json.dumps(answer))

    assert facts == {"sub": "782bbtaQ", "data": {"user": {"id": 42}}}
    assert account_facts(entry, "not json") == {}
    assert account_facts(load_catalog().require("github"), json.dumps(answer)) == {}


def test_facts_merge_over_provider_data_within_the_bound() -> None:
    kept = {"user_id": "1784", "permissions": "a,b"}

    assert with_account_facts(kept, {"user_id": "1784"}) == kept
    assert with_account_facts(kept, {"sub": "x"}) == kept | {"sub": "x"}
    # Past the clear part's bound (4 KiB), the facts are not kept; what was stays.
    assert with_account_facts(kept, {"sub": "x" * 5000}) == kept
