"""Notifications' routes: sends and reads (/v1/notifications…), suppressions, devices,
verification codes, and the providers' callbacks (/webhooks/sendgrid/events,
/webhooks/twilio/status, /webhooks/twilio/incoming)."""

from api.routes.notifications import devices, messages, verifications, webhooks

routers = (
    messages.router,
    messages.suppressions_router,
    devices.router,
    verifications.router,
    webhooks.webhooks_router,
)
