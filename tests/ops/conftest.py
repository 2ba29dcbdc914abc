"""Fixtures of the real-browser tests: `relay dev` on free ports, and Debian's chromium
driven by playwright (never a downloaded browser: none can be downloaded here)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from tests.ops.test_dev_stack import DevStack

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is not installed (apt-get install -y chromium; .ci/run does)",
)


@pytest.fixture
def dev_stack(tmp_path: Path, keyring_spec: str) -> Iterator[DevStack]:
    stack = DevStack(tmp_path, keyring_spec)
    yield stack
    if stack.process is not None and stack.process.poll() is None:
        stack.process.kill()  # its children follow (PR_SET_PDEATHSIG)
        stack.process.wait()


@pytest_asyncio.fixture(loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        await launched.close()
