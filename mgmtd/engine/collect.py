"""Collecting other hosts' exports: select them with the graph's ``collect``
rules (filters that filter, overrides that are explicit) and keep the selection
current through an etcd watch.

Selection is a pure function of (rules, exports, local graph); the Collector
around it only reads etcd and hands each new selection to the engine."""

from __future__ import annotations

import fnmatch
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from mgmtd import log
from mgmtd.backoff import Backoff, first_line
from mgmtd.cluster.client import Connection
from mgmtd.cluster.exported import Export, parse_export, subject_of
from mgmtd.cluster.keys import Keys
from mgmtd.resources import KINDS
from mgmtd.resources.base import EXPORTED_META, Meta, Resource, exported_to
from mgmtd.resources.file import SPECIAL_BITS, Confinement, FileResource, parse_mode
from mgmtd.resources.fsplace import anchor_of
from mgmtd.yamlgraph.loader import CollectRule

LOG = log.get("engine.collect")

NAME_DEFAULTED = {"exec": ("cmd",), "kv": ("key",)}
# kinds whose name is the object they manage keep the exporter's name (as in
# mgmt): renamed NAME@HOST, a pkg or user would be invalid and a svc would be
# the template instance NAME@HOST.service
NAME_IS_OBJECT = ("pkg", "svc", "user", "group")


def pattern_matches(pattern: str | None, subject: str) -> bool:
    if not pattern:
        return True
    if pattern.endswith("/"):
        # that directory and everything under it (the directory itself too)
        return subject == pattern or subject == pattern.rstrip("/") or subject.startswith(pattern)
    return fnmatch.fnmatchcase(subject, pattern)


def rule_matches(rule: CollectRule, export: Export) -> bool:
    if rule.kind != export.kind:
        return False
    if rule.hosts and export.host not in rule.hosts:
        return False
    return pattern_matches(rule.pattern, subject_of(export))


def matched(rules: list[CollectRule], exports: list[Export]) -> list[Export]:
    """The exports some rule matches, in key order: all that ``select`` looks
    at. A change among the others cannot change what this host applies."""
    return sorted((e for e in exports if any(rule_matches(r, e) for r in rules)), key=lambda e: e.key)


@dataclass
class Selection:
    resources: list[Resource] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    sources: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # graph key -> exports


def build_resource(export: Export, rule: CollectRule) -> Resource:
    cls = KINDS[export.kind]
    params = {k: v for k, v in export.params.items() if k in cls.FIELDS}
    # fields that default to the resource name keep the exporter's name, not ours (name@host)
    for field_name in NAME_DEFAULTED.get(export.kind, ()):
        if not params.get(field_name):
            params[field_name] = export.name
    params.update(dict(rule.set))
    # mgmt: "On resource collect, this parameter [export] is not preserved"
    meta_fields = {k: v for k, v in export.meta.items() if k in EXPORTED_META}
    name = export.name if export.kind in NAME_IS_OBJECT else f"{export.name}@{export.host}"
    res = cls(name, params, Meta(**meta_fields))
    if isinstance(res, FileResource):
        res.confinement = Confinement(anchor_of(rule.pattern), rule.allow)
    res.validate()
    if res.meta.reverse and res.reverse_problem():
        raise ValueError(res.reverse_problem())
    return res


