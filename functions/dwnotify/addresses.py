"""Which network addresses the notifier may send to: the trust boundary for every configured URL or host.

Webhook URLs carry their token, and DataWorks and Tablestore requests carry the STS token, so plain
http is refused except to loopback (local emulators) or where a channel says `allow_http: true`.
Link-local and cloud metadata addresses are never a destination: a URL pointing there would let a
config (or whoever writes it) read the instance's credentials through the notifier.

The checks are written to be at least as strict as httpx's URL parser (which sends the requests), so
a URL accepted here never fails at send time; tests hold httpx to that.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?")
# Alibaba Cloud ECS/FC metadata (100.100.100.200), the AWS/GCP/Azure one, and their well-known names.
_METADATA_IPS = frozenset({ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254")})
_METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.tencentyun.com"})
LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(host: str) -> bool:
    """True for `localhost` and the 127.0.0.0/8 and ::1 addresses (optionally with a port)."""
    name = _strip_port(host).strip("[]").lower().rstrip(".")
    if name in LOOPBACK_NAMES:
        return True
    address = _ip(name)
    return address is not None and address.is_loopback


def host_problem(host: str) -> str | None:
    """Why `host` (a name or address, no port) may not be sent to, or None."""
    name = host.strip("[]").lower().rstrip(".")
    address = _ip(name)
    return _name_problem(host, name) if address is None else _address_problem(host, address)


def _name_problem(host: str, name: str) -> str | None:
    if not _HOST_NAME.fullmatch(name) or len(name) > 253:
        return f"{host!r} is not a valid host name (write international names in their xn-- form)"
    if not name.rsplit(".", 1)[-1][0].isalpha():
        # Resolvers read "2852039166" or "0xa9fea9fe" as IPv4 addresses: only dotted quads are.
        return f"{host!r} is neither a dotted IPv4 address nor a host name"
    if name in _METADATA_NAMES:
        return f"{host!r} is a cloud metadata service, never a destination"
    return None


def _address_problem(host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in _METADATA_IPS or address.is_link_local:
        return f"{host} is a link-local or cloud metadata address, never a destination"
    if address.is_unspecified or address.is_multicast:
        return f"{host} is not an address a request can be sent to"
    return None


def url_problem(url: str, *, allow_http: bool = False, http_escape: str = "") -> str | None:
    """Why `url` may not be sent to, or None; http only to loopback unless `allow_http`.

    `http_escape` names the setting that would allow plain http here, if there is one.
    """
    problem = _shape_problem(url)
    if problem is not None:
        return problem
    parts = urlsplit(url)
    hostname = parts.hostname or ""
    problem = host_problem(_bracketed_host(parts.netloc) or hostname)
    if problem is None and parts.scheme == "http" and not allow_http and not is_loopback(hostname):
        unless = f", unless {http_escape}" if http_escape else ""
        problem = "is plain http, which sends its token in clear: use https"
        problem += f" (http is for loopback only{unless})"
    return problem


def _shape_problem(url: str) -> str | None:
    if len(url) > MAX_URL_LENGTH:
        return f"is longer than {MAX_URL_LENGTH} characters"
    if any(not char.isprintable() or char.isspace() for char in url):
        return "contains a space or a control character"
    try:
        parts = urlsplit(url)
        hostname, _ = parts.hostname, parts.port  # .port raises for a port that is not a number
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not hostname:
        return "must be an http:// or https:// URL with a host"
    return None


def _bracketed_host(netloc: str) -> str | None:
    host = netloc.rpartition("@")[2]
    return host[: host.index("]") + 1] if host.startswith("[") and "]" in host else None


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[: host.index("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None
