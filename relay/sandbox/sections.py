"""The /sandbox page's sections: what each sandboxed provider shows, and its controls.

The page (api/routes/sandbox.py) knows no provider. It asks every section type in
SECTIONS whether its provider is sandboxed under these settings, renders the view each
returns (tables of plain text and buttons; the page escapes all of it) and hands a
button's POST back to the section's `act`. A provider's sandbox joins the page with one
`Section` subclass and one entry in SECTIONS; the page itself does not change.

A provider is sandboxed when, in development, its `*_API_BASE` points at loopback: what
`relay dev` sets when it runs a sandbox for it. Sections talk to their sandbox over
HTTP with the sandbox's key, server-side; no key or webhook secret is ever part of a
view.

    Exception
     └── SandboxError   the sandbox refused or could not be reached; its message is
                        shown on the page (a section's problem, or the flash after a control)
"""

from __future__ import annotations

import ipaddress
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx

from relay.sandbox.publishing import NAMES as PLATFORM_NAMES
from relay.sandbox.publishing import PROVIDERS as PLATFORMS
from relay.sandbox.publishing import configured_base
from relay.settings import Settings

# Object ids as providers issue them: all a control's URL may carry (the page refuses others).
TARGET = re.compile(r"[A-Za-z0-9_.:-]{1,255}")
# How many recent events a section lists.
EVENTS_SHOWN = 25
SUBSCRIPTIONS_SHOWN = 100


class SandboxError(Exception):
    """The sandbox could not do what the page asked; the message says why, for the page."""


@dataclass(frozen=True)
class Control:
    """A button: POST /sandbox/{section}/{action}[/{target}]. With `field` and no target,
    a text input so named comes with it and its value is the target (an id to type)."""

    label: str
    action: str
    target: str | None = None
    field: str | None = None


@dataclass(frozen=True)
class Row:
    cells: tuple[str, ...]
    controls: tuple[Control, ...] = ()
    # The object the row shows (the page's `data-id`, so a row can be found).
    key: str | None = None


@dataclass(frozen=True)
class Table:
    name: str
    caption: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    empty: str = "Nothing yet."


@dataclass(frozen=True)
class SectionView:
    title: str
    summary: str
    tables: tuple[Table, ...] = ()
    # Set when the sandbox could not be read (down, restarting, an older server).
    problems: tuple[str, ...] = ()
    # Controls that act on no listed row (shown under the summary).
    controls: tuple[Control, ...] = ()


def is_loopback(url: str | None) -> bool:
    """True when `url` names this machine (localhost, 127.0.0.0/8, ::1)."""
    if not url:
        return False
    host = urlsplit(url).hostname
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sandboxed(settings: Settings, api_base: str | None) -> bool:
    """A provider at `api_base` is sandboxed: development, and the base is loopback."""
    return settings.relay_env == "development" and is_loopback(api_base)


