"""Which backups to keep: ``--backup-keep last=4,hourly=24,daily=7,weekly=0``.

The rules are restic's and borg's ``--keep-*``: walking the backups newest
first, ``last=N`` keeps the N newest; ``hourly=N`` keeps the newest backup of
each of the N most recent hours that have a backup (``daily``, ``weekly``
likewise, in UTC). A backup kept by any rule stays. Counting hours that *have*
a backup, not hours of the clock, means a cluster that was down for a week
still keeps its last backups. Pure: the supervisor deletes what
``to_delete`` returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RULES = ("last", "hourly", "daily", "weekly")
_BUCKET = {"hourly": 3600, "daily": 86400, "weekly": 7 * 86400}
# 1970-01-01 was a Thursday: weeks start on Monday, 4 days later
_WEEK_OFFSET = 4 * 86400
DEFAULT_KEEP = "last=4,hourly=24,daily=7"


@dataclass(frozen=True)
class Policy:
    last: int = 4
    hourly: int = 24
    daily: int = 7
    weekly: int = 0

    def describe(self) -> str:
        return ",".join(f"{rule}={getattr(self, rule)}" for rule in RULES if getattr(self, rule))


def parse_policy(text: str) -> Policy:
    """``last=4,hourly=24,daily=7`` (rules left out keep nothing, except
    ``last``: at least 1, the newest backup is never deleted). ValueError: one line."""
    counts = {**dict.fromkeys(RULES, 0), "last": 1}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        rule, sep, number = part.partition("=")
        rule = rule.strip()
        if not sep or rule not in RULES:
            raise ValueError(f"{part!r}: expected RULE=N with RULE one of {', '.join(RULES)}")
        try:
            counts[rule] = int(number)
        except ValueError:
            raise ValueError(f"{part!r}: N must be a whole number") from None
        if counts[rule] < 0:
            raise ValueError(f"{part!r}: N must not be negative")
    if counts["last"] < 1:
        raise ValueError("last=N must be at least 1: the newest backup is always kept")
    return Policy(**counts)


def _bucket(rule: str, when: float) -> int:
    if rule == "weekly":
        return int((when - _WEEK_OFFSET) // _BUCKET[rule])
    return int(when // _BUCKET[rule])


def to_keep(backups: Sequence[tuple[str, float]], policy: Policy) -> set[str]:
    """The ids of ``(id, time)`` backups that ``policy`` keeps."""
    newest_first = sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)
    keep = {backup_id for backup_id, _ in newest_first[:policy.last]}
    for rule in ("hourly", "daily", "weekly"):
        wanted = getattr(policy, rule)
        seen: set[int] = set()
        for backup_id, when in newest_first:
            if len(seen) >= wanted:
                break
            bucket = _bucket(rule, when)
            if bucket not in seen:
                seen.add(bucket)
                keep.add(backup_id)
    return keep


def to_delete(backups: Sequence[tuple[str, float]], policy: Policy, now: float | None = None) -> set[str]:
    """The ids of ``(id, time)`` backups that ``policy`` lets go. Backups dated
    after ``now`` (taken while the clock was ahead) are kept and left out of
    the count: else, once the clock is set back, they would stay "the newest"
    and every new backup would be deleted as soon as it is taken."""
    ahead = {b for b, when in backups if now is not None and when > now}
    keep = to_keep([b for b in backups if b[0] not in ahead], policy) | ahead
    return {backup_id for backup_id, _ in backups if backup_id not in keep}
