"""Scale: 3 real voters (``mgmtd run ... empty``) and N simulated hosts in this
process, grown to each N in turn: what the leader's round costs, what load
mgmtd's own keys put on etcd, per host, and how long one export takes to reach
every collector. See bench/README.md ("Scale") and docs/clustering.md ("Scale").

A simulated host runs the code a real client node runs against etcd, not a
copy of it: ``observe`` and ``assess`` every TICK, ``Presence.announce`` (its
lease refreshed every round, its host record and volunteer offer written when
they change), the lease keeper's refresh every LEASE_TTL/5 on another
connection, and the engine's ``Collector`` watch feeding the real ``select``.
It runs no engine and no etcd. The hosts share a few gRPC connections (see
CHANNELS): one per host would make this process, not etcd, the thing measured.

    .venv/bin/python bench/scale.py --hosts 50,200,500"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Deadline, ForeignCpu, Workspace, median, percentile  # noqa: E402
from bench.simhosts import SimFleet  # noqa: E402
from mgmtd.cluster.client import connect  # noqa: E402
from mgmtd.cluster.keys import Keys  # noqa: E402
from mgmtd.cluster.store import Store  # noqa: E402
from tests.harness import healthy_at, members_view, start_cluster, wait_for  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
WINDOW = 20.0          # seconds of steady state measured per N
PROBES = 10            # export changes timed per N
DEBUG_KEYS = False      # name every key written in key_events (not just its kind)
WRITE_CHANGES = 3      # export changes whose writes are counted per N

ROUND_LINE = re.compile(r"round: ([\d.]+) ms \(observe ([\d.]+) ms\), leader yes, (\d+) volunteers")
METRIC_LINE = re.compile(r'^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$')


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- etcd's own counters ------------------------------------------------------------------
def scrape(url: str) -> dict[str, float]:
    """etcd's /metrics (on its client URL) as {name{labels}: value}."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line)
        if match and not line.startswith("#"):
            out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return out


def method_of(labels: str) -> str:
    found = re.search(r'grpc_method="([^"]+)"', labels)
    return found.group(1) if found else "?"


def summarise(samples: list[dict[str, float]]) -> dict:
    """One reading of the cluster: requests per gRPC method summed over the
    voters (each counts what it received; a stream counts each message);
    what raft applied (the same on every member: the largest); etcd's CPU."""
    requests: dict[str, float] = {}
    for sample in samples:
        for key, value in sample.items():
            if key.startswith("grpc_server_msg_received_total{"):
                method = method_of(key)
                requests[method] = requests.get(method, 0) + value
    def largest(name):
        return max(s.get(name, 0.0) for s in samples)

    def total(name):
        return sum(s.get(name, 0.0) for s in samples)

    return {
        "requests": requests,
        "proposals_committed": largest("etcd_server_proposals_committed_total"),
        "mvcc_put": largest("etcd_mvcc_put_total"), "mvcc_delete": largest("etcd_mvcc_delete_total"),
        "mvcc_txn": largest("etcd_mvcc_txn_total"), "mvcc_range": total("etcd_mvcc_range_total"),
        "lease_renewed": total("etcd_debugging_lease_renewed_total"),
        "lease_granted": largest("etcd_debugging_lease_granted_total"),
        "wal_fsyncs": largest("etcd_disk_wal_fsync_duration_seconds_count"),
        "etcd_cpu": total("process_cpu_seconds_total"),
        "keys": largest("etcd_debugging_mvcc_keys_total"),
        "watchers": total("etcd_debugging_mvcc_watcher_total"),
        "db_bytes": largest("etcd_mvcc_db_total_size_in_bytes"),
        "db_in_use": largest("etcd_mvcc_db_total_size_in_use_in_bytes"),
        "sent_bytes": total("etcd_network_client_grpc_sent_bytes_total"),
        "received_bytes": total("etcd_network_client_grpc_received_bytes_total"),
    }


def read_cluster(urls: list[str]) -> dict:
    return summarise([scrape(u) for u in urls])


