"""Relay's Stripe sandbox server: localstripe, extended with what Relay's billing needs.

    python -m relay.sandbox.stripe_server --port N [--from-scratch] [--host 127.0.0.1]

localstripe (PyPI, GPL-3.0-or-later) is a stateful fake Stripe. Its `server` module builds
its aiohttp `app` when imported; `build_app` extends that app and the `resources` it
serves, and `main` runs it. localstripe lacks, and this module adds:

- `pause_collection` on subscriptions (`POST /v1/subscriptions/{id}` with
  `pause_collection[behavior]` = keep_as_draft | mark_uncollectible | void and optional
  `pause_collection[resumes_at]`; `pause_collection=` clears it). It is exported (null
  when collection is not paused) and a renewal honours it;
- trials: a subscription created with `trial_period_days` or a future `trial_end` is
  `trialing` until its trial ends (localstripe leaves it `incomplete`), and
  `trial_settings[end_behavior][missing_payment_method]` (create_invoice | pause | cancel)
  says what its end does when the customer has no payment method — `pause` is how a
  Stripe subscription gets the status `paused`;
- `POST /v1/subscriptions/{id}/resume` for a subscription whose status is `paused`
  (400 for any other, as Stripe answers);
- `customer.subscription.updated` (with `data.previous_attributes`) whenever an API
  request changes a subscription, and `invoice.paid` beside `invoice.payment_succeeded`;
- one-off invoices as Stripe makes them: `POST /v1/invoices` takes `collection_method`
  (charge_automatically | send_invoice), `days_until_due` (required with send_invoice),
  `auto_advance`, `currency` and `pending_invoice_items_behavior=exclude` (an empty draft:
  localstripe always takes the customer's pending items and refuses an invoice without);
  `POST /v1/invoiceitems` takes `invoice` (the item becomes a line of that draft) and
  `quantity` with `unit_amount_decimal`; `POST /v1/invoices/{id}/finalize` (draft → open,
  `number`, `due_date`, `hosted_invoice_url`, `invoice_pdf`, `invoice.finalized`), `POST
  /v1/invoices/{id}/send` (open send_invoice invoices, `invoice.sent`), and void sends
  `invoice.voided` (localstripe's void fails on an invoice never paid). The hosted page
  and the PDF are served at `/_sandbox/invoices/{id}` and `/_sandbox/invoices/{id}/pdf`;
- sandbox controls, which the `/sandbox` page calls (no API key, as `/_config/`):
  `POST /_sandbox/subscriptions/{id}/renew {"outcome": "paid"|"failed"}` (default paid;
  one billing period later, or the trial's end: the renewal invoice, paid or declined), `POST
  /_sandbox/subscriptions/{id}/trial_will_end`, and `GET /_sandbox/events?limit=` (the
  events it created, newest first, i.e. what it "sent").

Every event goes out through localstripe's own webhooks (`/_config/webhooks/{id}`), so it
is signed like Stripe's. The state lives in memory only: localstripe would otherwise pickle
its whole store into one /tmp file shared by every localstripe on the machine after every
write; Relay's server always starts from scratch (`--from-scratch` is accepted for
localstripe's command line and changes nothing).

Licences: localstripe is GPL-3.0-or-later and this module imports it, so a running Stripe
sandbox is one program made of both; Relay's Apache-2.0 code may be combined with GPLv3
code. localstripe stays out of Relay's runtime dependencies (the dev and test extras
only) and nothing else in Relay imports it.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from dateutil.relativedelta import relativedelta
from localstripe import server
from localstripe.errors import UserError
from localstripe.resources import (
    Charge,
    Customer,
    Event,
    Invoice,
    InvoiceItem,
    InvoiceLineItem,
    PaymentIntent,
    Subscription,
    SubscriptionItem,
    store,
)
from localstripe.webhooks import schedule_webhook

PAUSE_BEHAVIORS = ("keep_as_draft", "mark_uncollectible", "void")
TRIAL_END_BEHAVIORS = ("create_invoice", "pause", "cancel")
DEFAULT_TRIAL_SETTINGS = {"end_behavior": {"missing_payment_method": "create_invoice"}}
RENEW_OUTCOMES = ("paid", "failed")
COLLECTION_METHODS = ("charge_automatically", "send_invoice")
PENDING_ITEMS_BEHAVIORS = ("include", "exclude")
# Stripe renews these; an incomplete, ended or paused subscription has no next period.
RENEWABLE = frozenset({"active", "past_due", "unpaid", "trialing"})
ENDED = frozenset({"canceled", "incomplete_expired"})
EVENTS_LIMIT = 50
MAX_EVENTS_LIMIT = 1000
_UNSET: Any = object()


def _invalid(message: str, param: str | None = None, code: str | None = None) -> UserError:
    """A 400 `invalid_request_error` shaped like Stripe's (`param`, `code` when it has one)."""
    contents: dict[str, str] = {}
    if param is not None:
        contents["param"] = param
    if code is not None:
        contents["code"] = code
    return UserError(400, message, contents)


