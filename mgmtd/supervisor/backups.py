"""Backups, taken by the supervisor that leads: on a schedule
(``--backup-interval``), before every membership change, and when ``mgmtctl
backup now`` asks (``{ns}/cluster/backup-request``). The snapshot comes from
this node's own etcd over gRPC (with its TLS files), is written atomically to
the backup directory with its sidecar, checked (sha256 while streaming, then
etcd's own hash with ``etcdctl snapshot status``, which also gives the exact
revision), and listed in etcd (``{ns}/backups/ID``). Old ones go by the
retention policy (``--backup-keep``), on every node for the files it holds.

A failed backup is logged and the round goes on, membership changes included:
those are mostly repairs that give the cluster its redundancy back, and
blocking them on a full backup disk would trade a present risk for a
possible one. The last good backup stays, and the failure is reported."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable

from mgmtd import log
from mgmtd.backoff import first_line
from mgmtd.cluster.backups import BackupDir, BackupRecord, backup_id
from mgmtd.cluster.etcdapi import EtcdApi
from mgmtd.cluster.retention import Policy, to_delete
from mgmtd.cluster.store import Store
from mgmtd.supervisor.etcd_process import find_binary

LOG = log.get("backup")

SNAPSHOT_TIMEOUT = 60.0   # seconds: a backup never holds the round longer
PRE_CHANGE_FRESH = 30.0   # a backup this recent already stands for "before the change"
PRUNE_EVERY = 60.0        # seconds between retention passes on a node that does not lead
RETRY_AFTER = 60.0        # seconds before a failed backup is tried again (not at every round)


class BackupError(Exception):
    """A snapshot could not be taken or checked; the message says why."""


def snapshot_status(etcdctl: str | None, path: str) -> dict:
    """``etcdctl snapshot status``: checks etcd's own hash over the file and
    reads its revision and key count. {} when there is no etcdctl."""
    if etcdctl is None:
        return {}
    out = subprocess.run([etcdctl, "snapshot", "status", path, "-w", "json"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "ETCDCTL_API": "3"})
    if out.returncode != 0:
        raise BackupError(f"{path}: etcd's check failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    try:
        return json.loads(out.stdout)
    except ValueError:
        raise BackupError(f"{path}: etcdctl snapshot status said {out.stdout[:100]!r}") from None


class Backups:
    def __init__(self, directory: str, host: str, api: EtcdApi, interval: float, policy: Policy,
                 on_taken: Callable[[int, float], None] = lambda size, when: None) -> None:
        self.dir = BackupDir(directory)
        self.on_taken = on_taken  # (size, wall time) of the newest backup here: /metrics
        self.host = host
        self.api = api
        self.interval = interval
        self.policy = policy
        self.etcdctl = find_binary("etcdctl")
        self.last_taken = 0.0          # time of the newest backup here (wall clock)
        self.last_pruned = 0.0
        self.last_failed: float | None = None   # wall clock of the last failed try
        self.last_error = ""

    def start(self) -> None:
        for name in self.dir.remove_temporaries(self.host):
            LOG.warning("removed %s: a backup cut short by a crash", name)
        newest = self.dir.list()
        self.last_taken = newest[-1].time if newest else 0.0
        if newest:
            self.on_taken(newest[-1].size, newest[-1].time)
        if self.etcdctl is None:
            LOG.warning("etcdctl not found: backups are checked by sha256 only, their revision is a lower "
                        "bound, and restore is impossible here (Debian: apt-get install etcd-client)")

    # --- what the supervisor calls ------------------------------------------------------
    def due(self, now: float) -> bool:
        """A clock set back (the newest backup "in the future") makes one due
        at once, not when the clock catches up."""
        if self.interval <= 0 or self._failed_lately(now):
            return False
        return now < self.last_taken or now - self.last_taken >= self.interval

    def _failed_lately(self, now: float) -> bool:
        return self.last_failed is not None and 0 <= now - self.last_failed < RETRY_AFTER

    def round(self, now: float, leading: bool, url: str, store: Store | None, voters: int,
              generation: int) -> None:
        """One supervisor round's share: the leader answers a request or keeps
        the schedule; every node prunes what it holds now and then."""
        if leading and store is not None:
            try:
                request = store.backup_request()
            except Exception as err:  # no quorum or moving: the next round asks again
                LOG.debug("cannot read the backup request: %s", first_line(err))
                request = ""
            if request:
                self.take(url, store, f"requested ({request})", voters, generation)
                try:
                    store.clear_backup_request(request)
                except Exception as err:
                    LOG.debug("cannot clear the backup request: %s", first_line(err))
            elif self.due(now):
                self.take(url, store, "schedule", voters, generation)
        if now - self.last_pruned >= PRUNE_EVERY:
            self.prune(store)

    def before_change(self, what: str, url: str, store: Store | None, voters: int, generation: int) -> None:
        now = time.time()
        if 0 <= now - self.last_taken < PRE_CHANGE_FRESH or self._failed_lately(now):
            return   # a fresh backup stands for it; a failed one is not retried before each change
        self.take(url, store, f"before {what}", voters, generation)

    # --- taking one ------------------------------------------------------------------------
    def take(self, url: str, store: Store | None, reason: str, voters: int,
             generation: int) -> BackupRecord | None:
        """Takes, checks and lists one backup; None (logged) when it failed."""
        started = time.monotonic()
        try:
            record = self._take(url, reason, voters, generation)
        except Exception as err:
            self.last_failed = time.time()
            self.last_error = first_line(err)[:200]
            LOG.warning("backup failed (%s): %s; the round goes on, the last good backup stays",
                        reason, self.last_error)
            return None
        self.last_error = ""
        self.last_failed = None
        self.last_taken = record.time
        self.on_taken(record.size, record.time)
        LOG.info("backup %s: revision %d, %d bytes, %.2fs (%s)", record.id, record.revision, record.size,
                 time.monotonic() - started, reason)
        if store is not None:
            try:
                store.put_backup(record)
            except Exception as err:  # the file is there; the index is written again at the next prune
                LOG.warning("backup %s is not listed in etcd yet: %s", record.id, first_line(err))
        self.prune(store)
        return record

    def _take(self, url: str, reason: str, voters: int, generation: int) -> BackupRecord:
        status = self.api.status(url, timeout=2.0)   # cluster id, and the revision if etcdctl is missing
        when = time.time()
        name = backup_id(when, self.host)
        size, digest = self.dir.write_snapshot(name, lambda out: self.api.snapshot(url, out, SNAPSHOT_TIMEOUT))
        try:
            checked = snapshot_status(self.etcdctl, self.dir.file(name))
        except BackupError:
            self.dir.delete(name)
            raise
        record = BackupRecord(id=name, time=when, revision=int(checked.get("revision", status.revision)),
                              size=size, sha256=digest, host=self.host, cluster_id=f"{status.cluster_id:x}",
                              members=voters, generation=generation, reason=reason)
        self.dir.publish(record)
        return record

    # --- retention -----------------------------------------------------------------------------
    def prune(self, store: Store | None) -> None:
        """Deletes what the policy lets go, file and listing; lists again what
        this node holds but etcd does not (written while etcd was away), and
        unlists what this node listed but no longer holds."""
        self.last_pruned = time.time()
        held = self.dir.list()
        doomed = to_delete([(r.id, r.time) for r in held], self.policy, time.time())
        for record in held:
            if record.id in doomed:
                self.dir.delete(record.id)
                LOG.info("deleted backup %s (retention %s)", record.id, self.policy.describe())
        if store is None:
            return
        kept = {r.id: r for r in held if r.id not in doomed and r.host == self.host}
        try:
            listed = {r.id: r for r in store.backups() if r.host == self.host}
            for backup in set(listed) - set(kept):
                if not os.path.exists(self.dir.file(backup)):
                    store.delete_backup(backup)
            for backup in set(kept) - set(listed):
                store.put_backup(kept[backup])
        except Exception as err:  # no quorum: the next pass does it
            LOG.debug("cannot bring the backup listing up to date: %s", first_line(err))
