"""Meta params of issue 17 through the real CLI: ``retryreset``, ``reset``,
``rewatch``, ``hidden``, ``export`` (a cluster), ``dollar``, an explicit
``autogroup: true``, and ``--sema N`` / ``MGMTD_SEMA``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.harness import (
    MGMTD,
    etcdctl,
    file_res,
    graph_with,
    start_cluster,
    start_logged,
    stop_processes,
    unique,
    wait_for,
    write_atomically,
)
from tests.integration.test_export_collect import wait_applied


def counted_exec(workdir: Path, meta: str, extra: str = "") -> str:
    """An exec whose runs go 1: fail, 2: ok, 3: fail, then ok (its count in a
    file), put out of state again whenever the file ``again`` appears."""
    return f"""graph: g
resources:
  exec:
  - name: x
    shell: /bin/sh
    cmd: >-
      n=$(( $(cat {workdir}/count 2>/dev/null || echo 0) + 1 )); echo $n > {workdir}/count;
      case $n in 1|3) echo run $n told to fail; exit 1;; esac
    watchshell: /bin/sh
    watchcmd: while :; do if [ -e {workdir}/again ]; then rm -f {workdir}/again; echo again; fi; sleep 0.05; done
{extra}    meta:
{meta}
"""


def runs(workdir: Path) -> int:
    try:
        return int((workdir / "count").read_text())
    except (FileNotFoundError, ValueError):
        return 0


def start_engine(workdir: Path, graph: Path, *flags: str, env: dict | None = None):
    log = workdir / "engine.log"
    proc = start_logged([MGMTD, "engine", "--hostname", "t", *flags, "yaml", str(graph)], log, env)
    return proc, log


@pytest.mark.parametrize("retryreset", [False, True])
def test_retryreset_decides_whether_a_success_gives_the_retry_back(workdir, retryreset):
    graph = workdir / "g.yaml"
    graph.write_text(counted_exec(workdir, f"      retry: 1\n      retryreset: {str(retryreset).lower()}"))
    proc, log = start_engine(workdir, graph)
    try:
        wait_for(lambda: runs(workdir) == 2 and "exec[x]: applied" in log.read_text(), 30, "fail, then ok")
        (workdir / "again").touch()
        if retryreset:
            wait_for(lambda: runs(workdir) == 4 and log.read_text().count("exec[x]: applied") == 2, 30,
                     "the third run failing and its retry succeeding")
        else:
            # the final error is logged only once no retry is left: nothing runs after it
            wait_for(lambda: "ERROR" in log.read_text(), 30, "the third run failing for good")
            assert runs(workdir) == 3
    finally:
        stop_processes([proc])
    text = log.read_text()
    assert text.count("(attempt 1, retrying)") == (2 if retryreset else 1), text
    assert "Traceback" not in text


@pytest.mark.parametrize("reset", [False, True])
def test_reset_decides_whether_a_changed_resource_keeps_its_retry_count(workdir, reset):
    graph = workdir / "g.yaml"
    meta = f"      retry: 1\n      reset: {str(reset).lower()}"
    graph.write_text(counted_exec(workdir, meta))
    proc, log = start_engine(workdir, graph)
    try:
        wait_for(lambda: runs(workdir) == 2 and "exec[x]: applied" in log.read_text(), 30, "fail, then ok")
        # the resource changes (a new variable): a new instance, run at once, fails
        write_atomically(graph, counted_exec(workdir, meta, "    env: {CHANGED: '1'}\n"))
        if reset:
            wait_for(lambda: runs(workdir) == 4 and log.read_text().count("exec[x]: applied") == 2, 30,
                     "the changed resource failing and being retried")
        else:
            wait_for(lambda: "ERROR" in log.read_text(), 30, "the changed resource failing for good")
            assert runs(workdir) == 3
    finally:
        stop_processes([proc])
    text = log.read_text()
    assert "graph g reloaded" in text and "Traceback" not in text


@pytest.mark.parametrize("rewatch", [False, True])
def test_rewatch_restarts_a_failed_resource_at_a_graph_swap(workdir, rewatch):
    flag = workdir / "flag"

    def graph_text(marker: bool) -> str:
        more = f"  - name: marker\n    shell: /bin/sh\n    cmd: touch {workdir}/marker\n" if marker else ""
        return f"""graph: g