def _now() -> int:
    return int(time.time())


# --- pause_collection --------------------------------------------------------------------


def _pause_collection(value: Any) -> dict[str, Any] | None:
    """`pause_collection` as Stripe validates it; "" (or null) clears it."""
    if value is None or value == "":
        return None
    if not isinstance(value, dict):
        raise _invalid(
            "Invalid pause_collection: must be an object or an empty string", "pause_collection"
        )
    for key in value:
        if key not in ("behavior", "resumes_at"):
            raise _invalid(
                f"Received unknown parameter: pause_collection[{key}]",
                f"pause_collection[{key}]",
                "parameter_unknown",
            )
    behavior = value.get("behavior")
    if behavior is None:
        raise _invalid(
            "Missing required param: pause_collection[behavior].",
            "pause_collection[behavior]",
            "parameter_missing",
        )
    if behavior not in PAUSE_BEHAVIORS:
        raise _invalid(
            "Invalid pause_collection[behavior]: must be one of keep_as_draft, "
            "mark_uncollectible, or void",
            "pause_collection[behavior]",
        )
    resumes_at = value.get("resumes_at")
    if resumes_at is not None and resumes_at != "":
        try:
            resumes_at = int(resumes_at)
        except (TypeError, ValueError):
            resumes_at = None
        if resumes_at is None or resumes_at <= 1500000000:
            raise _invalid(
                "Invalid timestamp: must be an integer Unix timestamp.",
                "pause_collection[resumes_at]",
            )
    else:
        resumes_at = None
    return {"behavior": behavior, "resumes_at": resumes_at}


_localstripe_subscription_update = Subscription._update


def _update_subscription(self: Any, pause_collection: Any = _UNSET, **data: Any) -> None:
    # Validated before localstripe changes anything, so a refusal leaves it untouched.
    pause = _pause_collection(pause_collection) if pause_collection is not _UNSET else _UNSET
    _localstripe_subscription_update(self, **data)
    if pause is not _UNSET:
        self.pause_collection = pause


# --- trials ------------------------------------------------------------------------------


def _trial_settings(value: Any) -> dict[str, Any]:
    if value is None:
        return DEFAULT_TRIAL_SETTINGS
    behavior = (
        value.get("end_behavior", {}).get("missing_payment_method")
        if isinstance(value, dict) and isinstance(value.get("end_behavior", {}), dict)
        else None
    )
    if behavior not in TRIAL_END_BEHAVIORS:
        raise _invalid(
            "Invalid trial_settings[end_behavior][missing_payment_method]: must be one of "
            "create_invoice, pause, or cancel",
            "trial_settings[end_behavior][missing_payment_method]",
        )
    return {"end_behavior": {"missing_payment_method": behavior}}


_localstripe_subscription_init = Subscription.__init__


def _init_subscription(self: Any, *args: Any, trial_settings: Any = None, **kwargs: Any) -> None:
    settings = _trial_settings(trial_settings)  # refused before localstripe stores anything
    _localstripe_subscription_init(self, *args, **kwargs)
    self.trial_settings = settings
    end = self.trial_end
    if end is None and self.trial_period_days:
        end = self.start_date + int(self.trial_period_days) * 86400
    if end is not None and end > _now() and self.latest_invoice is None:
        self.status = "trialing"
        self.trial_start = self.start_date
        self.trial_end = end
    # localstripe made its customer.subscription.created event before this point: it
    # must show the subscription as it is.
    for key, obj in reversed(list(store.items())):
        if key.startswith("event:") and obj.type == "customer.subscription.created":
            if obj.data["object"]["id"] == self.id:
                obj.data = {"object": self._export()}
                break


