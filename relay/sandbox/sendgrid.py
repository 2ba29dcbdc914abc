"""The SendGrid sandbox: a small HTTP server speaking SendGrid's v3 mail send API and sending
its Event Webhook back, signed as SendGrid signs it, since no SendGrid can be reached from here.

`relay dev` can run it when SendGrid has no API key in development (SANDBOX=auto), and the
tests run it in a thread (`SendGridSandbox(port=0).run_in_thread()`). Relay's SendGrid code
is pointed at it by SENDGRID_API_BASE: `sendgrid.SendGridAPIClient(api_key, host=api_base)`
(the package appends `/v3/mail/send` itself), and it verifies the events with
`sendgrid.helpers.eventwebhook.EventWebhook(SENDGRID_WEBHOOK_PUBLIC_KEY)`.

Routes (SendGrid's documented path and shapes):

    POST /v3/mail/send     `Authorization: Bearer <api key>`; 202 with `X-Message-Id`

Validation follows SendGrid's: 1..1000 personalizations, each with 1..1000 `to` addresses
(1000 recipients in all); `from.email`; `subject` (top level or in every personalization)
unless `template_id`; `content` (non-empty values) unless `template_id`; every address
well-formed. Refusals are 400 with SendGrid's body, every problem found at once:
`{"errors": [{"message", "field", "help"}]}`; a missing or wrong key is 401 in that shape.
`mail_settings.sandbox_mode.enable` is honoured as SendGrid does: 200, nothing sent.

Each personalization is captured as one message (its recipients, content or template id and
data, custom args) with each recipient's status. Events follow, per recipient, after
`event_delay` seconds (tests use 0), each a JSON array POSTed to every registered URL:

    recipient (local part)      events
    bounce@…                    processed, then bounce (type bounce, status 5.1.1)
    drop@…                      dropped (reason "Bounced Address"; SendGrid never processes it)
    spam@…                      processed, delivered, then spamreport
    anyone else                 processed, then delivered

Every event has `email`, `timestamp`, `event`, `sg_event_id` (unique), `sg_message_id`
(`<X-Message-Id>.filter0001.<n>.0`: it starts with the X-Message-Id, as SendGrid's do) and
the personalization's `custom_args` and the request's `categories`, as SendGrid adds them.
The headers `X-Twilio-Email-Event-Webhook-Signature` and `-Timestamp` carry base64 (DER)
ECDSA P-256 / SHA-256 over the timestamp followed by the raw body. The key pair is made by
`SendGridSandbox` (kept in DATA_DIR by `relay dev`, so a restarted sandbox signs with the
same key) and read by the server from that file; its public key (base64 DER, the form
SendGrid's settings page shows) is SENDGRID_WEBHOOK_PUBLIC_KEY in `environment()` and at
`GET /_sandbox/key`. Events go out in order per target: a stage's array (all its
recipients' events of one request) is retried until accepted or given up (three attempts)
before the next stage is sent `event_delay` later; waiting holds no thread (`Scheduler`).

Controls for `/sandbox` and tests (not SendGrid's; camelCase like Relay's own API):

    GET  /_sandbox/messages?limit=          {data: captured messages, newest first}
    GET  /_sandbox/messages/{id}/html       the captured HTML, served under a CSP that
                                            allows no script, no fetch, no form (a sandbox)
    GET|POST /_sandbox/webhooks             list / add {url} Event Webhook targets
    GET  /_sandbox/key                      {publicKey}
    POST /_sandbox/faults                   {count}: the next `count` sends answer 503

The machinery the other sandboxes share lives here too: `AppServer` (uvicorn in a thread),
`Scheduler` and `Poster` (callbacks with retries, holding no thread while waiting).

Not modelled: scheduling (`send_at` is stored, the mail goes at once), attachments beyond
being stored by name, IP pools, ASM groups, open/click tracking events, SendGrid's 24-hour
event retries (three attempts here). State lives in memory. No key is logged.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import secrets
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.errors import ConfigError
from relay.sandbox.server import (
    DELIVERY_DELAYS,
    PREVIEW_POLICY,
    READY_SECONDS,
    AppServer,
    Delivery,
    Poster,
    free_port,
    port_open,
    wait_for_port,
)
from relay.settings import Settings

logger = logging.getLogger(__name__)

# The key the sandbox accepts unless told otherwise; it opens nothing but this local server.
SANDBOX_API_KEY = "SG.relay-sandbox.local-key"
SANDBOX_FROM = "relay@sandbox.local"
# In DATA_DIR: the Event Webhook signing key `relay dev`'s sandbox keeps across restarts.
KEY_FILE_NAME = "sendgrid-sandbox-events.pem"
EVENT_DELAY_SECONDS = 1.0
MESSAGES_LIMIT = 50
MAX_MESSAGES_LIMIT = 1000
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
# SendGrid's own address check is lenient; this refuses what it refuses in practice.
_EMAIL = re.compile(r"[^@\s<>(),;:\"]+@[^@\s<>(),;:\"]+\.[^@\s<>(),;:\"]+")
# The magic local parts and the outcome each produces (see the module docstring).
OUTCOMES = {"bounce": "bounce", "drop": "dropped", "spam": "spamreport"}
# The outcome events after which a message's status no longer changes.
FINAL_EVENTS = frozenset({"delivered", "bounce", "dropped", "spamreport"})


class SendGridError(Exception):
    """A refusal in SendGrid's shape: `{"errors": [{message, field, help}]}`."""

    def __init__(self, status: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["message"] if errors else str(status))
        self.status = status
        self.errors = errors

    def response(self) -> JSONResponse:
        return JSONResponse({"errors": self.errors}, self.status)