def untrusted_rights(rule: CollectRule, export: Export) -> str:
    """Why an export asks for more than a collected resource may have, or "".
    Only what the exporter sent is judged: the rule's own ``set:`` is the
    collector's word and trusted."""
    if export.kind != "file":
        return ""
    overridden = {key for key, _ in rule.set}
    sent = {k: v for k, v in export.params.items() if v is not None and k not in overridden}
    if sent.get("symlink"):
        # a link placed by another host could lead a local reader (a web server,
        # another resource) to any file of this host: only the rule's set: may make one
        return "symlink is refused for collected files (only the collect rule's set: may make a link)"
    if "source" in sent and "source" not in rule.allow:
        return "source (a file of this host) is refused for collected files; the collect rule may allow: [source]"
    if "fragments" in sent and "source" not in rule.allow:
        return ("fragments (files of this host) are refused for collected files; "
                "the collect rule may allow: [source]")
    if "mode" in sent and "setid" not in rule.allow:
        try:
            mode = parse_mode(sent["mode"])
        except ValueError:
            mode = None  # validate() reports it
        if mode is not None and mode & SPECIAL_BITS:
            return (f"mode {mode:04o} has setuid, setgid or sticky bits, refused for collected files; "
                    "the collect rule may allow: [setid]")
    for key in ("owner", "group"):
        if key in sent and "owner" not in rule.allow:
            return (f"{key} is refused for collected files (they belong to this host's defaults); "
                    "the collect rule may allow: [owner]")
    return ""


def confined(rule: CollectRule, res: Resource) -> str:
    """Why a collected file may not go where it would, or "": after ``set:``
    it must still match the rule's pattern. (Symlinks are dealt with when the
    file is written: no link below the pattern's anchor is ever followed.)"""
    if rule.kind != "file" or not rule.pattern:
        return ""
    path = res.full_path
    if not pattern_matches(rule.pattern, path):
        return f"{path} is outside the pattern {rule.pattern}"
    return ""


class LocalObjects:
    """What the local graph manages, by identity and by key, for ``select``
    (a hidden resource gives way): made once per loaded graph, not at each
    change of the exports (10,000 resources: 5 ms each time)."""

    def __init__(self, local: list[Resource]) -> None:
        shown = [r for r in local if not r.meta.hidden]
        self.by_identity = {r.identity(): r for r in shown}
        self.by_key = {r.key: r for r in shown}


def select(rules: list[CollectRule], exports: list[Export], self_host: str,
           local: list[Resource] | LocalObjects) -> Selection:
    """Which exports this host applies: those meant for it (``meta.export``
    names it or ``"*"``) that a rule selects. Two exports managing the same object
    identically are applied once; differently, they are a conflict and neither
    is applied. A local resource always wins over a collected one."""
    out = Selection()
    candidates: dict[tuple, list[tuple[Export, Resource]]] = {}
    for export in sorted(exports, key=lambda e: e.key):
        if export.kind not in KINDS or not exported_to(export.to, self_host):
            continue
        rule = next((r for r in rules if rule_matches(r, export)), None)
        if rule is None:
            continue
        refusal = untrusted_rights(rule, export)
        if not refusal:
            try:
                res = build_resource(export, rule)
            except (ValueError, TypeError) as err:
                refusal = str(err)
            else:
                refusal = confined(rule, res)
        if refusal:
            out.rejected.append(f"{export.kind}[{export.name}] from {export.host}: {refusal}")
            continue
        candidates.setdefault(res.identity(), []).append((export, res))
    if not candidates:
        return out   # nothing collected: no need to know what the local graph manages
    if not isinstance(local, LocalObjects):
        local = LocalObjects(local)
    local_identities, local_keys = local.by_identity, local.by_key
    taken: set = set()
    for identity, found in sorted(candidates.items(), key=lambda item: str(item[0])):
        hosts = [e.host for e, _ in found]
        first = found[0][1]
        if any(not first.same_as(other) for _, other in found[1:]):
            out.conflicts.append(
                f"{found[0][0].kind} {identity[1]!s} is exported differently by "
                f"{', '.join(sorted(set(hosts)))}: none of them is applied")
            continue
        if identity in local_identities:
            if not any(e.host == self_host for e, _ in found):
                out.rejected.append(f"{first} collides with local {local_identities[identity]}: "
                                    "the local resource wins")
            continue
        # a kept name (NAME_IS_OBJECT) may be a local resource's or another
        # export's for another object (a session svc): one graph has one of each
        if first.key in local_keys:
            out.rejected.append(f"{first} collides with local {local_keys[first.key]}: "
                                "the local resource wins")
            continue
        if first.key in taken:
            out.conflicts.append(f"{first} is exported for different objects: only the first is applied")
            continue
        taken.add(first.key)
        out.resources.append(first)
        out.sources[first.key] = [f"{e.host}/{e.kind}/{e.name}" for e, _ in found]
    return out