# --- periods -----------------------------------------------------------------------------


def _add_interval(start: int, plan: Any) -> int:
    """localstripe's own period arithmetic (one `plan.interval` after `start`)."""
    end = datetime.fromtimestamp(start)
    if plan.interval == "day":
        end += timedelta(days=1)
    elif plan.interval == "week":
        end += timedelta(days=7)
    elif plan.interval == "month":
        end += relativedelta(months=1)
    elif plan.interval == "year":
        end += relativedelta(years=1)
    return int(end.timestamp())


_localstripe_current_period = SubscriptionItem._current_period


def _current_period(self: Any) -> dict[str, int]:
    # localstripe derives the only period from `start_date`; a trial is a period of its
    # own, and a renewal moves `_period_start` (private: not exported) one period on.
    subscription = store.get("subscription:" + self._subscription) if self._subscription else None
    if subscription is not None and subscription.status == "trialing":
        return {"start": subscription.trial_start, "end": subscription.trial_end}
    start = getattr(subscription, "_period_start", None)
    if start is None:
        return _localstripe_current_period(self)  # type: ignore[no-any-return]
    return {"start": start, "end": _add_interval(start, self.plan)}


# --- invoices ----------------------------------------------------------------------------

_localstripe_invoice_status = Invoice.status
_localstripe_payment_success = Invoice._on_payment_success


def _invoice_status(self: Any) -> str:
    if getattr(self, "_uncollectible", False):
        return "uncollectible"
    return _localstripe_invoice_status.fget(self)  # type: ignore[no-any-return]


def _on_payment_success(self: Any) -> None:
    # Stripe sends invoice.paid beside invoice.payment_succeeded; localstripe only the latter.
    schedule_webhook(Event("invoice.paid", self))
    _localstripe_payment_success(self)


def _default_payment_method(customer_id: str) -> Any:
    method = Customer._api_retrieve(customer_id)._get_default_payment_method_or_source()
    if method is None:
        raise _invalid(
            "This customer has no attached payment source or default payment method.",
            code="resource_missing",
        )
    return method


def _cycle_invoice(subscription: Any) -> Any:
    """The invoice for the subscription's current period, as localstripe's
    `Subscription._create_invoice` builds it (pending invoice items included), a draft."""
    pending = [
        item
        for item in InvoiceItem._api_list_all(None, customer=subscription.customer, limit=99)._list
        if item.invoice is None
    ]
    invoice = Invoice(
        customer=subscription.customer,
        subscription=subscription.id,
        items=pending + list(subscription.items._list),
        tax_percent=subscription.tax_percent,
        default_tax_rates=[rate.id for rate in (subscription.default_tax_rates or [])],
        date=subscription.current_period_start,
    )
    invoice.billing_reason = "subscription_cycle"
    return invoice


def _collect(invoice: Any, succeed: bool) -> None:
    """Finalize the invoice and charge the customer's default payment method through
    localstripe's PaymentIntent and Charge, the outcome decided by `succeed` rather than by
    the card: paid → invoice.paid/payment_succeeded and the subscription active; declined
    → invoice.payment_failed, the invoice open after one failed attempt, past_due."""
    invoice._finalize()
    if invoice.total <= 0:  # nothing to charge: paid, as Stripe does
        invoice._on_payment_success()
        return
    method = _default_payment_method(invoice.customer)
    intent = PaymentIntent(
        amount=invoice.total,
        currency=invoice.currency,
        customer=invoice.customer,
        payment_method=method.id,
    )
    invoice.payment_intent = intent.id
    intent.invoice = invoice.id
    charge = Charge(
        amount=intent.amount, currency=intent.currency, customer=intent.customer, source=method.id
    )
    charge.payment_intent = intent.id
    charge.invoice = invoice.id
    charge._authorized = succeed
    intent.latest_charge = charge

    def declined() -> None:
        schedule_webhook(Event("payment_intent.payment_failed", intent))
        invoice._on_payment_failure_now()

    charge._initialize_charge(intent._on_success, declined, intent._report_async_failure)


