"""powpow.http.static opens each file once, while planning, and the plan carries the
descriptor (issue 8 items 16 and 24): swaps after planning cannot redirect the
bytes, swaps while opening are refused, no descriptor leaks, and opening errors
become statuses (503 + Retry-After for EMFILE/ENFILE, 403, 404, 500)."""
import errno
import logging
import os

import pytest

from powpow.http import static
from powpow.http.static import FilePart, StaticOptions, plan_file, plan_static

ORIGINAL = b"the original content\n"
SECRET = b"SECRET outside the root\n"


def hdrs(**kw):
    d = {k.replace("_", "-"): v for k, v in kw.items()}
    return d.get


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "f.txt").write_bytes(ORIGINAL)
    (root / "sub" / "g.txt").write_bytes(ORIGINAL)
    (root / "empty.txt").write_bytes(b"")
    (root / "z.js").write_bytes(ORIGINAL)
    (root / "z.js.gz").write_bytes(b"gzipped")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_bytes(SECRET)
    (outside / "g.txt").write_bytes(SECRET)
    return root, outside


def get(root, path, method="GET", **headers):
    return plan_static(method, path, hdrs(**headers), StaticOptions(str(root), listing=True))


def body_from_fds(plan):
    out = bytearray()
    for part in plan.parts:
        if isinstance(part, FilePart):
            out += os.pread(part.fd, part.count, part.offset)
        else:
            out += part
    return bytes(out)


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_plan_holds_an_open_descriptor_of_the_file(tree):
    root, _ = tree
    plan = get(root, "/f.txt")
    try:
        [part] = plan.parts
        assert isinstance(part.fd, int)
        st = os.fstat(part.fd)
        assert (st.st_dev, st.st_ino) == (os.stat(str(root / "f.txt")).st_dev, os.stat(str(root / "f.txt")).st_ino)
        assert part.path == os.path.realpath(str(root / "f.txt"))
        assert (part.offset, part.count) == (0, len(ORIGINAL))
    finally:
        plan.close()


def test_symlink_swapped_in_after_planning_still_sends_the_original(tree):
    root, outside = tree
    plan = get(root, "/f.txt")
    ranged = get(root, "/f.txt", range="bytes=0-3,8-11")
    sent_file = plan_file("GET", str(root / "sub" / "g.txt"), hdrs())
    try:
        # the attacker replaces the files by symlinks out of the root
        for p, target in ((root / "f.txt", outside / "f.txt"), (root / "sub" / "g.txt", outside / "g.txt")):
            os.unlink(str(p))
            os.symlink(str(target), str(p))
        assert body_from_fds(plan) == ORIGINAL
        assert body_from_fds(sent_file) == ORIGINAL
        assert SECRET[:4] not in body_from_fds(ranged) and ORIGINAL[0:4] in body_from_fds(ranged)
        # and the same request now is refused: the symlink leaves the root
        again = get(root, "/f.txt")
        assert again.status == 403 and not any(isinstance(p, FilePart) for p in again.parts)
    finally:
        plan.close()
        ranged.close()
        sent_file.close()


@pytest.mark.parametrize("proc", [True, False], ids=["proc-fd", "openat-walk"])
def test_directory_swapped_for_a_symlink_while_opening_is_refused(tree, monkeypatch, proc):
    """realpath saw root/sub; by open() time sub is a symlink to a directory outside:
    O_NOFOLLOW does not cover middle components, the confinement check does."""
    root, outside = tree
    if not proc:
        monkeypatch.setattr(static, "_PROC_FD", None)
    real_stat = static._stat_or_refuse

    def stat_then_swap(path):
        st = real_stat(path)
        if path.endswith("g.txt"):
            os.rename(str(root / "sub"), str(root / "sub-old"))
            os.symlink(str(outside), str(root / "sub"))
        return st

    monkeypatch.setattr(static, "_stat_or_refuse", stat_then_swap)
    before = open_fds()
    plan = get(root, "/sub/g.txt")
    assert plan.status == 404, plan
    assert SECRET not in body_from_fds(plan)
    assert not any(isinstance(p, FilePart) for p in plan.parts)
    assert open_fds() == before


def test_file_swapped_for_a_symlink_while_opening_is_refused(tree, monkeypatch):
    root, outside = tree
    real_stat = static._stat_or_refuse

    def stat_then_swap(path):
        st = real_stat(path)
        os.unlink(str(root / "f.txt"))
        os.symlink(str(outside / "f.txt"), str(root / "f.txt"))
        return st

    monkeypatch.setattr(static, "_stat_or_refuse", stat_then_swap)
    plan = get(root, "/f.txt")
    assert plan.status == 404 and SECRET not in body_from_fds(plan)


