"""``file``: a file or (path ending in ``/``) a directory, its content, mode and owner.

Writes are atomic: a temporary file in the same directory, fsync, rename, so a
crash leaves either the old or the new content, never half of it."""

from __future__ import annotations

import difflib
import grp
import os
import pwd
import shutil
import stat
import tempfile

from mgmtd.resources.base import Field, FieldError, Resource, ResourceError

TEMP_PREFIX = ".mgmtd-tmp-"


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
            raise FieldError("mode", f"mode {value!r} is not an octal number like '0644'") from None
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


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
    directory = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            os.fchmod(out.fileno(), mode)
            if uid != -1 or gid != -1:
                os.fchown(out.fileno(), uid, gid)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


class FileResource(Resource):
    kind = "file"
    FIELDS = {
        "path": Field((str,), None, doc="absolute path; a trailing '/' means a directory"),
        "dirname": Field((str,), None, doc="replaces the directory part of path"),
        "basename": Field((str,), None, doc="replaces the last part of path"),
        "content": Field((str,), None, doc="exact content; unset = content not managed"),
        "source": Field((str,), None, doc="copy content from this local file"),
        "state": Field((str,), "exists", doc="exists or absent"),
        "mode": Field((int, str), None, doc="permissions, octal: '0644'"),
        "owner": Field((str, int), None, doc="user name or uid"),
        "group": Field((str, int), None, doc="group name or gid"),
        "recurse": Field((bool,), False, doc="create missing parents; remove non-empty dirs"),
        "force": Field((bool,), False, doc="replace a file by a directory or the other way round"),
        "purge": Field((bool,), False, doc="directory with source: delete entries not in source"),
    }

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
        return full + "/" if is_dir else full

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
            raise FieldError("path", f"path must be absolute: {path!r}")
        if ".." in path.split("/"):
            raise FieldError("path", f"path must not contain '..': {path!r}")
        if self.state not in ("exists", "absent"):
            raise FieldError("state", f"state must be 'exists' or 'absent', not {self.state!r}")
        self.mode_bits = parse_mode(self.mode)
        if self.content is not None and self.source is not None:
            raise FieldError("source", "give content or source, not both")
        if self.is_dir and self.content is not None:
            raise FieldError("content", f"{path} is a directory (trailing '/'): it has no content")
        if self.source is not None and not os.path.isabs(self.source):
            raise FieldError("source", f"source must be an absolute path: {self.source!r}")

    # --- autoedges / watches -----------------------------------------------
    def autoedge_provides(self) -> list[str]:
        return [self.target] if self.is_dir and self.state == "exists" else []

    def autoedge_requires(self) -> list[str]:
        parents = []
        parent = os.path.dirname(self.target)
        while parent and parent != "/":
            parents.append(parent)
            parent = os.path.dirname(parent)
        return parents

    def watch_paths(self) -> list[str]:
        paths = [self.target]
        if self.source:
            paths.append(self.source)
        return paths

    # --- check/apply --------------------------------------------------------
    def _wanted_content(self) -> bytes | None:
        if self.content is not None:
            return self.content.encode()
        if self.source is not None and not self.is_dir:
            try:
                with open(self.source, "rb") as src:
                    return src.read()
            except OSError as err:
                raise ResourceError(f"cannot read source {self.source}: {err.strerror}") from None
        return None

    def _require_parent(self) -> None:
        parent = os.path.dirname(self.target) or "/"
        if os.path.isdir(parent):
            return
        if self.recurse:
            os.makedirs(parent, exist_ok=True)
            return
        raise ResourceError(
            f"parent directory {parent}/ does not exist: declare it as a file resource "
            f"(path: \"{parent}/\", state: exists) or set recurse: true"
        )

    def check_apply(self, apply: bool) -> bool:
        try:
            if self.state == "absent":
                return self._absent(apply)
            return self._exists(apply)
        except OSError as err:
            where = err.filename or self.target
            raise ResourceError(f"{where}: {err.strerror}") from None

    def _absent(self, apply: bool) -> bool:
        try:
            st = os.lstat(self.target)
        except FileNotFoundError:
            return True
        if not apply:
            self.ctx.report("info", f"would remove {self.target}")
            return False
        if stat.S_ISDIR(st.st_mode):
            if self.recurse or self.force:
                shutil.rmtree(self.target)
            else:
                try:
                    os.rmdir(self.target)
                except OSError as err:
                    raise ResourceError(
                        f"{self.target}/ is not empty: set recurse: true to remove it with its content"
                    ) from err
        else:
            os.unlink(self.target)
        return False

    def _exists(self, apply: bool) -> bool:
        try:
            st: os.stat_result | None = os.lstat(self.target)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode) != self.is_dir:
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a directory"
            if not self.force:
                raise ResourceError(f"{self.target} is {what}: set force: true to replace it")
            if not apply:
                self.ctx.report("info", f"would replace {self.target}")
                return False
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(self.target)
            else:
                os.unlink(self.target)
            st = None
        if self.is_dir:
            return self._directory(st, apply)
        return self._regular(st, apply)

    def _directory(self, st: os.stat_result | None, apply: bool) -> bool:
        in_state = True
        if st is None:
            if not apply:
                self.ctx.report("info", f"would create directory {self.target}/")
                return False
            self._require_parent()
            os.mkdir(self.target, self.mode_bits if self.mode_bits is not None else 0o755)
            if self.mode_bits is not None:
                os.chmod(self.target, self.mode_bits)  # mkdir's mode is masked by the umask
            st = os.lstat(self.target)
            in_state = False
        if self.source is not None:
            in_state &= self._sync_tree(apply)
        return self._attributes(st, apply) and in_state

    def _regular(self, st: os.stat_result | None, apply: bool) -> bool:
        wanted = self._wanted_content()
        if st is None:
            if not apply:
                self.ctx.report("info", f"would create {self.target}")
                return False
            self._require_parent()
            mode = self.mode_bits if self.mode_bits is not None else 0o644
            write_atomically(self.target, wanted or b"", mode, _uid(self.owner), _gid(self.group))
            return False
        in_state = True
        if wanted is not None:
            current = b""
            if st.st_size == len(wanted):
                with open(self.target, "rb") as existing:
                    current = existing.read()
            if st.st_size != len(wanted) or current != wanted:
                if not apply:
                    self._report_diff(wanted)
                    return False
                mode = self.mode_bits if self.mode_bits is not None else stat.S_IMODE(st.st_mode)
                uid = _uid(self.owner) if self.owner is not None else st.st_uid
                gid = _gid(self.group) if self.group is not None else st.st_gid
                write_atomically(self.target, wanted, mode, uid, gid)
                return False
        return self._attributes(st, apply) and in_state

    def _attributes(self, st: os.stat_result, apply: bool) -> bool:
        in_state = True
        if self.mode_bits is not None and stat.S_IMODE(st.st_mode) != self.mode_bits:
            if not apply:
                self.ctx.report("info", f"would chmod {self.target} "
                                f"{oct(stat.S_IMODE(st.st_mode))} -> {oct(self.mode_bits)}")
                return False
            os.chmod(self.target, self.mode_bits)
            in_state = False
        uid, gid = _uid(self.owner), _gid(self.group)
        if (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid):
            if not apply:
                self.ctx.report("info", f"would chown {self.target} to {self.owner}:{self.group}")
                return False
            os.lchown(self.target, uid, gid)
            in_state = False
        return in_state

    def _report_diff(self, wanted: bytes) -> None:
        try:
            with open(self.target, "rb") as existing:
                old = existing.read().decode(errors="replace").splitlines(keepends=True)
        except OSError:
            old = []
        new = wanted.decode(errors="replace").splitlines(keepends=True)
        diff = "".join(difflib.unified_diff(old, new, self.target, self.target + " (wanted)"))
        self.ctx.report("info", f"would change content of {self.target}:\n{diff.rstrip()}")

    def _sync_tree(self, apply: bool) -> bool:
        """Directory with a source: copy what differs; with purge, delete extras."""
        source = self.source.rstrip("/")
        if not os.path.isdir(source):
            raise ResourceError(f"source {source} is not a directory")
        in_state = True
        for root, dirs, files in os.walk(source):
            rel = os.path.relpath(root, source)
            dest_root = os.path.normpath(os.path.join(self.target, rel))
            for name in dirs:
                dest = os.path.join(dest_root, name)
                if not os.path.isdir(dest):
                    in_state = False
                    if apply:
                        os.mkdir(dest)
            for name in files:
                src, dest = os.path.join(root, name), os.path.join(dest_root, name)
                with open(src, "rb") as handle:
                    data = handle.read()
                try:
                    with open(dest, "rb") as handle:
                        same = handle.read() == data
                except FileNotFoundError:
                    same = False
                if not same:
                    in_state = False
                    if apply:
                        write_atomically(dest, data, stat.S_IMODE(os.stat(src).st_mode))
            if self.purge:
                wanted = set(dirs) | set(files)
                for name in os.listdir(dest_root) if os.path.isdir(dest_root) else ():
                    if name not in wanted:
                        in_state = False
                        if apply:
                            extra = os.path.join(dest_root, name)
                            if os.path.isdir(extra) and not os.path.islink(extra):
                                shutil.rmtree(extra)
                            else:
                                os.unlink(extra)
        if not in_state and not apply:
            self.ctx.report("info", f"would sync {self.target}/ from {source}/")
        return in_state
