"""Several nodes on loopback form a real etcd cluster by themselves: they grow
to the ideal size, follow changes of it, repair dead or stopped voters and let
restarted nodes rejoin. Every scenario is checked with mgmtctl and cross-checked
with the stock etcdctl."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time

import psutil

from tests.harness import (
    FAST,
    GROW,
    LEARNER_DEADLINE,
    REPAIR,
    Node,
    children_of,
    endpoints,
    etcd_command,
    etcd_processes_under,
    etcdctl,
    exe_name,
    free_port,
    kill_node,
    local_url,
    members_view,
    mgmtctl,
    new_nodes,
    roles,
    send_signal,
    settled,
    start_cluster,
    start_logged,
    stop_all,
    stop_processes,
    tail,
    unique,
    voter_names,
    voter_rows,
    wait_for,
    wait_gone,
    wait_settled,
    wait_view,
)


def seed_args(first: Node) -> tuple[str, ...]:
    return ("--seeds", first.client_url, *FAST)


@contextlib.contextmanager
def squat(port: int, timeout: float = 0.4):
    """Listens on 127.0.0.1:port as soon as it is free (within ``timeout``)."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

        def bound():
            try:
                sock.bind(("127.0.0.1", port))
                return True
            except OSError:
                return False

        wait_for(bound, timeout, f"port {port} to be free", interval=0.005)
        sock.listen()
        yield sock
    finally:
        sock.close()


def node_etcd(node: Node) -> psutil.Process:
    etcds = etcd_processes_under(str(node.prefix))
    assert len(etcds) == 1, f"{node.name} should run exactly one etcd: {etcds}"
    return etcds[0]


# --- looking at the cluster -----------------------------------------------------------------
def cross_check(view: dict, timeout: float = 20) -> None:
    """etcdctl must see the same voters (names and ids) as mgmtctl, no learner, and
    every member healthy."""
    voters = voter_rows(view)
    expected = {v["name"]: int(v["id"], 16) for v in voters}
    urls = ",".join(u for v in voters for u in v["client_urls"])
    seen: dict = {}

    def agrees():
        listed = etcdctl(urls, "member", "list", "-w", "json")
        health = etcdctl(urls, "endpoint", "health", "--cluster")
        seen.update(list=listed.stdout + listed.stderr, health=health.stdout + health.stderr)
        if listed.returncode != 0 or health.returncode != 0:
            return False
        members = json.loads(listed.stdout)["members"]
        etcd_voters = {m.get("name", ""): int(m["ID"]) for m in members if not m.get("isLearner")}
        # etcdctl 3.4 prints the health lines on stderr
        healthy = [line for line in (health.stdout + health.stderr).splitlines() if " is healthy" in line]
        return (etcd_voters == expected and len(members) == len(expected)
                and len(healthy) == len(expected))

    try:
        wait_for(agrees, timeout, "etcdctl to agree with mgmtctl", interval=0.5)
    except AssertionError as err:
        raise AssertionError(f"{err}\nmgmtctl voters {expected}\netcdctl: {seen}") from None


def put_get(view: dict, key: str, value: str) -> None:
    """A write through one voter is read back (linearizably) through every voter."""
    urls = [v["client_urls"][0] for v in voter_rows(view)]
    put = etcdctl(",".join(urls), "put", key, value)
    assert put.returncode == 0, put.stderr
    for url in urls:
        got = etcdctl(url, "get", key, "--print-value-only")
        assert got.returncode == 0 and got.stdout.strip() == value, (url, got.stdout, got.stderr)


def mgmtctl_set_ideal(nodes: list[Node], size: int) -> None:
    out = mgmtctl("--endpoints", endpoints(nodes), "set", "ideal-cluster-size", str(size))
    assert out.returncode == 0, out.stderr
    assert f"ideal cluster size set to {size}" in out.stdout


