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
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INSTALL_SCRIPT = r"""
set -eu
layer=$1 work=$2 source=$3
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
# The host's own enabled units (its etcd, a database...) are not the machines': these
# directories start empty in a machine, so `systemctl enable` there means what it says.
HIDDEN_WANTS = ("multi-user.target.wants", "sysinit.target.wants", "timers.target.wants",
                "getty.target.wants", "sockets.target.wants")
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
    remove_stale(scratch)
    directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=scratch))
    layer, work = directory / "layer", directory / "work"
    layer.mkdir()
    work.mkdir()
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", INSTALL_SCRIPT, "install",
         str(layer), str(work), str(source)],
        capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise ImageError(f"make install-service failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    shutil.rmtree(work)  # overlayfs' scratch space, root-only and not needed again
    units = layer / "etc" / "systemd" / "system"
    for unit in MASKED:
        (units / unit).unlink(missing_ok=True)
        (units / unit).symlink_to("/dev/null")
    for wants in HIDDEN_WANTS:
        (units / wants).mkdir(exist_ok=True)
        os.setxattr(units / wants, *OPAQUE)
    # the scripts' #! names /opt/mgmtd, which exists only inside machines
    version = subprocess.run([str(layer / "opt/mgmtd/bin/python"), "-I", "-c",
                              "import mgmtd; print(mgmtd.__version__)"],
                             capture_output=True, text=True, timeout=60, check=True, cwd="/").stdout.strip()
    return Image(layer, version)


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