def rates(before: dict, after: dict, seconds: float) -> dict:
    """Per-second rates between two readings (gauges: the later value)."""
    out = {k: (after[k] - before[k]) / seconds
           for k in ("proposals_committed", "mvcc_put", "mvcc_delete", "mvcc_txn", "mvcc_range",
                     "lease_renewed", "lease_granted", "wal_fsyncs", "etcd_cpu", "sent_bytes",
                     "received_bytes")}
    out["requests"] = {m: (after["requests"].get(m, 0) - before["requests"].get(m, 0)) / seconds
                       for m in after["requests"]
                       if after["requests"].get(m, 0) != before["requests"].get(m, 0)}
    out.update(keys=after["keys"], watchers=after["watchers"], db_bytes=after["db_bytes"])
    return out


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def quiet(urls: list[str], seconds: float = 3.0) -> bool:
    """Nothing written through raft for ``seconds`` (a short check, inside a wait_for)."""
    before = read_cluster(urls)["proposals_committed"]
    time.sleep(seconds)
    return read_cluster(urls)["proposals_committed"] == before


# --- one size -------------------------------------------------------------------------------
def leader_rounds(log: str, since: int) -> list[tuple[float, float, int]]:
    """(round ms, observe ms, volunteers) of every round the leader logged after ``since``."""
    return [(float(a), float(b), int(c)) for a, b, c in ROUND_LINE.findall(log[since:])]


class WriteTally:
    """Counts the key events of a window by kind of key ({ns}/hosts/, volunteers,
    exported...): which of mgmtd's keys the writes are."""

    def __init__(self, client, keys: Keys) -> None:
        self.client = client
        self.namespace = keys.namespace + "/"
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.watch_id = client.add_watch_prefix_callback("/", self._event)

    def _event(self, response) -> None:
        if isinstance(response, Exception):
            return
        with self.lock:
            for event in response.events:
                key = event.key.decode(errors="replace")
                kind = key.removeprefix(self.namespace).split("/", 1)[0] if key.startswith(self.namespace) else key
                label = f"{type(event).__name__.removesuffix('Event').lower()} {kind}"
                if DEBUG_KEYS:
                    label += " " + key
                self.counts[label] = self.counts.get(label, 0) + 1

    def stop(self) -> dict[str, int]:
        self.client.cancel_watch(self.watch_id)
        with self.lock:
            return dict(sorted(self.counts.items()))


def steady_window(fleet: SimFleet, urls: list[str], leader, seconds: float, baseline: dict) -> dict:
    log_from = len(leader.log())
    tally = WriteTally(fleet.tally_client, Keys())
    rounds0, cpu0, foreign = fleet.rounds_done(), cpu_seconds(), ForeignCpu()
    before, t0 = read_cluster(urls), time.monotonic()
    time.sleep(seconds)  # a measurement window, not a wait for something to happen
    after, t1 = read_cluster(urls), time.monotonic()
    wall = t1 - t0
    written = tally.stop()
    measured = rates(before, after, wall)
    rounds = (fleet.rounds_done() - rounds0) / wall
    lead = leader_rounds(leader.log(), log_from)
    round_ms = [r[0] for r in lead]
    observe_ms = [r[1] for r in lead]
    hosts = max(1, len(fleet.hosts))
    added = {k: measured[k] - baseline.get(k, 0.0) for k in measured if isinstance(measured[k], float)}
    added_requests = {m: r - baseline["requests"].get(m, 0.0) for m, r in measured["requests"].items()}
    return {
        "window_seconds": wall, "rates": measured, "key_events": written,
        "added_by_hosts": {**added, "requests": added_requests},
        "per_host": {**{k: v / hosts for k, v in added.items()},
                     "requests": {m: r / hosts for m, r in added_requests.items()}},
        "rounds_per_host_second": rounds / hosts,
        "requests_per_round": {m: r / rounds for m, r in added_requests.items()} if rounds else {},
        "sim_cpu_share": (cpu_seconds() - cpu0) / wall,
        "foreign_cpu": foreign.share(),   # other processes (mgmtd and etcd included: children of no one here)
        "leader_round_ms": {"p50": percentile(round_ms, 50), "p95": percentile(round_ms, 95),
                            "max": max(round_ms, default=None), "count": len(round_ms)},
        "leader_observe_ms": {"p50": percentile(observe_ms, 50), "p95": percentile(observe_ms, 95)},
        "leader_volunteers_seen": lead[-1][2] if lead else None,
        "lease_lapses": fleet.lapses(),
    }


