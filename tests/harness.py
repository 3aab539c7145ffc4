"""The one harness of the tests and the bench (bench/ imports it too): waiting
with a deadline, processes that may be gone by the time they are looked at,
mgmtd nodes as real subprocesses on loopback, clusters of them, mgmtctl's and
etcdctl's view of a cluster, and a check that nothing a test started outlives
it. Test code: it stays out of the shipped package."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from mgmtd.supervisor.preflight import PortAllocator

# one allocator for the whole session: the tests' and the bench's ports, never the same twice
free_port = PortAllocator().free_port

VENV_BIN = Path(sys.executable).parent
MGMTD = str(VENV_BIN / "mgmtd")
MGMTCTL = str(VENV_BIN / "mgmtctl")
LOOPBACK = "127.0.0.1"

# Cluster timings for tests. etcd allows the next member change only once every
# voter has been connected for about 5 s: growing takes ~6 s per added voter,
# repair a grace period more.
GRACE = "3"             # seconds a voter may be unhealthy before it is replaced
LEARNER_DEADLINE = "8"  # seconds a nominee has to start etcd and catch up
FAST = ("--grace-period", GRACE, "--learner-deadline", LEARNER_DEADLINE)
GROW = 60
REPAIR = 75


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Polls ``predicate`` until it returns something truthy and returns that;
    AssertionError naming ``what`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def local_url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


# --- graphs -------------------------------------------------------------------------------
def file_res(name: str, path: str, content: str) -> str:
    """One file resource, as a graph's list of files holds it."""
    return f'  - name: "{name}"\n    path: "{path}"\n    content: "{content}"\n'


def graph_with(path: Path, resources: str, collect: str = "") -> str:
    """Writes graph g with these file resources (YAML list items, or "    []")
    and collect rules; returns its path."""
    path.write_text(f"graph: g\nresources:\n  file:\n{resources}\n{collect}")
    return str(path)


def one_file_graph(path: Path, target, content: str) -> str:
    """Writes a graph managing one file (``file[f]``) and returns its path."""
    return graph_with(path, file_res("f", target, content))


def write_atomically(path: Path, text: str) -> None:
    """How an editor or a deploy tool replaces a file: a temp file, then rename."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def put_export(endpoint: str, host: str, kind: str, name: str, params: dict) -> None:
    """An export written straight into etcd, as host ``host`` would write it."""
    value = json.dumps({"kind": kind, "name": name, "host": host, "params": params, "meta": {}})
    put = etcdctl(endpoint, "put", f"/mgmtd/exported/{host}/{kind}/{name}", value)
    assert put.returncode == 0, put.stderr


# --- processes that may be gone -------------------------------------------------------
# Any process a test looks at may exit between being listed and being used (a
# child of a node that is restarting, an etcd being replaced): every helper
# below treats "gone" as an answer, never as an error. ZombieProcess is a
# NoSuchProcess; AccessDenied means the pid now belongs to someone else's process.
GONE = (psutil.NoSuchProcess, psutil.AccessDenied)
ProcessRef = int | psutil.Process


def _handle(proc: ProcessRef) -> psutil.Process | None:
    if isinstance(proc, psutil.Process):
        return proc
    try:
        return psutil.Process(proc)
    except GONE:
        return None


def gone(proc: ProcessRef) -> bool:
    """No such process any more, or only a zombie waiting to be reaped."""
    handle = _handle(proc)
    try:
        return handle is None or not handle.is_running() or handle.status() == psutil.STATUS_ZOMBIE
    except GONE:
        return True


def send_signal(proc: ProcessRef, sig: int) -> bool:
    """Signals the process; False when it is gone (psutil refuses a reused pid)."""
    handle = _handle(proc)
    if handle is None:
        return False
    try:
        handle.send_signal(sig)
        return True
    except GONE:
        return False


def children_of(pid: ProcessRef, recursive: bool = True) -> list[psutil.Process]:
    """The process's children (all descendants by default); [] when it is gone."""
    handle = _handle(pid)
    try:
        return handle.children(recursive=recursive) if handle is not None else []
    except GONE:
        return []


