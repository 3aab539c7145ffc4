"""When one lstat stands for a file's content (mgmtd.resources.filesig)."""

from __future__ import annotations

import os
import time

from hypothesis import given
from hypothesis import strategies as st

from mgmtd.resources import filesig
from mgmtd.resources.filesig import NS, TICK_NS, _LocalDevices, settled, signature

NOW = 1_800_000_000 * NS + 123_456_789


def test_a_fine_stamp_is_settled_a_tick_later_not_before() -> None:
    ctime = NOW - 5_000_000_000 + 987_654_321   # ns granularity: gcd with 10^9 is tiny
    assert settled(ctime, ctime + TICK_NS + 1_000)
    assert not settled(ctime, ctime + TICK_NS // 2)


def test_a_whole_second_stamp_may_come_from_a_coarse_file_system() -> None:
    ctime = 1_800_000_000 * NS   # ext3 stamps whole seconds: a write a moment later gives the same
    assert not settled(ctime, ctime + NS // 2)
    assert settled(ctime, ctime + NS + TICK_NS + 1)


@given(granularity=st.sampled_from([1, 10, 100, 1_000, 10_000_000, 100_000_000, NS // 2, NS]),
       seconds=st.integers(1, 2_000_000_000), fraction=st.integers(0, NS - 1),
       later=st.integers(0, 3 * NS))
def test_a_later_write_stamps_a_different_ctime_when_settled(granularity, seconds, fraction,
                                                              later) -> None:
    """The property the shortcut rests on: the file system truncates stamps to
    its granularity (a divisor of 10^9) from a clock up to one tick behind
    ours; if the record was settled, any write after it gets another ctime."""
    ctime = (seconds * NS + fraction) // granularity * granularity
    before = ctime + later
    if not settled(ctime, before):
        return
    for lag in (0, TICK_NS // 2, TICK_NS):
        write_at = before + 1
        stamped = (write_at - lag) // granularity * granularity
        assert stamped != ctime


def test_signature_changes_with_any_write_or_attribute(tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"one")
    first = signature(os.lstat(path))
    assert signature(os.lstat(path)) == first
    stamp = os.lstat(path)
    time.sleep(0.01)
    with open(path, "r+b") as handle:   # same size, mtime put back: ctime still moves
        handle.write(b"two")
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert signature(os.lstat(path)) != first


def test_only_local_file_systems_are_trusted(tmp_path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "30 22 0:44 / /mnt/nfs rw - nfs4 server:/export rw,vers=4.2\n"
        "31 22 0:45 / /run rw,nosuid shared:5 master:1 - tmpfs tmpfs rw\n"
        "32 22 0:46 / /fuse rw - fuse.sshfs host: rw\n"
        "garbage line\n")
    local = _LocalDevices(str(mountinfo))
    assert local(os.makedev(254, 1)) and local(os.makedev(0, 45))
    assert not local(os.makedev(0, 44)) and not local(os.makedev(0, 46))
    assert not local(os.makedev(9, 9))   # unknown: read again, still unknown: untrusted


def test_this_machines_temp_directory_is_judged(tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    st_ = os.lstat(path)
    assert filesig.trusted(st_, st_.st_ctime_ns + 3 * NS) == filesig.local_device(st_.st_dev)
    assert not filesig.trusted(st_, st_.st_ctime_ns)