def real_pace(steady: dict, hosts: int) -> dict:
    """Per host, at the real pace (a round every TICK, a keeper refresh every
    LEASE_TTL/5) whatever pace this process managed: requests per round from
    the window, the keeper's share known; etcd's CPU per request from the window."""
    settings = SimFleet.settings()
    achieved = steady["rounds_per_host_second"] * hosts
    added = steady["added_by_hosts"]["requests"]
    keeper = hosts / settings["keeper_period"]
    if not achieved:
        return {}
    per_round = {m: r / achieved for m, r in added.items() if m not in ("LeaseKeepAlive", "Status", "Watch")}
    per_round["LeaseKeepAlive"] = (added.get("LeaseKeepAlive", 0.0) - keeper) / achieved
    per_host = {m: max(0.0, r) / settings["tick_seconds"] for m, r in per_round.items()}
    per_host["LeaseKeepAlive"] += 1 / settings["keeper_period"]
    total_added = sum(max(0.0, r) for r in added.values())
    cpu_per_request = steady["added_by_hosts"]["etcd_cpu"] / total_added if total_added else 0.0
    return {"requests_per_round": per_round, "requests_per_host_second": per_host,
            "requests_per_host_second_total": sum(per_host.values()),
            "etcd_cpu_ms_per_request": cpu_per_request * 1000,
            "etcd_cores_per_host": cpu_per_request * sum(per_host.values())}


def export_probes(fleet: SimFleet, client, probes: int, deadline: Deadline) -> dict:
    """``probes`` changes of one export; for each, the time until every
    collector's selection holds it (p50 and max over the collectors)."""
    fleet.pause_rounds()
    try:
        per_probe = []
        for k in range(probes):
            deadline.check("export probes")
            content = f"probe {k} {uuid.uuid4().hex[:8]}\n"
            t0 = time.monotonic()
            fleet.put_probe(client, content)
            wait_for(lambda c=content: fleet.all_saw(c), deadline.within(60), f"probe {k} at every collector",
                     interval=0.01)
            arrivals = sorted(t - t0 for t in fleet.arrivals(content))
            per_probe.append({"p50": percentile(arrivals, 50), "max": arrivals[-1]})
            time.sleep(0.2)  # let the collectors go idle between probes
    finally:
        fleet.resume_rounds()
    return {"probes": per_probe, "p50_of_p50": median([p["p50"] for p in per_probe]),
            "median_of_max": median([p["max"] for p in per_probe]),
            "max_of_max": max(p["max"] for p in per_probe)}


def export_writes(fleet: SimFleet, client, urls: list[str], changes: int, deadline: Deadline) -> dict:
    """What one export change costs etcd in writes, rounds running, from quiet
    to quiet: for an export every host collects (the export, then each host's
    record as its engine goes converging and back to converged), and for one
    that no host collects (the export alone)."""
    out = {}
    for label, collected in (("collected_by_all", True), ("collected_by_none", False)):
        wait_for(fleet.all_converged, deadline.within(60), "every simulated engine converged", interval=0.2)
        wait_for(lambda: quiet(urls), deadline.within(90), "no raft writes for 3 s", interval=0.5)
        before, t0 = read_cluster(urls), time.monotonic()
        for k in range(changes):
            content = f"{label} {k} {uuid.uuid4().hex[:8]}\n"
            fleet.put_probe(client, content, collected)
            wait_for(lambda c=content: fleet.all_saw(c), deadline.within(60), f"change {k} at every collector",
                     interval=0.05)
            wait_for(fleet.all_converged, deadline.within(60), "every simulated engine converged", interval=0.2)
        wait_for(lambda: quiet(urls), deadline.within(90), "no raft writes for 3 s", interval=0.5)
        after = read_cluster(urls)
        proposals = (after["proposals_committed"] - before["proposals_committed"]) / changes
        out[label] = {"changes": changes, "seconds": time.monotonic() - t0,
                      "proposals_per_change": proposals,
                      "proposals_per_change_per_host": proposals / max(1, len(fleet.hosts)),
                      "puts_per_change": (after["mvcc_put"] - before["mvcc_put"]) / changes,
                      "bytes_received_per_change": (after["received_bytes"] - before["received_bytes"]) / changes,
                      # nothing compacts etcd's history: every revision stays in the backend
                      "db_in_use_growth_per_change": (after["db_in_use"] - before["db_in_use"]) / changes}
    return out