def quiet_voter(view: dict, nodes: list[Node]) -> Node:
    """A voter that is neither mgmtd's leader nor etcd's raft leader."""
    by_name = {n.name: n for n in nodes}
    for row in voter_rows(view):
        if row["role"] == "voter" and not row["raft_leader"]:
            return by_name[row["name"]]
    raise AssertionError(f"no plain voter in {view}")


def assert_no_traceback(nodes: list[Node]) -> None:
    for node in nodes:
        assert "Traceback" not in node.log(), tail(node, 80)


def check_and_stop(view: dict, nodes: list[Node], key: str, value: str) -> None:
    """How a scenario ends: etcdctl agrees with mgmtctl, a write through one voter
    is read back through every voter, no node logged a traceback, and all stop
    cleanly."""
    cross_check(view)
    put_get(view, key, value)
    assert_no_traceback(nodes)
    stop_all(nodes)


# --- scenarios ----------------------------------------------------------------------------------
def test_three_nodes_started_at_once_become_three_voters(make_node):
    nodes = start_cluster(new_nodes(make_node, 3), *FAST)
    view = wait_settled(nodes, 3, GROW, voters={n.name for n in nodes})
    assert sum(n["role"] == "leader" for n in view["nodes"]) == 1, view
    assert view["ideal_size"] == 3
    check_and_stop(view, nodes, "/probe/three", "ok")


def test_five_nodes_with_ideal_three_make_three_voters_and_two_clients(make_node):
    nodes = start_cluster(new_nodes(make_node, 5), *FAST)
    view = wait_settled(nodes, 3, GROW, registered=5)
    names = roles(view)
    assert sorted(names.values()).count("client") == 2, view
    assert set(names) == {n.name for n in nodes}, view
    clients = {name for name, role in names.items() if role == "client"}
    for node in nodes:
        if node.name in clients:
            assert not etcd_processes_under(str(node.prefix)), f"client {node.name} runs etcd"
    # no flapping: the same voters (same member ids), no learner, for a while
    stable = {v["name"]: v["id"] for v in voter_rows(view)}
    end = time.monotonic() + 5
    while time.monotonic() < end:
        again = members_view(nodes)
        assert again is not None, "mgmtctl could not read the cluster"
        assert {v["name"]: v["id"] for v in voter_rows(again)} == stable, again
        assert not any(n["role"] == "learner" for n in again["nodes"]), again
        time.sleep(0.5)
    cross_check(view)
    assert_no_traceback(nodes)
    stop_all(nodes)


def test_ideal_size_changed_at_runtime(make_node):
    nodes = start_cluster(new_nodes(make_node, 5), *FAST)
    all_names = {n.name for n in nodes}
    view = wait_settled(nodes, 3, GROW, registered=5)
    cross_check(view)

    for size in (5, 1, 3):
        mgmtctl_set_ideal(nodes, size)
        view = wait_view(nodes, lambda v, s=size: settled(v, s) and set(roles(v)) == all_names,
                         GROW, f"{size} healthy voters after set ideal-cluster-size {size}")
        assert view["ideal_size"] == size
        clients = all_names - voter_names(view)
        assert {roles(view)[c] for c in clients} <= {"client"}, view
        # removed voters keep running as clients, without etcd
        for node in nodes:
            assert node.proc.poll() is None, f"{node.name} exited\n{tail(node)}"
            if node.name in clients:
                wait_for(lambda n=node: not etcd_processes_under(str(n.prefix)), 20,
                         f"client {node.name}'s etcd to stop")
        cross_check(view)
    assert_no_traceback(nodes)
    stop_all(nodes)


def test_killed_voter_is_replaced_by_the_spare(make_node):
    nodes = start_cluster(new_nodes(make_node, 4), *FAST)
    view = wait_settled(nodes, 3, GROW, registered=4)
    victim = quiet_voter(view, nodes)
    spare = next(n for n in nodes if roles(view)[n.name] == "client")
    kill_node(victim)
    survivors = [n for n in nodes if n is not victim]
    view = wait_settled(nodes, 3, REPAIR, voters={n.name for n in survivors}, absent={victim.name})
    assert roles(view)[spare.name] in ("voter", "leader")
    check_and_stop(view, survivors, "/probe/repaired", "yes")


