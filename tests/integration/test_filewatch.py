"""FileWatcher: create / modify / attrib / rename / delete, on inotify (native) and polling."""
import os

import pytest

from powpow import Change, FileWatcher
from powpow.extras.filewatch import inotify_available

from ._net import run_until

BACKENDS = ["poll"] + (["inotify"] if inotify_available() else [])


def make(loop, path, backend, **kw):
    events = []
    w = FileWatcher(loop, path, events.append, backend=backend, poll_interval_ms=20, **kw)
    return w, events


def wait_for(loop, events, kind, path, dest=None):
    def seen():
        return any(e.kind is kind and e.path == path and (dest is None or e.dest == dest) for e in events)
    run_until(loop, seen, timeout=5)


@pytest.mark.parametrize("watch_backend", BACKENDS)
def test_directory_create_modify_attrib_rename_delete(loop, tmp_path, watch_backend):
    d = str(tmp_path)
    w, ev = make(loop, d, watch_backend)
    a = os.path.join(d, "a.txt")
    b = os.path.join(d, "b.txt")
    with open(a, "w") as f:
        f.write("one")
    wait_for(loop, ev, Change.CREATED, a)
    with open(a, "a") as f:
        f.write("two")
    wait_for(loop, ev, Change.MODIFIED, a)
    os.chmod(a, 0o600)
    wait_for(loop, ev, Change.ATTRIB, a)
    os.rename(a, b)
    wait_for(loop, ev, Change.RENAMED, a, b)
    os.unlink(b)
    wait_for(loop, ev, Change.DELETED, b)
    assert all(e.path.startswith(d) for e in ev)
    w.close()


@pytest.mark.parametrize("watch_backend", BACKENDS)
def test_recursive_sees_new_subdirectories(loop, tmp_path, watch_backend):
    d = str(tmp_path)
    w, ev = make(loop, d, watch_backend, recursive=True)
    sub = os.path.join(d, "sub")
    os.mkdir(sub)
    wait_for(loop, ev, Change.CREATED, sub)
    inner = os.path.join(sub, "x.py")
    with open(inner, "w") as f:
        f.write("print(1)")
    wait_for(loop, ev, Change.CREATED, inner)
    with open(inner, "a") as f:
        f.write("print(2)")
    wait_for(loop, ev, Change.MODIFIED, inner)
    w.close()


@pytest.mark.parametrize("watch_backend", BACKENDS)
def test_non_recursive_ignores_subdirectory_contents(loop, tmp_path, watch_backend):
    d = str(tmp_path)
    os.mkdir(os.path.join(d, "sub"))
    w, ev = make(loop, d, watch_backend)
    with open(os.path.join(d, "sub", "hidden.txt"), "w") as f:
        f.write("x")
    marker = os.path.join(d, "top.txt")
    with open(marker, "w") as f:
        f.write("x")
    wait_for(loop, ev, Change.CREATED, marker)
    assert not any("hidden" in e.path for e in ev)
    w.close()


@pytest.mark.parametrize("watch_backend", BACKENDS)
def test_watching_a_file_survives_atomic_replace(loop, tmp_path, watch_backend):
    target = str(tmp_path / "config.toml")
    with open(target, "w") as f:
        f.write("a = 1")
    other = str(tmp_path / "unrelated.txt")
    w, ev = make(loop, target, watch_backend)
    tmp = str(tmp_path / ".config.toml.swp")
    with open(tmp, "w") as f:
        f.write("a = 2")
    os.replace(tmp, target)  # how editors save
    run_until(loop, lambda: any(target in (e.path, e.dest) for e in ev), timeout=5)
    with open(other, "w") as f:
        f.write("noise")
    with open(target, "a") as f:
        f.write("\nb = 3")
    wait_for(loop, ev, Change.MODIFIED, target)
    assert not any(e.path == other for e in ev)
    os.unlink(target)
    wait_for(loop, ev, Change.DELETED, target)
    w.close()