def _error(message: str, field_name: str | None, anchor: str | None = None) -> dict[str, Any]:
    return {
        "message": message,
        "field": field_name,
        "help": f"{_HELP}#{anchor}" if anchor else None,
    }


def outcome_for(email: str) -> str:
    """The final event the sandbox sends for `email` (the magic local parts)."""
    local = email.partition("@")[0].lower()
    return OUTCOMES.get(local, "delivered")


# --- validation ----------------------------------------------------------------------------


def _address(raw: object, path: str, errors: list[dict[str, Any]]) -> str | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("email"), str):
        errors.append(_error("The email parameter is required.", f"{path}.email", path))
        return None
    email = str(raw["email"])
    if not _EMAIL.fullmatch(email):
        errors.append(_error("Does not contain a valid address.", f"{path}.email", path))
        return None
    return email


def _addresses(raw: object, path: str, errors: list[dict[str, Any]]) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        errors.append(_error(f"The {path} field must be an array.", path, path))
        return []
    found = [_address(item, f"{path}.{n}", errors) for n, item in enumerate(raw)]
    return [email for email in found if email is not None]


def validate(body: object) -> list[dict[str, Any]]:
    """Every problem SendGrid would report for this mail send body (empty when none)."""
    if not isinstance(body, dict):
        return [_error("Bad Request", None)]
    errors: list[dict[str, Any]] = []
    template = body.get("template_id")
    has_template = isinstance(template, str) and bool(template)
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(
            _error(
                "The personalizations field is required and must have at least one "
                "personalization.",
                "personalizations",
                "message.personalizations",
            )
        )
        personalizations = []
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        errors.append(
            _error(
                f"The personalizations field must have no more than {MAX_PERSONALIZATIONS} "
                "personalizations.",
                "personalizations",
                "message.personalizations",
            )
        )
    recipients = 0
    every_has_subject = bool(personalizations)
    for n, item in enumerate(personalizations[:MAX_PERSONALIZATIONS]):
        path = f"personalizations.{n}"
        if not isinstance(item, dict):
            errors.append(_error("A personalization must be an object.", path, path))
            continue
        to = item.get("to")
        if not isinstance(to, list) or not to:
            errors.append(
                _error(
                    "The to array is required for all personalization objects, and must have "
                    "at least one email object with a valid email address.",
                    f"{path}.to",
                    "message.personalizations.to",
                )
            )
        for key in ("to", "cc", "bcc"):
            recipients += len(_addresses(item.get(key), f"{path}.{key}", errors))
        subject = item.get("subject")
        every_has_subject &= isinstance(subject, str) and bool(subject)
    if recipients > MAX_RECIPIENTS:
        errors.append(
            _error(
                f"The total number of recipients must be {MAX_RECIPIENTS} or fewer.",
                "personalizations",
                "message.personalizations",
            )
        )
    if not isinstance(body.get("from"), dict) or not body["from"].get("email"):
        errors.append(
            _error(
                "The from object must be provided for every email send. It is an object that "
                "requires the email parameter, but may also contain a name parameter.  e.g. "
                '{"email" : "example@example.com"}  or {"email" : "example@example.com", '
                '"name" : "Example Recipient"}.',
                "from.email",
                "message.from",
            )
        )
    else:
        _address(body["from"], "from", errors)
    if body.get("reply_to") is not None:
        _address(body["reply_to"], "reply_to", errors)
    subject = body.get("subject")
    if not has_template and not (isinstance(subject, str) and subject) and not every_has_subject:
        errors.append(
            _error(
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
                "message.subject",
            )
        )
    content = body.get("content")
    if content is None or content == []:
        if not has_template:
            errors.append(
                _error(
                    "Unless a valid template_id is provided, the content parameter is "
                    "required. There must be at least one defined content block. We typically "
                    "suggest both text/plain and text/html blocks are included, but only one "
                    "block is required.",
                    "content",
                    "message.content",
                )
            )
    elif not isinstance(content, list):
        errors.append(_error("The content field must be an array.", "content", "message.content"))
    else:
        for n, block in enumerate(content):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                errors.append(
                    _error(
                        "The content type parameter is required.",
                        f"content.{n}.type",
                        "message.content.type",
                    )
                )
            elif not (isinstance(block.get("value"), str) and block["value"]):
                errors.append(
                    _error(
                        "The content value must be a string at least one character in length.",
                        f"content.{n}.value",
                        "message.content.value",
                    )
                )
    return errors