def test_killed_leader_is_replaced_and_a_new_leader_elected(make_node):
    # Any supervisor may win the election, clients included (the joiners often beat the
    # bootstrapping node to it): let the first node win alone so that the leader's node
    # also runs a voter (and, most likely, etcd's raft leader).
    first, *others = nodes = new_nodes(make_node, 4)
    first.start(["empty"], "--ideal-cluster-size", "3", *FAST)
    wait_view([first], lambda v: v["leader"] == first.name, 30, f"{first.name} to lead")
    for node in others:
        node.start(["empty"], *seed_args(first))
    view = wait_settled(nodes, 3, GROW, registered=4)
    by_name = {n.name: n for n in nodes}
    old_leader = by_name[view["leader"]]
    assert old_leader is first and roles(view)[first.name] == "leader", view
    kill_node(old_leader)
    survivors = [n for n in nodes if n is not old_leader]
    view = wait_settled(nodes, 3, REPAIR, voters={n.name for n in survivors}, absent={old_leader.name})
    assert view["leader"] in {n.name for n in survivors}
    assert roles(view)[view["leader"]] == "leader", view
    check_and_stop(view, survivors, "/probe/new-leader", "yes")


def test_stopped_etcd_is_replaced_and_resumes_harmlessly(make_node):
    nodes = start_cluster(new_nodes(make_node, 4), *FAST)
    view = wait_settled(nodes, 3, GROW, registered=4)
    cluster_id = view["cluster_id"]
    victim = quiet_voter(view, nodes)
    others = {n.name for n in nodes} - {victim.name}
    etcd = node_etcd(victim)
    assert send_signal(etcd, signal.SIGSTOP), f"{victim.name}'s etcd exited on its own\n{tail(victim)}"
    try:
        view = wait_settled(nodes, 3, REPAIR, voters=others)
    finally:
        send_signal(etcd, signal.SIGCONT)
    assert victim.proc.poll() is None, f"{victim.name}'s supervisor exited\n{tail(victim)}"

    def resumed_harmlessly(view: dict) -> bool:
        """Every observation, from SIGCONT until the victim is settled as a voter or
        as a client whose etcd is gone: one cluster, at most one raft leader."""
        assert view["cluster_id"] == cluster_id, view
        assert sum(n["raft_leader"] for n in view["nodes"]) <= 1, view
        status = etcdctl(endpoints(nodes), "--dial-timeout", "1s", "--command-timeout", "2s",
                         "endpoint", "status", "-w", "json")
        ids = {s["Status"]["header"]["cluster_id"] for s in json.loads(status.stdout or "[]")}
        assert len(ids) <= 1, status.stdout
        role = roles(view).get(victim.name)
        return (settled(view, 3) and voter_names(view) <= {n.name for n in nodes}
                and (role == "voter" or role == "client" and not etcd_processes_under(str(victim.prefix))))

    view = wait_view(nodes, resumed_harmlessly, REPAIR,
                     f"3 healthy voters with {victim.name} back as a voter, or as a client without etcd",
                     every_read=True)
    assert view["cluster_id"] == cluster_id
    check_and_stop(view, nodes, "/probe/after-sigcont", "consistent")


def test_restarted_node_rejoins_by_itself(make_node):
    nodes = start_cluster(new_nodes(make_node, 3), *FAST)
    first = nodes[0]
    view = wait_settled(nodes, 3, GROW, voters={n.name for n in nodes})
    victim = quiet_voter(view, nodes)
    assert victim.stop() == 0, tail(victim)
    assert not etcd_processes_under(str(victim.prefix))
    victim.start(["empty"], *seed_args(first))
    view = wait_settled(nodes, 3, REPAIR, voters={n.name for n in nodes})
    check_and_stop(view, nodes, "/probe/restarted", "back")


