"""WebSocket errors: one type per layer, each carrying what the peer is told.

``WsProtocolError`` is raised inside the sans-I/O core on bad peer input and
caught once in ``Protocol.receive_data``, which turns it into a close frame
with ``code`` (RFC 6455 section 7.4.1).  ``WsHandshakeError`` is a failed
opening handshake: ``status`` is the HTTP status a server answers (400/426),
or the status a client received.
"""
from typing import Optional

from ..errors import PowpowError


class WsError(PowpowError):
    """Base of every WebSocket error."""


class WsProtocolError(WsError):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__("%d %s" % (code, reason))
        self.code = code
        self.reason = reason


class WsHandshakeError(WsError):
    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


# What a close without a reason means (RFC 6455 §7.4.1), for WsClosed's message
_NO_REASON = {
    1000: "(normal closure)",
    1001: "(going away)",
    1005: "(the close frame carried no status code)",
    1006: "(no close frame: the connection was lost)",
}


class WsClosed(WsError):
    """Raised by the blocking client when the connection is closed (``code``, ``reason``)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__("connection closed: %d %s" % (code, reason or _NO_REASON.get(code, "(no reason given)")))
        self.code = code
        self.reason = reason
