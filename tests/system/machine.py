"""One machine: systemd as PID 1 of fresh PID, mount, UTS, IPC, cgroup and
network namespaces, on a disk of its own.

Its root is an overlay: the image's layer (mgmtd installed) above this host's
/, with the machine's own directory on top, so whatever the machine writes
(/etc, /var/lib/mgmtd, its journal) stays in that directory and survives a
power-off. /tmp, /run and /dev are its own tmpfs before systemd starts:
systemd-tmpfiles empties /tmp at boot, and a shared /tmp would be this host's.
The boot script refuses to start systemd if it can still see the host's
canary file in /tmp."""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.harness import exe_name, write_atomically
from tests.system.image import BOOT_TARGET, Image
from tests.system.namespaces import (
    kill_process,
    own_cgroup2,
    pid_namespace,
    processes_in,
    remove_cgroup,
    start_tied,
)
from tests.system.switch import Switch

BOOT_SCRIPT = r"""
set -eu
root=$1 lower=$2 upper=$3 work=$4 canary=$5 address=$6
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$root"
# /dev: the few device nodes a system needs, not this host's devtmpfs (systemd
# would put its /dev/log there)
mount -t tmpfs -o mode=755,nosuid tmpfs "$root/dev"
for node in null zero full random urandom tty; do
    : > "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
ln -s /proc/self/fd "$root/dev/fd"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
# a cgroup2 tree whose root is the machine's own cgroup (the cgroup namespace's):
# systemd manages that, never this host's hierarchies
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$root/sys/fs/cgroup"
mount -t proc proc "$root/proc"
# kernel settings are this host's: read-only, as in any container
for knob in sys sysrq-trigger; do
    [ -e "$root/proc/$knob" ] || continue
    mount --bind "$root/proc/$knob" "$root/proc/$knob"
    mount -o remount,bind,ro "$root/proc/$knob"
done
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$root/run"
cd "$root"
mkdir -p .host
pivot_root . .host
cd /
umount -l /.host
rmdir /.host
if [ -e "$canary" ]; then
    echo "machine: this host's /tmp is visible ($canary): not booting" >&2
    exit 1
fi
# the harness links eth0 in once this namespace exists
tries=0
until ip link show eth0 >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 1200 ]; then echo "machine: no eth0 after 60 s" >&2; exit 1; fi
    sleep 0.05
done
ip link set lo up
ip addr add "$address" dev eth0
ip link set eth0 up
# without the powers that reach the host's kernel: modules (systemd loads some at
# boot), the clock, raw I/O
exec setpriv --bounding-set -sys_module,-sys_time,-sys_rawio -- \
    env container=mgmtd-fleet /lib/systemd/systemd --system --unit=""" + BOOT_TARGET + "\n"

BOOT_TIMEOUT = 150.0  # TimeoutStartSec of the unit (120 s) and some
POWEROFF_TIMEOUT = 90.0


class MachineError(Exception):
    pass


