"""Cost of one ``Connection.send_file`` call (a real ``sendfile`` of 100 bytes each).

    python perf/bench_send_file.py [N]

Run it with ``PYTHONPATH`` set to two trees, one after the other, to compare them (that is
how perf/README's fifteenth pass measured ``send_file`` going through ``queue_file``).  The
client drains every 64 calls, so the kernel buffer never fills and every call sends."""
import os
import socket
import sys
import tempfile
import time

import powpow


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
    loop = powpow.Loop()
    box: list = []
    srv = powpow.TcpServer(loop, on_accept=box.append).listen(0, "127.0.0.1")
    cli = socket.create_connection(("127.0.0.1", srv.port))
    while not box:
        loop.run_once(0.01)
    conn = box[0]
    fd_, path = tempfile.mkstemp()
    with os.fdopen(fd_, "wb") as f:  # closed (flushed) before the sends: PyPy frees no file by refcount
        f.write(b"x" * 100)
    fd = os.open(path, os.O_RDONLY)
    cli.setblocking(False)
    try:
        t0 = time.perf_counter()
        for i in range(n):
            conn.send_file(fd, 0, 100)
            if i % 64 == 63:
                try:
                    while cli.recv(1 << 16):
                        pass
                except BlockingIOError:
                    pass
        dt = time.perf_counter() - t0
        assert not conn.closed and conn.bytes_sent == 100 * n, (conn.closed, conn.bytes_sent)
        print("%.3f us per send_file (%d calls)" % (dt / n * 1e6, n))
    finally:
        os.close(fd)
        os.unlink(path)
        cli.close()
        srv.close()
        loop.close()


if __name__ == "__main__":
    main()