def shown_time(epoch: object) -> str:
    if not isinstance(epoch, int | float):
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _message(response: httpx.Response) -> str:
    """The error a sandbox answered with, in Stripe's or PayPal's shape, or its status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("message"):
            return str(body["message"])
    return f"HTTP {response.status_code}"


class Section(ABC):
    """One provider's part of the page, built per request over one HTTP client.

    `key` is the provider's segment in the control URLs; `actions` maps each control's
    action name to what it does (the page refuses any other with 404).
    """

    key: ClassVar[str]
    title: ClassVar[str]
    actions: ClassVar[Mapping[str, str]]

    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http

    @classmethod
    @abstractmethod
    def applies(cls, settings: Settings) -> bool:
        """Whether this provider is sandboxed under `settings`."""

    @abstractmethod
    async def view(self) -> SectionView:
        """What the sandbox holds and sent; never raises for a sandbox that is down."""

    @abstractmethod
    async def act(self, action: str, target: str | None) -> str:
        """Run a control; what happened, for the page. Raises SandboxError."""

    async def call(
        self, method: str, url: str, *, headers: Mapping[str, str], **options: Any
    ) -> Any:
        """One request to the sandbox; its JSON, or SandboxError naming what failed."""
        try:
            response = await self.http.request(method, url, headers=dict(headers), **options)
        except httpx.HTTPError as exc:
            raise SandboxError(
                f"the {self.title} sandbox did not answer ({type(exc).__name__})"
            ) from exc
        if response.status_code >= 400:
            raise SandboxError(f"the {self.title} sandbox refused: {_message(response)}")
        try:
            return response.json() if response.content else {}
        except ValueError as exc:
            raise SandboxError(f"the {self.title} sandbox answered something not JSON") from exc


def _segment(value: str) -> str:
    return quote(value, safe="")


class StripeSection(Section):
    """The Stripe sandbox (STRIPE_API_BASE on loopback): its subscriptions with renewal
    and trial controls, and the events it sent to Relay's /webhooks/stripe."""

    key = "stripe"
    title = "Stripe"
    actions: ClassVar[Mapping[str, str]] = {
        "renew-paid": "Renew: paid",
        "renew-failed": "Renew: payment fails",
        "trial-will-end": "Trial will end",
    }
    # What the sandbox renews (as Stripe does); it refuses the rest.
    _RENEWABLE = frozenset({"active", "past_due", "unpaid", "trialing"})

    @classmethod
    def applies(cls, settings: Settings) -> bool:
        return sandboxed(settings, settings.stripe_api_base)

    @property
    def base(self) -> str:
        return (self.settings.stripe_api_base or "").rstrip("/")

    @property
    def headers(self) -> dict[str, str]:
        key = self.settings.stripe_secret_key
        return {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}

    async def view(self) -> SectionView:
        problems: list[str] = []
        tables: list[Table] = []
        try:
            listed = await self.call(
                "GET",
                f"{self.base}/v1/subscriptions",
                headers=self.headers,
                params={"limit": SUBSCRIPTIONS_SHOWN},
            )
            tables.append(self._subscriptions(listed.get("data") or []))
        except SandboxError as exc:
            problems.append(f"Subscriptions: {exc}")
        try:
            events = await self.call(
                "GET",
                f"{self.base}/_sandbox/events",
                headers=self.headers,
                params={"limit": EVENTS_SHOWN},
            )
            tables.append(self._events(events.get("data") or []))
        except SandboxError as exc:
            problems.append(f"Events sent: {exc}")
        return SectionView(
            title=self.title,
            summary=f"Local Stripe at {self.base}. Relay's worker and API use it as Stripe; "
            "it sends its events, signed, to Relay's POST /webhooks/stripe.",
            tables=tuple(tables),
            problems=tuple(problems),
        )

    def _subscriptions(self, items: list[dict[str, Any]]) -> Table:
        rows = []
        for item in items:
            sid = str(item.get("id", ""))
            status = str(item.get("status", ""))
            controls: list[Control] = []
            if status in self._RENEWABLE:
                controls += [
                    Control(self.actions["renew-paid"], "renew-paid", sid),
                    Control(self.actions["renew-failed"], "renew-failed", sid),
                ]
            if status == "trialing":
                controls.append(Control(self.actions["trial-will-end"], "trial-will-end", sid))
            metadata = item.get("metadata") or {}
            period_end = item.get("current_period_end")
            if period_end is None:  # newer API versions keep it on the items
                first = ((item.get("items") or {}).get("data") or [{}])[0]
                period_end = first.get("current_period_end")
            rows.append(
                Row(
                    cells=(
                        sid,
                        str(item.get("customer") or ""),
                        str(metadata.get("relaySubscriptionId") or ""),
                        status,
                        shown_time(period_end),
                    ),
                    controls=tuple(controls),
                    key=sid,
                )
            )
        return Table(
            name="subscriptions",
            caption="Subscriptions",
            columns=("Subscription", "Customer", "Relay subscription", "Status", "Period ends"),
            rows=tuple(rows),
            empty="No subscriptions yet: create one with POST /v1/subscriptions.",
        )

    @staticmethod
    def _events(items: list[dict[str, Any]]) -> Table:
        rows = []
        for event in items:
            obj = (event.get("data") or {}).get("object") or {}
            # Which subscription an invoice's or a subscription's event concerns.
            subscription = (
                obj.get("id") if obj.get("object") == "subscription" else obj.get("subscription")
            )
            rows.append(
                Row(
                    cells=(
                        str(event.get("type", "")),
                        str(obj.get("id", "")),
                        subscription if isinstance(subscription, str) else "",
                        shown_time(event.get("created")),
                        str(event.get("id", "")),
                    ),
                    key=str(event.get("id", "")),
                )
            )
        return Table(
            name="events",
            caption="Events sent to Relay (newest first)",
            columns=("Type", "Object", "Subscription", "Time", "Event"),
            rows=tuple(rows),
            empty="No events sent yet.",
        )

    async def act(self, action: str, target: str | None) -> str:
        if target is None:
            raise SandboxError("this control needs a subscription")
        url = f"{self.base}/_sandbox/subscriptions/{_segment(target)}"
        if action == "trial-will-end":
            await self.call("POST", f"{url}/trial_will_end", headers=self.headers)
            return f"{target}: customer.subscription.trial_will_end sent"
        outcome = "paid" if action == "renew-paid" else "failed"
        result = await self.call(
            "POST", f"{url}/renew", headers=self.headers, json={"outcome": outcome}
        )
        status = result.get("status") if isinstance(result, dict) else None
        what = "paid" if outcome == "paid" else "payment failed"
        now = f"; the subscription is {status}" if isinstance(status, str) else ""
        return f"{target} renewed, {what}{now}"


