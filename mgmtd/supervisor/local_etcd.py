"""This node's etcd: whether it should run, its data, and the local steps the
cluster round decides (start it as nominated, stop it and wipe its member
data when the cluster removed this node). Owns the etcd child."""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading

from mgmtd import log
from mgmtd.cluster.access import Access
from mgmtd.cluster.etcdapi import EtcdApi, EtcdApiError
from mgmtd.cluster.local import LocalState
from mgmtd.supervisor.config import NodeConfig
from mgmtd.supervisor.etcd_process import EtcdConfig, EtcdProcess, EtcdStartError
from mgmtd.supervisor.preflight import PortAllocator, StartupError

LOG = log.get("supervisor")


class LocalEtcd:
    def __init__(self, config: NodeConfig, stopping: threading.Event, api: EtcdApi) -> None:
        self.config = config
        self.stopping = stopping
        self.data_dir = os.path.join(config.prefix, "etcd")
        self.process = EtcdProcess(self.etcd_config(), os.path.join(config.prefix, "etcd.pid"), api)
        self.serving = False        # this node's etcd should run
        self.bootstrapped = False   # it started the cluster and has not nominated itself yet

    def state(self) -> LocalState:
        return LocalState(self.config.hostname, self.serving, self.bootstrapped, not self.config.no_server)

    def etcd_config(self, initial_cluster: str = "", state: str = "new") -> EtcdConfig:
        cfg = self.config
        return EtcdConfig(
            binary=cfg.etcd_binary, name=cfg.hostname, data_dir=self.data_dir,
            listen_client_urls=cfg.client_urls, advertise_client_urls=cfg.advertised_clients,
            listen_peer_urls=cfg.server_urls, advertise_peer_urls=cfg.advertised_peers,
            initial_cluster=initial_cluster, initial_cluster_state=state,
            cluster_token=f"mgmtd-{cfg.hostname}", log_level="info" if cfg.log_level == "debug" else "warn",
            tls=cfg.tls,
        )

    def has_member_data(self) -> bool:
        return os.path.isdir(os.path.join(self.data_dir, "member"))

    # --- start-up ------------------------------------------------------------------------
    def rejoin(self) -> None:
        """Restart on the member data found: a voter back from a restart."""
        LOG.info("found etcd member data: rejoining as a server")
        self.serving = True
        try:
            self.start(joining=True)
        except EtcdStartError:
            if not self.process.removed:
                raise
            # removed while we were away: start afresh as a client and volunteer
            self.process.kill()
            self.stop_serving()

    def bootstrap(self, access: Access | None) -> None:
        LOG.info("no seeds and no data: bootstrapping a new cluster")
        self.serving = True
        self.bootstrapped = True
        if access is not None:
            self._bootstrap_with_auth(access)
        else:
            self.start(joining=False)

    def _bootstrap_with_auth(self, access: Access) -> None:
        """The new etcd first listens where only this host can reach it, gets its
        users and roles and auth turned on, and only then listens where the
        other nodes can: none of them ever sees it without auth."""
        public = self.process.config
        # the one port this process asks for: a fresh allocator is enough
        private = (f"https://127.0.0.1:{PortAllocator().free_port()}",)
        self.process.config = dataclasses.replace(public, listen_client_urls=private,
                                                  advertise_client_urls=private)
        self.start(joining=False)
        try:
            access.enable(self.process.client_url, self.config.hostname)
        except EtcdApiError as err:
            raise StartupError(f"cannot set up etcd's users and roles: {err}") from None
        self.process.stop()
        self.process.config = public
        self.start(joining=False)
        LOG.info("etcd auth is on: each node may write only its own keys")

    # --- the local steps -------------------------------------------------------------------
    def join(self, initial_cluster: str) -> None:
        LOG.info("nominated: starting etcd to join %s", initial_cluster)
        self.wipe_member_data()
        self.process.config = self.etcd_config(initial_cluster, "existing")
        self.serving = True
        try:
            self.start(joining=True)
        except EtcdStartError as err:
            LOG.error("cannot start etcd as nominated: %s", err)
            self.process.kill()

    def stop_serving(self) -> None:
        LOG.warning("no longer a member of the cluster: stopping etcd and going on as a client")
        self.process.stop()
        self.wipe_member_data()
        self.serving = False

    def wipe_member_data(self) -> None:
        if os.path.exists(self.data_dir):
            shutil.rmtree(self.data_dir)
            LOG.info("wiped old etcd member data in %s", self.data_dir)

    def start(self, joining: bool) -> None:
        self.process.start()
        # a learner answers status but not /health (it serves no linearizable reads)
        self.process.wait_ready(self.config.etcd_start_timeout, status_only=joining, stopping=self.stopping)
        LOG.info("etcd is ready at %s", self.process.client_url)
