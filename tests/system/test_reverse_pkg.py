"""meta.reverse on pkg inside a machine (``mgmtd run`` as a unit, graphs
swapped by reload): a package installed, one removed and one upgraded by
resources that then leave the graph are put back as they were."""

from __future__ import annotations

import pytest

from tests.harness import wait_for
from tests.system.debrepo import Repo, apt_update, installed_version, isolate_apt
from tests.system.kinds import sandbox  # noqa: F401


def graph(*entries: str) -> str:
    return "graph: reverse\nresources:\n  noop:\n  - name: stays\n" + (
        "  pkg:\n" + "".join(entries) if entries else "")


def reversible(name: str, state: str) -> str:
    return f"  - name: {name}\n    state: \"{state}\"\n    meta: {{reverse: true}}\n"


@pytest.fixture(scope="module")
def repo(sandbox, tmp_path_factory):  # noqa: F811
    isolate_apt(sandbox)
    main = Repo(sandbox, tmp_path_factory.mktemp("debs"))
    main.publish("rv-new", "1.0")
    main.publish("rv-old", "1.0")
    main.publish("rv-pin", "1.0")
    main.publish("rv-pin", "2.0")
    main.enable()
    apt_update(sandbox)
    return main


def test_packages_are_put_back_when_their_resources_leave(sandbox, repo):  # noqa: F811
    # there before mgmtd: rv-old at 1.0, rv-pin at 1.0; rv-new is not installed
    sandbox.run("apt-get", "install", "-y", "-q", "rv-old", "rv-pin=1.0", timeout=180)
    assert installed_version(sandbox, "rv-new") is None
    agent = sandbox.start(graph(reversible("rv-new", "installed"), reversible("rv-old", "uninstalled"),
                                reversible("rv-pin", "2.0")))
    try:
        wait_for(lambda: (installed_version(sandbox, "rv-new"), installed_version(sandbox, "rv-old"),
                          installed_version(sandbox, "rv-pin")) == ("1.0", None, "2.0"),
                 180, "the graph applied")
        log = agent.wait_log("pkg[rv-pin]: reversal recorded")
        assert "pkg[rv-new]: reversal recorded: state 'uninstalled'" in log
        agent.swap(graph())
        wait_for(lambda: (installed_version(sandbox, "rv-new"), installed_version(sandbox, "rv-old"),
                          installed_version(sandbox, "rv-pin")) == (None, "1.0", "1.0"),
                 180, "the reversals")
        for name in ("rv-new", "rv-old", "rv-pin"):
            log = agent.wait_log(f"pkg[{name}]: reversed: its record is deleted")
    finally:
        log = agent.stop()
    assert "Traceback" not in log
