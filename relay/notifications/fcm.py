"""Push through Firebase Cloud Messaging with firebase-admin: `FcmSender`, the send pump's
`Sender` for the push channel.

One firebase-admin App per sender, named uniquely, from the service-account JSON at
FIREBASE_CREDENTIALS; FCM_API_BASE (scheme, host and port) points its messaging service
somewhere other than fcm.googleapis.com (the sandbox). A push goes to `message.tokens`
(the caller resolved userId → tokens) in chunks of 500 through `send_each_for_multicast`.

A push's content (the API's names):

    title, body        the notification
    data               {str: str}; FCM refuses any other value
    android            {priority: "high"|"normal", ttl: seconds, collapseKey,
                        restrictedPackageName, channelId, sound, icon, color: "#rrggbb",
                        tag, clickAction}
    apns               {headers: {str: str}, badge: int, sound, category, threadId,
                        contentAvailable: bool, mutableContent: bool}

Content FCM would refuse (a non-string data value, an unknown android/apns field, a bad
color) is refused before anything is sent: FAILED, FCM_INVALID_ARGUMENT, no token removed.

What a send returns or raises:

- one `TokenResult` per distinct token: ok with FCM's message id, or FCM's error code.
  `remove` for UNREGISTERED, SENDER_ID_MISMATCH, and INVALID_ARGUMENT only when FCM's
  error names the token (a `message.token` field violation: FCM's structured answer, never
  its message text);
- SENT when at least one token got the message, else FAILED with `FCM_<code>` of the first
  token (`FCM_NO_VALID_TOKENS` when there are none);
- when no token got it and FCM failed transiently (UNAVAILABLE, INTERNAL, QUOTA_EXCEEDED,
  a refused connection), a retryable ApplicationError: with `status` in its details when
  FCM answered, `connected: False` when no request reached it (both "FCM did not act" to
  the ledger); a timeout or a dropped connection leaves only `provider`, which the ledger
  treats as an unknown outcome. Once some token got the message, transient failures of
  other tokens are reported on those tokens and never retried: a retry would push twice.

The SDK's own HTTP retries are switched off for FCM's origin: Temporal retries (principle
6), and urllib3's read retry would resend a message whose answer was lost.
Nothing here logs a token or a message's content.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import firebase_admin
import requests
import requests.adapters
from firebase_admin import credentials, exceptions, messaging
from google.auth import exceptions as google_auth_exceptions
from google.auth.transport.requests import Request as GoogleAuthRequest
from temporalio.exceptions import ApplicationError

from relay.errors import ConfigError, ErrorCode
from relay.notifications.contracts import NotificationStatus, Provider
from relay.notifications.senders import Outgoing, Sent, TokenResult
from relay.provider_errors import error_for_status, is_transient_status
from relay.settings import Settings

logger = logging.getLogger(__name__)

PROVIDER_NAME = Provider.FCM.value
# FCM's ceiling for one multicast (send_each_for_multicast refuses more).
MULTICAST_LIMIT = 500
DEFAULT_TIMEOUT_SECONDS = 30.0
FCM_ORIGIN = "https://fcm.googleapis.com"
# Connections kept to FCM: send_each runs one thread per message; beyond this many the
# threads wait for a connection instead of opening (and discarding) more.
POOL_SIZE = 100

# Tokens FCM says are dead: the device uninstalled the app, or the token belongs to
# another sender. Removing them is what keeps a user's device list true.
_DEAD_TOKEN_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
_INVALID_ARGUMENT = "INVALID_ARGUMENT"
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
_TOKEN_FIELD = "message.token"  # noqa: S105 - a field name

ANDROID_FIELDS: dict[str, str] = {
    "priority": "priority",
    "ttl": "ttl",
    "collapseKey": "collapse_key",
    "restrictedPackageName": "restricted_package_name",
}
ANDROID_NOTIFICATION_FIELDS: dict[str, str] = {
    "channelId": "channel_id",
    "sound": "sound",
    "icon": "icon",
    "color": "color",
    "tag": "tag",
    "clickAction": "click_action",
}
APNS_FIELDS: dict[str, str] = {
    "badge": "badge",
    "sound": "sound",
    "category": "category",
    "threadId": "thread_id",
    "contentAvailable": "content_available",
    "mutableContent": "mutable_content",
}


def configured(settings: Settings) -> bool:
    """FCM can be used: FIREBASE_CREDENTIALS names a service-account JSON."""
    return bool(settings.firebase_credentials)


def point_messaging(app: firebase_admin.App, api_base: str | None) -> None:
    """Send `app`'s messages to `api_base` (None: FCM itself), with no SDK retries.

    firebase-admin keeps the send URL on its messaging service, built from the project id,
    with no public option (relay.sandbox.fcm.point_messaging sets the same URL; this copy
    keeps production code independent of the sandbox module)."""
    service = messaging._get_messaging_service(app)
    origin = FCM_ORIGIN
    if api_base:
        origin = api_base.rstrip("/")
        service._fcm_url = f"{origin}/v1/projects/{service._project_id}/messages:send"
    # Mounted on FCM's origin, this adapter wins over the SDK's retrying ones (requests
    # picks the longest matching prefix); max_retries=0 also means no read retry.
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=1, pool_maxsize=POOL_SIZE, max_retries=0, pool_block=True
    )
    service._client.session.mount(f"{origin}/", adapter)


@dataclass(frozen=True)
class FcmFailure:
    """What FCM's refusal of one token means (`classify`)."""

    code: str
    remove: bool
    transient: bool
    status: int | None = None
    headers: Mapping[str, str] | None = None
    # False: the request never reached FCM (refused, DNS, connect timeout).
    connected: bool = True


