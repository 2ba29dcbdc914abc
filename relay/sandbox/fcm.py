"""The FCM sandbox: a small HTTP server speaking Firebase Cloud Messaging's HTTP v1 send API and
Google's OAuth 2.0 token endpoint for service accounts, since neither can be reached from here.

`relay dev` can run it when FIREBASE_CREDENTIALS is unset in development (SANDBOX=auto), and
the tests run it in a thread (`FcmSandbox(port=0, credentials_file=…).run_in_thread()`).
The sandbox writes a service-account JSON (a freshly generated RSA key; `token_uri` at this
server) to FIREBASE_CREDENTIALS, so `firebase_admin.credentials.Certificate(path)` gets its
access token here through google-auth's ordinary JWT grant. firebase-admin has no option for
the FCM endpoint: Relay points an app's messaging service at FCM_API_BASE with
`point_messaging(app, api_base)` below (it sets the service's send URL; every send path,
`send`, `send_each`, `send_each_for_multicast` and their async forms, uses that URL).

Routes (Google's documented paths and shapes):

    POST /token                                   grant_type=urn:ietf:params:oauth:grant-type:
                                                  jwt-bearer, assertion=<RS256 JWT signed with
                                                  the service account's key, aud = token_uri
                                                  or Google's, as google-auth sends it>
    POST /v1/projects/{project}/messages:send     `Authorization: Bearer <token from /token>`;
                                                  {message, validate_only?}

A send answers `{"name": "projects/{project}/messages/{id}"}`. Errors have Google's shape,
`{"error": {code, message, status, details: [{"@type": …FcmError, errorCode}]}}`, so
firebase-admin raises its own exception classes. Magic tokens (the `token` of a message):

    bad-…          404 NOT_FOUND, errorCode UNREGISTERED (firebase-admin: UnregisteredError)
    mismatch-…     403 PERMISSION_DENIED, errorCode SENDER_ID_MISMATCH (SenderIdMismatchError)
    invalid-…      400 INVALID_ARGUMENT about `message.token` (InvalidArgumentError)
    anything else  sent

A message needs exactly one of `token`, `topic` and `condition`; the project must be the
service account's. `validate_only` sends nothing (and captures nothing) as FCM does.

Controls for `/sandbox` and tests (not Google's; camelCase like Relay's own API):

    GET  /_sandbox/messages?limit=    {data: push messages, newest first, with their outcome}
    POST /_sandbox/faults             {count}: the next `count` sends answer 503 UNAVAILABLE

FCM sends no delivery callbacks, so neither does the sandbox (no `/_sandbox/webhooks`).
Not modelled: topics' subscriptions (a topic send succeeds), the legacy and batch APIs,
quotas. State lives in memory; the private key is in the credentials file (owner-only)
and nowhere else. No token is logged.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.errors import ConfigError
from relay.sandbox.server import AppServer, free_port, port_open, wait_for_port
from relay.settings import Settings

if TYPE_CHECKING:
    from firebase_admin import App

logger = logging.getLogger(__name__)

SANDBOX_PROJECT = "relay-sandbox"
READY_SECONDS = 30
TOKEN_SECONDS = 3599
MESSAGES_LIMIT = 50
MAX_MESSAGES_LIMIT = 1000
GOOGLE_TOKEN_ENDPOINT = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# In DATA_DIR: the service account `relay dev`'s sandbox keeps across restarts.
CREDENTIALS_FILE_NAME = "fcm-sandbox-service-account.json"
# The clock skew the token endpoint forgives, as Google's does.
SKEW_SECONDS = 300
_FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    503: "UNAVAILABLE",
}


class FcmError(Exception):
    """A refusal in Google's error shape, with FCM's errorCode when it has one."""

    def __init__(
        self,
        code: int,
        message: str,
        error_code: str | None = None,
        violation: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.error_code = error_code
        self.violation = violation

    def response(self) -> JSONResponse:
        details: list[dict[str, Any]] = []
        if self.error_code is not None:
            details.append({"@type": _FCM_ERROR, "errorCode": self.error_code})
        if self.violation is not None:
            field_name, description = self.violation
            details.append(
                {
                    "@type": _BAD_REQUEST,
                    "fieldViolations": [{"field": field_name, "description": description}],
                }
            )
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "status": _STATUS.get(self.code, "INTERNAL"),
        }
        if details:
            error["details"] = details
        return JSONResponse({"error": error}, self.code)


class OAuthError(Exception):
    """A refusal of the token endpoint, in OAuth's shape."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "error_description": self.description}, 400)


