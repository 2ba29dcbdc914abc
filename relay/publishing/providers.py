"""Every platform's adapter, keyed by the provider name the OAuth catalog uses."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

import httpx

from relay.publishing import facebook, instagram, linkedin, tiktok, x, youtube
from relay.publishing.adapters import PublishAdapter, PublishRequest, SkipReason
from relay.settings import Settings

PUBLISHING_PROVIDERS = ("twitter", "linkedin", "facebook", "instagram", "youtube", "tiktok")
# The Graph API version Relay speaks (the catalog's): `<PROVIDER>_API_BASE` is scheme, host
# and port only, so the version prefix is Relay's to add.
GRAPH_VERSION = "v21.0"
GRAPH_PROVIDERS = frozenset({"facebook", "instagram"})
_VERSIONED = re.compile(r"/v\d+\.\d+$")


def api_bases(settings: Settings) -> dict[str, str]:
    """The API base of each platform whose `<PROVIDER>_API_BASE` is set, shaped as the
    adapter takes it: Graph's version appended for Facebook and Instagram (a base that
    already names a version keeps it), YouTube's with the trailing slash its discovery
    rootUrl needs."""
    bases: dict[str, str] = {}
    for provider in PUBLISHING_PROVIDERS:
        value: str | None = getattr(settings, f"{provider}_api_base", None)
        if not value:
            continue
        value = value.rstrip("/")
        if provider in GRAPH_PROVIDERS and not _VERSIONED.search(value):
            value = f"{value}/{GRAPH_VERSION}"
        if provider == "youtube":
            value += "/"
        bases[provider] = value
    return bases


def build_adapters(
    client: httpx.AsyncClient, bases: Mapping[str, str] | None = None
) -> dict[str, PublishAdapter]:
    """One adapter per platform sharing `client`; `bases` overrides a platform's API base
    (`<PROVIDER>_API_BASE`), else its real one."""
    bases = bases or {}

    def base(provider: str, default: str) -> str:
        return bases.get(provider) or default

    return {
        "twitter": x.XAdapter(client, base("twitter", x.X_API_BASE)),
        "linkedin": linkedin.LinkedInAdapter(client, base("linkedin", linkedin.LINKEDIN_API_BASE)),
        "facebook": facebook.FacebookAdapter(client, base("facebook", facebook.FACEBOOK_API_BASE)),
        "instagram": instagram.InstagramAdapter(
            client, base("instagram", instagram.INSTAGRAM_API_BASE)
        ),
        "youtube": youtube.YouTubeAdapter(client, base("youtube", youtube.YOUTUBE_API_BASE)),
        "tiktok": tiktok.TikTokAdapter(client, base("tiktok", tiktok.TIKTOK_API_BASE)),
    }


@functools.cache
def _checkers() -> dict[str, PublishAdapter]:
    # `check` does no I/O: this client is never used, so nothing needs closing.
    return build_adapters(httpx.AsyncClient())


def skip_reason(provider: str, request: PublishRequest) -> SkipReason | None:
    """Why `provider` cannot take `request` (its adapter's `check`), decided without I/O:
    the API answers SKIPPED targets at POST instead of running them."""
    checker = _checkers().get(provider)
    return checker.check(request) if checker is not None else None
