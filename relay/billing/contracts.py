"""What crosses Temporal for billing: the subscription workflow's input, state and
messages, its activities' inputs and results, the names the inbox forwards Stripe
events by, the status enum, the workflow-id function.

Standard library and temporalio only. New fields get defaults so recorded histories
still decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class SubscriptionStatus(StrEnum):
    """Stripe's subscription statuses, mirrored as they are (never derived from events)."""

    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    PAUSED = "paused"
    # Relay's own: known to Relay, not yet read from Stripe.
    PENDING = "pending"


ENDED = frozenset({SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED})
PAYING = frozenset({SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE})
DUNNING = frozenset({SubscriptionStatus.PAST_DUE, SubscriptionStatus.UNPAID})

# The inbox forwards Stripe events by these names (signal-with-start, see
# relay.inbound.forward), so they are fixed here rather than taken from the class.
SUBSCRIPTION_WORKFLOW = "SubscriptionWorkflow"
STRIPE_EVENT_SIGNAL = "stripe_event"
# Event ids a subscription remembers (and carries across continue-as-new) to drop
# duplicates; Stripe resends for 3 days, far fewer events than this in that time.
MAX_SEEN_EVENTS = 500
# Stripe announces a trial's end this long before it (customer.subscription.trial_will_end).
TRIAL_REMINDER_SECONDS = 3 * 86400
# subscription.grace_period_ending goes out this long before the grace period ends.
GRACE_REMINDER_SECONDS = 86400


def subscription_workflow_id(subscription_id: str) -> str:
    return f"subscription-{subscription_id}"


@dataclass
class CreateSubscription:
    """POST /v1/subscriptions, as the workflow's `create` update receives it."""

    user_id: str
    price_id: str
    email: str | None = None
    quantity: int = 1
    trial_days: int | None = None
    payment_method_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class CancelSubscription:
    at_period_end: bool = True


@dataclass
class ChangeSubscription:
    price_id: str
    quantity: int | None = None
    proration_behavior: str = "create_prorations"


@dataclass
class PauseSubscription:
    behavior: str = "void"
    resumes_at: datetime | None = None


@dataclass
class SubscriptionInput:
    """`subscription_id` is Relay's id: `rsub_…` for a subscription created through
    Relay, the Stripe id (`sub_…`) for one adopted from its first Stripe event.
    `view` and `seen_events` carry the state across continue-as-new."""

    subscription_id: str
    stripe_subscription_id: str | None = None
    adopted: bool = False
    seen_events: list[str] = field(default_factory=list)
    runs: int = 0
    view: SubscriptionView | None = None


@dataclass
class SubscriptionView:
    """A subscription as the API shows it; the workflow's state."""

    id: str
    user_id: str | None = None
    stripe_customer_id: str | None = None
    stripe_subscription_id: str | None = None
    status: SubscriptionStatus = SubscriptionStatus.PENDING
    entitled: bool = False
    price_id: str | None = None
    quantity: int = 1
    trial_end: datetime | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False
    grace_until: datetime | None = None
    decline_code: str | None = None
    pause_behavior: str | None = None
    pause_resumes_at: datetime | None = None
    adopted: bool = False
    # Only in the answer to `create`, when a first payment must be confirmed client-side.
    client_secret: str | None = None
    writes: int = 0
    # Numbers each write Relay asks of Stripe: part of its Idempotency-Key.
    stripe_writes: int = 0
    reminded_trial_end: datetime | None = None
    reminded_grace_until: datetime | None = None


@dataclass
class SubscriptionState:
    """The `state` query: the view and how the workflow got there."""

    subscription_id: str
    stripe_subscription_id: str | None = None
    status: SubscriptionStatus = SubscriptionStatus.PENDING
    entitled: bool = False
    adopted: bool = False
    events_applied: int = 0
    duplicates_dropped: int = 0
    syncs: int = 0
    last_event_id: str | None = None
    last_event_type: str | None = None
    runs: int = 0
    view: SubscriptionView | None = None


# --- activities ---------------------------------------------------------------------------


@dataclass
class EnsureCustomerInput:
    idempotency_key: str
    user_id: str
    email: str | None = None
    payment_method_id: str | None = None


@dataclass
class CreateStripeSubscriptionInput:
    idempotency_key: str
    subscription_id: str
    customer_id: str
    price_id: str
    quantity: int = 1
    trial_days: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class StripeSnapshot:
    """The subscription as Stripe holds it now, read through one adapter for both API
    shapes (periods on the subscription before 2025-03-31.basil, on its items since)."""

    stripe_subscription_id: str
    customer_id: str
    status: SubscriptionStatus
    cancel_at_period_end: bool = False
    current_period_end: datetime | None = None
    trial_end: datetime | None = None
    price_id: str | None = None
    quantity: int = 1
    user_id: str | None = None
    relay_id: str | None = None
    latest_invoice_status: str | None = None
    decline_code: str | None = None
    client_secret: str | None = None
    pause_behavior: str | None = None
    pause_resumes_at: datetime | None = None
    grace_period_seconds: float = 7 * 86400


@dataclass
class SyncInput:
    stripe_subscription_id: str


@dataclass
class StripeWriteInput:
    """One write to an existing Stripe subscription: `action` is cancel, cancel_at_period_end,
    change, pause or resume; `params` its Stripe parameters."""

    idempotency_key: str
    stripe_subscription_id: str
    action: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutgoingEvent:
    type: str
    data: dict[str, Any]
    idempotency_key: str


@dataclass
class PublishInput:
    events: list[OutgoingEvent] = field(default_factory=list)


# --- reconciliation ---------------------------------------------------------------------

RECONCILE_SCHEDULE = "stripe-reconcile"
# A first run (no watermark yet) looks this far back: Stripe retries an undelivered event
# for up to 3 days, so anything older was delivered or is past saving by retries.
RECONCILE_FIRST_LOOKBACK_SECONDS = 3 * 86400
# Each run re-reads this much before the watermark: whole-second `created` values tie.
RECONCILE_OVERLAP_SECONDS = 300


def reconcile_schedule_id(task_queue: str) -> str:
    """`stripe-reconcile`; other task queues get their own schedule."""
    return RECONCILE_SCHEDULE if task_queue == "relay" else f"{RECONCILE_SCHEDULE}@{task_queue}"


@dataclass
class ReconcileInput:
    max_events: int = 5000


@dataclass
class ReconcileResult:
    listed: int = 0
    fed: int = 0
    forwarded: int = 0
    watermark: int | None = None