def _b64url(raw: str) -> bytes:
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))


# --- the service account -------------------------------------------------------------------


@dataclass
class ServiceAccount:
    """A Google service account the sandbox made: its RSA key and who it is."""

    project_id: str
    key: rsa.RSAPrivateKey
    private_key_id: str
    client_email: str
    client_id: str

    @classmethod
    def create(cls, project_id: str = SANDBOX_PROJECT) -> ServiceAccount:
        return cls(
            project_id=project_id,
            key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
            private_key_id=secrets.token_hex(20),
            client_email=f"firebase-adminsdk@{project_id}.iam.gserviceaccount.com",
            client_id=str(secrets.randbelow(10**21)),
        )

    @classmethod
    def load(cls, path: Path) -> ServiceAccount:
        info = json.loads(path.read_text())
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(f"{path} holds no RSA private key")
        return cls(
            project_id=info["project_id"],
            key=key,
            private_key_id=info["private_key_id"],
            client_email=info["client_email"],
            client_id=info["client_id"],
        )

    def info(self, token_uri: str) -> dict[str, str]:
        """The service-account JSON, as Google's console downloads it."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": pem,
            "client_email": self.client_email,
            "client_id": self.client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
            + self.client_email.replace("@", "%40"),
            "universe_domain": "googleapis.com",
        }

    def write(self, path: Path, token_uri: str) -> None:
        """Write the JSON to `path`, owner-only (it holds the private key)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.info(token_uri), handle, indent=2)
        os.chmod(path, 0o600)

    def verify(self, assertion: str, audience: str) -> dict[str, Any]:
        """The claims of a JWT grant assertion this account signed for `audience`; raises
        OAuthError as Google's token endpoint answers."""
        try:
            header_raw, claims_raw, signature_raw = assertion.split(".")
            header = json.loads(_b64url(header_raw))
            claims = json.loads(_b64url(claims_raw))
            signature = _b64url(signature_raw)
        except (ValueError, binascii.Error) as exc:
            raise OAuthError("invalid_grant", "Invalid JWT: malformed.") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise OAuthError("invalid_grant", "Invalid JWT: malformed.")
        if header.get("alg") != "RS256":
            raise OAuthError("invalid_grant", "Invalid JWT: only RS256 is accepted.")
        try:
            self.key.public_key().verify(
                signature,
                f"{header_raw}.{claims_raw}".encode("ascii"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature as exc:
            raise OAuthError("invalid_grant", "Invalid JWT Signature.") from exc
        if claims.get("iss") != self.client_email:
            raise OAuthError("invalid_grant", "Invalid JWT: unknown issuer.")
        # google-auth always names Google's endpoint as the audience, whatever token_uri says.
        if claims.get("aud") not in (audience, GOOGLE_TOKEN_ENDPOINT):
            raise OAuthError("invalid_grant", "Invalid JWT: Token must be for this endpoint.")
        now = time.time()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise OAuthError("invalid_grant", "Invalid JWT: iat and exp are required.")
        if exp < now - SKEW_SECONDS or iat > now + SKEW_SECONDS:
            raise OAuthError(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim.",
            )
        return claims


# --- state ---------------------------------------------------------------------------------


def outcome_for(token: str | None) -> FcmError | None:
    """What FCM answers for a message to `token` (the magic prefixes); None: sent."""
    if token is None:
        return None
    if token.startswith("bad-"):
        return FcmError(404, "Requested entity was not found.", "UNREGISTERED")
    if token.startswith("mismatch-"):
        return FcmError(403, "SenderId mismatch", "SENDER_ID_MISMATCH")
    if token.startswith("invalid-"):
        return FcmError(
            400,
            "The registration token is not a valid FCM registration token",
            "INVALID_ARGUMENT",
            ("message.token", "Invalid registration token"),
        )
    return None


_TARGETS = ("token", "topic", "condition")
_TOPIC = re.compile(r"(/topics/)?[a-zA-Z0-9-_.~%]+")


class FcmState:
    """Everything the sandbox knows, behind one lock."""

    def __init__(self, account: ServiceAccount, base_url: str) -> None:
        self._lock = threading.Lock()
        self.account = account
        self.base_url = base_url
        self._tokens: dict[str, float] = {}
        self._messages: list[dict[str, Any]] = []
        self._faults = 0

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def close(self) -> None:
        pass

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._faults = count

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(m) for m in reversed(self._messages)]

    def issue_token(self, grant_type: str | None, assertion: str | None) -> dict[str, Any]:
        if grant_type != JWT_GRANT:
            raise OAuthError("unsupported_grant_type", "Invalid grant_type: " + str(grant_type))
        if not assertion:
            raise OAuthError("invalid_request", "Missing required parameter: assertion")
        self.account.verify(assertion, self.token_uri)
        token = f"ya29.sandbox-{secrets.token_urlsafe(48)}"
        now = time.monotonic()
        with self._lock:
            self._tokens = {t: e for t, e in self._tokens.items() if e > now}
            self._tokens[token] = now + TOKEN_SECONDS
        return {"access_token": token, "expires_in": TOKEN_SECONDS, "token_type": "Bearer"}

    def authenticate(self, authorization: str | None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        with self._lock:
            expiry = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            if expiry is None or expiry < time.monotonic():
                raise FcmError(
                    401,
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential.",
                )
            if self._faults > 0:
                self._faults -= 1
                raise FcmError(503, "The service is currently unavailable.", "UNAVAILABLE")

    def send(self, project: str, body: Any) -> dict[str, str]:
        if project != self.account.project_id:
            raise FcmError(403, "Permission 'cloudmessaging.messages.create' denied on resource")
        if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
            raise FcmError(
                400,
                "Request contains an invalid argument.",
                "INVALID_ARGUMENT",
                ("message", "The message is required."),
            )
        message: dict[str, Any] = body["message"]
        targets = [name for name in _TARGETS if message.get(name)]
        if len(targets) != 1:
            raise FcmError(
                400,
                "Request contains an invalid argument.",
                "INVALID_ARGUMENT",
                ("message", "Exactly one of token, topic or condition is required."),
            )
        topic = message.get("topic")
        if topic is not None and not (isinstance(topic, str) and _TOPIC.fullmatch(topic)):
            raise FcmError(
                400,
                "Request contains an invalid argument.",
                "INVALID_ARGUMENT",
                ("message.topic", "Invalid topic name."),
            )
        data = message.get("data")
        if data is not None and not (
            isinstance(data, dict) and all(isinstance(v, str) for v in data.values())
        ):
            raise FcmError(
                400,
                "Request contains an invalid argument.",
                "INVALID_ARGUMENT",
                ("message.data", "Data values must be strings."),
            )
        token = message.get("token")
        refusal = outcome_for(token if isinstance(token, str) else None)
        if body.get("validate_only") is True:
            if refusal is not None:
                raise refusal
            return {"name": f"projects/{project}/messages/fake_message_id"}
        message_id = f"0:{int(time.time() * 1000)}%{secrets.token_hex(8)}"
        notification = message.get("notification") or {}
        record = {
            "id": message_id,
            "name": f"projects/{project}/messages/{message_id}",
            "created": time.time(),
            "token": token,
            "topic": topic,
            "condition": message.get("condition"),
            "title": notification.get("title"),
            "body": notification.get("body"),
            "data": data or {},
            "android": message.get("android"),
            "apns": message.get("apns"),
            "webpush": message.get("webpush"),
            "status": "sent" if refusal is None else "failed",
            "errorCode": None if refusal is None else refusal.error_code,
        }
        with self._lock:
            self._messages.append(record)
        if refusal is not None:
            raise refusal
        return {"name": str(record["name"])}


# --- HTTP ----------------------------------------------------------------------------------

_Handler = Callable[[FcmState, Request], Awaitable[Response]]


def _state(request: Request) -> FcmState:
    state: FcmState = request.app.state.fcm
    return state


def _route(handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(_state(request), request)
        except (FcmError, OAuthError) as exc:
            return exc.response()

    return endpoint


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        raise FcmError(400, "Invalid JSON payload received.") from exc


async def _token(state: FcmState, request: Request) -> Response:
    form = await request.form()
    grant_type, assertion = form.get("grant_type"), form.get("assertion")
    return JSONResponse(
        state.issue_token(
            grant_type if isinstance(grant_type, str) else None,
            assertion if isinstance(assertion, str) else None,
        )
    )


async def _send(state: FcmState, request: Request) -> Response:
    state.authenticate(request.headers.get("authorization"))
    return JSONResponse(state.send(request.path_params["project"], await _json(request)))


async def _control_messages(state: FcmState, request: Request) -> Response:
    raw = request.query_params.get("limit", str(MESSAGES_LIMIT))
    limit = int(raw) if raw.isdigit() else 0
    if not 1 <= limit <= MAX_MESSAGES_LIMIT:
        raise FcmError(400, f"limit must be between 1 and {MAX_MESSAGES_LIMIT}")
    return JSONResponse({"data": state.messages()[:limit]})


async def _control_faults(state: FcmState, request: Request) -> Response:
    body = await _json(request)
    count = body.get("count") if isinstance(body, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise FcmError(400, "count must be a whole number")
    state.fail_next(count)
    return JSONResponse({"count": count})


def create_app(state: FcmState) -> Starlette:
    """The ASGI app serving `state`."""
    routes = [
        Route("/token", _route(_token), methods=["POST"]),
        # Starlette's path parameters stop at "/", and FCM's verb follows a colon.
        Route("/v1/projects/{project}/messages:send", _route(_send), methods=["POST"]),
        Route("/_sandbox/messages", _route(_control_messages), methods=["GET"]),
        Route("/_sandbox/faults", _route(_control_faults), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.fcm = state
    return app


# --- pointing firebase-admin at it ---------------------------------------------------------


def point_messaging(app: App, api_base: str) -> None:
    """Send `app`'s FCM messages to `api_base` (FCM_API_BASE: scheme, host and port) instead
    of fcm.googleapis.com. firebase-admin keeps the send URL on its messaging service, built
    from the project id, with no public option; this sets it, once per app."""
    from firebase_admin import messaging

    service = messaging._get_messaging_service(app)
    service._fcm_url = f"{api_base.rstrip('/')}/v1/projects/{service._project_id}/messages:send"


# --- running it ----------------------------------------------------------------------------


def wanted(settings: Settings) -> bool:
    """SANDBOX=auto, development, and no Firebase credentials: the sandbox stands in for FCM."""
    return (
        settings.sandbox == "auto"
        and settings.relay_env == "development"
        and settings.firebase_credentials is None
    )


@dataclass
class FcmSandbox:
    """One FCM sandbox server: its command, the settings that point Relay at it (the
    service-account JSON it writes to `credentials_file`), and a way to run it in this
    process (tests; `port=0` binds a free port and writes the file once it is known)."""

    port: int = field(default_factory=free_port)
    credentials_file: Path | None = None
    project_id: str = SANDBOX_PROJECT
    host: str = "127.0.0.1"
    account: ServiceAccount = field(init=False)

    def __post_init__(self) -> None:
        if self.credentials_file is None:
            fd, name = tempfile.mkstemp(prefix="relay-fcm-", suffix=".json")
            os.close(fd)
            self.credentials_file = Path(name)
        path = self.credentials_file
        # The same key across restarts: a running worker's credentials stay good.
        existing = path.exists() and path.stat().st_size > 0
        account = ServiceAccount.load(path) if existing else None
        if account is None or account.project_id != self.project_id:
            account = ServiceAccount.create(self.project_id)
        self.account = account
        if self.port:
            self.write_credentials()

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.api_base}/token"

    @property
    def credentials_path(self) -> Path:
        assert self.credentials_file is not None
        return self.credentials_file

    def write_credentials(self) -> None:
        """(Re)write the service-account JSON with this server's token_uri."""
        self.account.write(self.credentials_path, self.token_uri)

    def command(self) -> list[str]:
        """The command line; the key is read from the credentials file, never passed."""
        self.write_credentials()
        command = [sys.executable, "-m", "relay.sandbox.fcm", "--port", str(self.port)]
        command += ["--host", self.host, "--credentials", str(self.credentials_path)]
        return command

    def environment(self) -> dict[str, str]:
        """The settings (as environment variables) that point Relay's FCM code here."""
        return {
            "FIREBASE_CREDENTIALS": str(self.credentials_path),
            "FCM_API_BASE": self.api_base,
        }

    def state(self) -> FcmState:
        return FcmState(self.account, self.api_base)

    def ready(self) -> bool:
        return port_open(self.host, self.port)

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        wait_for_port(self.host, self.port, "the FCM sandbox", timeout)

    def run_in_thread(self) -> FcmServer:
        """Start serving in a thread of this process; stop it with `.stop()` or `with`."""
        return FcmServer(self).start()


class FcmServer:
    """A sandbox served in a daemon thread; `state` is there to inspect."""

    def __init__(self, sandbox: FcmSandbox) -> None:
        self.sandbox = sandbox
        self.state = FcmState(sandbox.account, "")
        self._server = AppServer(
            create_app(self.state), sandbox.host, sandbox.port, "FCM", self.state.close
        )
        sandbox.port = self._server.port
        self.state.base_url = sandbox.api_base
        sandbox.write_credentials()

    @property
    def api_base(self) -> str:
        return self.sandbox.api_base

    def start(self) -> FcmServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FcmServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def plan(settings: Settings) -> FcmSandbox | None:
    """The sandbox `relay dev` runs for these settings, or None (a real FCM, or none).
    Its service account is kept in DATA_DIR."""
    if not wanted(settings):
        return None
    return FcmSandbox(credentials_file=settings.data_dir / CREDENTIALS_FILE_NAME)


def describe(settings: Settings, sandbox: FcmSandbox | None) -> str:
    """The banner's line for FCM."""
    if sandbox is not None:
        return f"sandboxed (local FCM at {sandbox.api_base})"
    if settings.firebase_credentials is not None:
        return f"real ({settings.fcm_api_base or 'fcm.googleapis.com'})"
    return "not configured (set FIREBASE_CREDENTIALS, or SANDBOX=auto in development)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m relay.sandbox.fcm", description="Relay's local FCM sandbox."
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--credentials", type=Path, required=True)
    args = parser.parse_args(argv)
    if not args.credentials.exists():
        raise ConfigError(f"{args.credentials} does not exist: run the sandbox through FcmSandbox")
    state = FcmState(ServiceAccount.load(args.credentials), f"http://{args.host}:{args.port}")
    logging.basicConfig(level=logging.INFO, format="fcm-sandbox: %(message)s")
    uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
