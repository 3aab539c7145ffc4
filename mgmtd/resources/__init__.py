"""Resource kinds, by the name a graph uses for them."""

from __future__ import annotations

from mgmtd.resources.base import Resource
from mgmtd.resources.file import FileResource

KINDS: dict[str, type[Resource]] = {cls.kind: cls for cls in (FileResource,)}


def kind_names() -> str:
    return ", ".join(sorted(KINDS))