resources:
  exec:
  - name: needs-flag
    shell: /bin/sh
    cmd: echo run >> {workdir}/runs; test -e {flag}
    meta:
      rewatch: {str(rewatch).lower()}
{more}"""
    graph = workdir / "g.yaml"
    graph.write_text(graph_text(False))
    proc, log = start_engine(workdir, graph)
    try:
        wait_for(lambda: "ERROR" in log.read_text(), 30, "needs-flag failing for good")
        flag.touch()   # an exec has no event for this: only a restart runs it again
        write_atomically(graph, graph_text(True))   # needs-flag itself does not change
        wait_for(lambda: (workdir / "marker").exists(), 30, "the swapped graph running")
        if rewatch:
            wait_for(lambda: "exec[needs-flag]: applied" in log.read_text(), 30, "needs-flag restarted")
            assert ("exec[needs-flag]: failed for good: restarted by the graph swap (meta.rewatch)"
                    in log.read_text())
            assert "graph swapped: 0 kept, 2 started, 1 stopped" in log.read_text()
        else:
            # kept as it was (the swap's own count says so), so nothing runs it
            assert "graph swapped: 1 kept, 1 started, 0 stopped" in log.read_text()
    finally:
        stop_processes([proc])
    assert (workdir / "runs").read_text() == ("run\nrun\n" if rewatch else "run\n")


def test_hidden_resource_is_not_applied_but_orders_its_dependants(workdir):
    hidden_path = workdir / "hidden"
    graph = workdir / "g.yaml"
    graph.write_text(f"""graph: g
resources:
  file:
  - name: shadow
    path: "{hidden_path}"
    content: "never written"
    meta:
      hidden: true
  exec:
  - name: after
    shell: /bin/sh
    cmd: test ! -e {hidden_path} && touch {workdir}/after
edges:
- from: {{kind: file, name: shadow}}
  to: {{kind: exec, name: after}}
""")
    out = subprocess.run([MGMTD, "engine", "--hostname", "t", "--converged-timeout", "0.5", "yaml", str(graph)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert not hidden_path.exists()
    assert (workdir / "after").exists()
    assert "file[shadow]" not in out.stderr


@pytest.mark.parametrize("text,where,words", [
    ("resources:\n  exec:\n  - name: $cmd\n", "3:11", "exec: name '$cmd' starts with '$'"),
    ("resources:\n  noop:\n  - name: n\n    meta:\n      autogroup: true\n", "5:18",
     "noop[n]: meta.autogroup: kind noop cannot be grouped (kinds that can: pkg)"),
    ("resources:\n  noop:\n  - name: n\n    meta:\n      export: ['a', '']\n", "5:15",
     "noop[n]: meta.export: an entry is empty"),
])
def test_meta_refusals_are_located(workdir, text, where, words):
    graph = workdir / "bad.yaml"
    graph.write_text(text)
    out = subprocess.run([MGMTD, "validate", str(graph)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip() == f"mgmtd: {graph}:{where}: {words}" or \
        out.stderr.strip().startswith(f"mgmtd: {graph}:{where}: {words}"), out.stderr


def test_dollar_names_are_accepted_with_meta_dollar(workdir):
    graph = workdir / "ok.yaml"
    graph.write_text("resources:\n  noop:\n  - name: $n\n    meta:\n      dollar: true\n")
    out = subprocess.run([MGMTD, "validate", str(graph)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def sema_graph(workdir: Path) -> Path:
    """mgmt's exec3-sema shape without its semaphores and edges: four sleeping
    commands, each recording when it started and ended."""
    stamps = workdir / "stamps"
    stamps.mkdir()
    items = "".join(f"""  - name: e{i}
    shell: /bin/sh
    cmd: date +%s.%N >> {stamps}/e{i}; sleep 0.3; date +%s.%N >> {stamps}/e{i}
