"""What resources learnt about their objects, kept across engine runs in
``{prefix}/cache/checked``: a file resource's signature of the file it last
found holding its content (mgmtd.resources.filesig), so that the first check
after a restart is one ``lstat`` instead of a read and compare.

A resource offers a memo with ``memo()`` -> (key, value) and takes one back
with ``recall(value)``; it checks that the memo is about the same wanted
state (a digest of it is in the value) and ignores it otherwise. A lost or
damaged file costs one read of every file, nothing else; it is read only
when nobody else could have written it (mgmtd.statefile)."""

from __future__ import annotations

import marshal
import os
import threading
import time
from collections.abc import Iterable, Iterator

from mgmtd import log, statefile
from mgmtd.resources.base import Resource

LOG = log.get("engine.memos")

FILE = "checked"
MAGIC = b"mgmtd checked 2\n"
CHUNK = 1024   # memos per marshalled piece: the file is written a piece at a time


def encode(memos: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
    """The file's content in pieces (never all of it in memory): MAGIC, then
    lists of up to CHUNK (key, value) pairs, each marshalled after its length.
    The file holds it sealed (mgmtd.statefile)."""
    yield MAGIC
    for chunk in _chunks(memos):
        data = marshal.dumps(chunk)
        yield len(data).to_bytes(4, "little") + data


def _chunks(memos: Iterable[tuple[str, bytes]]) -> Iterator[list[tuple[str, bytes]]]:
    chunk: list[tuple[str, bytes]] = []
    for memo in memos:
        chunk.append(memo)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def decode(data: bytes) -> dict[str, bytes]:
    """The memos in a sealed file's ``data``; empty when it is not a whole file
    of ours (marshal reads only data: no code, whatever the file holds)."""
    body = statefile.unseal(data)
    if body is None or body[:len(MAGIC)] != MAGIC:
        return {}
    memos: dict[str, bytes] = {}
    at, end = len(MAGIC), len(body)
    try:
        while at < end:
            size = int.from_bytes(body[at:at + 4], "little")
            chunk = marshal.loads(body[at + 4:at + 4 + size])
            memos.update((key, value) for key, value in chunk
                         if isinstance(key, str) and isinstance(value, bytes))
            at += 4 + size
    except (EOFError, ValueError, TypeError):
        return {}
    return memos if at == end else {}


class MemoStore:
    def __init__(self, prefix: str, directory: str = "cache") -> None:
        self.directory = os.path.join(prefix, directory)
        self.path = os.path.join(self.directory, FILE)
        self.saved_at = -1          # Resource.memo_changes when last saved
        self.unconfirmed = False    # some could not be confirmed yet: the next save tries
        self.lock = threading.Lock()

    def load(self) -> dict[str, bytes]:
        data = statefile.read_private(self.path)
        if not data:
            return {}
        memos = decode(data)
        if not memos:
            LOG.info("%s is damaged: every file is read once", self.path)
        return memos

    def recall(self, resources: Iterable[Resource]) -> int:
        """Hands each resource its memo from the last run; returns how many took one."""
        memos = self.load()
        self.saved_at = Resource.memo_changes
        if not memos:
            return 0
        taken = 0
        for res in resources:
            key = res.memo_key()
            if key is not None:
                value = memos.get(key)
                if value is not None:
                    taken += res.recall(value)
        return taken

    def save(self, resources: Iterable[Resource]) -> None:
        """Writes the memos of ``resources`` (confirming those that can be),
        unless no memo changed since the last save. Never raises."""
        with self.lock:
            changes = Resource.memo_changes   # before the loop: a change meanwhile saves again
            if changes == self.saved_at and not self.unconfirmed:
                return
            self.unconfirmed = False

            def memos() -> Iterator[tuple[str, bytes]]:
                for count, res in enumerate(resources, 1):
                    if count % 256 == 0:
                        time.sleep(0)   # lets the scheduler's thread in: a save is no hurry
                    try:
                        self.unconfirmed |= res.confirm()
                        memo = res.memo()
                    except Exception as err:   # a check's I/O error: that memo is left out
                        LOG.debug("%s: no memo: %s", res, err)
                        continue
                    if memo is not None:
                        yield memo

            try:
                with statefile.replacing(self.path) as out:
                    for piece in encode(memos()):
                        out.write(piece)
            except OSError as err:
                LOG.info("cannot keep what was checked in %s: %s", self.path, err.strerror or err)
                return
            self.saved_at = changes
