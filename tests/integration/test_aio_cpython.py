"""CPython's own asyncio loop tests against powpow.aio, through their create_event_loop() hook.

Runs the mixins of the running interpreter's ``test.test_asyncio`` (CPython
ships them; PyPy 3.9's ``test`` package lacks ``support`` and ``test_asyncio``,
so there they are imported, copy-free, from CPython 3.9's Lib/test -- pyenv's
install or $POWPOW_CPYTHON_TEST_DIR -- and where neither exists this file
collects nothing and says so in ``NOT_AVAILABLE``): ``test_events``
(``UnixEventLoopTestsMixin`` = ``EventLoopTestsMixin`` + unix cases, and
``SubprocessTestsMixin``), ``test_sock_lowlevel`` (``BaseSockTestsMixin``),
``test_sendfile`` (``SendfileTestsBase``), ``test_buffered_proto`` and
``test_server`` (``BaseStartServer``).

TLS: the ssl= cases of those mixins run, plus ``test_sslproto``'s
``BaseStartTLS`` (start_tls functional tests) and, on 3.11+, ``test_ssl``'s
``TestSSL`` (uvloop's TLS suite), whose loop is made in setUp and swapped here.

Excluded, by name (``_excluded`` below): two white-box tests (powpow.aio has
no selector): ``test_timeout_rounding`` (reads ``loop._selector``) and
``test_internal_fds`` (needs a BaseSelectorEventLoop; it skips itself
otherwise); on PyPy also ``REFCOUNT_ONLY`` (see there).
"""
import glob
import os
import sys
import unittest

import powpow.aio


def _borrow_cpython_tests() -> None:
    """PyPy ships no test.support / test.test_asyncio: borrow the same-version CPython's (pyenv's
    Lib/test, or $POWPOW_CPYTHON_TEST_DIR) by extending the ``test`` package's path; nothing is copied."""
    try:
        import test.test_asyncio  # noqa: F401
        return
    except ImportError:
        pass
    import test
    v = sys.version_info
    dirs = [os.environ.get("POWPOW_CPYTHON_TEST_DIR", "")]
    dirs += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/%d.%d.*/lib/python%d.%d/test"
                                                % (v[0], v[1], v[0], v[1]))), reverse=True)
    for d in dirs:
        if d and os.path.isdir(os.path.join(d, "test_asyncio")):
            test.__path__.append(d)  # type: ignore[attr-defined]
            return


_borrow_cpython_tests()

try:
    from test.test_asyncio import test_buffered_proto as _tbp
    from test.test_asyncio import test_events as _te
    from test.test_asyncio import test_sendfile as _tsf
    from test.test_asyncio import test_server as _tsv
    from test.test_asyncio import test_sock_lowlevel as _tsl
    from test.test_asyncio import test_sslproto as _tsp
    from test.test_asyncio import utils as _tu
    NOT_AVAILABLE = None
    try:  # 3.11+: the TLS functional tests (uvloop's, adopted with the new sslproto)
        from test.test_asyncio import test_ssl as _tssl
    except ImportError:  # pragma: no cover - 3.9/3.10
        _tssl = None
except ImportError as exc:  # PyPy 3.9: no test/test_asyncio in its stdlib
    NOT_AVAILABLE = "test.test_asyncio not importable here: %s" % (exc,)

_PURE_PY_RUNNING_LOOP = sys.implementation.name == "pypy"
WHITE_BOX = ("test_timeout_rounding", "test_internal_fds")  # read loop._selector / BaseSelectorEventLoop internals


KNOWN_FAILING: tuple = ()  # none left (test_ssl's test_remote_shutdown_receives_trailing_data was one)


# PyPy only: the test expects "coroutine ... was never awaited" at once, which needs CPython's refcounting
# (PyPy's GC finalises the coroutine later); it fails the same way on PyPy's stock asyncio loop.
REFCOUNT_ONLY = ("test_run_until_complete_nesting",) if _PURE_PY_RUNNING_LOOP else ()


def _excluded(name: str) -> bool:
    return name in WHITE_BOX or name in KNOWN_FAILING or name in REFCOUNT_ONLY


def _make(name, *mixins):
    def create_event_loop(self):
        return powpow.aio.new_event_loop()

    def setUp(self):
        super(cls, self).setUp()
        if _PURE_PY_RUNNING_LOOP and hasattr(self, "_get_running_loop"):
            # 3.9's utils.TestCase stubs events._get_running_loop (to catch implicit loops); CPython's C
            # get_running_loop ignores the stub, PyPy's pure-Python one obeys it and sees no loop at all
            self.unpatch_get_running_loop()

    cls = type(name, mixins + (_tu.TestCase,), {"create_event_loop": create_event_loop,
                                                "new_loop": create_event_loop, "setUp": setUp})
    for attr in dir(cls):
        if attr.startswith("test") and _excluded(attr):
            setattr(cls, attr, None)  # not callable: the loader leaves it out
    return cls


if NOT_AVAILABLE is None:
    _events_mixin = getattr(_te, "UnixEventLoopTestsMixin", _te.EventLoopTestsMixin)
    TestCPythonEvents = _make("TestCPythonEvents", _events_mixin, _te.SubprocessTestsMixin)
    TestCPythonSockLowlevel = _make("TestCPythonSockLowlevel", _tsl.BaseSockTestsMixin)
    TestCPythonSendfile = _make("TestCPythonSendfile", _tsf.SendfileTestsBase)
    TestCPythonBufferedProto = _make("TestCPythonBufferedProto", _tbp.BaseTestBufferedProtocol)
    TestCPythonServer = _make("TestCPythonServer", _tsv.BaseStartServer)
    TestCPythonStartTLS = _make("TestCPythonStartTLS", _tsp.BaseStartTLS)

    if _tssl is not None:
        class TestCPythonSSL(_tssl.TestSSL):  # type: ignore[misc]
            """test_ssl.TestSSL makes its loop in setUp with asyncio.new_event_loop(): swap that one."""

            def setUp(self):
                _tu.TestCase.setUp(self)
                self.loop = powpow.aio.new_event_loop()
                self.set_event_loop(self.loop)
                self.addCleanup(self.loop.close)

            def new_loop(self):
                return powpow.aio.new_event_loop()

        for _n in KNOWN_FAILING:
            setattr(TestCPythonSSL, _n, None)

    def test_exclusions_are_only_white_box():
        names = [n for c in (TestCPythonEvents, TestCPythonSockLowlevel, TestCPythonSendfile, TestCPythonStartTLS)
                 for n in dir(c) if n.startswith("test") and getattr(c, n) is None]
        assert all(n in WHITE_BOX or n in REFCOUNT_ONLY for n in names)
        assert len([n for n in names if n in WHITE_BOX]) <= 3
        assert unittest.defaultTestLoader.loadTestsFromTestCase(TestCPythonEvents).countTestCases() > 50
