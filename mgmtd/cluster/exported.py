"""The export record and its wire format: the one place that writes and reads
``{ns}/exported/{host}/{kind}/{name}`` (DESIGN.md section 3).

The value is a JSON object ``{"host", "kind", "name", "params", "meta",
"export"}``; ``export`` lists the hosts it is meant for (``"*"``: every host;
a record without it, written before it existed, means ``["*"]``).
The engine of ``host`` writes it; every other engine collects it and
``mgmtctl exported`` lists it, so whatever is under the key is untrusted
input: a value that is not such an object, or that names another host or
kind than its key, is no export at all (None), never a crash."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mgmtd.cluster.keys import Keys, json_object
from mgmtd.resources.base import EXPORT_ALL, EXPORTED_META, Resource, export_problem

ExportKey = tuple[str, str, str]   # (exporting host, kind, name)


@dataclass(frozen=True)
class Export:
    host: str
    kind: str
    name: str
    params: dict[str, Any]
    meta: dict[str, Any]
    to: tuple[str, ...] = (EXPORT_ALL,)   # meta.export: the hosts it is meant for

    @property
    def key(self) -> ExportKey:
        return (self.host, self.kind, self.name)


def export_of(res: Resource, host: str) -> Export:
    """What ``host`` exports of a resource of its graph: the parameters it
    sets and the meta parameters that take effect."""
    params = {k: v for k, v in res.params.items() if v is not None}
    meta = {k: getattr(res.meta, k) for k in EXPORTED_META}
    return Export(host, res.kind, res.name, params, meta, res.meta.export or (EXPORT_ALL,))


def encode(export: Export) -> str:
    """The value stored under the export's key. Deterministic (sorted keys),
    so an unchanged export is byte-for-byte the same and never rewritten."""
    return json.dumps({"host": export.host, "kind": export.kind, "name": export.name,
                       "params": export.params, "meta": export.meta, "export": list(export.to)},
                      sort_keys=True)


def export_value(res: Resource, host: str) -> str:
    return encode(export_of(res, host))


def parse_export(key: str, value: bytes | str, keys: Keys) -> Export | None:
    """An export from its etcd key and JSON value; None when malformed (bad or
    too deeply nested JSON, not an object, params or meta not objects) or
    forged (host or kind differ from the key's)."""
    if not key.startswith(keys.exported):
        return None
    parts = key.removeprefix(keys.exported).split("/", 2)
    if len(parts) != 3:
        return None
    host, kind, name = parts
    raw = json_object(value)
    if raw is None:
        return None
    if raw.get("host") != host or raw.get("kind") != kind:
        return None  # an export must say who made it, and match the key it sits under
    params = raw.get("params")
    meta = raw.get("meta", {})
    to = raw.get("export", [EXPORT_ALL])
    if not isinstance(params, dict) or not isinstance(meta, dict):
        return None
    if not isinstance(to, list) or not to or export_problem(to):
        return None
    return Export(host, kind, name, params, meta, tuple(to))


def subject_of(export: Export) -> str:
    """What a collect pattern is matched against: a file's path, any other
    kind's name. A path that is not a string (the exporter's JSON is
    untrusted) matches no pattern; validating the resource reports it."""
    if export.kind == "file":
        path = export.params.get("path")
        return path if isinstance(path, str) else ""
    return export.name
