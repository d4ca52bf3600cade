"""Networking errors: part of the one hierarchy (every class derives from ``PowpowError``).

Peer misbehaviour never raises out of the loop: it closes the connection, and
the error object below is what ``on_close(conn, exc)`` / ``on_error(exc)``
receive, with a message that names the peer, the address and the errno.
"""
import errno as _errno
import os

from ..errors import PowpowError


class NetError(PowpowError):
    """Base class of networking errors."""


class ConnectError(NetError, OSError):
    """A client connect failed: every address refused/unreachable, or the timeout passed.

    ``errno`` is the last attempt's errno (``ETIMEDOUT`` for the timeout),
    ``host``/``port`` what was asked for, ``attempts`` a list of
    ``(address, errno)`` for every address tried.
    """

    def __init__(self, message: str, err: int, host: str, port, attempts) -> None:
        OSError.__init__(self, err, message)
        self.host = host
        self.port = port
        self.attempts = attempts

    def __str__(self) -> str:
        return self.strerror


class ConnectionLost(NetError, OSError):
    """A connection died with an OS error (reset by peer, broken pipe, ...)."""

    def __init__(self, err: int, what: str, peer: str) -> None:
        OSError.__init__(self, err, "%s %s: [Errno %d] %s" % (what, peer, err, os.strerror(err)))

    def __str__(self) -> str:
        return self.strerror


class WriteQueueFull(NetError):
    """A write came while the queue already held more than ``max_queued`` bytes; the connection was closed.

    The peer stopped reading and the producer ignored backpressure (``write``
    returning False).  One large write is never refused: it is queued by
    reference and streamed; only writes piled onto an over-cap queue are.
    """


class ConnectionTimeout(NetError):
    """A deadline passed (e.g. the lingering close after ``close_after_drain``)."""


class DatagramTruncated(NetError):
    """A UDP datagram was larger than the receive buffer; it is reported, not delivered cut.

    ``size`` is the datagram's real length (Linux reports it), ``limit`` the
    buffer size, ``addr`` the sender.
    """

    def __init__(self, size: int, limit: int, addr) -> None:
        super().__init__("datagram of %d bytes from %r truncated to the %d-byte receive buffer"
                         % (size, addr, limit))
        self.size = size
        self.limit = limit
        self.addr = addr


ETIMEDOUT = _errno.ETIMEDOUT
