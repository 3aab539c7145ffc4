"""mgmt's file fields ``fragments``, ``symlink`` and ``selinux`` (issue 17)
through ``mgmtd run`` on a real etcd: a file built from fragments follows a
fragment edited or added by hand, a link replaced by hand by a regular file is
made a link again (with ``force``; without it the file is left and the error
said), collected files may not use either, and ``selinux`` is refused where
it is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.harness import put_export, start_cluster, wait_for, write_atomically

MGMTD = str(Path(sys.executable).parent / "mgmtd")


def graph(root: Path) -> str:
    return f"""graph: g
resources:
  file:
  - name: root
    path: "{root}/"
  - name: parts
    path: "{root}/parts/"
  - name: part10
    path: "{root}/parts/10-managed"
    content: "managed part\\n"
  - name: conf
    path: "{root}/conf"
    fragments: ["{root}/head", "{root}/parts/"]
    mode: "0640"
  - name: link
    path: "{root}/link"
    symlink: true
    source: conf
    force: true
  - name: careful
    path: "{root}/careful"
    symlink: true
    source: "{root}/conf"
collect:
- kind: file
  pattern: "{root}/in/"
  allow: [owner]
"""


def read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, IsADirectoryError):
        return None


def link_of(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def test_fragments_and_symlink_follow_changes_by_hand(make_node, workdir):
    root = workdir / "srv"
    root.mkdir()
    (root / "head").write_text("# head, not managed\n")   # a fragment only edited by hand
    path = workdir / "g.yaml"
    path.write_text(graph(root))
    (node,) = start_cluster([make_node()], ideal=1, graphs=[str(path)])
    conf = root / "conf"
    wait_for(lambda: read(conf) == "# head, not managed\nmanaged part\n", 60, "conf from its fragments")
    assert conf.stat().st_mode & 0o777 == 0o640
    wait_for(lambda: link_of(root / "link") == "conf" and link_of(root / "careful") == str(conf),
             30, "both links")

    write_atomically(root / "head", "# head, edited\n")
    wait_for(lambda: read(conf) == "# head, edited\nmanaged part\n", 20, "conf after the head was edited")
    (root / "parts" / "20-by-hand").write_text("added by hand\n")
    wait_for(lambda: read(conf) == "# head, edited\nmanaged part\nadded by hand\n", 20,
             "conf after a fragment was added")
    (root / "parts" / "20-by-hand").unlink()
    wait_for(lambda: read(conf) == "# head, edited\nmanaged part\n", 20, "conf after a fragment was removed")

    # a link replaced by a regular file: force lets mgmtd put the link back
    write_atomically(root / "link", "not a link\n")
    wait_for(lambda: link_of(root / "link") == "conf", 20, "the link repaired")
    # without force the file is left alone, and the error says why
    write_atomically(root / "careful", "mine now\n")
    wait_for(lambda: "careful is a regular file: set force: true to replace it by a symbolic link"
             in node.log(), 20, "the refusal logged")
    assert read(root / "careful") == "mine now\n" and link_of(root / "careful") is None

    # collected files may not read this host's files nor place links
    (root / "in").mkdir()
    put_export(node.client_url, "h2", "file", "frag", {"path": f"{root}/in/frag",
                                                       "fragments": ["/etc/passwd"]})
    put_export(node.client_url, "h2", "file", "ln", {"path": f"{root}/in/ln", "symlink": True,
                                                     "source": "/etc/shadow"})
    wait_for(lambda: "collect: file[frag] from h2: fragments (files of this host) are refused" in node.log()
             and "collect: file[ln] from h2: symlink is refused for collected files" in node.log(),
             30, "both exports refused")
    assert sorted(os.listdir(root / "in")) == []
    node.stop()
    assert "Traceback" not in node.log()


def test_selinux_is_refused_where_it_is_written(workdir):
    path = workdir / "g.yaml"
    path.write_text(f'graph: g\nresources:\n  file:\n  - name: f\n    path: "{workdir}/f"\n'
                    '    selinux: "system_u:object_r:etc_t:s0"\n')
    out = subprocess.run([MGMTD, "validate", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert (f"{path}:6:5: file[f]: file.selinux (mgmt's field) is not supported: "
            "mgmtd does not manage SELinux contexts") in out.stderr, out.stderr
