"""`relay dev` runs the publishing platforms sandbox: with no credentials for X, LinkedIn,
Facebook, Instagram, YouTube or TikTok in development (SANDBOX=auto) it starts the sandbox as
the OAuth providers sandbox's token sink and hands the worker and the API each platform's
`<PROVIDER>_API_BASE` (scheme, host and port, as the banner names it).

For each of the six platforms, a connection completes through Relay's real OAuth flow against
the OAuth sandbox, and the access token Relay hands out (GET /v1/integrations/{id}/credentials)
publishes through Relay's own adapters (relay.publishing) at those bases: the publishing
sandbox accepts exactly the tokens the OAuth sandbox issued, each for its own platform. The
posts are listed on /sandbox, and its controls end YouTube's processing and make X's next
call answer 429, as the adapters then see. No token reaches the page or the logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from api.routes.sandbox import FLASH_COOKIE
from relay.publishing.adapters import (
    FailureKind,
    MediaItem,
    PublishAdapter,
    PublishError,
    PublishRequest,
    PublishResult,
    PublishState,
)
from relay.publishing.providers import PUBLISHING_PROVIDERS, api_bases, build_adapters
from relay.sandbox.oauth_providers import SANDBOX_CLIENT_SECRET as OAUTH_SECRET
from relay.settings import Settings
from tests.calendar.conftest import APP_REDIRECT, approve
from tests.ops.test_dev_calendar import banner_line, sandbox_base
from tests.ops.test_dev_stack import DevStack

pytestmark = pytest.mark.e2e

ENV_NAMES = {p: f"{p.upper()}_API_BASE" for p in PUBLISHING_PROVIDERS}
# What the platforms' adapters need of a connection beyond its token (any author the
# sandbox takes; the Facebook Page is the one /me/accounts gives the OAuth-issued user).
ACCOUNT = {
    "author_urn": "urn:li:person:8675309",
    "ig_user_id": "17841400000000001",
    "username": "relaysandbox",
}
IMAGE_URL = MediaItem("image/jpeg", 4096, url="https://cdn.example.com/launch.jpg")
VIDEO = MediaItem("video/mp4", 3000, data=b"v" * 3000, filename="launch.mp4")
MEDIA = {
    "twitter": [],
    "linkedin": [],
    "facebook": [],
    "instagram": [IMAGE_URL],
    "youtube": [VIDEO],
    "tiktok": [VIDEO],
}
# Long enough that YouTube and TikTok are still processing when the page is read.
PROCESSING_SECONDS = 600


def api_key(stack: DevStack, name: str) -> dict[str, str]:
    """A key that may also read access tokens (GET /v1/integrations/{id}/credentials)."""
    created = stack.relay("keys", "create", name, "--scope", "app", "--scope", "credentials:read")
    assert created.returncode == 0, created.stderr
    return {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}


def child_environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {name.decode(): value.decode(errors="replace") for name, _, value in pairs}


async def connect(
    http: httpx.AsyncClient, stack: DevStack, auth: dict[str, str], oauth: str, provider: str
) -> dict[str, Any]:
    """Connect `provider` through Relay's OAuth flow and the OAuth sandbox's approval page;
    the credentials Relay then hands out."""
    started = await http.post(
        f"{stack.api}/v1/integrations/oauth/initiate",
        json={"userId": "dev-publishing", "provider": provider, "redirectUri": APP_REDIRECT},
        headers=auth,
    )
    assert started.status_code == 201, started.text
    data = started.json()["data"]
    assert data["authorizationUrl"].startswith(f"{oauth}/{provider}/authorize")
    back = await approve(data["authorizationUrl"])
    assert back.startswith(f"http://localhost:{stack.api_port}/"), back
    landed = await http.get(back)
    assert landed.status_code == 302 and "status=success" in landed.headers["location"]
    integration = await http.get(
        f"{stack.api}/v1/integrations/{data['integrationId']}", headers=auth
    )
    assert integration.json()["data"]["status"] == "CONNECTED", integration.text
    credentials = await http.get(
        f"{stack.api}/v1/integrations/{data['integrationId']}/credentials", headers=auth
    )
    assert credentials.status_code == 200, credentials.text
    found: dict[str, Any] = credentials.json()["data"]
    return found


def ask(provider: str, token: str) -> PublishRequest:
    return PublishRequest(
        text=f"Relay dev publishes to {provider}",
        access_token=token,
        media=list(MEDIA[provider]),
        account=dict(ACCOUNT),
    )


async def press(http: httpx.AsyncClient, stack: DevStack, action: str, target: str) -> str:
    """A /sandbox control as the page's form posts it; the flash it leaves."""
    origin = f"http://localhost:{stack.api_port}"
    answer = await http.post(
        f"{origin}/sandbox/publishing/{action}/{target}", headers={"Origin": origin}
    )
    assert answer.status_code == 303, answer.text
    return unquote(answer.cookies.get(FLASH_COOKIE) or "")


