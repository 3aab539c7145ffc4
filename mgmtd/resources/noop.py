"""``noop``: manages nothing and is always in state; useful as an anchor for
edges (mgmt's noop)."""

from __future__ import annotations

from mgmtd.resources.base import Field, Resource


class NoopResource(Resource):
    kind = "noop"
    FIELDS = {
        "comment": Field((str,), None, doc="free text, for the reader of the graph"),
    }

    def check_apply(self, apply: bool) -> bool:
        if self.refresh:
            self.ctx.report("info", f"{self}: received a notification")
        return True
