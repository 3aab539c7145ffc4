"""Graph input that used to hang or blow up (issue 13): a graph file that is
not a regular file.

Tests that would hang or eat memory on a faulty loader run with a deadline (a
thread or a child process with a memory limit)."""

from __future__ import annotations

import os
import threading

import pytest

from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import load_file, load_text

SOURCE = "g.yaml"
DEADLINE = 10.0   # seconds; refusing a file takes milliseconds


def load_error(text: str) -> str:
    with pytest.raises(GraphError) as info:
        load_text(text, SOURCE)
    message = str(info.value)
    assert "\n" not in message
    return message


def call_with_deadline(func, *args):
    """Runs ``func(*args)`` in a thread; returns ("ok", value) or ("error",
    exception), or fails the test when it has not returned by DEADLINE."""
    outcome: list = []

    def run():
        try:
            outcome.append(("ok", func(*args)))
        except BaseException as err:   # reported to the test, whatever it is
            outcome.append(("error", err))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    assert outcome, f"{func.__name__} did not return within {DEADLINE}s"
    return outcome[0]


def release_fifo(path) -> None:
    """Lets a reader blocked in open() of the FIFO go (it then reads EOF)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return   # no reader waiting
    os.close(fd)


# --- 10: only a regular file is read --------------------------------------------

def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "g.yaml"
    os.mkfifo(fifo)
    try:
        status, err = call_with_deadline(load_file, str(fifo))
    finally:
        release_fifo(fifo)
    assert status == "error" and isinstance(err, GraphError), err
    assert str(err) == f"{fifo}: not a regular file (a FIFO)"


def test_symlink_to_a_fifo_is_refused_as_the_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "g.yaml"
    link.symlink_to(fifo)
    try:
        status, err = call_with_deadline(load_file, str(link))
    finally:
        release_fifo(fifo)
    assert status == "error" and str(err) == f"{link}: not a regular file (a FIFO)"


@pytest.mark.parametrize(("make", "kind"), [
    (lambda p: p.mkdir(), "a directory"),
    (lambda p: p.symlink_to("/dev/zero"), "a character device"),   # would stream without end
])
def test_other_non_regular_files_are_refused(tmp_path, make, kind):
    path = tmp_path / "g.yaml"
    make(path)
    status, err = call_with_deadline(load_file, str(path))
    assert status == "error" and str(err) == f"{path}: not a regular file ({kind})"


def test_read_graph_bytes_reads_a_regular_file_and_bounds_its_size(tmp_path):
    from mgmtd.yamlgraph.loader import MAX_BYTES, read_graph_bytes

    path = tmp_path / "g.yaml"
    path.write_bytes(b"graph: g\n")
    assert read_graph_bytes(str(path)) == b"graph: g\n"
    with open(path, "wb") as handle:
        handle.truncate(MAX_BYTES + 1)   # sparse: no disk used
    with pytest.raises(GraphError, match="larger than 16 MiB"):
        read_graph_bytes(str(path))
    with pytest.raises(GraphError, match="No such file"):
        read_graph_bytes(str(tmp_path / "missing.yaml"))
