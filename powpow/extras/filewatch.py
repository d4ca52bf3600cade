"""FileWatcher: file and directory change notifications on the loop (powers live reload).

Backends, chosen once per watcher:

* ``inotify`` (Linux, native module): one inotify fd registered with the loop;
  a directory watch per watched directory (per subdirectory too when
  ``recursive``; new subdirectories are added as they appear, and files
  created in them before the watch existed are reported as created).
* ``poll`` (everywhere, and with ``POWPOW_PURE=1``): an interval timer that
  stats the tree and diffs snapshots.  Renames are recognised by inode.

Either way ``callback(event)`` receives a ``FileEvent(kind, path, dest)``;
``kind`` is a ``Change``: MODIFIED, CREATED, DELETED, RENAMED (``path`` ->
``dest``) or ATTRIB.  Watching a *file* watches its parent directory and
filters by name, so editors that save by writing a temporary file and
renaming it over the original keep being seen (a watch on the file's inode
would die with the old inode).  inotify's MOVED_FROM/MOVED_TO pair is joined
by cookie within one read; an unpaired MOVED_FROM means the file left the
tree (DELETED), an unpaired MOVED_TO that it entered (CREATED; a directory
is then watched, and what it holds is reported as CREATED too).  A directory
that left the tree takes its watches with it: the kernel keeps reporting a
watched inode wherever it moves, so without ``inotify_rm_watch`` writes in
its new home would be reported under its old path in the tree.  A kernel
queue overflow is logged and reported as MODIFIED on the watched path.

A subdirectory that cannot be watched -- one the process may not read
(``EACCES``/``EPERM``, e.g. a private directory under a served tree), or one
gone again (``ENOENT``/``ENOTDIR``) -- is skipped, with one warning for the
unreadable ones, at start as when it appears later: the rest of the tree is
still watched (a live-reload server must not refuse to start for it).  Only
the watched path itself must be watchable.  The poll backend skips what it
cannot list the same way.
"""
import errno
import enum
import logging
import os
import stat
import struct
from typing import Callable, Dict, List, NamedTuple, Optional, Set

from .. import _ffi
from ..loop import Loop

__all__ = ["Change", "FileEvent", "FileWatcher"]

log = logging.getLogger("powpow.extras")


class Change(enum.Enum):
    MODIFIED = "modified"
    CREATED = "created"
    DELETED = "deleted"
    RENAMED = "renamed"
    ATTRIB = "attrib"


class FileEvent(NamedTuple):
    kind: Change
    path: str
    dest: Optional[str] = None


# why a directory below the root cannot be watched (inotify_add_watch, scandir)
_UNREADABLE = frozenset((errno.EACCES, errno.EPERM))
_GONE = frozenset((errno.ENOENT, errno.ENOTDIR))

_EVENT_HEAD = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then name)


def inotify_available() -> bool:
    return bool(_ffi.NATIVE and _ffi.lib.PP_HAVE_INOTIFY)


