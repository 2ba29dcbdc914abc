"""Security hardening of configuration, transport and logs, each shown by trying the attack.

- Transport: with a Temporal API key and TEMPORAL_TLS unset, the first bytes on the wire
  are a TLS handshake, not the cleartext HTTP/2 preface that carries the key.
- CORS: a "*" UI origin would let any web page call /codec with the operator's cookie;
  the app refuses to start with one.
- Logs: every logger configuration the CLI can set masks each credential shape, whether
  it comes through the message, a %-argument, an `extra=` field or a traceback.

docs/security.md describes all three.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from relay.crypto import Keyring
from relay.errors import ConfigError
from relay.logging import configure_logging
from relay.settings import Settings, load_settings
from relay.temporal import connect

# --- transport ------------------------------------------------------------------------

TLS_HANDSHAKE = b"\x16\x03"  # a TLS record of type handshake (the ClientHello)
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # cleartext gRPC: headers follow as is


async def first_bytes_sent(settings: Settings, keyring: Keyring) -> bytes:
    """Connect Relay's Temporal client to a listener that records what arrives, then hangs up."""
    received: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            received.append(await asyncio.wait_for(reader.read(64), 10))
        finally:
            writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        spied = settings.model_copy(update={"temporal_address": f"127.0.0.1:{port}"})
        with pytest.raises(RuntimeError):  # the listener is no Temporal server
            await asyncio.wait_for(connect(spied, keyring), 30)
    finally:
        server.close()
        await server.wait_closed()
    assert received, "the client sent nothing"
    return received[0]


async def test_an_api_key_crosses_the_network_only_inside_tls(
    make_settings: Callable[..., Settings], keyring: Keyring
) -> None:
    with_key = make_settings(temporal_api_key="tmprl-cloud-key-0123456789")
    assert with_key.temporal_tls is None  # the default: the SDK decides, TLS with a key
    assert (await first_bytes_sent(with_key, keyring)).startswith(TLS_HANDSHAKE)

    # What TEMPORAL_TLS=false did to the same key: cleartext HTTP/2, readable on the path.
    in_the_clear = make_settings(temporal_api_key="tmprl-cloud-key-0123456789", temporal_tls=False)
    assert (await first_bytes_sent(in_the_clear, keyring)).startswith(HTTP2_PREFACE)
    production = make_settings(
        relay_env="production",
        database_url="postgresql+psycopg://relay@db:5432/relay",
        public_base_url="https://relay.example.com",
        oauth_allowed_redirects="https://app.example.com",
        temporal_api_key="tmprl-cloud-key-0123456789",
        temporal_tls=False,
    )
    with pytest.raises(ConfigError, match="TEMPORAL_TLS=false would send TEMPORAL_API_KEY"):
        production.check()


async def test_without_a_key_the_default_stays_plaintext(
    make_settings: Callable[..., Settings], keyring: Keyring
) -> None:
    """`make dev` and a private cluster keep working: no key, no TLS unless asked for."""
    settings = make_settings()
    assert (await first_bytes_sent(settings, keyring)).startswith(HTTP2_PREFACE)
    tls = make_settings(temporal_tls=True)
    assert (await first_bytes_sent(tls, keyring)).startswith(TLS_HANDSHAKE)


# --- CORS on /codec --------------------------------------------------------------------


