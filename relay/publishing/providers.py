"""Every platform's adapter, keyed by the provider name the OAuth catalog uses."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from relay.publishing import facebook, instagram, linkedin, tiktok, x, youtube
from relay.publishing.adapters import PublishAdapter

PUBLISHING_PROVIDERS = ("twitter", "linkedin", "facebook", "instagram", "youtube", "tiktok")


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
