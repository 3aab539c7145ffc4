"""A ``file`` with ``symlink: true`` (mgmt's field): the path is a symbolic
link whose target is ``source`` (absolute or relative; it need not exist).

The link is only ever read with ``readlink`` and replaced by renaming a new
link over it, so what it points at is never opened, changed or followed."""

from __future__ import annotations

import errno
import stat
from collections.abc import Callable
from dataclasses import dataclass

from mgmtd.resources.base import FieldError, ResourceError, shown
from mgmtd.resources.fsplace import Place, describe


@dataclass(frozen=True)
class LinkSpec:
    """What the link must be: ``state`` exists (pointing at ``source``,
    owned by ``uid``/``gid``, -1 = not managed) or absent."""

    path: str
    source: str | None
    state: str
    force: bool
    uid: int = -1
    gid: int = -1


def check_link_fields(*, is_dir: bool, state: str, source: str | None, content: str | None,
                      fragments: list | None, recurse: bool, purge: bool, mode: object) -> None:
    """mgmt's rules for ``symlink: true`` (file.go Validate), plus ``mode``,
    refused: Linux has no mode on a link, and setting one would change what
    it points at."""
    if is_dir:
        raise FieldError("symlink", "a symbolic link's path has no trailing '/' (it is not a directory)")
    if content is not None or fragments is not None:
        raise FieldError("symlink", "symlink: true cannot have content or fragments (its target is source)")
    if recurse or purge:
        raise FieldError("symlink", "symlink: true cannot have recurse or purge")
    if mode is not None:
        raise FieldError("mode", "a symbolic link has no mode of its own (Linux ignores it, and a chmod "
                         "would change what it points at): remove mode")
    if state == "absent":
        if source is not None:
            raise FieldError("source", "state: absent removes the link: it has no source (as in mgmt)")
        return
    if not source:
        raise FieldError("source", "symlink: true needs source: the path the link points at")
    if "\0" in source:
        raise FieldError("source", f"source {shown(source)} contains a NUL character")


def link_check_apply(place: Place, spec: LinkSpec, apply: bool, report: Callable[[str, str], None],
                     prepare: Callable[[], None]) -> bool:
    """True when the link is in state; with ``apply``, makes it so first.
    ``prepare`` runs before a link is created where nothing was (it makes
    sure the directory exists)."""
    st = place.lstat()
    if spec.state == "absent":
        return _absent(place, st, spec, apply, report)
    if st is not None and stat.S_ISLNK(st.st_mode):
        current = place.readlink()
        if current == spec.source:
            return _owner(place, st, spec, apply, report)
        if not apply:
            report("info", f"would point {spec.path} at {spec.source} (now {current})")
            return False
        place.symlink_atomically(spec.source, spec.uid, spec.gid)
        return False
    if st is not None:
        if not spec.force:
            raise ResourceError(f"{spec.path} is {describe(st.st_mode)}: set force: true to replace "
                                "it by a symbolic link")
        if not apply:
            report("info", f"would replace {spec.path} ({describe(st.st_mode)}) by a link to {spec.source}")
            return False
        if stat.S_ISDIR(st.st_mode):
            _remove_empty_dir(place, spec.path)
        place.symlink_atomically(spec.source, spec.uid, spec.gid)
        return False
    if not apply:
        report("info", f"would create link {spec.path} -> {spec.source}")
        return False
    prepare()
    place.symlink_atomically(spec.source, spec.uid, spec.gid)
    return False


def _absent(place: Place, st, spec: LinkSpec, apply: bool, report: Callable[[str, str], None]) -> bool:
    if st is None:
        return True
    if not stat.S_ISLNK(st.st_mode) and not spec.force:
        raise ResourceError(f"{spec.path} is {describe(st.st_mode)}, not a symbolic link: "
                            "set force: true to remove it")
    if not apply:
        report("info", f"would remove {spec.path}")
        return False
    if stat.S_ISDIR(st.st_mode):
        _remove_empty_dir(place, spec.path)
    else:
        place.remove(recursive=False)
    return False


def _remove_empty_dir(place: Place, path: str) -> None:
    # as mgmt (os.Remove): a link replaces or removes an empty directory only,
    # never a tree (recurse cannot be combined with symlink)
    try:
        place.remove(recursive=False)
    except OSError as err:
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise ResourceError(f"{path}/ is a directory that is not empty: mgmtd replaces only "
                                "an empty directory by a symbolic link") from None
        raise


def _owner(place: Place, st, spec: LinkSpec, apply: bool, report: Callable[[str, str], None]) -> bool:
    if (spec.uid == -1 or st.st_uid == spec.uid) and (spec.gid == -1 or st.st_gid == spec.gid):
        return True
    if not apply:
        report("info", f"would chown link {spec.path} to {spec.uid}:{spec.gid}")
        return False
    place.lchown(spec.uid, spec.gid)
    return False