def _hold(invoice: Any, behavior: str) -> None:
    """What Stripe does with an invoice while collection is paused: no payment attempt."""
    if behavior == "keep_as_draft":
        return
    invoice._finalize()
    if behavior == "void":
        invoice._voided = True
        invoice.status_transitions["voided_at"] = _now()
        schedule_webhook(Event("invoice.voided", invoice))
    else:
        invoice._uncollectible = True
        invoice.status_transitions["marked_uncollectible_at"] = _now()
        schedule_webhook(Event("invoice.marked_uncollectible", invoice))


# --- resume ------------------------------------------------------------------------------


def _api_resume(
    id: str,
    billing_cycle_anchor: str | None = None,
    proration_behavior: str | None = None,
    proration_date: Any = None,
    **kwargs: Any,
) -> Any:
    """Stripe's `POST /v1/subscriptions/{id}/resume`: a `paused` subscription is active
    again; with `billing_cycle_anchor=now` (Stripe's default) a period starts now and its
    invoice is charged to the default payment method (declined: past_due)."""
    if kwargs:
        raise _invalid("Received unknown parameter: " + ", ".join(kwargs), code="parameter_unknown")
    if billing_cycle_anchor not in (None, "now", "unchanged"):
        raise _invalid(
            "Invalid billing_cycle_anchor: must be one of now or unchanged",
            "billing_cycle_anchor",
        )
    if proration_behavior not in (None, "always_invoice", "create_prorations", "none"):
        raise _invalid(
            "Invalid proration_behavior: must be one of always_invoice, create_prorations, or none",
            "proration_behavior",
        )
    subscription = Subscription._api_retrieve(id)
    if subscription.status != "paused":
        raise _invalid(
            f"Subscription {id} cannot be resumed because its status is "
            f"{subscription.status}. Only a subscription with status `paused` can be resumed.",
            code="subscription_not_paused",
        )
    if billing_cycle_anchor == "unchanged":
        subscription.status = "active"
        return subscription
    method = _default_payment_method(subscription.customer)  # refused before any change
    subscription.status = "active"
    subscription._period_start = _now()
    _collect(_cycle_invoice(subscription), succeed=not method._charging_is_declined())
    return subscription


# --- customer.subscription.updated -------------------------------------------------------


# A request naming one subscription can change only that one (most do); any other
# (an invoice paid, a payment confirmed…) may change any.
_NAMES_SUBSCRIPTION = re.compile(r"^/(?:v1|_sandbox)/(?:customers/[^/]+/)?subscriptions/(sub_\w+)")


def _live_subscriptions(path: str) -> dict[str, dict[str, Any]]:
    named = _NAMES_SUBSCRIPTION.match(path)
    candidates = (
        [store.get("subscription:" + named.group(1))]
        if named
        else [obj for key, obj in list(store.items()) if key.startswith("subscription:")]
    )
    return {
        obj.id: obj._export() for obj in candidates if obj is not None and obj.status not in ENDED
    }


def _announce_updates(before: dict[str, dict[str, Any]]) -> None:
    for id, old in before.items():
        subscription = store.get("subscription:" + id)
        if subscription is None or subscription.status == "canceled":
            continue  # a cancellation is customer.subscription.deleted, which localstripe sends
        new = subscription._export()
        previous = {key: value for key, value in old.items() if new.get(key) != value}
        if previous:
            event = Event("customer.subscription.updated", subscription)
            event.data["previous_attributes"] = previous
            schedule_webhook(event)


@web.middleware
async def subscription_updated_events(request: web.Request, handler: Any) -> web.StreamResponse:
    """Any request that changes a live subscription (an update, a paid invoice, a
    renewal…) makes a `customer.subscription.updated` event, as Stripe does: the
    subscription is compared as exported before and after the request."""
    if request.method not in ("POST", "DELETE"):
        return await handler(request)  # type: ignore[no-any-return]
    before = _live_subscriptions(request.path)
    try:
        return await handler(request)  # type: ignore[no-any-return]
    finally:
        _announce_updates(before)


@web.middleware
async def sandbox_auth(request: web.Request, handler: Any) -> web.StreamResponse:
    """localstripe's API-key check, except for the sandbox controls (like `/_config/`)."""
    if request.path.startswith("/_sandbox/"):
        return await handler(request)  # type: ignore[no-any-return]
    return await server.auth_middleware(request, handler)  # type: ignore[no-any-return]


