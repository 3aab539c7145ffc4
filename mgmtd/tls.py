"""Mutual TLS for everything that talks to etcd: the node's etcd (peers and
clients), the supervisor, the engine and mgmtctl share one set of files (the
cluster CA, this node's certificate and key). The files (``TLSFiles``, or None
for plain http) are passed to whatever talks to etcd; nothing here remembers
them."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from mgmtd.hostnames import check_hostname


@dataclass(frozen=True)
class TLSFiles:
    ca: str
    cert: str
    key: str

    def check(self) -> None:
        for what, path in (("--tls-ca", self.ca), ("--tls-cert", self.cert), ("--tls-key", self.key)):
            if not os.access(path, os.R_OK):
                raise ValueError(f"{what} {path}: cannot read it")

    def args(self) -> list[str]:
        return ["--tls-ca", self.ca, "--tls-cert", self.cert, "--tls-key", self.key]


# etcd users that are not hosts: etcd's own root, and the user a node without a
# user of its own asks for one with (mgmtd/cluster/access.py)
ROOT_USER = "root"
JOIN_USER = "mgmtd-join"
RESERVED_NAMES = frozenset({ROOT_USER, JOIN_USER})


def check_host_name(host: str) -> None:
    """A certificate's name becomes an etcd user and part of keys: on top of
    every host name's rule, refuse etcd's own users."""
    check_hostname(host)
    if host in RESERVED_NAMES:
        raise ValueError(f"{host!r} is reserved for etcd's own users; pick another host name")


def from_args(ca: str | None, cert: str | None, key: str | None) -> TLSFiles | None:
    given = [v for v in (ca, cert, key) if v]
    if not given:
        return None
    if len(given) != 3:
        raise ValueError("--tls-ca, --tls-cert and --tls-key go together")
    files = TLSFiles(os.path.abspath(ca), os.path.abspath(cert), os.path.abspath(key))
    files.check()
    return files


def common_name(cert_file: str) -> str:
    """The certificate's subject common name (etcd's user name for it)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        with open(cert_file, "rb") as handle:
            certificate = x509.load_pem_x509_certificate(handle.read())
    except (OSError, ValueError) as err:
        raise ValueError(f"not a PEM certificate: {err}") from None
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ValueError("the certificate has no common name")
    return str(names[0].value)


def ssl_context(files: TLSFiles | None) -> ssl.SSLContext | None:
    """For etcd's /health over HTTPS (urllib): verify the server, present our
    certificate. None without TLS."""
    if files is None:
        return None
    context = ssl.create_default_context(cafile=files.ca)
    context.load_cert_chain(files.cert, files.key)
    return context


def grpc_credentials(files: TLSFiles | None):
    """gRPC channel credentials for mutual TLS; None without TLS. The files are
    read on every call, so a new channel picks up renewed certificates."""
    import grpc

    if files is None:
        return None
    with open(files.ca, "rb") as ca, open(files.key, "rb") as key, open(files.cert, "rb") as cert:
        return grpc.ssl_channel_credentials(ca.read(), key.read(), cert.read())
