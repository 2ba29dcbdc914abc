"""Email through any SMTP server: the fallback when SendGrid is absent or failing.

Standard library only: the message is an `email.message.EmailMessage` (text and HTML as
alternatives, attachments), sent with `smtplib` in a worker thread (`asyncio.to_thread`),
one connection per message: STARTTLS when SMTP_TLS, AUTH when SMTP_USER. A `templateId` is
rendered from EMAIL_TEMPLATES_DIR by `TemplateStore`, so the same id works on both paths.
The provider message id is the Message-ID header generated here.

What a send returns or raises (the rules of relay.notifications.senders):

    250 to DATA                       Sent(SENT, provider_message_id = the Message-ID)
    a 5xx reply at any step           Sent(FAILED, error_code="SMTP_<code>")
    a 4xx reply at any step           raises retryable, details {"provider": "smtp",
                                      "status": <code>}: the server refused, did not act
    refused connection, or any
    failure before DATA was sent      raises retryable, details {"provider": "smtp",
                                      "connected": False}: no mail transaction reached the
                                      server, so it cannot have acted
    a timeout or disconnect once
    DATA was sent                     raises retryable WITHOUT those details: the server
                                      may have queued the mail; the ledger marks it UNKNOWN
    an unknown template, a template
    that cannot render, no sender     Sent(FAILED, error_code=TEMPLATE_NOT_FOUND /
                                      TEMPLATE_ERROR / EMAIL_FROM_MISSING)

Reply texts are kept (they explain a refusal) with any address in them removed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.policy
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from enum import StrEnum

from temporalio.exceptions import ApplicationError

from relay.errors import ErrorCode
from relay.notifications.contracts import NotificationStatus, Provider
from relay.notifications.senders import Outgoing, Sent
from relay.notifications.sendgrid import without_addresses
from relay.notifications.templates import (
    TemplateNotFoundError,
    TemplateRenderError,
    TemplateStore,
)
from relay.settings import Settings

SMTP_TIMEOUT_SECONDS = 30.0
PLAIN_PORT = 25
SUBMISSION_PORT = 587
_ERROR_PREFIX = "SMTP_"
_MSGID_DOMAIN = "relay.local"


class _Stage(StrEnum):
    CONNECT = "connect"
    SESSION = "session"  # EHLO, STARTTLS, AUTH, MAIL FROM, RCPT TO
    DATA = "data"  # from the DATA command on: the server may accept the mail


@dataclass
class _Envelope:
    sender: str
    recipient: str
    raw: bytes
    smtputf8: bool
    message_id: str


class _Refused(Exception):
    """A reply code where success was expected, at a step smtplib does not check itself."""

    def __init__(self, code: int, reply: bytes) -> None:
        super().__init__(code)
        self.smtp_code = code
        self.smtp_error = reply


class SmtpSender:
    """The SMTP `Sender`. Holds no connection between sends; `close()` has nothing to close."""

    provider = Provider.SMTP

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        tls: bool = True,
        user: str | None = None,
        password: str | None = None,
        email_from: str | None = None,
        templates: TemplateStore | None = None,
        timeout: float = SMTP_TIMEOUT_SECONDS,
    ) -> None:
        self._host = host
        self._port = port or (SUBMISSION_PORT if tls else PLAIN_PORT)
        self._tls = tls
        self._user = user
        self._password = password
        self._email_from = email_from
        self._templates = templates or TemplateStore(None)
        self._timeout = timeout

    @staticmethod
    def configured(settings: Settings) -> bool:
        return settings.smtp_host is not None

    @classmethod
    def from_settings(cls, settings: Settings, templates: TemplateStore) -> SmtpSender:
        if settings.smtp_host is None:
            raise ValueError("SMTP_HOST is not set")
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            tls=settings.smtp_tls,
            user=settings.smtp_user,
            password=(
                settings.smtp_password.get_secret_value() if settings.smtp_password else None
            ),
            email_from=settings.email_from,
            templates=templates,
        )

    async def close(self) -> None:
        return None

    async def send(self, message: Outgoing) -> Sent:
        try:
            envelope = self._envelope(message)
        except TemplateNotFoundError:
            return self._failed("TEMPLATE_NOT_FOUND", "no such email template")
        except TemplateRenderError as exc:
            return self._failed("TEMPLATE_ERROR", str(exc))
        except _NoSender:
            return self._failed("EMAIL_FROM_MISSING", "no from address and no EMAIL_FROM")
        except (ValueError, binascii.Error) as exc:
            # A header with a line break, an undecodable attachment: never sendable.
            return self._failed("INVALID_MESSAGE", type(exc).__name__)
        return await asyncio.to_thread(self._deliver, envelope)

    def _failed(self, code: str, reason: str) -> Sent:
        return Sent(self.provider, NotificationStatus.FAILED, error_code=code, error_message=reason)

    # -- the message --------------------------------------------------------------------------

    def _envelope(self, message: Outgoing) -> _Envelope:
        content = message.content
        sender = content.get("from") or self._email_from
        if not sender:
            raise _NoSender
        if not message.to:
            raise ValueError("an email needs a recipient")
        subject, html, text = content.get("subject"), content.get("html"), content.get("text")
        if content.get("templateId"):
            rendered = self._templates.render(
                content["templateId"], content.get("templateData") or {}
            )
            subject, html, text = rendered.subject, rendered.html, rendered.text
        sender_address = parseaddr(sender)[1]
        domain = sender_address.rpartition("@")[2] or _MSGID_DOMAIN
        mail = EmailMessage()
        mail["From"] = sender
        mail["To"] = message.to
        if content.get("replyTo"):
            mail["Reply-To"] = content["replyTo"]
        mail["Subject"] = subject or ""
        mail["Date"] = formatdate(usegmt=True)
        # make_msgid's default domain is a DNS lookup of this host; the sender's is free.
        message_id = make_msgid(domain=domain)
        mail["Message-ID"] = message_id
        if text:
            mail.set_content(text)
            if html:
                mail.add_alternative(html, subtype="html")
        elif html:
            mail.set_content(html, subtype="html")
        else:
            mail.set_content("")
        for attachment in content.get("attachments") or []:
            maintype, _, subtype = (attachment.get("type") or "application/octet-stream").partition(
                "/"
            )
            mail.add_attachment(
                base64.b64decode(attachment["content"], validate=True),
                maintype=maintype,
                subtype=subtype or "octet-stream",
                filename=attachment["filename"],
            )
        smtputf8 = not (sender_address.isascii() and message.to.isascii())
        policy = email.policy.SMTPUTF8 if smtputf8 else email.policy.SMTP
        return _Envelope(
            sender=sender_address,
            recipient=message.to,
            raw=mail.as_bytes(policy=policy),
            smtputf8=smtputf8,
            message_id=message_id,
        )

    # -- the transaction (in a worker thread) ---------------------------------------------------

    def _deliver(self, envelope: _Envelope) -> Sent:
        stage = _Stage.CONNECT
        client: smtplib.SMTP | None = None
        delivered = False
        try:
            client = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
            stage = _Stage.SESSION
            client.ehlo()
            if self._tls:
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if self._user:
                client.login(self._user, self._password or "")
            options = []
            if envelope.smtputf8:
                options.append("SMTPUTF8")
            if client.has_extn("8bitmime"):
                options.append("BODY=8BITMIME")
            code, reply = client.mail(envelope.sender, options)
            if code != 250:
                raise _Refused(code, reply)
            code, reply = client.rcpt(envelope.recipient)
            if code not in (250, 251):
                raise _Refused(code, reply)
            stage = _Stage.DATA
            client.data(envelope.raw)  # raises SMTPDataError on anything but 354 then 250
            delivered = True
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()), (0, b""))
            return self._reply(code, reply)
        except (smtplib.SMTPResponseException, _Refused) as exc:
            return self._reply(exc.smtp_code, exc.smtp_error)
        except (OSError, smtplib.SMTPException) as exc:
            raise self._transport_failure(stage, exc) from None
        finally:
            if client is not None:
                # QUIT on a dead or stalled connection would wait out another timeout.
                if delivered:
                    _quit(client)
                else:
                    client.close()
        return Sent(self.provider, NotificationStatus.SENT, envelope.message_id)

    def _reply(self, code: int, reply: bytes | str) -> Sent:
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        reason = without_addresses(text)
        if 500 <= code <= 599:
            return Sent(
                self.provider,
                NotificationStatus.FAILED,
                error_code=f"{_ERROR_PREFIX}{code}",
                error_message=reason,
            )
        if 400 <= code <= 499:
            # A transient refusal: the server said no to this attempt, so it did not act.
            raise ApplicationError(
                f"smtp answered {code}" + (f": {reason}" if reason else ""),
                {"provider": self.provider.value, "status": code},
                type=ErrorCode.PROVIDER_ERROR.value,
            )
        # A reply outside 4xx/5xx where a success was due (a broken server): nothing was
        # accepted, so a retry is safe.
        raise ApplicationError(
            f"smtp answered an unexpected {code}",
            {"provider": self.provider.value, "connected": False},
            type=ErrorCode.PROVIDER_ERROR.value,
        )

    def _transport_failure(self, stage: _Stage, exc: BaseException) -> ApplicationError:
        kind = type(exc).__name__
        if stage is _Stage.DATA:
            # The mail may be sitting in the server's queue: never re-send it blindly.
            return ApplicationError(
                f"smtp connection failed after DATA ({kind}); the outcome is unknown",
                {"provider": self.provider.value, "stage": stage.value},
                type=ErrorCode.PROVIDER_ERROR.value,
            )
        return ApplicationError(
            f"smtp failed before the mail was sent ({kind} at {stage.value})",
            # "connected": False is how the ledger reads "did not act"; no mail transaction
            # reached the server even when the socket had opened.
            {"provider": self.provider.value, "connected": False, "stage": stage.value},
            type=ErrorCode.PROVIDER_ERROR.value,
        )


class _NoSender(Exception):
    pass


def _quit(client: smtplib.SMTP) -> None:
    """Say goodbye; a server that hangs up first has already done what it will do."""
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()