def cmdline_of(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except GONE:
        return []


def exe_name(proc: psutil.Process) -> str:
    """The basename of the process's executable; "" when it is gone."""
    try:
        return os.path.basename(proc.exe() or (proc.cmdline() or [""])[0])
    except GONE:
        return ""


def environ_of(proc: psutil.Process) -> dict[str, str] | None:
    try:
        return proc.environ()
    except GONE:
        return None


def signal_tree(pid: ProcessRef, sig: int) -> list[psutil.Process]:
    """Signals the process and every descendant (listed first: once the root is
    gone its children are no longer its children). Returns those signalled."""
    root = _handle(pid)
    if root is None:
        return []
    family = [root, *children_of(root)]
    return [proc for proc in family if send_signal(proc, sig)]


def freeze_tree(pid: ProcessRef) -> list[psutil.Process]:
    """SIGSTOPs the process and its descendants until a listing finds no new one:
    a stopped process cannot start a child (a supervisor would restart the etcd
    that was just killed). Returns the frozen processes."""
    root = _handle(pid)
    if root is None or not send_signal(root, signal.SIGSTOP):
        return []
    frozen = {root.pid: root}
    for _ in range(100):  # each pass stops one more generation; trees are shallow
        new = [p for p in children_of(root) if p.pid not in frozen]
        if not new:
            break
        for proc in new:
            send_signal(proc, signal.SIGSTOP)  # one that is gone is simply not listed again
            frozen[proc.pid] = proc
    return [p for p in frozen.values() if not gone(p)]


def wait_gone(procs: list[psutil.Process], timeout: float, what: str) -> None:
    wait_for(lambda: all(gone(p) for p in procs), timeout, what)


def kill_tree(pid: ProcessRef, timeout: float = 10) -> list[psutil.Process]:
    """SIGKILLs the process and every descendant, frozen first so that none is
    replaced meanwhile, and waits until each is gone (a zombie counts). Returns
    those killed; a process that had already exited is simply not among them."""
    killed = [proc for proc in freeze_tree(pid) if send_signal(proc, signal.SIGKILL)]
    wait_gone(killed, timeout, f"pid {pid if isinstance(pid, int) else pid.pid} and its descendants to die")
    return killed


def kill_supervisor(proc: subprocess.Popen, prefix: str) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """SIGKILLs a node's supervisor and its etcd (in a session of its own, it
    would outlive the supervisor), not its engine, which must go by itself when
    its stdin closes. The supervisor is stopped first, so that it cannot replace
    its etcd meanwhile. Returns the supervisor's descendants and the etcds found."""
    proc.send_signal(signal.SIGSTOP)  # Popen's: a no-op once it has exited
    children = children_of(proc.pid)
    etcds = etcd_processes_under(prefix)
    proc.kill()
    for etcd in etcds:
        send_signal(etcd, signal.SIGKILL)
    proc.wait(timeout=10)
    return children, etcds


def processes_under(directory: str) -> list[psutil.Process]:
    """Processes (other than this one) whose command line mentions the directory."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
        except GONE:
            continue
        if proc.pid != os.getpid() and any(directory in part for part in cmdline):
            found.append(proc)
    return found


def etcd_processes_under(directory: str) -> list[psutil.Process]:
    return [proc for proc in processes_under(directory) if exe_name(proc) == "etcd"]


def kill_leftovers(directory: str, timeout: float = 10) -> list[str]:
    """Kills whatever a test left running under its directory; returns their
    descriptions (a non-empty list is a leak, i.e. a bug)."""
    leaked, killed = [], []
    for proc in processes_under(directory):
        described = " ".join(cmdline_of(proc))[:200]
        if described and send_signal(proc, signal.SIGKILL):
            leaked.append(f"pid {proc.pid}: {described}")
            killed.append(proc)
    # not psutil.wait_procs: it would reap our own children behind their Popen's back
    wait_gone(killed, timeout, f"leftovers under {directory} to die")
    return leaked


# --- starting and stopping ---------------------------------------------------------------
def start_logged(cmd: list[str], log_path: Path, env: dict | None = None) -> subprocess.Popen:
    """Starts ``cmd`` with its stdout and stderr appended to ``log_path`` (a file,
    not a pipe: a full pipe would block it while nobody reads)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})


