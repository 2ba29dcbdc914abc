"""The SSRF guard: every blocked range refused, allow-listed networks opened, names resolved.

Range classification is tested with an injected resolver (no local name resolves to
a CGNAT or NAT64 address); `localhost` goes through the real system resolver. The
delivery path's guard (the aiohttp resolver) is tested against a real receiver.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import timedelta

import pytest

from relay.db import utcnow
from relay.models.webhooks import AttemptTrigger
from relay.webhooks.outbox import EndpointInfo, Job
from relay.webhooks.sender import attempt, make_session
from relay.webhooks.ssrf import SsrfGuard, UnsafeUrlError
from tests.webhooks.conftest import Receiver

BLOCKED = {
    "0.0.0.0": "unspecified",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "127.0.0.1": "loopback",
    "169.254.169.254": "link-local",
    "100.64.0.1": "CGNAT",
    "224.0.0.251": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "broadcast",
    "192.0.2.10": "documentation",
    "198.51.100.7": "documentation",
    "203.0.113.9": "documentation",
    "198.18.0.1": "benchmarking",
    "192.88.99.1": "6to4 relay",
    "::": "unspecified",
    "::1": "loopback",
    "fe80::1": "link-local",
    "fc00::1": "unique-local",
    "fd12:3456::1": "unique-local",
    "fec0::1": "site-local",
    "ff02::1": "multicast",
    "2002:a00:1::1": "6to4",
    "64:ff9b::a00:1": "NAT64",
    "2001:db8::1": "documentation",
    "2001::1": "Teredo",
    "::ffff:10.0.0.1": "private",  # IPv4-mapped
    "::ffff:127.0.0.1": "loopback",
}


def resolver_to(*addresses: str):
    async def resolve(host: str) -> list[str]:
        return list(addresses)

    return resolve


@pytest.mark.parametrize("address, label", sorted(BLOCKED.items()))
async def test_each_blocked_range_is_refused(address: str, label: str) -> None:
    guard = SsrfGuard(resolver=resolver_to(address))
    with pytest.raises(UnsafeUrlError, match=label):
        await guard.check_url("https://hooks.example.com/in")
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeUrlError):
        await guard.check_url(f"https://{literal}/in")


async def test_public_addresses_pass() -> None:
    guard = SsrfGuard(resolver=resolver_to("93.184.216.34", "2606:2800:220:1::1"))
    assert await guard.check_url("https://hooks.example.com/in") == [
        "93.184.216.34",
        "2606:2800:220:1::1",
    ]


async def test_one_blocked_address_among_public_ones_refuses() -> None:
    guard = SsrfGuard(resolver=resolver_to("93.184.216.34", "10.0.0.7"))
    with pytest.raises(UnsafeUrlError, match="private"):
        await guard.check_url("https://hooks.example.com/in")


async def test_a_name_resolving_to_loopback_is_refused() -> None:
    # The real system resolver: localhost resolves to 127.0.0.1 (and ::1).
    with pytest.raises(UnsafeUrlError, match="loopback"):
        await SsrfGuard().check_url("http://localhost:8080/hook")


async def test_allowed_networks_open_exceptions() -> None:
    guard = SsrfGuard([ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("fd00::/8")])
    assert "127.0.0.1" in await guard.check_url("http://localhost/hook")
    await guard.check_url("http://127.0.0.1/hook")
    await guard.check_url("http://[fd00::5]/hook")
    with pytest.raises(UnsafeUrlError):
        await guard.check_url("http://10.0.0.1/hook")


async def test_https_required_and_malformed_urls() -> None:
    guard = SsrfGuard(require_https=True, resolver=resolver_to("93.184.216.34"))
    with pytest.raises(UnsafeUrlError, match="https"):
        await guard.check_url("http://hooks.example.com/in")
    await guard.check_url("https://hooks.example.com/in")
    for url in ["https://", "https://a b.com/", "javascript:alert(1)", "https://x:99999/"]:
        with pytest.raises(UnsafeUrlError):
            await guard.check_url(url)


async def test_unresolvable_hosts_are_refused() -> None:
    async def fails(host: str) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(UnsafeUrlError, match="does not resolve"):
        await SsrfGuard(resolver=fails).check_url("https://nowhere.invalid/in")


def _job(url: str) -> Job:
    endpoint = EndpointInfo(uuid.uuid4(), url, {}, "", [], True, None)
    return Job(uuid.uuid4(), endpoint, uuid.uuid4(), "t", 1, 1, AttemptTrigger.SCHEDULED, "PENDING")


async def test_every_attempt_is_guarded_again(receiver: Receiver) -> None:
    """An endpoint accepted earlier whose name now resolves to loopback is refused at attempt."""
    guard = SsrfGuard()  # no allow-list: loopback is blocked
    session = make_session(guard, limit=4)
    try:
        for url in [receiver.url("never", host="localhost"), receiver.url("never")]:
            outcome = await attempt(
                session,
                guard,
                _job(url),
                b"{}",
                [b"k" * 32],
                timeout=timedelta(seconds=5),
                clock=utcnow,
            )
            assert outcome.status_code is None
            assert outcome.error and outcome.error.startswith("refused:")
            assert "loopback" in outcome.error
        assert receiver.at("never") == []
        allowed = SsrfGuard([ipaddress.ip_network("127.0.0.0/8")])
        allowed_session = make_session(allowed, limit=4)
        try:
            outcome = await attempt(
                allowed_session,
                allowed,
                _job(receiver.url("fine", host="localhost")),
                b"{}",
                [b"k" * 32],
                timeout=timedelta(seconds=5),
                clock=utcnow,
            )
        finally:
            await allowed_session.close()
        assert outcome.status_code == 200
    finally:
        await session.close()


# Host names no resolver should see: each used to reach the resolver, and some made
# Python's IDNA codec raise UnicodeError out of the guard (a 500 at webhook creation).
MALFORMED_HOSTS = [
    "xn--a.com",  # not valid Punycode
    "xn--.com",
    "xn--ls8h.la",  # an emoji: IDNA 2008 refuses it
    "\u2024.com",  # ONE DOT LEADER
    "\u200d.example.com",  # a joiner out of context
    "\udcff.com",  # a lone surrogate
    "a" * 64 + ".com",  # a label over 63 characters
    "a..com",
    ".com",
    "-a.com",
    "a-.com",
    "ex%41mple.com",
    "\x00.com",
    "a." * 127 + "com",  # a name over 253 characters
]


@pytest.mark.parametrize("host", MALFORMED_HOSTS)
async def test_host_names_idna_refuses_are_unsafe_urls(host: str) -> None:
    resolved: list[str] = []

    async def resolver(name: str) -> list[str]:
        resolved.append(name)
        return ["93.184.216.34"]

    with pytest.raises(UnsafeUrlError, match="host name"):
        await SsrfGuard(resolver=resolver).check_url(f"https://{host}/hook")
    assert resolved == []
    # The system resolver path too: a refusal, never a UnicodeError.
    with pytest.raises(UnsafeUrlError):
        await SsrfGuard().check_url(f"https://{host}/hook")
    # And the delivery path's syntax check, which runs before every attempt.
    with pytest.raises(UnsafeUrlError):
        SsrfGuard().check_syntax(f"https://{host}/hook")


@pytest.mark.parametrize(
    "host, resolved_as",
    [
        ("bücher.de", "xn--bcher-kva.de"),  # IDNA 2008: what the HTTP client connects to
        ("ß.de", "xn--zca.de"),  # IDNA 2003 (Python's codec) would have resolved ss.de
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("Hooks.Example.COM", "hooks.example.com"),
        ("hooks.example.com.", "hooks.example.com"),
        ("a\u3002example.com", "a.example.com"),  # an ideographic full stop separates labels
        ("my_host.example.com", "my_host.example.com"),  # underscores exist in real names
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
async def test_valid_host_names_resolve_in_ascii(host: str, resolved_as: str) -> None:
    resolved: list[str] = []

    async def resolver(name: str) -> list[str]:
        resolved.append(name)
        return ["93.184.216.34"]

    await SsrfGuard(resolver=resolver).check_url(f"https://{host}/hook")
    assert resolved == [resolved_as]