class PayPalSection(Section):
    """The PayPal sandbox (PAYPAL_API_BASE on loopback): the webhook events it sent with
    their delivery outcomes, a form that approves an order as its buyer would, and a deny
    button for each completed capture (PayPal's later review)."""

    key = "paypal"
    title = "PayPal"
    actions: ClassVar[Mapping[str, str]] = {
        "approve": "Approve order",
        "deny-capture": "Deny capture",
    }
    # Captures that can no longer be denied.
    _SETTLED = frozenset({"PAYMENT.CAPTURE.DENIED", "PAYMENT.CAPTURE.REFUNDED"})

    @classmethod
    def applies(cls, settings: Settings) -> bool:
        return sandboxed(settings, settings.paypal_api_base)

    @property
    def base(self) -> str:
        return (self.settings.paypal_api_base or "").rstrip("/")

    async def view(self) -> SectionView:
        problems: list[str] = []
        tables: list[Table] = []
        try:
            listed = await self.call("GET", f"{self.base}/_sandbox/events", headers={})
            tables.append(self._events(listed.get("data") or []))
        except SandboxError as exc:
            problems.append(f"Events sent: {exc}")
        return SectionView(
            title=self.title,
            summary=f"Local PayPal at {self.base}. Relay's payments use it as PayPal; it sends "
            "its webhook events, signed, to Relay's POST /webhooks/paypal. An order waits for "
            "its buyer: approve it here with its id (or open its approval link).",
            tables=tuple(tables),
            problems=tuple(problems),
            controls=(Control(self.actions["approve"], "approve", field="Order id"),),
        )

    def _events(self, items: list[dict[str, Any]]) -> Table:
        settled = {
            str(((item.get("event") or {}).get("resource") or {}).get("id"))
            for item in items
            if item.get("eventType") in self._SETTLED
        }
        rows = []
        for item in items:
            resource = (item.get("event") or {}).get("resource") or {}
            rid = str(resource.get("id", ""))
            controls: tuple[Control, ...] = ()
            if item.get("eventType") == "PAYMENT.CAPTURE.COMPLETED" and rid not in settled:
                controls = (Control(self.actions["deny-capture"], "deny-capture", rid),)
            rows.append(
                Row(
                    cells=(
                        str(item.get("eventType", "")),
                        rid,
                        str(item.get("createTime", "")),
                        _deliveries(item.get("deliveries") or []),
                        str(item.get("id", "")),
                    ),
                    controls=controls,
                    key=str(item.get("id", "")),
                )
            )
        return Table(
            name="events",
            caption="Events sent to Relay (newest first)",
            columns=("Type", "Resource", "Time", "Delivery", "Event"),
            rows=tuple(rows),
            empty="No events sent yet.",
        )

    async def act(self, action: str, target: str | None) -> str:
        if target is None:
            raise SandboxError("this control needs an id")
        if action == "approve":
            order = await self.call(
                "POST", f"{self.base}/_sandbox/orders/{_segment(target)}/approve", headers={}
            )
            return f"order {target} approved by the buyer; it is {order.get('status', '?')}"
        await self.call(
            "POST", f"{self.base}/_sandbox/captures/{_segment(target)}/deny", headers={}
        )
        return f"capture {target} denied; PAYMENT.CAPTURE.DENIED sent"


def _deliveries(deliveries: list[dict[str, Any]]) -> str:
    """`delivered (200)`, `failed: …`, `pending` per webhook target; none when none is set."""
    shown = []
    for delivery in deliveries:
        status = str(delivery.get("status", ""))
        if delivery.get("responseStatus") is not None:
            status += f" ({delivery['responseStatus']})"
        if delivery.get("error"):
            status += f": {delivery['error']}"
        shown.append(status)
    return "; ".join(shown) or "no webhook registered"


# --- notifications: SendGrid, Twilio, SMTP capture, FCM -------------------------------------

MESSAGES_SHOWN = 50
# How much of a captured text the page's flash shows (the page caps a flash at 500).
TEXT_SHOWN = 400
_HTML_TAGS = re.compile(r"<[^>]*>")


def _clip(value: object, limit: int = 80) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text_of(message: dict[str, Any], title: str) -> str:
    """A captured email's text for the page's flash: the text part, else the HTML's text."""
    text = message.get("text")
    if not text and message.get("html"):
        text = _HTML_TAGS.sub(" ", str(message["html"]))
    if not text and message.get("templateId"):
        text = f"template {message['templateId']} with {message.get('templateData') or {}}"
    subject = message.get("subject") or "(no subject)"
    return _clip(f"{title} {subject}: {text or '(no text)'}", TEXT_SHOWN)


class _MessagesSection(Section, ABC):
    """A sandbox that captures messages at `{base}/_sandbox/messages` (newest first)."""

    @property
    @abstractmethod
    def base(self) -> str:
        """The sandbox's base URL."""

    async def _messages(self, limit: int = MESSAGES_SHOWN) -> list[dict[str, Any]]:
        listed = await self.call(
            "GET", f"{self.base}/_sandbox/messages", headers={}, params={"limit": limit}
        )
        data = listed.get("data") if isinstance(listed, dict) else None
        return [item for item in data or [] if isinstance(item, dict)]

    async def _message(self, key: str, target: str | None) -> dict[str, Any]:
        if target is None:
            raise SandboxError("this control needs a message")
        for message in await self._messages(MAX_MESSAGES_LISTED):
            if str(message.get(key)) == target:
                return message
        raise SandboxError(f"the {self.title} sandbox holds no message {target}")


# The most a control looks through to find its message.
MAX_MESSAGES_LISTED = 1000


