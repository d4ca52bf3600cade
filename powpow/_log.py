"""Loggers that import ``logging`` on first use.

``logging`` (with ``traceback``, ``linecache``, ``tokenize``, ``textwrap``...)
is one of the larger imports under ``from powpow import HttpServer``, and the
library logs only on error paths and when an access log is asked for.  Each
module keeps its ``log = get_logger("powpow.x")`` line; the object behaves as
``logging.getLogger("powpow.x")`` -- same records, same handlers, same levels
-- because every attribute is looked up on that very logger, created at the
first attribute access.  Once ``logging`` is loaded (by the application, say),
``get_logger`` hands out the real logger directly.

The caller's file and line in a record stay right: ``log.error(...)`` fetches
the bound method first and then calls it from the caller's frame, so no frame
of this module is on the stack when ``logging`` looks for its caller.

Error paths run when resources are short: with every descriptor in use
(EMFILE) the interpreter cannot read ``logging``'s source to import it.  Then
``logging`` was never imported in this process, so nothing configured it, and
``logging`` itself would print WARNING and above to stderr (its "last resort"
handler) and drop the rest: the fallback does the same for that call, and the
next call tries the import again.
"""
import sys

TYPE_CHECKING = False  # mypy treats this name as True
if TYPE_CHECKING:
    import logging

__all__ = ["get_logger", "configure_server_logging"]


class LazyLogger:
    """Stands for ``logging.getLogger(name)`` until something is asked of it."""

    __slots__ = ("_name", "_logger")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger = None

    def __getattr__(self, attr: str):  # only names this class lacks come here
        logger = self._logger
        if logger is None:
            try:
                import logging
            except OSError:  # EMFILE, ENFILE: see the module docstring
                if attr in _LEVELS or attr in ("log", "exception", "isEnabledFor"):
                    return getattr(_LastResort(attr), attr)
                raise
            logger = self._logger = logging.getLogger(self._name)
        return getattr(logger, attr)

    def __repr__(self) -> str:
        return "<LazyLogger %s>" % (self._name,)


_WARNING = 30
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50, "fatal": 50}


class _LastResort:
    """What unconfigured ``logging`` does with one call: WARNING and above to stderr, as ``msg % args``."""

    __slots__ = ("_level",)

    def __init__(self, method: str) -> None:
        self._level = _LEVELS.get(method, 40)  # exception() logs at ERROR

    def _emit(self, level: int, msg, args, exc_info) -> None:
        if level < _WARNING:
            return
        try:
            text = str(msg) % args if args else str(msg)
        except Exception:  # a bad format must not raise on an error path
            text = "%s %r" % (msg, args)
        if exc_info:
            exc = sys.exc_info()[1] if exc_info is True else (
                exc_info[1] if isinstance(exc_info, tuple) else exc_info)
            if exc is not None:
                text += "\n%s: %s" % (type(exc).__name__, exc)
        try:
            sys.stderr.write(text + "\n")
        except (OSError, ValueError, AttributeError):  # no stderr: as logging's handler, say nothing
            pass

    def _call(self, msg, *args, exc_info=None, **_kw) -> None:
        self._emit(self._level, msg, args, exc_info)

    def exception(self, msg, *args, exc_info=True, **_kw) -> None:
        self._emit(40, msg, args, exc_info)

    def log(self, level: int, msg, *args, exc_info=None, **_kw) -> None:
        self._emit(level, msg, args, exc_info)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 (logging's name)
        return level >= _WARNING

    debug = info = warning = warn = error = critical = fatal = _call


def get_logger(name: str) -> "logging.Logger":
    """``logging.getLogger(name)``, without importing ``logging`` before it is used."""
    loaded = sys.modules.get("logging")
    if loaded is not None:
        return loaded.getLogger(name)
    return LazyLogger(name)  # type: ignore[return-value]


# uvicorn's --log-level words ("trace" is DEBUG here)
_SERVER_LEVELS = {"critical": 50, "error": 40, "warning": 30, "info": 20, "debug": 10, "trace": 10}


def configure_server_logging(level) -> None:
    """The ASGI and WSGI servers' ``log_level`` (uvicorn's option): the ``powpow`` loggers'
    level, and, when the application configured no logging, a stderr handler (so the
    access log and the start/stop lines show).  None leaves logging alone; an unknown
    level is a ValueError."""
    if level is None:
        return
    import logging

    lvl = _SERVER_LEVELS.get(str(level).lower())
    if lvl is None:
        raise ValueError("log_level must be one of %s, got %r" % (", ".join(_SERVER_LEVELS), level))
    logging.getLogger("powpow").setLevel(lvl)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s:%(name)s: %(message)s")