def test_nominee_whose_etcd_cannot_start_is_replaced(make_node):
    seed, blocked, spare = nodes = [make_node(unique(n)) for n in ("seed", "blocked", "spare")]
    # ideal 1 first: the test must hold the blocked node's peer port before it is nominated
    seed.start(["empty"], "--ideal-cluster-size", "1", *FAST)
    blocked.start(["empty"], *seed_args(seed))
    spare.start(["empty"], *seed_args(seed))
    wait_settled(nodes, 1, GROW, voters={seed.name}, clients={blocked.name, spare.name})
    with squat(blocked.peer_port):
        mgmtctl_set_ideal(nodes, 2)
        # the blocked node sorts first, so it is nominated first, fails, and is replaced
        view = wait_settled(nodes, 2, GROW + int(LEARNER_DEADLINE), voters={seed.name, spare.name},
                            clients={blocked.name})
        cross_check(view)
        assert blocked.proc.poll() is None, f"{blocked.name} exited\n{tail(blocked)}"
        assert "cannot start etcd as nominated" in blocked.log(), tail(blocked)
        # whichever node leads (a client may) removed the blocked learner at its deadline
        assert any(f"removed member {blocked.name}" in line and "before its deadline" in line
                   for n in nodes for line in n.log().splitlines()), "\n".join(tail(n) for n in nodes)
        wait_for(lambda: not etcd_processes_under(str(blocked.prefix)), 20,
                 f"{blocked.name}'s etcd attempts to stop")
    assert_no_traceback(nodes)
    stop_all(nodes)


def test_no_server_client_against_an_external_etcd(make_node, workdir):
    client_port = free_port()
    url = local_url(client_port)
    external = start_logged(etcd_command("external", workdir / "external-etcd", client_port, free_port()),
                            workdir / "external-etcd.log")
    try:
        wait_for(lambda: etcdctl(url, "endpoint", "health").returncode == 0, 30, "the external etcd")
        root = workdir / "managed"
        graph = workdir / "g.yaml"
        graph.write_text(f"""graph: client
resources:
  file:
  - name: root
    path: "{root}/"
    state: exists
  - name: hello
    path: "{root}/hello.txt"
    content: "from a client\\n"
""")
        node = make_node(unique("client-only"))
        node.start(["yaml", str(graph)], "--no-server", "--seeds", url)
        wait_for(lambda: (root / "hello.txt").exists(), 30, "the graph to be applied")
        assert (root / "hello.txt").read_text() == "from a client\n"

        view = wait_view([url, node], lambda v: roles(v).get(node.name) == "client"
                         and {n["name"]: n["engine"] for n in v["nodes"]}.get(node.name) == "converged",
                         30, "the client registered with a converged engine")
        assert voter_names(view) == {"external"}, view
        listed = json.loads(etcdctl(url, "member", "list", "-w", "json").stdout)["members"]
        assert [m["name"] for m in listed] == ["external"]
        assert not etcd_processes_under(str(node.prefix)), "mgmtd started an etcd for a --no-server node"
        children = children_of(node.proc.pid)
        assert not any(exe_name(p) == "etcd" for p in children), children
        assert "started etcd" not in node.log()

        assert node.stop() == 0, tail(node)
        hosts = etcdctl(url, "get", "--prefix", "--keys-only", "/mgmtd/hosts/")
        assert hosts.returncode == 0 and hosts.stdout.strip() == "", hosts.stdout
        assert_no_traceback([node])
    finally:
        stop_processes([external], timeout=15)


# --- bugs found and fixed: each test kept as a guard --------------------------------------------------------
def learner_adds(nodes: list[Node], host: str) -> int:
    return sum(f"cluster: added {host} as a learner" in line for n in nodes for line in n.log().splitlines())


