"""aiohttp's client on the powpow.aio loop, against a powpow HttpServer on the same loop (plain and TLS).

aiohttp is not in the ``test`` extra (pyproject is not this module's to change; it installs from wheels on
CPython 3.11, and on PyPy 3.9 only from its sdist with AIOHTTP_NO_EXTENSIONS=1 and friends): the file skips
itself where aiohttp is not importable.  Measured passing on CPython and on PyPy (pure-Python aiohttp).
"""
import asyncio
import ssl

import pytest

import powpow.aio
from powpow import HttpServer

aiohttp = pytest.importorskip("aiohttp")


def _handler(req, res):
    if req.path == "/echo":
        res.send(b"echo:" + req.body, headers=[("Content-Type", "application/octet-stream")])
    elif req.path == "/big":
        res.send(b"z" * 1000000)
    else:
        res.send(b"hello " + req.path.encode())


async def _async_handler(req, res):
    body = await req.read()
    for i in range(50):
        await res.write(b"%03d:" % i + body)
    res.end()


def _run(main):
    """main(loop) -> coroutine; checks it ran on powpow.aio and no exception-handler call happened."""
    calls = []

    async def outer():
        loop = asyncio.get_running_loop()
        assert isinstance(loop, powpow.aio.EventLoop)
        loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))
        return await asyncio.wait_for(main(loop), 15)

    out = powpow.aio.run(outer())
    assert not calls, calls
    return out


def test_aiohttp_client_keepalive_post_and_large_body():
    async def main(loop):
        srv = HttpServer(_handler, loop).listen(0, "127.0.0.1")
        base = "http://127.0.0.1:%d" % srv.port
        try:
            conn = aiohttp.TCPConnector(limit=1)  # one connection: the requests below reuse it
            async with aiohttp.ClientSession(connector=conn) as s:
                for i in range(5):
                    async with s.get(base + "/n%d" % i) as r:
                        assert r.status == 200
                        assert await r.read() == b"hello /n%d" % i
                async with s.post(base + "/echo", data=b"x" * 300000) as r:
                    assert r.status == 200 and r.headers["Content-Type"] == "application/octet-stream"
                    assert await r.read() == b"echo:" + b"x" * 300000
                async with s.get(base + "/big") as r:
                    got = 0
                    async for chunk in r.content.iter_chunked(65536):
                        got += len(chunk)
                    assert got == 1000000
                assert len(conn._conns) <= 1
        finally:
            srv.close()
    _run(main)


def test_aiohttp_client_against_async_streaming_handler():
    async def main(loop):
        srv = HttpServer(_async_handler, loop).listen(0, "127.0.0.1")
        try:
            async with aiohttp.ClientSession() as s:
                async with s.post("http://127.0.0.1:%d/" % srv.port, data=b"payload") as r:
                    body = await r.read()
            assert body == b"".join(b"%03d:payload" % i for i in range(50))
        finally:
            srv.close()
    _run(main)


def test_aiohttp_client_https_with_test_ca(certs):
    async def main(loop):
        srv = HttpServer(_handler, loop).listen(0, "127.0.0.1", ssl=certs.server_ctx())
        try:
            ctx = ssl.create_default_context(cafile=certs.ca)
            async with aiohttp.ClientSession() as s:
                async with s.get("https://localhost:%d/tls" % srv.port, ssl=ctx) as r:
                    assert r.status == 200 and await r.read() == b"hello /tls"
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await s.get("https://localhost:%d/" % srv.port, ssl=ssl.create_default_context())
        finally:
            srv.close()
    _run(main)
