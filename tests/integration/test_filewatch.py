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
