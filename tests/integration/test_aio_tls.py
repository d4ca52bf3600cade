"""TLS on powpow.aio (ssl=, server_hostname=, ssl_handshake_timeout=, ssl_shutdown_timeout=, start_tls),
uvloop-style: every test runs on powpow.aio AND on stock asyncio (the ``lp`` fixture of test_aio.py,
whose teardown fails on any unexpected exception-handler call).  Certificates come from the test CA
(``certs`` fixture, _tls.py); real sockets on 127.0.0.1 port 0 and real unix sockets."""
import asyncio
import os
import socket
import ssl
import sys
import tempfile

import pytest

from .test_aio import _Loop


@pytest.fixture(params=["powpow", "asyncio"])
def lp(request):
    """As test_aio.py's: one powpow.aio and one stock asyncio loop; teardown fails on handler calls."""
    w = _Loop(request.param)
    yield w
    loop = w.loop
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    assert not w.calls, "unexpected exception-handler calls: %r" % (w.calls,)

HAS_SHUTDOWN_TIMEOUT = sys.version_info >= (3, 11)


class Echo(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t

    def data_received(self, d):
        self.t.write(d)


async def _echo_roundtrip(reader, writer, payload: bytes) -> bytes:
    writer.write(payload)
    await writer.drain()
    return await reader.readexactly(len(payload))


def _server_ctx(certs, client_ca=False):
    ctx = certs.server_ctx()
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(certs.ca)
    return ctx


def test_tls_echo_server_and_client_extra_info(lp, certs):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Echo, "127.0.0.1", 0, ssl=_server_ctx(certs))
        port = srv.sockets[0].getsockname()[1]
        client_ctx = certs.client_ctx()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                       server_hostname="localhost")
        assert await _echo_roundtrip(reader, writer, b"hello tls") == b"hello tls"
        sslobj = writer.get_extra_info("ssl_object")
        assert isinstance(sslobj, ssl.SSLObject)
        assert sslobj.version() in ("TLSv1.2", "TLSv1.3")
        assert sslobj.selected_alpn_protocol() == "http/1.1"
        assert writer.get_extra_info("sslcontext") is client_ctx
        cert = writer.get_extra_info("peercert")
        assert ("DNS", "localhost") in cert["subjectAltName"]
        assert writer.get_extra_info("peername")[1] == port
        assert writer.get_extra_info("sockname") is not None
        assert len(writer.get_extra_info("cipher")) == 3
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()
    lp.run(main())


def test_tls_large_payload_both_ways_with_flow_control(lp, certs):
    """4 MiB through TLS each way: the record layer, pause/resume_writing and drain() all work."""
    async def handle(reader, writer):
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main():
        srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=_server_ctx(certs))
        port = srv.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=certs.client_ctx(),
                                                       server_hostname="localhost")
        payload = os.urandom(256 * 1024) * 16

        async def send():
            for i in range(0, len(payload), 100000):
                writer.write(payload[i:i + 100000])
                await writer.drain()

        sender = asyncio.ensure_future(send())
        got = await reader.readexactly(len(payload))
        await sender
        assert got == payload
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()
    lp.run(main(), timeout=20)


def test_tls_client_certificate_required(lp, certs):
    seen = []

    async def handle(reader, writer):
        seen.append(writer.get_extra_info("peercert"))
        writer.write(await reader.readexactly(4))
        await writer.drain()
        writer.close()

    async def main():
        srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=_server_ctx(certs, client_ca=True))
        port = srv.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=certs.client_ctx(with_cert=True),
                                                       server_hostname="localhost")
        assert await _echo_roundtrip(reader, writer, b"mtls") == b"mtls"
        writer.close()
        await writer.wait_closed()
        # without a client certificate the server refuses the handshake (TLS 1.3: seen at the first read)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=certs.client_ctx(),
                                                       server_hostname="localhost")
        writer.write(b"nope")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            data = await reader.read(10)
            if not data:
                raise ConnectionResetError("closed by the server")
        writer.close()
        srv.close()
        await srv.wait_closed()
    lp.run(main())
    assert seen and ("DNS", "client.test") in seen[0]["subjectAltName"]


def test_tls_unknown_ca_and_wrong_hostname_refused(lp, certs):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Echo, "127.0.0.1", 0, ssl=_server_ctx(certs))
        port = srv.sockets[0].getsockname()[1]
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", port, ssl=ssl.create_default_context(),
                                          server_hostname="localhost")
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", port, ssl=certs.client_ctx(),
                                          server_hostname="other.test")
        # the server survived both failed handshakes (not reported to the handler outside debug mode)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=certs.client_ctx(),
                                                       server_hostname="localhost")
        assert await _echo_roundtrip(reader, writer, b"still up") == b"still up"
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()
    lp.run(main())


def test_tls_argument_checks(lp, certs):
    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(ValueError):
            await loop.create_connection(Echo, "127.0.0.1", 1, server_hostname="localhost")
        with pytest.raises(ValueError):
            await loop.create_connection(Echo, "127.0.0.1", 1, ssl_handshake_timeout=1.0)
        with pytest.raises(ValueError):
            await loop.create_server(Echo, "127.0.0.1", 0, ssl_handshake_timeout=1.0)
        with pytest.raises(TypeError):
            await loop.create_unix_server(Echo, sock=socket.socket(socket.AF_UNIX), ssl=True)
    lp.run(main())


