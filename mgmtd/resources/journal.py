"""Sending one entry to systemd's journal in its native protocol (a datagram
of fields on /run/systemd/journal/socket), as sd_journal_send does: no
library, no process. Used by msg's ``journal: true``."""

from __future__ import annotations

import re
import socket
import struct

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# journald's rule for field names: upper case letters, digits, '_', not first
FIELD_NAME = re.compile(r"^[A-Z0-9][A-Z0-9_]*$")


class JournalError(Exception):
    pass


def encode(fields: dict[str, str]) -> bytes:
    """The datagram for these fields: ``KEY=value`` lines, and for a value
    holding a newline the binary form (name, newline, 64-bit length, value)."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode()
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def send(fields: dict[str, str], path: str | None = None) -> None:
    """One journal entry; JournalError (one line) when journald cannot take it."""
    path = path or JOURNAL_SOCKET
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(encode(fields), path)
        except FileNotFoundError:
            raise JournalError(f"journald is not running here (no {path})") from None
        except OSError as err:
            raise JournalError(f"journald refused the entry: {err.strerror or err}") from None