class Collector:
    """Keeps a snapshot of every export through an etcd watch and calls
    ``on_change(exports)`` whenever it changes, while it is wanted: a graph
    without collect rules needs no export of anyone, and an engine that
    watched them all anyway would wake at every export change in the cluster
    (N hosts that each change their exports: N x N wake-ups)."""

    def __init__(self, connection: Connection, namespace: str,
                 on_change: Callable[[list[Export]], None]) -> None:
        self.connection = connection
        self.keys = Keys(namespace)
        self.on_change = on_change
        self.stopping = threading.Event()
        self.restart = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="collect", daemon=True)
        self.snapshot: dict[str, Export] = {}
        self.force_publish = False
        self.wanted = threading.Event()   # want(): the graph collects

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.restart.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)

    def want(self, collecting: bool) -> None:
        """Starts (True) or stops (False) watching the cluster's exports. A
        watch that starts again reads every export afresh and hands them on,
        changed or not: the engine forgot the last ones when it stopped."""
        if collecting == self.wanted.is_set():
            return
        if collecting:
            self.force_publish = True
            self.wanted.set()
        else:
            self.wanted.clear()
        self.restart.set()

    def endpoints_changed(self) -> None:
        self.restart.set()

    def resync(self) -> None:
        """Reads every export afresh (SIGHUP) and hands the result on even if
        nothing seems to have changed."""
        self.force_publish = True
        self.restart.set()

    def _loop(self) -> None:
        backoff = Backoff(first=0.1, cap=5.0)
        while not self.stopping.is_set():
            self.restart.clear()
            if not self.wanted.is_set():
                self.snapshot = {}   # the next watch hands on all it reads
                self.restart.wait()
                continue
            try:
                self._watch()
                backoff.reset()
            except Exception as err:  # etcd unreachable or moving: resync when it is back
                delay = backoff.next_delay()
                LOG.log(backoff.level(), "cannot watch exports: %s", first_line(err))
                self.restart.wait(delay)

    def _watch(self) -> None:
        if not self.connection.endpoints:
            self.restart.wait(1.0)
            return
        client = self.connection.get()
        response = client.get_prefix_response(self.keys.exported)
        snapshot = {}
        for kv in response.kvs:
            key = kv.key.decode()
            export = parse_export(key, kv.value, self.keys)
            if export is not None:
                snapshot[key] = export
        self._publish(snapshot)
        events: queue.SimpleQueue = queue.SimpleQueue()
        watch_id = client.add_watch_prefix_callback(
            self.keys.exported, events.put, start_revision=response.header.revision + 1)
        try:
            while not self.restart.is_set():
                try:
                    item = events.get(timeout=0.5)
                except queue.Empty:
                    continue
                changed = dict(self.snapshot)
                while True:
                    if isinstance(item, Exception):
                        raise item
                    for event in item.events:
                        key = event.key.decode()
                        value = getattr(event, "value", b"")
                        export = parse_export(key, value, self.keys) if value else None
                        if export is None:
                            changed.pop(key, None)
                        else:
                            changed[key] = export
                    try:
                        item = events.get_nowait()  # take the whole burst in one go
                    except queue.Empty:
                        break
                self._publish(changed)
        finally:
            try:
                client.cancel_watch(watch_id)
            except Exception as err:
                LOG.debug("cancel watch: %s", err)

    def _publish(self, snapshot: dict[str, Export]) -> None:
        forced, self.force_publish = self.force_publish, False
        if snapshot == self.snapshot and self.snapshot and not forced:
            return
        try:
            self.on_change(list(snapshot.values()))
        except BaseException:
            self.force_publish = True   # not handed over: the next read hands it over again
            raise
        # kept only once handed over: a failed hand-over is not taken for done
        # (the restart's fresh read would find nothing new)
        self.snapshot = snapshot