class SendGridSection(_MessagesSection):
    """The SendGrid sandbox (SENDGRID_API_BASE on loopback): every captured email with each
    recipient's status from the events it sent to Relay's /webhooks/sendgrid/events; a
    preview address where the sandbox serves the HTML under a CSP that runs nothing, and a
    control that shows the text."""

    key = "sendgrid"
    title = "SendGrid"
    actions: ClassVar[Mapping[str, str]] = {"show-text": "Show text"}

    @classmethod
    def applies(cls, settings: Settings) -> bool:
        return sandboxed(settings, settings.sendgrid_api_base)

    @property
    def base(self) -> str:
        return (self.settings.sendgrid_api_base or "").rstrip("/")

    async def view(self) -> SectionView:
        problems: list[str] = []
        tables: list[Table] = []
        try:
            tables.append(self._table(await self._messages()))
        except SandboxError as exc:
            problems.append(f"Emails: {exc}")
        return SectionView(
            title=self.title,
            summary=f"Local SendGrid at {self.base}. Relay's email goes to it as to SendGrid; "
            "it sends its Event Webhook, signed, to Relay's POST /webhooks/sendgrid/events. "
            "Recipients bounce@…, drop@… and spam@… bounce, are dropped, and report spam.",
            tables=tuple(tables),
            problems=tuple(problems),
        )

    def _table(self, items: list[dict[str, Any]]) -> Table:
        rows = []
        for item in items:
            mid = str(item.get("id", ""))
            subject = item.get("subject") or (
                f"template {item['templateId']}" if item.get("templateId") else ""
            )
            preview = (
                f"{self.base}/_sandbox/messages/{_segment(mid)}/html" if item.get("html") else ""
            )
            rows.append(
                Row(
                    cells=(
                        ", ".join(str(t) for t in item.get("to") or []),
                        _clip(subject),
                        str(item.get("status", "")),
                        shown_time(item.get("created")),
                        preview,
                        mid,
                    ),
                    controls=(Control(self.actions["show-text"], "show-text", mid),),
                    key=mid,
                )
            )
        return Table(
            name="messages",
            caption="Emails sent (newest first)",
            columns=("To", "Subject", "Status", "Time", "HTML preview", "Message"),
            rows=tuple(rows),
            empty="No email sent yet.",
        )

    async def act(self, action: str, target: str | None) -> str:
        return _text_of(await self._message("id", target), "Email")


class TwilioSection(_MessagesSection):
    """The Twilio sandbox (TWILIO_API_BASE on loopback): every SMS and WhatsApp message with
    its status from the callbacks it sent to Relay's /webhooks/twilio/status, and a control
    that has a message's recipient reply STOP (posted, signed, to Relay's incoming URL)."""

    key = "twilio"
    title = "Twilio"
    actions: ClassVar[Mapping[str, str]] = {"reply-stop": "Recipient replies STOP"}

    @classmethod
    def applies(cls, settings: Settings) -> bool:
        return sandboxed(settings, settings.twilio_api_base)

    @property
    def base(self) -> str:
        return (self.settings.twilio_api_base or "").rstrip("/")

    async def view(self) -> SectionView:
        problems: list[str] = []
        tables: list[Table] = []
        try:
            tables.append(self._table(await self._messages()))
        except SandboxError as exc:
            problems.append(f"Messages: {exc}")
        return SectionView(
            title=self.title,
            summary=f"Local Twilio at {self.base}. Relay's SMS and WhatsApp go to it as to "
            "Twilio; it sends signed status callbacks to each message's StatusCallback. "
            "Twilio's test numbers refuse as Twilio does (+15005550001 invalid, +15005550009 "
            "cannot receive SMS, …); +15005550010 ends undelivered, +15005550011 failed.",
            tables=tuple(tables),
            problems=tuple(problems),
        )

    def _table(self, items: list[dict[str, Any]]) -> Table:
        rows = []
        for item in items:
            sid = str(item.get("sid", ""))
            outbound = item.get("direction") != "inbound"
            body = item.get("body") or ""
            if not body and item.get("contentSid"):
                body = f"template {item['contentSid']} {item.get('contentVariables') or {}}"
            if item.get("mediaUrls"):
                body = f"{body} [{len(item['mediaUrls'])} media]".strip()
            callbacks = [str(c.get("delivery", "")) for c in item.get("callbacks") or []]
            rows.append(
                Row(
                    cells=(
                        str(item.get("channel", "")) + ("" if outbound else " (in)"),
                        str(item.get("to", "")),
                        str(item.get("from", "")),
                        _clip(body),
                        str(item.get("status", ""))
                        + (f" ({item['errorCode']})" if item.get("errorCode") else ""),
                        ", ".join(dict.fromkeys(callbacks)) or "none",
                        shown_time(item.get("created")),
                        sid,
                    ),
                    controls=(
                        (Control(self.actions["reply-stop"], "reply-stop", sid),)
                        if outbound
                        else ()
                    ),
                    key=sid,
                )
            )
        return Table(
            name="messages",
            caption="SMS and WhatsApp messages (newest first)",
            columns=("Channel", "To", "From", "Body", "Status", "Callbacks", "Time", "Message"),
            rows=tuple(rows),
            empty="No message sent yet.",
        )

    async def act(self, action: str, target: str | None) -> str:
        message = await self._message("sid", target)
        sender = str(message.get("to", ""))
        await self.call(
            "POST",
            f"{self.base}/_sandbox/inbound",
            headers={},
            json={"from": sender, "body": "STOP", "to": str(message.get("from", ""))},
        )
        return f"{sender} replied STOP; the sandbox refuses further messages to it (21610)"


