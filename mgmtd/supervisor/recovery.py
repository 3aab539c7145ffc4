"""The supervisor's share of backups and restores: its backups (leader),
the generation guard (every serving node), a restore asked for by
``mgmtctl restore`` and the generation a restore left to write. Kept out of
node.py, which only calls in at the start, after each round, before each
membership change and on SIGUSR1."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mgmtd import log
from mgmtd.backoff import first_line
from mgmtd.cluster import control
from mgmtd.cluster.generation import Mark, newer_cluster, parse_generation, rivals
from mgmtd.cluster.model import AddLearner, Promote, RemoveMember
from mgmtd.supervisor.backups import Backups
from mgmtd.supervisor.etcd_process import EtcdStartError
from mgmtd.supervisor.restore import (
    RestoreError,
    check,
    generation_first,
    look_around,
    lost_writes,
    move_aside,
    next_generation,
    quorum_in_reach,
    refusal,
    restore_data,
)

if TYPE_CHECKING:
    from mgmtd.cluster.loop import Round
    from mgmtd.supervisor.node import Supervisor

LOG = log.get("supervisor")

GUARD_EVERY = 2.0   # seconds between looks at the clusters at other URLs
FEED_EVERY = 1.0    # seconds between watchdog pings while a backup or a restore holds the loop


@contextlib.contextmanager
def watchdog_fed(notifier) -> Iterator[None]:
    """A backup (snapshot, then etcd's check of it) or a restore holds the
    supervisor's loop for a bounded time, but minutes for a large database:
    longer than WatchdogSec. systemd must not kill the node for it, and
    again at each restart (a due backup is taken first thing)."""
    done = threading.Event()

    def feed() -> None:
        while not done.wait(FEED_EVERY):
            notifier.watchdog()

    feeder = threading.Thread(target=feed, name="watchdog-feed", daemon=True)
    feeder.start()
    try:
        yield
    finally:
        done.set()
        feeder.join()


def identity(sup: Supervisor) -> dict:
    """How this node runs, in node.json: ``mgmtd restore`` reads it with the supervisor stopped."""
    cfg = sup.config
    return {"host": cfg.hostname, "peer_urls": list(cfg.advertised_peers),
            "client_urls": list(cfg.advertised_clients), "namespace": cfg.namespace,
            "backup_dir": backup_dir(cfg.prefix, cfg.backup_dir), "no_server": cfg.no_server,
            "tls": [cfg.tls.ca, cfg.tls.cert, cfg.tls.key] if cfg.tls is not None else None}


def backup_dir(prefix: str, given: str | None) -> str:
    return os.path.abspath(given) if given else os.path.join(prefix, "backups")


def describe(action: object) -> str:
    if isinstance(action, AddLearner):
        return f"adding {action.host}"
    if isinstance(action, Promote):
        return f"promoting {action.host}"
    if isinstance(action, RemoveMember):
        return f"removing {action.host or 'an unstarted learner'}"
    return type(action).__name__


class Recovery:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        cfg = sup.config
        self.backups = Backups(backup_dir(cfg.prefix, cfg.backup_dir), cfg.hostname, sup.api,
                               cfg.backup_interval, cfg.backup_keep, on_taken=sup.metrics.backup_taken)
        self.last_look = 0.0
        self.rivals_said: set[int] = set()

    def start(self) -> None:
        self.sup.state.node = identity(self.sup)
        self.sup.state.save()
        self.backups.start()

    # --- the guard -----------------------------------------------------------------------
    def _others(self) -> list[str]:
        sup = self.sup
        own = set(sup.config.advertised_clients)
        members = sup.last_round.assessment.members if sup.last_round is not None else ()
        urls = [u for m in members for u in m.client_urls] + list(sup.state.endpoints) + list(sup.config.seeds)
        return [u for u in dict.fromkeys(urls) if u not in own]

    def superseded_at_start(self) -> bool:
        """Before etcd starts on member data found: is there a newer cluster?
        Then the data goes to stale/ and the node starts as a client."""
        state = self.sup.state
        mark = Mark(state.cluster_id, max(state.generation, state.restored_generation))
        newer = newer_cluster(mark, look_around(self.sup.api, self._others(), self.sup.keys))
        if newer is None:
            return False
        self._stand_down(mark, newer.url, newer.cluster_id, newer.generation, running=False)
        return True

    def _own_mark(self) -> Mark | None:
        """What this node's own etcd says: its cluster id and generation (both
        answered by the member alone)."""
        url = self.sup.local.process.client_url
        try:
            status = self.sup.api.status(url, timeout=1.0)
            generation = parse_generation(self.sup.api.get(url, self.sup.keys.generation, timeout=1.0))
        except Exception:
            return None
        state = self.sup.state
        # restored, the new generation not written yet: its etcd still holds the snapshot's
        generation = max(generation, state.restored_generation)
        if (status.cluster_id, generation, status.revision) != (state.cluster_id, state.generation,
                                                                 state.revision):
            state.cluster_id, state.generation, state.revision = status.cluster_id, generation, status.revision
            state.save()
        return Mark(status.cluster_id, generation)

    def at_stop(self) -> None:
        """The last revision this node saw, for a restore with the supervisor stopped."""
        if self.sup.local is not None and self.sup.local.serving and self.sup.local.process.running():
            self._own_mark()

    def _guard(self) -> None:
        if time.monotonic() - self.last_look < GUARD_EVERY:
            return
        self.last_look = time.monotonic()
        mark = self._own_mark()
        if mark is None:
            return
        seen = look_around(self.sup.api, self._others(), self.sup.keys)
        newer = newer_cluster(mark, seen)
        if newer is not None:
            self._stand_down(mark, newer.url, newer.cluster_id, newer.generation, running=True)
            return
        for rival in rivals(mark, seen):
            if rival.cluster_id not in self.rivals_said:
                self.rivals_said.add(rival.cluster_id)
                LOG.error("%s serves another cluster (%x) of the same generation %d: two restores? Nothing "
                          "is done about it: restore one of them again (see docs/operations.md)",
                          rival.url, rival.cluster_id, rival.generation)

    def _stand_down(self, mark: Mark, url: str, cluster_id: int, generation: int, running: bool) -> None:
        sup = self.sup
        LOG.error("this node's etcd member data belongs to cluster %x (generation %d), but %s serves the "
                  "restored cluster %x (generation %d): %s",
                  mark.cluster_id, mark.generation, url, cluster_id, generation,
                  "stopping etcd, moving the data aside and rejoining as a volunteer" if running else
                  "moving the data aside and joining as a volunteer, without starting the old member")
        if running:
            sup.local.process.stop()
        moved = move_aside(sup.config.prefix, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                           + f"-cluster-{mark.cluster_id:x}-generation-{mark.generation}")
        LOG.warning("old member data kept in %s (delete it once you no longer need it)", moved)
        sup.local.serving = False
        sup.local.bootstrapped = False
        sup.state.cluster_id, sup.state.generation, sup.state.endpoints = cluster_id, generation, [url]
        sup.state.save()
        sup.loop.endpoints = [url]

    # --- after each round ----------------------------------------------------------------------
    def after_round(self, round_: Round) -> None:
        sup = self.sup
        assessment = round_.assessment
        if sup.local.serving and sup.local.process.running():
            self._guard()
        if not sup.local.serving:
            with watchdog_fed(sup.notifier):
                self.backups.round(time.time(), False, "", None, 0, 0)
            return
        store = sup.loop.store() if assessment.reachable else None
        if store is not None and sup.state.restored_generation:
            self._finish_restore(store, assessment)
        with watchdog_fed(sup.notifier):
            self.backups.round(time.time(), assessment.is_leader, sup.local.process.client_url, store,
                               len(assessment.voters), sup.state.generation)

    def before_change(self, action: object, store) -> None:
        """Called by act with the round's own store: asking the loop for one
        here could replace the client act is using."""
        sup = self.sup
        voters = len(sup.last_round.assessment.voters) if sup.last_round is not None else 0
        with watchdog_fed(sup.notifier):
            self.backups.before_change(describe(action), sup.local.process.client_url, store, voters,
                                       sup.state.generation)

    def _finish_restore(self, store, assessment) -> None:
        """The restored cluster's first reachable round: raise the generation
        (old members then stand down) and drop the nominations of members that
        are not in it."""
        state = self.sup.state
        try:
            if store.generation() < state.restored_generation:
                store.set_generation(state.restored_generation)
            for nomination in store.nominations():
                if nomination.host != self.sup.config.hostname:
                    store.unnominate(nomination.host)
            store.drop_backup_request()   # answered before the loss, or to be asked again
        except Exception as err:  # the next round tries again
            LOG.debug("cannot write the restored generation yet: %s", first_line(err))
            return
        LOG.warning("restored cluster is generation %d: members of earlier generations stand down when "
                    "they see it", state.restored_generation)
        state.generation, state.restored_generation = state.restored_generation, 0
        state.save()

    # --- mgmtctl restore ---------------------------------------------------------------------------
    def restore_from_request(self) -> None:
        prefix = self.sup.config.prefix
        request = control.take_request(prefix)
        if request is None:
            return
        rid = request["id"]

        def say(line: str) -> None:
            LOG.warning("restore: %s", line)
            control.say(prefix, rid, line)

        try:
            with watchdog_fed(self.sup.notifier):
                say("done: " + self.restore(request["snapshot"], bool(request.get("force")), say))
        except RestoreError as err:
            final = "refused: " if str(err).startswith("refused") else "failed: "
            say(final + str(err).removeprefix("refused: "))
        except Exception as err:  # one line to the operator, whatever went wrong
            say(f"failed: {first_line(err)}")

    def restore(self, spec: str, force: bool, say) -> str:
        sup = self.sup
        cfg = sup.config
        if cfg.no_server:
            raise RestoreError("refused: this node runs with --no-server: restore on a node that may run etcd")
        # a round that could not read etcd may have met one timeout or an election: ask again
        quorum = (sup.last_round is not None and sup.last_round.assessment.reachable) or quorum_in_reach(
            sup.api, [*cfg.advertised_clients, *sup.loop.endpoints, *sup.state.endpoints],
            cfg.advertised_clients, sup.local.has_member_data(), sup.state.endpoints)
        why = refusal(quorum, force)
        if why:
            raise RestoreError(f"refused: {why}")
        snapshot = check(spec, self.backups.dir.path, self.backups.etcdctl, say)
        known = sup.state.revision
        url = sup.local.process.client_url
        seen = look_around(sup.api, [*cfg.advertised_clients, *self._others()], sup.keys)
        if sup.local.serving and sup.local.process.running():
            try:
                known = max(known, sup.api.status(url, timeout=1.0).revision)
            except Exception:
                pass
            say("stopping this node's etcd")
            sup.local.process.stop()
        base = snapshot.record.generation if snapshot.record is not None else 0
        generation = next_generation(base, sup.state.generation, seen)
        with generation_first(sup.state, generation):
            restore_data(snapshot, cfg.prefix, cfg.hostname, cfg.advertised_peers, self.backups.etcdctl, say)
        sup.state.cluster_id, sup.state.revision = 0, snapshot.revision
        sup.state.endpoints = list(cfg.advertised_clients)
        sup.state.save()
        say("starting etcd on the restored data")
        sup.local.process.config = sup.local.etcd_config()
        sup.local.serving, sup.local.bootstrapped = True, False
        try:
            sup.local.start(joining=False)
        except EtcdStartError as err:
            raise RestoreError(f"etcd did not start on the restored data: {err}") from None
        sup.loop.endpoints = list(cfg.advertised_clients)
        sup.loop.previous = None
        sup.loop.presence.registered = ""
        cluster_id = sup.api.status(url, timeout=2.0).cluster_id
        return (f"{cfg.hostname} is a one-member cluster {cluster_id:x}, generation {generation}, at revision "
                f"{snapshot.revision}; {lost_writes(snapshot.revision, known)}. The other nodes rejoin as "
                "volunteers and the cluster grows back to its ideal size")
