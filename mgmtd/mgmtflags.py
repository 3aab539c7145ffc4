"""mgmt's `run` flags that mgmtd does not have. A command line written for
mgmt that uses one is refused with the reason, never accepted and ignored
(docs/yaml.md, "Compatibility with mgmt"; tests/unit/test_mgmt_compat.py
keeps this list and mgmt's in step)."""

from __future__ import annotations

import argparse

_SSH = "mgmtd reaches etcd directly (--seeds), not over SSH; --tls-* secures it (mgmtd certs)"
_PGP = "mgmtd has no PGP keys: its nodes authenticate with TLS certificates (mgmtd certs, --tls-*)"

REFUSED_RUN_FLAGS: dict[str, str] = {
    "--ssh-url": _SSH,
    "--ssh-hostkey": _SSH,
    "--ssh-id": _SSH,
    "--no-pgp": _PGP,
    "--pgp-key-path": _PGP,
    "--pgp-identity": _PGP,
    "--no-network": ("mgmtd always runs its etcd member on TCP; it listens on loopback by default "
                     "(--client-urls, --server-urls), and --no-server makes a node a client only"),
    "--pprof": "a Go profiler server; mgmtd is Python (--log-level debug for details)",
    "--no-stream-watch": ("mgmtd has no stream switching; --no-watch stops the graph from "
                          "changing by itself"),
    "--no-deploy-watch": "mgmtd has no deploys (mgmt deploy); the graph is a file, see --no-watch",
}


class RefusedFlag(argparse.Action):
    """Stops at once with the flag's reason (usage error, exit 2)."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        parser.error(f"{option_string}: mgmt's flag is not supported by mgmtd: "
                     f"{REFUSED_RUN_FLAGS[option_string]}")


def add_refused_flags(parser: argparse.ArgumentParser) -> None:
    """Hidden from --help (docs/yaml.md lists them); a value after the flag,
    if any, is taken with it so the error is about the flag."""
    for flag in REFUSED_RUN_FLAGS:
        parser.add_argument(flag, action=RefusedFlag, nargs="?", help=argparse.SUPPRESS)