class FcmSender:
    """Push to device tokens through FCM (`send_each_for_multicast`, 500 a call).

    Thread-safe for concurrent sends: firebase-admin's messaging service and its session
    are shared, each multicast runs in a worker thread. `close()` deletes the App."""

    provider = Provider.FCM

    def __init__(
        self,
        credentials_path: str,
        api_base: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        try:
            certificate = credentials.Certificate(credentials_path)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                "FIREBASE_CREDENTIALS is not a readable service-account JSON file "
                f"({type(exc).__name__})"
            ) from None
        self._app = firebase_admin.initialize_app(
            certificate,
            {"httpTimeout": timeout},
            name=f"relay-fcm-{uuid.uuid4().hex}",
        )
        point_messaging(self._app, api_base)
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> FcmSender:
        if not settings.firebase_credentials:
            raise ConfigError("FCM is not configured: set FIREBASE_CREDENTIALS")
        return cls(settings.firebase_credentials, settings.fcm_api_base)

    @staticmethod
    def configured(settings: Settings) -> bool:
        return configured(settings)

    async def send(self, message: Outgoing) -> Sent:
        tokens = list(dict.fromkeys(message.tokens))  # one message per device
        if not tokens:
            return Sent(
                self.provider,
                NotificationStatus.FAILED,
                error_code="FCM_NO_VALID_TOKENS",
                error_message="the push has no device token to go to",
            )
        try:
            template = multicast_fields(message.content)
        except ValueError as exc:
            return _refused_content(tokens, str(exc))

        results: list[TokenResult] = []
        for start in range(0, len(tokens), MULTICAST_LIMIT):
            chunk = tokens[start : start + MULTICAST_LIMIT]
            await asyncio.to_thread(self._ensure_access_token)
            try:
                batch = await asyncio.to_thread(self._send_chunk, chunk, template)
            except ValueError as exc:
                # The SDK refused the content while encoding, before any request left.
                if not results:
                    return _refused_content(tokens, str(exc))
                reason = str(exc)
                results.extend(
                    TokenResult(t, ok=False, error_code=_INVALID_ARGUMENT) for t in tokens[start:]
                )
                logger.warning("fcm refused the rest of a push locally: %s", reason)
                break
            except exceptions.FirebaseError as exc:
                # send_each raises only when something escaped its per-message handling:
                # this chunk's fate is unknown.
                raise ApplicationError(
                    f"call to {PROVIDER_NAME} failed ({type(exc).__name__})",
                    {"provider": PROVIDER_NAME},
                    type=ErrorCode.PROVIDER_ERROR.value,
                ) from None
            failures: list[FcmFailure] = []
            for token, response in zip(chunk, batch.responses, strict=True):
                if response.success:
                    results.append(TokenResult(token, ok=True, message_id=response.message_id))
                    continue
                failure = classify(response.exception)
                failures.append(failure)
                results.append(
                    TokenResult(token, ok=False, error_code=failure.code, remove=failure.remove)
                )
            if not any(r.ok for r in results) and any(f.transient for f in failures):
                raise _outage(failures)

        return _sent(results)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Off the event loop: the messaging service closes its async client with asyncio.run.
        await asyncio.to_thread(firebase_admin.delete_app, self._app)

    # --- in worker threads ------------------------------------------------------------

    def _ensure_access_token(self) -> None:
        """Fetch the OAuth token before the multicast, so a token endpoint that fails is
        one clear failure before any message left, not 500 failures inside the SDK's
        threads."""
        credential = self._app.credential.get_credential()
        if credential.valid:
            return
        try:
            credential.refresh(GoogleAuthRequest())
        except google_auth_exceptions.RefreshError as exc:
            if not exc.retryable:
                raise ApplicationError(
                    f"{PROVIDER_NAME} refused the service account's credentials",
                    {"provider": PROVIDER_NAME, "status": 401},
                    type=ErrorCode.PROVIDER_ERROR.value,
                    non_retryable=True,
                ) from None
            raise _not_sent("the token endpoint failed") from None
        except google_auth_exceptions.TransportError:
            raise _not_sent("the token endpoint could not be reached") from None

    def _send_chunk(self, tokens: list[str], template: dict[str, Any]) -> messaging.BatchResponse:
        return messaging.send_each_for_multicast(
            messaging.MulticastMessage(tokens=tokens, **template), app=self._app
        )


