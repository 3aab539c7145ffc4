"""Figures 3, 5 and 6: the engine alone with N file resources (cold converge,
no-change pass, repair of external edits) against a plain-Python floor and,
when installed, puppet apply; peak RSS of a whole node (supervisor, engine)."""

from __future__ import annotations

import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench import puppet
from bench.common import Deadline, ScenarioTimeout, Workspace, median, percentile
from tests.harness import MGMTD, children_of, cmdline_of, start_cluster, wait_for

CONVERGED_TIMEOUT = 1.0   # the engine exits after being converged this long
FLOOR_AGENT = str(Path(__file__).with_name("floor_agent.py"))


def content_of(i: int) -> str:
    return f"file {i} of the bench graph: this content is managed\n"


# past this many files the graph leaves out ``state: exists`` (the default): 100000
# files would not fit in the 16 MiB a graph file may hold (mgmtd.yamlgraph.source)
EXPLICIT_STATE_UP_TO = 10_000


def write_graph(graph: Path, directory: Path, count: int) -> dict[str, str]:
    """One directory resource and ``count`` files in it; returns path -> content."""
    wanted = {str(directory / f"f{i}"): content_of(i) for i in range(count)}
    lines = ["graph: bench", "resources:", "  file:",
             f'  - name: dir\n    path: "{directory}/"\n    state: exists']
    state = "\n    state: exists" if count <= EXPLICIT_STATE_UP_TO else ""
    for i, (path, content) in enumerate(wanted.items()):
        lines.append(f'  - name: f{i}\n    path: "{path}"\n    content: {json.dumps(content)}{state}')
    graph.write_text("\n".join(lines) + "\n")
    return wanted


# --- measuring processes -----------------------------------------------------------------
class RssSampler:
    """Samples the RSS of the processes ``select()`` returns, every few ms,
    keeping each role's peak."""

    def __init__(self, select, interval: float = 0.01) -> None:
        self.select = select
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                for role, proc in self.select().items():
                    try:
                        rss = proc.memory_info().rss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
                    self.peaks[role] = max(self.peaks.get(role, 0), rss)
            except psutil.Error:
                pass
            self.stopping.wait(self.interval)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


FIRST_PASS = re.compile(r"first pass: \d+ resources in ([0-9.]+) s from the engine's start "
                        r"\(CPU ([0-9.]+) s\)")


def first_pass(log: str) -> tuple[float, float] | None:
    """The engine's own (wall, CPU) seconds from its start to every resource
    checked once, from its log line (at info level)."""
    found = FIRST_PASS.search(log)
    return (float(found.group(1)), float(found.group(2))) if found else None


def run_engine(ws: Workspace, name: str, graph: Path | None,
               level: str = "warning") -> tuple[float, int, float]:
    """Runs ``mgmtd engine`` with a converged timeout; returns (wall seconds,
    peak RSS, CPU seconds: user + system, from the child's rusage). Every run
    of a workspace has the same state directory (--prefix), as every run of
    one node has: what a run keeps for the next (the loaded graph, what its
    checks proved) is there, and never in the machine's /var/lib/mgmtd. The
    scenario's deadline (SIGALRM) interrupts the wait."""
    frontend = ["yaml", str(graph)] if graph else ["empty"]
    cmd = [MGMTD, "engine", "--hostname", "bench", "--log-level", level,
           "--prefix", str(ws.path("state")), "--converged-timeout", str(CONVERGED_TIMEOUT), *frontend]
    cpu0 = children_cpu()
    t0 = time.monotonic()
    proc = ws.start(name, cmd)
    handle = psutil.Process(proc.pid)
    with RssSampler(lambda: {"engine": handle}) as sampler:
        # a blocking wait (the scenario's deadline interrupts it): a wait with a
        # timeout polls every 50 ms, which would be the resolution of the figure
        code = proc.wait()
    wall = time.monotonic() - t0
    cpu = children_cpu() - cpu0
    if code != 0:
        raise RuntimeError(f"mgmtd engine ({name}) exited {code}: {ws.log(name)[-2000:]}")
    return wall, sampler.peaks.get("engine", 0), cpu


def wait_idle(pid: int, deadline: Deadline, window: float = 0.3, limit: float = 60) -> None:
    """Waits until the process (and children) used under 3% CPU over ``window``."""
    proc = psutil.Process(pid)

    def cpu() -> float:
        total = proc.cpu_times()
        return total.user + total.system

    def idle() -> bool:
        before = cpu()
        time.sleep(window)
        return cpu() - before < 0.03 * window

    wait_for(idle, deadline.within(limit), f"pid {pid} to go idle", interval=0)


