"""The cluster-id / generation guard: old members never come back into, or
beside, a restored cluster.

A restore makes a new cluster (new cluster id) and raises the generation in
``{ns}/cluster/generation`` (missing: 0). Every serving node remembers its
cluster's id and generation in ``node.json`` (its ``Mark``). Before it starts
etcd on member data it finds, and every few seconds while it serves, it looks
at the other client URLs it knows (``Sighting``s). A cluster with another id
and a *higher* generation is the restored one: this node's member data
belongs to a cluster that was given up. It is moved to ``{prefix}/stale/``
(never deleted: it may hold the only copy of writes after the backup) and the
node goes on as a client of the new cluster, volunteering like any other.

Why this stops a split: an old voter that was cut off when the restore
happened sees, when it returns, the restored member at its old client URL (it
is in the old member list) answering with the new id and the higher
generation, and stands down before (at start) or right after (while running)
it could form a quorum with other old voters; those find the same and stand
down too. The same generation with another id (two independent restores, or
two clusters bootstrapped apart) is never resolved by guessing: it is
reported."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Mark:
    cluster_id: int       # 0: not known yet (a node that never served since the guard existed)
    generation: int


@dataclass(frozen=True)
class Sighting:
    url: str
    cluster_id: int
    generation: int


def parse_generation(raw: bytes | str | None) -> int:
    """``{ns}/cluster/generation``; 0 when missing or not a whole number."""
    if raw is None:
        return 0
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else 0


def newer_cluster(local: Mark, seen: Iterable[Sighting]) -> Sighting | None:
    """The restored cluster this node's member data is superseded by, if any:
    another cluster id with a higher generation (the highest, if several)."""
    newer = [s for s in seen if s.cluster_id != local.cluster_id and s.generation > local.generation]
    return max(newer, key=lambda s: (s.generation, s.url), default=None)


def rivals(local: Mark, seen: Iterable[Sighting]) -> list[Sighting]:
    """Other clusters of the same generation: nothing is done about them, they are reported."""
    return [s for s in seen if local.cluster_id and s.cluster_id != local.cluster_id
            and s.generation == local.generation]
