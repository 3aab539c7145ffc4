"""How ``mgmtctl restore`` asks the running supervisor of this node: a
request file in ``{prefix}/control/`` and SIGUSR1 to the pid that holds the
prefix's lock; the supervisor appends its progress, one line at a time, to
``restore-ID.log`` and ends with a line starting ``done:``, ``refused:`` or
``failed:``. A file, not etcd: without quorum etcd takes no writes, and a
restore is a step on one node, by someone who can read its prefix."""

from __future__ import annotations

import fcntl
import json
import os
import uuid

from mgmtd.cluster.keys import json_object

FINAL = ("done:", "refused:", "failed:")


def control_dir(prefix: str) -> str:
    return os.path.join(prefix, "control")


def request_path(prefix: str) -> str:
    return os.path.join(control_dir(prefix), "restore.json")


def progress_path(prefix: str, request: str) -> str:
    return os.path.join(control_dir(prefix), f"restore-{request}.log")


def write_request(prefix: str, snapshot: str, force: bool) -> str:
    """Returns the request's id."""
    request = uuid.uuid4().hex[:12]
    os.makedirs(control_dir(prefix), mode=0o700, exist_ok=True)
    temp = request_path(prefix) + ".tmp"
    with open(temp, "w") as handle:
        json.dump({"id": request, "snapshot": snapshot, "force": force}, handle)
    os.replace(temp, request_path(prefix))
    return request


def take_request(prefix: str) -> dict | None:
    """The pending request, removed from the directory (each is done once)."""
    path = request_path(prefix)
    try:
        with open(path) as handle:
            raw = handle.read()
        os.unlink(path)
    except FileNotFoundError:
        return None
    value = json_object(raw)
    if value is None or not isinstance(value.get("id"), str) or not isinstance(value.get("snapshot"), str):
        return None
    return value


def say(prefix: str, request: str, line: str) -> None:
    with open(progress_path(prefix, request), "a") as handle:
        handle.write(line.rstrip("\n") + "\n")


def supervisor_pid(prefix: str) -> int | None:
    """The pid of the mgmtd that holds the prefix's lock; None when none does."""
    path = os.path.join(prefix, "lock")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