def test_missing_path_and_bad_backend(loop, tmp_path):
    with pytest.raises(FileNotFoundError):
        FileWatcher(loop, str(tmp_path / "nope"), print)
    with pytest.raises(ValueError):
        FileWatcher(loop, str(tmp_path), print, backend="fsevents")


def _inotify_watch_count(w):
    """How many watches the kernel holds on the watcher's inotify fd (one "inotify wd:" line each)."""
    with open("/proc/self/fdinfo/%d" % w._fd) as f:
        return sum(1 for line in f if line.startswith("inotify wd:"))


@pytest.mark.parametrize("watch_backend", BACKENDS)
def test_directory_renamed_then_moved_out_of_the_tree_is_forgotten(loop, tmp_path, watch_backend):
    tree = tmp_path / "tree"
    (tree / "pkg" / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    w, ev = make(loop, str(tree), watch_backend, recursive=True)
    try:
        old, new = str(tree / "pkg"), str(tree / "pkg2")
        os.rename(old, new)  # within the tree: still watched, under the new name
        wait_for(loop, ev, Change.RENAMED, old, new)
        (tree / "pkg2" / "sub" / "x.py").write_text("1")
        wait_for(loop, ev, Change.CREATED, str(tree / "pkg2" / "sub" / "x.py"))
        os.rename(new, str(outside / "gone"))
        wait_for(loop, ev, Change.DELETED, new)
        (outside / "gone" / "late.py").write_text("1")
        (outside / "gone" / "sub" / "deep.py").write_text("1")
        marker = str(tree / "marker.txt")
        with open(marker, "w") as f:
            f.write("x")
        wait_for(loop, ev, Change.CREATED, marker)  # inotify keeps order: what came before was read
        assert not [e for e in ev if "late.py" in e.path or "deep.py" in e.path], ev
        if watch_backend == "inotify":
            assert _inotify_watch_count(w) == 1  # the root's; the departed directory's two are removed
        # the old name is free for a new directory, watched afresh
        (tree / "pkg2").mkdir()
        fresh = str(tree / "pkg2" / "fresh.py")
        with open(fresh, "w") as f:
            f.write("1")
        wait_for(loop, ev, Change.CREATED, fresh)
    finally:
        w.close()


@pytest.mark.parametrize("watch_backend", BACKENDS)
def test_directory_moved_out_and_written_there_in_one_batch(loop, tmp_path, watch_backend):
    tree = tmp_path / "tree"
    (tree / "pkg").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    w, ev = make(loop, str(tree), watch_backend, recursive=True)
    try:
        # no loop iteration between these: inotify hands all their events over in one read
        os.rename(str(tree / "pkg"), str(outside / "pkg"))
        (outside / "pkg" / "late.py").write_text("1")
        marker = str(tree / "marker.txt")
        with open(marker, "w") as f:
            f.write("x")
        wait_for(loop, ev, Change.CREATED, marker)
        wait_for(loop, ev, Change.DELETED, str(tree / "pkg"))
        assert not [e for e in ev if "late.py" in e.path], ev
        if watch_backend == "inotify":
            assert _inotify_watch_count(w) == 1
    finally:
        w.close()


@pytest.mark.parametrize("watch_backend", BACKENDS)
def test_directory_moved_into_the_tree_is_watched(loop, tmp_path, watch_backend):
    tree = tmp_path / "tree"
    tree.mkdir()
    incoming = tmp_path / "outside" / "incoming"
    (incoming / "sub").mkdir(parents=True)
    (incoming / "sub" / "a.py").write_text("1")
    w, ev = make(loop, str(tree), watch_backend, recursive=True)
    os.rename(str(incoming), str(tree / "incoming"))
    wait_for(loop, ev, Change.CREATED, str(tree / "incoming"))
    wait_for(loop, ev, Change.CREATED, str(tree / "incoming" / "sub" / "a.py"))  # what it brought along
    b = str(tree / "incoming" / "sub" / "b.py")
    with open(b, "w") as f:
        f.write("1")
    wait_for(loop, ev, Change.CREATED, b)
    with open(b, "a") as f:
        f.write("2")
    wait_for(loop, ev, Change.MODIFIED, b)
    w.close()


@pytest.mark.parametrize("watch_backend", BACKENDS)
def test_subdirectory_brought_back_from_a_departed_directory_stays_watched(loop, tmp_path, watch_backend):
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    w, ev = make(loop, str(tree), watch_backend, recursive=True)
    try:
        # in one read: a leaves the tree, its subdirectory b comes back (the same inode, the same watch)
        os.rename(str(tree / "a"), str(outside / "a"))
        os.rename(str(outside / "a" / "b"), str(tree / "b"))
        b = str(tree / "b")
        # inotify: CREATED (it came from outside); polling: RENAMED from a/b (the same inode)
        run_until(loop, lambda: any(b in (e.path, e.dest) for e in ev), timeout=5)
        wait_for(loop, ev, Change.DELETED, str(tree / "a"))
        x = str(tree / "b" / "x.py")
        with open(x, "w") as f:
            f.write("1")
        wait_for(loop, ev, Change.CREATED, x)
        if watch_backend == "inotify":
            assert _inotify_watch_count(w) == 2  # the root and b
    finally:
        w.close()


@pytest.mark.parametrize("watch_backend", BACKENDS)
def test_a_callback_that_raises_loses_no_other_change(loop, tmp_path, watch_backend):
    """The callback raises on the first of three files created at once: the error goes to
    the loop's handler and the two others are still reported.  Was: the rest of the read
    (inotify) or of the scan (poll, whose snapshot was already taken) was lost for good."""
    d = str(tmp_path)
    seen = []
    errors = []
    loop._exception_handler = lambda exc, cb: errors.append(exc)

    def cb(ev):
        seen.append(ev)
        if len(seen) == 1:
            raise RuntimeError("bug in the callback")

    w = FileWatcher(loop, d, cb, backend=watch_backend, poll_interval_ms=20)
    names = [os.path.join(d, n) for n in ("a.txt", "b.txt", "c.txt")]
    for p in names:
        with open(p, "w"):
            pass
    run_until(loop, lambda: {e.path for e in seen if e.kind is Change.CREATED} == set(names), timeout=5)
    assert len(errors) == 1 and "bug in the callback" in str(errors[0])
    w.close()


@pytest.mark.parametrize("watch_backend", BACKENDS)
@pytest.mark.parametrize("target", ["dir", "file"])
def test_a_watched_root_moved_away_reports_deleted_and_then_nothing(loop, tmp_path, watch_backend, target):
    """The watched directory (or the directory of the watched file) is renamed away: DELETED,
    then no event from its new home.  Was, on inotify: writes in the new place were reported
    under the old, vanished path, and a watched file got no DELETED at all."""
    root = tmp_path / "root"
    root.mkdir()
    f = root / "f.txt"
    f.write_text("x")
    path = str(root) if target == "dir" else str(f)
    w, ev = make(loop, path, watch_backend)
    loop.run_once(50)
    moved = tmp_path / "moved"
    os.rename(str(root), str(moved))
    gone = str(root) if target == "dir" else str(f)
    wait_for(loop, ev, Change.DELETED, gone)
    n = len(ev)
    (moved / "f.txt").write_text("changed")
    (moved / "new.txt").write_text("new")
    for _ in range(10):
        loop.run_once(20)
    late = [e for e in ev[n:] if e.kind is not Change.DELETED]
    assert not late, late
    w.close()


@pytest.mark.parametrize("watch_backend", BACKENDS)
def test_a_watcher_on_a_closed_loop_raises_and_leaks_no_descriptor(tmp_path, watch_backend):
    """FileWatcher on a closed loop raises LoopError and keeps no descriptor.  Was, on
    inotify: the inotify descriptor stayed open (one per failed construction)."""
    from powpow import Loop, LoopError

    def fds():
        return len(os.listdir("/proc/self/fd"))

    lp = Loop()
    lp.close()
    before = fds()
    for _ in range(5):
        with pytest.raises(LoopError):
            FileWatcher(lp, str(tmp_path), print, backend=watch_backend)
    assert fds() == before
