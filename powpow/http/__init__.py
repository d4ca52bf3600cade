"""HTTP/1.1 for powpow: the sans-I/O request parser, the server, static files and CORS.

The names below load on first use (PEP 562), like ``powpow`` and ``powpow.net``:
``from powpow import HttpServer`` imports ``powpow.http`` first, and must not pull
the static-file planner (``mimetypes``, ``html``, ``secrets``...) or CORS along
when the server never serves a file.
"""
from powpow.errors import ParseError

# name -> submodule that defines it
_LAZY = {
    "Headers": "._message", "Request": "._message",
    "CorsOptions": ".cors", "cors_headers": ".cors",
    "MAX_BODY": ".parser", "MAX_CHUNK_LINE": ".parser", "MAX_HEADER_SIZE": ".parser",
    "MAX_HEADERS": ".parser", "MAX_REQUEST_LINE": ".parser", "SPOOL_THRESHOLD": ".parser",
    "RequestParser": ".parser",
    "HeaderValueError": ".response",
    "HttpServer": ".server", "Response": ".server", "serve_static": ".server",
    "FileRange": ".static", "StaticError": ".static", "StaticOptions": ".static",
    "StaticResponse": ".static", "plan_file": ".static", "plan_static": ".static",
}

TYPE_CHECKING = False  # mypy treats this name as True
if TYPE_CHECKING:
    from ._message import Headers, Request
    from .cors import CorsOptions, cors_headers
    from .parser import (
        MAX_BODY,
        MAX_CHUNK_LINE,
        MAX_HEADER_SIZE,
        MAX_HEADERS,
        MAX_REQUEST_LINE,
        SPOOL_THRESHOLD,
        RequestParser,
    )
    from .response import HeaderValueError
    from .server import HttpServer, Response, serve_static
    from .static import FileRange, StaticError, StaticOptions, StaticResponse, plan_file, plan_static

__all__ = [
    "RequestParser", "ParseError", "Request", "Headers",
    "MAX_REQUEST_LINE", "MAX_HEADER_SIZE", "MAX_HEADERS", "MAX_BODY",
    "SPOOL_THRESHOLD", "MAX_CHUNK_LINE",
    "HttpServer", "Response", "HeaderValueError", "serve_static",
    "StaticOptions", "StaticResponse", "StaticError", "FileRange", "plan_static", "plan_file",
    "CorsOptions", "cors_headers",
]


def __getattr__(name: str):
    try:
        mod = _LAZY[name]
    except KeyError:
        raise AttributeError("module 'powpow.http' has no attribute %r" % (name,)) from None
    value = getattr(__import__(mod[1:], globals(), None, ["__name__"], 1), name)  # as in powpow/__init__.py
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
