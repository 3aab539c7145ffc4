"""Backups on disk: an etcd snapshot ``ID.db`` and its sidecar ``ID.json``
(time, revision, size, sha256, host, cluster id, member count, generation,
reason), in ``{prefix}/backups/`` or ``--backup-dir``.

Both are written under temporary names and renamed, the sidecar last, and the
directory is fsynced: a crash leaves at most a temporary file (removed at the
next start), never a listed half snapshot. Deleting goes the other way round:
sidecar first. The same record, JSON, is the backup's entry in etcd
(``{ns}/backups/ID``), so that ``mgmtctl backups`` on any node lists what
every node holds."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import BinaryIO

from mgmtd.cluster.keys import json_object

SUFFIX, SIDECAR = ".db", ".json"
TEMP = ".tmp"


@dataclass(frozen=True)
class BackupRecord:
    id: str
    time: float            # when the snapshot was taken (seconds since the epoch)
    revision: int          # the etcd revision it holds: every write up to it is in it
    size: int              # bytes of ID.db
    sha256: str            # of ID.db, checked before any restore
    host: str              # the node that took it, and holds the file
    cluster_id: str        # hex, as mgmtctl members shows it
    members: int           # voters when it was taken
    generation: int        # the cluster's restore generation (0: never restored)
    reason: str            # schedule | before a membership change | requested (ID)

    def encode(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.time)) + " UTC"


def parse_record(raw: bytes | str | None) -> BackupRecord | None:
    value = json_object(raw)
    if value is None:
        return None
    try:
        return BackupRecord(
            id=str(value["id"]), time=float(value["time"]), revision=int(value["revision"]),
            size=int(value["size"]), sha256=str(value["sha256"]), host=str(value["host"]),
            cluster_id=str(value.get("cluster_id", "")), members=int(value.get("members", 0)),
            generation=int(value.get("generation", 0)), reason=str(value.get("reason", "")))
    except (KeyError, TypeError, ValueError):
        return None


def backup_id(when: float, host: str) -> str:
    """Sorts by time; milliseconds and the host keep two backups apart."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(when))
    return f"{stamp}{int(when * 1000) % 1000:03d}Z-{host}"


def is_backup_id(text: str) -> bool:
    return bool(text) and "/" not in text and not text.startswith(".") and "-" in text


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class HashingWriter:
    """Writes through to a file and hashes what passes."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BackupDir:
    def __init__(self, path: str) -> None:
        self.path = path

    def file(self, backup: str) -> str:
        return os.path.join(self.path, backup + SUFFIX)

    def sidecar(self, backup: str) -> str:
        return os.path.join(self.path, backup + SIDECAR)

    def write_snapshot(self, backup: str, fill: Callable[[BinaryIO], int]) -> tuple[int, str]:
        """``fill(out)`` writes the snapshot; returns (size, sha256). The file
        appears under its name only once complete and on disk."""
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        final = self.file(backup)
        temp = os.path.join(self.path, f".{backup}{SUFFIX}{TEMP}")
        try:
            with open(temp, "wb") as handle:
                writer = HashingWriter(handle)
                size = fill(writer)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise
        return size, writer.digest.hexdigest()

    def publish(self, record: BackupRecord) -> None:
        """The sidecar, last: from now on the backup is listed."""
        temp = os.path.join(self.path, f".{record.id}{SIDECAR}{TEMP}")
        with open(temp, "w") as handle:
            handle.write(record.encode() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.sidecar(record.id))
        _fsync_dir(self.path)

    def list(self) -> list[BackupRecord]:
        """Complete backups (sidecar and file), oldest first."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.startswith(".") or not name.endswith(SIDECAR):
                continue
            backup = name.removesuffix(SIDECAR)
            if not os.path.isfile(self.file(backup)):
                continue
            try:
                with open(self.sidecar(backup)) as handle:
                    record = parse_record(handle.read())
            except OSError:
                continue
            if record is not None and record.id == backup:
                out.append(record)
        return sorted(out, key=lambda r: (r.time, r.id))

    def find(self, backup: str) -> BackupRecord | None:
        return next((r for r in self.list() if r.id == backup), None)

    def delete(self, backup: str) -> None:
        for path in (self.sidecar(backup), self.file(backup)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def remove_temporaries(self, host: str) -> list[str]:
        """What a crash in the middle of one of ``host``'s backups left (a
        --backup-dir may be shared: another node's may be being written);
        returns the names removed."""
        mine = (f"Z-{host}{SUFFIX}{TEMP}", f"Z-{host}{SIDECAR}{TEMP}")   # backup_id: ...Z-HOST
        try:
            names = [n for n in os.listdir(self.path) if n.startswith(".") and n.endswith(mine)]
        except FileNotFoundError:
            return []
        for name in names:
            os.unlink(os.path.join(self.path, name))
        return names


def check_file(path: str, record: BackupRecord | None) -> str:
    """What is wrong with a snapshot file against its record ("" when nothing)."""
    if not os.path.isfile(path):
        return f"{path}: no such file"
    if record is None:
        return ""
    size = os.path.getsize(path)
    if size != record.size:
        return f"{path}: {size} bytes, the backup had {record.size}"
    digest = sha256_of(path)
    if digest != record.sha256:
        return f"{path}: sha256 {digest[:16]}..., the backup had {record.sha256[:16]}...: the file is damaged"
    return ""