# --- the floor -------------------------------------------------------------------------------
def floor_write(directory: Path, wanted: dict[str, str]) -> tuple[float, float]:
    """A plain-Python loop: the directory, then every file atomically (temp
    file, fsync, rename, fsync of the directory: what mgmtd promises).
    Returns (wall, CPU) seconds."""
    t0, c0 = time.monotonic(), time.process_time()
    os.makedirs(directory, exist_ok=True)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for path, content in wanted.items():
            fd, temp = tempfile.mkstemp(prefix=".floor-", dir=directory)
            try:
                os.write(fd, content.encode())
                os.fchmod(fd, 0o644)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
            os.fsync(dfd)
    finally:
        os.close(dfd)
    return time.monotonic() - t0, time.process_time() - c0


def floor_check(wanted: dict[str, str]) -> tuple[float, float]:
    """The floor of a no-change pass: read every file and compare."""
    t0, c0 = time.monotonic(), time.process_time()
    wrong = 0
    for path, content in wanted.items():
        with open(path, "rb") as handle:
            wrong += handle.read() != content.encode()
    assert wrong == 0
    return time.monotonic() - t0, time.process_time() - c0


# --- repair latency ------------------------------------------------------------------------------
def edit_and_time(path: str, right: bytes, wrong: bytes, limit: float) -> float | None:
    """Overwrites the file in place with wrong content; returns how long until
    it holds the right content again (polled every ms), None if never."""
    def repaired() -> bool:
        try:
            with open(path, "rb") as handle:
                return handle.read() == right
        except FileNotFoundError:
            return False

    t0 = time.monotonic()
    with open(path, "wb") as handle:
        handle.write(wrong)
    try:
        wait_for(repaired, limit, f"{path} repaired", interval=0.001)
    except AssertionError:
        return None
    return time.monotonic() - t0


def repair_latencies(proc: subprocess.Popen, wanted: dict[str, str], edits: int,
                     deadline: Deadline, seed: int) -> tuple[list[float], int]:
    """Warms the repairer up (3 edits, not counted), waits for it to go idle,
    then ``edits`` edits of random managed files, one at a time."""
    rng = random.Random(seed)
    paths = list(wanted)
    for _ in range(3):
        path = rng.choice(paths)
        if edit_and_time(path, wanted[path].encode(), b"warm-up\n", min(60, deadline.left())) is None:
            raise ScenarioTimeout(f"warm-up edit of {path} never repaired")
    wait_idle(proc.pid, deadline)
    samples, missed = [], 0
    for k in range(edits):
        deadline.check("editing files")
        if proc.poll() is not None:
            raise RuntimeError(f"the repairer exited with {proc.returncode}")
        path = rng.choice(paths)
        took = edit_and_time(path, wanted[path].encode(), f"wrong {k}\n".encode(), 10)
        if took is None:
            missed += 1
        else:
            samples.append(took)
        time.sleep(0.005)
    return samples, missed


def repair_figures(ws: Workspace, proc: subprocess.Popen, wanted: dict[str, str], edits: int,
                   deadline: Deadline, ready=lambda: True) -> dict:
    """Repair latencies of the running ``proc`` (an engine or the floor agent),
    once ``ready()``; stops it."""
    try:
        wait_for(ready, deadline.within(30), "the repairing process to be ready", 0.01)
        samples, missed = repair_latencies(proc, wanted, edits, deadline, seed=len(wanted))
    finally:
        ws.stop(proc)
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "missed": missed,
            "samples": len(samples)}


def engine_repair(ws: Workspace, graph: Path, wanted: dict[str, str], edits: int,
                  deadline: Deadline) -> dict:
    proc = ws.start("engine-repair", [MGMTD, "engine", "--hostname", "bench", "--log-level",
                                      "warning", "--prefix", str(ws.path("state")), "yaml", str(graph)])
    return repair_figures(ws, proc, wanted, edits, deadline)


def floor_repair(ws: Workspace, wanted: dict[str, str], edits: int, deadline: Deadline) -> dict:
    spec = ws.path("floor-wanted.json")
    spec.write_text(json.dumps(wanted))
    proc = ws.start("floor-agent", [sys.executable, FLOOR_AGENT, str(spec)])
    return repair_figures(ws, proc, wanted, edits, deadline, ready=lambda: "ready" in ws.log("floor-agent"))


# --- figure 3: one size ---------------------------------------------------------------------------
def empty_baseline(repeats: int, deadline: Deadline) -> dict:
    """Startup (and exit) of an empty graph: wall time minus the converged timeout."""
    with Workspace("engine-empty") as ws:
        walls, peaks, cpus = [], [], []
        for k in range(repeats):
            wall, peak, cpu = run_engine(ws, f"empty-{k}", None)
            walls.append(wall - CONVERGED_TIMEOUT)
            peaks.append(peak)
            cpus.append(cpu)
        return {"startup": median(walls), "startups": walls, "rss": max(peaks),
                "cpu": median(cpus), "cpus": cpus}


