"""When one ``lstat`` proves a file still holds the content we last found in it.

A file's *signature* is what its inode says about it: device, inode number,
size, mtime, ctime, mode, owner and group. The content of a file cannot
change without its ctime changing: every write, truncate, rename onto it and
utime sets ctime to the current time, and no system call sets ctime to a
chosen value. Nor can the file be replaced without the inode changing. So a
signature taken before a read that found the wanted content, and equal
later, means the content is still the wanted one - with two conditions:

* **Time stamps are coarse.** The kernel stamps ctime from a clock that
  advances once a tick (up to 10 ms), truncated to the file system's
  granularity (1 ns for ext4 or XFS, 1 s for ext3, 2 s for FAT). A write in
  the same tick as the one recorded could leave ctime equal (git calls such
  entries "racily clean"). A signature is trusted only when, at the moment
  before the ``lstat`` that took it, ctime was already older than one tick
  plus the granularity: any later write then stamps a greater ctime. The
  granularity is bounded from the stamp itself: a file system's granularity
  divides 10^9 ns (the kernel requires it) and every stamp it writes is a
  multiple of it, so it divides ``gcd(ctime_ns, 10^9)``.
* **The stamp must come from this machine's clock.** A network file system
  stamps with the server's clock, which may run behind ours; FUSE stamps
  whatever its daemon says. Only local file systems, read from
  /proc/self/mountinfo by device, are trusted; on any other the content is
  read and compared at every check.
"""

from __future__ import annotations

import math
import os
import struct
import threading

NS = 1_000_000_000
TICK_NS = 20_000_000   # two ticks at the slowest kernel clock (HZ=100): coarse-clock lag
# File systems whose inodes are stamped by this kernel from its own clock.
LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "jfs",
                               "reiserfs", "zfs", "bcachefs", "nilfs2", "ramfs"})

_SIGNATURE = struct.Struct("<QQqqqIII")
SIZE = _SIGNATURE.size


def signature(st: os.stat_result) -> bytes:
    """What must stay equal for a file's content to be unchanged, packed:
    one small bytes object a file, not a tuple of big ints."""
    return _SIGNATURE.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                           st.st_mode, st.st_uid, st.st_gid)


def settled(ctime_ns: int, before_ns: int) -> bool:
    """Whether a write after ``before_ns`` (our clock, read before the lstat
    that saw ``ctime_ns``) would stamp a greater ctime (see the docstring)."""
    granularity = math.gcd(ctime_ns % NS, NS) or NS
    return before_ns - ctime_ns > granularity + TICK_NS


class _LocalDevices:
    """st_dev -> whether the mount is a local file system, from mountinfo;
    read again when a device is not found (a mount made since)."""

    def __init__(self, mountinfo: str = "/proc/self/mountinfo") -> None:
        self.mountinfo = mountinfo
        self.local: dict[int, bool] = {}
        self.lock = threading.Lock()

    def __call__(self, dev: int) -> bool:
        found = self.local.get(dev)
        if found is None:
            with self.lock:
                self.local.update(self._read())
                found = self.local.setdefault(dev, False)
        return found

    def _read(self) -> dict[int, bool]:
        devices: dict[int, bool] = {}
        try:
            with open(self.mountinfo) as handle:
                lines = handle.read().splitlines()
        except OSError:
            return devices
        for line in lines:
            # ID PARENT MAJOR:MINOR ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            fields = line.split()
            try:
                major, minor = (int(n) for n in fields[2].split(":"))
                fstype = fields[fields.index("-") + 1]
            except (IndexError, ValueError):
                continue
            dev = os.makedev(major, minor)
            # one device mounted twice is local only if every mount of it says so
            devices[dev] = devices.get(dev, True) and fstype in LOCAL_FILESYSTEMS
        return devices


local_device = _LocalDevices()


def trusted(st: os.stat_result, before_ns: int) -> bool:
    """Whether ``st`` (taken after ``before_ns``) may stand for the content
    read after it, at later checks."""
    return settled(st.st_ctime_ns, before_ns) and local_device(st.st_dev)
