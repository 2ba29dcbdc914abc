"""Relay's tables. Import every model module here so Alembic and tests see them all."""

from sqlmodel import SQLModel

from relay.models.billing import BillingCustomer, BillingSubscription
from relay.models.calendar import Meeting
from relay.models.files import StoredFile
from relay.models.inbound import InboundCursor, InboundEvent
from relay.models.notifications import (
    Device,
    Notification,
    NotificationEvent,
    Suppression,
    Verification,
)
from relay.models.oauth import (
    Integration,
    IntegrationCredential,
    IntegrationCredentialAccess,
    IntegrationStatus,
    IntegrationSyncLog,
    OAuthState,
)
from relay.models.payments import Invoice, Payment
from relay.models.platform import ApiKey, CodecSession, ProviderCall, ProviderCallStatus
from relay.models.publishing import Publication, PublicationTarget, PublishRateWindow
from relay.models.webhooks import (
    AttemptTrigger,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

metadata = SQLModel.metadata

__all__ = [
    "ApiKey",
    "AttemptTrigger",
    "BillingCustomer",
    "BillingSubscription",
    "CodecSession",
    "DeliveryStatus",
    "Device",
    "InboundCursor",
    "InboundEvent",
    "Integration",
    "IntegrationCredential",
    "IntegrationCredentialAccess",
    "IntegrationStatus",
    "IntegrationSyncLog",
    "Invoice",
    "Meeting",
    "Notification",
    "NotificationEvent",
    "OAuthState",
    "Payment",
    "ProviderCall",
    "ProviderCallStatus",
    "Publication",
    "PublicationTarget",
    "PublishRateWindow",
    "StoredFile",
    "Suppression",
    "Verification",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "metadata",
]