def engine_size(count: int, edits: int, repeats: int, deadline: Deadline) -> dict:
    """Cold converge and no-change pass (medians of ``repeats``), repair latency;
    the floor and puppet on the same files. Each repeat runs the empty graph
    right before, and its startup is subtracted from that repeat's runs (a
    paired difference: the load on a shared machine drifts)."""
    with Workspace(f"engine-{count}") as ws:
        runs = {key: [] for key in ("startup", "cold", "nochange", "cold_cpu", "nochange_cpu",
                                    "pass", "pass_cpu", "floor_cold", "floor_nochange",
                                    "floor_cold_cpu", "floor_nochange_cpu")}
        rss = 0
        # the floor is cheap: 3 samples at least, but not 300,000 files for --big's row
        for k in range(max(3, repeats) if count <= 10_000 else repeats):
            if k < repeats:
                # info: the first-pass line (the empty and no-change runs log a few lines;
                # the cold one would log each file it writes)
                wall, _, empty_cpu = run_engine(ws, f"empty-{k}", None, "info")
                startup = wall - CONVERGED_TIMEOUT
                runs["startup"].append(startup)
                directory = ws.path(f"out-{k}")
                graph = ws.path(f"graph-{k}.yaml")
                wanted = write_graph(graph, directory, count)
                for kind in ("cold", "nochange"):
                    level = "info" if kind == "nochange" else "warning"
                    wall, peak, cpu = run_engine(ws, f"{kind}-{k}", graph, level)
                    runs[kind].append(wall - CONVERGED_TIMEOUT - startup)
                    runs[f"{kind}_cpu"].append(cpu - empty_cpu)
                    rss = max(rss, peak)
                empty_pass, nochange_pass = (first_pass(ws.log(f"{kind}-{k}"))
                                             for kind in ("empty", "nochange"))
                if empty_pass and nochange_pass:
                    runs["pass"].append(nochange_pass[0] - empty_pass[0])
                    runs["pass_cpu"].append(nochange_pass[1] - empty_pass[1])
                if sorted(os.listdir(directory)) != sorted(os.path.basename(p) for p in wanted):
                    raise RuntimeError(f"the engine left {directory} with the wrong files")
            floor_dir = ws.path(f"floor-{k}")
            floor_wanted = {str(floor_dir / os.path.basename(p)): c for p, c in wanted.items()}
            for kind, func, arg in (("floor_cold", floor_write, (floor_dir, floor_wanted)),
                                    ("floor_nochange", floor_check, (floor_wanted,))):
                wall, cpu = func(*arg)
                runs[kind].append(wall)
                runs[f"{kind}_cpu"].append(cpu)
        result = {"resources": count + 1, "engine_rss": rss, "runs": runs,
                  **{key: median(values) for key, values in runs.items()}}
        result["repair"] = engine_repair(ws, graph, wanted, edits, deadline)
        result["floor_repair"] = floor_repair(ws, wanted, edits, deadline)
        result.update(puppet.figures(ws, wanted, max(2, repeats), deadline))
        return result


# --- figure 5: memory of a whole node -------------------------------------------------------------
def node_memory(count: int, deadline: Deadline) -> dict:
    """Peak RSS of supervisor, engine and etcd of a one-node ``mgmtd run``
    converging ``count`` files, and the same node with the empty graph."""
    out = {}
    with Workspace(f"memory-{count}") as ws:
        for label, n in (("empty", 0), ("graph", count)):
            graph = None
            if n:
                graph = ws.path("graph.yaml")
                write_graph(graph, ws.path("out"), n)
            node = ws.node(f"mem-{label}")
            t0 = time.monotonic()
            start_cluster([node], "--log-level", "warning", "--converged-timeout", str(CONVERGED_TIMEOUT),
                          ideal=1, graphs=[str(graph)] if graph else ())
            proc = node.proc
            supervisor = psutil.Process(proc.pid)

            def roles(supervisor=supervisor):
                found = {"supervisor": supervisor}
                for child in children_of(supervisor):
                    cmdline = cmdline_of(child)
                    if "engine" in cmdline[:5]:
                        found["engine"] = child
                    elif cmdline and os.path.basename(cmdline[0]) == "etcd":
                        found["etcd"] = child
                return found

            with RssSampler(roles, interval=0.02) as sampler:
                try:
                    code = proc.wait(timeout=max(1.0, deadline.left()))
                except subprocess.TimeoutExpired:
                    raise ScenarioTimeout(f"mgmtd run ({label}) did not converge in time") from None
            if code != 0:
                raise RuntimeError(f"mgmtd run ({label}) exited {code}: {node.log()[-2000:]}")
            out[label] = {**sampler.peaks, "seconds": time.monotonic() - t0 - CONVERGED_TIMEOUT}
    out["resources"] = count + 1
    return out
