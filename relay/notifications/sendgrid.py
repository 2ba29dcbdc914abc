"""Email through SendGrid's v3 mail send API.

The request body is shaped by SendGrid's own helpers (`sendgrid.helpers.mail`: Mail,
Personalization, CustomArg, Attachment…), so what goes out is what SendGrid's library would
send. It is POSTed with one shared aiohttp `ClientSession`, not the package's
`SendGridAPIClient`: that client is synchronous urllib (python-http-client), one blocking
connection per call, which would cap a worker at a thread's worth of sends. aiohttp rather
than httpx by measurement, as for outgoing webhooks: in bench/notifications.py httpx's pool
bookkeeping was a quarter of the worker's time per send (docs/benchmarks.md).

Every personalization carries `custom_args: {"relayNotificationId": <id>}`; SendGrid copies
custom args onto every Event Webhook event, which is how an event finds its notification
(relay.notifications.sendgrid_events).

What a send returns or raises (the rules of relay.notifications.senders):

    202                          Sent(SENT, provider_message_id = X-Message-Id)
    4xx other than 408/425/429   Sent(FAILED, error_code="SENDGRID_<status>", error_message =
                                 SendGrid's first error message, any address in it removed)
    408/425/429/5xx              raises relay.provider_errors.error_for_status: retryable, its
                                 details carry the status (the ledger: SendGrid did not act)
    refused connection           raises relay.provider_errors.translate: {"connected": False}
    timeout after the request    raises without those details: the ledger marks it UNKNOWN

A bulk request that SendGrid refuses only because of some personalizations (every error's
`field` is `personalizations.<n>…`) fails those and sends the rest once more in a second
request: SendGrid refuses a request whole, so nothing of the first went out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
from sendgrid.helpers.mail import (
    Attachment,
    Content,
    CustomArg,
    Disposition,
    FileContent,
    FileName,
    FileType,
    From,
    Mail,
    Personalization,
    ReplyTo,
    Subject,
    To,
)

from relay.notifications.contracts import NotificationStatus, Provider
from relay.notifications.senders import Outgoing, Sent
from relay.provider_errors import error_for_status, is_transient_status, translate
from relay.settings import Settings

DEFAULT_API_BASE = "https://api.sendgrid.com"
MAIL_SEND_PATH = "/v3/mail/send"
MAX_PERSONALIZATIONS = 1000
# The custom arg SendGrid echoes on every event of a personalization.
NOTIFICATION_ARG = "relayNotificationId"
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30.0, connect=10.0)
# Enough parallel requests for a pump sending batches concurrently, bounded so a burst cannot
# open hundreds of sockets to SendGrid.
MAX_CONNECTIONS = 64
_ERROR_PREFIX = "SENDGRID_"
_PERSONALIZATION_FIELD = re.compile(r"personalizations\.(\d+)(?:\.|$)")
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\"']+@[^\s@<>()\[\],;:\"']+")
_MESSAGE_LIMIT = 300


def without_addresses(text: str | None) -> str | None:
    """`text` with every email address replaced, and bounded: it is kept in the database."""
    if not text:
        return None
    return _ADDRESS.sub("<address>", text)[:_MESSAGE_LIMIT]


class SendGridSender:
    """The SendGrid `BulkSender`. One instance per worker; `close()` closes its client."""

    provider = Provider.SENDGRID

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        email_from: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._url = (api_base or DEFAULT_API_BASE).rstrip("/") + MAIL_SEND_PATH
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._email_from = email_from
        self._session = session

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: a ClientSession binds to the running event loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=REQUEST_TIMEOUT,
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
            )
        return self._session

    @staticmethod
    def configured(settings: Settings) -> bool:
        return settings.sendgrid_api_key is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> SendGridSender:
        if settings.sendgrid_api_key is None:
            raise ValueError("SENDGRID_API_KEY is not set")
        return cls(
            settings.sendgrid_api_key.get_secret_value(),
            api_base=settings.sendgrid_api_base,
            email_from=settings.email_from,
        )

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def send(self, message: Outgoing) -> Sent:
        [sent] = await self.send_bulk([message])
        return sent

    async def send_bulk(self, messages: list[Outgoing]) -> list[Sent]:
        """One request, one personalization per message, one Sent per message (in order).

        The messages share everything but `to` and `templateData` (the caller groups them);
        at most 1,000. Raises ValueError for a batch that breaks that."""
        if not 1 <= len(messages) <= MAX_PERSONALIZATIONS:
            raise ValueError(f"a SendGrid request carries 1 to {MAX_PERSONALIZATIONS} messages")
        shared = _shared_content(messages[0])
        if any(_shared_content(m) != shared for m in messages[1:]):
            raise ValueError("messages of one SendGrid request must share their content")
        results: dict[str, Sent] = {}
        pending = list(messages)
        # At most two rounds: the second only after SendGrid named the personalizations it
        # refused, and refused the request for nothing else.
        for round_ in range(2):
            refused = await self._post(pending, results, split=round_ == 0)
            if not refused:
                break
            pending = [m for m in pending if m.id not in refused]
            if not pending:
                break
        return [results[m.id] for m in messages]

    async def _post(
        self, messages: list[Outgoing], results: dict[str, Sent], *, split: bool
    ) -> set[str]:
        """Send `messages` as one request and fill `results`. With `split`, a refusal naming
        only some personalizations fails those alone and returns their ids, the others left
        pending; otherwise every message gets a result."""
        body = build_request(messages, self._email_from)
        try:
            async with self._client().post(self._url, json=body, headers=self._headers) as answer:
                status = answer.status
                headers = answer.headers.copy()  # case-insensitive, as HTTP's names
                raw = await answer.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise translate(self.provider.value, exc) from None
        response = _Response(status, headers, raw)
        if 200 <= status < 300:
            message_id = response.headers.get("X-Message-Id")
            for m in messages:
                results[m.id] = Sent(self.provider, NotificationStatus.SENT, message_id)
            return set()
        errors = _errors(response)
        first = without_addresses(str(errors[0].get("message") or "")) if errors else None
        if is_transient_status(status) or status < 400:
            raise error_for_status(
                self.provider.value, status, headers=response.headers, reason=first
            )
        code = f"{_ERROR_PREFIX}{status}"
        # Which personalization each error is about, in request order (the body's order).
        order = [p["custom_args"][NOTIFICATION_ARG] for p in body["personalizations"]]
        blamed: dict[str, str | None] = {}
        for error in errors if split else []:
            match = _PERSONALIZATION_FIELD.match(str(error.get("field") or ""))
            if match is None or int(match.group(1)) >= len(order):
                blamed = {}
                break
            blamed.setdefault(order[int(match.group(1))], without_addresses(error.get("message")))
        if not blamed or len(blamed) == len(messages):
            for m in messages:
                results[m.id] = Sent(
                    self.provider, NotificationStatus.FAILED, error_code=code, error_message=first
                )
            return set()
        for message_id, reason in blamed.items():
            results[message_id] = Sent(
                self.provider, NotificationStatus.FAILED, error_code=code, error_message=reason
            )
        return set(blamed)


def _shared_content(message: Outgoing) -> dict[str, Any]:
    return {k: v for k, v in message.content.items() if k != "templateData"}


class _Response:
    """What `_post` keeps of an answer, read whole before the connection is released."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def _errors(response: _Response) -> list[dict[str, Any]]:
    try:
        body = json.loads(response.body)
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def build_request(messages: list[Outgoing], email_from: str | None) -> dict[str, Any]:
    """The v3 mail send body for `messages` (sharing the first one's content)."""
    content = messages[0].content
    mail = Mail()
    sender = content.get("from") or email_from
    if sender:
        mail.from_email = From(sender)
    if content.get("replyTo"):
        mail.reply_to = ReplyTo(content["replyTo"])
    template_id = content.get("templateId")
    if template_id:
        mail.template_id = template_id
    else:
        if content.get("subject"):
            mail.subject = Subject(content["subject"])
        # SendGrid requires text/plain before text/html when both are present.
        if content.get("text"):
            mail.add_content(Content("text/plain", content["text"]))
        if content.get("html"):
            mail.add_content(Content("text/html", content["html"]))
    for attachment in content.get("attachments") or []:
        mail.add_attachment(
            Attachment(
                FileContent(attachment["content"]),
                FileName(attachment["filename"]),
                FileType(attachment["type"]) if attachment.get("type") else None,
                Disposition("attachment"),
            )
        )
    for n, message in enumerate(messages):
        if not message.to:
            raise ValueError("an email needs a recipient")
        personalization = Personalization()
        personalization.add_to(To(message.to))
        personalization.add_custom_arg(CustomArg(NOTIFICATION_ARG, message.id))
        if template_id:
            personalization.dynamic_template_data = dict(message.content.get("templateData") or {})
        # The helper inserts at an index (0 by default, which would reverse the order).
        mail.add_personalization(personalization, index=n)
    body: dict[str, Any] = mail.get()
    return body
