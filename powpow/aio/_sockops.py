"""Socket operations and name resolution of ``powpow.aio.EventLoop`` (a mixin).

asyncio's ``loop.sock_*`` coroutines on powpow's watchers: each tries the
operation at once and, only when it would block, waits for readiness with a
one-shot reader/writer (``_add_io``/``_remove_io`` of the loop) and retries.
``getaddrinfo`` answers numeric hosts inline (no executor thread); other names
go to asyncio's executor as usual.  Split from ``_loop.py``: nothing here
touches the iteration, timers or transports.
"""
import asyncio
import errno
import io
import os
import socket

__all__ = ["SockOps"]

_NUMERIC = socket.AI_NUMERICHOST


class SockOps:
    """``sock_*``, ``getaddrinfo`` and ``getnameinfo`` for an event loop that has
    ``_add_io``, ``_remove_io``, ``_fdh``, ``_debug``, ``create_future`` and
    ``_ensure_resolved`` (``EventLoop``)."""

    def _check_sock(self, sock) -> None:
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")

    async def _sock_wait(self, sock, idx: int, op):
        """Retry ``op()`` each time ``sock`` is ready (idx 0 read, 1 write) until it does not block."""
        fut = self.create_future()
        fd = sock.fileno()

        def ready() -> None:
            if fut.done():
                return
            try:
                res = op()
            except (BlockingIOError, InterruptedError):
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(res)

        handle = self._add_io(fd, idx, ready, ())
        try:
            return await fut
        finally:
            pair = self._fdh.get(fd)
            if pair is not None and pair[idx] is handle:  # a racing successor may own the fd now
                self._remove_io(fd, idx)

    async def sock_recv(self, sock, n):
        self._check_sock(sock)
        try:
            return sock.recv(n)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_wait(sock, 0, lambda: sock.recv(n))

    async def sock_recv_into(self, sock, buf):
        self._check_sock(sock)
        try:
            return sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_wait(sock, 0, lambda: sock.recv_into(buf))

    async def sock_recvfrom(self, sock, bufsize):
        self._check_sock(sock)
        try:
            return sock.recvfrom(bufsize)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_wait(sock, 0, lambda: sock.recvfrom(bufsize))

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        self._check_sock(sock)
        try:
            return sock.recvfrom_into(buf, nbytes)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_wait(sock, 0, lambda: sock.recvfrom_into(buf, nbytes))

    async def sock_sendto(self, sock, data, address):
        self._check_sock(sock)
        try:
            return sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_wait(sock, 1, lambda: sock.sendto(data, address))

    async def sock_sendall(self, sock, data):
        self._check_sock(sock)
        try:
            n = sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        view = memoryview(data).cast("B")
        if n == len(view):
            return
        pos = [n]

        def more():
            while True:
                k = sock.send(view[pos[0]:])
                pos[0] += k
                if pos[0] >= len(view):
                    return None
                if k == 0:
                    raise BlockingIOError

        await self._sock_wait(sock, 1, more)

    async def _sock_sendfile_native(self, sock, file, offset, count):
        """``sock_sendfile``'s zero-copy path: ``os.sendfile`` from the file to the socket,
        waiting for writability while the socket is full.  (Without it asyncio's base loop
        raised SendfileNotAvailableError: every call copied through read+send, and
        ``fallback=False`` always failed.)  As asyncio's selector loop: a file that cannot
        be sent this way before any byte went falls back; the file position ends after the
        last byte sent, also on an error or a cancellation."""
        try:
            fileno = file.fileno()
            size = os.fstat(fileno).st_size
        except (AttributeError, io.UnsupportedOperation, OSError):
            raise asyncio.SendfileNotAvailableError("not a regular file") from None
        block = count if count else size
        if not block:
            return 0
        fd = sock.fileno()
        sent = [0]

        def more():
            while True:
                want = count - sent[0] if count else block
                if want <= 0:
                    return sent[0]
                try:
                    n = os.sendfile(fd, fileno, offset + sent[0], want)
                except (BlockingIOError, InterruptedError):
                    raise
                except OSError as exc:
                    if sent[0] == 0:  # e.g. not an mmap-able file: asyncio's fallback sends it
                        raise asyncio.SendfileNotAvailableError("os.sendfile call failed: %s" % exc) from exc
                    if exc.errno == errno.ENOTCONN:
                        raise ConnectionError(errno.ENOTCONN, "socket is not connected") from exc
                    raise
                if n == 0:  # the file's end
                    return sent[0]
                sent[0] += n

        try:
            try:
                return more()
            except (BlockingIOError, InterruptedError):
                pass
            return await self._sock_wait(sock, 1, more)
        finally:
            if sent[0]:
                os.lseek(fileno, offset + sent[0], os.SEEK_SET)

    async def sock_connect(self, sock, address):
        self._check_sock(sock)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            resolved = await self._ensure_resolved(address, family=sock.family, type=sock.type,
                                                   proto=sock.proto, loop=self)
            _, _, _, _, address = resolved[0]
        try:
            sock.connect(address)
            return
        except (BlockingIOError, InterruptedError):
            pass

        def check():
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err in (errno.EINPROGRESS, errno.EALREADY):
                raise BlockingIOError
            if err:
                raise OSError(err, "Connect call failed %s" % (address,))

        await self._sock_wait(sock, 1, check)

    async def sock_accept(self, sock):
        self._check_sock(sock)

        def accept():
            conn, addr = sock.accept()
            conn.setblocking(False)
            return conn, addr

        try:
            return accept()
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_wait(sock, 0, accept)

    # ------------------------------------------------------------ name resolution

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        if host is None or not isinstance(host, (str, bytes)) or _looks_numeric(host):
            try:  # a numeric host (or None) never blocks: answer inline, no thread
                return socket.getaddrinfo(host, port, family, type, proto, flags | _NUMERIC)
            except socket.gaierror as exc:
                if exc.errno != socket.EAI_NONAME:
                    raise
        return await super().getaddrinfo(host, port, family=family, type=type, proto=proto, flags=flags)

    async def getnameinfo(self, sockaddr, flags=0):
        want = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
        if flags & want == want:
            return socket.getnameinfo(sockaddr, flags)
        return await super().getnameinfo(sockaddr, flags)


def _looks_numeric(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not host:
        return True
    c = host[0]
    return c.isdigit() or ":" in host