class SmtpSection(_MessagesSection):
    """The SMTP sandbox (SMTP_SANDBOX_URL on loopback): every mail it captured, a preview
    address where it serves the HTML under a CSP that runs nothing, and the text."""

    key = "smtp"
    title = "SMTP"
    actions: ClassVar[Mapping[str, str]] = {"show-text": "Show text"}

    @classmethod
    def applies(cls, settings: Settings) -> bool:
        # SMTP_SANDBOX_URL is set by `relay dev` with the SMTP sandbox (relay/sandbox/smtp.py).
        return sandboxed(settings, settings.smtp_sandbox_url)

    @property
    def base(self) -> str:
        return str(self.settings.smtp_sandbox_url or "").rstrip("/")

    async def view(self) -> SectionView:
        problems: list[str] = []
        tables: list[Table] = []
        try:
            tables.append(self._table(await self._messages()))
        except SandboxError as exc:
            problems.append(f"Mail: {exc}")
        host = f"{self.settings.smtp_host}:{self.settings.smtp_port}"
        return SectionView(
            title=self.title,
            summary=f"A capturing SMTP server at {host}: Relay's SMTP email lands here and "
            "goes no further. Recipient reject@… is refused at RCPT TO (550).",
            tables=tuple(tables),
            problems=tuple(problems),
        )

    def _table(self, items: list[dict[str, Any]]) -> Table:
        rows = []
        for item in items:
            mid = str(item.get("id", ""))
            preview = (
                f"{self.base}/_sandbox/messages/{_segment(mid)}/html" if item.get("html") else ""
            )
            rows.append(
                Row(
                    cells=(
                        ", ".join(str(r) for r in item.get("rcptTos") or []),
                        _clip(item.get("subject")),
                        str(item.get("from", "")),
                        shown_time(item.get("received")),
                        preview,
                        mid,
                    ),
                    controls=(Control(self.actions["show-text"], "show-text", mid),),
                    key=mid,
                )
            )
        return Table(
            name="messages",
            caption="Mail captured (newest first)",
            columns=("Recipients", "Subject", "From", "Received", "HTML preview", "Message"),
            rows=tuple(rows),
            empty="No mail captured yet.",
        )

    async def act(self, action: str, target: str | None) -> str:
        return _text_of(await self._message("id", target), "Mail")


class FcmSection(_MessagesSection):
    """The FCM sandbox (FCM_API_BASE on loopback): every push message with its outcome
    (tokens starting `bad-` are UNREGISTERED, as FCM answers for an uninstalled app)."""

    key = "fcm"
    title = "FCM"
    actions: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def applies(cls, settings: Settings) -> bool:
        return sandboxed(settings, settings.fcm_api_base)

    @property
    def base(self) -> str:
        return (self.settings.fcm_api_base or "").rstrip("/")

    async def view(self) -> SectionView:
        problems: list[str] = []
        tables: list[Table] = []
        try:
            tables.append(self._table(await self._messages()))
        except SandboxError as exc:
            problems.append(f"Push messages: {exc}")
        return SectionView(
            title=self.title,
            summary=f"Local FCM at {self.base}. Relay's push goes to it as to FCM's HTTP v1 "
            "API. Tokens starting bad- answer UNREGISTERED, mismatch- SENDER_ID_MISMATCH, "
            "invalid- INVALID_ARGUMENT.",
            tables=tuple(tables),
            problems=tuple(problems),
        )

    @staticmethod
    def _table(items: list[dict[str, Any]]) -> Table:
        rows = []
        for item in items:
            target = item.get("token") or item.get("topic") or item.get("condition") or ""
            status = str(item.get("status", ""))
            if item.get("errorCode"):
                status += f" ({item['errorCode']})"
            rows.append(
                Row(
                    cells=(
                        _clip(target, 40),
                        _clip(item.get("title")),
                        _clip(item.get("body")),
                        status,
                        shown_time(item.get("created")),
                        str(item.get("id", "")),
                    ),
                    key=str(item.get("id", "")),
                )
            )
        return Table(
            name="messages",
            caption="Push messages (newest first)",
            columns=("Device or topic", "Title", "Body", "Status", "Time", "Message"),
            rows=tuple(rows),
            empty="No push message sent yet.",
        )

    async def act(self, action: str, target: str | None) -> str:
        raise SandboxError("the FCM sandbox has no controls")


class S3Section(Section):
    """The S3 sandbox (S3_ENDPOINT_URL on loopback): the bucket's objects under each of
    Relay's prefixes (uploads waiting in temp/, avatars, attachments, thumbnails), newest
    first. Read with the same boto3 client the activities use; no controls (an upload is
    made with POST /v1/files and its presigned form)."""

    key = "s3"
    title = "S3"
    actions: ClassVar[Mapping[str, str]] = {}
    # relay/files/layout.py's prefixes, in the order an object passes through them.
    PREFIXES: ClassVar[tuple[str, ...]] = ("temp/", "avatars/", "attachments/", "thumbnails/")
    # One ListObjectsV2 page per prefix bounds what the page reads; the newest of those shown.
    LISTED_PER_PREFIX = 1000

    @classmethod
    def applies(cls, settings: Settings) -> bool:
        return settings.s3_bucket is not None and sandboxed(settings, settings.s3_endpoint_url)

    async def view(self) -> SectionView:
        import asyncio

        bucket = self.settings.s3_bucket or ""
        problems: list[str] = []
        tables: list[Table] = []
        for prefix in self.PREFIXES:
            try:
                listed = await asyncio.to_thread(self._list, prefix)
            except SandboxError as exc:
                problems.append(f"{prefix}: {exc}")
                continue
            tables.append(self._objects(prefix, listed))
        return SectionView(
            title=self.title,
            summary=f"Local S3 (moto) at {self.settings.s3_endpoint_url}, bucket {bucket}. "
            "Relay's presigned uploads land in temp/; processing moves them to avatars/ or "
            "attachments/ and writes thumbnails/.",
            tables=tuple(tables),
            problems=tuple(problems),
        )

    def _list(self, prefix: str) -> tuple[list[dict[str, Any]], bool]:
        from botocore.exceptions import BotoCoreError, ClientError

        from relay.files.storage import s3_client

        try:
            answer = s3_client(self.settings).list_objects_v2(
                Bucket=self.settings.s3_bucket, Prefix=prefix, MaxKeys=self.LISTED_PER_PREFIX
            )
        except (BotoCoreError, ClientError) as exc:
            raise SandboxError(
                f"the {self.title} sandbox did not answer ({type(exc).__name__})"
            ) from exc
        return list(answer.get("Contents") or []), bool(answer.get("IsTruncated"))

    @staticmethod
    def _objects(prefix: str, listed: tuple[list[dict[str, Any]], bool]) -> Table:
        items, truncated = listed
        newest = sorted(
            items,
            key=lambda item: item.get("LastModified") or datetime.min.replace(tzinfo=UTC),
            reverse=True,
        )[:EVENTS_SHOWN]
        rows = []
        for item in newest:
            modified = item.get("LastModified")
            key = str(item.get("Key", ""))
            rows.append(
                Row(
                    cells=(
                        key,
                        str(item.get("Size", "")),
                        shown_time(modified.timestamp()) if isinstance(modified, datetime) else "",
                    ),
                    key=key,
                )
            )
        more = len(items) - len(newest)
        caption = f"{prefix} (newest first"
        if more > 0:
            caption += f"; {more}{'+' if truncated else ''} older not shown"
        return Table(
            name=prefix.rstrip("/"),
            caption=caption + ")",
            columns=("Key", "Bytes", "Modified"),
            rows=tuple(rows),
            empty=f"Nothing under {prefix} yet.",
        )

    async def act(self, action: str, target: str | None) -> str:
        raise SandboxError("the S3 sandbox has no controls")


