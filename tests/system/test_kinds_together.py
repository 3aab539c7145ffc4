"""The new kinds together, as a user writes them: examples/yaml/webserver.yaml,
unchanged, through `mgmtd run` in a machine whose only apt repository offers
an `nginx` built by the test (a small Python web server with nginx's name, its
unit and its conf.d), so no network and nothing of this host is used."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import wait_for
from tests.system.debrepo import Repo, apt_update, installed_version, isolate_apt

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "yaml" / "webserver.yaml"

FAKE_NGINX = r'''#!/usr/bin/python3
"""Stands in for nginx: serves the `root` of the conf.d files on their `listen` port."""
import functools
import glob
import http.server
import re

port, root = 80, "/var/www/html"
for path in sorted(glob.glob("/etc/nginx/conf.d/*.conf")):
    with open(path) as conf:
        text = conf.read()
    found = re.search(r"listen\s+(\d+);", text)
    port = int(found.group(1)) if found else port
    found = re.search(r"root\s+([^;]+);", text)
    root = found.group(1).strip() if found else root
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
http.server.ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()
'''

NGINX_UNIT = """[Unit]
Description=a stand-in for nginx (mgmtd tests)

[Service]
ExecStart=/usr/sbin/nginx

[Install]
WantedBy=multi-user.target
"""

FETCH = """import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode(), end="")
except OSError as err:
    print(f"unreachable: {err}", end="")
    sys.exit(1)
"""


@pytest.fixture(scope="module")
def repo(sandbox, tmp_path_factory):
    isolate_apt(sandbox)
    repo = Repo(sandbox, tmp_path_factory.mktemp("webrepo"), name="web")
    repo.publish("nginx", "1.0-1", files={
        "/usr/sbin/nginx": (FAKE_NGINX, 0o755),
        "/lib/systemd/system/nginx.service": (NGINX_UNIT, 0o644),
        "/etc/nginx/conf.d/": ("", 0o755),
    })
    repo.enable()
    apt_update(sandbox)
    sandbox.write("/root/fetch.py", FETCH)
    return repo


def fetch(sandbox, port: int, path: str = "index.html") -> str:
    done = sandbox.run("python3", "/root/fetch.py", f"http://127.0.0.1:{port}/{path}", check=False)
    return done.stdout if done.returncode == 0 else ""


def main_pid(sandbox, unit: str) -> int:
    return int(sandbox.run("systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip() or 0)


def test_webserver_example_unchanged(sandbox, repo):
    page = "<h1>served by nginx, kept in shape by mgmtd</h1>\n"
    graph = EXAMPLE.read_text()
    agent = sandbox.start(graph)

    wait_for(lambda: fetch(sandbox, 8080) == page, 180, "the example's page served on 8080",
             interval=0.5)
    assert installed_version(sandbox, "nginx") == "1.0-1"
    assert sandbox.run("systemctl", "is-enabled", "nginx").stdout.strip() == "enabled"
    owner = sandbox.run("stat", "-c", "%U:%G %a", "/srv/webadmin/index.html").stdout.split()
    assert owner == ["webadmin:webadmin", "644"]
    assert sandbox.run("getent", "passwd", "webadmin").stdout.split(":")[5:] == [
        "/srv/webadmin", "/usr/sbin/nologin\n"]
    log = agent.log()
    # autoedges: the group before the user, the user before the files it owns
    assert log.index("group[webadmin]: applied") < log.index("user[webadmin]: applied") \
        < log.index("file[site]: applied") < log.index("file[index]: applied"), log

    # a new configuration restarts the server (notify edge), which then listens on the new port
    before = main_pid(sandbox, "nginx")
    agent.swap(graph.replace("listen 8080;", "listen 8081;"))
    wait_for(lambda: fetch(sandbox, 8081) == page, 60, "the page on the new port", interval=0.3)
    assert main_pid(sandbox, "nginx") != before

    # drift by hand: a stopped service, then the package removed
    sandbox.run("systemctl", "stop", "nginx")
    wait_for(lambda: fetch(sandbox, 8081) == page, 30, "nginx started again", interval=0.2)
    sandbox.run("dpkg", "-r", "nginx")
    wait_for(lambda: installed_version(sandbox, "nginx") == "1.0-1", 120, "nginx reinstalled", interval=0.5)
    wait_for(lambda: fetch(sandbox, 8081) == page, 60, "nginx serving again", interval=0.3)

    log = agent.stop()
    assert "Traceback" not in log, log


NOOP_MIX = """\
graph: noop-mix
resources:
  pkg:
  - name: mgmtd-test-tools
    meta: {noop: true}
    state: installed
  file:
  - name: conf
    meta: {noop: true}
    path: /etc/mgmtd-test-tools.conf
    content: "# managed\\n"
    state: exists
  - name: confdir
    meta: {noop: true}
    path: /etc/mgmtd-test-tools.d/
    source: /dev/null
    state: exists
  svc:
  - name: mgmtd-test-tools
    meta: {noop: true}
    state: stopped
"""


def test_a_noop_graph_of_every_kind_says_what_it_would_do_and_changes_nothing(sandbox, repo):
    """The shape of mgmt's autoedges3: a package not installed yet, its files and
    its service, all noop."""
    repo.publish("mgmtd-test-tools", "1.0-1")
    apt_update(sandbox)
    done = sandbox.apply(NOOP_MIX)
    assert done.returncode == 0, done.log
    assert "pkg[mgmtd-test-tools]: would install mgmtd-test-tools" in done.log
    assert "file[conf]: would create /etc/mgmtd-test-tools.conf" in done.log
    assert "would create directory /etc/mgmtd-test-tools.d/" in done.log
    assert installed_version(sandbox, "mgmtd-test-tools") is None
    assert not sandbox.machine.path("/etc/mgmtd-test-tools.conf").exists()
    assert "ERROR" not in done.log, done.log
