"""The Twilio sandbox: a small HTTP server speaking Twilio's Messages API (SMS and WhatsApp) and
sending Twilio's signed status callbacks and incoming messages, since no Twilio can be
reached from here.

`relay dev` can run it when Twilio has no account SID in development (SANDBOX=auto), and the
tests run it in a thread (`TwilioSandbox(port=0).run_in_thread()`). Relay points the `twilio`
package at it with TWILIO_API_BASE by replacing the base URL of the API domain, the one the
Messages API hangs off (the package has no option for it; `twilio_client()` does this):

    client = twilio.rest.Client(account_sid, auth_token)
    if settings.twilio_api_base:
        client.api.base_url = settings.twilio_api_base.rstrip("/")

with TWILIO_EDGE and TWILIO_REGION unset (the package rewrites the host name when either is).
Relay checks the callbacks with `twilio.request_validator.RequestValidator(auth_token)`.

Routes (Twilio's documented paths and shapes; form-encoded requests, JSON answers):

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json     To, From | MessagingServiceSid,
         Body | MediaUrl (repeatable) | ContentSid (+ ContentVariables), StatusCallback
    GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json
    GET  /2010-04-01/Accounts/{AccountSid}/Messages.json     To, From, PageSize (one page)

HTTP Basic `AccountSid:AuthToken` for the account in the path (20003 otherwise). Numbers
are E.164, `whatsapp:`-prefixed on both sides for WhatsApp. A send answers 201 with Twilio's
message resource (`SM…` sid, status `queued`, or `accepted` through a Messaging Service).
Errors have Twilio's shape, `{code, message, more_info, status}`.

Magic numbers. Twilio's test-credentials numbers (twilio.com/docs/iam/test-credentials),
refused at once as Twilio refuses them:

    From +15005550001   21212  invalid From number
    From +15005550007   21606  From is not an SMS-capable number of the account
    From +15005550008   21611  From has too many queued messages
    To   +15005550001   21211  invalid To number
    To   +15005550002   21612  To cannot be reached from this From
    To   +15005550003   21408  no permission for the To's region
    To   +15005550004   21610  To has unsubscribed (replied STOP)
    To   +15005550009   21614  To is not a mobile number (cannot receive SMS)

and the sandbox's own, for what test credentials never do (an outcome after acceptance):

    To   +15005550010   accepted, sent, then `undelivered` (ErrorCode 30003, unreachable)
    To   +15005550011   accepted, then `failed` (ErrorCode 30008, unknown error)
    anyone else         accepted, `sent`, then `delivered`

A number that replied STOP through the inbound control is refused with 21610 until it sends
START, as with Twilio's Advanced Opt-Out.

Status callbacks. `callback_delay` seconds apart (tests use 0), in order (the next waits
until the last was accepted or given up after three attempts), every status goes to
the message's StatusCallback (or the default one registered below), form-encoded as Twilio
sends it: MessageSid, SmsSid, MessageStatus, SmsStatus, AccountSid, From, To, ApiVersion,
MessagingServiceSid when used, ErrorCode when failed or undelivered. Each carries
`X-Twilio-Signature`: base64 HMAC-SHA1, keyed with the auth token, over the full callback
URL followed by every parameter name and value, sorted by name.

Controls for `/sandbox` and tests (not Twilio's; JSON, camelCase like Relay's own API):

    GET  /_sandbox/messages?limit=    {data: messages, newest first, with their callbacks}
    GET|POST /_sandbox/webhooks       list / set {url, type: "incoming" | "status"}: where
                                      incoming messages go (the number's "A message comes
                                      in" URL), and the status callback used when a message
                                      names none
    POST /_sandbox/inbound            {from, body?, to?}: a reply (default "STOP") from
                                      `from` to the sandbox's number, POSTed signed to the
                                      incoming URL as Twilio posts one (OptOutType on
                                      STOP/START keywords)
    POST /_sandbox/faults             {count}: the next `count` API calls answer 503

Not modelled: scheduling, segments beyond a count, prices, media resources, Messaging
Service sender pools (the sandbox's number is the sender), Twilio's callback retries (three
attempts here). State lives in memory. No token is logged.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.sandbox.server import (
    DELIVERY_DELAYS,
    AppServer,
    Delivery,
    Poster,
    free_port,
    port_open,
    wait_for_port,
)
from relay.settings import Settings

if TYPE_CHECKING:
    from twilio.rest import Client

logger = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
# The credentials the sandbox accepts unless told otherwise; they open nothing but it.
SANDBOX_ACCOUNT_SID = "AC" + hashlib.md5(b"relay-sandbox", usedforsecurity=False).hexdigest()
SANDBOX_AUTH_TOKEN = "relay-sandbox-auth-token"  # noqa: S105 - a local sandbox's credential
# Twilio's magic "valid" From number, and its WhatsApp sandbox number.
SANDBOX_FROM_NUMBER = "+15005550006"
SANDBOX_WHATSAPP_NUMBER = "+14155238886"
READY_SECONDS = 30
CALLBACK_DELAY_SECONDS = 1.0
MESSAGES_LIMIT = 50
MAX_MESSAGES_LIMIT = 1000
MAX_BODY_CHARACTERS = 1600
SIGNATURE_HEADER = "X-Twilio-Signature"

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_URL = "https://www.twilio.com/docs/errors/{code}"

# Twilio's test-credentials numbers: (code, message template) refused synchronously.
MAGIC_FROM: dict[str, tuple[int, str]] = {
    "+15005550001": (
        21212,
        "The 'From' number {From} is not a valid phone number, shortcode, or alphanumeric "
        "sender ID.",
    ),
    "+15005550007": (
        21606,
        "The From phone number {From} is not a valid, SMS-capable inbound phone number or "
        "short code for your account.",
    ),
    "+15005550008": (
        21611,
        "This 'From' number has exceeded the maximum number of queued messages",
    ),
}
MAGIC_TO: dict[str, tuple[int, str]] = {
    "+15005550001": (21211, "The 'To' number {To} is not a valid phone number."),
    "+15005550002": (
        21612,
        "The 'To' phone number: {To}, is not currently reachable using the 'From' phone "
        "number: {From} via SMS.",
    ),
    "+15005550003": (
        21408,
        "Permission to send an SMS has not been enabled for the region indicated by the "
        "'To' number: {To}.",
    ),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
# The sandbox's own: the statuses a message accepted for these numbers goes through.
UNDELIVERED_NUMBER = "+15005550010"
FAILED_NUMBER = "+15005550011"
OUTCOMES: dict[str, tuple[tuple[str, ...], int | None]] = {
    UNDELIVERED_NUMBER: (("sent", "undelivered"), 30003),
    FAILED_NUMBER: (("failed",), 30008),
}
DELIVERED: tuple[tuple[str, ...], int | None] = (("sent", "delivered"), None)
ERROR_MESSAGES = {30003: "Unreachable destination handset", 30008: "Unknown error"}
# Twilio's default opt-out and opt-in keywords.
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})


class TwilioError(Exception):
    """A refusal in Twilio's shape."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> JSONResponse:
        body = {
            "code": self.code,
            "message": self.message,
            "more_info": _URL.format(code=self.code),
            "status": self.status,
        }
        return JSONResponse(body, self.status)


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's X-Twilio-Signature: base64 HMAC-SHA1 over the URL and the sorted params."""
    signed = url + "".join(name + params[name] for name in sorted(params))
    mac = hmac.new(auth_token.encode("utf-8"), signed.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _date(epoch: float | None) -> str | None:
    return None if epoch is None else formatdate(epoch, usegmt=True)


def _channel(number: str) -> tuple[str, str]:
    """('whatsapp' | 'sms', the E.164 part) of a To/From value."""
    if number.startswith("whatsapp:"):
        return "whatsapp", number.removeprefix("whatsapp:")
    return "sms", number


# --- state ---------------------------------------------------------------------------------


@dataclass
class _Callback:
    status: str
    params: dict[str, str]
    delivery: Delivery | None  # None: no URL to send it to

    def public(self) -> dict[str, Any]:
        shown = self.delivery.public() if self.delivery else {"url": None, "attempts": 0}
        return {
            "status": self.status,
            "url": shown["url"],
            "delivery": shown.get("status", "no callback"),
            "responseStatus": shown.get("responseStatus"),
            "attempts": shown["attempts"],
        }


@dataclass
class _Message:
    sid: str
    account_sid: str
    to: str
    sender: str
    body: str
    media_urls: list[str]
    content_sid: str | None
    content_variables: dict[str, Any] | None
    messaging_service_sid: str | None
    status_callback: str | None
    status: str
    created: float
    updated: float
    sent: float | None = None
    error_code: int | None = None
    direction: str = "outbound-api"
    callbacks: list[_Callback] = field(default_factory=list)

    @property
    def channel(self) -> str:
        return _channel(self.to)[0]

    def resource(self) -> dict[str, Any]:
        """Twilio's message resource."""
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": _date(self.created),
            "date_sent": _date(self.sent),
            "date_updated": _date(self.updated),
            "direction": self.direction,
            "error_code": self.error_code,
            "error_message": ERROR_MESSAGES.get(self.error_code or 0),
            "from": self.sender,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": str(len(self.media_urls)),
            "num_segments": str(max(1, -(-len(self.body) // 153))),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
            "to": self.to,
            "uri": f"{uri}.json",
        }

    def public(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "channel": self.channel,
            "direction": self.direction,
            "to": self.to,
            "from": self.sender,
            "body": self.body,
            "mediaUrls": list(self.media_urls),
            "contentSid": self.content_sid,
            "contentVariables": self.content_variables,
            "messagingServiceSid": self.messaging_service_sid,
            "statusCallback": self.status_callback,
            "status": self.status,
            "errorCode": self.error_code,
            "created": self.created,
            "callbacks": [c.public() for c in self.callbacks],
        }


class TwilioState:
    """Everything the sandbox knows, behind one lock; safe to call from the server's event
    loop, the callback threads and a test at once."""

    def __init__(
        self,
        *,
        account_sid: str = SANDBOX_ACCOUNT_SID,
        auth_token: str = SANDBOX_AUTH_TOKEN,
        from_number: str = SANDBOX_FROM_NUMBER,
        incoming_url: str | None = None,
        status_url: str | None = None,
        callback_delay: float = CALLBACK_DELAY_SECONDS,
        delivery_delays: tuple[float, ...] = DELIVERY_DELAYS,
    ) -> None:
        self._lock = threading.RLock()
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.from_number = from_number
        self.incoming_url = incoming_url
        self.status_url = status_url
        self.callback_delay = callback_delay
        self.delivery_delays = delivery_delays
        self._messages: dict[str, _Message] = {}
        self._opted_out: set[str] = set()
        self._faults = 0
        self._poster = Poster("twilio-callbacks", delivery_delays)

    def close(self) -> None:
        self._poster.close()

    # -- controls ---------------------------------------------------------------------------

    def set_webhook(self, url: str, kind: str) -> None:
        with self._lock:
            if kind == "status":
                self.status_url = url
            else:
                self.incoming_url = url

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._faults = count

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m.public() for m in reversed(self._messages.values())]

    def opted_out(self, number: str) -> bool:
        with self._lock:
            return _channel(number)[1] in self._opted_out

    def inbound(self, sender: str, body: str, to: str | None) -> dict[str, Any]:
        """A message from `sender` to the sandbox's number, posted signed to the incoming
        URL; STOP/START keywords change the opt-out list first, as Twilio does."""
        keyword = body.strip().upper()
        channel, number = _channel(sender)
        if not _E164.fullmatch(number):
            raise TwilioError(
                400, 21211, f"The 'From' number {sender} is not a valid phone number."
            )
        if to is None:
            to = f"whatsapp:{self.from_number}" if channel == "whatsapp" else self.from_number
        now = time.time()
        message = _Message(
            sid=_sid("SM"),
            account_sid=self.account_sid,
            to=to,
            sender=sender,
            body=body,
            media_urls=[],
            content_sid=None,
            content_variables=None,
            messaging_service_sid=None,
            status_callback=None,
            status="received",
            created=now,
            updated=now,
            direction="inbound",
        )
        params = {
            "MessageSid": message.sid,
            "SmsSid": message.sid,
            "SmsMessageSid": message.sid,
            "AccountSid": self.account_sid,
            "From": sender,
            "To": to,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsStatus": "received",
            "ApiVersion": API_VERSION,
        }
        with self._lock:
            if keyword in STOP_WORDS:
                self._opted_out.add(number)
                params["OptOutType"] = "STOP"
            elif keyword in START_WORDS:
                self._opted_out.discard(number)
                params["OptOutType"] = "START"
            callback = self._callback("received", self.incoming_url, params)
            message.callbacks.append(callback)
            self._messages[message.sid] = message
        self._send(callback)
        return message.public()

    # -- the API ----------------------------------------------------------------------------

    def authenticate(self, authorization: str | None, account_sid: str) -> None:
        scheme, _, encoded = (authorization or "").partition(" ")
        try:
            user, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
        except ValueError:
            user = password = ""
        good = (
            scheme.lower() == "basic"
            and secrets.compare_digest(user.encode(), self.account_sid.encode())
            and secrets.compare_digest(password.encode(), self._auth_token.encode())
        )
        if not good:
            raise TwilioError(401, 20003, "Authenticate")
        if account_sid != self.account_sid:
            raise TwilioError(
                403, 20003, "Authentication Error - No credentials provided for this account"
            )
        with self._lock:
            if self._faults > 0:
                self._faults -= 1
                raise TwilioError(503, 20500, "Service Unavailable")

    def _validate(self, form: Mapping[str, str], media: list[str]) -> tuple[str, str, str | None]:
        """(To, From, MessagingServiceSid) of a valid send, or TwilioError as Twilio's."""
        to = form.get("To", "")
        sender = form.get("From", "")
        service = form.get("MessagingServiceSid") or None
        if not to:
            raise TwilioError(400, 21604, "A 'To' phone number is required.")
        if not sender and service is None:
            raise TwilioError(400, 21603, "A 'From' phone number is required.")
        if service is not None and not re.fullmatch(r"MG[0-9a-f]{32}", service):
            raise TwilioError(400, 21701, "The Messaging Service Sid is invalid.")
        to_channel, to_number = _channel(to)
        if not sender:
            sender = (
                f"whatsapp:{self.from_number}" if to_channel == "whatsapp" else self.from_number
            )
        from_channel, from_number = _channel(sender)
        values = {"To": to, "From": sender}
        if not _E164.fullmatch(to_number):
            raise TwilioError(400, 21211, MAGIC_TO["+15005550001"][1].format(**values))
        if not _E164.fullmatch(from_number):
            raise TwilioError(400, 21212, MAGIC_FROM["+15005550001"][1].format(**values))
        if from_channel != to_channel:
            raise TwilioError(
                400,
                63007,
                "Twilio could not find a Channel with the specified From address",
            )
        if from_number in MAGIC_FROM:
            code, message = MAGIC_FROM[from_number]
            raise TwilioError(400, code, message.format(**values))
        if to_number in MAGIC_TO:
            code, message = MAGIC_TO[to_number]
            raise TwilioError(400, code, message.format(**values))
        if self.opted_out(to):
            raise TwilioError(400, 21610, MAGIC_TO["+15005550004"][1])
        body = form.get("Body", "")
        if not body and not media and not form.get("ContentSid"):
            raise TwilioError(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY_CHARACTERS:
            raise TwilioError(
                400,
                21617,
                f"The concatenated message body exceeds the {MAX_BODY_CHARACTERS} character limit.",
            )
        for url in media:
            if urlsplit(url).scheme not in ("http", "https"):
                raise TwilioError(400, 21620, f"Invalid media URL(s): {url}")
        callback = form.get("StatusCallback")
        if callback and urlsplit(callback).scheme not in ("http", "https"):
            raise TwilioError(400, 21609, "Invalid StatusCallback url")
        return to, sender, service

    def create(self, account_sid: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
        form = dict(pairs)
        media = [value for name, value in pairs if name == "MediaUrl"]
        to, sender, service = self._validate(form, media)
        variables: dict[str, Any] | None = None
        content_sid = form.get("ContentSid") or None
        if content_sid is not None:
            if not re.fullmatch(r"HX[0-9a-f]{32}", content_sid):
                raise TwilioError(400, 21655, "The ContentSid is Invalid.")
            try:
                parsed = json.loads(form.get("ContentVariables") or "{}")
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise TwilioError(400, 21656, "The ContentVariables Parameter is invalid.")
            variables = parsed
        now = time.time()
        message = _Message(
            sid=_sid("SM"),
            account_sid=account_sid,
            to=to,
            sender=sender,
            body=form.get("Body", ""),
            media_urls=media,
            content_sid=content_sid,
            content_variables=variables,
            messaging_service_sid=service,
            status_callback=form.get("StatusCallback") or None,
            status="accepted" if service else "queued",
            created=now,
            updated=now,
        )
        with self._lock:
            self._messages[message.sid] = message
            resource = message.resource()
        self._poster.scheduler.call_later(self.callback_delay, lambda: self._advance(message, 0))
        return resource

    def get(self, account_sid: str, sid: str) -> dict[str, Any]:
        with self._lock:
            message = self._messages.get(sid)
            if message is None or message.account_sid != account_sid:
                raise TwilioError(
                    404,
                    20404,
                    f"The requested resource /{API_VERSION}/Accounts/{account_sid}/Messages/"
                    f"{sid}.json was not found",
                )
            return message.resource()

    def page(self, account_sid: str, query: Mapping[str, str]) -> dict[str, Any]:
        raw = query.get("PageSize", str(MESSAGES_LIMIT))
        size = int(raw) if raw.isdigit() else 0
        if not 1 <= size <= MAX_MESSAGES_LIMIT:
            raise TwilioError(400, 20001, f"PageSize must be between 1 and {MAX_MESSAGES_LIMIT}")
        with self._lock:
            found = [
                m.resource()
                for m in reversed(self._messages.values())
                if m.account_sid == account_sid
                and query.get("To", m.to) == m.to
                and query.get("From", m.sender) == m.sender
            ][:size]
        uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages.json?PageSize={size}&Page=0"
        return {
            "messages": found,
            "end": max(0, len(found) - 1),
            "first_page_uri": uri,
            "next_page_uri": None,
            "page": 0,
            "page_size": size,
            "previous_page_uri": None,
            "start": 0,
            "uri": uri,
        }

    # -- callbacks --------------------------------------------------------------------------

    def _callback(self, status: str, url: str | None, params: dict[str, str]) -> _Callback:
        return _Callback(status, params, Delivery(url) if url else None)

    def _send(self, callback: _Callback, done: Callable[[], None] | None = None) -> None:
        if callback.delivery is None:
            if done is not None:
                done()
            return
        headers = {
            SIGNATURE_HEADER: signature(self._auth_token, callback.delivery.url, callback.params),
            "User-Agent": "TwilioProxy/1.1",
        }
        self._poster.post(callback.delivery, headers=headers, data=callback.params, done=done)

    def _advance(self, message: _Message, index: int) -> None:
        """Move `message` to its next status and send that callback; the one after follows
        `callback_delay` after it is delivered or given up, so they arrive in order."""
        statuses, error_code = OUTCOMES.get(_channel(message.to)[1], DELIVERED)
        if index >= len(statuses):
            return
        status = statuses[index]
        with self._lock:
            message.status = status
            message.updated = time.time()
            if status == "sent":
                message.sent = message.updated
            if status in ("undelivered", "failed"):
                message.error_code = error_code
            params = {
                "MessageSid": message.sid,
                "SmsSid": message.sid,
                "MessageStatus": status,
                "SmsStatus": status,
                "AccountSid": message.account_sid,
                "From": message.sender,
                "To": message.to,
                "ApiVersion": API_VERSION,
            }
            if message.messaging_service_sid:
                params["MessagingServiceSid"] = message.messaging_service_sid
            if message.error_code is not None:
                params["ErrorCode"] = str(message.error_code)
            callback = self._callback(status, message.status_callback or self.status_url, params)
            message.callbacks.append(callback)

        def follow() -> None:
            self._poster.scheduler.call_later(
                self.callback_delay, lambda: self._advance(message, index + 1)
            )

        self._send(callback, follow)


# --- HTTP ----------------------------------------------------------------------------------

_Handler = Callable[[TwilioState, Request], Awaitable[Response]]


def _state(request: Request) -> TwilioState:
    state: TwilioState = request.app.state.twilio
    return state


def _route(handler: _Handler, *, api: bool = True) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state = _state(request)
        try:
            if api:
                state.authenticate(
                    request.headers.get("authorization"), request.path_params["account_sid"]
                )
            return await handler(state, request)
        except TwilioError as exc:
            return exc.response()

    return endpoint


async def _create(state: TwilioState, request: Request) -> Response:
    pairs = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    resource = state.create(request.path_params["account_sid"], pairs)
    return JSONResponse(resource, 201)


async def _fetch(state: TwilioState, request: Request) -> Response:
    params = request.path_params
    return JSONResponse(state.get(params["account_sid"], params["sid"]))


async def _list(state: TwilioState, request: Request) -> Response:
    query = dict(request.query_params)
    return JSONResponse(state.page(request.path_params["account_sid"], query))


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise TwilioError(400, 20001, "The body must be a JSON object")
    return body


async def _control_messages(state: TwilioState, request: Request) -> Response:
    raw = request.query_params.get("limit", str(MESSAGES_LIMIT))
    limit = int(raw) if raw.isdigit() else 0
    if not 1 <= limit <= MAX_MESSAGES_LIMIT:
        raise TwilioError(400, 20001, f"limit must be between 1 and {MAX_MESSAGES_LIMIT}")
    return JSONResponse({"data": state.messages()[:limit]})


async def _control_webhooks(state: TwilioState, request: Request) -> Response:
    if request.method == "POST":
        body = await _json(request)
        url, kind = body.get("url"), body.get("type", "incoming")
        if not (isinstance(url, str) and urlsplit(url).scheme in ("http", "https")):
            raise TwilioError(400, 20001, "url must be an http(s) URL")
        if kind not in ("incoming", "status"):
            raise TwilioError(400, 20001, "type must be incoming or status")
        state.set_webhook(url, kind)
    return JSONResponse({"incomingUrl": state.incoming_url, "statusCallback": state.status_url})


async def _control_inbound(state: TwilioState, request: Request) -> Response:
    body = await _json(request)
    sender, text, to = body.get("from"), body.get("body", "STOP"), body.get("to")
    if not isinstance(sender, str) or not isinstance(text, str):
        raise TwilioError(400, 20001, "from (and body, when given) must be strings")
    if to is not None and not isinstance(to, str):
        raise TwilioError(400, 20001, "to must be a string")
    return JSONResponse(state.inbound(sender, text, to), 201)


async def _control_faults(state: TwilioState, request: Request) -> Response:
    count = (await _json(request)).get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise TwilioError(400, 20001, "count must be a whole number")
    state.fail_next(count)
    return JSONResponse({"count": count})


def create_app(state: TwilioState) -> Starlette:
    """The ASGI app serving `state`."""
    base = f"/{API_VERSION}/Accounts/{{account_sid}}"
    routes = [
        Route(f"{base}/Messages.json", _route(_create), methods=["POST"]),
        Route(f"{base}/Messages.json", _route(_list), methods=["GET"]),
        Route(f"{base}/Messages/{{sid}}.json", _route(_fetch), methods=["GET"]),
        Route("/_sandbox/messages", _route(_control_messages, api=False), methods=["GET"]),
        Route("/_sandbox/webhooks", _route(_control_webhooks, api=False), methods=["GET", "POST"]),
        Route("/_sandbox/inbound", _route(_control_inbound, api=False), methods=["POST"]),
        Route("/_sandbox/faults", _route(_control_faults, api=False), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.twilio = state
    return app


# --- running it ----------------------------------------------------------------------------


def wanted(settings: Settings) -> bool:
    """SANDBOX=auto, development, and no Twilio account: the sandbox stands in for Twilio."""
    return (
        settings.sandbox == "auto"
        and settings.relay_env == "development"
        and settings.twilio_account_sid is None
    )


def point_client(client: Client, api_base: str) -> Client:
    """Have the `twilio` package's client send its Messages API calls to `api_base`
    (TWILIO_API_BASE: scheme, host and port) instead of api.twilio.com."""
    client.edge = None
    client.region = None
    client.api.base_url = api_base.rstrip("/")
    return client


@dataclass
class TwilioSandbox:
    """One Twilio sandbox server: its command, the settings that point Relay at it, and a way
    to run it in this process (tests). `port=0` with `run_in_thread` binds a free port."""

    port: int = field(default_factory=free_port)
    account_sid: str = SANDBOX_ACCOUNT_SID
    auth_token: str = SANDBOX_AUTH_TOKEN
    from_number: str = SANDBOX_FROM_NUMBER
    whatsapp_number: str = SANDBOX_WHATSAPP_NUMBER
    incoming_url: str | None = None
    status_url: str | None = None
    callback_delay: float = CALLBACK_DELAY_SECONDS
    host: str = "127.0.0.1"

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The command line; the default token is not on it (a non-default one would be)."""
        command = [sys.executable, "-m", "relay.sandbox.twilio", "--port", str(self.port)]
        command += ["--host", self.host, "--account-sid", self.account_sid]
        command += ["--from-number", self.from_number]
        command += ["--callback-delay", str(self.callback_delay)]
        if self.auth_token != SANDBOX_AUTH_TOKEN:
            command += ["--auth-token", self.auth_token]
        if self.incoming_url is not None:
            command += ["--incoming-url", self.incoming_url]
        if self.status_url is not None:
            command += ["--status-url", self.status_url]
        return command

    def environment(self) -> dict[str, str]:
        """The settings (as environment variables) that point Relay's Twilio code here."""
        return {
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_FROM_NUMBER": self.from_number,
            "TWILIO_WHATSAPP_NUMBER": self.whatsapp_number,
            "TWILIO_API_BASE": self.api_base,
        }

    def state(self) -> TwilioState:
        return TwilioState(
            account_sid=self.account_sid,
            auth_token=self.auth_token,
            from_number=self.from_number,
            incoming_url=self.incoming_url,
            status_url=self.status_url,
            callback_delay=self.callback_delay,
        )

    def ready(self) -> bool:
        return port_open(self.host, self.port)

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        wait_for_port(self.host, self.port, "the Twilio sandbox", timeout)

    def register_webhook(self, url: str, kind: str = "incoming") -> None:
        """Set the running sandbox's incoming-message URL (or default status callback)."""
        response = httpx.post(f"{self.api_base}/_sandbox/webhooks", json={"url": url, "type": kind})
        response.raise_for_status()

    def run_in_thread(self) -> TwilioServer:
        """Start serving in a thread of this process; stop it with `.stop()` or `with`."""
        return TwilioServer(self).start()


def twilio_client(sandbox: TwilioSandbox) -> Client:
    """The `twilio` package's client, authenticated for and pointed at `sandbox`."""
    from twilio.rest import Client

    return point_client(Client(sandbox.account_sid, sandbox.auth_token), sandbox.api_base)


class TwilioServer:
    """A sandbox served in a daemon thread; `state` is there to inspect."""

    def __init__(self, sandbox: TwilioSandbox) -> None:
        self.sandbox = sandbox
        self.state = sandbox.state()
        self._server = AppServer(
            create_app(self.state), sandbox.host, sandbox.port, "Twilio", self.state.close
        )
        sandbox.port = self._server.port

    @property
    def api_base(self) -> str:
        return self.sandbox.api_base

    def start(self) -> TwilioServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> TwilioServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def plan(settings: Settings) -> TwilioSandbox | None:
    """The sandbox `relay dev` runs for these settings, or None (a real Twilio, or none)."""
    return TwilioSandbox() if wanted(settings) else None


def describe(settings: Settings, sandbox: TwilioSandbox | None) -> str:
    """The banner's line for Twilio."""
    if sandbox is not None:
        return f"sandboxed (local Twilio at {sandbox.api_base})"
    if settings.twilio_account_sid is not None:
        return f"real ({settings.twilio_api_base or 'api.twilio.com'})"
    return "not configured (set TWILIO_ACCOUNT_SID, or SANDBOX=auto in development)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m relay.sandbox.twilio", description="Relay's local Twilio sandbox."
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--account-sid", default=SANDBOX_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=SANDBOX_AUTH_TOKEN)
    parser.add_argument("--from-number", default=SANDBOX_FROM_NUMBER)
    parser.add_argument("--incoming-url")
    parser.add_argument("--status-url")
    parser.add_argument("--callback-delay", type=float, default=CALLBACK_DELAY_SECONDS)
    args = parser.parse_args(argv)
    sandbox = TwilioSandbox(
        port=args.port,
        host=args.host,
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        from_number=args.from_number,
        incoming_url=args.incoming_url,
        status_url=args.status_url,
        callback_delay=args.callback_delay,
    )
    logging.basicConfig(level=logging.INFO, format="twilio-sandbox: %(message)s")
    state = sandbox.state()
    try:
        uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="info")
    finally:
        state.close()


if __name__ == "__main__":
    main()
