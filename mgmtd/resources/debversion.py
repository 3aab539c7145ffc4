"""Debian version strings: their syntax and their order (Debian Policy 5.6.12),
the same answers as ``dpkg --compare-versions`` without starting it."""

from __future__ import annotations

import re

# epoch: digits; upstream: starts with a digit; revision: after the last '-'
_VALID = re.compile(r"^(?:[0-9]+:)?[0-9][A-Za-z0-9.+~:-]*$")


def is_valid(version: str) -> bool:
    """True when ``version`` is a syntactically valid Debian version."""
    if not _VALID.match(version):
        return False
    epoch, upstream, revision = split(version)
    if ":" in upstream:
        return False
    return revision == "" or re.fullmatch(r"[A-Za-z0-9.+~]+", revision) is not None


def split(version: str) -> tuple[int, str, str]:
    """(epoch, upstream, revision); a missing epoch is 0, a missing revision ''."""
    epoch = 0
    head, sep, rest = version.partition(":")
    if sep and head.isdigit():
        epoch, version = int(head), rest
    upstream, sep, revision = version.rpartition("-")
    if not sep:
        return epoch, version, ""
    return epoch, upstream, revision


def _order(char: str) -> int:
    # '~' sorts before everything, even the end of the part; letters before other marks
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        # the non-digit prefixes, character by character (the end counts as 0)
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ca = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            cb = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ca != cb:
                return -1 if ca < cb else 1
            if i < len(a) and not a[i].isdigit():
                i += 1
            if j < len(b) and not b[j].isdigit():
                j += 1
        # then the digit runs, as numbers
        start_i, start_j = i, j
        while i < len(a) and a[i].isdigit():
            i += 1
        while j < len(b) and b[j].isdigit():
            j += 1
        na = int(a[start_i:i] or 0)
        nb = int(b[start_j:j] or 0)
        if na != nb:
            return -1 if na < nb else 1
    return 0


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` sorts before, equal to or after ``b``."""
    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)