async def test_relay_dev_runs_the_publishing_sandbox(dev_stack: DevStack) -> None:
    stack = dev_stack
    stack.start()
    async with httpx.AsyncClient(timeout=60) as http:
        await stack.wait_ready(http)
        log = stack.log()
        assert banner_line(log, "Publishing").startswith(
            "sandboxed (local X, LinkedIn, Facebook, Instagram, YouTube, TikTok at http://"
        )
        oauth = sandbox_base(log, "OAuth")
        base = sandbox_base(log, "Publishing")

        # The worker and the API are pointed at it: scheme, host and port, per platform.
        children = stack.children()
        for name in ("worker", "api"):
            env = child_environment(children[name])
            assert {env.get(v) for v in ENV_NAMES.values()} == {base}, (name, env)

        auth = api_key(stack, "dev-publishing")
        listed = await http.get(f"{stack.api}/v1/providers", headers=auth)
        assert listed.status_code == 200, listed.text
        providers = listed.json()["data"]
        configured = {p["key"]: p["configured"] for p in providers}
        assert all(configured[p] for p in PUBLISHING_PROVIDERS), configured
        # --- a connection per platform; its token publishes through Relay's adapters -------
        tokens: dict[str, str] = {}
        results: dict[str, PublishResult] = {}
        pointed = {f"{p}_api_base": base for p in PUBLISHING_PROVIDERS}
        bases = api_bases(Settings(_env_file=None, **pointed))  # type: ignore[arg-type]
        async with httpx.AsyncClient(timeout=30) as client:
            adapters: dict[str, PublishAdapter] = build_adapters(client, bases)
            for provider in PUBLISHING_PROVIDERS:
                credentials = await connect(http, stack, auth, oauth, provider)
                tokens[provider] = credentials["accessToken"]
                if provider == "youtube":  # Instagram's container is processed by now
                    slow = {"seconds": PROCESSING_SECONDS}
                    (await http.post(f"{base}/_sandbox/processing", json=slow)).raise_for_status()
                request = ask(provider, tokens[provider])
                assert adapters[provider].check(request) is None
                results[provider] = await adapters[provider].publish(request)

            # A token is its own platform's: X's opens nothing at LinkedIn.
            with pytest.raises(PublishError) as refused:
                await adapters["linkedin"].publish(ask("linkedin", tokens["twitter"]))
            assert refused.value.kind is FailureKind.TOKEN_REJECTED

            for provider in ("twitter", "linkedin", "facebook", "instagram"):
                assert results[provider].state is PublishState.PUBLISHED, results[provider]
            for provider in ("youtube", "tiktok"):
                assert results[provider].state is PublishState.PROCESSING, results[provider]

            # --- what /sandbox shows of them ------------------------------------------------
            posts = (await http.get(f"{base}/_sandbox/posts")).json()["data"]
            ids = {p: posts[p][0]["id"] for p in PUBLISHING_PROVIDERS}
            assert ids["twitter"] == results["twitter"].remote_id
            assert ids["youtube"] == results["youtube"].remote_id
            page = (await http.get(f"{stack.api}/sandbox")).text
            assert 'id="sandbox-publishing"' in page and 'id="publishing-posts"' in page
            for provider, post_id in ids.items():
                assert f'data-id="{post_id}"' in page, provider
            assert "Relay dev publishes to linkedin" in page
            assert "<td>processing</td>" in page

            # --- its controls, as the page's forms post them -------------------------------
            flash = await press(http, stack, "finish", f"youtube:{ids['youtube']}")
            assert flash == f"ok:YouTube {ids['youtube']}: processing succeeded", flash
            done = await adapters["youtube"].status(results["youtube"], tokens["youtube"])
            assert done.state is PublishState.PUBLISHED, done
            flash = await press(http, stack, "fail", f"tiktok:{ids['tiktok']}")
            assert flash.startswith("ok:TikTok"), flash
            failed = await adapters["tiktok"].status(results["tiktok"], tokens["tiktok"])
            assert failed.state is PublishState.FAILED, failed

            flash = await press(http, stack, "next-429", "twitter")
            assert flash == "ok:X: the next API call answers 429", flash
            with pytest.raises(PublishError) as limited:
                await adapters["twitter"].publish(ask("twitter", tokens["twitter"]))
            assert limited.value.kind is FailureKind.TRANSIENT and limited.value.status == 429
            deleted = await adapters["twitter"].delete(results["twitter"], tokens["twitter"])
            assert deleted.deleted

        posts = (await http.get(f"{base}/_sandbox/posts")).json()["data"]
        shown = {p: posts[p][0] for p in PUBLISHING_PROVIDERS}
        assert shown["youtube"]["status"] == "published"
        assert shown["tiktok"]["status"] == "failed"
        assert shown["twitter"]["deleted"] is True
        page = (await http.get(f"{stack.api}/sandbox")).text
        for secret in (*tokens.values(), OAUTH_SECRET, auth["Authorization"].split()[1]):
            assert secret not in page

    assert stack.stop() == 0
    log = stack.log()
    assert "Traceback" not in log
    for token in tokens.values():
        assert token not in log
