"""The fleet's network: a bridge in a network namespace of its own (nothing is
added to this host's network), one veth link per machine, and addresses in a
private range that exists only inside it. The switch itself has the first
address, so the test can reach every machine from there (``wrap``)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time

from tests.system.namespaces import kill_process, start_tied

DEFAULT_SUBNET = "10.213.0.0/24"


class Switch:
    def __init__(self, subnet: str = DEFAULT_SUBNET) -> None:
        self.network = ipaddress.ip_network(subnet)
        self.prefix_length = self.network.prefixlen
        hosts = self.network.hosts()
        self.address = str(next(hosts))
        # a process holds the namespace: it goes away with it, whatever happens to us
        self.proc = start_tied(["unshare", "--net", "sleep", "infinity"], stdin=subprocess.DEVNULL)
        self._wait_for_own_namespace()
        self.wrap = ["nsenter", f"--net=/proc/{self.proc.pid}/ns/net", "--"]
        self._ip("link", "set", "lo", "up")
        self._ip("link", "add", "br0", "type", "bridge")
        self._ip("addr", "add", f"{self.address}/{self.prefix_length}", "dev", "br0")
        self._ip("link", "set", "br0", "up")

    def _wait_for_own_namespace(self, timeout: float = 30) -> None:
        # until unshare has made it, /proc/PID/ns/net is this host's: a bridge made
        # then would be on the host's own network
        ours = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + timeout
        while True:
            try:
                if os.readlink(f"/proc/{self.proc.pid}/ns/net") != ours:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                kill_process(self.proc)
                raise RuntimeError("the switch's network namespace did not come up")
            time.sleep(0.01)

    def address_of(self, index: int) -> str:
        """The address of machine ``index`` (1-based): .11, .12, ..."""
        return str(self.network.network_address + 10 + index)

    def plug(self, name: str, init_pid: int) -> None:
        """Links the network namespace of process ``init_pid`` to the bridge; the
        machine's side is called eth0. A machine's old link went with its
        namespace when it powered off."""
        port = f"p-{name}"[:15]
        self._ip("link", "del", port, check=False)
        self._ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", str(init_pid))
        self._ip("link", "set", port, "master", "br0")
        self._ip("link", "set", port, "up")

    def _ip(self, *args: str, check: bool = True) -> None:
        done = subprocess.run([*self.wrap, "ip", *args], capture_output=True, text=True, timeout=30)
        if check and done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def close(self) -> None:
        kill_process(self.proc)
