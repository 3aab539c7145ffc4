"""``mgmtctl``: look at and steer a running mgmtd cluster."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mgmtd import __version__, tls
from mgmtd.backoff import first_line
from mgmtd.cluster import graphview
from mgmtd.cluster.access import is_permission_denied
from mgmtd.cluster.act import RECOVERY
from mgmtd.cluster.assess import HEALTHY, NO_LEADER
from mgmtd.cluster.backup_ctl import backup_now, backup_row, list_backups, newest_backups, render_backups, restore
from mgmtd.cluster.etcdapi import EtcdApi
from mgmtd.cluster.exported import parse_export, subject_of
from mgmtd.cluster.graphview import GraphView
from mgmtd.cluster.keys import DEFAULT_NAMESPACE, MAX_IDEAL_SIZE, MIN_IDEAL_SIZE, Keys, parse_ideal_size
from mgmtd.cluster.model import has_majority
from mgmtd.cluster.store import Store
from mgmtd.cluster.view import (
    ClusterUnreachable,
    ClusterView,
    gather,
    member_client,
    render_members,
    render_table,
)
from mgmtd.graph import key_str
from mgmtd.hostnames import check_hostname
from mgmtd.urls import parse_url_list

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"
DEFAULT_PREFIX = "/var/lib/mgmtd"    # as mgmtd run's


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgmtctl", description="Look at and steer a running mgmtd cluster.")
    parser.add_argument("--version", action="version", version=f"mgmtctl {__version__}")
    parser.add_argument("--endpoints", default=os.environ.get("MGMTCTL_ENDPOINTS", DEFAULT_ENDPOINTS),
                        help="comma-separated etcd client URLs of any members "
                             "(default: $MGMTCTL_ENDPOINTS or %(default)s)")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                        help="mgmtd's etcd key prefix (default: %(default)s)")
    parser.add_argument("--tls-ca", metavar="FILE", help="the cluster CA (with https:// endpoints)")
    parser.add_argument("--tls-cert", metavar="FILE", help="a certificate signed by the cluster CA")
    parser.add_argument("--tls-key", metavar="FILE", help="its private key")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    members = commands.add_parser("members", help="the member table: roles, URLs, health, engine",
                                  description="Print every member and client of the cluster.")
    members.add_argument("-o", "--output", choices=("table", "json"), default="table",
                         help="output format (default: %(default)s)")
    status = commands.add_parser("status", help="a one-screen summary: size, quorum, leader, engines",
                                 description="Summarise the cluster's health; exits 2 when quorum "
                                             "is lost, 1 when the cluster cannot be reached.")
    status.add_argument("-o", "--output", choices=("text", "json"), default="text")
    setter = commands.add_parser("set", help="change a cluster setting",
                                 description="Change a cluster setting stored in etcd.")
    settings = setter.add_subparsers(dest="setting", metavar="SETTING", required=True)
    ideal = settings.add_parser("ideal-cluster-size", help="how many etcd voters to aim for",
                                description="Set how many etcd voters the cluster aims for "
                                            f"({MIN_IDEAL_SIZE} to {MAX_IDEAL_SIZE}); the leader "
                                            "grows or shrinks one member at a time.")
    ideal.add_argument("size", metavar="N")
    exported = commands.add_parser("exported", help="what hosts export, and who collects it",
                                   description="List the exported resources in the cluster and the "
                                               "hosts whose collect rules apply each.")
    exported.add_argument("--host", help="only exports of this host")
    exported.add_argument("--kind", help="only this resource kind")
    exported.add_argument("-o", "--output", choices=("table", "json"), default="table")
    forget = commands.add_parser("forget", help="remove a dead host's exports for good",
                                 description="Delete every export of HOST. Refused while HOST is "
                                             "running (its engine would publish them again).")
    forget.add_argument("host", metavar="HOST")
    graph = commands.add_parser("graph", help="the graph a host runs, as Graphviz DOT",
                                description="Print the graph HOST's engine runs now, as Graphviz DOT "
                                            "(render it with e.g. `dot -Tpng`): fill colour by "
                                            "state, edges by kind, collected resources marked with "
                                            "their exporters. Exits 1 when HOST publishes no graph.")
    graph.add_argument("host", metavar="HOST")
    graph.add_argument("-o", "--output", choices=("dot", "json"), default="dot",
                       help="dot, or json: the view as the engine published it (default: %(default)s)")
    backups = commands.add_parser("backups", help="the cluster's backups: when, revision, size, which node",
                                  description="List every node's backups (from etcd's index; without "
                                              "quorum, as the answering member last knew it).")
    backups.add_argument("-o", "--output", choices=("table", "json"), default="table")
    backup = commands.add_parser("backup", help="take a backup now ('backup now')",
                                 description="Ask the leader for a backup now and wait for it.")
    backup.add_argument("now", choices=("now",), metavar="now")
    backup.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default: %(default)s)")
    restore = commands.add_parser(
        "restore", help="restore a backup on this node (after losing quorum for good)",
        description="Restore SNAPSHOT (a backup id from 'mgmtctl backups', held by this node, or a "
                    "snapshot file) on the node whose mgmtd runs on --prefix: it becomes a one-member "
                    "cluster with a new cluster id, the others rejoin as volunteers and the cluster "
                    "grows back to its ideal size. Refused while the cluster has quorum, unless --force. "
                    "With mgmtd stopped: 'mgmtd restore'.")
    restore.add_argument("snapshot", metavar="SNAPSHOT")
    restore.add_argument("--prefix", default=None,
                         help=f"the node's state directory (default: $STATE_DIRECTORY or {DEFAULT_PREFIX})")
    restore.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    restore.add_argument("--force", action="store_true", help="restore even though the cluster has quorum")
    restore.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default: %(default)s)")
    return parser


def list_exported(api: EtcdApi, endpoints: list[str], namespace: str, host: str | None,
                  kind: str | None) -> list[dict]:
    keys = Keys(namespace)
    with member_client(api, endpoints) as client:
        hosts = Store(client, keys).hosts()
        rows = []
        for value, meta in client.get_prefix(keys.exported):
            export = parse_export(meta.key.decode(), value, keys)
            if export is None or (host and export.host != host) or (kind and export.kind != kind):
                continue
            ident = f"{export.host}/{export.kind}/{export.name}"
            collectors = sorted(h for h, info in hosts.items()
                                if ident in (info.get("engine") or {}).get("collected", ()))
            rows.append({"host": export.host, "kind": export.kind, "name": export.name,
                         "subject": subject_of(export), "collected_by": collectors,
                         "exporter_up": export.host in hosts})
    return sorted(rows, key=lambda r: (r["host"], r["kind"], r["name"]))


def forget_host(api: EtcdApi, endpoints: list[str], namespace: str, host: str) -> str:
    check_hostname(host)  # 'h1/file' would otherwise select part of h1's exports
    keys = Keys(namespace)
    with member_client(api, endpoints) as client:
        if client.get(keys.host(host))[0] is not None:
            raise ValueError(f"{host} is running: stop it first (its engine would export again)")
        deleted = client.delete_prefix(keys.exports_of(host)).deleted
    return f"forgot {deleted} export(s) of {host}"


class NoGraph(LookupError):
    """The host publishes no graph (unknown, not running, or not yet)."""


def host_graph(api: EtcdApi, endpoints: list[str], namespace: str, host: str) -> GraphView:
    check_hostname(host)
    keys = Keys(namespace)
    with member_client(api, endpoints) as client:
        raw = client.get(keys.graph(host))[0]
        if raw is None:
            hosts = Store(client, keys).hosts()
    if raw is None:
        if host in hosts:
            raise NoGraph(f"{host} is running but has published no graph yet (its engine publishes "
                          "it once the graph is loaded)")
        known = ", ".join(sorted(hosts)) or "none"
        raise NoGraph(f"no running host {host!r} publishes a graph (running hosts: {known})")
    view = graphview.decode(raw)
    if view is None:
        raise NoGraph(f"the graph of {host} in etcd ({keys.graph(host)}) is not readable")
    return view


def graph_json(view: GraphView) -> dict:
    return {"graph": view.graph, "host": view.host,
            "resources": [{"kind": n.kind, "name": n.name, "state": n.state, "collected_from": list(n.hosts)}
                          for n in view.nodes],
            "edges": [{"from": key_str(e.source), "to": key_str(e.target), "kind": e.kind}
                      for e in view.edges]}


def summarize(view: ClusterView) -> dict:
    voters = [n for n in view.nodes if n.role in ("leader", "voter")]
    healthy = [n for n in voters if n.health == HEALTHY]
    engines: dict[str, int] = {}
    for node in view.nodes:
        engines[node.engine or "unknown"] = engines.get(node.engine or "unknown", 0) + 1
    return {
        "cluster_id": view.cluster_id, "ideal_size": view.ideal_size, "leader": view.leader,
        "voters": len(voters), "healthy_voters": len(healthy),
        "learners": sum(1 for n in view.nodes if n.role == "learner"),
        "clients": sum(1 for n in view.nodes if n.role == "client"),
        "quorum": has_majority(len(healthy), len(voters)),
        "unhealthy": [n.name for n in voters if n.health != HEALTHY],
        # who answered, so that a member cut off from the majority is not lumped in with
        # the dead: without quorum the one that still answers is where to look first
        "reachable": [n.name for n in voters if n.health in (HEALTHY, NO_LEADER)],
        "no_leader": [n.name for n in voters if n.health == NO_LEADER],
        "unreachable": [n.name for n in voters if n.health not in (HEALTHY, NO_LEADER)],
        "engines": engines,
        "readable": view.readable,
        "ideal_problem": view.ideal_problem,
        "leader_ideal_size": view.leader_ideal_size,
        "leader_ideal_problem": view.leader_ideal_problem,
        "waiting": view.leader_waiting,
    }


def render_status(summary: dict) -> str:
    ideal = summary["ideal_size"]
    if ideal is None:
        ideal = "invalid" if summary["ideal_problem"] else "unknown"
    lines = [
        f"cluster   {summary['cluster_id']}",
        f"leader    {summary['leader'] or '(none)'}",
        f"voters    {summary['healthy_voters']}/{summary['voters']} healthy, ideal size "
        f"{ideal}, {summary['learners']} learner(s), {summary['clients']} client(s)",
        "engines   " + ", ".join(f"{count} {state}" for state, count in sorted(summary["engines"].items())),
    ]
    if not summary["readable"]:
        lines.append("reads     etcd answers no reads (no quorum?): leader, ideal size and engines unknown")
    lines += _ideal_lines(summary)
    if summary["waiting"]:
        lines.append(f"planner   waiting: {summary['waiting']}")
    if summary["unhealthy"]:
        lines += _reachability_lines(summary)
    newest = summary.get("newest_backup")
    if newest:
        lines.append(f"backup    newest {newest['id']}: revision {newest['revision']}, {newest['when']}, "
                     f"on {newest['host']}")
    if summary["quorum"]:
        lines.append("quorum    ok")
    else:
        lines.append(f"quorum    LOST: {summary['healthy_voters']} of {summary['voters']} voters healthy; "
                     "the cluster accepts no writes and mgmtd changes no membership.")
        lines.append(f"recovery  {RECOVERY}")
        usable = summary.get("restorable_backup")
        if usable:
            lines.append(f"restore   on {usable['host']}: mgmtctl restore {usable['id']}")
            if newest and newest["id"] != usable["id"]:
                lines.append(f"          (the newest, {newest['id']}, is on {newest['host']}, "
                             "which does not answer)")
        elif newest:
            lines.append(f"restore   on {newest['host']}: mgmtctl restore {newest['id']} ({newest['host']} does "
                         "not answer: if its disk survived, copy ID.db and ID.json from its backup directory "
                         "to a surviving node and restore there)")
    return "\n".join(lines)


def _reachability_lines(summary: dict) -> list[str]:
    """Which voters answered (and whether they know a raft leader), which did not."""
    lines = []
    if summary["reachable"]:
        names = ", ".join(summary["reachable"])
        if summary["no_leader"] == summary["reachable"]:
            note = " (answer" + ("s" if len(summary["reachable"]) == 1 else "") + ", but no raft leader)"
        elif summary["no_leader"]:
            note = f" (without a raft leader: {', '.join(summary['no_leader'])})"
        else:
            note = ""
        lines.append(f"reachable {names}{note}")
    if summary["unreachable"]:
        lines.append(f"down      {', '.join(summary['unreachable'])} (no answer)")
    return lines


def _ideal_lines(summary: dict) -> list[str]:
    """What is wrong with the ideal-size key, and what the leader makes of it."""
    problem = summary["ideal_problem"] or summary["leader_ideal_problem"]
    if not problem:
        return []
    leader = summary["leader"] or "(none)"
    if not summary["leader_ideal_problem"]:
        effect = f"the leader ({leader}) has not reported it yet"
    elif summary["leader_ideal_size"] is None:
        effect = f"the leader ({leader}) knows no valid size and makes no membership change"
    else:
        effect = f"the leader ({leader}) keeps its last valid size, {summary['leader_ideal_size']}"
    return [f"ideal     PROBLEM: {problem}; {effect}. "
            "Fix: mgmtctl set ideal-cluster-size N"]


def set_ideal_size(api: EtcdApi, endpoints: list[str], namespace: str, size: int | str) -> str:
    parsed = parse_ideal_size(str(size))
    if parsed.size is None:
        raise ValueError(f"the ideal cluster size must be a whole number from {MIN_IDEAL_SIZE} "
                         f"to {MAX_IDEAL_SIZE}, not {size!r}")
    size = parsed.size
    with member_client(api, endpoints) as client:
        Store(client, Keys(namespace)).set_ideal_size(size)
    return f"ideal cluster size set to {size}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        endpoints = list(parse_url_list("--endpoints", args.endpoints))
        api = EtcdApi(tls.from_args(args.tls_ca, args.tls_cert, args.tls_key))
    except ValueError as err:
        print(f"mgmtctl: {err}", file=sys.stderr)
        return 2
    try:
        return run(args, api, endpoints)
    finally:
        api.close()


def run(args: argparse.Namespace, api: EtcdApi, endpoints: list[str]) -> int:
    """One mgmtctl command against the cluster; returns the exit status."""
    if args.command == "restore":
        prefix = os.path.abspath(args.prefix or os.environ.get("STATE_DIRECTORY", "").split(":")[0]
                                 or DEFAULT_PREFIX)
        return restore(prefix, args.snapshot, args.yes, args.force, args.timeout)
    try:
        if args.command == "backups":
            records, current = list_backups(api, endpoints, args.namespace)
            if args.output == "json":
                print(json.dumps([backup_row(r) for r in records], indent=2))
            else:
                print(render_backups(records, current))
            return 0
        if args.command == "backup":
            record = backup_now(api, endpoints, args.namespace, args.timeout)
            print(f"backup {record.id}: revision {record.revision}, {record.size} bytes, on {record.host}")
            return 0
        if args.command == "set":
            print(set_ideal_size(api, endpoints, args.namespace, args.size))
            return 0
        if args.command == "forget":
            print(forget_host(api, endpoints, args.namespace, args.host))
            return 0
        if args.command == "graph":
            shown = host_graph(api, endpoints, args.namespace, args.host)
            if args.output == "json":
                print(json.dumps(graph_json(shown), indent=2))
            else:
                print(graphview.to_dot(shown), end="")
            return 0
        if args.command == "exported":
            rows = list_exported(api, endpoints, args.namespace, args.host, args.kind)
            if args.output == "json":
                print(json.dumps(rows, indent=2))
            else:
                print(render_table(["HOST", "KIND", "NAME", "PATH/NAME", "COLLECTED BY"],
                                   [[r["host"] + ("" if r["exporter_up"] else " (down)"), r["kind"],
                                     r["name"], r["subject"], ",".join(r["collected_by"]) or "-"]
                                    for r in rows]))
            return 0
        view = gather(api, endpoints, args.namespace)
    except ValueError as err:
        print(f"mgmtctl: {err}", file=sys.stderr)
        return 2
    except (ClusterUnreachable, NoGraph) as err:
        print(f"mgmtctl: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a gRPC failure mid-way: one line, not a traceback
        if is_permission_denied(err):
            print(f"mgmtctl: etcd refused {args.command!r}: permission denied. With TLS, etcd's user is "
                  "the certificate's name: a node may read the cluster once it has joined, write only "
                  "its own keys, and only a server's certificate may change the cluster "
                  "(see docs/security.md)", file=sys.stderr)
            return 1
        detail = first_line(err)
        print(f"mgmtctl: cannot read the cluster at {args.endpoints}: {detail}", file=sys.stderr)
        return 1
    if args.command == "members":
        if args.output == "json":
            print(json.dumps(view.as_dict(), indent=2))
        else:
            print(render_members(view))
        return 0
    summary = summarize(view)
    summary["newest_backup"], summary["restorable_backup"] = newest_backups(api, endpoints, args.namespace,
                                                                            summary["reachable"])
    print(json.dumps(summary, indent=2) if args.output == "json" else render_status(summary))
    return 0 if summary["quorum"] else 2


def entry() -> int:
    try:
        return main()
    except BrokenPipeError:  # `mgmtctl ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(entry())
