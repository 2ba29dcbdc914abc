"""What crosses Temporal for notifications, and the shapes every notification module shares:
channels, statuses, providers, the workflow-id functions, the send pump's input and result,
the multi-channel notification workflow's messages, and the verification workflow's.

Standard library and temporalio only. Nothing personal crosses Temporal: a recipient, a
message's content and a verification code stay in the database, sealed; workflows carry
ids. New fields get defaults so recorded histories still decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    WHATSAPP = "whatsapp"
    PUSH = "push"


class NotificationStatus(StrEnum):
    """PENDING (queued) → SENT (the provider accepted it) → DELIVERED, or FAILED (refused, or
    every attempt failed), BOUNCED (email), UNDELIVERED (SMS/WhatsApp: the carrier could not
    deliver it). UNKNOWN: a send's request left and its answer never came, so Relay cannot
    know whether the provider acted; it is not re-sent blindly, and a provider callback may
    still move it on."""

    PENDING = "PENDING"
    UNKNOWN = "UNKNOWN"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    BOUNCED = "BOUNCED"
    UNDELIVERED = "UNDELIVERED"


FINAL = frozenset(
    {
        NotificationStatus.DELIVERED,
        NotificationStatus.FAILED,
        NotificationStatus.BOUNCED,
        NotificationStatus.UNDELIVERED,
    }
)
FAILED_STATES = frozenset(
    {NotificationStatus.FAILED, NotificationStatus.BOUNCED, NotificationStatus.UNDELIVERED}
)
# Statuses only move forward: callbacks arrive out of order and without timestamps, so a
# late `sent` never overwrites `delivered`, and the first final status stays.
_RANK = {
    NotificationStatus.PENDING: 0,
    NotificationStatus.UNKNOWN: 1,
    NotificationStatus.SENT: 2,
    NotificationStatus.DELIVERED: 3,
    NotificationStatus.FAILED: 3,
    NotificationStatus.BOUNCED: 3,
    NotificationStatus.UNDELIVERED: 3,
}


def advances(current: NotificationStatus | str, new: NotificationStatus | str) -> bool:
    """Whether `new` moves a notification on from `current` (never back, never sideways)."""
    return _RANK[NotificationStatus(new)] > _RANK[NotificationStatus(current)]


def behind(new: NotificationStatus | str) -> list[str]:
    """The statuses `new` may replace: a guard for an update that must only move forward."""
    rank = _RANK[NotificationStatus(new)]
    return [status.value for status, r in _RANK.items() if r < rank]


class Provider(StrEnum):
    SENDGRID = "sendgrid"
    SMTP = "smtp"
    TWILIO = "twilio"
    FCM = "fcm"


# Providers that report delivery by callback. For the others (SMTP, FCM) SENT is the last
# word, so a multi-channel notification counts SENT there as success.
CONFIRMS_DELIVERY = frozenset({Provider.SENDGRID, Provider.TWILIO})


class SuppressionReason(StrEnum):
    BOUNCE = "bounce"
    DROPPED = "dropped"
    SPAM_REPORT = "spamreport"
    UNSUBSCRIBE = "unsubscribe"
    STOP = "stop"  # an SMS/WhatsApp reply of STOP (Twilio's opt-out keywords)


class SuppressionChannel(StrEnum):
    """Email addresses and phone numbers (SMS and WhatsApp share a number's opt-out)."""

    EMAIL = "email"
    PHONE = "phone"


def suppression_channel(channel: Channel | str) -> SuppressionChannel | None:
    channel = Channel(channel)
    if channel is Channel.EMAIL:
        return SuppressionChannel.EMAIL
    if channel in (Channel.SMS, Channel.WHATSAPP):
        return SuppressionChannel.PHONE
    return None


def notification_workflow_id(notification_id: str) -> str:
    return f"notification-{notification_id}"


DISPATCH_WORKFLOW_ID = "notification-dispatch"
DEFAULT_TASK_QUEUE = "relay"


def dispatcher_workflow_id(task_queue: str) -> str:
    """`notification-dispatch`; other task queues get their own."""
    if task_queue == DEFAULT_TASK_QUEUE:
        return DISPATCH_WORKFLOW_ID
    return f"{DISPATCH_WORKFLOW_ID}@{task_queue}"


def verification_workflow_id(verification_id: str) -> str:
    return f"verification-{verification_id}"


# --- what providers report, normalized ------------------------------------------------------


@dataclass
class ProviderEvent:
    """One provider callback about one message, as the provider modules parse it.

    `notification_id` when the provider echoes Relay's id (SendGrid's custom_args, the
    Twilio StatusCallback's query); otherwise `provider_message_id` finds it. `status` is
    what the event means for the notification (None: recorded, status unchanged: an open,
    a click, a deferral). `suppress` names a suppression the event asks for."""

    provider: Provider
    event_id: str  # unique per provider: SendGrid's sg_event_id, Twilio's sid + status
    event: str  # the provider's own name for it (delivered, bounce, undelivered…)
    notification_id: str | None = None
    provider_message_id: str | None = None
    status: NotificationStatus | None = None
    occurred_at: datetime | None = None
    error_code: str | None = None
    error_message: str | None = None
    suppress: SuppressionReason | None = None
    address: str | None = None  # the recipient the event is about (for suppressions)
    detail: dict[str, Any] = field(default_factory=dict)


# --- the send pump (NotificationDispatchWorkflow) -------------------------------------------

PUMP_HEARTBEAT_SECONDS = 20.0
MAX_PUMPS_PER_RUN = 200
# The recovery path of provider callbacks: events the route could not apply come back
# through the inbound forwarder as this signal on the dispatcher.
PROVIDER_EVENT_SIGNAL = "provider_event"


@dataclass
class NotificationDispatchInput:
    pump_budget_seconds: float = 60.0
    pump_poll_seconds: float = 0.2
    pump_heartbeat_seconds: float = PUMP_HEARTBEAT_SECONDS
    batch_size: int = 200
    lease_seconds: float = 120.0
    runs: int = 0
    max_pumps_per_run: int = MAX_PUMPS_PER_RUN
    # The inbox ids of provider events handed over by signal, not applied yet.
    pending_events: list[str] = field(default_factory=list)


@dataclass
class NotificationDispatchState:
    runs: int = 0
    pumps: int = 0
    sent: int = 0
    failed: int = 0
    events_applied: int = 0


@dataclass
class SendPumpInput:
    budget_seconds: float = 60.0
    poll_seconds: float = 0.2
    batch_size: int = 200
    lease_seconds: float = 120.0


@dataclass
class SendPumpResult:
    sent: int = 0
    failed: int = 0


@dataclass
class ApplyEventsInput:
    inbox_ids: list[str] = field(default_factory=list)


@dataclass
class ApplyEventsResult:
    applied: int = 0


# --- a multi-channel notification (NotificationWorkflow) ------------------------------------

CHANNEL_OUTCOME_SIGNAL = "channel_outcome"


@dataclass
class NotificationInput:
    notification_id: str
    channels: list[str]
    fallback_after_seconds: float = 600.0


@dataclass
class ChannelOutcome:
    """A channel's message reached a status that settles it (final, or SENT where the
    provider never confirms delivery)."""

    message_id: str
    status: str


@dataclass
class MessageSettlement:
    """A channel's message as the workflow reads it at its deadline: `settled` when its
    status is final, or SENT where the provider never reports delivery."""

    status: str
    settled: bool


@dataclass
class EnqueueChannelInput:
    notification_id: str
    channel: str
    step: int


@dataclass
class EnqueueChannelResult:
    message_id: str | None
    status: str  # PENDING when queued; FAILED when it could not be (no device, suppressed…)
    error_code: str | None = None


@dataclass
class FinishNotificationInput:
    notification_id: str
    status: str
    channel: str | None = None
    message_id: str | None = None
    error_code: str | None = None


@dataclass
class NotificationState:
    notification_id: str
    status: str = NotificationStatus.PENDING.value
    step: int = 0
    channel: str | None = None
    message_id: str | None = None


# --- verification codes (VerificationWorkflow) ----------------------------------------------

CODE_TTL_SECONDS = 600
MAX_CHECKS = 5
MAX_SENDS = 5


class VerificationStatus(StrEnum):
    PENDING = "PENDING"
    VERIFIED = "VERIFIED"
    EXPIRED = "EXPIRED"
    EXHAUSTED = "EXHAUSTED"
