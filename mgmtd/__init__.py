"""mgmtd: a configuration-management agent that clusters itself on etcd."""

__version__ = "0.1.0"
