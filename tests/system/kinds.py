"""A machine to try resource kinds that change the system (packages, services,
users, the hostname) through ``mgmtd run``, as on a real node, without
touching this host: the machine's root is its own overlay disk.

    def test_something(sandbox):
        done = sandbox.apply(GRAPH)                  # one run until converged
        assert done.returncode == 0, done.log
        agent = sandbox.start(GRAPH)                 # a running agent (a unit inside)
        sandbox.run("systemctl", "stop", "x")        # drift
        agent.wait_log("svc[x]: applied")

The fixture ``sandbox`` (tests/system/conftest.py) gives one machine per
test module: its tests share its state."""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.system.fleet import Fleet
from tests.system.machine import Machine

MGMTD = "/opt/mgmtd/bin/mgmtd"
GRAPHS = "/etc/mgmtd/kinds"
STATE = "/var/lib/mgmtd-kinds"
FIRST_PORT = 24000  # two per run (client, peer), on the machine's own loopback


@dataclass
class Applied:
    returncode: int
    log: str


class Sandbox:
    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.runs = itertools.count(1)
        self.agents: list[Agent] = []
        self.cluster_started = False

    def run(self, *cmd: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
        return self.machine.run(*cmd, check=check, timeout=timeout, input=input)

    def write(self, path: str, text: str) -> None:
        self.machine.write(path, text)

    def read(self, path: str) -> str:
        return self.machine.path(path).read_text()

    def _command(self, graph: str, flags: tuple[str, ...], server: bool = True) -> tuple[int, list[str]]:
        number = next(self.runs)
        path = f"{GRAPHS}/graph-{number}.yaml"
        self.write(path, graph)
        port = FIRST_PORT + 2 * number
        where = (["--client-urls", f"http://127.0.0.1:{port}", "--server-urls", f"http://127.0.0.1:{port + 1}"]
                 if server else ["--no-server", "--seeds", self._cluster()])
        return number, [MGMTD, "run", "--hostname", f"{self.machine.name}-{number}",
                        "--prefix", f"{STATE}/{number}", *where, *flags, "yaml", path]

    def _cluster(self) -> str:
        """The client URL of a one-node cluster running in the machine (started
        at the first call): one-shot runs join it as clients instead of each
        starting and stopping an etcd of its own (2 s each)."""
        url = f"http://127.0.0.1:{FIRST_PORT}"
        if not self.cluster_started:
            self.run("systemd-run", "--unit=mgmtd-kinds-cluster", "--service-type=notify",
                     "--property=KillMode=mixed", MGMTD, "run", "--hostname", f"{self.machine.name}-cluster",
                     "--prefix", f"{STATE}/cluster", "--client-urls", url,
                     "--server-urls", f"http://127.0.0.1:{FIRST_PORT + 1}", "empty", timeout=150)
            self.cluster_started = True
        return url

    def apply(self, graph: str, *flags: str, timeout: float = 180) -> Applied:
        """``mgmtd run --converged-timeout 1`` on the graph, inside, as a node of
        the machine's cluster (a client: ``--no-server``): it returns once every
        resource has been in state for a second (0), or settled with failures
        (1)."""
        _, command = self._command(graph, ("--converged-timeout", "1", *flags), server=False)
        done = self.run(*command, check=False, timeout=timeout)
        return Applied(done.returncode, done.stderr + done.stdout)

    def start(self, graph: str, *flags: str) -> Agent:
        """``mgmtd run`` on the graph as a unit inside the machine, until stopped."""
        number, command = self._command(graph, flags)
        unit = f"mgmtd-kinds-{number}"
        self.run("systemd-run", f"--unit={unit}", "--service-type=notify", "--property=KillMode=mixed",
                 "--property=TimeoutStopSec=60", *command, timeout=150)
        agent = Agent(self, unit, command[-1])
        self.agents.append(agent)
        return agent


class Agent:
    def __init__(self, sandbox: Sandbox, unit: str, graph_path: str) -> None:
        self.sandbox = sandbox
        self.unit = unit
        self.graph_path = graph_path

    def log(self) -> str:
        return self.sandbox.machine.journal("-u", self.unit, "-o", "cat")

    def wait_log(self, text: str, timeout: float = 60, after: int = 0) -> str:
        """Waits for a line of the agent's log containing ``text`` (past the first
        ``after`` characters of the log); returns the log."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if text in log[after:]:
                return log
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.unit}: no {text!r} in its log within {timeout:.0f} s:\n{log}")
            time.sleep(0.1)

    def swap(self, graph: str) -> None:
        """A new graph: the file rewritten, then a reload (SIGHUP)."""
        self.sandbox.write(self.graph_path, graph)
        self.sandbox.run("systemctl", "kill", "--kill-whom=main", "--signal=HUP", self.unit)

    def active(self) -> bool:
        done = self.sandbox.run("systemctl", "is-active", self.unit, check=False)
        return done.stdout.strip() == "active"

    def stop(self) -> str:
        self.sandbox.run("systemctl", "stop", self.unit, check=False, timeout=90)
        return self.log()


@pytest.fixture(scope="module")
def sandbox(image, tmp_path_factory) -> Iterator[Sandbox]:
    """One booted machine for the test module (mgmtd installed, not started)."""
    fleet = Fleet(tmp_path_factory.mktemp("sandbox"), image, 1)
    try:
        fleet[0].boot()
        box = Sandbox(fleet[0])
        yield box
        for agent in box.agents:
            agent.stop()
    finally:
        fleet.close()
