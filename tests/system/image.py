"""An installed mgmtd, built once by the project's own ``make install-service``
and shared read-only by every machine.

The install runs in a private mount namespace whose ``/etc``, ``/opt`` and
``/usr/local`` are overlays: what it writes (the venv in /opt/mgmtd, the unit,
/etc/default/mgmtd, /etc/mgmtd/graph.yaml, /usr/local/bin/mgmtctl) lands in the
image's layer, not on this host. Machines see the layer above this host's own
files. The layer also makes the machines small and harmless: units that touch
the kernel or the host are masked, and the host's own enabled units are hidden,
so a machine boots basic.target and whatever was enabled inside it.

The layer lives on a tmpfs (/dev/shm): overlayfs refuses a lower layer that is
itself inside another lower layer (this host's /)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INSTALL_SCRIPT = r"""
set -eu
layer=$1 work=$2 source=$3
mount -t tmpfs tmpfs /run   # no systemctl of the installer reaches this host's systemd
for dir in etc opt usr/local; do
    mkdir -p "$layer/$dir" "$work/$dir"
    mount -t overlay overlay -o "lowerdir=/$dir,upperdir=$layer/$dir,workdir=$work/$dir" "/$dir"
done
cd "$source"
exec make --no-print-directory install-service
"""

# Units that would reach out of a machine (kernel settings, modules, the clock,
# devices, binfmt) or only slow its boot down; masked in every machine.
MASKED = (
    "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount", "proc-sys-fs-binfmt_misc.mount",
    "systemd-sysctl.service", "systemd-modules-load.service", "kmod-static-nodes.service",
    "systemd-remount-fs.service", "systemd-timesyncd.service", "systemd-udevd.service",
    "systemd-udev-trigger.service", "systemd-udev-settle.service", "systemd-hwdb-update.service",
    "systemd-tmpfiles-setup.service", "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.timer", "systemd-random-seed.service", "systemd-pstore.service",
    "systemd-update-utmp.service", "systemd-update-utmp-runlevel.service", "systemd-firstboot.service",
    "systemd-repart.service", "ldconfig.service", "systemd-journal-catalog-update.service",
    "getty.target", "console-getty.service", "timers.target", "e2scrub_reap.service",
    "etcd.service", "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount", "dev-hugepages.mount", "dev-mqueue.mount",
)
# The host's own units and enablements in /etc/systemd/system (its etcd, a database,
# network-online.target's wants...) are not the machines': that directory is opaque
# in the layer, so a machine sees only the unit installed there and `systemctl
# enable` inside means what it says.
OPAQUE = ("trusted.overlay.opaque", b"y")
BOOT_TARGET = "multi-user.target"


class ImageError(Exception):
    pass


@dataclass(frozen=True)
class Image:
    """The layer every machine sees above this host's /."""

    layer: Path
    version: str

    @property
    def venv(self) -> Path:
        return self.layer / "opt" / "mgmtd"


SCRATCH = Path("/dev/shm")
PREFIX = "mgmtd-fleet-image-"


def remove_stale(scratch: Path = SCRATCH) -> None:
    """Removes images whose builder process is gone (a run that was killed)."""
    for directory in scratch.glob(f"{PREFIX}*"):
        try:
            owner = int(directory.name.removeprefix(PREFIX).split("-")[0])
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(directory, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def build(source: Path = ROOT, scratch: Path = SCRATCH, timeout: float = 600) -> Image:
    """Runs ``make install-service`` from ``source`` into a new layer and readies
    it for machines. ``remove(image)`` when done."""
    if not shutil.which("etcd"):
        # install-service would apt-get it onto this host with /etc in the layer
        raise ImageError("etcd is not installed here: run scripts/ensure-etcd (make install) first")
    remove_stale(scratch)
    directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=scratch))
    try:
        layer = directory / "layer"
        _install(layer, directory / "work", source, timeout)
        units = layer / "etc" / "systemd" / "system"
        os.setxattr(units, *OPAQUE)
        for unit in MASKED:
            (units / unit).unlink(missing_ok=True)
            (units / unit).symlink_to("/dev/null")
        # the scripts' #! names /opt/mgmtd, which exists only inside machines
        version = subprocess.run([str(layer / "opt/mgmtd/bin/python"), "-I", "-c",
                                  "import mgmtd; print(mgmtd.__version__)"], capture_output=True,
                                 text=True, timeout=60, check=True, cwd="/").stdout.strip()
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return Image(layer, version)


def _install(layer: Path, work: Path, source: Path, timeout: float) -> None:
    layer.mkdir()
    work.mkdir()
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", INSTALL_SCRIPT,
                             "install", str(layer), str(work), str(source)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)  # make and pip too, not only unshare
        proc.wait()
        raise
    if proc.returncode != 0:
        raise ImageError(f"make install-service failed ({proc.returncode}):\n{output}")
    shutil.rmtree(work)  # overlayfs' scratch space, root-only and not needed again


def remove(image: Image) -> None:
    shutil.rmtree(image.layer.parent, ignore_errors=True)


def source_at_version(destination: Path, version: str, source: Path = ROOT) -> Path:
    """A copy of the source tree that calls itself ``version``: the "newer build"
    of a rolling upgrade."""
    shutil.copytree(source, destination, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".run", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
        ".hypothesis", "build", "results"))
    init = destination / "mgmtd" / "__init__.py"
    text, count = re.subn(r'^__version__ = ".*"$', f'__version__ = "{version}"', init.read_text(),
                          flags=re.M)
    if count != 1:
        raise ImageError(f"no __version__ line in {init}")
    init.write_text(text)
    return destination
