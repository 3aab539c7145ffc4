from __future__ import annotations

import itertools
import shutil

import pytest

from tests.harness import Node, free_port, kill_leftovers

_names = itertools.count(1)


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _need_etcd():
    if not shutil.which("etcd") or not shutil.which("etcdctl"):
        pytest.fail("etcd and etcdctl are needed (make install installs Debian's etcd-server)")


@pytest.fixture
def workdir(tmp_path):
    """The test's own directory; every process started under it must be gone
    at the end, or the test fails."""
    yield tmp_path
    leaked = kill_leftovers(str(tmp_path))
    assert not leaked, f"processes left behind: {leaked}"


@pytest.fixture
def make_node(workdir):
    nodes: list[Node] = []

    def make(name: str | None = None, address: str = "127.0.0.1") -> Node:
        name = name or f"h{next(_names)}"
        prefix = workdir / name / "prefix"
        prefix.parent.mkdir(parents=True, exist_ok=True)
        node = Node(name, prefix, free_port(address), free_port(address), address)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()