# --- sandbox controls --------------------------------------------------------------------


def renew(subscription: Any, outcome: str) -> Any:
    """The current period (or trial) ends: the next one starts and its invoice is created;
    paid or declined as `outcome` says, or, while collection is paused, kept as a draft,
    marked uncollectible or voided with no payment attempt (collection resumes first when
    `pause_collection.resumes_at` has come). A trial ending without a payment method does
    what `trial_settings` says: pause, cancel, or invoice (open, past_due)."""
    if outcome not in RENEW_OUTCOMES:
        raise _invalid("Invalid outcome: must be one of paid or failed", "outcome")
    if subscription.status not in RENEWABLE:
        raise _invalid(
            f"Subscription {subscription.id} does not renew: its status is {subscription.status}.",
            code="subscription_not_renewable",
        )
    next_start = subscription.current_period_end
    pause = subscription.pause_collection
    if pause is not None and pause["resumes_at"] is not None and pause["resumes_at"] <= next_start:
        pause = None
    customer = Customer._api_retrieve(subscription.customer)
    method = customer._get_default_payment_method_or_source()
    if subscription.status == "trialing" and method is None:
        behavior = subscription.trial_settings["end_behavior"]["missing_payment_method"]
        if behavior == "cancel":
            return Subscription._api_delete(subscription.id)
        if behavior == "pause":
            subscription._period_start = next_start
            subscription.status = "paused"
            return subscription
    elif pause is None:
        _default_payment_method(subscription.customer)  # refused before anything changes
    subscription.pause_collection = pause
    subscription._period_start = next_start
    if subscription.status == "trialing":
        subscription.status = "active"
    invoice = _cycle_invoice(subscription)
    if pause is not None:
        _hold(invoice, pause["behavior"])
    elif method is None:  # a trial's end invoiced with nothing to charge: a failed payment
        invoice._finalize()
        invoice._on_payment_failure_now()
    else:
        _collect(invoice, succeed=outcome == "paid")
    return subscription


async def renew_route(request: web.Request) -> web.Response:
    data = await server.get_post_data(request) or {}
    subscription = Subscription._api_retrieve(request.match_info["id"])
    renew(subscription, str(data.get("outcome", "paid")))
    return server.json_response(subscription._export(expand=["latest_invoice"]))


async def trial_will_end_route(request: web.Request) -> web.Response:
    subscription = Subscription._api_retrieve(request.match_info["id"])
    if subscription.status != "trialing":
        raise _invalid(
            f"Subscription {subscription.id} is not trialing (its status is "
            f"{subscription.status}): it has no trial to end.",
            code="subscription_not_trialing",
        )
    event = Event("customer.subscription.trial_will_end", subscription)
    schedule_webhook(event)
    return server.json_response(event._export())


async def events_route(request: web.Request) -> web.Response:
    raw = request.query.get("limit", str(EVENTS_LIMIT))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_EVENTS_LIMIT:
        raise _invalid(f"Invalid limit: must be between 1 and {MAX_EVENTS_LIMIT}", "limit")
    events = [obj for key, obj in store.items() if key.startswith("event:")]
    events.reverse()  # the store keeps creation order; whole-second `created` values tie
    events.sort(key=lambda event: event.created, reverse=True)
    return server.json_response({"data": [event._export() for event in events[:limit]]})


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204)  # localstripe's add_cors_headers answers the origin


# --- one-off invoices ---------------------------------------------------------------------

_localstripe_invoice_create = Invoice._api_create
_localstripe_invoice_void = Invoice._api_void_invoice
_localstripe_invoiceitem_init = InvoiceItem.__init__


