"""What resources learnt about their objects, kept across engine runs in
``{prefix}/cache/checked``: a file resource's signature of the file it last
found holding its content (mgmtd.resources.filesig), so that the first check
after a restart is one ``lstat`` instead of a read and compare.

A resource offers a memo with ``memo()`` -> (key, value) and takes one back
with ``recall(value)``; it checks that the memo is about the same wanted
state (a digest of it is in the value) and ignores it otherwise. A lost or
damaged file costs one read of every file, nothing else: it is written
atomically, with a digest, and without an fsync. It is read only when owned
by this user and writable by no one else: a forged memo could make mgmtd
believe a file holds what it does not."""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator

from mgmtd import log
from mgmtd.resources.base import Resource

LOG = log.get("engine.memos")

FILE = "checked"
MAGIC = b"mgmtd checked 1\n"
DIGEST = 32


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


CHUNK = 1024   # memos per marshalled piece: the file is written a piece at a time


def encode(memos: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
    """The file, in pieces (never all of it in memory): MAGIC, then lists of
    up to CHUNK (key, value) pairs, each marshalled after its length, then the
    digest of all before."""
    digest = hashlib.blake2b(MAGIC, digest_size=DIGEST)
    yield MAGIC
    for chunk in _chunks(memos):
        data = marshal.dumps(chunk)
        piece = len(data).to_bytes(4, "little") + data
        digest.update(piece)
        yield piece
    yield digest.digest()


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
    """The memos in ``data``; empty when it is not a whole file of ours
    (marshal reads only data: no code, whatever the file holds)."""
    if len(data) < len(MAGIC) + DIGEST or not data.startswith(MAGIC):
        return {}
    body = memoryview(data)[:-DIGEST]
    if hashlib.blake2b(body, digest_size=DIGEST).digest() != data[-DIGEST:]:
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
        self.saved = b""   # the digest of what the file holds (not the memos: memory)
        self.saved_at = -1          # Resource.memo_changes when last saved
        self.unconfirmed = False    # some could not be confirmed yet: the next save tries
        self.lock = threading.Lock()

    def load(self) -> dict[str, bytes]:
        try:
            if not _private(os.stat(self.directory)):
                return {}
            with open(self.path, "rb") as handle:
                if not _private(os.fstat(handle.fileno())):
                    LOG.warning("%s: not owned by this user or writable by others: not used", self.path)
                    return {}
                data = handle.read()
        except OSError:
            return {}
        memos = decode(data)
        self.saved = data[-DIGEST:] if memos else b""
        if not memos and data:
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
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                fd, temp = tempfile.mkstemp(prefix=f".{FILE}.", dir=self.directory)
                try:
                    with os.fdopen(fd, "wb", buffering=1 << 16) as handle:
                        for piece in encode(memos()):
                            handle.write(piece)
                            digest = piece   # the last piece is the file's digest
                    if digest == self.saved:
                        os.unlink(temp)   # the same memos: the file stays as it is
                    else:
                        os.replace(temp, self.path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(temp)
                    raise
            except OSError as err:
                LOG.info("cannot keep what was checked in %s: %s", self.path, err.strerror or err)
                return
            self.saved_at, self.saved = changes, digest
