"""The URL flags (``--client-urls``, ``--seeds``, ``mgmtctl --endpoints``...):
checked before anything starts, so a bad one is one line naming the flag, not
an etcd that dies at start-up or a ValueError deep in a round.

etcd takes ``scheme://host:port`` and nothing else: no path (not even "/"),
query, fragment or user. The host and port are parsed here rather than with
urllib, whose port parsing differs between Python versions and raises bare
ValueErrors.
"""

from __future__ import annotations

import ipaddress
import re

from mgmtd.hostnames import hostname_problem

SCHEMES = ("http", "https")
EXAMPLE = "http://127.0.0.1:2379"

_PORT = re.compile(r"[0-9]+", re.ASCII)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _split_host_port(netloc: str) -> tuple[str, str]:
    """(host, port) of ``host:port`` or ``[v6]:port``; ValueError with the problem."""
    if netloc.startswith("["):
        inner, bracket, rest = netloc[1:].partition("]")
        if not bracket:
            raise ValueError("an IPv6 address lacks its closing ']'")
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError(f"[{inner}] is not an IPv6 address") from None
        if not rest:
            raise ValueError("there is no port")
        if not rest.startswith(":"):
            raise ValueError(f"{rest!r} follows the IPv6 address (expected ':PORT')")
        return inner, rest[1:]
    host, colon, port = netloc.rpartition(":")
    if not colon:
        raise ValueError("there is no port")
    if ":" in host:
        if _is_ip(netloc):
            raise ValueError("an IPv6 address goes in brackets, like http://[::1]:2379")
        raise ValueError("it has more than one ':' after the host")
    return host, port


def url_problem(url: str, listen: bool = False) -> str | None:
    """What is wrong with ``url`` as an etcd URL, or None. A ``listen`` URL is
    one etcd binds to: etcd takes only an IP address or localhost there."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return f"this is not a URL like {EXAMPLE}"
    if scheme.lower() not in SCHEMES:
        return f"scheme {scheme!r} is not http or https"
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    if "?" in tail:
        return "a query ('?...') is not allowed"
    if "#" in tail:
        return "a fragment ('#...') is not allowed"
    if tail not in ("", "/"):
        return f"a path ({tail!r}) is not allowed: etcd URLs are scheme://host:port"
    if "@" in netloc:
        return "user information ('...@') is not allowed"
    try:
        host, port = _split_host_port(netloc)
    except ValueError as err:
        return str(err)
    if not host:
        return "there is no host"
    if not _PORT.fullmatch(port):
        return f"port {port!r} is not a number" if port else "there is no port"
    if not 1 <= int(port) <= 65535:
        return f"port {port} is out of range (1-65535)"
    if not _is_ip(host):
        problem = hostname_problem(host)
        if problem is not None:
            return f"host {host!r} is neither an IP address nor a host name ({problem})"
        if listen and host.lower() != "localhost":
            return f"etcd listens on IP addresses only (or localhost), not on {host!r}"
    return None


def normalized(url: str) -> str:
    """``url`` as etcd takes it: the scheme in lower case, no trailing '/'."""
    scheme, _, rest = url.partition("://")
    return f"{scheme.lower()}://{rest.removesuffix('/')}"


def parse_url_list(flag: str, value: str, listen: bool = False) -> tuple[str, ...]:
    """The comma-separated URLs of ``flag``, normalized; ValueError with one
    line naming the flag and the URL when one is wrong or none is given."""
    items = tuple(u.strip() for u in value.split(",") if u.strip())
    if not items:
        raise ValueError(f"{flag}: at least one URL is needed, like {EXAMPLE}")
    for url in items:
        problem = url_problem(url, listen)
        if problem is not None:
            raise ValueError(f"{flag}: {url}: {problem}")
    return tuple(normalized(u) for u in items)


def parse_listen(flag: str, text: str) -> tuple[str, int]:
    """(host, port) of a listen address as Go writes it: ``HOST:PORT``,
    ``[V6]:PORT``, or ``:PORT`` (every interface); the host an IP address or
    localhost. ValueError: one line naming the flag."""
    try:
        host, port = _split_host_port(text.strip())
    except ValueError as err:
        raise ValueError(f"{flag}: {text!r}: {err} (expected HOST:PORT, like 127.0.0.1:9233)") from None
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"{flag}: {text!r}: port {port!r} is not a number from 1 to 65535")
    if host and not _is_ip(host) and host.lower() != "localhost":
        raise ValueError(f"{flag}: {text!r}: listens on an IP address (or localhost), not on {host!r}")
    return host or "0.0.0.0", int(port)


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