@dataclass
class Machine:
    """``name`` is its hostname; ``address`` its IPv4 address on the switch."""

    name: str
    address: str
    disk: Path
    image: Image
    switch: Switch
    canary: Path
    tag: str  # the fleet's: names the machine's cgroup on this host
    proc: subprocess.Popen | None = field(default=None, repr=False)
    init_pid: int | None = None
    namespaces: set[str] = field(default_factory=set)  # every PID namespace it ever had

    def __post_init__(self) -> None:
        self.cgroup = own_cgroup2() / f"mgmtd-fleet-{self.tag}-{self.name}"
        for part in ("upper", "work", "root"):
            (self.disk / part).mkdir(parents=True, exist_ok=True)
        etc = self.disk / "upper" / "etc"
        etc.mkdir(exist_ok=True)
        (etc / "hostname").write_text(self.name + "\n")
        (etc / "machine-id").write_text(secrets.token_hex(16) + "\n")

    # --- power --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def boot(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Boots and waits until systemd has finished starting up (and the units
        enabled here with it)."""
        if self.running:
            raise MachineError(f"{self.name} is already running")
        if not self.canary.exists():
            raise MachineError(f"{self.canary} is gone: something emptied this host's /tmp")
        lower = f"{self.image.layer}:/"
        self.cgroup.mkdir(exist_ok=True)
        with open(self.disk / "console.log", "ab") as console:
            self.proc = start_tied(
                ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private",
                 "--uts", "--ipc", "--cgroup", "--net", "sh", "-c", BOOT_SCRIPT, "boot",
                 str(self.disk / "root"), lower, str(self.disk / "upper"), str(self.disk / "work"),
                 str(self.canary), f"{self.address}/{self.switch.prefix_length}"],
                cgroup=self.cgroup, stdin=subprocess.DEVNULL, stdout=console, stderr=console)
        deadline = time.monotonic() + timeout
        self.init_pid = self._wait_for_init(deadline)
        self.namespaces.add(pid_namespace(self.init_pid) or "")
        try:
            self.switch.plug(self.name, self.init_pid)
        except RuntimeError as err:
            self.pull_plug()
            raise MachineError(f"{self.name}: no network ({err}):\n{self.console()}") from None
        state = self._wait_for_startup(deadline)
        if state not in ("running", "degraded"):
            raise MachineError(f"{self.name} did not boot: {state}\n{self.console()}")

    def _wait_for_init(self, deadline: float) -> int:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MachineError(f"{self.name} stopped while booting:\n{self.console()}")
            try:
                children = psutil.Process(self.proc.pid).children()
            except psutil.NoSuchProcess:
                children = []
            if children:
                return children[0].pid
            time.sleep(0.02)
        raise MachineError(f"{self.name}: unshare started no init in time")

    def _wait_for_startup(self, deadline: float) -> str:
        state = "no answer"
        while time.monotonic() < deadline:
            if not self.running:
                raise MachineError(f"{self.name} stopped while booting:\n{self.console()}")
            try:
                done = self.run("systemctl", "is-system-running", "--wait",
                                timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                break
            state = done.stdout.strip() or done.stderr.strip()
            if state in ("running", "degraded", "maintenance", "stopping"):
                return state
            time.sleep(0.1)  # systemd's bus is not up yet
        return state

    def poweroff(self, timeout: float = POWEROFF_TIMEOUT) -> None:
        """A clean shutdown (systemd stops every unit, in order); pulls the plug
        if it takes longer than ``timeout``."""
        if self.proc is None:
            return
        if self.init_pid and self.running and pid_namespace(self.init_pid) in self.namespaces:
            try:
                # what `systemctl poweroff` asks systemd for, without needing its bus
                psutil.Process(self.init_pid).send_signal(signal.SIGRTMIN + 4)
            except psutil.NoSuchProcess:
                pass
        if not self._wait_exit(timeout):
            self.pull_plug()
            raise MachineError(f"{self.name} did not power off within {timeout:.0f} s")
        self._settle()

    def _wait_exit(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def pull_plug(self) -> None:
        """Every process of the machine dies at once, as in a power cut."""
        if self.proc is None:
            return
        if self.init_pid and pid_namespace(self.init_pid) in self.namespaces:
            try:
                psutil.Process(self.init_pid).kill()  # PID 1: the kernel kills the rest
            except psutil.NoSuchProcess:
                pass
        kill_process(self.proc)
        self._settle()

    def _settle(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while processes_in(self.namespaces):
            if time.monotonic() > deadline:
                raise MachineError(f"{self.name}: processes outlived the machine: {processes_in(self.namespaces)}")
            time.sleep(0.05)
        remove_cgroup(self.cgroup)
        # the kernel reuses a dead namespace's number: never take another's processes for ours
        self.namespaces.clear()
        self.proc = None
        self.init_pid = None

    # --- inside ---------------------------------------------------------------------------
    def run(self, *cmd: str, timeout: float = 60, input: str | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
        """Runs a command inside the machine (all its namespaces, its root)."""
        if not self.running or self.init_pid is None:
            raise MachineError(f"{self.name} is not running")
        # setpriv: a command that times out dies with nsenter instead of running on inside
        done = subprocess.run(["nsenter", "--target", str(self.init_pid), "--all", "--",
                               "setpriv", "--pdeathsig", "KILL", "--", *cmd],
                              capture_output=True, text=True, timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise MachineError(f"{self.name}: {' '.join(cmd)} exited {done.returncode}:\n"
                               f"{done.stdout}{done.stderr}")
        return done

    def path(self, inside: str) -> Path:
        """Where a path of the machine is, from this host: through the running
        machine's root, or on its disk while it is off."""
        relative = inside.lstrip("/")
        if self.running and self.init_pid:
            return Path(f"/proc/{self.init_pid}/root") / relative
        return self.disk / "upper" / relative

    def write(self, inside: str, text: str) -> None:
        """Replaces a file of the machine (atomically, as an editor would)."""
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, text)

    def systemctl(self, *args: str, timeout: float = 150, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("systemctl", *args, timeout=timeout, check=check)

    def journal(self, *args: str, timeout: float = 60) -> str:
        return self.run("journalctl", "--no-pager", *args, timeout=timeout, check=True).stdout

    def main_pid(self, unit: str = "mgmtd") -> int:
        """The unit's main process as this host sees it (0: none)."""
        inner = int(self.systemctl("show", "-p", "MainPID", "--value", unit).stdout.strip() or 0)
        try:
            return self.host_pid(inner) if inner else 0
        except MachineError:
            return 0  # it exited in between

    def host_pid(self, inner: int) -> int:
        """This host's pid of the machine's process ``inner``."""
        for proc in processes_in(self.namespaces):
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                nspids = next(line for line in status.splitlines() if line.startswith("NSpid:"))
                if int(nspids.split()[-1]) == inner:
                    return proc.pid
            except (OSError, StopIteration):
                continue
        raise MachineError(f"{self.name}: no process {inner}")

    def processes(self, name: str) -> list[psutil.Process]:
        """The machine's live processes whose executable is ``name``."""
        return [proc for proc in processes_in(self.namespaces) if exe_name(proc) == name]

    def unit_processes(self, unit: str = "mgmtd") -> list[int]:
        """The machine's pids in the unit's cgroup (the supervisor, its engine and
        etcd): none once the unit has stopped."""
        procs = self.cgroup / "system.slice" / f"{unit}.service" / "cgroup.procs"
        try:
            return [int(pid) for pid in procs.read_text().split()]
        except FileNotFoundError:
            return []

    def set_link(self, up: bool) -> None:
        """Cuts (or restores) the machine's network, from inside, as `ip link set
        eth0 down` by an operator would."""
        self.run("ip", "link", "set", "eth0", "up" if up else "down", check=True)

    def console(self) -> str:
        try:
            return (self.disk / "console.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""