class FileWatcher:
    """Watch ``path`` (a file or a directory); ``callback(FileEvent)`` on the loop thread.

    ``backend``: "inotify" or "poll" (default: inotify when available).
    ``poll_interval_ms``: how often the poll backend stats the tree.
    Call ``close()`` when done (it releases the fd or the interval timer).
    """

    def __init__(self, loop: Loop, path, callback: Callable[[FileEvent], object], recursive: bool = False,
                 backend: Optional[str] = None, poll_interval_ms: int = 500) -> None:
        self.loop = loop
        self.path = os.path.abspath(os.fspath(path))
        self.callback = callback
        self.recursive = recursive
        if not os.path.exists(self.path):
            raise FileNotFoundError(2, "cannot watch %r: no such file or directory" % self.path)
        self._is_dir = os.path.isdir(self.path)
        self._root = self.path if self._is_dir else os.path.dirname(self.path)
        self._only = None if self._is_dir else os.path.basename(self.path)
        if backend is None:
            backend = "inotify" if inotify_available() else "poll"
        if backend == "inotify" and not inotify_available():
            raise ValueError("inotify backend needs Linux and the native module")
        if backend not in ("inotify", "poll"):
            raise ValueError("unknown FileWatcher backend %r" % (backend,))
        self.backend = backend
        self._closed = False
        self._fd = -1
        self._timer = None
        self._unreadable: Set[str] = set()  # poll backend: directories it could not list last time
        if backend == "inotify":
            self._start_inotify()
        else:
            self._snapshot = self._scan()
            self._timer = loop.add_interval(poll_interval_ms, self._poll)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._fd >= 0:
            self.loop.unregister(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._timer is not None:
            self.loop.cancel_timer(self._timer)
            self._timer = None

    def __enter__(self) -> "FileWatcher":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _emit(self, kind: Change, path: str, dest: Optional[str] = None) -> None:
        if self._only is not None:
            name = self._only
            if os.path.basename(path) != name and (dest is None or os.path.basename(dest) != name):
                return
            if os.path.dirname(path) != self._root and (dest is None or os.path.dirname(dest) != self._root):
                return
        try:
            self.callback(FileEvent(kind, path, dest))
        except Exception as exc:
            # to the loop's handler, as any callback's error: the other changes of the same
            # read or scan are still reported (they were lost with the rest of the batch)
            self.loop._exception_handler(exc, self.callback)

    # ------------------------------------------------------------ inotify

    def _start_inotify(self) -> None:
        lib = _ffi.lib
        fd = lib.pp_inotify_init()
        if fd < 0:
            raise OSError(-fd, "inotify_init1: " + os.strerror(-fd))
        self._fd = fd
        self._mask = (lib.PP_IN_MODIFY | lib.PP_IN_ATTRIB | lib.PP_IN_CREATE | lib.PP_IN_DELETE
                      | lib.PP_IN_MOVED_FROM | lib.PP_IN_MOVED_TO | lib.PP_IN_DELETE_SELF | lib.PP_IN_MOVE_SELF)
        self._wds = {}  # wd -> directory path
        # while a read is dispatched: watches of directories moved away, unless watched again since
        # (MOVED_TO pairs, or a subdirectory comes back into the tree); their events are skipped
        self._left_wds: Set[int] = set()
        try:
            self._add_dir(self._root)
            if self.recursive and self._is_dir:
                for dirpath, dirnames, _ in os.walk(self._root):
                    for d in dirnames:
                        self._add_subdir(os.path.join(dirpath, d))
            self.loop.register(fd, 0x001, self._on_inotify)  # (a closed loop raises: the fd goes too)
        except BaseException:
            os.close(fd)
            self._fd = -1
            raise

    def _add_dir(self, path: str) -> None:
        wd = _ffi.lib.pp_inotify_add_watch(self._fd, os.fsencode(path), self._mask)
        if wd < 0:
            raise OSError(-wd, "inotify_add_watch(%r): %s" % (path, os.strerror(-wd)))
        self._wds[wd] = path
        self._left_wds.discard(wd)  # (the same inode gives the same wd)

    def _add_subdir(self, path: str) -> bool:
        """Watch a directory below the root; skip it (False) when it cannot be watched
        (see the module docstring).  Other errors (ENOSPC: no watch left) raise."""
        try:
            self._add_dir(path)
            return True
        except OSError as exc:
            if exc.errno in _UNREADABLE:
                log.warning("not watching %s for changes: %s", path, os.strerror(exc.errno))
                return False
            if exc.errno in _GONE:
                return False  # removed or replaced meanwhile: its DELETE events follow
            raise

    def _on_inotify(self, fd: int, events: int) -> None:
        chunks = []
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
        if chunks:
            self._dispatch(b"".join(chunks))

    def _dispatch(self, data: bytes) -> None:
        lib = _ffi.lib
        moved_from = {}  # cookie -> index in out
        leaving: Dict[int, List[int]] = {}  # cookie -> the watches of a directory moved away, and those below it
        left_wds = self._left_wds
        left_wds.clear()
        out = []
        pos = 0
        head = _EVENT_HEAD
        while pos + head.size <= len(data):
            wd, mask, cookie, ln = head.unpack_from(data, pos)
            raw = data[pos + head.size:pos + head.size + ln]
            pos += head.size + ln
            name = os.fsdecode(raw.rstrip(b"\0"))
            if mask & lib.PP_IN_Q_OVERFLOW:
                log.warning("inotify queue overflowed watching %s: some changes were merged", self.path)
                out.append((Change.MODIFIED, self.path, None))
                continue
            base = self._wds.get(wd)
            if base is None or wd in left_wds:
                continue
            if mask & lib.PP_IN_IGNORED:
                self._wds.pop(wd, None)
                continue
            path = os.path.join(base, name) if name else base
            is_dir = mask & lib.PP_IN_ISDIR
            if mask & lib.PP_IN_CREATE:
                out.append((Change.CREATED, path, None))
                if is_dir and self.recursive and self._is_dir:
                    self._watch_new_dir(path, out)
            elif mask & lib.PP_IN_MODIFY:
                if not out or out[-1] != (Change.MODIFIED, path, None):
                    out.append((Change.MODIFIED, path, None))
            elif mask & lib.PP_IN_ATTRIB:
                out.append((Change.ATTRIB, path, None))
            elif mask & lib.PP_IN_DELETE:
                out.append((Change.DELETED, path, None))
            elif mask & lib.PP_IN_MOVED_FROM:
                moved_from[cookie] = len(out)
                out.append((Change.DELETED, path, None))  # becomes RENAMED if MOVED_TO follows
                if is_dir:
                    wds = self._watches_under(path)
                    if wds:
                        leaving[cookie] = wds
                        left_wds.update(wds)
            elif mask & lib.PP_IN_MOVED_TO:
                i = moved_from.pop(cookie, None)
                left_wds.difference_update(leaving.pop(cookie, ()))  # renamed within the tree: still ours
                if i is None:
                    out.append((Change.CREATED, path, None))
                else:
                    out[i] = (Change.RENAMED, out[i][1], path)
                if is_dir and self.recursive and self._is_dir:
                    self._watch_new_dir(path, out)
            elif mask & (lib.PP_IN_DELETE_SELF | lib.PP_IN_MOVE_SELF):
                if base == self._root and not name:
                    out.append((Change.DELETED, base, None))
                    if self._only is not None:  # watching one file: it is gone from its path too
                        out.append((Change.DELETED, os.path.join(base, self._only), None))
                    # Moved away, the root's inode (and those below) would go on reporting
                    # under the old paths, wherever they went: stop watching them all.
                    self._unwatch(list(self._wds))
        for wds in leaving.values():  # no MOVED_TO: moved out of the tree
            self._unwatch([wd for wd in wds if wd in left_wds])
        left_wds.clear()
        for kind, path, dest in out:
            if self._closed:
                return
            self._emit(kind, path, dest)

    def _watches_under(self, path: str) -> List[int]:
        """The watch descriptors of directory ``path`` and of every directory below it."""
        below = path + os.sep
        return [wd for wd, p in self._wds.items() if p == path or p.startswith(below)]

    def _unwatch(self, wds: List[int]) -> None:
        for wd in wds:
            if self._wds.pop(wd, None) is not None:
                # -EINVAL: the kernel dropped it already (IN_IGNORED is on its way); the entry is gone either way
                _ffi.lib.pp_inotify_rm_watch(self._fd, wd)

    def _watch_new_dir(self, path: str, out: list) -> None:
        try:
            if not self._add_subdir(path):
                return
            for dirpath, dirnames, filenames in os.walk(path):
                for d in dirnames:
                    self._add_subdir(os.path.join(dirpath, d))
                    out.append((Change.CREATED, os.path.join(dirpath, d), None))
                for f in filenames:
                    out.append((Change.CREATED, os.path.join(dirpath, f), None))
        except OSError as exc:  # ENOSPC (the watch limit): the loop goes on, one line says what is missed
            log.warning("not watching %s for changes: %s", path, exc)

    # ------------------------------------------------------------ polling

    def _scan(self) -> dict:
        snap = {}
        if not self._is_dir:
            self._stat_into(snap, self.path)
            return snap
        self._stat_into(snap, self._root)
        unlisted: List[OSError] = []
        if self.recursive:
            for dirpath, dirnames, filenames in os.walk(self._root, onerror=unlisted.append):
                for n in dirnames + filenames:
                    self._stat_into(snap, os.path.join(dirpath, n))
        else:
            try:
                with os.scandir(self._root) as it:
                    for e in it:
                        self._stat_into(snap, e.path)
            except OSError as exc:
                unlisted.append(exc)
        # one warning per directory that cannot be listed, not one per scan
        # (os.fsdecode: PyPy's os.walk reports a str tree's failed directory as bytes)
        unreadable = {os.fsdecode(e.filename): e.errno for e in unlisted if e.errno in _UNREADABLE}
        for path, code in unreadable.items():
            if path not in self._unreadable:
                log.warning("not watching %s for changes: %s", path, os.strerror(code))
        self._unreadable = set(unreadable)
        return snap

    @staticmethod
    def _stat_into(snap: dict, p: str) -> None:
        try:
            st = os.lstat(p)
        except OSError:
            return
        snap[p] = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode, st.st_ctime_ns)

    def _poll(self) -> None:
        old = self._snapshot
        new = self._scan()
        self._snapshot = new
        removed = [p for p in old if p not in new]
        added = [p for p in new if p not in old]
        by_inode = {new[p][:2]: p for p in added}
        events = []
        for p in removed:
            q = by_inode.pop(old[p][:2], None)
            if q is not None:
                events.append((Change.RENAMED, p, q))
            else:
                events.append((Change.DELETED, p, None))
        renamed_to = {e[2] for e in events if e[0] is Change.RENAMED}
        for p in added:
            if p not in renamed_to:
                events.append((Change.CREATED, p, None))
        for p, a in new.items():
            b = old.get(p)
            if b is None or a == b:
                continue
            if a[1] != b[1]:  # replaced by another inode under the same name
                events.append((Change.MODIFIED, p, None))
            elif (a[2], a[3]) != (b[2], b[3]):
                if not stat.S_ISDIR(a[4]):
                    events.append((Change.MODIFIED, p, None))
            elif (a[4], a[5]) != (b[4], b[5]):
                events.append((Change.ATTRIB, p, None))
        for kind, path, dest in events:
            if self._closed:
                return
            self._emit(kind, path, dest)
