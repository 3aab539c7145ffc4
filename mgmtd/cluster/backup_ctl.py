"""mgmtctl's backup commands: ``backups`` (every node's, from etcd's index;
without quorum, the answering member's own copy), ``backup now`` (asks the
leader through ``{ns}/cluster/backup-request``) and ``restore`` (asks the
supervisor of this node through its prefix: cluster/control.py)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Collection

from mgmtd.cluster import control
from mgmtd.cluster.access import is_permission_denied
from mgmtd.cluster.backups import BackupRecord, parse_record
from mgmtd.cluster.etcdapi import EtcdApi
from mgmtd.cluster.keys import Keys
from mgmtd.cluster.store import Store
from mgmtd.cluster.view import ClusterUnreachable, first_member_list, member_client, render_table


def list_backups(api: EtcdApi, endpoints: list[str], namespace: str) -> tuple[list[BackupRecord], bool]:
    """Every node's backups, oldest first, and whether the list is current
    (False: no quorum; the answering member's own, serializable, copy)."""
    keys = Keys(namespace)
    try:
        with member_client(api, endpoints) as client:
            return Store(client, keys).backups(), True
    except ClusterUnreachable:
        raise
    except Exception as err:
        if is_permission_denied(err):
            raise
    _, _, endpoint = first_member_list(api, endpoints)
    found = (parse_record(value) for _, value in api.get_prefix(endpoint, keys.backups, serializable=True))
    return sorted((r for r in found if r is not None), key=lambda r: (r.time, r.id)), False


def newest_backups(api: EtcdApi, endpoints: list[str], namespace: str,
                   answering: Collection[str]) -> tuple[dict | None, dict | None]:
    """For ``mgmtctl status``: see ``pick_backups``."""
    try:
        found, _ = list_backups(api, endpoints, namespace)
    except Exception:  # status still reports the rest
        return None, None
    return pick_backups(found, answering)


def pick_backups(records: list[BackupRecord], answering: Collection[str]) -> tuple[dict | None, dict | None]:
    """The newest backup (rows), and the newest held by a node that answers:
    the one to restore after losing quorum (the newest may be on the node
    that led until it died, with its disk)."""
    usable = [r for r in records if r.host in answering]
    return (backup_row(records[-1]) if records else None), (backup_row(usable[-1]) if usable else None)


def backup_row(record: BackupRecord) -> dict:
    row = json.loads(record.encode())
    row["when"] = record.when
    return row


def render_backups(records: list[BackupRecord], current: bool) -> str:
    table = render_table(["ID", "TAKEN", "REVISION", "SIZE", "HOST", "MEMBERS", "REASON"],
                         [[r.id, r.when, str(r.revision), str(r.size), r.host, str(r.members), r.reason]
                          for r in records])
    return table if current else "no quorum: as the answering member last knew it\n" + table


def backup_now(api: EtcdApi, endpoints: list[str], namespace: str, timeout: float) -> BackupRecord:
    request = uuid.uuid4().hex[:12]
    keys = Keys(namespace)
    with member_client(api, endpoints) as client:
        store = Store(client, keys)
        store.request_backup(request)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [r for r in store.backups() if f"({request})" in r.reason]
            if done:
                return done[0]
            time.sleep(0.2)
    raise ValueError(f"no backup within {timeout:g}s: is there a leader, and does its log say "
                     "'backup failed'?")


def restore(prefix: str, snapshot: str, yes: bool, force: bool, timeout: float) -> int:
    """Asks the supervisor running on ``prefix`` to restore, and relays its progress."""
    try:
        return _restore(prefix, snapshot, yes, force, timeout)
    except OSError as err:   # the prefix is root's, or mgmtd went away meanwhile
        hint = " (run it as the user mgmtd runs as, e.g. with sudo)" if isinstance(err, PermissionError) else ""
        print(f"mgmtctl: cannot ask the mgmtd on {prefix}: {err}{hint}", file=sys.stderr)
        return 1


def _restore(prefix: str, snapshot: str, yes: bool, force: bool, timeout: float) -> int:
    pid = control.supervisor_pid(prefix)
    if pid is None:
        print(f"mgmtctl: no mgmtd runs on {prefix}: give its --prefix, or with it stopped use "
              f"'mgmtd restore --prefix {prefix} {snapshot}'", file=sys.stderr)
        return 1
    if not yes:
        if not sys.stdin.isatty():
            print("mgmtctl: not asking without a terminal: add --yes", file=sys.stderr)
            return 1
        try:
            answer = input(f"Restore {snapshot} on this node ({prefix})? It becomes a one-member cluster with a "
                           "new cluster id; every other member moves its member data aside and rejoins; writes "
                           "after the backup are lost. [y/N] ")
        except EOFError:   # Ctrl-D: no answer is no
            answer = ""
            print(file=sys.stderr)
        if answer.strip().lower() not in ("y", "yes"):
            print("mgmtctl: not restored", file=sys.stderr)
            return 1
    request = control.write_request(prefix, snapshot, force)
    os.kill(pid, signal.SIGUSR1)
    path = control.progress_path(prefix, request)
    shown = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as handle:
                lines = handle.read().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines[shown:]:
            print(line, flush=True)
            if line.startswith(control.FINAL):
                return 0 if line.startswith("done:") else 1
        shown = len(lines)
        time.sleep(0.1)
    print(f"mgmtctl: no answer from mgmtd (pid {pid}) within {timeout:g}s", file=sys.stderr)
    return 1