def test_dead_voter_is_not_nominated_again(make_node):
    # whichever volunteer registers last stays the spare (the leader picks among those
    # it sees, by name): the test reads who it is rather than assuming it
    nodes = start_cluster(new_nodes(make_node, 4), *FAST)
    view = wait_settled(nodes, 3, GROW, registered=4)
    assert sorted(roles(view).values()).count("client") == 1, view
    victim = quiet_voter(view, nodes)
    before = learner_adds(nodes, victim.name)
    kill_node(victim)
    survivors = [n for n in nodes if n is not victim]
    view = wait_settled(nodes, 3, REPAIR, voters={n.name for n in survivors}, absent={victim.name})
    cross_check(view)
    stop_all(survivors)
    assert learner_adds(survivors, victim.name) == before, (
        f"the dead {victim.name} was added again as a learner:\n" + "\n".join(
            line for n in survivors for line in n.log().splitlines()
            if "cluster: added" in line or "cluster: removed member" in line))


def test_node_stays_registered_while_its_etcd_cannot_restart(make_node):
    # a long grace period: the broken voter must stay a member for the whole window
    nodes = start_cluster(new_nodes(make_node, 3), *FAST, "--grace-period", "60")
    view = wait_settled(nodes, 3, GROW, voters={n.name for n in nodes})
    victim = quiet_voter(view, nodes)
    others = [n for n in nodes if n is not victim]
    etcd = node_etcd(victim)
    # the supervisor is held still while its etcd is killed and the port taken: it
    # restarts etcd 0.5 s after it exits, and on a loaded machine could win the port
    victim.proc.send_signal(signal.SIGSTOP)
    try:
        send_signal(etcd, signal.SIGKILL)
        wait_gone([etcd], 10, f"{victim.name}'s killed etcd")
        # from now on etcd's restarts fail: its peer port is taken (a killed etcd's
        # other threads may hold the port a moment longer)
        with squat(victim.peer_port, timeout=10):
            victim.proc.send_signal(signal.SIGCONT)
            missing = []
            end = time.monotonic() + 20
            while time.monotonic() < end:
                got = etcdctl(endpoints(others), "get", f"/mgmtd/hosts/{victim.name}", "--print-value-only")
                assert got.returncode == 0, got.stderr
                assert victim.proc.poll() is None, tail(victim)
                if not got.stdout.strip():
                    missing.append(time.strftime("%H:%M:%S"))
                time.sleep(0.5)
            wait_for(lambda: "bind: address already in use" in victim.log(), 30,
                     f"{victim.name}'s etcd restart to fail on the taken port")
            stop_all([victim])  # while its restarts still fail fast
    finally:
        victim.proc.send_signal(signal.SIGCONT)  # a no-op once it has exited
    stop_all(others)
    assert not missing, (f"the running {victim.name} was unregistered at {missing}\n{tail(victim)}")



def test_sigterm_stops_promptly_while_etcd_waits_for_quorum(make_node):
    first, second = nodes = start_cluster(new_nodes(make_node, 2), *FAST, ideal=2)
    wait_settled(nodes, 2, GROW, voters={first.name, second.name})
    assert second.stop() == 0, tail(second)  # one voter of two left: no quorum
    starts = first.log().count("started etcd")
    send_signal(node_etcd(first), signal.SIGKILL)
    # logged right before wait_ready, where it now stays: etcd serves no client before it has a leader
    wait_for(lambda: first.log().count("started etcd") > starts, 10, f"{first.name} to restart etcd")
    first.proc.send_signal(signal.SIGTERM)
    try:
        code = first.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        kill_node(first, needs_etcd=False)  # leave nothing behind
        raise AssertionError(f"{first.name} did not stop within 10 s of SIGTERM\n{tail(first)}") from None
    assert code == 0, tail(first)
    assert not etcd_processes_under(str(first.prefix))
