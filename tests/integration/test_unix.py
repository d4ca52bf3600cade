"""Unix stream sockets: listen_unix (mode, stale file, live socket, long path) and connect_unix."""
import errno
import hashlib
import os
import socket
import stat
import sys

import pytest

from powpow import ConnectError, TcpServer, connect_unix

from ._net import run_until, settle


def echo(loop):
    return TcpServer(loop, on_data=lambda c, d: c.send(d))


def test_unix_echo_and_mode(loop, tmp_path):
    path = str(tmp_path / "echo.sock")
    srv = echo(loop).listen_unix(path, mode=0o600)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    payload = os.urandom(3 << 20)
    st = {"h": hashlib.sha256(), "n": 0, "closed": False, "peer": "unset", "ip": "unset"}

    def on_connect(c):
        st["ip"] = c.get_client_ip()
        c.send(payload)

    def on_data(c, d):
        st["h"].update(d)
        st["n"] += len(d)
        if st["n"] == len(payload):
            c.close()

    connect_unix(loop, path, on_connect, on_data, lambda c, e: st.update(closed=True), on_error=pytest.fail)
    run_until(loop, lambda: st["closed"])
    assert st["h"].digest() == hashlib.sha256(payload).digest()
    assert st["ip"] is None  # no IP on a unix socket
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    assert not os.path.exists(path)  # the server removes its socket file
    settle(loop)


def test_stale_socket_file_is_replaced(loop, tmp_path):
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # the file stays: a crashed server's leftover
    assert os.path.exists(path)
    srv = echo(loop).listen_unix(path)
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    c.sendall(b"hi")
    c.settimeout(5)
    run_until(loop, lambda: srv.connection_count == 1)
    for _ in range(100):
        loop.run_once(10)
        try:
            assert c.recv(10, socket.MSG_DONTWAIT) == b"hi"
            break
        except BlockingIOError:
            pass
    c.close()
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()


def test_live_socket_regular_file_and_long_path_are_refused(loop, tmp_path):
    path = str(tmp_path / "live.sock")
    srv = echo(loop).listen_unix(path)
    other = TcpServer(loop)
    with pytest.raises(OSError) as ei:
        other.listen_unix(path)
    assert ei.value.errno == errno.EADDRINUSE and "live server" in str(ei.value)
    regular = tmp_path / "file.txt"
    regular.write_text("precious")
    with pytest.raises(FileExistsError) as ei:
        other.listen_unix(str(regular))
    assert "not a socket" in str(ei.value) and regular.read_text() == "precious"
    with pytest.raises(ValueError) as ei:
        other.listen_unix("/tmp/" + "x" * 200 + ".sock")
    assert "too long" in str(ei.value)
    other.close()
    srv.close()
    settle(loop)


def test_connect_unix_errors(loop, tmp_path):
    errors = []
    missing = str(tmp_path / "nobody.sock")
    connect_unix(loop, missing, pytest.fail, None, on_error=errors.append)
    run_until(loop, lambda: errors)
    e = errors[0]
    assert isinstance(e, ConnectError) and e.errno == errno.ENOENT
    assert "connect to unix:%s failed" % missing in str(e) and "No such file" in str(e)
    with pytest.raises(ValueError):
        connect_unix(loop, "/tmp/" + "y" * 200, pytest.fail, None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the abstract namespace is Linux's")
def test_abstract_namespace_name(loop):
    """listen_unix("\\0name") (Linux's abstract namespace: no file) raised ValueError from the
    stat/chmod of a path that does not exist; connect_unix accepted such names already."""
    name = "\0powpow-test-%d" % os.getpid()
    got = []
    srv = TcpServer(loop, on_data=lambda c, d: (got.append(bytes(d)), c.close())).listen_unix(name)
    with pytest.raises(OSError) as ei:  # the name is taken while the server lives
        TcpServer(loop).listen_unix(name)
    assert ei.value.errno == errno.EADDRINUSE
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cli.connect(name)
    cli.sendall(b"hi")
    run_until(loop, lambda: got)
    assert got == [b"hi"]
    cli.close()
    srv.close()
    settle(loop)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the abstract namespace is Linux's")
def test_abstract_name_may_fill_all_of_sun_path(loop):
    """An abstract name needs no terminating NUL, so it may be 108 bytes (all of sun_path);
    the check refused it at 107 as if it were a file path.  109 is still refused."""
    name = ("\0powpow-%d-" % os.getpid()).ljust(108, "n")
    assert len(name.encode()) == 108
    got = []
    srv = TcpServer(loop, on_data=lambda c, d: (got.append(bytes(d)), c.close())).listen_unix(name)
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cli.connect(name)
    cli.sendall(b"full")
    run_until(loop, lambda: got)
    assert got == [b"full"]
    cli.close()
    with pytest.raises(ValueError) as ei:
        TcpServer(loop).listen_unix(name + "x")
    assert "too long: 109 bytes (the limit is 108)" in str(ei.value)
    srv.close()
    settle(loop)
