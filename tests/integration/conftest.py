"""Fixtures shared by the integration tests (see _net.py)."""
from ._net import net_loop  # noqa: F401  (one loop on the default backend, for the heavy network tests)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """A test CA and certificates, made with the openssl command (see _tls.py)."""
    from ._tls import make_certs
    return make_certs(str(tmp_path_factory.mktemp("tls")))
