"""What ``mgmtd run`` is told: one node's settings, straight from its flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from mgmtd.cluster.retention import Policy
from mgmtd.tls import TLSFiles


@dataclass
class NodeConfig:
    hostname: str
    prefix: str
    client_urls: tuple[str, ...] = ("http://127.0.0.1:2379",)
    server_urls: tuple[str, ...] = ("http://127.0.0.1:2380",)
    advertise_client_urls: tuple[str, ...] = ()
    advertise_server_urls: tuple[str, ...] = ()
    seeds: tuple[str, ...] = ()
    no_server: bool = False
    namespace: str = "/mgmtd"
    graph_file: str | None = None
    converged_timeout: float | None = None   # exit once converged this long
    converged_after: float | None = None     # --converger-timeout without --converged-exit
    converger_status_file: str | None = None
    max_runtime: float = 0.0                 # exit (status 1) after this long; 0: never
    no_autoedges: bool = False
    no_autogroup: bool = False
    no_watch: bool = False
    sema: int = -1                            # --sema N, passed to the engine
    graphviz: str | None = None               # --graphviz FILE (absolute)
    graphviz_filter: str | None = None
    noop: bool = False
    etcd_binary: str = "etcd"
    log_level: str = "info"
    ideal_cluster_size: int | None = None     # None: keep what the cluster has (5 when new)
    grace_period: float = 10.0
    learner_deadline: float = 30.0
    etcd_start_timeout: float = 30.0
    engine_args: list[str] = field(default_factory=list)
    tls: TLSFiles | None = None
    prometheus_listen: tuple[str, int] | None = None   # --prometheus: where /metrics listens
    prometheus_insecure: bool = False                  # with TLS: plain http (loopback only)
    backup_dir: str | None = None             # None: {prefix}/backups
    backup_interval: float = 900.0            # seconds between scheduled backups; 0: none
    backup_keep: Policy = field(default_factory=Policy)

    @property
    def advertised_clients(self) -> tuple[str, ...]:
        return self.advertise_client_urls or self.client_urls

    @property
    def advertised_peers(self) -> tuple[str, ...]:
        return self.advertise_server_urls or self.server_urls
