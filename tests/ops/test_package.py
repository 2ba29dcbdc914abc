"""`pip install .` (and so the Docker image, which installs the same wheel) carries the whole
layout: api/, workflows/, activities/, worker.py and relay/ with its migrations and catalog."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("api", "workflows", "activities", "relay")


@pytest.mark.slow
def test_the_wheel_holds_every_layer_migrations_and_catalog(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("relay-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "worker.py" in names
    for package in TOP_LEVEL:
        assert f"{package}/__init__.py" in names, package
    assert {"api/routes/oauth/__init__.py", "api/routes/webhooks/__init__.py"} <= names
    assert {"workflows/oauth.py", "workflows/webhooks.py", "workflows/registry.py"} <= names
    assert "relay/catalog/providers.yaml" in names
    assert "relay/migrations/env.py" in names and "relay/migrations/script.py.mako" in names
    shipped = {n for n in names if n.startswith("relay/migrations/versions/")}
    on_disk = {
        p.relative_to(ROOT).as_posix() for p in (ROOT / "relay/migrations/versions").glob("*.py")
    }
    assert on_disk and on_disk <= shipped
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "relay = relay.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_dockerfile_copies_every_top_level_part_into_the_build() -> None:
    text = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \S+$", text, re.M))
    assert {*TOP_LEVEL, "worker.py"} <= copied