# --- content ------------------------------------------------------------------------------


def multicast_fields(content: Mapping[str, Any]) -> dict[str, Any]:
    """MulticastMessage's arguments (all but tokens) from a push's content.
    Raises ValueError for a shape FCM would refuse; the SDK checks the rest."""
    fields: dict[str, Any] = {}
    title, body = content.get("title"), content.get("body")
    if title is not None or body is not None:
        fields["notification"] = messaging.Notification(title=title, body=body)
    data = content.get("data")
    if data:
        if not isinstance(data, Mapping) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in data.items()
        ):
            raise ValueError("data must map strings to strings")
        fields["data"] = dict(data)
    android = content.get("android")
    if android:
        fields["android"] = _android(android)
    apns = content.get("apns")
    if apns:
        fields["apns"] = _apns(apns)
    return fields


def _android(value: Any) -> messaging.AndroidConfig:
    options = _known(value, "android", {**ANDROID_FIELDS, **ANDROID_NOTIFICATION_FIELDS})
    config = {ANDROID_FIELDS[k]: v for k, v in options.items() if k in ANDROID_FIELDS}
    notification = {
        ANDROID_NOTIFICATION_FIELDS[k]: v
        for k, v in options.items()
        if k in ANDROID_NOTIFICATION_FIELDS
    }
    if notification:
        config["notification"] = messaging.AndroidNotification(**notification)
    return messaging.AndroidConfig(**config)


