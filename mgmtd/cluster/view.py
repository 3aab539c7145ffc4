"""What the cluster looks like from outside: members, their roles and health,
and the registered hosts. Gathered over the network, rendered by ``mgmtctl``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from mgmtd.cluster import etcdapi
from mgmtd.cluster.assess import health
from mgmtd.cluster.client import connect
from mgmtd.cluster.etcdapi import EtcdApi
from mgmtd.cluster.keys import IdealSize, Keys
from mgmtd.cluster.observe import member_list_from, probe_all
from mgmtd.cluster.store import Store


@dataclass
class NodeRow:
    name: str
    id: str                      # hex member id, "" for clients
    role: str                    # leader | voter | learner | client
    peer_urls: list[str] = field(default_factory=list)
    client_urls: list[str] = field(default_factory=list)
    health: str = ""             # observe.health: healthy | no-leader | unreachable | unstarted; "" (client)
    engine: str = ""             # converged | converging | failed | starting | ""
    raft_leader: bool = False


@dataclass
class ClusterView:
    cluster_id: str
    ideal_size: int | None
    leader: str
    nodes: list[NodeRow]
    readable: bool = True        # False: etcd answered no reads (no quorum)
    ideal_problem: str = ""      # what is wrong with the ideal-size key, "" when nothing
    # what the mgmtd leader last published: the size it plans with (None: it knows
    # no valid one), what it found wrong with the key, why its planner waits
    leader_ideal_size: int | None = None
    leader_ideal_problem: str = ""
    leader_waiting: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class ClusterUnreachable(Exception):
    pass


def first_member_list(api: EtcdApi, endpoints: list[str]) -> tuple[int, list[etcdapi.MemberInfo], str]:
    try:
        endpoint, cluster_id, members = member_list_from(api, endpoints, timeout=2.0)
    except etcdapi.EtcdApiError as err:
        raise ClusterUnreachable(str(err)) from None
    return cluster_id, members, endpoint


@contextlib.contextmanager
def member_client(api: EtcdApi, endpoints: list[str]) -> Iterator:
    """A KV client on the first member that answers, closed afterwards."""
    _, _, endpoint = first_member_list(api, endpoints)
    client = connect([endpoint], timeout=5.0, tls=api.tls)
    try:
        yield client
    finally:
        client.close()


def gather(api: EtcdApi, endpoints: list[str], namespace: str) -> ClusterView:
    cluster_id, members, endpoint = first_member_list(api, endpoints)
    keys = Keys(namespace)
    hosts: dict[str, dict] = {}
    leader = ""
    ideal = IdealSize(None)  # unknown until read
    client = connect([endpoint], timeout=3.0, tls=api.tls)
    readable = True
    try:
        store = Store(client, keys)
        hosts = store.hosts()
        leader = store.leader()
        ideal = store.ideal_size()
    except Exception:  # without quorum etcd serves no reads: the members still tell the story
        readable = False
    finally:
        client.close()
    statuses = probe_all(api, members)
    raft_leader_ids = {s.leader_id for s in statuses if s is not None and s.leader_id}
    rows = []
    for member, status in zip(members, statuses, strict=True):
        role = "learner" if member.is_learner else "voter"
        if role == "voter" and member.name and member.name == leader:
            role = "leader"
        host = hosts.get(member.name, {})
        rows.append(NodeRow(
            name=member.name or "(not started)", id=f"{member.id:x}", role=role,
            peer_urls=list(member.peer_urls), client_urls=list(member.client_urls),
            health=health(member, status), engine=(host.get("engine") or {}).get("state", ""),
            raft_leader=member.id in raft_leader_ids,
        ))
    names = {m.name for m in members}
    for name, host in sorted(hosts.items()):
        if name in names:
            continue
        rows.append(NodeRow(
            name=name, id="", role="client", client_urls=[], peer_urls=[],
            health="", engine=(host.get("engine") or {}).get("state", ""),
        ))
    rows.sort(key=lambda r: ({"leader": 0, "voter": 1, "learner": 2, "client": 3}[r.role], r.name))
    planning = hosts.get(leader, {}).get("cluster")
    planning = planning if isinstance(planning, dict) else {}
    leader_ideal = planning.get("ideal_size")
    return ClusterView(cluster_id=f"{cluster_id:x}", ideal_size=ideal.size, leader=leader, nodes=rows,
                       readable=readable,
                       ideal_problem=f"{keys.ideal_size} {ideal.describe()}" if readable and ideal.problem else "",
                       leader_ideal_size=leader_ideal if isinstance(leader_ideal, int) else None,
                       leader_ideal_problem=str(planning.get("ideal_problem") or ""),
                       leader_waiting=str(planning.get("waiting") or ""))


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: list[str]) -> str:
        return "|" + "|".join(f" {c:<{w}} " for c, w in zip(cells, widths, strict=True)) + "|"

    out = [rule, line(headers), rule, *(line(r) for r in rows), rule]
    return "\n".join(out)


def render_members(view: ClusterView) -> str:
    ideal = view.ideal_size if view.ideal_size is not None else ("invalid" if view.ideal_problem else "unknown")
    voters = sum(1 for n in view.nodes if n.role in ("leader", "voter"))
    head = (f"cluster {view.cluster_id}   ideal size {ideal}   voters {voters}   "
            f"leader {view.leader or '(none)'}")
    rows = [[n.name, n.id, n.role, ",".join(n.peer_urls), ",".join(n.client_urls),
             n.health, n.engine] for n in view.nodes]
    table = render_table(["NAME", "ID", "ROLE", "PEER URLS", "CLIENT URLS", "HEALTH", "ENGINE"],
                         rows)
    return head + "\n" + table
