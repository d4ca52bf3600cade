"""Shared fixtures.  Every loop a test makes is created in debug mode and must
close without leaked timers, watchers or buffers (``Loop.close`` raises)."""
import os

import pytest

import powpow
from powpow import _ffi


def pytest_report_header(config):
    return "powpow: NATIVE=%s POWPOW_PURE=%s pollers=%s" % (
        _ffi.NATIVE, os.environ.get("POWPOW_PURE", ""), ",".join(powpow.available_pollers()))


@pytest.fixture(params=powpow.available_pollers())
def backend(request):
    return request.param


@pytest.fixture
def loop(backend):
    lp = powpow.Loop(backend=backend, debug=True)
    yield lp
    lp.close()  # raises ResourceLeakError if the test leaked anything
