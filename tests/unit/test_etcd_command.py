"""The etcd command line the supervisor builds (the real etcd taking it is
shown by every integration test that starts a node)."""

from __future__ import annotations

from mgmtd.supervisor.etcd_process import EtcdConfig


def config(**changes) -> EtcdConfig:
    return EtcdConfig(binary="etcd", name="n1", data_dir="/d", listen_client_urls=("http://127.0.0.1:1",),
                      advertise_client_urls=("http://127.0.0.1:1",), listen_peer_urls=("http://127.0.0.1:2",),
                      advertise_peer_urls=("http://127.0.0.1:2",), **changes)


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_history_is_compacted_hourly_so_the_quota_never_fills():
    command = config().command()
    assert flag(command, "--auto-compaction-mode") == "periodic"
    assert flag(command, "--auto-compaction-retention") == "1h"


def test_a_lone_member_is_its_own_initial_cluster_and_extra_args_come_last():
    command = config(extra_args=("--quota-backend-bytes", "1"), cluster_token="t").command()
    assert flag(command, "--initial-cluster") == "n1=http://127.0.0.1:2"
    assert flag(command, "--initial-cluster-token") == "t"
    assert command[-2:] == ["--quota-backend-bytes", "1"]
