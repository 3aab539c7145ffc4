"""Running under systemd: sd_notify messages, journald priorities, restart
after SIGKILL."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time

from tests.harness import (
    environ_of,
    etcd_processes_under,
    etcdctl,
    gone,
    one_file_graph,
    wait_for,
)

WATCHDOG_USEC = 1_000_000


class NotifyListener:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopping.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self, prefix: str) -> list[tuple[float, str]]:
        return [(t, m) for t, m in list(self.messages) if m.startswith(prefix)]

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=2)
        self.sock.close()


def test_notify_ready_status_watchdog_reload_stopping(make_node, workdir):
    listener = NotifyListener(str(workdir / "notify.sock"))
    try:
        graph = one_file_graph(workdir / "g.yaml", workdir / "f", "x")
        node = make_node()
        started = time.monotonic()
        node.start(["yaml", graph],
                   env={"NOTIFY_SOCKET": str(workdir / "notify.sock"), "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        wait_for(lambda: listener.lines("READY=1"), 60, "READY=1")
        # READY only once etcd answers and the graph is loaded
        assert etcdctl(node.client_url, "endpoint", "health").returncode == 0
        assert (workdir / "f").read_text() == "x"
        wait_for(lambda: any("engine converged" in m for _, m in listener.lines("STATUS=")), 30,
                 "a STATUS= line saying the engine converged")
        statuses = [m for _, m in listener.lines("STATUS=")]
        assert all("\n" not in m for m in statuses)
        assert any("server, leader; 1/5 voters" in m for m in statuses), statuses

        # pings keep coming...
        before = len(listener.lines("WATCHDOG=1"))
        wait_for(lambda: len(listener.lines("WATCHDOG=1")) >= before + 4, 20, "four more watchdog pings")
        # ...never two within half of WATCHDOG_USEC: since the start, at most one per
        # half period (a loaded machine can only make them fewer, never more)
        pings = len(listener.lines("WATCHDOG=1"))
        half = WATCHDOG_USEC / 2 / 1e6
        assert pings <= (time.monotonic() - started) / half + 1, pings

        # etcd and the engine must not talk to systemd themselves
        environs = [environ_of(p) for p in etcd_processes_under(str(workdir))]
        assert any(env is not None for env in environs), "no etcd to look at"
        for env in filter(None, environs):
            assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env

        node.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: listener.lines("RELOADING=1"), 10, "RELOADING=1")
        wait_for(lambda: len(listener.lines("READY=1")) >= 2, 10, "READY=1 after the reload")
        assert node.stop() == 0
        assert listener.lines("STOPPING=1")
    finally:
        listener.close()


def test_no_notify_socket_sends_nothing_and_runs(make_node, workdir):
    node = make_node()
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    proc = subprocess.Popen(node.command(["empty"], "--converged-timeout", "1"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_journal_stream_gets_priority_prefixes(make_node, workdir):
    graph = workdir / "g.yaml"
    graph.write_text(f'graph: g\nresources:\n  file:\n  - name: ok\n    path: "{workdir}/ok"\n'
                     f'    content: "x"\n  - name: orphan\n    path: "{workdir}/missing/f"\n'
                     '    content: "x"\n')
    node = make_node()
    log_path = workdir / "journal.log"
    with open(log_path, "wb") as out:
        st = os.fstat(out.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        proc = subprocess.run(node.command(["yaml", str(graph)], "--converged-timeout", "1"),
                              stdout=out, stderr=out, env=env, timeout=60)
    assert proc.returncode == 1
    lines = log_path.read_text().splitlines()
    assert lines and all(re.match(r"<[0-7]>", line) for line in lines), lines[:5]
    assert any(line.startswith("<6>") and "engine: file[ok]: applied" in line for line in lines)
    assert any(line.startswith("<3>") and "parent directory" in line for line in lines)
    # no timestamps: the journal has its own
    assert not any(re.match(r"<\d>\d{4}-\d\d-\d\d", line) for line in lines)


def test_sigkill_of_supervisor_then_restart_leaves_one_etcd(make_node, workdir):
    node = make_node()
    node.start(["empty"])
    wait_for(lambda: etcdctl(node.client_url, "put", "/k", "v").returncode == 0, 60, "etcd up")
    old = etcd_processes_under(str(workdir))
    assert len(old) == 1
    node.proc.kill()
    node.proc.wait(timeout=10)
    # the old etcd outlives its supervisor (as after a crash under systemd with KillMode=mixed)
    assert not gone(old[0])
    node.start(["empty"])

    def new_etcd():
        return [p for p in etcd_processes_under(str(workdir)) if p.pid != old[0].pid and not gone(p)]

    wait_for(new_etcd, 60, "a new etcd in place of the leftover")
    wait_for(lambda: etcdctl(node.client_url, "get", "/k", "--print-value-only").stdout.strip() == "v",
             60, "the node back with its data")
    running = [p for p in etcd_processes_under(str(workdir)) if not gone(p)]
    assert len(running) == 1 and running[0].pid != old[0].pid
    assert "stopping leftover etcd" in node.log()
    assert node.stop() == 0
