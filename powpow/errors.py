"""The one error hierarchy of powpow.

Every error that powpow raises on purpose derives from ``PowpowError``.  Errors
caused by bad peer input carry what to answer with (an HTTP status, later a
WebSocket close code), so the layer that meets the peer converts them once,
in one place, instead of guessing.
"""


class PowpowError(Exception):
    """Base class of every error powpow raises on purpose."""


class ParseError(PowpowError):
    """The peer sent something the HTTP parser rejects.

    ``status`` is the HTTP status code to answer with (400, 413, 414, 431, 501,
    505); the message names the problem.  After a ParseError the connection's
    framing can no longer be trusted: answer, then close.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return "%d %s" % (self.status, self.message)


class LoopError(PowpowError):
    """Misuse of the event loop: an fd registered twice, a closed loop, run() re-entered."""


class ResourceLeakError(PowpowError):
    """Debug mode: ``Loop.close()`` found live timers, watchers or pooled buffers."""