def stop_together(procs: Iterable[subprocess.Popen], timeout: float,
                  sig: int = signal.SIGTERM) -> list[subprocess.Popen]:
    """Signals every live process at once (one by one, a cluster would lose quorum
    node after node and each stop would wait for it), then waits for all of them
    within one ``timeout``; returns those still running."""
    live = [proc for proc in procs if proc.poll() is None]
    for proc in live:
        with contextlib.suppress(ProcessLookupError):  # reaped by someone else meanwhile
            proc.send_signal(sig)  # Popen's: a no-op once it has been reaped
    end = time.monotonic() + timeout
    late = []
    for proc in live:
        try:
            proc.wait(timeout=max(1.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            late.append(proc)
    return late


def stop_processes(procs: Iterable[subprocess.Popen], timeout: float = 30,
                   sig: int = signal.SIGTERM) -> None:
    """Stops the processes together; SIGKILL to those still running after ``timeout``."""
    for proc in stop_together(procs, timeout, sig):
        proc.kill()
        proc.wait(timeout=10)


@dataclass
class Node:
    name: str
    prefix: Path
    client_port: int
    peer_port: int
    address: str = LOOPBACK
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def client_url(self) -> str:
        return f"http://{self.address}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.address}:{self.peer_port}"

    def command(self, frontend: list[str], *args: str) -> list[str]:
        return [MGMTD, "run", "--hostname", self.name, "--prefix", str(self.prefix),
                "--client-urls", self.client_url, "--server-urls", self.peer_url,
                *self.extra, *args, *frontend]

    def start(self, frontend: list[str], *args: str, env: dict | None = None) -> subprocess.Popen:
        """``mgmtd run``, its log in NAME.log next to the prefix."""
        self.log_path = self.prefix.parent / f"{self.name}.log"
        self.proc = start_logged(self.command(frontend, *args), self.log_path, env)
        return self.proc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        stop_processes([self.proc], timeout)
        return self.proc.returncode


_ids = itertools.count(1)


def unique(label: str) -> str:
    """A hostname no other test (or other mgmtd on this machine) uses, sorting in creation
    order: the planner picks volunteers by name, so some tests rely on that order."""
    return f"tc{os.getpid() % 1000:03d}x{next(_ids):03d}-{label}"


def new_nodes(make_node: Callable[[str], Node], count: int, label: str = "n") -> list[Node]:
    """``count`` nodes with unique names (see unique), in the order they sort in."""
    return [make_node(unique(label)) for _ in range(count)]


def start_cluster(nodes: Sequence[Node], *flags: str, ideal: int = 3,
                  graphs: Sequence[str | None] = ()) -> list[Node]:
    """Starts the nodes at once: the first bootstraps the cluster with the ideal
    size, the others join through it. ``flags`` go to every node, last (so they
    override earlier ones); node i runs the YAML graph ``graphs[i]`` if there is
    one, else the empty graph. Returns the nodes, as a list."""
    def frontend(i: int) -> list[str]:
        graph = graphs[i] if i < len(graphs) else None
        return ["yaml", graph] if graph else ["empty"]

    first, *others = nodes
    first.start(frontend(0), "--ideal-cluster-size", str(ideal), *flags)
    for i, node in enumerate(others, start=1):
        node.start(frontend(i), "--seeds", first.client_url, *flags)
    return list(nodes)


def tail(node: Node, lines: int = 40) -> str:
    text = node.log().splitlines()[-lines:]
    return f"--- {node.name} ({node.client_url}) ---\n" + "\n".join(text)


def stop_all(nodes: Iterable[Node], timeout: float = 60) -> None:
    """SIGTERMs every live node at once, then waits for each; every one must stop
    cleanly (one that does not is left to the test's clean-up, which kills it)."""
    live = [n for n in nodes if n.proc is not None and n.proc.poll() is None]
    late = stop_together([n.proc for n in live], timeout)
    for node in live:
        if node.proc in late:
            raise AssertionError(f"{node.name} did not stop within {timeout}s\n{tail(node)}")
    for node in live:
        assert node.proc.returncode == 0, f"{node.name} exited {node.proc.returncode}\n{tail(node)}"


def kill_node(node: Node, needs_etcd: bool = True) -> None:
    """SIGKILLs a node's supervisor and its etcd; the engine must then go by
    itself (its stdin closes)."""
    children, etcds = kill_supervisor(node.proc, str(node.prefix))
    assert etcds or not needs_etcd, f"{node.name} ran no etcd"
    wait_gone([*etcds, *children], 15, f"{node.name}'s etcd and engine to exit after the supervisor was killed")


def wait_full_rounds(node: Node, rounds: int = 1, timeout: float = 30) -> None:
    """Waits until the node's supervisor has made ``rounds`` complete passes of its
    main loop (a cluster round in each) that began after this call. A SIGHUP is
    logged ("reloading the graph") at the top of the pass that takes it, so the
    pass before the next logged SIGHUP is over. What a test asserts did not happen
    has had its chance to happen then: a positive event, not a guessed sleep."""
    for _ in range(rounds + 1):
        seen = node.log().count("reloading the graph")
        node.proc.send_signal(signal.SIGHUP)
        wait_for(lambda seen=seen: node.log().count("reloading the graph") > seen, timeout,
                 f"{node.name}'s supervisor to take a SIGHUP")



def etcd_command(name: str, data_dir: Path, client_port: int, peer_port: int,
                 initial_cluster: str | None = None, state: str = "new") -> list[str]:
    """The stock etcd as mgmtd starts it (same flags, same logger); alone in its
    cluster unless ``initial_cluster`` says otherwise."""
    client, peer = local_url(client_port), local_url(peer_port)
    return ["etcd", "--name", name, "--data-dir", str(data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", initial_cluster or f"{name}={peer}", "--initial-cluster-state", state,
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"]


# --- clients and what they see ---------------------------------------------------------------
def mgmtctl(*args: str, timeout: float = 30, wrap: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """``wrap`` goes before the command (e.g. ip netns exec NS)."""
    return subprocess.run([*wrap, MGMTCTL, *args], capture_output=True, text=True, timeout=timeout)


def etcdctl(endpoint: str, *args: str, timeout: float = 30,
            wrap: Sequence[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*wrap, "etcdctl", "--endpoints", endpoint, *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "ETCDCTL_API": "3"})


def endpoints(nodes: Iterable[Node | str]) -> str:
    """Client URLs of the given nodes (or plain URLs, for an etcd mgmtd does not run)."""
    return ",".join(n if isinstance(n, str) else n.client_url for n in nodes)


def members_view(nodes: Iterable[Node | str], *flags: str, wrap: Sequence[str] = (),
                 timeout: float = 30) -> dict | None:
    """``mgmtctl members -o json`` through every given client URL (dead ones
    included); None when mgmtctl could not read the cluster in time."""
    try:
        out = mgmtctl("--endpoints", endpoints(nodes), *flags, "members", "-o", "json",
                      timeout=timeout, wrap=wrap)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.stdout) if out.returncode == 0 else None


def voter_rows(view: dict | None, healthy: bool = False) -> list[dict]:
    """The voters (mgmtd's leader among them) of a members view; only the
    healthy ones if asked. None (nothing read) has none."""
    return [n for n in (view or {}).get("nodes", ())
            if n["role"] in ("leader", "voter") and (not healthy or n["health"] == "healthy")]


def voter_names(view: dict | None, healthy: bool = False) -> set[str]:
    return {n["name"] for n in voter_rows(view, healthy)}


def roles(view: dict) -> dict[str, str]:
    return {n["name"]: n["role"] for n in view["nodes"]}


def healthy_at(view: dict | None, size: int) -> bool:
    """Exactly ``size`` voters, all healthy, and no learner."""
    return (view is not None and len(voter_rows(view)) == size == len(voter_rows(view, healthy=True))
            and not any(n["role"] == "learner" for n in view["nodes"]))


def settled(view: dict, size: int) -> bool:
    """At ``size`` healthy voters (healthy_at), one raft leader among them and an
    elected mgmtd leader."""
    return (healthy_at(view, size) and sum(v["raft_leader"] for v in voter_rows(view)) == 1
            and bool(view["leader"]))


def wait_view(nodes: list[Node | str], check, timeout: float, what: str, every_read: bool = False) -> dict:
    """Polls mgmtctl until ``check(view)`` holds (``check`` may also assert an
    invariant of every view); on timeout or a failed assertion the last view and
    each node's log tail are in the failure. ``every_read``: mgmtctl must read the
    cluster every time."""
    last: dict = {}

    def probe():
        view = members_view(nodes)
        last["view"] = view
        assert view is not None or not every_read, "mgmtctl could not read the cluster"
        return view if view is not None and check(view) else None

    try:
        return wait_for(probe, timeout, what, interval=0.3)
    except AssertionError as err:
        logs = "\n".join(tail(n) for n in nodes if isinstance(n, Node))
        raise AssertionError(f"{err}\nlast view: {json.dumps(last.get('view'), indent=1)}\n{logs}") from None


def wait_settled(nodes: list[Node | str], size: int, timeout: float, voters: set[str] | None = None,
                 clients: set[str] = frozenset(), absent: set[str] = frozenset(),
                 registered: int | None = None) -> dict:
    """Waits until the cluster is settled at ``size`` healthy voters (these ones, if
    given), the given nodes are registered clients, the absent ones are gone and
    (if given) ``registered`` nodes are registered in all."""
    def check(view):
        names = roles(view)
        return (settled(view, size)
                and (voters is None or voter_names(view) == voters)
                and all(names.get(c) == "client" for c in clients)
                and not absent & set(names)
                and (registered is None or len(names) == registered))

    what = f"{size} healthy voters" + (f" {sorted(voters)}" if voters else "") + \
        (f", clients {sorted(clients)}" if clients else "") + (f", without {sorted(absent)}" if absent else "") + \
        (f", {registered} registered nodes" if registered is not None else "")
    return wait_view(nodes, check, timeout, what)