def test_no_descriptor_leaks_and_close_is_idempotent(tree):
    root, _ = tree
    (root / "sub" / "h.txt").write_bytes(b"x")
    os.chmod(str(root / "sub" / "h.txt"), 0)
    etag = get(root, "/f.txt", method="HEAD").header("ETag")
    before = open_fds()
    without_fd = [
        get(root, "/f.txt", method="HEAD"),
        get(root, "/f.txt", if_none_match=etag),                  # 304
        get(root, "/f.txt", if_match='"other"'),                  # 412
        get(root, "/f.txt", range="bytes=999-"),                  # 416
        get(root, "/nope.txt"),                                   # 404
        get(root, "/../etc/passwd"),                              # 403
        get(root, "/sub/"),                                       # listing
        get(root, "/sub"),                                        # 301
        get(root, "/empty.txt"),                                  # 200, empty body
        get(root, "/f.txt", method="POST"),                       # 405
        plan_file("HEAD", str(root / "f.txt"), hdrs()),
        plan_file("GET", str(root / "nope"), hdrs()),
        plan_file("GET", str(root / "sub"), hdrs()),
    ]
    assert [p.status for p in without_fd] == [200, 304, 412, 416, 404, 403, 200, 301, 200, 405, 200, 404, 404]
    assert open_fds() == before, "a plan without file parts holds a descriptor"
    assert not any(isinstance(x, FilePart) for p in without_fd for x in p.parts)

    with_fd = [
        get(root, "/f.txt"),
        get(root, "/f.txt", range="bytes=2-5"),
        get(root, "/f.txt", range="bytes=0-1,4-5,9-10"),
        get(root, "/z.js", accept_encoding="gzip"),
        plan_file("GET", str(root / "f.txt"), hdrs()),
    ]
    fds = [x.fd for p in with_fd for x in p.parts if isinstance(x, FilePart)]
    assert len(fds) == 7 and len(set(fds)) == 7  # one per part, multi-range: one dup each
    assert open_fds() == before + 7
    assert body_from_fds(with_fd[3]) == b"gzipped"
    taken = with_fd[0].parts[0].take_fd()
    assert with_fd[0].parts[0].fd is None
    with pytest.raises(ValueError):
        with_fd[0].parts[0].take_fd()
    for p in with_fd:
        p.close()
        p.close()  # idempotent
    assert open_fds() == before + 1  # the taken one is the taker's
    assert os.pread(taken, 3, 0) == ORIGINAL[:3]
    os.close(taken)
    with get(root, "/f.txt") as plan:
        assert open_fds() == before + 1
    assert open_fds() == before and plan.parts[0].fd is None
    os.chmod(str(root / "sub" / "h.txt"), 0o600)


def _failing_open(monkeypatch, code, only=None):
    real_open = os.open

    def fake_open(path, flags, *args, **kw):
        if only is None or str(path).endswith(only):
            raise OSError(code, os.strerror(code), path)
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(static.os, "open", fake_open)


@pytest.mark.parametrize("code,status", [
    (errno.EMFILE, 503), (errno.ENFILE, 503), (errno.EACCES, 403), (errno.EPERM, 403),
    (errno.ENOENT, 404), (errno.ELOOP, 404), (errno.ENOTDIR, 404), (errno.EIO, 500),
])
def test_opening_errors_become_statuses(tree, monkeypatch, caplog, code, status):
    root, _ = tree
    before = open_fds()
    _failing_open(monkeypatch, code, only="f.txt")
    with caplog.at_level(logging.WARNING, logger="powpow.http"):
        plans = [get(root, "/f.txt"), get(root, "/f.txt", method="HEAD"),
                 plan_file("GET", str(root / "f.txt"), hdrs())]
    monkeypatch.undo()
    for plan in plans:
        assert plan.status == status, (errno.errorcode[code], plan)
        assert not any(isinstance(p, FilePart) for p in plan.parts)
        assert plan.header("Retry-After") == ("1" if status == 503 else None)
    if status == 503:
        assert any("503" in r.getMessage() for r in caplog.records)
    assert open_fds() == before


def test_out_of_descriptors_for_the_index_file_is_503_not_404(tree, monkeypatch):
    root, _ = tree
    (root / "sub" / "index.html").write_bytes(b"<p>")
    _failing_open(monkeypatch, errno.EMFILE, only="index.html")
    plan = get(root, "/sub/")
    monkeypatch.undo()
    assert plan.status == 503 and plan.header("Retry-After") == "1"


def test_dup_failure_in_a_multi_range_plan_is_503_and_leaks_nothing(tree, monkeypatch):
    root, _ = tree
    before = open_fds()
    real_dup = os.dup
    calls = []

    def dup(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_dup(fd)

    monkeypatch.setattr(static.os, "dup", dup)
    plan = get(root, "/f.txt", range="bytes=0-1,4-5,9-10")
    monkeypatch.undo()
    assert plan.status == 503 and plan.header("Retry-After") == "1"
    assert len(calls) == 3
    assert open_fds() == before


def test_a_fifo_swapped_in_does_not_block_the_planner(tree, monkeypatch):
    root, _ = tree
    real_stat = static._stat_or_refuse

    def stat_then_swap(path):
        st = real_stat(path)
        os.unlink(str(root / "f.txt"))
        os.mkfifo(str(root / "f.txt"))
        return st

    monkeypatch.setattr(static, "_stat_or_refuse", stat_then_swap)
    plan = get(root, "/f.txt")  # would hang forever in open() without O_NONBLOCK
    assert plan.status == 404
