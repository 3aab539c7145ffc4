"""Resource kinds, by the name a graph uses for them."""

from __future__ import annotations

from mgmtd.resources.base import Resource, shown
from mgmtd.resources.exec import ExecResource
from mgmtd.resources.file import FileResource
from mgmtd.resources.group import GroupResource
from mgmtd.resources.hostname import HostnameResource
from mgmtd.resources.kv import KVResource
from mgmtd.resources.msg import MsgResource
from mgmtd.resources.noop import NoopResource
from mgmtd.resources.pkg import PkgResource
from mgmtd.resources.svc import SvcResource
from mgmtd.resources.timer import TimerResource
from mgmtd.resources.user import UserResource

KINDS: dict[str, type[Resource]] = {
    cls.kind: cls
    for cls in (UserResource, GroupResource, SvcResource, HostnameResource,
                FileResource, ExecResource, NoopResource, MsgResource, TimerResource, KVResource,
                PkgResource)
}


# mgmt's kinds that mgmtd does not have (scripts/mgmt_inventory.py lists
# mgmt's; tests/unit/test_mgmt_compat.py keeps this true): a graph naming one
# is told so, rather than that the kind is unknown
MGMT_ONLY_KINDS: frozenset[str] = frozenset({
    "augeas", "aws:ec2", "bmc:firmware", "bmc:power", "consul:kv", "cron", "deploy:tar",
    "dhcp:host", "dhcp:range", "dhcp:server", "docker:container", "docker:image", "exit",
    "firewalld", "fwattr", "fwupd:device", "fwupd:remote", "fwupd:system", "gsettings", "gzip",
    "hetzner:vm", "http:client", "http:server", "http:server:file", "http:server:flag",
    "http:server:proxy", "http:server:ui", "http:server:ui:input", "json:edit", "line", "mount",
    "net", "nspawn", "password", "print", "remote", "schedule", "ssh:authorized_key", "sysctl",
    "tar", "tftp:file", "tftp:server", "value", "virt", "virt:builder", "virt:network",
    "virt:network:host", "virt:network:range",
})


def kind_names() -> str:
    return ", ".join(sorted(KINDS))


def unknown_kind(kind: object) -> str:
    """The error for a kind mgmtd does not have, saying so when mgmt has it."""
    if kind in MGMT_ONLY_KINDS:
        return (f"resource kind {kind!r} (mgmt's) is not supported by mgmtd "
                f"(mgmtd's kinds: {kind_names()})")
    return f"unknown resource kind {shown(kind)} (known: {kind_names()})"
