"""Resource kinds, by the name a graph uses for them."""

from __future__ import annotations

from mgmtd.resources.base import Resource
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


def kind_names() -> str:
    return ", ".join(sorted(KINDS))
