"""The etcd key layout (DESIGN.md section 3). Every key lives under a namespace."""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass

DEFAULT_NAMESPACE = "/mgmtd"

# etcd advises at most 7 voters (every write waits for a majority of them); 9
# leaves room, and a typo such as 30 or 3000 is refused rather than followed by
# turning every node into a voter
MIN_IDEAL_SIZE = 1
MAX_IDEAL_SIZE = 9


def json_object(raw: bytes | str | None) -> dict | None:
    """A key's JSON object, or None when it is missing or not one (bad JSON,
    another type, nested too deep to parse): bad data is never a crash."""
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


@dataclass(frozen=True)
class Keys:
    namespace: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        if not self.namespace.startswith("/") or self.namespace.endswith("/"):
            raise ValueError(f"namespace must start with '/' and not end with it: {self.namespace!r}")

    @property
    def ideal_size(self) -> str:
        return f"{self.namespace}/cluster/ideal-size"

    @property
    def leader(self) -> str:
        return f"{self.namespace}/cluster/leader"

    @property
    def generation(self) -> str:
        """Raised by every restore: old members see a newer cluster (cluster/generation.py)."""
        return f"{self.namespace}/cluster/generation"

    @property
    def backup_request(self) -> str:
        """``mgmtctl backup now`` asks the leader here."""
        return f"{self.namespace}/cluster/backup-request"

    @property
    def backups(self) -> str:
        return f"{self.namespace}/backups/"

    def backup(self, backup_id: str) -> str:
        return f"{self.backups}{backup_id}"

    @property
    def hosts(self) -> str:
        return f"{self.namespace}/hosts/"

    def host(self, host: str) -> str:
        return f"{self.hosts}{host}"

    @property
    def volunteers(self) -> str:
        return f"{self.namespace}/volunteers/"

    def volunteer(self, host: str) -> str:
        return f"{self.volunteers}{host}"

    @property
    def nominated(self) -> str:
        return f"{self.namespace}/nominated/"

    def nomination(self, host: str) -> str:
        return f"{self.nominated}{host}"

    @property
    def exported(self) -> str:
        return f"{self.namespace}/exported/"

    def exports_of(self, host: str) -> str:
        return f"{self.exported}{host}/"

    def export(self, host: str, kind: str, name: str) -> str:
        return f"{self.exported}{host}/{kind}/{name}"

    @property
    def graphs(self) -> str:
        return f"{self.namespace}/graph/"

    def graph(self, host: str) -> str:
        """The host's running graph (value: mgmtd.cluster.graphview), on its engine's lease."""
        return f"{self.graphs}{host}"

    @property
    def join_requests(self) -> str:
        return f"{self.namespace}/join/"

    def join_request(self, host: str) -> str:
        return f"{self.join_requests}{host}"

    @property
    def kv(self) -> str:
        return f"{self.namespace}/kv/"

    def kv_key(self, key: str) -> str:
        return f"{self.kv}{key}"


class IdealSizeProblem(enum.Enum):
    MISSING = "missing"
    NOT_TEXT = "not text"
    NOT_A_WHOLE_NUMBER = "not a whole number"
    OUT_OF_RANGE = "out of range"


@dataclass(frozen=True)
class IdealSize:
    """What ``{ns}/cluster/ideal-size`` holds: a size, or why it holds none."""

    size: int | None
    problem: IdealSizeProblem | None = None
    shown: str = ""     # the value as people should see it: quoted, escaped, shortened

    def describe(self) -> str:
        """What is wrong, to follow the key's name ("" when nothing is)."""
        bounds = f"{MIN_IDEAL_SIZE} to {MAX_IDEAL_SIZE}"
        if self.problem is IdealSizeProblem.MISSING:
            return "is missing"
        if self.problem is IdealSizeProblem.NOT_TEXT:
            return f"holds {self.shown}, not text"
        if self.problem is IdealSizeProblem.NOT_A_WHOLE_NUMBER:
            return f"holds {self.shown}, not a whole number from {bounds}"
        if self.problem is IdealSizeProblem.OUT_OF_RANGE:
            return f"holds {self.shown}, outside {bounds}"
        return ""


_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")   # ASCII digits only: int() takes "3_0" and "３"


def _shown(value: str | bytes) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "...'"


def parse_ideal_size(raw: bytes | str | None) -> IdealSize:
    """The one reading of the ideal size, for the leader, ``mgmtctl status`` and
    ``mgmtctl set`` alike. Surrounding whitespace is allowed (``echo 3 | etcdctl
    put`` stores a newline); anything else that is not a whole number from
    MIN_IDEAL_SIZE to MAX_IDEAL_SIZE gives no size, and the reason."""
    if raw is None:
        return IdealSize(None, IdealSizeProblem.MISSING)
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return IdealSize(None, IdealSizeProblem.NOT_TEXT, _shown(raw))
    else:
        text = raw
    stripped = text.strip(" \t\r\n")
    if not _WHOLE_NUMBER.fullmatch(stripped):
        return IdealSize(None, IdealSizeProblem.NOT_A_WHOLE_NUMBER, _shown(text))
    digits = stripped.lstrip("+-").lstrip("0") or "0"
    # a long number is out of range without asking int() (which refuses > 4300 digits)
    size = int(digits) if len(digits) <= len(str(MAX_IDEAL_SIZE)) else None
    if stripped.startswith("-") or size is None or not MIN_IDEAL_SIZE <= size <= MAX_IDEAL_SIZE:
        return IdealSize(None, IdealSizeProblem.OUT_OF_RANGE, _shown(stripped))
    return IdealSize(size)