def _apns(value: Any) -> messaging.APNSConfig:
    options = _known(value, "apns", {**APNS_FIELDS, "headers": "headers"})
    headers = options.get("headers")
    if headers is not None and not (
        isinstance(headers, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise ValueError("apns.headers must map strings to strings")
    aps = {APNS_FIELDS[k]: v for k, v in options.items() if k in APNS_FIELDS}
    payload = messaging.APNSPayload(aps=messaging.Aps(**aps)) if aps else None
    return messaging.APNSConfig(headers=dict(headers) if headers else None, payload=payload)


def _known(value: Any, name: str, allowed: Mapping[str, str]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be an object")
    unknown = sorted(str(key) for key in value if key not in allowed)
    if unknown:
        raise ValueError(f"{name} has unknown fields: {', '.join(unknown)}")
    return {key: item for key, item in value.items() if item is not None}


# --- FCM's answers ------------------------------------------------------------------------


def classify(exc: BaseException | None) -> FcmFailure:
    """What FCM's refusal of one token means: its code, whether the token is dead, whether
    trying again later could succeed."""
    if not isinstance(exc, exceptions.FirebaseError):
        return FcmFailure(code="UNKNOWN", remove=False, transient=True)
    response = exc.http_response
    status = getattr(response, "status_code", None)
    error = _error_body(response)
    code = _fcm_error_code(error) or str(exc.code)
    if status is None:
        # No answer: refused, timed out, or dropped; only a refusal proves nothing left.
        return FcmFailure(code=code, remove=False, transient=True, connected=_reached(exc))
    headers = getattr(response, "headers", None)
    transient = is_transient_status(status)
    remove = code in _DEAD_TOKEN_CODES or (
        code == _INVALID_ARGUMENT and _names_field(error, _TOKEN_FIELD)
    )
    return FcmFailure(
        code=code,
        remove=remove and not transient,
        transient=transient,
        status=status,
        headers=headers if isinstance(headers, Mapping) else None,
    )


def _error_body(response: Any) -> dict[str, Any]:
    try:
        body = response.json() if response is not None else None
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _details(error: Mapping[str, Any]) -> list[dict[str, Any]]:
    details = error.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _fcm_error_code(error: Mapping[str, Any]) -> str | None:
    for detail in _details(error):
        if detail.get("@type") == _FCM_ERROR_TYPE and isinstance(detail.get("errorCode"), str):
            return str(detail["errorCode"])
    status = error.get("status")
    return status if isinstance(status, str) and status else None


def _names_field(error: Mapping[str, Any], field_name: str) -> bool:
    """Whether a BadRequest detail of FCM's error names `field_name`."""
    for detail in _details(error):
        if detail.get("@type") != _BAD_REQUEST_TYPE:
            continue
        violations = detail.get("fieldViolations")
        if isinstance(violations, list) and any(
            isinstance(v, dict) and v.get("field") == field_name for v in violations
        ):
            return True
    return False


# urllib3's and requests' names for "the connection was never opened".
_NEVER_CONNECTED = frozenset(
    {"NewConnectionError", "NameResolutionError", "ConnectTimeoutError", "ConnectTimeout"}
)


def _reached(exc: exceptions.FirebaseError) -> bool:
    """False when the request provably never reached FCM (the cause chain holds a failure
    to open the connection); True when it may have (a read timeout, a dropped answer)."""
    pending: list[object] = [exc.cause]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or any(
            cls.__name__ in _NEVER_CONNECTED for cls in type(current).__mro__
        ):
            return False
        if isinstance(current, BaseException):
            pending.extend([current.__cause__, current.__context__, *current.args])
        pending.append(getattr(current, "reason", None))  # urllib3's MaxRetryError
    return True


def _outage(failures: list[FcmFailure]) -> ApplicationError:
    """The retryable failure of a send no token got, for the ledger to read."""
    transient = [f for f in failures if f.transient]
    if any(f.status is None and f.connected for f in transient):
        # Some request may have reached FCM and its answer was lost: the outcome is unknown.
        return ApplicationError(
            f"call to {PROVIDER_NAME} timed out or lost its answer",
            {"provider": PROVIDER_NAME},
            type=ErrorCode.PROVIDER_ERROR.value,
        )
    answered = [f for f in transient if f.status is not None]
    if answered:
        first = answered[0]
        assert first.status is not None
        return error_for_status(
            PROVIDER_NAME, first.status, headers=first.headers, reason=first.code
        )
    return _not_sent("could not connect")


def _not_sent(why: str) -> ApplicationError:
    # No request reached FCM (the OAuth token is fetched before any message goes out).
    return ApplicationError(
        f"call to {PROVIDER_NAME} failed: {why}",
        {"provider": PROVIDER_NAME, "connected": False},
        type=ErrorCode.PROVIDER_ERROR.value,
    )


def _refused_content(tokens: list[str], reason: str) -> Sent:
    return Sent(
        Provider.FCM,
        NotificationStatus.FAILED,
        error_code=f"FCM_{_INVALID_ARGUMENT}",
        error_message=reason[:200],
        tokens=[TokenResult(t, ok=False, error_code=_INVALID_ARGUMENT) for t in tokens],
    )


def _sent(results: list[TokenResult]) -> Sent:
    delivered = [r for r in results if r.ok]
    if delivered:
        return Sent(
            Provider.FCM,
            NotificationStatus.SENT,
            provider_message_id=delivered[0].message_id,
            tokens=results,
        )
    first = results[0]
    refused = sum(1 for r in results if not r.ok)
    return Sent(
        Provider.FCM,
        NotificationStatus.FAILED,
        error_code=f"FCM_{first.error_code or 'UNKNOWN'}",
        error_message=f"FCM refused the push for every device ({refused})",
        tokens=results,
    )