# --- state ---------------------------------------------------------------------------------


@dataclass
class _Recipient:
    email: str
    sg_message_id: str
    status: str = "queued"


@dataclass
class _Message:
    id: str  # `<X-Message-Id>.<personalization index>`
    message_id: str
    created: float
    sender: str
    subject: str | None
    recipients: list[_Recipient]
    cc: list[str]
    bcc: list[str]
    reply_to: str | None
    text: str | None
    html: str | None
    template_id: str | None
    template_data: dict[str, Any]
    custom_args: dict[str, Any]
    categories: list[str]
    attachments: list[str]
    send_at: int | None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        statuses = list(dict.fromkeys(r.status for r in self.recipients))
        return ", ".join(statuses)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "messageId": self.message_id,
            "created": self.created,
            "from": self.sender,
            "to": [r.email for r in self.recipients],
            "cc": self.cc,
            "bcc": self.bcc,
            "replyTo": self.reply_to,
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "templateId": self.template_id,
            "templateData": self.template_data,
            "customArgs": self.custom_args,
            "categories": self.categories,
            "attachments": self.attachments,
            "sendAt": self.send_at,
            "status": self.status,
            "recipients": [
                {"email": r.email, "sgMessageId": r.sg_message_id, "status": r.status}
                for r in self.recipients
            ],
            "events": [dict(e) for e in self.events],
        }


def _content(content: object, kind: str) -> str | None:
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict) and block.get("type") == kind:
            value = block.get("value")
            return value if isinstance(value, str) else None
    return None


def _emails(raw: object) -> list[str]:
    return [str(a["email"]) for a in raw if isinstance(a, dict)] if isinstance(raw, list) else []


