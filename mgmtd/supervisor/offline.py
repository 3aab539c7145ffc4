"""``mgmtd restore --prefix P SNAPSHOT``: the restore for a node whose
supervisor is stopped. It reads how the node ran from ``node.json``, takes
the prefix's lock (so no supervisor starts meanwhile), refuses while the
cluster has quorum (unless --force), restores, and leaves the new generation
for the supervisor to write at its next start."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from mgmtd import tls
from mgmtd.backoff import first_line
from mgmtd.cluster.etcdapi import EtcdApi
from mgmtd.cluster.keys import DEFAULT_NAMESPACE, Keys
from mgmtd.supervisor.etcd_process import find_binary
from mgmtd.supervisor.preflight import NodeState, StartupError, lock_prefix
from mgmtd.supervisor.restore import (
    RestoreError,
    check,
    generation_first,
    look_around,
    lost_writes,
    next_generation,
    quorum_in_reach,
    refusal,
    restore_data,
)

QUESTION = ("Restore {snapshot} on {host} ({prefix})? It becomes a one-member cluster with a new cluster "
            "id; every other member moves its member data aside and rejoins; writes after the backup "
            "are lost.")


def restore_offline(prefix: str, spec: str, yes: bool, force: bool, confirm: Callable[[str], bool],
                    say: Callable[[str], None]) -> int:
    # the prefix's lock names this pid: a 'mgmtctl restore' meanwhile sends SIGUSR1,
    # whose default action would end this restore half way
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        return _restore_locked(prefix, spec, yes, force, confirm, say)
    finally:
        signal.signal(signal.SIGUSR1, previous)


def _restore_locked(prefix: str, spec: str, yes: bool, force: bool, confirm: Callable[[str], bool],
                    say: Callable[[str], None]) -> int:
    if not os.path.isfile(os.path.join(prefix, "node.json")):
        say(f"refused: no mgmtd node in {prefix} (no node.json): give the node's --prefix")
        return 1
    try:
        lock = lock_prefix(prefix)
    except StartupError:
        say(f"refused: mgmtd runs on {prefix}: use 'mgmtctl restore {spec}' (it asks the running supervisor)")
        return 1
    except OSError as err:   # the prefix is root's
        say(f"failed: {first_line(err)}")
        return 1
    try:
        return _restore(prefix, spec, yes, force, confirm, say)
    except RestoreError as err:
        say(f"failed: {err}")
        return 1
    except (OSError, ValueError) as err:
        say(f"failed: {first_line(err)}")
        return 1
    finally:
        os.close(lock)


def _restore(prefix: str, spec: str, yes: bool, force: bool, confirm: Callable[[str], bool],
             say: Callable[[str], None]) -> int:
    state = NodeState(prefix)
    node = state.node
    if not node.get("host") or not node.get("peer_urls"):
        raise RestoreError(f"{prefix}/node.json does not say how this node ran: start mgmtd once "
                           "(this version), or restore by hand (docs/operations.md)")
    if node.get("no_server"):
        raise RestoreError("this node runs with --no-server: restore on a node that may run etcd")
    files = node.get("tls")
    api = EtcdApi(tls.from_args(*files) if isinstance(files, list) and len(files) == 3 else None)
    try:
        own = set(node.get("client_urls") or ())
        others = [u for u in state.endpoints if u not in own]
        own_data = os.path.isdir(os.path.join(prefix, "etcd", "member"))
        why = refusal(quorum_in_reach(api, others, own, own_data, state.endpoints), force)
        if why:
            say(f"refused: {why}")
            return 1
        etcdctl = find_binary("etcdctl")
        snapshot = check(spec, node.get("backup_dir") or os.path.join(prefix, "backups"), etcdctl, say)
        question = QUESTION.format(snapshot=spec, host=node["host"], prefix=prefix)
        if not yes and not confirm(question):
            say("refused: not confirmed")
            return 1
        seen = look_around(api, state.endpoints, Keys(node.get("namespace") or DEFAULT_NAMESPACE))
        base = snapshot.record.generation if snapshot.record is not None else 0
        generation = next_generation(base, state.generation, seen)
        with generation_first(state, generation):
            restore_data(snapshot, prefix, node["host"], node["peer_urls"], etcdctl, say)
        known = state.revision
        state.cluster_id, state.revision = 0, snapshot.revision
        state.endpoints = sorted(own)
        state.save()
    finally:
        api.close()
    say(f"done: {node['host']} will start as a one-member cluster, generation {generation}, at revision "
        f"{snapshot.revision}; {lost_writes(snapshot.revision, known)}. Start mgmtd now (systemctl start "
        "mgmtd): the other nodes rejoin as volunteers")
    return 0
