"""Restoring a backup on this node: the operator's one step after losing
quorum for good (``mgmtctl restore`` with the supervisor running,
``mgmtd restore --prefix P`` with it stopped).

etcd's disaster-recovery guide: restore the snapshot into a *fresh* data
directory with ``etcdctl snapshot restore``; a new ``--initial-cluster-token``
gives a new cluster id, so no member of the lost cluster can ever talk to
it. Here it becomes a one-member cluster (this node alone), the generation
is raised (cluster/generation.py), and the normal learner growth brings it
back to its ideal size. The old member data is moved to ``{prefix}/stale/``,
never deleted. Never ``--force-new-cluster``: that keeps the old cluster id.

Also here: the guard's I/O (sighting the clusters at other URLs, moving
superseded member data aside)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mgmtd.cluster.backups import BackupDir, BackupRecord, check_file, parse_record
from mgmtd.cluster.etcdapi import EtcdApi, EtcdApiError
from mgmtd.cluster.generation import Sighting, parse_generation
from mgmtd.cluster.keys import Keys
from mgmtd.cluster.model import has_majority
from mgmtd.cluster.observe import member_list_from, probe_all
from mgmtd.supervisor.backups import BackupError, snapshot_status
from mgmtd.supervisor.preflight import NodeState

Say = Callable[[str], None]


class RestoreError(Exception):
    """The restore cannot go on; the message is the one line the operator sees."""


@dataclass(frozen=True)
class Snapshot:
    path: str
    record: BackupRecord | None     # None: a plain snapshot file (etcdctl snapshot save)
    revision: int                   # what etcd's check of the file says


def resolve(spec: str, backup_dir: str) -> tuple[str, BackupRecord | None]:
    """A backup id from ``mgmtctl backups`` (in this node's backup directory),
    or the path of a snapshot file (its sidecar is used when next to it)."""
    if os.sep in spec or spec.endswith(".db"):
        path = os.path.abspath(spec)
        sidecar = path.removesuffix(".db") + ".json"
        record = None
        if os.path.isfile(sidecar):
            with open(sidecar) as handle:
                record = parse_record(handle.read())
        return path, record
    record = BackupDir(backup_dir).find(spec)
    if record is None:
        raise RestoreError(f"no backup {spec!r} in {backup_dir} on this node ('mgmtctl backups' says "
                           "which node holds each; copy ID.db and ID.json here, or give the file's path)")
    return BackupDir(backup_dir).file(spec), record


def check(spec: str, backup_dir: str, etcdctl: str | None, say: Say) -> Snapshot:
    """The snapshot, verified: its sha256 against the backup's record, then
    etcd's own hash (``etcdctl snapshot status``)."""
    if etcdctl is None:
        raise RestoreError("etcdctl not found: it restores the snapshot (Debian: apt-get install etcd-client)")
    path, record = resolve(spec, backup_dir)
    say(f"checking {path}" + (f" (sha256 {record.sha256[:16]}..., {record.size} bytes)" if record else ""))
    problem = check_file(path, record)
    if problem:
        raise RestoreError(problem)
    try:
        status = snapshot_status(etcdctl, path)
    except BackupError as err:
        raise RestoreError(str(err)) from None
    revision = int(status.get("revision", 0))
    say(f"snapshot ok: revision {revision}, {status.get('totalKey', '?')} keys"
        + (f", taken {record.when} by {record.host}" if record else ""))
    return Snapshot(path, record, revision)


def refusal(quorum_present: bool, force: bool) -> str:
    """Why a restore is refused ("" when it may go on)."""
    if quorum_present and not force:
        return ("the cluster has quorum, or gets it back by itself (a majority of its voters answers, this "
                "node's own stopped member counted): a restore would throw away every write since the backup "
                "and make every other member start afresh; --force if that is really wanted")
    return ""


def quorum_within_reach(voters: int, answering: int, own_waiting: bool) -> bool:
    """Whether the cluster has a majority of its voters, or gets it back by
    itself: the voters that answer (with a raft leader, or without one during
    an election or a hiccup), plus this node's own voter when its member data
    is here but its etcd does not run (it answers once started). Only a
    majority gone for good is a reason to restore without --force."""
    return has_majority(answering + (1 if own_waiting else 0), voters)


def quorum_in_reach(api: EtcdApi, endpoints: Iterable[str], own_urls: Iterable[str], own_data: bool,
                    known: Iterable[str]) -> bool:
    """Asks now (a round's "unreachable" can be one timeout): the member list
    from any endpoint, then every voter's status. When nobody answers, the
    voters are those this node last knew (``known``, one client URL each)."""
    own = set(own_urls)
    try:
        _, _, members = member_list_from(api, list(dict.fromkeys(endpoints)))
    except EtcdApiError:
        urls = set(known)
        voters = len(urls - own) + (1 if urls & own else 0)
        return quorum_within_reach(max(voters, 1), 0, own_data)
    voters = [m for m in members if not m.is_learner]
    statuses = probe_all(api, voters)
    answering = sum(1 for s in statuses if s is not None)
    own_waiting = own_data and any(own & set(m.client_urls) and s is None
                                   for m, s in zip(voters, statuses, strict=True))
    return quorum_within_reach(len(voters), answering, own_waiting)


def next_generation(base: int, local: int, seen: Iterable[Sighting]) -> int:
    """The restored cluster's generation: above the backup's, this node's, and
    every one the members that still answer have."""
    return max(base, local, *(s.generation for s in seen)) + 1


def lost_writes(restored: int, known: int) -> str:
    """What the restore leaves out, by revision, as far as this node knew."""
    if known <= restored:
        return (f"no write this node knew of is missing (it had seen revision {known}; the snapshot holds "
                f"{restored})" if known else f"the snapshot holds revision {restored}")
    return (f"writes acknowledged after revision {restored} are possibly lost: this node had seen up to "
            f"revision {known} ({known - restored} revisions are not in the snapshot; members that are "
            "gone may have had more)")


@contextlib.contextmanager
def generation_first(state: NodeState, generation: int) -> Iterator[None]:
    """The generation to write is in node.json before the restored data is in
    place (a crash in between leaves the old data with a higher generation
    to write: harmless, the old cluster id stays), and taken back when the
    restore fails."""
    before = state.restored_generation
    state.restored_generation = generation
    state.save()
    try:
        yield
    except BaseException:
        state.restored_generation = before
        state.save()
        raise


def restore_data(snapshot: Snapshot, prefix: str, host: str, peer_urls: Iterable[str], etcdctl: str,
                 say: Say) -> str:
    """Restores into a fresh directory, then swaps it in for ``{prefix}/etcd``
    (the old one goes to ``{prefix}/stale/``). etcd must not run on it.
    Returns where the old data went ("" when there was none)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    data_dir = os.path.join(prefix, "etcd")
    fresh = os.path.join(prefix, "etcd.restoring")
    if os.path.exists(fresh):
        os.rename(fresh, os.path.join(prefix, f"etcd.restoring.{stamp}.partial"))
    peers = list(peer_urls)
    command = [etcdctl, "snapshot", "restore", snapshot.path, "--name", host, "--data-dir", fresh,
               "--initial-cluster", ",".join(f"{host}={u}" for u in peers),
               "--initial-advertise-peer-urls", ",".join(peers),
               "--initial-cluster-token", f"mgmtd-{host}-restored-{stamp}"]
    say(f"restoring into a fresh data directory as a one-member cluster ({host} at {','.join(peers)})")
    out = subprocess.run(command, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "ETCDCTL_API": "3"})
    if out.returncode != 0:
        raise RestoreError(f"etcdctl snapshot restore failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    moved = ""
    if os.path.exists(data_dir):
        moved = move_aside(prefix, f"{stamp}-before-restore")
        say(f"moved the old member data to {moved}")
    os.rename(fresh, data_dir)
    return moved


def move_aside(prefix: str, label: str) -> str:
    """``{prefix}/etcd`` to ``{prefix}/stale/LABEL/etcd``; returns the new path."""
    target = os.path.join(prefix, "stale", label)
    os.makedirs(target, mode=0o700, exist_ok=True)
    moved = os.path.join(target, "etcd")
    os.rename(os.path.join(prefix, "etcd"), moved)
    return moved


# --- the guard's eyes -----------------------------------------------------------------------
def sight(api: EtcdApi, url: str, keys: Keys) -> Sighting | None:
    """The cluster id and generation the member at ``url`` has (None: no answer).
    Both reads are answered by the member alone, quorum or not."""
    try:
        cluster_id, _ = api.member_list(url, timeout=1.0)
        generation = parse_generation(api.get(url, keys.generation, serializable=True, timeout=1.0))
    except EtcdApiError:
        return None
    return Sighting(url, cluster_id, generation)


def look_around(api: EtcdApi, urls: Iterable[str], keys: Keys) -> list[Sighting]:
    targets = list(dict.fromkeys(urls))
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
        return [s for s in pool.map(lambda u: sight(api, u, keys), targets) if s is not None]
