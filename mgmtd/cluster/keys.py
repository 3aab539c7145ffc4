"""The etcd key layout (DESIGN.md section 3). Every key lives under a namespace."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_NAMESPACE = "/mgmtd"


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
    def join_requests(self) -> str:
        return f"{self.namespace}/join/"

    def join_request(self, host: str) -> str:
        return f"{self.join_requests}{host}"

    @property
    def kv(self) -> str:
        return f"{self.namespace}/kv/"

    def kv_key(self, key: str) -> str:
        return f"{self.kv}{key}"
