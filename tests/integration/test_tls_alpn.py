"""ALPN on the HTTPS server: ``http/1.1`` is chosen when offered; a client whose offer has
nothing in common (an h2-only client) gets a ``no_application_protocol`` alert (RFC 7301)
at once -- never a hang -- and one log line; clients offering no ALPN are served."""
import logging
import socket
import ssl
import subprocess
import time

import pytest

from powpow.net._tlsconf import _INCOMPLETE, client_hello_alpn

from ._http import serving


def hello(req, res):
    res.send(b"alpn=%s" % (req.tls.alpn or "none").encode())


def _hello_bytes(certs, alpn):
    ctx = ssl.create_default_context(cafile=certs.ca)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    outgoing = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_client_hello_parser(certs):
    ch = _hello_bytes(certs, ["h2", "spdy/3"])
    assert client_hello_alpn(ch) == [b"h2", b"spdy/3"]
    assert client_hello_alpn(_hello_bytes(certs, None)) is None
    for cut in (0, 3, 5, 40, len(ch) - 1):
        assert client_hello_alpn(ch[:cut]) is _INCOMPLETE
    # the same handshake message split over three records
    body = ch[5:]
    recs = b"".join(b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
                    for part in (body[:7], body[7:100], body[100:]))
    assert client_hello_alpn(recs) == [b"h2", b"spdy/3"]
    assert client_hello_alpn(b"GET / HTTP/1.1\r\n\r\n") is None  # not TLS: OpenSSL decides
    assert client_hello_alpn(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00") is None  # not a ClientHello
    assert client_hello_alpn(ch[:5] + b"\x01\x00\x00\x02\x03\x03" + b"\x00" * (len(ch) - 11)) is None


def _handshake(certs, port, alpn):
    ctx = ssl.create_default_context(cafile=certs.ca)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            t.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                b = t.recv(4096)
                if not b:
                    break
                data += b
            return t.selected_alpn_protocol(), data


def test_h2_only_client_gets_no_application_protocol_alert(certs, caplog):
    caplog.set_level(logging.INFO, logger="powpow.net")
    with serving(hello, ssl=certs.server_ctx()) as server:
        port = server.port
        t0 = time.monotonic()
        with pytest.raises(ssl.SSLError, match="(?i)no.application.protocol"):
            _handshake(certs, port, ["h2"])
        assert time.monotonic() - t0 < 5  # refused at once; a hang would last the 10 s handshake timeout
        # the ClientHello trickling in a few bytes at a time: the same clean refusal
        ch = _hello_bytes(certs, ["h2"])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(0, len(ch), 37):
                s.sendall(ch[i:i + 37])
                time.sleep(0.001)
            got = b""
            while True:
                b = s.recv(4096)
                if not b:
                    break
                got += b
        assert got == b"\x15\x03\x03\x00\x02\x02\x78"  # fatal alert 120, and the connection closed
        # openssl s_client -alpn h2 with -ign_eof would wait forever on an open connection
        t0 = time.monotonic()
        out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-alpn", "h2", "-ign_eof",
                              "-CAfile", certs.ca], input=b"", capture_output=True, timeout=10)
        assert out.returncode != 0 and b"alert no application protocol" in out.stderr, out.stderr
        assert time.monotonic() - t0 < 5
        # others carry on: http/1.1 among the offers, or no ALPN at all
        assert _handshake(certs, port, ["h2", "http/1.1"]) == ("http/1.1", _handshake(certs, port, ["http/1.1"])[1])
        alpn, data = _handshake(certs, port, None)
        assert alpn is None and data.endswith(b"alpn=none")
        # an HTTP/1.0 client offering only http/1.0 (curl --http1.0) is served, with it
        alpn, data = _handshake(certs, port, ["http/1.0"])
        assert alpn == "http/1.0" and data.endswith(b"alpn=http/1.0")
    lines = [r.getMessage() for r in caplog.records if "NO_APPLICATION_PROTOCOL" in r.getMessage()]
    assert len(lines) == 3 and "offers ALPN h2 only, this server speaks http/1.1, http/1.0" in lines[0], lines


def test_own_alpn_list_on_a_tcp_server(certs):
    """A TcpServer whose context asks for its own protocols refuses a disjoint offer too."""
    import threading

    import powpow
    from powpow.net.tls import prepare_server_context, server_context

    ctx = prepare_server_context(server_context(certs.cert, certs.key, alpn=None), ["myproto/1"])
    loop = powpow.Loop(debug=True)
    srv = powpow.TcpServer(loop, on_accept=lambda c: setattr(c, "on_data", lambda c, d: c.write(bytes(d))), ssl=ctx)
    srv.listen(0, "127.0.0.1")
    th = threading.Thread(target=loop.run, daemon=True)
    th.start()
    try:
        cctx = ssl.create_default_context(cafile=certs.ca)
        cctx.set_alpn_protocols(["other/2"])
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            with pytest.raises(ssl.SSLError, match="(?i)no.application.protocol"):
                cctx.wrap_socket(s, server_hostname="localhost")
        cctx.set_alpn_protocols(["other/2", "myproto/1"])
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            with cctx.wrap_socket(s, server_hostname="localhost") as t:
                assert t.selected_alpn_protocol() == "myproto/1"
                t.sendall(b"ping")
                assert t.recv(10) == b"ping"
    finally:
        loop.post(loop.stop)
        th.join(10)
        srv.close()
        loop.close()
    assert srv.tls_failures == 1


def test_curl_http10_over_https_is_served(certs):
    """``curl --http1.0`` offers ALPN ``http/1.0`` only; powpow serves HTTP/1.0, so it must
    accept it.  Was: the handshake failed with ``no application protocol`` (HttpServer offered
    ``http/1.1`` alone), where uvicorn and gunicorn answer."""
    with serving(hello, ssl=certs.server_ctx()) as server:
        out = subprocess.run(["curl", "-sS", "--http1.0", "--cacert", certs.ca, "--max-time", "10",
                              "https://localhost:%d/" % server.port], capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"alpn=http/1.0"