# --- calendar: Google Calendar, Zoom ---------------------------------------------------------


def _without_query(url: object) -> str:
    """A URL as the page shows it: a Zoom join link's `pwd=` is the meeting's passcode."""
    text = str(url or "")
    return text.split("?", 1)[0]


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class GoogleCalendarSection(Section):
    """The Google Calendar sandbox (GOOGLE_API_BASE on loopback): every event of every
    calendar, newest first, with the updates `sendUpdates` would have e-mailed attendees.
    No controls: events are made through /v1/calendar/events and /v1/meetings."""

    key = "google-calendar"
    title = "Google Calendar"
    actions: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def applies(cls, settings: Settings) -> bool:
        return sandboxed(settings, settings.google_api_base)

    @property
    def base(self) -> str:
        """Where the controls hang off: GOOGLE_API_BASE is the API's /calendar/v3/ path."""
        return _origin_of(self.settings.google_api_base or "")

    async def view(self) -> SectionView:
        problems: list[str] = []
        tables: list[Table] = []
        try:
            listed = await self.call("GET", f"{self.base}/_sandbox/events", headers={})
            items = [item for item in listed.get("data") or [] if isinstance(item, dict)]
            tables.append(self._events(list(reversed(items))[:MESSAGES_SHOWN]))
        except SandboxError as exc:
            problems.append(f"Events: {exc}")
        return SectionView(
            title=self.title,
            summary=f"Local Google Calendar at {self.settings.google_api_base}. Relay's "
            "calendar code calls it as Google (google-api-python-client) with the tokens of "
            "Google connections made through the local OAuth server; attendees get no e-mail, "
            "the updates Google would have sent are listed instead.",
            tables=tuple(tables),
            problems=tuple(problems),
        )

    @staticmethod
    def _events(items: list[dict[str, Any]]) -> Table:
        rows = []
        for item in items:
            event = item.get("event") or {}
            start = event.get("start") or {}
            updates = [
                f"{u.get('action', '')} → {', '.join(str(r) for r in u.get('recipients') or [])}"
                for u in item.get("updates") or []
                if isinstance(u, dict)
            ]
            eid = str(event.get("id", ""))
            rows.append(
                Row(
                    cells=(
                        str(item.get("calendarId", "")),
                        _clip(event.get("summary")),
                        str(start.get("dateTime") or start.get("date") or ""),
                        str(event.get("status", "")),
                        ", ".join(
                            str(a.get("email", ""))
                            for a in event.get("attendees") or []
                            if isinstance(a, dict)
                        ),
                        "; ".join(updates) or "none",
                        eid,
                    ),
                    key=eid,
                )
            )
        return Table(
            name="events",
            caption="Events (newest first)",
            columns=(
                "Calendar",
                "Summary",
                "Start",
                "Status",
                "Attendees",
                "Updates sent",
                "Event",
            ),
            rows=tuple(rows),
            empty="No event yet: create one with POST /v1/calendar/events or /v1/meetings.",
        )

    async def act(self, action: str, target: str | None) -> str:
        raise SandboxError("the Google Calendar sandbox has no controls")


