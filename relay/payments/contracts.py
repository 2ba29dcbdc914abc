"""What crosses Temporal for payments: the payment workflow's input, state and messages,
its activities' inputs and results, the names the inbox forwards Stripe events by, the
status enum, the workflow-id function.

Standard library and temporalio only. New fields get defaults so recorded histories
still decode. Amounts are integers in the currency's minor unit (cents), as Stripe
takes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class PaymentStatus(StrEnum):
    """Relay's status of a payment, derived from the PaymentIntent Stripe holds (and
    Relay's own expiry timer); `status` beside it mirrors Stripe's as it is."""

    PENDING = "PENDING"  # not yet confirmed (requires_payment_method/_confirmation)
    REQUIRES_ACTION = "REQUIRES_ACTION"  # the payer must act (3-D Secure): nextAction
    REQUIRES_CAPTURE = "REQUIRES_CAPTURE"  # authorized, captureMethod=manual
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"  # the last confirmation was declined; a new confirm may retry
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"  # Relay canceled it: still awaiting the payer after PAYMENT_EXPIRY
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"


# The workflow ends in these (and in SUCCEEDED/PARTIALLY_REFUNDED once the refund
# window has passed with no refund in flight).
FINAL = frozenset({PaymentStatus.CANCELED, PaymentStatus.EXPIRED, PaymentStatus.REFUNDED})
REFUNDABLE = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED})
# Stripe statuses in which the intent waits for the payer: canceled after PAYMENT_EXPIRY.
AWAITING_PAYER = frozenset({"requires_action", "requires_payment_method", "requires_confirmation"})
CONFIRMABLE = AWAITING_PAYER
CANCELABLE = frozenset(
    {"requires_payment_method", "requires_capture", "requires_confirmation", "requires_action"}
)
REFUND_IN_FLIGHT = frozenset({"pending", "requires_action"})
REFUND_COUNTED = frozenset({"pending", "requires_action", "succeeded"})

# PayPal: `status` is the order's until it is captured, then `CAPTURE_` and the capture's.
PAYPAL = "paypal"
PAYPAL_AWAITING_PAYER = frozenset({"CREATED", "PAYER_ACTION_REQUIRED"})
PAYPAL_CAPTURABLE = frozenset({"CREATED", "PAYER_ACTION_REQUIRED", "APPROVED"})
# Not captured: Relay may stop tracking it (PayPal orders cannot be deleted).
PAYPAL_CANCELABLE = PAYPAL_CAPTURABLE
PAYPAL_EVENT_SIGNAL = "paypal_event"
# PayPal's events that concern a payment's order or capture.
PAYPAL_EVENTS = frozenset(
    {
        "CHECKOUT.ORDER.APPROVED",
        "CHECKOUT.ORDER.COMPLETED",
        "PAYMENT.CAPTURE.COMPLETED",
        "PAYMENT.CAPTURE.DENIED",
        "PAYMENT.CAPTURE.PENDING",
        "PAYMENT.CAPTURE.REFUNDED",
        "PAYMENT.CAPTURE.REVERSED",
    }
)

PROVIDER = "stripe"
# The inbox forwards Stripe events by these names (signal-with-start, see
# relay.inbound.forward), so they are fixed here rather than taken from the class.
PAYMENT_WORKFLOW = "PaymentWorkflow"
STRIPE_EVENT_SIGNAL = "stripe_event"
# Relay sets this on every PaymentIntent (and refund) it creates.
RELAY_ID_METADATA = "relayPaymentId"
MAX_SEEN_EVENTS = 500
# A succeeded payment's workflow stays open this long after the intent was created, so
# refunds go through the single writer; Stripe refuses most card refunds past 180 days.
REFUND_WINDOW_SECONDS = 180 * 86400
DEFAULT_POLL_INTERVAL_SECONDS = 600.0
DEFAULT_EXPIRY_SECONDS = 86400.0


def payment_workflow_id(payment_id: str) -> str:
    return f"payment-{payment_id}"


# --- messages -----------------------------------------------------------------------------


@dataclass
class CreatePayment:
    """POST /v1/payments, as the workflow's `create` update receives it."""

    amount: int
    currency: str
    user_id: str | None = None
    customer_id: str | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    payment_method_id: str | None = None
    confirm: bool = False
    capture_method: str = "automatic"
    return_url: str | None = None
    provider: str = PROVIDER
    cancel_url: str | None = None


@dataclass
class ConfirmPayment:
    payment_method_id: str | None = None
    return_url: str | None = None


