"""Churn: five nodes, ideal size three, rounds of stopping and starting random
nodes. After each round the cluster is back at three healthy voters within a
bound, the stock etcdctl agrees with mgmtctl, and every write acknowledged
during the churn is there at the end."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

from tests.harness import (
    etcdctl,
    healthy_at,
    kill_tree,
    members_view,
    start_cluster,
    voter_names,
    wait_for,
)

ROUNDS = int(os.environ.get("MGMTD_CHURN_ROUNDS", "30"))
BOUND = 60          # seconds for a round to settle back at the ideal size
FLAGS = ("--grace-period", "2", "--learner-deadline", "8")


def settled(urls: list[str]) -> set[str] | None:
    """Three healthy voters and no learner, and etcdctl lists the same voters."""
    view = members_view(urls)
    if not healthy_at(view, 3):
        return None
    listed = etcdctl(",".join(urls), "member", "list", "-w", "json")
    if listed.returncode != 0:
        return None
    etcd_names = sorted(m["name"] for m in json.loads(listed.stdout)["members"] if not m.get("isLearner"))
    names = voter_names(view)
    return names if etcd_names == sorted(names) else None


def test_rounds_of_random_stops_and_starts(make_node, workdir):
    rng = random.Random(20261125)
    first, *_ = nodes = start_cluster([make_node(f"c{i}") for i in range(1, 6)], *FLAGS)
    urls = [n.client_url for n in nodes]
    wait_for(lambda: settled(urls), 90, "3 voters at the start")

    acked: list[str] = []
    stop_writing = threading.Event()

    def writer():
        i = 0
        while not stop_writing.is_set():
            i += 1
            key = f"/churn/{i:06d}"
            if etcdctl(",".join(urls), "put", key, str(i), timeout=10).returncode == 0:
                acked.append(key)
            time.sleep(0.05)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    timings = []
    try:
        for round_ in range(ROUNDS):
            node = rng.choice(nodes)
            how = rng.choice(["term", "kill"])
            long_down = round_ % 5 == 4  # every fifth round: down past the grace period
            started = time.monotonic()
            if how == "kill":
                kill_tree(node.proc.pid)  # its etcd too: it runs in a session of its own
            else:
                node.proc.send_signal(signal.SIGTERM)
            node.proc.wait(timeout=60)
            if long_down:
                wait_for(lambda: settled(urls), BOUND, f"round {round_}: repair without {node.name}")
            args = ("--ideal-cluster-size", "3") if node is first and not node.prefix.exists() else ()
            node.start(["empty"], "--seeds", ",".join(u for u in urls if u != node.client_url),
                       *args, *FLAGS)
            wait_for(lambda: settled(urls), BOUND, f"round {round_}: back at 3 voters after {how} "
                     f"of {node.name}")
            timings.append(time.monotonic() - started)
    finally:
        stop_writing.set()
        thread.join(timeout=30)
    got = etcdctl(",".join(urls), "get", "--prefix", "/churn/", "--keys-only")
    found = {line for line in got.stdout.splitlines() if line}
    missing = [k for k in acked if k not in found]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged writes lost"
    assert len(acked) > ROUNDS
    print(f"churn: {ROUNDS} rounds, {len(acked)} writes acknowledged and found, "
          f"round time max {max(timings):.1f}s mean {sum(timings) / len(timings):.1f}s")