class ZoomSection(Section):
    """The Zoom sandbox (ZOOM_API_BASE on loopback): its meetings with the webhooks each was
    sent, buttons that fire Zoom's signed meeting.started / meeting.ended /
    recording.completed to Relay's /webhooks/zoom, and Zoom's URL-validation check."""

    key = "zoom"
    title = "Zoom"
    # Action → the Zoom event it fires (the button's label).
    EVENTS: ClassVar[Mapping[str, str]] = {
        "meeting-started": "meeting.started",
        "meeting-ended": "meeting.ended",
        "recording-completed": "recording.completed",
    }
    actions: ClassVar[Mapping[str, str]] = {**EVENTS, "validate": "Check URL validation"}

    @classmethod
    def applies(cls, settings: Settings) -> bool:
        return sandboxed(settings, settings.zoom_api_base)

    @property
    def base(self) -> str:
        return self.settings.zoom_api_base.rstrip("/")

    async def view(self) -> SectionView:
        problems: list[str] = []
        tables: list[Table] = []
        webhook_url = None
        try:
            webhook_url = (
                await self.call("GET", f"{self.base}/_sandbox/webhooks", headers={})
            ).get("url")
            listed = await self.call("GET", f"{self.base}/_sandbox/meetings", headers={})
            items = [item for item in listed.get("data") or [] if isinstance(item, dict)]
            tables.append(self._meetings(items[:MESSAGES_SHOWN]))
        except SandboxError as exc:
            problems.append(f"Meetings: {exc}")
        where = f"to {webhook_url}" if webhook_url else "nowhere yet (no webhook URL set)"
        return SectionView(
            title=self.title,
            summary=f"Local Zoom at {self.base}. Relay's meetings are booked on it as on Zoom "
            f"(server-to-server OAuth); its buttons send Zoom's signed webhooks {where}. "
            "Check URL validation sends Zoom's endpoint.url_validation challenge and checks "
            "Relay's answer.",
            tables=tuple(tables),
            problems=tuple(problems),
            controls=(Control(self.actions["validate"], "validate"),),
        )

    def _meetings(self, items: list[dict[str, Any]]) -> Table:
        rows = []
        for item in items:
            mid = str(item.get("id", ""))
            sent = [
                f"{w.get('event', '')}: {w.get('delivery', '')}"
                + (f" ({w['responseStatus']})" if w.get("responseStatus") is not None else "")
                for w in item.get("webhooks") or []
                if isinstance(w, dict)
            ]
            rows.append(
                Row(
                    cells=(
                        mid,
                        _clip(item.get("topic")),
                        str(item.get("startTime") or ""),
                        str(item.get("status", "")),
                        "yes" if item.get("hasRecording") else "no",
                        _without_query(item.get("joinUrl")),
                        "; ".join(sent) or "none",
                    ),
                    controls=tuple(
                        Control(label, action, mid) for action, label in self.EVENTS.items()
                    ),
                    key=mid,
                )
            )
        return Table(
            name="meetings",
            caption="Meetings (newest first)",
            columns=("Meeting", "Topic", "Start", "Status", "Recording", "Join URL", "Webhooks"),
            rows=tuple(rows),
            empty="No meeting yet: book one with POST /v1/meetings.",
        )

    async def act(self, action: str, target: str | None) -> str:
        if action == "validate":
            result = await self.call("POST", f"{self.base}/_sandbox/validate", headers={}, json={})
            if result.get("passed") is True:
                return "URL validation passed: Relay answered Zoom's challenge correctly"
            raise SandboxError(f"URL validation failed: {result.get('reason') or 'no reason'}")
        if target is None:
            raise SandboxError("this control needs a meeting")
        event = self.EVENTS[action]
        sent = await self.call(
            "POST",
            f"{self.base}/_sandbox/meetings/{_segment(target)}/events",
            headers={},
            json={"event": event},
        )
        url = sent.get("url") if isinstance(sent, dict) else None
        if not url:
            raise SandboxError(f"{event} not sent: the Zoom sandbox has no webhook URL")
        return f"{event} sent for meeting {target} to {url}"


# --- publishing: X, LinkedIn, Facebook, Instagram, YouTube, TikTok ----------------------------