def _flag(value: Any, param: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    raise _invalid(f"Invalid boolean: {value}", param)


def _api_create_invoice(
    customer: Any = None,
    collection_method: Any = None,
    days_until_due: Any = None,
    auto_advance: Any = None,
    currency: Any = None,
    pending_invoice_items_behavior: Any = None,
    **data: Any,
) -> Any:
    method = collection_method or "charge_automatically"
    if method not in COLLECTION_METHODS:
        raise _invalid(
            "Invalid collection_method: must be one of charge_automatically or send_invoice",
            "collection_method",
        )
    due = None
    if days_until_due is not None:
        try:
            due = int(days_until_due)
        except (TypeError, ValueError):
            raise _invalid("Invalid integer: days_until_due", "days_until_due") from None
    if method == "send_invoice" and due is None:
        raise _invalid(
            "Missing required param: days_until_due (with collection_method send_invoice).",
            "days_until_due",
        )
    behavior = pending_invoice_items_behavior or "include"
    if behavior not in PENDING_ITEMS_BEHAVIORS:
        raise _invalid(
            "Invalid pending_invoice_items_behavior: must be one of include or exclude",
            "pending_invoice_items_behavior",
        )
    advance = _flag(auto_advance, "auto_advance") if auto_advance is not None else False
    if behavior == "include":
        invoice = _localstripe_invoice_create(customer=customer, **data)
    else:
        if not isinstance(customer, str) or not customer.startswith("cus_"):
            raise _invalid("Invalid customer", "customer")
        Customer._api_retrieve(customer)  # 404 as Stripe's resource_missing
        pending = [
            item
            for item in InvoiceItem._api_list_all(None, customer=customer, limit=99)._list
            if item.invoice is None
        ]
        invoice = Invoice(customer=customer, **data)
        # localstripe always takes the pending items: give them back (Stripe's `exclude`).
        for item in pending:
            item.invoice = None
        invoice.lines._list = []
        if currency:
            invoice.currency = str(currency).lower()
    invoice.collection_method = method
    invoice.days_until_due = due
    invoice.auto_advance = advance
    return invoice


def _init_invoice_item(
    self: Any,
    *args: Any,
    quantity: Any = None,
    unit_amount_decimal: Any = None,
    **kwargs: Any,
) -> None:
    count = 1
    if quantity is not None or unit_amount_decimal is not None:
        try:
            count = int(quantity if quantity is not None else 1)
            unit = int(float(unit_amount_decimal))
        except (TypeError, ValueError):
            raise _invalid("Invalid quantity or unit_amount_decimal", "quantity") from None
        if count < 1 or unit < 0 or kwargs.get("amount") is not None:
            raise _invalid("Pass amount, or quantity with unit_amount_decimal", "quantity")
        kwargs["amount"] = unit * count
    invoice_id = kwargs.get("invoice")
    invoice = Invoice._api_retrieve(invoice_id) if isinstance(invoice_id, str) else None
    if invoice is not None and invoice.status != "draft":
        raise _invalid("Invoice items can only be added to draft invoices.", "invoice")
    _localstripe_invoiceitem_init(self, *args, **kwargs)
    self.quantity = count
    self.unit_amount = self.amount // count
    if invoice is not None:
        # Stripe makes it a line of that draft; localstripe only records the id.
        invoice.lines._list.append(InvoiceLineItem(self))
        invoice.currency = invoice.lines._list[0].currency


def _invoice_url(request: web.Request, invoice_id: str) -> str:
    return f"{request.scheme}://{request.host}/_sandbox/invoices/{invoice_id}"


async def finalize_invoice_route(request: web.Request) -> web.Response:
    invoice = Invoice._api_retrieve(request.match_info["id"])
    if invoice.status != "draft":
        raise _invalid(f"This invoice is already finalized (status {invoice.status}).")
    invoice._finalize()
    invoice.number = f"RELAY-{invoice.id[3:11].upper()}"
    due = getattr(invoice, "days_until_due", None)
    invoice.due_date = _now() + due * 86400 if due is not None else None
    url = _invoice_url(request, invoice.id)
    invoice.hosted_invoice_url = url
    invoice.invoice_pdf = f"{url}/pdf"
    schedule_webhook(Event("invoice.finalized", invoice))
    if invoice.total <= 0:
        invoice._on_payment_success()
    return server.json_response(invoice._export())


async def send_invoice_route(request: web.Request) -> web.Response:
    invoice = Invoice._api_retrieve(request.match_info["id"])
    if getattr(invoice, "collection_method", None) != "send_invoice":
        raise _invalid("You can only send invoices with collection_method send_invoice.")
    if invoice.status != "open":
        raise _invalid(f"You can only send open invoices (status {invoice.status}).")
    schedule_webhook(Event("invoice.sent", invoice))
    return server.json_response(invoice._export())


def _api_void_invoice(id: str, **kwargs: Any) -> Any:
    invoice = Invoice._api_retrieve(id)
    if invoice.status != "open":
        # Stripe voids open invoices only (a draft is deleted instead).
        raise _invalid(f"You can only void open invoices (status {invoice.status}).")
    if invoice.payment_intent is None:
        # localstripe's void cancels the invoice's intent, failing when it has none.
        invoice._voided = True
        invoice.status_transitions["voided_at"] = _now()
    else:
        invoice = _localstripe_invoice_void(id)
    schedule_webhook(Event("invoice.voided", invoice))
    return invoice


async def hosted_invoice_route(request: web.Request) -> web.Response:
    invoice = Invoice._api_retrieve(request.match_info["id"])
    return web.Response(
        text=(
            f"<!doctype html><title>Invoice {invoice.number}</title>"
            f"<h1>Invoice {invoice.number}</h1><p>{invoice.status}: "
            f"{invoice.amount_due} {invoice.currency}</p>"
        ),
        content_type="text/html",
    )


async def invoice_pdf_route(request: web.Request) -> web.Response:
    invoice = Invoice._api_retrieve(request.match_info["id"])
    body = f"%PDF-1.4\n% Relay sandbox invoice {invoice.number}\n%%EOF\n"
    return web.Response(body=body.encode(), content_type="application/pdf")


# --- the app -----------------------------------------------------------------------------

_built = False


def build_app() -> web.Application:
    """localstripe's app with Relay's extensions installed (once per process)."""
    global _built
    app: web.Application = server.app
    if _built:
        return app
    _built = True
    store.dump_to_disk = lambda: None  # memory only, see the module docstring
    Subscription.pause_collection = None  # exported as null until collection is paused
    Subscription.trial_settings = DEFAULT_TRIAL_SETTINGS
    Subscription.__init__ = _init_subscription
    Subscription._update = _update_subscription
    SubscriptionItem._current_period = _current_period
    Invoice.status = property(_invoice_status)
    Invoice._on_payment_success = _on_payment_success
    Invoice._api_create = staticmethod(_api_create_invoice)
    Invoice._api_void_invoice = staticmethod(_api_void_invoice)
    # Exported as null until finalized / set, as Stripe's.
    Invoice.hosted_invoice_url = None
    Invoice.invoice_pdf = None
    Invoice.number = None
    Invoice.due_date = None
    Invoice.days_until_due = None
    Invoice.auto_advance = False
    InvoiceItem.__init__ = _init_invoice_item

    middlewares = app.middlewares
    middlewares[middlewares.index(server.auth_middleware)] = sandbox_auth
    middlewares.append(subscription_updated_events)  # innermost: sees the handler's changes
    app.router.add_post(
        "/v1/subscriptions/{id}/resume",
        server.api_extra(_api_resume, "/v1/subscriptions/{id}/resume"),
    )
    for route in app.router.routes():
        if route.method == "POST" and route.resource is not None:
            if route.resource.canonical == "/v1/invoices/{id}/void":
                # localstripe bound its void function into the route when it was imported.
                route._handler = server.api_extra(_api_void_invoice, route.resource.canonical)
    app.router.add_post("/v1/invoices/{id}/finalize", finalize_invoice_route)
    app.router.add_post("/v1/invoices/{id}/send", send_invoice_route)
    app.router.add_get("/_sandbox/invoices/{id}", hosted_invoice_route)
    app.router.add_get("/_sandbox/invoices/{id}/pdf", invoice_pdf_route)
    app.router.add_post("/_sandbox/subscriptions/{id}/renew", renew_route)
    app.router.add_post("/_sandbox/subscriptions/{id}/trial_will_end", trial_will_end_route)
    app.router.add_get("/_sandbox/events", events_route)
    app.router.add_route("OPTIONS", "/_sandbox/{tail:.*}", preflight)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m relay.sandbox.stripe_server")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--from-scratch", action="store_true", help="accepted; the state is always fresh"
    )
    args = parser.parse_args(argv)
    app = build_app()
    # localstripe logs its requests and webhook deliveries on aiohttp's access logger.
    logger = logging.getLogger("aiohttp.access")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(logging.StreamHandler())
    web.run_app(app, host=args.host, port=args.port, access_log=logger, print=None)


if __name__ == "__main__":
    main()
