"""OAuth connections' routes: integrations (with the public callback) and providers."""

from api.routes.oauth import integrations, providers

routers = (integrations.public, integrations.protected, providers.router)
