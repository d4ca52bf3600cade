"""HTTP/1.1 for powpow: the sans-I/O request parser, the server, static files and CORS."""
from powpow.errors import ParseError

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
