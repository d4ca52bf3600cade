"""HTTP/1.x for powpow.  For now: the sans-I/O request parser and multipart parser."""
from powpow.errors import ParseError

from ._message import Headers, Request
from .parser import (
    MAX_BODY,
    MAX_CHUNK_LINE,
    MAX_HEADER_SIZE,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
    SPOOL_THRESHOLD,
    RequestParser,
)

__all__ = [
    "RequestParser", "ParseError", "Request", "Headers",
    "MAX_REQUEST_LINE", "MAX_HEADER_SIZE", "MAX_HEADERS", "MAX_BODY",
    "SPOOL_THRESHOLD", "MAX_CHUNK_LINE",
]
