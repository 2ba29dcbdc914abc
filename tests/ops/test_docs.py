"""README and docs/platform.md stay in step with the code they describe."""

from __future__ import annotations

import re
from pathlib import Path

from relay.cli import app, keys
from relay.search_attributes import ALL
from relay.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
# Pages the capability owners write; the README links to them ahead of time.
OWNED_ELSEWHERE = {"docs/webhooks.md", "docs/oauth.md"}


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    following = re.search(r"^## ", text[start + len(heading) :], re.M)
    return text[start : start + len(heading) + following.start()] if following else text[start:]


def test_the_two_commands_come_first() -> None:
    first_block = README.split("```")[1]
    assert "make dev" in first_block and "make test" in first_block
    assert README.index("make dev") < README.index("## ")


def test_configuration_table_lists_every_setting() -> None:
    table = section(README, "## Configuration")
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", table))
    missing = sorted(
        name.upper() for name in Settings.model_fields if name.upper() not in documented
    )
    assert not missing, f"README configuration table lacks {missing}"
    assert "<PROVIDER>_CLIENT_ID" in table


def test_every_cli_command_is_documented() -> None:
    cli = section(README, "## The `relay` command")
    for command in app.registered_commands:
        assert f"`relay {command.name or command.callback.__name__}" in cli  # type: ignore[union-attr]
    for command in keys.registered_commands:
        assert f"`relay keys {command.name}" in cli


def test_search_attributes_are_documented() -> None:
    ui = section(README, "## Finding and reading runs in the Temporal UI")
    for key in ALL:
        assert f"`{key.name}`" in ui
    assert "--codec-endpoint http://localhost:8000/codec" in ui
    assert '--codec-auth "Bearer $RELAY_KEY"' in ui
    assert "/codec/login" in ui and "Include cross-origin credentials" in ui


def test_capability_sections_link_to_their_pages() -> None:
    api = section(README, "## HTTP API")
    assert "### Outgoing webhooks" in api and "(docs/webhooks.md)" in api
    assert "### OAuth connections" in api and "(docs/oauth.md)" in api


def test_production_covers_compose_scaling_and_remote_temporal() -> None:
    production = section(README, "## Production")
    for needle in (
        "docker compose up",
        "--scale worker=",
        "TEMPORAL_ADDRESS",
        "TEMPORAL_NAMESPACE",
        "TEMPORAL_API_KEY",
        "TEMPORAL_TLS",
    ):
        assert needle in production, needle


def test_local_links_resolve() -> None:
    for document in (ROOT / "README.md", ROOT / "docs" / "platform.md"):
        text = document.read_text()
        for target in re.findall(r"\]\(([^)#]+?)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            path = (document.parent / target).resolve().relative_to(ROOT).as_posix()
            if path in OWNED_ELSEWHERE:
                continue
            assert (ROOT / path).exists(), f"{document.name} links to missing {target}"


def test_platform_page_covers_each_part() -> None:
    text = (ROOT / "docs" / "platform.md").read_text()
    for heading in (
        "## Settings",
        "## Encryption and key rotation",
        "## Workflow payloads: the codec and the data converter",
        "## The provider-call ledger",
        "## Provider errors → Temporal failures",
        "## The HTTP contract",
        "## The worker",
        "## Observability",
        "## The local stack: `relay dev`",
    ):
        assert heading in text, heading
