"""README and docs/ stay in step with the code they describe: every setting, CLI command
and search attribute the code defines is documented, the Makefile has the targets the
README names, and every local link resolves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from relay.cli import app, keys
from relay.search_attributes import ALL
from relay.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    following = re.search(r"^## ", text[start + len(heading) :], re.M)
    return text[start : start + len(heading) + following.start()] if following else text[start:]


def test_the_readme_commands_are_make_targets() -> None:
    first_block = README.split("```")[1]
    targets = re.findall(r"^make (\w+)", first_block, re.M)
    assert targets == ["dev", "test"]
    for target in targets:
        # -n: print what the target would run without running it.
        result = subprocess.run(
            ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr


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


def test_local_links_resolve() -> None:
    for document in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        text = document.read_text()
        for target in re.findall(r"\]\(([^)#]+?)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            path = (document.parent / target).resolve().relative_to(ROOT).as_posix()
            assert (ROOT / path).exists(), f"{document.name} links to missing {target}"
