"""Issue 18's figures: what a backup costs (time and size of a snapshot of a
cluster holding 10000 keys) and how long a restore takes to bring a 3-voter
cluster back to its ideal size, through the real CLI:

    PYTHONPATH=. .venv/bin/python bench/backup.py [--keys 10000] [--samples 5]

The snapshot time is the supervisor's own measure (its log line ``backup
ID: revision R, N bytes, T s``: stream, write, fsync, etcd's hash check,
sidecar), plus the round trip of ``mgmtctl backup now`` as an operator sees
it. The restore time runs from ``mgmtctl restore ID --yes`` on the survivor
of two SIGKILLed voters (their member data deleted, mgmtd started again on
them right after the restore) to three healthy voters, as mgmtctl sees it."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time

from bench.common import Workspace
from mgmtd.cluster.client import connect
from tests.harness import FAST, endpoints, kill_node, mgmtctl, settled, start_cluster, wait_view

FLAGS = (*FAST, "--learner-deadline", "30", "--backup-interval", "0")


def fill(urls: list[str], count: int) -> float:
    client = connect(urls, timeout=10.0, tls=None)
    started = time.monotonic()
    try:
        for start in range(0, count, 100):
            # 100 puts per transaction: the bench measures backups, not 10000 round trips
            ops = [client.transactions.put(f"/bench/key{i:05d}", f"value {i} " * 8)
                   for i in range(start, min(count, start + 100))]
            client.transaction(compare=[], success=ops, failure=[])
    finally:
        client.close()
    return time.monotonic() - started


def backup(urls: str, log_of) -> dict:
    began = time.monotonic()
    out = mgmtctl("--endpoints", urls, "backup", "now", timeout=120)
    round_trip = time.monotonic() - began
    assert out.returncode == 0, out.stdout + out.stderr
    backup_id = out.stdout.split()[1].rstrip(":")
    line = re.search(rf"backup {re.escape(backup_id)}: revision (\d+), (\d+) bytes, ([0-9.]+)s", log_of())
    assert line, f"no log line for {backup_id}"
    return {"id": backup_id, "revision": int(line.group(1)), "bytes": int(line.group(2)),
            "snapshot_s": float(line.group(3)), "mgmtctl_round_trip_s": round(round_trip, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10000)
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    with Workspace("backup") as ws:
        nodes = [ws.node(f"b{i}") for i in range(1, 4)]
        start_cluster(nodes, *FLAGS, ideal=3)
        wait_view(nodes, lambda v: settled(v, 3), 120, "3 voters")
        urls = endpoints(nodes)
        fill_s = fill([n.client_url for n in nodes], args.keys)
        logs = lambda: "".join(ws.log(n.name) + n.log() for n in nodes)  # noqa: E731
        samples = [backup(urls, logs) for _ in range(args.samples)]
        newest = samples[-1]
        holder = next(n for n in nodes if newest["id"].endswith(f"-{n.name}"))
        lost = [n for n in nodes if n is not holder]
        for node in lost:
            kill_node(node)
            shutil.rmtree(node.prefix / "etcd")
        began = time.monotonic()
        out = mgmtctl("restore", newest["id"], "--yes", "--prefix", str(holder.prefix), timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        restored_s = time.monotonic() - began
        for node in lost:
            node.start(["empty"], "--seeds", holder.client_url, *FLAGS)
        wait_view(nodes, lambda v: settled(v, 3), 300, "3 voters again")
        ideal_s = time.monotonic() - began
    result = {
        "keys": args.keys, "fill_s": round(fill_s, 2),
        "snapshot_bytes": newest["bytes"],
        "snapshot_s_median": statistics.median(s["snapshot_s"] for s in samples),
        "snapshot_s_max": max(s["snapshot_s"] for s in samples),
        "backup_now_round_trip_s_median": statistics.median(s["mgmtctl_round_trip_s"] for s in samples),
        "restore_command_s": round(restored_s, 2),
        "restore_to_ideal_size_s": round(ideal_s, 2),
        "samples": samples,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
