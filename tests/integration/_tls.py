"""Test certificates made with the ``openssl`` command (never committed): a CA, a server
certificate for localhost/127.0.0.1 and a client certificate, all ECDSA P-256."""
import os
import ssl
import subprocess


class Certs:
    def __init__(self, d: str) -> None:
        self.dir = d
        self.ca = os.path.join(d, "ca.pem")
        self.ca_key = os.path.join(d, "ca.key")
        self.cert = os.path.join(d, "server.pem")
        self.key = os.path.join(d, "server.key")
        self.client_cert = os.path.join(d, "client.pem")
        self.client_key = os.path.join(d, "client.key")
        self.other_cert = os.path.join(d, "other.pem")  # CN/SAN other.test, for SNI
        self.other_key = os.path.join(d, "other.key")

    def server_ctx(self, alpn=("http/1.1",)) -> ssl.SSLContext:
        from powpow.net.tls import server_context
        return server_context(self.cert, self.key, alpn=alpn)

    def client_ctx(self, with_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.set_alpn_protocols(["http/1.1"])
        if with_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def _run(*args, cwd) -> None:
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=30)


def _leaf(d: str, name: str, cn: str, san: str, usage: str) -> None:
    _run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", name + ".key",
         "-out", name + ".csr", "-subj", "/CN=" + cn, cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n" % (san, usage))
    _run("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext", cwd=d)


def make_certs(d: str) -> Certs:
    os.makedirs(d, exist_ok=True)
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=powpow test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _leaf(d, "server", "localhost", "DNS:localhost,IP:127.0.0.1", "serverAuth")
    _leaf(d, "client", "powpow test client", "DNS:client.test", "clientAuth")
    _leaf(d, "other", "other.test", "DNS:other.test", "serverAuth")
    return Certs(d)