def run(sizes: list[int], volunteers: float, exports_per_host: int, window: float, probes: int,
        deadline: Deadline) -> dict:
    keys = Keys()
    with Workspace("scale") as ws:
        nodes = start_cluster([ws.node(f"v{i + 1}") for i in range(3)], "--log-level", "debug", ideal=3)
        urls = [n.client_url for n in nodes]
        wait_for(lambda: healthy_at(members_view(nodes, timeout=20), 3), deadline.within(120), "3 healthy voters")
        client = connect(urls, timeout=10, tls=None)
        store = Store(client, keys)
        leader = wait_for(lambda: store.leader(), deadline.within(30), "an mgmtd leader")
        leader_node = next(n for n in nodes if n.name == leader)
        say(f"[scale] 3 voters up, leader {leader}; waiting for quiet, then the baseline window")
        wait_for(lambda: quiet(urls), deadline.within(60), "no raft writes for 3 s (formation over)", interval=0.5)
        base_window = steady_window(SimFleet.empty(client), urls, leader_node, window, {"requests": {}})
        baseline = {**{k: v for k, v in base_window["rates"].items() if isinstance(v, float)},
                    "requests": base_window["rates"]["requests"]}
        results = {"baseline": base_window, "sizes": {}}
        fleet = SimFleet(urls, keys, volunteers, exports_per_host)
        try:
            for size in sizes:
                deadline.check(f"growing to {size}")
                t0 = time.monotonic()
                fleet.grow(size, deadline)
                wait_for(lambda size=size: len(store.hosts()) >= size + 3, deadline.within(60 + size * 0.5),
                         f"{size} simulated hosts registered", interval=0.5)
                wait_for(lambda: fleet.collectors_ready(), deadline.within(60 + size * 0.5),
                         "every collector's first snapshot", interval=0.2)
                grown = time.monotonic() - t0
                say(f"[scale] {size} hosts registered in {grown:.1f}s; steady window {window:.0f}s")
                steady = steady_window(fleet, urls, leader_node, window, baseline)
                steady["real_pace"] = real_pace(steady, size)
                say(f"[scale] {size}: leader round p50 {steady['leader_round_ms']['p50']} ms, "
                    f"{steady['rounds_per_host_second']:.2f} rounds/host/s, "
                    f"sim CPU {steady['sim_cpu_share']:.0%}; export probes")
                fanout = export_probes(fleet, client, probes, deadline)
                say(f"[scale] {size}: export -> all collectors median max "
                    f"{fanout['median_of_max'] * 1000:.0f} ms; writes per export change")
                writes = export_writes(fleet, client, urls, WRITE_CHANGES, deadline)
                say(f"[scale] {size}: raft writes per export change: "
                    f"{writes['collected_by_all']['proposals_per_change']:.0f} collected by all, "
                    f"{writes['collected_by_none']['proposals_per_change']:.0f} collected by none")
                results["sizes"][str(size)] = {"hosts": size, "grow_seconds": grown, **steady, "export": fanout,
                                              "export_writes": writes,
                                              "leader_still": store.leader() == leader}
        finally:
            fleet.stop()
            client.close()
    return results


