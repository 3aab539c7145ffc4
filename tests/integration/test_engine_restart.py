"""What one engine run keeps for the next (``--prefix``): the loaded graph
and what its checks proved. Through the real CLI: a restart with an
unchanged graph proves each file with one lstat, and still repairs a file
edited behind its back, even an edit that put size and mtime back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mgmtd.resources import filesig

MGMTD = str(Path(sys.executable).parent / "mgmtd")
FILES = 20


def graph_text(out: Path, content: str = "managed {i}\n") -> str:
    lines = ["graph: restart", "resources:", "  file:", f'  - name: dir\n    path: "{out}/"']
    for i in range(FILES):
        lines.append(f'  - name: f{i}\n    path: "{out}/f{i}"\n    content: "{content.format(i=i)!s}"'
                     .replace("\n\"", '\\n"'))
    return "\n".join(lines) + "\n"


def run_once(graph: Path, prefix: Path) -> str:
    """One engine run to convergence (exits 1 s after it); returns its log."""
    done = subprocess.run([MGMTD, "engine", "--hostname", "t", "--log-level", "debug", "--prefix",
                           str(prefix), "--converged-timeout", "1", "yaml", str(graph)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


def applied(log: str) -> set[str]:
    return set(re.findall(r"file\[(f\d+)\]: applied", log))


def recalled(log: str) -> int:
    found = re.search(r"(\d+) resources took their memo of the last run", log)
    assert found, log
    return int(found.group(1))


def test_a_restart_proves_files_by_their_memo_and_repairs_an_edit(workdir):
    out, prefix, graph = workdir / "out", workdir / "state", workdir / "g.yaml"
    graph.write_text(graph_text(out))
    first = run_once(graph, prefix)
    assert applied(first) == {f"f{i}" for i in range(FILES)}
    assert (prefix / "cache" / "graph").exists() and (prefix / "cache" / "checked").exists()
    # a content edit behind the engine's back that keeps the size and puts the mtime back
    victim = out / "f3"
    st = os.lstat(victim)
    victim.write_text("MANAGED 3\n")
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = run_once(graph, prefix)
    assert applied(second) == {"f3"}
    assert victim.read_text() == "managed 3\n"
    local = filesig.local_device(os.stat(out).st_dev)
    # where ctime comes from this machine's clock the restart proved the other files by
    # their memo; elsewhere every file was read, and the repair is the same
    assert recalled(second) == (FILES if local else 0)
    third = run_once(graph, prefix)
    assert applied(third) == set()
    assert recalled(third) == (FILES if local else 0)


def test_a_changed_graph_is_loaded_anew_not_from_the_cache(workdir):
    out, prefix, graph = workdir / "out", workdir / "state", workdir / "g.yaml"
    graph.write_text(graph_text(out))
    run_once(graph, prefix)
    graph.write_text(graph_text(out, content="second {i}\n"))
    log = run_once(graph, prefix)
    assert applied(log) == {f"f{i}" for i in range(FILES)}
    assert (out / "f7").read_text() == "second 7\n"
    assert recalled(log) == 0   # memos are of the first content: none applies


def test_a_damaged_cache_and_memo_file_cost_nothing_but_time(workdir):
    out, prefix, graph = workdir / "out", workdir / "state", workdir / "g.yaml"
    graph.write_text(graph_text(out))
    run_once(graph, prefix)
    for name in ("graph", "checked"):
        path = prefix / "cache" / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(data)
    (out / "f1").write_text("wrong\n")
    log = run_once(graph, prefix)
    assert applied(log) == {"f1"} and recalled(log) == 0
    assert (out / "f1").read_text() == "managed 1\n"
