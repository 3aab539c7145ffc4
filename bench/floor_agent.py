"""The repair floor: the smallest agent that keeps files in state. It watches
one directory with inotify and rewrites (atomically, like mgmtd) any watched
file whose content is wrong. No graph, no scheduler, no logging.

    python bench/floor_agent.py WANTED.json     # {"/abs/path": "content", ...}
"""

from __future__ import annotations

import json
import os
import sys

from inotify_simple import INotify
from inotify_simple import flags as F


def write_atomically(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    temp = os.path.join(directory, f".floor-tmp-{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def main() -> int:
    with open(sys.argv[1]) as handle:
        wanted = {path: content.encode() for path, content in json.load(handle).items()}
    by_dir: dict[str, dict[str, bytes]] = {}
    for path, content in wanted.items():
        by_dir.setdefault(os.path.dirname(path), {})[os.path.basename(path)] = content
    inotify = INotify()
    wds = {inotify.add_watch(d, F.MODIFY | F.CLOSE_WRITE | F.MOVED_TO | F.CREATE | F.DELETE): d
           for d in by_dir}
    print("ready", flush=True)
    while True:
        touched = set()
        for event in inotify.read():
            directory = wds.get(event.wd)
            if directory is not None and event.name in by_dir[directory]:
                touched.add((directory, event.name))
        for directory, name in touched:
            path = os.path.join(directory, name)
            data = by_dir[directory][name]
            try:
                with open(path, "rb") as handle:
                    if handle.read() == data:
                        continue
            except FileNotFoundError:
                pass
            write_atomically(path, data)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
