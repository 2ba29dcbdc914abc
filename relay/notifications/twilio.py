"""SMS and WhatsApp through Twilio's Messages API, with the `twilio` package.

The package's asyncio path (`AsyncTwilioHttpClient` + `messages.create_async`) is used, so
a send holds no thread while Twilio answers. It honours `client.api.base_url`, which is how
TWILIO_API_BASE points it at another server (the sandbox: relay/sandbox/twilio.py); the
tests send through it to the sandbox. Its aiohttp session is opened on the first send,
inside the worker's event loop, and closed by `close()`.

What a send returns or raises (relay/notifications/senders.py):

    Twilio accepted it                   Sent(SENT, provider_message_id=<the SM… sid>)
    Twilio refused it (4xx: a bad To,
      an opted-out number, bad content)  Sent(FAILED, error_code="TWILIO_<code>"), its
                                         message with every phone number taken out
    429, 5xx, 408, timeouts, no
      connection                         raised, translated by relay.provider_errors
                                         (a refused connection says "connected": False)

Nothing here logs a number, a body or a credential; the package's own request log names
only the URL, which holds the account SID.
"""

from __future__ import annotations

import json
import re
from typing import Any

from temporalio.exceptions import ApplicationError
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from relay.errors import ConfigError, ErrorCode
from relay.notifications.contracts import Channel, NotificationStatus, Provider
from relay.notifications.senders import Outgoing, Sent
from relay.provider_errors import is_transient_status, translate
from relay.settings import Settings

PROVIDER = "twilio"
WHATSAPP_PREFIX = "whatsapp:"
# Seconds for a whole send. A send that times out is ambiguous (the request may have
# left), so the ledger never re-sends it blindly; a refused connection is not.
SEND_TIMEOUT_SECONDS = 30.0
_ERROR_MESSAGE_LIMIT = 200
# Anything that looks like a phone number in Twilio's error messages ("The 'To' number
# +15005550001 is not a valid phone number."), so none reaches the database or a log.
_NUMBER = re.compile(r"(?:whatsapp:)?\+?[0-9][0-9 ().\-]{5,}[0-9]")
# The package prefixes every refusal with the operation it was doing.
_SDK_PREFIX = re.compile(r"^Unable to [a-z ]+: ")


def configured(settings: Settings, channel: Channel) -> bool:
    """Whether Twilio can send on `channel`: the account's SID and auth token, and the
    channel's sender (TWILIO_FROM_NUMBER for SMS, TWILIO_WHATSAPP_NUMBER for WhatsApp)."""
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        return False
    if channel is Channel.SMS:
        return bool(settings.twilio_from_number)
    if channel is Channel.WHATSAPP:
        return bool(settings.twilio_whatsapp_number)
    return False


class _TimedHttpClient(AsyncTwilioHttpClient):
    """The package's aiohttp client with a timeout on every request: on the async path the
    package passes `timeout=None` per request (ignoring the client's own `timeout`), which
    aiohttp reads as "wait forever"."""

    async def request(
        self,
        method: str,
        url: str,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109 - the package's signature
        **kwargs: Any,
    ) -> Any:
        return await super().request(method, url, *args, timeout=timeout or self.timeout, **kwargs)