def test_tls_handshake_timeout(lp, certs):
    """A peer that accepts TCP but never speaks TLS: the client gives up after ssl_handshake_timeout."""
    async def main():
        loop = asyncio.get_running_loop()
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(4)
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        t0 = loop.time()
        with pytest.raises((ConnectionAbortedError, asyncio.TimeoutError)):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port, ssl=certs.client_ctx(),
                                         server_hostname="localhost", ssl_handshake_timeout=0.2)
        assert 0.15 <= loop.time() - t0 < 3
        conn, _ = lsock.accept()
        conn.close()
        lsock.close()
    lp.run(main())


def test_tls_shutdown_timeout_argument(lp, certs):
    """ssl_shutdown_timeout= is asyncio 3.11+ API: accepted there, a TypeError before (as stock asyncio)."""
    async def main():
        loop = asyncio.get_running_loop()
        if not HAS_SHUTDOWN_TIMEOUT:
            with pytest.raises(TypeError):
                await loop.create_server(Echo, "127.0.0.1", 0, ssl=_server_ctx(certs), ssl_shutdown_timeout=2.0)
            return
        srv = await loop.create_server(Echo, "127.0.0.1", 0, ssl=_server_ctx(certs), ssl_handshake_timeout=5.0,
                                       ssl_shutdown_timeout=2.0)
        port = srv.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=certs.client_ctx(),
                                                       server_hostname="localhost", ssl_handshake_timeout=5.0,
                                                       ssl_shutdown_timeout=2.0)
        assert await _echo_roundtrip(reader, writer, b"x" * 1000) == b"x" * 1000
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()
    lp.run(main())


def test_start_tls_upgrade_both_sides(lp, certs):
    """A STARTTLS-style protocol: plaintext greeting, then both ends upgrade the same connection."""
    async def handle(reader, writer):
        line = await reader.readline()
        assert line == b"STARTTLS\r\n"
        writer.write(b"OK\r\n")
        await writer.drain()
        await writer.start_tls(_server_ctx(certs)) if hasattr(writer, "start_tls") else await _upgrade(writer)
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    async def _upgrade(writer):  # 3.9/3.10: StreamWriter has no start_tls, use loop.start_tls
        loop = asyncio.get_running_loop()
        proto = writer._protocol
        tr = await loop.start_tls(writer.transport, proto, _server_ctx(certs), server_side=True)
        writer._transport = tr
        proto._transport = tr
        proto._over_ssl = True

    async def main():
        loop = asyncio.get_running_loop()
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        got = loop.create_future()

        class Client(asyncio.Protocol):
            def __init__(self):
                self.buf = b""

            def data_received(self, d):
                self.buf += d
                if self.buf.endswith(b"\n") and not got.done():
                    got.set_result(self.buf)
                    self.buf = b""

        tr, pr = await loop.create_connection(Client, "127.0.0.1", port)
        tr.write(b"STARTTLS\r\n")
        assert await got == b"OK\r\n"
        got = loop.create_future()
        tls = await loop.start_tls(tr, pr, certs.client_ctx(), server_hostname="localhost")
        assert tls.get_extra_info("ssl_object") is not None
        if lp.kind == "powpow":
            import powpow.aio
            assert isinstance(tr, powpow.aio.StreamTransport)  # records go out on powpow's own transport
        tls.write(b"secret\r\n")
        assert await got == b"SECRET\r\n"
        tls.close()
        srv.close()
        await srv.wait_closed()
    lp.run(main())


def test_start_tls_rejects_bad_arguments(lp, certs):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Echo, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        with pytest.raises(TypeError):
            await loop.start_tls(tr, pr, object())
        tr.close()
        srv.close()
        await srv.wait_closed()
    lp.run(main())


def test_tls_unix_server_and_connection(lp, certs):
    async def main():
        loop = asyncio.get_running_loop()
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "s.sock")
            srv = await loop.create_unix_server(Echo, path, ssl=_server_ctx(certs), ssl_handshake_timeout=5.0)
            tr, _ = await loop.create_unix_connection(asyncio.Protocol, path, ssl=certs.client_ctx(),
                                                      server_hostname="localhost")
            tr.close()
            reader, writer = await asyncio.open_unix_connection(path, ssl=certs.client_ctx(),
                                                                server_hostname="localhost")
            assert await _echo_roundtrip(reader, writer, b"over unix") == b"over unix"
            assert writer.get_extra_info("ssl_object") is not None
            writer.close()
            await writer.wait_closed()
            with pytest.raises(ValueError):  # ssl without server_hostname on a unix socket
                await loop.create_unix_connection(asyncio.Protocol, path, ssl=certs.client_ctx())
            srv.close()
            await srv.wait_closed()
    lp.run(main())


def test_tls_connect_accepted_socket(lp, certs):
    async def main():
        loop = asyncio.get_running_loop()
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(4)
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        client = asyncio.ensure_future(asyncio.open_connection("127.0.0.1", port, ssl=certs.client_ctx(),
                                                               server_hostname="localhost"))
        conn, _ = await loop.sock_accept(lsock)
        tr, _ = await loop.connect_accepted_socket(Echo, conn, ssl=_server_ctx(certs), ssl_handshake_timeout=5.0)
        assert tr.get_extra_info("ssl_object").server_side
        reader, writer = await client
        assert await _echo_roundtrip(reader, writer, b"accepted") == b"accepted"
        writer.close()
        await writer.wait_closed()
        lsock.close()
    lp.run(main())