@dataclass
class CapturePayment:
    amount: int | None = None


@dataclass
class RefundPayment:
    amount: int | None = None
    reason: str | None = None


@dataclass
class PaymentError:
    code: str | None = None
    decline_code: str | None = None
    message: str | None = None


@dataclass
class RefundView:
    id: str
    amount: int
    status: str
    reason: str | None = None
    created: datetime | None = None


@dataclass
class PaymentView:
    """A payment as the API shows it; the workflow's state."""

    id: str
    provider: str = PROVIDER
    user_id: str | None = None
    stripe_customer_id: str | None = None
    stripe_payment_intent_id: str | None = None
    status: str | None = None  # Stripe's
    relay_status: PaymentStatus = PaymentStatus.PENDING
    amount: int = 0
    currency: str = ""
    capture_method: str = "automatic"
    description: str | None = None
    amount_captured: int = 0
    amount_refunded: int = 0
    last_error: PaymentError | None = None
    refunds: list[RefundView] = field(default_factory=list)
    next_action: dict[str, Any] | None = None
    # Kept in the workflow (its history is encrypted), never in the database.
    client_secret: str | None = None
    created_at: datetime | None = None
    last_read_at: datetime | None = None
    expired: bool = False
    # Numbers each change Relay saves; part of the outgoing events' keys.
    writes: int = 0
    # Numbers each write Relay asks of Stripe: part of its Idempotency-Key.
    stripe_writes: int = 0
    # What the Idempotency-Keys start with: the workflow id, or, in a run an event
    # started after an earlier chain of runs ended, the workflow id and this run's id
    # (its write numbers start again; its keys must not meet the earlier ones).
    key_prefix: str | None = None
    # PayPal: the order, its capture, the buyer's approval link while it is needed, and
    # whether Relay stopped tracking an uncaptured order (canceled: PayPal cannot delete it).
    paypal_order_id: str | None = None
    paypal_capture_id: str | None = None
    approve_url: str | None = None
    canceled: bool = False
    # The client's metadata as given (PayPal orders have none: Relay keeps it).
    metadata: dict[str, str] = field(default_factory=dict)

    def provider_id(self) -> str | None:
        """The provider's object this payment mirrors (None: not created yet)."""
        return self.paypal_order_id if self.provider == PAYPAL else self.stripe_payment_intent_id


@dataclass
class PaymentInput:
    """`payment_id` is Relay's id. The intervals come from PAYMENT_POLL_INTERVAL and
    PAYMENT_EXPIRY when the API starts the run (workflows read no settings); a run an
    event starts gets the defaults. `view` and `seen_events` cross continue-as-new."""

    payment_id: str
    stripe_payment_intent_id: str | None = None
    poll_interval_seconds: float = DEFAULT_POLL_INTERVAL_SECONDS
    expiry_seconds: float = DEFAULT_EXPIRY_SECONDS
    seen_events: list[str] = field(default_factory=list)
    runs: int = 0
    view: PaymentView | None = None
    provider: str = PROVIDER
    paypal_order_id: str | None = None


@dataclass
class PaymentState:
    """The `state` query: the view and how the workflow got there."""

    payment_id: str
    relay_status: PaymentStatus = PaymentStatus.PENDING
    events_applied: int = 0
    duplicates_dropped: int = 0
    syncs: int = 0
    polls: int = 0
    last_event_id: str | None = None
    last_event_type: str | None = None
    runs: int = 0
    view: PaymentView | None = None


@dataclass
class RefundResult:
    refund: RefundView
    payment: PaymentView


# --- activities ---------------------------------------------------------------------------


@dataclass
class CreateIntentInput:
    idempotency_key: str
    payment_id: str
    request: CreatePayment


@dataclass
class ReadIntentInput:
    stripe_payment_intent_id: str


@dataclass
class IntentWriteInput:
    """One write to an existing intent: `action` is confirm, capture, cancel or refund."""

    idempotency_key: str
    stripe_payment_intent_id: str
    action: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class IntentSnapshot:
    """The PaymentIntent (its latest charge and refunds) as Stripe holds it now."""

    stripe_payment_intent_id: str
    status: str
    amount: int
    currency: str
    capture_method: str = "automatic"
    customer_id: str | None = None
    user_id: str | None = None
    relay_id: str | None = None
    description: str | None = None
    client_secret: str | None = None
    next_action: dict[str, Any] | None = None
    last_error: PaymentError | None = None
    amount_captured: int = 0
    refunds: list[RefundView] = field(default_factory=list)
    created: datetime | None = None
    # The refund a `refund` write created (its id), when it did.
    refund_id: str | None = None
    provider: str = PROVIDER
    paypal_order_id: str | None = None
    paypal_capture_id: str | None = None
    approve_url: str | None = None