""" for i in range(4))
    graph = workdir / "sema.yaml"
    graph.write_text(f"graph: sema\nresources:\n  exec:\n{items}")
    return graph


def intervals(workdir: Path) -> list[tuple[float, float]]:
    found = []
    for i in range(4):
        start, end = ((workdir / "stamps" / f"e{i}").read_text().split())
        found.append((float(start), float(end)))
    return sorted(found)


def test_global_sema_1_runs_one_check_apply_at_a_time(workdir):
    out = subprocess.run([MGMTD, "engine", "--hostname", "t", "--sema", "1", "--converged-timeout", "0.5",
                          "yaml", str(sema_graph(workdir))], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    runs_ = intervals(workdir)
    for (_, end), (start, _) in zip(runs_, runs_[1:], strict=False):
        assert start >= end, f"two runs overlapped under --sema 1: {runs_}"


def test_global_sema_from_the_environment_through_mgmtd_run(make_node, workdir):
    graph = sema_graph(workdir)
    node = make_node()
    node.start(["yaml", str(graph)], "--ideal-cluster-size", "1", "--converged-timeout", "1",
               env={"MGMTD_SEMA": "1"})
    assert node.proc.wait(timeout=120) == 0, node.log()[-3000:]
    runs_ = intervals(workdir)
    for (_, end), (start, _) in zip(runs_, runs_[1:], strict=False):
        assert start >= end, f"two runs overlapped with MGMTD_SEMA=1: {runs_}"


def through(node, server) -> SimpleNamespace:
    """``node`` as wait_applied sees it, its host record read from ``server``'s etcd."""
    return SimpleNamespace(name=node.name, client_url=server.client_url, log=node.log)


def test_export_to_one_host_is_collected_by_it_alone(make_node, workdir):
    """Host a exports ``forb`` to b only (hidden, as @@), and ``both`` to b while
    applying it itself. b and c collect every file under out/ into their own
    directory. After c has collected a "*" export published later, c has
    still not collected forb."""
    out = workdir / "out"
    for d in ("b", "c"):
        (out / d).mkdir(parents=True)
    a, b, c = (make_node(unique(n)) for n in ("ea", "eb", "ec"))

    def exporter(marker: bool) -> str:
        files = (f'  - name: "@@forb"\n    path: "{out}/forb"\n    content: "for b"\n'
                 f'    meta:\n      export: ["{b.name}"]\n'
                 f'  - name: both\n    path: "{out}/both"\n    content: "here and b"\n'
                 f'    meta:\n      export: ["{b.name}"]\n')
        if marker:
            files += file_res("@@marker", f"{out}/marker", "for all")
        return graph_with(workdir / "a.yaml", files)

    def collector(host: str) -> str:
        return graph_with(workdir / f"{host}.yaml", "    []",
                          f'collect:\n- kind: file\n  pattern: "{out}/"\n  set:\n    dirname: "{out}/{host}/"\n')

    start_cluster([a, b, c], ideal=1, graphs=[exporter(False), collector("b"), collector("c")])
    wait_for(lambda: (out / "b" / "forb").exists() and (out / "b" / "both").exists(), 90, "b collecting")
    assert (out / "both").read_text() == "here and b"     # not hidden: applied by a too
    value = etcdctl(a.client_url, "get", f"/mgmtd/exported/{a.name}/file/forb", "--print-value-only").stdout
    assert json.loads(value)["export"] == [b.name]
    exporter(True)
    wait_for(lambda: "exported file/marker" in a.log(), 30, "a exporting the marker")
    # b and c are clients: their records are read from a's etcd
    record = wait_applied(through(c, a), 0, f"{a.name}/file/marker")
    assert record["collected"] == [f"{a.name}/file/marker"]
    assert sorted(p.name for p in (out / "c").iterdir()) == ["marker"]
    wait_applied(through(b, a), 0, f"{a.name}/file/marker")
    assert sorted(p.name for p in (out / "b").iterdir()) == ["both", "forb", "marker"]
    assert (out / "b" / "forb").read_text() == "for b"
    assert not (out / "forb").exists()    # '@@': hidden on a
