"""The one rule for a node's host name, whatever the mode (TLS or not).

The name is one segment of etcd keys (``hosts/{name}``, ``exported/{name}/...``),
etcd's member name, with TLS a certificate's name and etcd user, and a file
name of ``mgmtd certs issue``. A '/' would split the key (``h1/x`` lands under
``h1``'s prefix), ``.``/``..`` and empty names walk or collide, so host names
follow DNS (RFC 1123): the OS hostname, possibly a FQDN like
``node1.example.com``, passes as it is. '_' is refused as DNS and systemd's
``hostnamectl`` refuse it: a certificate's DNS name must match the host.
"""

from __future__ import annotations

import re

MAX_NAME = 253
MAX_LABEL = 63
RULE = ("letters, digits and '-' in labels of 1-63 characters that neither start nor end "
        "with '-', labels separated by '.', 253 characters at most")

_LABEL = re.compile(r"[A-Za-z0-9-]+", re.ASCII)


def _shown(name: str, limit: int = 40) -> str:
    return repr(name if len(name) <= limit else name[:limit] + "...")


def hostname_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a host name, or None when it is fine."""
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME:
        return f"it has {len(name)} characters"
    bad = sorted({c for c in name if c != "." and not _LABEL.fullmatch(c)})
    if bad:
        return "it holds " + ", ".join(repr(c) for c in bad)
    for label in name.split("."):
        if not label:
            return "it has an empty label (a leading, trailing or doubled '.')"
        if len(label) > MAX_LABEL:
            return f"label {_shown(label, 20)} has {len(label)} characters"
        if label.startswith("-") or label.endswith("-"):
            return f"label {label!r} starts or ends with '-'"
    return None


def check_hostname(name: str) -> str:
    """``name`` if it is a valid host name; else ValueError saying why and what the rule is."""
    problem = hostname_problem(name)
    if problem is not None:
        raise ValueError(f"{_shown(name)} is not a valid host name ({problem}): use {RULE}")
    return name