class PublishingSection(Section):
    """The publishing platforms sandbox (a `<PROVIDER>_API_BASE` on loopback): every post the
    platforms received, newest first, with its status (processing while YouTube or TikTok
    process its video) and whether it was deleted; the media being processed; and controls
    that end a processing now (succeeded or failed), fail a platform's next media, or make
    its next API call answer 429 or 500. Posts carry no token; the page shows none."""

    key = "publishing"
    title = "Publishing"
    actions: ClassVar[Mapping[str, str]] = {
        "finish": "Finish processing",
        "fail": "Fail processing",
        "fail-next-media": "Fail next media",
        "next-429": "Next call: 429",
        "next-500": "Next call: 500",
    }
    # Action → the status the platform's next API call answers.
    _FAULTS: ClassVar[Mapping[str, int]] = {"next-429": 429, "next-500": 500}
    _UNFINISHED = frozenset({"uploading", "processing"})

    @staticmethod
    def _bases(settings: Settings) -> dict[str, str]:
        """The loopback `<PROVIDER>_API_BASE` of each sandboxed platform."""
        found = {p: configured_base(settings, p) for p in PLATFORMS}
        return {p: base for p, base in found.items() if base and sandboxed(settings, base)}

    @classmethod
    def applies(cls, settings: Settings) -> bool:
        return bool(cls._bases(settings))

    @property
    def platforms(self) -> dict[str, str]:
        return self._bases(self.settings)

    @property
    def base(self) -> str:
        """Where the controls hang off: one server plays every sandboxed platform."""
        return _origin_of(next(iter(self.platforms.values()), ""))

    async def view(self) -> SectionView:
        problems: list[str] = []
        tables: list[Table] = []
        try:
            listed = await self.call("GET", f"{self.base}/_sandbox/posts", headers={})
            tables += [
                self._platforms(listed),
                self._posts(listed.get("data") or {}),
                self._processing(listed.get("processing") or []),
            ]
        except SandboxError as exc:
            problems.append(f"Posts: {exc}")
        names = ", ".join(PLATFORM_NAMES[p] for p in self.platforms)
        return SectionView(
            title=self.title,
            summary=f"Local {names} at {self.base}. Relay's publishing code posts to it as to "
            "the platforms, with the tokens of connections made through the local OAuth "
            "server; YouTube and TikTok (and X video, Instagram containers) process media "
            "for a few seconds before a post is done.",
            tables=tuple(tables),
            problems=tuple(problems),
        )

    def _platforms(self, listed: dict[str, Any]) -> Table:
        requests = listed.get("requests") or {}
        publishes = listed.get("publishes") or {}
        rows = [
            Row(
                cells=(
                    PLATFORM_NAMES[p],
                    str(requests.get(p, 0)),
                    str(publishes.get(p, 0)),
                ),
                controls=tuple(
                    Control(self.actions[action], action, p)
                    for action in ("next-429", "next-500", "fail-next-media")
                ),
                key=p,
            )
            for p in self.platforms
        ]
        return Table(
            name="platforms",
            caption="Platforms",
            columns=("Platform", "API requests", "Publishes"),
            rows=tuple(rows),
        )

    def _posts(self, data: dict[str, Any]) -> Table:
        items = [
            item
            for provider in PLATFORMS
            for item in data.get(provider) or []
            if isinstance(item, dict)
        ]
        items.sort(key=lambda item: str(item.get("createdAt", "")), reverse=True)
        rows = []
        for item in items[:MESSAGES_SHOWN]:
            provider = str(item.get("provider", ""))
            pid = str(item.get("id", ""))
            status = str(item.get("status", ""))
            controls: tuple[Control, ...] = ()
            if status == "processing" and not item.get("deleted"):
                target = f"{provider}:{pid}"
                controls = (
                    Control(self.actions["finish"], "finish", target),
                    Control(self.actions["fail"], "fail", target),
                )
            rows.append(
                Row(
                    cells=(
                        PLATFORM_NAMES.get(provider, provider),
                        pid,
                        _clip(item.get("text")),
                        status,
                        "yes" if item.get("deleted") else "no",
                        str(item.get("createdAt", "")),
                        str(item.get("url", "")),
                    ),
                    controls=controls,
                    key=pid,
                )
            )
        return Table(
            name="posts",
            caption="Posts received (newest first)",
            columns=("Platform", "Post", "Text", "Status", "Deleted", "Time", "URL"),
            rows=tuple(rows),
            empty="No post yet: connect a platform through the local OAuth server and publish.",
        )

    def _processing(self, items: list[Any]) -> Table:
        rows = []
        for item in [i for i in items if isinstance(i, dict)][:MESSAGES_SHOWN]:
            provider = str(item.get("provider", ""))
            mid = str(item.get("id", ""))
            status = str(item.get("status", ""))
            controls: tuple[Control, ...] = ()
            # An id the page cannot carry (TikTok's publish_id has a "~") is ended by its post.
            if status == "processing" and TARGET.fullmatch(f"{provider}:{mid}"):
                controls = (
                    Control(self.actions["finish"], "finish", f"{provider}:{mid}"),
                    Control(self.actions["fail"], "fail", f"{provider}:{mid}"),
                )
            rows.append(
                Row(
                    cells=(
                        PLATFORM_NAMES.get(provider, provider),
                        mid,
                        str(item.get("kind", "")),
                        status,
                        str(item.get("published") or ""),
                    ),
                    controls=controls,
                    key=mid,
                )
            )
        return Table(
            name="processing",
            caption="Media processed (newest first)",
            columns=("Platform", "Media", "Kind", "Status", "Published as"),
            rows=tuple(rows),
            empty="No media processed yet.",
        )

    async def act(self, action: str, target: str | None) -> str:
        if target is None:
            raise SandboxError("this control needs a platform or a post")
        if action in ("finish", "fail"):
            provider, _, object_id = target.partition(":")
            if provider not in self.platforms or not object_id:
                raise SandboxError(f"{target} names no post of a sandboxed platform")
            outcome = "succeeded" if action == "finish" else "failed"
            await self.call(
                "POST",
                f"{self.base}/_sandbox/processing/finish",
                headers={},
                json={"provider": provider, "id": object_id, "outcome": outcome},
            )
            return f"{PLATFORM_NAMES[provider]} {object_id}: processing {outcome}"
        if target not in self.platforms:
            raise SandboxError(f"{target} is not a sandboxed platform")
        name = PLATFORM_NAMES[target]
        if action == "fail-next-media":
            await self.call(
                "POST",
                f"{self.base}/_sandbox/processing",
                headers={},
                json={"provider": target, "failNext": 1},
            )
            return f"{name}: the next media uploaded fails processing"
        status = self._FAULTS[action]
        await self.call(
            "POST",
            f"{self.base}/_sandbox/faults",
            headers={},
            json={"provider": target, "count": 1, "status": status, "retryAfter": 1},
        )
        return f"{name}: the next API call answers {status}"


# The page's sections, in its order. A new provider's sandbox adds its Section here.
SECTIONS: tuple[type[Section], ...] = (
    StripeSection,
    PayPalSection,
    SendGridSection,
    TwilioSection,
    SmtpSection,
    FcmSection,
    S3Section,
    GoogleCalendarSection,
    ZoomSection,
    PublishingSection,
)


def sections_for(settings: Settings) -> list[type[Section]]:
    """The sections of the providers sandboxed under `settings`."""
    return [section for section in SECTIONS if section.applies(settings)]


def section_named(settings: Settings, key: str) -> type[Section] | None:
    """The sandboxed section whose key is `key`, or None."""
    return next((s for s in sections_for(settings) if s.key == key), None)