class EventSigner:
    """The sandbox's ECDSA P-256 key pair: it signs as SendGrid's Event Webhook signs."""

    def __init__(self, key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self._key = key or ec.generate_private_key(ec.SECP256R1())
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode("ascii")

    def sign(self, timestamp: str, body: bytes) -> str:
        signature = self._key.sign(timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode("ascii")

    def pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def load(cls, path: Path) -> EventSigner:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{path} holds no EC private key")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path) -> EventSigner:
        """The key in `path`, made there (owner-only) the first time: the same key across
        restarts of the sandbox, so the public key Relay was given stays right."""
        if path.exists():
            return cls.load(path)
        signer = cls()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(signer.pem())
        return signer


class SendGridState:
    """Everything the sandbox knows, behind one lock; safe to call from the server's event
    loop, the delivery threads and a test at once."""

    def __init__(
        self,
        *,
        api_key: str = SANDBOX_API_KEY,
        webhooks: list[str] | None = None,
        event_delay: float = EVENT_DELAY_SECONDS,
        delivery_delays: tuple[float, ...] = DELIVERY_DELAYS,
        signer: EventSigner | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._api_key = api_key
        self.webhooks: list[str] = list(webhooks or [])
        self.event_delay = event_delay
        self.delivery_delays = delivery_delays
        self.signer = signer or EventSigner()
        self._messages: list[_Message] = []
        self._by_id: dict[str, _Message] = {}
        self._faults = 0
        self.deliveries: list[Delivery] = []
        self._poster = Poster("sendgrid-events", delivery_delays)

    def close(self) -> None:
        self._poster.close()

    # -- controls ---------------------------------------------------------------------------

    def add_webhook(self, url: str) -> None:
        with self._lock:
            if url not in self.webhooks:
                self.webhooks.append(url)

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._faults = count

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m.public() for m in reversed(self._messages)]

    def html(self, message_id: str) -> str | None:
        with self._lock:
            message = self._by_id.get(message_id)
            return None if message is None else message.html

    # -- the API ----------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> None:
        scheme, _, key = (authorization or "").partition(" ")
        if not key:
            raise SendGridError(401, [_error("authorization required", None)])
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            key.strip().encode(), self._api_key.encode()
        ):
            raise SendGridError(
                401,
                [
                    _error(
                        "The provided authorization grant is invalid, expired, or revoked",
                        None,
                    )
                ],
            )
        with self._lock:
            if self._faults > 0:
                self._faults -= 1
                raise SendGridError(503, [_error("Service Unavailable", None)])

    def send(self, body: Any) -> str | None:
        """Capture a valid mail send and schedule its events; its X-Message-Id, or None for
        a sandbox-mode request (SendGrid validates it and sends nothing)."""
        errors = validate(body)
        if errors:
            raise SendGridError(400, errors)
        sandbox_mode = ((body.get("mail_settings") or {}).get("sandbox_mode") or {}).get("enable")
        if sandbox_mode is True:
            return None
        message_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        now = time.time()
        captured: list[_Message] = []
        index = 0
        for n, item in enumerate(body["personalizations"]):
            recipients = []
            for email in _emails(item.get("to")):
                recipients.append(_Recipient(email, f"{message_id}.filter0001.{index}.0"))
                index += 1
            captured.append(
                _Message(
                    id=f"{message_id}.{n}",
                    message_id=message_id,
                    created=now,
                    sender=str(body["from"]["email"]),
                    subject=item.get("subject") or body.get("subject"),
                    recipients=recipients,
                    cc=_emails(item.get("cc")),
                    bcc=_emails(item.get("bcc")),
                    reply_to=(body.get("reply_to") or {}).get("email"),
                    text=_content(body.get("content"), "text/plain"),
                    html=_content(body.get("content"), "text/html"),
                    template_id=body.get("template_id"),
                    template_data=dict(item.get("dynamic_template_data") or {}),
                    custom_args={
                        **(body.get("custom_args") or {}),
                        **(item.get("custom_args") or {}),
                    },
                    categories=[str(c) for c in body.get("categories") or []],
                    attachments=[str(a.get("filename", "")) for a in body.get("attachments") or []],
                    send_at=item.get("send_at") or body.get("send_at"),
                )
            )
        with self._lock:
            for message in captured:
                self._messages.append(message)
                self._by_id[message.id] = message
        self._poster.scheduler.call_later(0.0, lambda: self._run_stage(captured, 0))
        return message_id

    # -- events -----------------------------------------------------------------------------

    def _event(self, message: _Message, recipient: _Recipient, kind: str) -> dict[str, Any]:
        event: dict[str, Any] = {
            "email": recipient.email,
            "timestamp": int(time.time()),
            "event": kind,
            "sg_event_id": base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="),
            "sg_message_id": recipient.sg_message_id,
            "smtp-id": f"<{message.message_id}@sandbox.sendgrid.local>",
        }
        if message.categories:
            event["category"] = message.categories
        if kind == "bounce":
            event |= {"type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 Unknown user"}
        elif kind == "dropped":
            event["reason"] = "Bounced Address"
        elif kind == "delivered":
            event["response"] = "250 OK"
        # SendGrid adds custom args as top-level fields of every event.
        for key, value in message.custom_args.items():
            event.setdefault(key, value)
        return event

    def _stage(self, messages: list[_Message], stage: int) -> list[dict[str, Any]]:
        """The events of one stage (0, 1, 2) for every recipient, applied to the state."""
        events = []
        with self._lock:
            for message in messages:
                for recipient in message.recipients:
                    outcome = outcome_for(recipient.email)
                    plan = {
                        "delivered": ["processed", "delivered"],
                        "bounce": ["processed", "bounce"],
                        "dropped": ["dropped"],
                        "spamreport": ["processed", "delivered", "spamreport"],
                    }[outcome]
                    if stage < len(plan):
                        event = self._event(message, recipient, plan[stage])
                        recipient.status = plan[stage]
                        message.events.append(event)
                        events.append(event)
        return events

    def _run_stage(self, messages: list[_Message], stage: int) -> None:
        """Post one stage's events to every target; the next stage follows `event_delay`
        after all of them are delivered or given up, so each target sees them in order."""
        events = self._stage(messages, stage)
        if not events:
            return

        def follow() -> None:
            self._poster.scheduler.call_later(
                self.event_delay, lambda: self._run_stage(messages, stage + 1)
            )

        with self._lock:
            targets = list(self.webhooks)
        if not targets:
            follow()
            return
        pending = [len(targets)]

        def done() -> None:
            with self._lock:
                pending[0] -= 1
                last = pending[0] == 0
            if last:
                follow()

        body = json.dumps(events, separators=(",", ":")).encode("utf-8")
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "SendGrid Event API",
            SIGNATURE_HEADER: self.signer.sign(timestamp, body),
            TIMESTAMP_HEADER: timestamp,
        }
        for url in targets:
            delivery = Delivery(url)
            with self._lock:
                self.deliveries.append(delivery)
            self._poster.post(delivery, headers=headers, content=body, done=done)