# --- the fit ----------------------------------------------------------------------------------
def linear_fit(points: list[tuple[float, float]]) -> dict | None:
    """Least squares y = a + b*N, its residuals (relative to y) and the
    projections to 1000 and 5000 hosts."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    icpt = my - slope * mx
    residuals = [y - (icpt + slope * x) for x, y in points]
    return {"intercept": icpt, "slope": slope,
            "residuals": residuals,
            "max_relative_residual": max(abs(r) / abs(y) if y else 0.0
                                         for r, (_, y) in zip(residuals, points, strict=True)),
            "at_1000": icpt + slope * 1000, "at_5000": icpt + slope * 5000}


FITTED = {
    "leader round p50 (ms)": lambda s: s["leader_round_ms"]["p50"],
    "writes committed by raft (/s)": lambda s: s["added_by_hosts"]["proposals_committed"],
    "lease renewals (/s)": lambda s: s["added_by_hosts"]["lease_renewed"],
    "ranges (/s)": lambda s: s["added_by_hosts"]["requests"].get("Range", 0.0),
    "etcd CPU (cores), as measured": lambda s: s["added_by_hosts"]["etcd_cpu"],
    "requests/s at the real pace": lambda s: s["real_pace"]["requests_per_host_second_total"] * s["hosts"],
    "etcd cores at the real pace": lambda s: s["real_pace"]["etcd_cores_per_host"] * s["hosts"],
    "export -> all collectors, max (ms)": lambda s: s["export"]["median_of_max"] * 1000,
    "raft writes per export change collected by all": lambda s: s["export_writes"]["collected_by_all"][
        "proposals_per_change"],
    "raft writes per export change collected by none": lambda s: s["export_writes"]["collected_by_none"][
        "proposals_per_change"],
}


def fits(results: dict) -> dict:
    out = {}
    for name, get in FITTED.items():
        points = []
        for size in results["sizes"].values():
            value = get(size)
            if value is not None:
                points.append((size["hosts"], value))
        out[name] = linear_fit(points)
    return out


def table(results: dict) -> str:
    head = (f"{'N':>5} {'round p50':>10} {'p95':>7} {'rounds/h/s':>10} {'writes/s':>9} {'w/host/s':>9} "
            f"{'ranges/s':>9} {'renew/s':>8} {'etcd cpu':>8} {'exp p50':>8} {'exp max':>8} {'sim cpu':>8}")
    lines = [head]
    for size in results["sizes"].values():
        added = size["added_by_hosts"]
        lead = size["leader_round_ms"]
        lines.append(
            f"{size['hosts']:>5} {lead['p50'] or 0:>8.1f}ms {lead['p95'] or 0:>5.1f}ms "
            f"{size['rounds_per_host_second']:>10.2f} {added['proposals_committed']:>9.1f} "
            f"{size['per_host']['proposals_committed']:>9.3f} {added['requests'].get('Range', 0):>9.0f} "
            f"{added['lease_renewed']:>8.0f} {added['etcd_cpu']:>8.2f} "
            f"{size['export']['p50_of_p50'] * 1000:>6.0f}ms {size['export']['median_of_max'] * 1000:>6.0f}ms "
            f"{size['sim_cpu_share']:>8.0%}")
    return "\n".join(lines)


def scale(sizes: list[int], deadline: Deadline, volunteers: float = 1.0, exports_per_host: int = 1,
          window: float = WINDOW, probes: int = PROBES) -> dict:
    """The scenario, as bench/run.py calls it."""
    results = run(sizes, volunteers, exports_per_host, window, probes, deadline)
    results["fits"] = fits(results)
    results["settings"] = {"sizes": sizes, "volunteers": volunteers, "exports_per_host": exports_per_host,
                           "window_seconds": window, "probes": probes, **SimFleet.settings()}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="50,200,500", help="simulated host counts, grown in turn")
    parser.add_argument("--volunteers", type=float, default=1.0,
                        help="share of the simulated hosts that volunteer to serve (default 1: mgmtd's "
                             "default; a --no-server node does not)")
    parser.add_argument("--exports-per-host", type=int, default=1)
    parser.add_argument("--window", type=float, default=WINDOW, help="seconds of steady state measured per N")
    parser.add_argument("--probes", type=int, default=PROBES)
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args()
    sizes = sorted(int(n) for n in args.hosts.split(","))
    limit = 240 + sum(sizes) * 0.6 + len(sizes) * (args.window * 2 + args.probes * 5)
    with Deadline(limit, "scale") as deadline:
        results = scale(sizes, deadline, args.volunteers, args.exports_per_host, args.window, args.probes)
    results["when"] = time.strftime("%Y-%m-%d %H:%M")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(table(results))
    for name, fit in results["fits"].items():
        if fit:
            print(f"fit {name}: {fit['intercept']:.3g} + {fit['slope']:.3g}*N "
                  f"(max residual {fit['max_relative_residual']:.0%}); 1000: {fit['at_1000']:.3g}, "
                  f"5000: {fit['at_5000']:.3g}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