async def test_a_wildcard_ui_origin_would_hand_codec_to_any_site(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.app import create_app

    wildcard = make_settings(temporal_ui_origins="*")
    preflight = {
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }

    # The attack, with the check switched off: the browser is told the evil page may
    # read /codec's answers, cookie included.
    with monkeypatch.context() as unchecked:
        unchecked.setattr(Settings, "check", lambda self: None)
        app = create_app(wildcard)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://relay") as http:
            answer = await http.options("/codec/decode", headers=preflight)
        app.state.engine.dispose()
    assert answer.headers.get("access-control-allow-origin") == "https://evil.example"
    assert answer.headers.get("access-control-allow-credentials") == "true"

    # With the check: the app does not start.
    with pytest.raises(ConfigError, match=r"TEMPORAL_UI_ORIGINS contains '\*'"):
        create_app(wildcard)


# --- logs ------------------------------------------------------------------------------

ALNUM = string.ascii_letters + string.digits


def rand(n: int = 24, alphabet: str = ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


@dataclass(frozen=True)
class Leak:
    """A text carrying secrets, the secrets, and what must survive of the text."""

    text: str
    secrets: tuple[str, ...]
    kept: tuple[str, ...]


def leaks() -> list[Leak]:
    """Every credential shape the issue names, each with a fresh random value."""
    values = {name: rand() for name in ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j")}
    relay_key = secrets.token_urlsafe(32)  # what relay.api_keys puts after "rk_"
    camel = {name: rand() for name in ("clientSecret", "apiKey", "token")}
    jwt_claims, jwt_signature = f"eyJzdWIiOiI{rand(16)}", rand(43)
    shaped = [
        ("ghp_", rand(36)),
        ("gho_", rand(36)),
        ("xoxb-", f"{rand(11, string.digits)}-{rand(12, string.digits)}-{rand(24)}"),
        ("xoxp-", f"{rand(11, string.digits)}-{rand(12, string.digits)}-{rand(32)}"),
        ("ya29.", f"a0{rand(60)}"),
        ("sk_live_", rand(32)),
        ("sk_test_", rand(32)),
        ("rk_", relay_key),
        ("whsec_", rand(32)),
    ]
    found = [
        Leak(f"provider answered with {prefix}{value} for you", (value,), (prefix, "for you"))
        for prefix, value in shaped
    ]
    return [
        *found,
        Leak(
            f"sent Authorization: Bearer {values['a']} to github",
            (values["a"],),
            ("Authorization: Bearer", "to github"),
        ),
        Leak(f"retrying with Bearer {values['b']} now", (values["b"],), ("now",)),
        Leak(
            "GET https://relay.example.com/v1/integrations/oauth/callback/github"
            f"?code={values['c']}&state={values['d']} answered 302",
            (values["c"], values["d"]),
            ("/v1/integrations/oauth/callback/github?code=", "answered 302"),
        ),
        Leak(
            "POST https://github.com/login/oauth/access_token body "
            f"grant_type=authorization_code&code={values['e']}&client_secret={values['f']}"
            "&redirect_uri=https%3A%2F%2Frelay.example.com",
            (values["e"], values["f"]),
            ("grant_type=authorization_code", "redirect_uri="),
        ),
        Leak(
            f"callback https://app.example.com/cb?access_token={values['g']}"
            f"&refresh_token={values['h']}&expires_in=3600",
            (values["g"], values["h"]),
            ("https://app.example.com/cb?access_token=", "expires_in=3600"),
        ),
        Leak(
            "token response "
            + json.dumps(
                {
                    "accessToken": values["i"],
                    "refreshToken": values["j"],
                    "idToken": f"eyJhbGciOiJSUzI1NiJ9.{jwt_claims}.{jwt_signature}",
                    "clientSecret": camel["clientSecret"],
                    "apiKey": camel["apiKey"],
                    "token": camel["token"],
                    "expiresIn": 3600,
                }
            ),
            (values["i"], values["j"], jwt_claims, jwt_signature, *camel.values()),
            ('"expiresIn": 3600', '"accessToken"'),
        ),
    ]


def structured_secrets() -> tuple[dict[str, object], list[str]]:
    """An `extra=` mapping with secrets under keys of every style, and those secrets."""
    values = [rand() for _ in range(13)]
    extra: dict[str, object] = {
        "access_token": values[0],
        "accessToken": values[1],
        "refresh-token": values[2],
        "idToken": values[3],
        "clientSecret": values[4],
        "API_KEY": values[5],
        "code": values[6],
        "state": values[7],
        "token": values[8],
        "Authorization": f"Bearer {values[9]}",
        # Secret keys inside a nested value, and a secret shape under an innocent key.
        "response": {"tokenResponse": {"refreshToken": values[10]}, "scopes": ["repo"]},
        "callbackUrl": f"https://relay.example.com/cb?code={values[11]}&state=x",
        "detail": f"github said ghp_{values[12]}",
        # What must stay readable.
        "integrationId": "int_42",
        "attempt": 3,
    }
    return extra, values


class ProviderFailed(Exception):
    pass


@pytest.fixture
def captured_logging(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[[], str]]:
    """What reaches stderr (where the CLI's handler writes); the root logger restored after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("uvicorn.access").disabled
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    for name in ("LOG_LEVEL", "LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    yield lambda: capsys.readouterr().err
    root.handlers[:], level, logging.getLogger("uvicorn.access").disabled = saved
    root.setLevel(level)


def configure_like_the_cli(monkeypatch: pytest.MonkeyPatch, fmt: str, level: str) -> None:
    """What `relay api` and `relay worker` do with LOG_FORMAT and LOG_LEVEL."""
    monkeypatch.setenv("LOG_FORMAT", fmt)
    monkeypatch.setenv("LOG_LEVEL", level)
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_no_secret_reaches_the_log_in_any_cli_configuration(
    captured_logging: Callable[[], str], monkeypatch: pytest.MonkeyPatch, fmt: str, level: str
) -> None:
    configure_like_the_cli(monkeypatch, fmt, level)
    log = logging.getLogger("relay.hardening")
    samples = leaks()
    extra, extra_secrets = structured_secrets()
    levels = [logging.INFO, logging.DEBUG] if level == "DEBUG" else [logging.INFO]

    for severity in levels:
        for sample in samples:
            log.log(severity, "integration int_42: " + sample.text)  # in the message
            log.log(severity, "integration %s: %s", "int_42", sample.text)  # as an argument
            log.log(severity, "integration %s: %r", "int_42", sample.text)
            log.log(severity, "integration int_42 connected", extra={"detail": sample.text})
            try:
                try:
                    raise ValueError(sample.text)
                except ValueError as cause:
                    raise ProviderFailed(f"provider call failed: {sample.text}") from cause
            except ProviderFailed:
                log.log(severity, "integration int_42: exchange failed", exc_info=True)
        log.log(severity, "integration int_42 token refreshed", extra=extra)

    output = captured_logging()
    every_secret = [s for sample in samples for s in sample.secrets] + extra_secrets
    leaked = [secret for secret in every_secret if secret in output]
    assert not leaked, f"{len(leaked)} secrets in the {fmt}/{level} log: {leaked[:3]}"

    # Still a useful log: the context, the key names and what was masked are there.
    for sample in samples:
        for kept in sample.kept:
            assert kept in output or json.dumps(kept)[1:-1] in output, (kept, sample.text)
    assert "[REDACTED]" in output
    assert "ProviderFailed: provider call failed" in output
    assert "The above exception was the direct cause" in output
    assert "int_42" in output and "token refreshed" in output
    if fmt == "json":
        entries = [json.loads(line) for line in output.splitlines()]
        per_severity = len(samples) * 5 + 1
        assert len(entries) == per_severity * len(levels)
        assert {entry["level"] for entry in entries} == (
            {"info", "debug"} if level == "DEBUG" else {"info"}
        )
        structured = [e for e in entries if e["message"].endswith("token refreshed")]
        for entry in structured:
            assert entry["integrationId"] == "int_42" and entry["attempt"] == 3
            for key in ("access_token", "accessToken", "refresh-token", "idToken", "code"):
                assert entry[key] == "[REDACTED]", key
            assert entry["Authorization"] == "[REDACTED]"
            assert entry["response"]["tokenResponse"]["refreshToken"] == "[REDACTED]"
            assert entry["response"]["scopes"] == ["repo"]
            assert entry["callbackUrl"].startswith("https://relay.example.com/cb?code=")
            assert entry["detail"] == "github said ghp_[REDACTED]"
    else:
        assert 'integrationId="int_42"' in output and 'accessToken="[REDACTED]"' in output


def test_the_clis_own_crash_report_redacts(
    captured_logging: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`relay` logs an unexpected error's traceback at DEBUG and echoes one line: neither leaks."""
    import relay.cli

    configure_like_the_cli(monkeypatch, "text", "DEBUG")
    token = rand(36)
    secret = rand()

    def crash() -> None:
        raise RuntimeError(f"exchange failed: ghp_{token} client_secret={secret}")

    monkeypatch.setattr(relay.cli, "app", crash)
    with pytest.raises(SystemExit) as exited:
        relay.cli.main()
    assert exited.value.code == 1
    output = captured_logging()
    assert token not in output and secret not in output
    assert "unexpected error" in output and "Traceback" in output
    assert "relay: RuntimeError: exchange failed: ghp_[REDACTED] client_secret=[REDACTED]" in output
