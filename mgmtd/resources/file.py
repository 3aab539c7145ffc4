"""``file``: a file or (path ending in ``/``) a directory, its content, mode and owner.

Writes are atomic: a temporary file in the same directory, fsync, rename, so a
crash leaves either the old or the new content, never half of it."""

from __future__ import annotations

import difflib
import grp
import hashlib
import os
import pwd
import stat
import time
from dataclasses import dataclass
from typing import Any

from mgmtd.resources.base import ID_MAX, Field, FieldError, Resource, ResourceError, shown
from mgmtd.resources.filesig import SIZE as SIGNATURE_SIZE
from mgmtd.resources.filesig import local_device, signature, trusted
from mgmtd.resources.fragments import (
    ENTRY_TOKEN,
    check_fragment_fields,
    fragment_requires,
    fragment_watch_paths,
    read_fragments,
)
from mgmtd.resources.fsplace import (
    TEMP_PREFIX,
    MissingParent,
    Place,
    PlaceError,
    describe,
    locate,
)
from mgmtd.resources.symlink import LinkSpec, check_link_fields, link_check_apply

__all__ = ["TEMP_PREFIX", "Confinement", "FileResource", "parse_mode"]

SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


def parse_mode(value: int | str | None) -> int | None:
    """``0644`` in YAML is already the integer 420; a string is read as octal."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        mode = value
    else:
        text = value.strip()
        try:
            mode = int(text, 8)
        except ValueError:
            raise FieldError("mode", f"mode {shown(value)} is not an octal number like '0644'") from None
    if not 0 <= mode <= 0o7777:
        raise FieldError("mode", f"mode {oct(mode)} is out of range (0000..7777)")
    return mode


def _uid(owner: int | str | None) -> int:
    if owner is None or owner == "":
        return -1
    if isinstance(owner, int) or owner.isdigit():
        uid = int(owner)
        if not 0 <= uid < 2**32 - 1:
            raise ResourceError(f"uid {owner} is out of range")
        return uid
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ResourceError(f"no such user: {owner}") from None


def _gid(group: int | str | None) -> int:
    if group is None or group == "":
        return -1
    if isinstance(group, int) or group.isdigit():
        gid = int(group)
        if not 0 <= gid < 2**32 - 1:
            raise ResourceError(f"gid {group} is out of range")
        return gid
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ResourceError(f"no such group: {group}") from None


def _owner_differs(st: os.stat_result, uid: int, gid: int) -> bool:
    """Owner or group other than wanted (-1: not managed)."""
    return (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid)


@dataclass(frozen=True)
class Confinement:
    """A collected file: untrusted. Everything below ``anchor`` is reached
    without following links, and only the rights in ``allow`` (a collect rule's
    ``allow:``) go beyond the safe defaults."""

    anchor: str
    allow: frozenset[str] = frozenset()


class FileResource(Resource):
    kind = "file"
    REVERSIBLE = True
    FIELDS = {
        "path": Field((str,), None, doc="absolute path; a trailing '/' means a directory"),
        "dirname": Field((str,), None, doc="replaces the directory part of path"),
        "basename": Field((str,), None, doc="replaces the last part of path"),
        "content": Field((str,), None, doc="exact content; unset = content not managed"),
        "source": Field((str,), None, doc="copy content from this local file"),
        "state": Field((str,), "exists", doc="exists or absent"),
        "mode": Field((int, str), None, doc="permissions, octal: '0644'", min=0, max=0o7777),
        "owner": Field((str, int), None, doc="user name or uid", min=0, max=ID_MAX),
        "group": Field((str, int), None, doc="group name or gid", min=0, max=ID_MAX),
        "recurse": Field((bool,), False, doc="create missing parents; remove non-empty dirs"),
        "force": Field((bool,), False, doc="replace a file by a directory or the other way round"),
        "purge": Field((bool,), False, doc="directory with source: delete entries not in source"),
        "fragments": Field((list,), None, doc="content = these files concatenated; 'dir/' = its files"),
        "symlink": Field((bool,), False, doc="a symbolic link pointing at source"),
    }
    UNSUPPORTED = {"selinux": "mgmtd does not manage SELinux contexts (Debian runs without SELinux)"}
    # nothing but its parameters and what validate() derives from them: pickled as
    # it is (a graph of 10,000 files loads from the cache 5x faster than built again)
    __reduce__ = object.__reduce__

    # --- derived ------------------------------------------------------------
    @property
    def full_path(self) -> str:
        cached = self.__dict__.get("_full_path")
        if cached is not None:
            return cached
        return self._compute_full_path()

    def _compute_full_path(self) -> str:
        path = self.path or ""
        is_dir = path.endswith("/")
        head, tail = os.path.split(path.rstrip("/")) if path else ("", "")
        if self.dirname:
            head = self.dirname.rstrip("/") or "/"
        if self.basename:
            tail = self.basename.rstrip("/")
            is_dir = self.basename.endswith("/") or (is_dir and not self.path)
        if not tail:
            return head.rstrip("/") + "/" if head else ""
        full = os.path.join(head, tail)
        full = full + "/" if is_dir else full
        return self.path if full == self.path else full   # the same string, not a copy

    @property
    def is_dir(self) -> bool:
        return self.full_path.endswith("/")

    @property
    def target(self) -> str:
        """The path without the directory marker."""
        return self.full_path.rstrip("/") or "/"

    def identity(self) -> tuple:
        return ("file", self.target)

    def validate(self) -> None:
        if not (self.path or (self.dirname and self.basename)):
            raise FieldError("path", "file needs a path (or dirname and basename)")
        path = self._full_path = self._compute_full_path()  # parameters are fixed from here on
        if not os.path.isabs(path):
            raise FieldError("path", f"path must be absolute: {shown(path)}")
        if ".." in path.split("/"):
            raise FieldError("path", f"path must not contain '..': {shown(path)}")
        if self.state not in ("exists", "absent"):
            raise FieldError("state", f"state must be 'exists' or 'absent', not {shown(self.state)}")
        self.mode_bits = parse_mode(self.mode)
        self._seen = None   # here, with the other attributes: set later it would grow the __dict__
        if self.fragments is not None:
            check_fragment_fields(self.fragments, path, content=self.content, source=self.source,
                                  state=self.state, is_dir=self.is_dir, purge=self.purge)
        if self.symlink:
            check_link_fields(is_dir=self.is_dir, state=self.state, source=self.source, content=self.content,
                              fragments=self.fragments, recurse=self.recurse, purge=self.purge, mode=self.mode)
        if self.content is not None and self.source is not None:
            raise FieldError("source", "give content or source, not both")
        if self.is_dir and self.content is not None:
            raise FieldError("content", f"{path} is a directory (trailing '/'): it has no content")
        if self.source is not None and not self.symlink and not os.path.isabs(self.source):
            raise FieldError("source", f"source must be an absolute path: {shown(self.source)}")

    # --- autoedges / watches -----------------------------------------------
    def autoedge_provides(self) -> list[str]:
        """A directory: its path (what is under it runs after it); a file:
        ``file:PATH`` (a svc runs after the file holding its unit)."""
        if self.state != "exists":
            return []
        if self.is_dir:
            return [self.target]
        return [f"file:{self.target}", ENTRY_TOKEN + os.path.dirname(self.target)]

    def autoedge_requires(self) -> list[str]:
        """Its directories (at any depth), the package that ships it or its
        directory, and its owner and group when named."""
        tokens = []
        parent = os.path.dirname(self.target)
        tokens += [f"pkgfile:{self.target}", f"pkgfile:{parent}"]
        while parent and parent != "/":
            tokens.append(parent)
            parent = os.path.dirname(parent)
        if isinstance(self.owner, str) and self.owner and not self.owner.isdigit():
            tokens.append(f"user:{self.owner}")
        if isinstance(self.group, str) and self.group and not self.group.isdigit():
            tokens.append(f"group:{self.group}")
        return tokens + fragment_requires(self.fragments or [])

    def watch_paths(self) -> list[str]:
        paths = [self.target]
        if self.source and not self.symlink:  # a link's target is not what it manages
            paths.append(self.source)
        return paths + fragment_watch_paths(self.fragments or [])

    # --- meta.reverse -------------------------------------------------------
    def reverse_problem(self) -> str:
        if self.is_dir:
            return "meta.reverse: a directory cannot be reversed (as in mgmt); only a file"
        if self.source is not None:
            return "meta.reverse: a file with source cannot be reversed (as in mgmt); give content"
        return ""

    def reversal(self) -> dict[str, Any]:
        """What puts back the object found now: nothing there -> absent; a
        regular file -> that file, with the old content, mode, owner and group
        of what this resource manages (all of them when it removes the file)."""
        params: dict[str, Any] = {"path": self.target, "state": "absent"}
        anchor = self.confinement.anchor if self.confinement is not None else None
        try:
            place = locate(self.target, anchor)
        except MissingParent:
            return params
        except PlaceError as err:
            raise ResourceError(f"cannot record its reversal: {err}") from None
        with place:
            st = place.lstat()
            if st is None:
                return params
            if not stat.S_ISREG(st.st_mode):
                raise ResourceError(f"cannot record its reversal: {self.target} is "
                                    f"{describe(st.st_mode)}, only a regular file can be put back")
            params["state"] = "exists"
            whole = self.state == "absent"   # it removes the file: keep all of it
            if whole or self.content is not None or self.fragments is not None:
                try:
                    params["content"] = place.read().decode()
                except UnicodeDecodeError:
                    raise ResourceError(f"cannot record its reversal: {self.target} is not UTF-8 "
                                        "text (content is a string)") from None
            if whole or self.mode is not None:
                params["mode"] = f"{stat.S_IMODE(st.st_mode):04o}"
            if whole or self.owner is not None:
                params["owner"] = str(st.st_uid)
            if whole or self.group is not None:
                params["group"] = str(st.st_gid)
        return params

    # --- check/apply --------------------------------------------------------
    confinement: Confinement | None = None   # set on collected files

    def same_as(self, other: Resource) -> bool:
        return super().same_as(other) and self.confinement == getattr(other, "confinement", None)

    def _safe_mode(self, mode: int) -> int:
        """A mode as written: a collected file gets no setuid, setgid or sticky
        bit (not even one kept from the file it replaces) unless allowed."""
        if self.confinement is not None and "setid" not in self.confinement.allow:
            return mode & ~SPECIAL_BITS
        return mode

    def _wanted_content(self) -> bytes | None:
        if self.content is not None:
            return self.content.encode()
        if self.fragments is not None:
            return read_fragments(self.fragments)
        if self.source is not None and not self.is_dir:
            try:
                with open(self.source, "rb") as src:
                    return src.read()
            except OSError as err:
                raise ResourceError(f"cannot read source {self.source}: {err.strerror}") from None
        return None

    def _missing_parent(self, parent: str) -> ResourceError:
        return ResourceError(
            f"parent directory {parent}/ does not exist: declare it as a file resource "
            f"(path: \"{parent}/\", state: exists) or set recurse: true"
        )

    def _require_parent(self, place: Place) -> None:
        """Before creating the object: its directory must exist (an anchored
        place's directory does, it was opened on the way)."""
        if place.dir_fd is not None or os.path.isdir(place.dir_path):
            return
        if self.recurse:
            os.makedirs(place.dir_path, exist_ok=True)
            return
        raise self._missing_parent(place.dir_path)

    def _locate(self, apply: bool) -> Place | None:
        """The object's place; None when a parent is missing and nothing may be created."""
        anchor = self.confinement.anchor if self.confinement is not None else None
        try:
            return locate(self.target, anchor)
        except MissingParent as missing:
            if self.state == "absent":
                return None
            if not apply:
                self.ctx.report("info", f"would create {self.full_path}")
                return None
            if not self.recurse:
                raise self._missing_parent(missing.directory) from None
            return locate(self.target, anchor, make_parents=True)

    def check_apply(self, apply: bool) -> bool:
        before = time.time_ns()   # before the lstat: see filesig.trusted
        try:
            place = self._locate(apply)
            if place is None:
                return self.state == "absent"
            with place:
                if self.symlink:
                    spec = LinkSpec(self.target, self.source, self.state, self.force,
                                    _uid(self.owner), _gid(self.group))
                    return link_check_apply(place, spec, apply, self.ctx.report,
                                            lambda: self._require_parent(place))
                if self.state == "absent":
                    return self._absent(place, apply)
                return self._exists(place, apply, before)
        except PlaceError as err:
            raise ResourceError(str(err)) from None
        except OSError as err:
            where = err.filename or self.target
            raise ResourceError(f"{where}: {err.strerror}") from None

    def _absent(self, place: Place, apply: bool) -> bool:
        st = place.lstat()
        if st is None:
            return True
        if not apply:
            self.ctx.report("info", f"would remove {self.target}")
            return False
        if stat.S_ISDIR(st.st_mode) and not (self.recurse or self.force):
            try:
                place.remove(recursive=False)
            except OSError as err:
                raise ResourceError(
                    f"{self.target}/ is not empty: set recurse: true to remove it with its content"
                ) from err
        else:
            place.remove(recursive=True)
        return False

    def _exists(self, place: Place, apply: bool, before: int) -> bool:
        st = place.lstat()
        if st is not None and stat.S_ISDIR(st.st_mode) != self.is_dir:
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a directory"
            if not self.force:
                raise ResourceError(f"{self.target} is {what}: set force: true to replace it")
            if not apply:
                self.ctx.report("info", f"would replace {self.target}")
                return False
            place.remove(recursive=True)
            st = None
        if self.is_dir:
            return self._directory(place, st, apply)
        return self._regular(place, st, apply, before)

    def _directory(self, place: Place, st: os.stat_result | None, apply: bool) -> bool:
        in_state = True
        if st is None:
            if not apply:
                self.ctx.report("info", f"would create directory {self.target}/")
                return False
            self._require_parent(place)
            place.mkdir(self._safe_mode(self.mode_bits if self.mode_bits is not None else 0o755))
            st = place.lstat()
            in_state = False
        if self.source is not None:
            in_state &= self._sync_tree(place, apply)
        return self._attributes(place, st, apply) and in_state

    def _regular(self, place: Place, st: os.stat_result | None, apply: bool, before: int) -> bool:
        wanted = self._wanted_content()
        if st is None:
            if not apply:
                self.ctx.report("info", f"would create {self.target}")
                return False
            self._require_parent(place)
            mode = self.mode_bits if self.mode_bits is not None else 0o644
            place.write_atomically(wanted or b"", self._safe_mode(mode), _uid(self.owner), _gid(self.group))
            Resource.memos_changed()   # to be confirmed (see confirm)
            return False
        if stat.S_ISLNK(st.st_mode) and wanted is None:
            raise ResourceError(f"{self.target} is a symbolic link: mode and owner are never set "
                                "through one (give content to replace it by a file)")
        if wanted is not None and not self._content_holds(place, st, wanted, before):
            if not apply:
                self._report_diff(place, wanted)
                return False
            keep = stat.S_ISREG(st.st_mode)  # a link or a FIFO being replaced lends nothing
            mode = self.mode_bits if self.mode_bits is not None else (
                stat.S_IMODE(st.st_mode) if keep else 0o644)
            uid = _uid(self.owner) if self.owner is not None else (st.st_uid if keep else -1)
            gid = _gid(self.group) if self.group is not None else (st.st_gid if keep else -1)
            place.write_atomically(wanted, self._safe_mode(mode), uid, gid)
            return False
        return self._attributes(place, st, apply)

    # The signature of the file last found holding ``content``, trusted to stand for
    # it (None: read and compare): see mgmtd.resources.filesig for why that is sound.
    _seen: bytes | None = None

    def _content_holds(self, place: Place, st: os.stat_result, wanted: bytes, before: int) -> bool:
        fixed = self.content is not None   # fragments and source are read anew each time
        if fixed and self._seen is not None and self._seen == signature(st):
            return True
        if not self._holds(place, st, wanted):
            self._forget()
            return False
        if fixed:
            seen = signature(st) if trusted(st, before) else None
            if seen != self._seen:
                self._seen = seen
                Resource.memos_changed()
        return True

    def _forget(self) -> None:
        if self._seen is not None:
            self._seen = None
            Resource.memos_changed()

    def quick_check(self) -> bool:
        """In state, proved by one lstat, as check_apply would find it (anything
        else and it runs): absent and not there; a directory (no source) that
        is one; a file whose signature is the one trusted for this content. And
        mode and owner as wanted."""
        if self.confinement is not None or self.symlink:
            return False
        full = self.full_path
        is_dir = full.endswith("/")
        absent = self.state == "absent"
        if not absent and not is_dir and self._seen is None:
            return False
        try:
            st = os.lstat(full.rstrip("/") or "/")
        except FileNotFoundError:
            return absent
        except OSError:
            return False
        if absent:
            return False
        if is_dir:
            if not stat.S_ISDIR(st.st_mode) or self.source is not None:
                return False
        elif signature(st) != self._seen:
            return False
        if self._mode_differs(st):
            return False
        owner, group = self.owner, self.group
        if isinstance(owner, str) and not owner.isdigit() or isinstance(group, str) and not group.isdigit():
            return False   # a name: looking it up is no quick check
        return not _owner_differs(st, _uid(owner), _gid(group))

    # --- memos (mgmtd.engine.memos): the trusted signature, across runs ------------
    def memo_key(self) -> str | None:
        return f"file:{self.full_path}" if self.content is not None and not self.symlink else None

    def _content_digest(self) -> bytes:
        return hashlib.blake2b(self.content.encode(), digest_size=16).digest()

    def memo(self) -> tuple[str, bytes] | None:
        key = self.memo_key()
        if key is None or self._seen is None:
            return None
        return key, self._seen + self._content_digest()

    def recall(self, value: bytes) -> bool:
        if self.memo_key() is None or value[SIGNATURE_SIZE:] != self._content_digest():
            return False   # about another content: worthless
        self._seen = value[:SIGNATURE_SIZE]
        return True

    def confirm(self) -> bool:
        """A file believed in state (just written, or found so while its ctime was
        too recent to trust) is read once more, now that the ctime may have settled.
        Returns True when it could not be proved yet (its ctime is too recent)."""
        if self._seen is not None or self.memo_key() is None or self.state == "absent" or self.is_dir:
            return False
        before = time.time_ns()
        anchor = self.confinement.anchor if self.confinement is not None else None
        try:
            with locate(self.target, anchor) as place:
                st = place.lstat()
                if st is None or not self._holds(place, st, self.content.encode()):
                    return False   # not in state: its next check reads it
                if not trusted(st, before):
                    return local_device(st.st_dev)   # too recent: once more later
                self._seen = signature(st)   # saved by the save that asked (no count)
        except (OSError, PlaceError):
            pass   # not there as wanted: the next check reads it
        return False

    @staticmethod
    def _holds(place: Place, st: os.stat_result, wanted: bytes) -> bool:
        """True when the object is a regular file with exactly this content."""
        if not stat.S_ISREG(st.st_mode) or st.st_size != len(wanted):
            return False
        try:
            return place.read() == wanted
        except PlaceError:
            return False  # swapped for something else since the lstat: rewrite it

    def _attributes(self, place: Place, st: os.stat_result, apply: bool) -> bool:
        in_state = True
        untrusted = self.confinement is not None
        if self._mode_differs(st):
            if not apply:
                self.ctx.report("info", f"would chmod {self.target} "
                                f"{oct(stat.S_IMODE(st.st_mode))} -> {oct(self.mode_bits)}")
                return False
            place.chmod(self._safe_mode(self.mode_bits), self.is_dir, single_link=untrusted)
            in_state = False
        uid, gid = _uid(self.owner), _gid(self.group)
        if _owner_differs(st, uid, gid):
            if not apply:
                self.ctx.report("info", f"would chown {self.target} to {self.owner}:{self.group}")
                return False
            place.chown(uid, gid, self.is_dir, single_link=untrusted)
            in_state = False
        return in_state

    def _mode_differs(self, st: os.stat_result) -> bool:
        return self.mode_bits is not None and stat.S_IMODE(st.st_mode) != self._safe_mode(self.mode_bits)

    def _report_diff(self, place: Place, wanted: bytes) -> None:
        try:
            old = place.read().decode(errors="replace").splitlines(keepends=True)
        except OSError:
            old = []
        new = wanted.decode(errors="replace").splitlines(keepends=True)
        diff = "".join(difflib.unified_diff(old, new, self.target, self.target + " (wanted)"))
        self.ctx.report("info", f"would change content of {self.target}:\n{diff.rstrip()}")

    def _sync_tree(self, place: Place, apply: bool) -> bool:
        """Directory with a source: copy what differs; with purge, delete extras."""
        source = self.source.rstrip("/")
        if not os.path.isdir(source):
            raise ResourceError(f"source {source} is not a directory")
        with place.inside() as dest:
            in_state = self._sync_dir(source, dest, apply)
        if not in_state and not apply:
            self.ctx.report("info", f"would sync {self.target}/ from {source}/")
        return in_state

    def _sync_dir(self, source: str, dest: Place, apply: bool) -> bool:
        """One directory level of a tree copy; ``dest`` is the open destination directory."""
        in_state = True
        wanted = set()
        for entry in sorted(os.scandir(source), key=lambda e: e.name):
            wanted.add(entry.name)
            target = dest.at(entry.name)
            st = target.lstat()
            if entry.is_dir(follow_symlinks=False):
                if st is None:
                    in_state = False
                    if not apply:
                        continue
                    target.mkdir(0o755)
                with target.inside() as below:
                    in_state &= self._sync_dir(entry.path, below, apply)
            elif entry.is_file():
                with open(entry.path, "rb") as handle:
                    data = handle.read()
                if st is None or not self._holds(target, st, data):
                    in_state = False
                    if apply:
                        target.write_atomically(data, self._safe_mode(stat.S_IMODE(os.stat(entry.path).st_mode)))
        if self.purge:
            for name in sorted(set(os.listdir(dest.dir_fd)) - wanted):
                in_state = False
                if apply:
                    dest.at(name).remove(recursive=True)
        return in_state
