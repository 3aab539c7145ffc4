"""``mgmtctl``: look at and steer a running mgmtd cluster."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mgmtd import __version__
from mgmtd.cluster.actions import RECOVERY
from mgmtd.cluster.client import connect
from mgmtd.cluster.keys import DEFAULT_NAMESPACE, Keys
from mgmtd.cluster.planner import has_majority
from mgmtd.cluster.view import ClusterUnreachable, ClusterView, first_member_list, gather, render_members

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgmtctl", description="Look at and steer a running mgmtd cluster.")
    parser.add_argument("--version", action="version", version=f"mgmtctl {__version__}")
    parser.add_argument("--endpoints", default=os.environ.get("MGMTCTL_ENDPOINTS", DEFAULT_ENDPOINTS),
                        help="comma-separated etcd client URLs of any members "
                             "(default: $MGMTCTL_ENDPOINTS or %(default)s)")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                        help="mgmtd's etcd key prefix (default: %(default)s)")
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
                                description="Set how many etcd voters the cluster aims for; the "
                                            "leader grows or shrinks one member at a time.")
    ideal.add_argument("size", type=int, metavar="N")
    return parser


def summarize(view: ClusterView) -> dict:
    voters = [n for n in view.nodes if n.role in ("leader", "voter")]
    healthy = [n for n in voters if n.health == "healthy"]
    engines: dict[str, int] = {}
    for node in view.nodes:
        engines[node.engine or "unknown"] = engines.get(node.engine or "unknown", 0) + 1
    return {
        "cluster_id": view.cluster_id, "ideal_size": view.ideal_size, "leader": view.leader,
        "voters": len(voters), "healthy_voters": len(healthy),
        "learners": sum(1 for n in view.nodes if n.role == "learner"),
        "clients": sum(1 for n in view.nodes if n.role == "client"),
        "quorum": has_majority(len(healthy), len(voters)),
        "unhealthy": [n.name for n in voters if n.health != "healthy"],
        "engines": engines,
    }


def render_status(summary: dict) -> str:
    lines = [
        f"cluster   {summary['cluster_id']}",
        f"leader    {summary['leader'] or '(none)'}",
        f"voters    {summary['healthy_voters']}/{summary['voters']} healthy, ideal size "
        f"{summary['ideal_size']}, {summary['learners']} learner(s), {summary['clients']} client(s)",
        "engines   " + ", ".join(f"{count} {state}" for state, count in sorted(summary["engines"].items())),
    ]
    if summary["unhealthy"]:
        lines.append(f"unhealthy {', '.join(summary['unhealthy'])}")
    if summary["quorum"]:
        lines.append("quorum    ok")
    else:
        lines.append(f"quorum    LOST: {summary['healthy_voters']} of {summary['voters']} voters healthy; "
                     "the cluster accepts no writes and mgmtd changes no membership.")
        lines.append(f"recovery  {RECOVERY}")
    return "\n".join(lines)


def set_ideal_size(endpoints: list[str], namespace: str, size: int) -> str:
    if size < 1:
        raise ValueError("the ideal cluster size must be at least 1")
    _, _, endpoint = first_member_list(endpoints)
    client = connect([endpoint], timeout=5.0)
    try:
        client.put(Keys(namespace).ideal_size, str(size))
    finally:
        client.close()
    return f"ideal cluster size set to {size}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    try:
        if args.command == "set":
            print(set_ideal_size(endpoints, args.namespace, args.size))
            return 0
        view = gather(endpoints, args.namespace)
    except ValueError as err:
        print(f"mgmtctl: {err}", file=sys.stderr)
        return 2
    except ClusterUnreachable as err:
        print(f"mgmtctl: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a gRPC failure mid-way: one line, not a traceback
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"mgmtctl: cannot read the cluster at {args.endpoints}: {detail}", file=sys.stderr)
        return 1
    if args.command == "members":
        if args.output == "json":
            print(json.dumps(view.as_dict(), indent=2))
        else:
            print(render_members(view))
        return 0
    summary = summarize(view)
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