class TwilioSender:
    """Sends `Channel.SMS` and `Channel.WHATSAPP` messages through one Twilio account.

    SMS: To, From = TWILIO_FROM_NUMBER, Body, StatusCallback. WhatsApp: both numbers with
    the `whatsapp:` prefix, From = TWILIO_WHATSAPP_NUMBER; Body and/or MediaUrl (one URL or
    a list), or a Content template (ContentSid + ContentVariables, a dict sent as JSON).
    One `send` is one Twilio request: no retries here (Temporal retries what is raised)."""

    provider = Provider.TWILIO

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        from_number: str | None = None,
        whatsapp_number: str | None = None,
        api_base: str | None = None,
        timeout: float = SEND_TIMEOUT_SECONDS,
    ) -> None:
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._from_number = from_number
        self._whatsapp_number = whatsapp_number
        self._api_base = api_base
        self._timeout = timeout
        self._http: _TimedHttpClient | None = None
        self._client: Client | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioSender:
        if not (settings.twilio_account_sid and settings.twilio_auth_token):
            raise ConfigError("Twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        return cls(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            from_number=settings.twilio_from_number,
            whatsapp_number=settings.twilio_whatsapp_number,
            api_base=settings.twilio_api_base,
        )

    def _twilio(self) -> Client:
        # Built on first use: aiohttp binds its session to the running event loop.
        if self._client is None:
            self._http = _TimedHttpClient(timeout=self._timeout)
            client = Client(self._account_sid, self._auth_token, http_client=self._http)
            if self._api_base:
                # The package has no option for it; the Messages API hangs off the `api`
                # domain. TWILIO_EDGE / TWILIO_REGION would rewrite the host, so not here.
                client.edge = None
                client.region = None
                client.api.base_url = self._api_base.rstrip("/")
            self._client = client
        return self._client

    def _request(self, message: Outgoing) -> dict[str, Any] | Sent:
        """The create call's arguments, or the FAILED result when it cannot be made."""
        if not message.to:
            return self._refused(ErrorCode.VALIDATION_ERROR, "the message has no recipient")
        content = message.content
        if message.channel is Channel.SMS:
            if not self._from_number:
                return self._refused(
                    ErrorCode.PROVIDER_NOT_CONFIGURED, "TWILIO_FROM_NUMBER is not set"
                )
            return {
                "to": message.to,
                "from_": self._from_number,
                "body": content.get("body"),
                "status_callback": message.status_callback,
            }
        if message.channel is Channel.WHATSAPP:
            if not self._whatsapp_number:
                return self._refused(
                    ErrorCode.PROVIDER_NOT_CONFIGURED, "TWILIO_WHATSAPP_NUMBER is not set"
                )
            media = content.get("mediaUrl")
            variables = content.get("contentVariables")
            if isinstance(variables, dict):
                variables = json.dumps(variables, separators=(",", ":"))
            return {
                "to": _whatsapp(message.to),
                "from_": _whatsapp(self._whatsapp_number),
                "body": content.get("body"),
                "media_url": [media] if isinstance(media, str) else media,
                "content_sid": content.get("contentSid"),
                "content_variables": variables,
                "status_callback": message.status_callback,
            }
        raise ApplicationError(
            f"Twilio does not send {message.channel.value} messages",
            type=ErrorCode.INVALID_PROVIDER.value,
            non_retryable=True,
        )

    def _refused(self, code: ErrorCode, reason: str) -> Sent:
        return Sent(
            self.provider, NotificationStatus.FAILED, error_code=code.value, error_message=reason
        )

    async def send(self, message: Outgoing) -> Sent:
        request = self._request(message)
        if isinstance(request, Sent):
            return request
        # The package sends no parameter whose value is None.
        arguments = {name: value for name, value in request.items() if value is not None}
        try:
            created = await self._twilio().messages.create_async(**arguments)
        except TwilioRestException as exc:
            if is_transient_status(exc.status):
                raise translate(PROVIDER, exc) from None
            return Sent(
                self.provider,
                NotificationStatus.FAILED,
                error_code=f"TWILIO_{exc.code}" if exc.code else f"TWILIO_HTTP_{exc.status}",
                error_message=_without_numbers(exc.msg),
            )
        except Exception as exc:
            # Connection failures, timeouts, an unreadable answer: retryable; the details
            # tell the ledger whether the request can have reached Twilio.
            raise translate(PROVIDER, exc) from None
        return Sent(self.provider, NotificationStatus.SENT, provider_message_id=created.sid)

    async def close(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.close()


def _whatsapp(number: str) -> str:
    return number if number.startswith(WHATSAPP_PREFIX) else f"{WHATSAPP_PREFIX}{number}"


def _without_numbers(message: str | None) -> str | None:
    """Twilio's error message, short, with every phone number replaced."""
    if not message:
        return None
    text = _NUMBER.sub("<number>", _SDK_PREFIX.sub("", str(message)))
    return text.strip()[:_ERROR_MESSAGE_LIMIT] or None
