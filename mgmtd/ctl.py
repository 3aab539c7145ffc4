"""``mgmtctl``: look at and steer a running mgmtd cluster."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mgmtd import __version__
from mgmtd.cluster.keys import DEFAULT_NAMESPACE
from mgmtd.cluster.view import ClusterUnreachable, gather, render_members

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgmtctl", description="Look at and steer a running mgmtd cluster.")
    parser.add_argument("--version", action="version", version=f"mgmtctl {__version__}")
    parser.add_argument("--endpoints", default=os.environ.get("MGMTCTL_ENDPOINTS", DEFAULT_ENDPOINTS),
                        help="comma-separated etcd client URLs of any member "
                             "(default: $MGMTCTL_ENDPOINTS or %(default)s)")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                        help="mgmtd's etcd key prefix (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    members = commands.add_parser("members", help="the member table: roles, URLs, health, engine",
                                  description="Print every member and client of the cluster.")
    members.add_argument("-o", "--output", choices=("table", "json"), default="table",
                         help="output format (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    try:
        view = gather(endpoints, args.namespace)
    except ClusterUnreachable as err:
        print(f"mgmtctl: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a gRPC failure mid-way: one line, not a traceback
        print(f"mgmtctl: cannot read the cluster at {args.endpoints}: {err}", file=sys.stderr)
        return 1
    if args.command == "members":
        if args.output == "json":
            print(json.dumps(view.as_dict(), indent=2))
        else:
            print(render_members(view))
    return 0


def entry() -> int:
    try:
        return main()
    except BrokenPipeError:  # `mgmtctl ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(entry())
