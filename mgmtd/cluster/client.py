"""Connecting to etcd with python3-etcd3 (import ``etcd3``)."""

from __future__ import annotations

import threading
import types
import urllib.parse
from collections.abc import Sequence

import etcd3
import etcd3.watch

from mgmtd.tls import TLSFiles, grpc_credentials

# python3-etcd3 0.13.0's watcher calls six.itervalues without importing six: when a
# watch stream breaks its thread dies and no callback hears of it
if not hasattr(etcd3.watch, "six"):
    etcd3.watch.six = types.SimpleNamespace(itervalues=lambda d: iter(d.values()))


def parse_endpoint(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
    if not parsed.hostname:
        raise ValueError(f"not an etcd client URL: {url!r}")
    return parsed.hostname, parsed.port or 2379


def connect(endpoints: Sequence[str], timeout: float = 5.0, *,
            tls: TLSFiles | None) -> etcd3.MultiEndpointEtcd3Client:
    """A client that fails over between the given client URLs, with mutual TLS
    when given the files (None: plain http). Required, so that no caller
    falls back to plain http by forgetting them."""
    if not endpoints:
        raise ValueError("no etcd endpoints")
    eps = []
    creds = grpc_credentials(tls)
    for url in endpoints:
        host, port = parse_endpoint(url)
        eps.append(etcd3.Endpoint(host, port, secure=creds is not None, creds=creds, time_retry=1.0))
    return etcd3.MultiEndpointEtcd3Client(endpoints=eps, timeout=timeout, failover=True)


class Connection:
    """The current client, replaced when the endpoints change (the supervisor
    sends new ones whenever the membership does)."""

    def __init__(self, endpoints: Sequence[str] = (), timeout: float = 5.0, *,
                 tls: TLSFiles | None) -> None:
        self.lock = threading.Lock()
        self.timeout = timeout
        self.tls = tls
        self.endpoints: tuple[str, ...] = tuple(endpoints)
        self.client: etcd3.MultiEndpointEtcd3Client | None = None

    def set_endpoints(self, endpoints: Sequence[str]) -> bool:
        with self.lock:
            if tuple(endpoints) == self.endpoints:
                return False
            self.endpoints = tuple(endpoints)
            old, self.client = self.client, None
        if old is not None:
            old.close()
        return True

    def get(self) -> etcd3.MultiEndpointEtcd3Client:
        with self.lock:
            if self.client is None:
                if not self.endpoints:
                    raise ConnectionError("no etcd endpoints known yet")
                self.client = connect(self.endpoints, self.timeout, tls=self.tls)
            return self.client

    def close(self) -> None:
        with self.lock:
            old, self.client = self.client, None
        if old is not None:
            old.close()
