"""Figures 1 and 2: cluster formation (mgmtd against a static etcd bootstrap and
the hand-driven learner floor) and repair after a voter dies."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

from bench.common import Deadline, Workspace
from tests.harness import (
    etcd_command,
    etcdctl,
    free_port,
    healthy_at,
    kill_node,
    local_url,
    members_view,
    start_cluster,
    voter_names,
    voter_rows,
    wait_for,
)

POLL = 0.05  # the "small sleep" between retries of one step


class MemberTimeline:
    """Polls etcd's member list (JSON gateway) every 50 ms in a thread and
    records when each member was added, started (has a name) and promoted:
    where the formation time goes. Not part of the figure."""

    def __init__(self, endpoints: list[str], t0: float) -> None:
        self.endpoints = endpoints
        self.t0 = t0
        self.events: dict[str, float] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _members(self) -> list[dict] | None:
        for endpoint in self.endpoints:
            request = urllib.request.Request(f"{endpoint}/v3/cluster/member/list", data=b"{}",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=0.5) as response:
                    return json.loads(response.read()).get("members", [])
            except (OSError, ValueError):
                continue
        return None

    def _note(self, what: str) -> None:
        self.events.setdefault(what, round(time.monotonic() - self.t0, 3))

    def _loop(self) -> None:
        names: dict[str, str] = {}
        while not self.stopping.wait(0.05):
            members = self._members()
            if members is None:
                continue
            self._note("etcd answers")
            for m in members:
                ident = m.get("ID", "?")
                if m.get("name"):
                    names[ident] = m["name"]
                label = names.get(ident, f"member {ident}")
                self._note(f"{label} added" if m.get("isLearner") else f"{label} voter")
                if m.get("name"):
                    self._note(f"{label} started")

    def stop(self) -> dict[str, float]:
        self.stopping.set()
        self.thread.join(timeout=2)
        return dict(sorted(self.events.items(), key=lambda kv: kv[1]))


def probe_until(check, deadline: Deadline, what: str) -> tuple[float, float]:
    """Polls until ``check()``; returns (time the good answer arrived, how long
    that call took = the resolution)."""
    timed: dict[str, float] = {}

    def probe():
        began = time.monotonic()
        good = check()
        ended = time.monotonic()
        timed.update(ended=ended, took=ended - began)
        return good

    wait_for(probe, deadline.within(), what, interval=POLL)
    return timed["ended"], timed["took"]


def node_names(count: int) -> list[str]:
    return [f"n{i + 1}" for i in range(count)]


# --- figure 1: formation ------------------------------------------------------------------
def mgmtd_formation(deadline: Deadline) -> dict:
    with Workspace("form-mgmtd") as ws:
        t0 = time.monotonic()
        nodes = start_cluster([ws.node(name) for name in node_names(3)], ideal=3)
        timeline = MemberTimeline([n.client_url for n in nodes], t0)
        try:
            done, resolution = probe_until(lambda: healthy_at(members_view(nodes, timeout=20), 3), deadline,
                                           "3 healthy voters (mgmtd)")
        finally:
            steps = timeline.stop()
    # the clean-up SIGTERMs the three nodes at once and waits for them
    return {"seconds": done - t0, "probe_seconds": resolution, "steps": steps,
            "stop_seconds": ws.stop_seconds, "exit_codes": ws.exit_codes, "leaked": ws.leaked,
            "kept_logs": str(ws.kept_logs) if ws.kept_logs else None}


def health_all(endpoints: str, size: int) -> bool:
    out = etcdctl(endpoints, "endpoint", "health", "--cluster", timeout=10)
    text = out.stdout + out.stderr  # etcdctl 3.4 prints the health lines on stderr
    return out.returncode == 0 and text.count(" is healthy") == size


def static_bootstrap(deadline: Deadline) -> dict:
    with Workspace("form-static", kill=True) as ws:
        names = ["s1", "s2", "s3"]
        ports = {n: (free_port(), free_port()) for n in names}
        initial = ",".join(f"{n}={local_url(p)}" for n, (_, p) in ports.items())
        endpoints = ",".join(local_url(c) for c, _ in ports.values())
        t0 = time.monotonic()
        for name, (client, peer) in ports.items():
            ws.start(name, etcd_command(name, ws.path(name), client, peer, initial))
        wait_for(lambda: health_all(endpoints, 3), deadline.within(), "3 healthy static members",
                 interval=POLL)
        return {"seconds": time.monotonic() - t0}


def _retry(step, deadline: Deadline, what: str, counts: dict):
    """Runs ``step`` until it returns something truthy, as soon as etcd allows;
    counts the attempts."""
    def attempt():
        counts[what] = counts.get(what, 0) + 1
        return step()

    return wait_for(attempt, deadline.within(), what, interval=POLL)


def learner_floor(deadline: Deadline) -> dict:
    """One etcd, then for each of two more: member add --learner, start it
    (state existing), member promote; every step retried at once."""
    with Workspace("form-learner", kill=True) as ws:
        names = ["l1", "l2", "l3"]
        ports = {n: (free_port(), free_port()) for n in names}
        first_client = local_url(ports["l1"][0])
        counts: dict[str, int] = {}
        steps: dict[str, float] = {}
        t0 = time.monotonic()
        c, p = ports["l1"]
        ws.start("l1", etcd_command("l1", ws.path("l1"), c, p))
        cluster = [f"l1={local_url(p)}"]
        for name in names[1:]:
            client, peer = ports[name]

            def add(name=name, peer=peer):
                out = etcdctl(first_client, "member", "add", name, f"--peer-urls={local_url(peer)}",
                              "--learner", "-w", "json", timeout=10)
                return json.loads(out.stdout)["member"]["ID"] if out.returncode == 0 else None

            member_id = _retry(add, deadline, f"add {name}", counts)
            steps[f"added {name}"] = time.monotonic() - t0
            cluster.append(f"{name}={local_url(peer)}")
            ws.start(name, etcd_command(name, ws.path(name), client, peer, ",".join(cluster),
                                        state="existing"))

            def promote(member_id=member_id):
                out = etcdctl(first_client, "member", "promote", f"{member_id:x}", timeout=10)
                return out.returncode == 0

            _retry(promote, deadline, f"promote {name}", counts)
            steps[f"promoted {name}"] = time.monotonic() - t0
        endpoints = ",".join(local_url(c) for c, _ in ports.values())
        wait_for(lambda: health_all(endpoints, 3), deadline.within(), "3 healthy members after promotion",
                 interval=POLL)
        return {"seconds": time.monotonic() - t0, "attempts": counts, "steps": steps}


# --- figure 2: repair ---------------------------------------------------------------------
def repair(grace: float, deadline: Deadline) -> dict:
    with Workspace("repair") as ws:
        extra = ("--grace-period", str(grace), "--learner-deadline", "8")
        nodes = start_cluster([ws.node(name) for name in node_names(4)], *extra, ideal=3)

        def ready():
            view = members_view(nodes, timeout=20)
            return view if healthy_at(view, 3) and len(view["nodes"]) == 4 else None

        view = wait_for(ready, deadline.within(), "4 nodes: 3 healthy voters and a client", interval=0.2)
        victim_row = next(v for v in voter_rows(view) if not v["raft_leader"] and v["role"] != "leader")
        victim = next(n for n in nodes if n.name == victim_row["name"])
        alive = [n for n in nodes if n is not victim]
        t0 = time.monotonic()
        kill_node(victim)  # the supervisor and its etcd (in a session of its own, it would survive)

        def repaired():
            view = members_view(alive, timeout=20)
            return healthy_at(view, 3) and victim.name not in voter_names(view)

        done, resolution = probe_until(repaired, deadline, "3 healthy voters after the kill")
        seconds = done - t0
        return {"seconds": seconds, "grace": grace, "minus_grace": seconds - grace,
                "victim": victim.name, "probe_seconds": resolution}
