"""The SSRF guard: endpoint URLs never reach internal addresses.

A URL is refused when its host is, or resolves to, any address in a blocked range
(private, loopback, link-local and cloud metadata, CGNAT, multicast, reserved,
unspecified, documentation, benchmarking, IPv6 unique-local, site-local, 6to4,
Teredo, NAT64, IPv4-mapped forms of any of these) unless the address is inside
WEBHOOK_ALLOWED_NETWORKS. One blocked address refuses the whole URL: a name that
resolves to a public and a private address could be connected to either.

Host names are checked before anything resolves them: every label 1 to 63 characters
of letters, digits, `-` (not first or last) and `_`, the name at most 253; an
internationalised name must pass IDNA 2008 (UTS #46), and an `xn--` label must be
valid Punycode of such a name. The guard resolves the ASCII form, which is what the
delivery client connects to. Anything else is a refusal (`UnsafeUrlError`), never an
encoder's exception.

The check runs when an endpoint is created or changed (`check_url`) and again
before every attempt: the delivery client's resolver is `GuardedResolver`, so every
new connection goes to an address that passed the guard at connect time (no window
for DNS rebinding between check and connect), and IP-literal URLs are checked
directly because the client does not resolve them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import idna
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], Awaitable[list[str]]]

MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253
_SYNTAX_CACHE = 4096
# One DNS label in ASCII; `_` is not a host name character but real names carry it.
_ASCII_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
# The label separators IDNA maps to ".".
_DOTS = re.compile("[.\u3002\uff0e\uff61]")

_BLOCKED: list[tuple[IPNetwork, str]] = [
    (ipaddress.ip_network(cidr), label)
    for cidr, label in [
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "CGNAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible"),
        ("64:ff9b::/96", "NAT64"),
        ("64:ff9b:1::/48", "NAT64"),
        ("100::/64", "discard"),
        ("2001::/32", "Teredo"),
        ("2001::/23", "reserved"),
        ("2001:db8::/32", "documentation"),
        ("2002::/16", "6to4"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "reserved"),
        ("fc00::/7", "unique-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    ]
]


class UnsafeUrlError(ValueError):
    """The URL is malformed, not allowed, or points at a blocked address."""


class BlockedAddressError(OSError):
    """A resolved address is in a blocked range (raised inside the HTTP client)."""


def ascii_host(host: str) -> str:
    """The host name in ASCII (A-labels), as resolvers and HTTP clients see it; raises
    UnsafeUrlError for a name that is not one (an empty, over-long or invalid label)."""
    labels = _DOTS.split(host)
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # the root: "example.com."
    converted = []
    for label in labels:
        if label.isascii():
            label = label.lower()
            if not _ASCII_LABEL.match(label):
                raise UnsafeUrlError(f"the host name has an invalid label: {label[:70]!r}")
            if label.startswith("xn--"):
                try:
                    idna.decode(label)
                except (idna.IDNAError, UnicodeError, ValueError):
                    raise UnsafeUrlError(
                        f"the host name has an invalid internationalised label: {label[:70]!r}"
                    ) from None
        else:
            try:
                label = idna.encode(label, uts46=True).decode("ascii")
            except (idna.IDNAError, UnicodeError, ValueError):
                raise UnsafeUrlError(
                    f"the host name has a label IDNA refuses: {label[:70]!r}"
                ) from None
            if not _ASCII_LABEL.match(label):
                raise UnsafeUrlError(f"the host name has an invalid label: {label[:70]!r}")
        converted.append(label)
    name = ".".join(converted)
    if len(name) > MAX_HOST_LENGTH:
        raise UnsafeUrlError(f"the host name is longer than {MAX_HOST_LENGTH} characters")
    return name


def blocked_range(address: IPAddress) -> str | None:
    """The label of the blocked range holding `address`, or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return blocked_range(address.ipv4_mapped)
    for network, label in _BLOCKED:
        if address.version == network.version and address in network:
            return label
    if not address.is_global:
        return "reserved"
    return None


async def _system_resolver(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, None, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class SsrfGuard:
    """Decides whether a URL or an address may be called.

    `resolver` maps a host name to its addresses (the system resolver by default);
    tests inject one to classify ranges no local name resolves to.
    """

    def __init__(
        self,
        allowed_networks: Sequence[IPNetwork] = (),
        *,
        require_https: bool = False,
        resolver: Resolver | None = None,
    ) -> None:
        self.allowed_networks = list(allowed_networks)
        self.require_https = require_https
        self._resolve = resolver or _system_resolver
        # Parsing is pure, and every attempt re-checks its URL: remember the answers.
        self._syntax: dict[str, tuple[str, IPAddress | None]] = {}

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why `address` is refused, or None when it may be called."""
        ip = ipaddress.ip_address(str(address).split("%", 1)[0])
        if any(ip.version == net.version and ip in net for net in self.allowed_networks):
            return None
        label = blocked_range(ip)
        return f"{ip} is a {label} address" if label else None

    def check_syntax(self, url: str) -> tuple[str, IPAddress | None]:
        """The URL's host (and its address when it is an IP literal); refuses bad URLs."""
        cached = self._syntax.get(url)
        if cached is not None:
            return cached
        checked = self._check_syntax(url)
        if len(self._syntax) >= _SYNTAX_CACHE:
            self._syntax.clear()
        self._syntax[url] = checked
        return checked

    def _check_syntax(self, url: str) -> tuple[str, IPAddress | None]:
        if len(url) > MAX_URL_LENGTH:
            raise UnsafeUrlError(f"the URL is longer than {MAX_URL_LENGTH} characters")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a malformed port
        except ValueError:
            raise UnsafeUrlError("the URL is malformed") from None
        if parts.scheme not in ("http", "https"):
            raise UnsafeUrlError("the URL must use http or https")
        if self.require_https and parts.scheme != "https":
            raise UnsafeUrlError("the URL must use https (WEBHOOK_REQUIRE_HTTPS)")
        if parts.username is not None or parts.password is not None:
            raise UnsafeUrlError("the URL must not carry credentials")
        host = parts.hostname
        if not host:
            raise UnsafeUrlError("the URL has no host")
        if any(char.isspace() for char in url):
            raise UnsafeUrlError("the URL contains whitespace")
        try:
            return host, ipaddress.ip_address(host)
        except ValueError:
            return ascii_host(host), None

    async def check_url(self, url: str) -> list[str]:
        """Resolve the URL's host; refuse it when any address is blocked. Returns the addresses."""
        host, literal = self.check_syntax(url)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = await self._resolve(host)
            except OSError:
                raise UnsafeUrlError(f"the host {host!r} does not resolve") from None
            if not addresses:
                raise UnsafeUrlError(f"the host {host!r} does not resolve")
        for address in addresses:
            reason = self.refusal(address)
            if reason:
                raise UnsafeUrlError(f"the URL's host resolves to a blocked address: {reason}")
        return addresses


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses a host when any of its addresses is blocked."""

    def __init__(self, guard: SsrfGuard, inner: AbstractResolver | None = None) -> None:
        self._guard = guard
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            reason = self._guard.refusal(result["host"])
            if reason:
                raise BlockedAddressError(f"blocked address: {reason}")
        return results

    async def close(self) -> None:
        await self._inner.close()


def find_blocked(exc: BaseException) -> BlockedAddressError | None:
    """The guard's refusal inside an HTTP client exception chain, if that is what it was."""
    seen: set[int] = set()
    current: Any = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BlockedAddressError):
            return current
        nested = getattr(current, "os_error", None)
        if isinstance(nested, BlockedAddressError):
            return nested
        current = current.__cause__ or current.__context__
    return None
