"""GET /v1/providers: the OAuth provider catalog, and which providers have client credentials."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from api.deps import CatalogDep, SettingsDep, require_api_key
from api.envelope import Envelope, error_responses, ok
from api.schemas.oauth import ProviderPublic

router = APIRouter(
    prefix="/v1/providers", tags=["integrations"], dependencies=[Depends(require_api_key)]
)


@router.get(
    "",
    summary="List OAuth providers",
    description=(
        "Every provider of the catalog (built in, merged with PROVIDERS_FILE), its default "
        "scopes, the per-connection values it needs, and whether `<KEY>_CLIENT_ID` and "
        "`<KEY>_CLIENT_SECRET` are set."
    ),
    response_model=Envelope[list[ProviderPublic]],
    responses=error_responses(401),
)
async def list_providers(settings: SettingsDep, catalog: CatalogDep) -> dict[str, Any]:
    clients = settings.oauth_clients
    return ok(
        [
            ProviderPublic(
                key=entry.key,
                display_name=entry.display_name,
                auth_mode=entry.auth_mode,
                scopes=list(entry.default_scopes),
                configured=entry.key in clients,
                connection_config=list(entry.connection_config),
            )
            for entry in catalog
        ]
    )