# --- HTTP ----------------------------------------------------------------------------------

_Handler = Callable[[SendGridState, Request], Awaitable[Response]]


def _state(request: Request) -> SendGridState:
    state: SendGridState = request.app.state.sendgrid
    return state


def _route(handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(_state(request), request)
        except SendGridError as exc:
            return exc.response()

    return endpoint


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        raise SendGridError(400, [_error("Bad Request", None)]) from exc


async def _mail_send(state: SendGridState, request: Request) -> Response:
    state.authenticate(request.headers.get("authorization"))
    message_id = state.send(await _json(request))
    if message_id is None:
        return Response(status_code=200)
    return Response(status_code=202, headers={"X-Message-Id": message_id})


async def _control_messages(state: SendGridState, request: Request) -> Response:
    raw = request.query_params.get("limit", str(MESSAGES_LIMIT))
    limit = int(raw) if raw.isdigit() else 0
    if not 1 <= limit <= MAX_MESSAGES_LIMIT:
        raise SendGridError(
            400, [_error(f"limit must be between 1 and {MAX_MESSAGES_LIMIT}", "limit")]
        )
    return JSONResponse({"data": state.messages()[:limit]})


async def _control_html(state: SendGridState, request: Request) -> Response:
    html = state.html(request.path_params["message_id"])
    if html is None:
        return Response("No HTML captured for this message.", 404, media_type="text/plain")
    return Response(
        html,
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": PREVIEW_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


async def _control_webhooks(state: SendGridState, request: Request) -> Response:
    if request.method == "POST":
        body = await _json(request)
        url = body.get("url") if isinstance(body, dict) else None
        if not (isinstance(url, str) and urlsplit(url).scheme in ("http", "https")):
            raise SendGridError(400, [_error("url must be an http(s) URL", "url")])
        state.add_webhook(url)
    return JSONResponse({"webhooks": [{"url": url} for url in state.webhooks]})


async def _control_key(state: SendGridState, request: Request) -> Response:
    return JSONResponse({"publicKey": state.signer.public_key})


async def _control_faults(state: SendGridState, request: Request) -> Response:
    body = await _json(request)
    count = body.get("count") if isinstance(body, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise SendGridError(400, [_error("count must be a whole number", "count")])
    state.fail_next(count)
    return JSONResponse({"count": count})


def create_app(state: SendGridState) -> Starlette:
    """The ASGI app serving `state`."""
    routes = [
        Route("/v3/mail/send", _route(_mail_send), methods=["POST"]),
        Route("/_sandbox/messages", _route(_control_messages), methods=["GET"]),
        Route("/_sandbox/messages/{message_id}/html", _route(_control_html), methods=["GET"]),
        Route("/_sandbox/webhooks", _route(_control_webhooks), methods=["GET", "POST"]),
        Route("/_sandbox/key", _route(_control_key), methods=["GET"]),
        Route("/_sandbox/faults", _route(_control_faults), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.sendgrid = state
    return app


# --- running it ----------------------------------------------------------------------------


def wanted(settings: Settings) -> bool:
    """SANDBOX=auto, development, and no SendGrid key: the sandbox stands in for SendGrid."""
    return (
        settings.sandbox == "auto"
        and settings.relay_env == "development"
        and settings.sendgrid_api_key is None
    )


@dataclass
class SendGridSandbox:
    """One SendGrid sandbox server: its command, the settings that point Relay at it, and a
    way to run it in this process (tests). `port=0` with `run_in_thread` binds a free port.

    The signing key pair lives in `key_file` (made there, owner-only, when absent), so the
    parent (`relay dev`) knows the public key it hands Relay, a restarted child signs with
    the same key, and no key is ever on a command line. Without a `key_file` the key is
    made in memory (tests in a thread) and `command()` writes it to a private temp file."""

    port: int = field(default_factory=free_port)
    api_key: str = SANDBOX_API_KEY
    email_from: str = SANDBOX_FROM
    webhook_url: str | None = None
    event_delay: float = EVENT_DELAY_SECONDS
    host: str = "127.0.0.1"
    key_file: Path | None = None
    signer: EventSigner = field(init=False)

    def __post_init__(self) -> None:
        self.signer = EventSigner.load_or_create(self.key_file) if self.key_file else EventSigner()

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def public_key(self) -> str:
        return self.signer.public_key

    def command(self) -> list[str]:
        """The command line; a non-default API key would be on it, the default is not."""
        if self.key_file is None:
            fd, name = tempfile.mkstemp(prefix="relay-sendgrid-", suffix=".pem")
            with os.fdopen(fd, "wb") as handle:
                handle.write(self.signer.pem())
            self.key_file = Path(name)
        command = [sys.executable, "-m", "relay.sandbox.sendgrid", "--port", str(self.port)]
        command += ["--host", self.host, "--event-delay", str(self.event_delay)]
        command += ["--key-file", str(self.key_file)]
        if self.api_key != SANDBOX_API_KEY:
            command += ["--api-key", self.api_key]
        if self.webhook_url is not None:
            command += ["--webhook-url", self.webhook_url]
        return command

    def environment(self) -> dict[str, str]:
        """The settings (as environment variables) that point Relay's SendGrid code here."""
        return {
            "SENDGRID_API_KEY": self.api_key,
            "SENDGRID_API_BASE": self.api_base,
            "SENDGRID_WEBHOOK_PUBLIC_KEY": self.public_key,
            "EMAIL_FROM": self.email_from,
        }

    def state(self) -> SendGridState:
        return SendGridState(
            api_key=self.api_key,
            webhooks=[self.webhook_url] if self.webhook_url else [],
            event_delay=self.event_delay,
            signer=self.signer,
        )

    def ready(self) -> bool:
        return port_open(self.host, self.port)

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        wait_for_port(self.host, self.port, "the SendGrid sandbox", timeout)

    def register_webhook(self, url: str) -> None:
        """Have the running sandbox send its events to `url`."""
        httpx.post(f"{self.api_base}/_sandbox/webhooks", json={"url": url}).raise_for_status()

    def run_in_thread(self) -> SendGridServer:
        """Start serving in a thread of this process; stop it with `.stop()` or `with`."""
        return SendGridServer(self).start()


class SendGridServer:
    """A sandbox served in a daemon thread; `state` is there to inspect."""

    def __init__(self, sandbox: SendGridSandbox) -> None:
        self.sandbox = sandbox
        self.state = sandbox.state()
        self._server = AppServer(
            create_app(self.state), sandbox.host, sandbox.port, "SendGrid", self.state.close
        )
        sandbox.port = self._server.port

    @property
    def api_base(self) -> str:
        return self.sandbox.api_base

    def start(self) -> SendGridServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> SendGridServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def plan(settings: Settings) -> SendGridSandbox | None:
    """The sandbox `relay dev` runs for these settings, or None (a real SendGrid, or none).
    Its signing key is kept in DATA_DIR, so Relay's SENDGRID_WEBHOOK_PUBLIC_KEY holds."""
    if not wanted(settings):
        return None
    return SendGridSandbox(
        key_file=settings.data_dir / KEY_FILE_NAME, email_from=settings.email_from or SANDBOX_FROM
    )


def describe(settings: Settings, sandbox: SendGridSandbox | None) -> str:
    """The banner's line for SendGrid."""
    if sandbox is not None:
        return f"sandboxed (local SendGrid at {sandbox.api_base})"
    if settings.sendgrid_api_key is not None:
        return f"real ({settings.sendgrid_api_base or 'api.sendgrid.com'})"
    return "not configured (set SENDGRID_API_KEY, or SANDBOX=auto in development)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m relay.sandbox.sendgrid", description="Relay's local SendGrid sandbox."
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-key", default=SANDBOX_API_KEY)
    parser.add_argument("--webhook-url")
    parser.add_argument("--event-delay", type=float, default=EVENT_DELAY_SECONDS)
    parser.add_argument(
        "--key-file", type=Path, help="the PEM signing key (made there when absent)"
    )
    args = parser.parse_args(argv)
    sandbox = SendGridSandbox(
        port=args.port,
        host=args.host,
        api_key=args.api_key,
        webhook_url=args.webhook_url,
        event_delay=args.event_delay,
        key_file=args.key_file,
    )
    logging.basicConfig(level=logging.INFO, format="sendgrid-sandbox: %(message)s")
    state = sandbox.state()
    try:
        uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="info")
    finally:
        state.close()


if __name__ == "__main__":
    main()
