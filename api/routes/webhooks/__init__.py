"""Outgoing webhooks' routes: endpoints, publishing events, deliveries."""

from api.routes.webhooks import deliveries, endpoints, events

routers = (endpoints.router, events.router, deliveries.router)