@dataclass
class CreateOrderInput:
    """PayPal: create the order (intent CAPTURE); `request_id` is its PayPal-Request-Id."""

    request_id: str
    payment_id: str
    request: CreatePayment


@dataclass
class ReadOrderInput:
    paypal_order_id: str


@dataclass
class OrderWriteInput:
    """One PayPal write: `action` is capture or refund (of `capture_id`, `amount` minor
    units in `currency`, None: all that remains)."""

    request_id: str
    paypal_order_id: str
    action: str
    capture_id: str | None = None
    amount: int | None = None
    currency: str = ""
    payment_id: str = ""


@dataclass
class PaymentEvent:
    type: str
    data: dict[str, Any]
    idempotency_key: str


@dataclass
class PublishPaymentEvents:
    events: list[PaymentEvent] = field(default_factory=list)


# --- invoices (InvoiceWorkflow, `invoice-{id}`) ----------------------------------------------


class InvoiceStatus(StrEnum):
    """A Stripe invoice's status, as Stripe holds it (Relay's status is the same)."""

    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


# A paid or voided invoice can change no more: its workflow ends.
INVOICE_FINAL = frozenset({InvoiceStatus.PAID, InvoiceStatus.VOID})
INVOICE_WORKFLOW = "InvoiceWorkflow"
INVOICE_ID_METADATA = "relayInvoiceId"
DEFAULT_DAYS_UNTIL_DUE = 30


def invoice_workflow_id(invoice_id: str) -> str:
    return f"invoice-{invoice_id}"


@dataclass
class InvoiceItem:
    description: str
    amount: int  # per unit, minor units
    quantity: int = 1


@dataclass
class CreateInvoice:
    """The `create` update: who is invoiced (`user_id`: the customer billing keeps for
    the user; or a Stripe `customer_id`), what, and whether Stripe emails it."""

    currency: str
    items: list[InvoiceItem] = field(default_factory=list)
    user_id: str | None = None
    customer_id: str | None = None
    days_until_due: int = DEFAULT_DAYS_UNTIL_DUE
    auto_send: bool = False


@dataclass
class InvoiceView:
    """Relay's view of one invoice, re-read from Stripe; what the read model stores."""

    id: str
    stripe_invoice_id: str | None = None
    stripe_customer_id: str | None = None
    user_id: str | None = None
    status: str | None = None
    currency: str = ""
    amount_due: int = 0
    amount_paid: int = 0
    number: str | None = None
    hosted_invoice_url: str | None = None
    invoice_pdf: str | None = None
    due_date: datetime | None = None
    attempt_count: int = 0
    sent: bool = False
    created_at: datetime | None = None


@dataclass
class InvoiceInput:
    invoice_id: str
    stripe_invoice_id: str | None = None
    poll_interval_seconds: float = DEFAULT_POLL_INTERVAL_SECONDS
    seen_events: list[str] = field(default_factory=list)
    view: InvoiceView | None = None


@dataclass
class InvoiceState:
    invoice_id: str
    view: InvoiceView | None = None
    events_applied: int = 0
    duplicates_dropped: int = 0
    last_event_type: str | None = None


@dataclass
class InvoiceSnapshot:
    """The invoice as Stripe holds it now (a read, never an event's payload)."""

    stripe_invoice_id: str
    status: str
    stripe_customer_id: str | None = None
    currency: str = ""
    amount_due: int = 0
    amount_paid: int = 0
    number: str | None = None
    hosted_invoice_url: str | None = None
    invoice_pdf: str | None = None
    due_date: datetime | None = None
    attempt_count: int = 0


@dataclass
class DraftInvoiceInput:
    """Draft the invoice and add its items; `key` prefixes every Idempotency-Key."""

    key: str
    invoice_id: str
    request: CreateInvoice


@dataclass
class InvoiceWriteInput:
    """One write to a drafted invoice: `finalize`, `send` or `void`."""

    key: str
    stripe_invoice_id: str
    action: str


@dataclass
class ReadInvoiceInput:
    stripe_invoice_id: str


@dataclass
class InvoiceEvent:
    """An outgoing `invoice.*` event; the key makes a retried publish a no-op."""

    type: str
    idempotency_key: str
    data: dict[str, Any]


@dataclass
class PublishInvoiceEvent:
    event: InvoiceEvent
