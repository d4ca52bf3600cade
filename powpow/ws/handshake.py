"""The opening handshake (RFC 6455 section 4): request checks, accept key, the client's 101 parser.

Server side: ``check_request(req)`` returns None or ``(status, message)``
-- 426 (with ``Sec-WebSocket-Version: 13``) when the client did not ask for
WebSocket version 13, 400 for any other malformed handshake.

Client side: ``parse_response(buf)`` reads the 101 head with the same
strictness as the request parser: ``HTTP/1.1 SP 3DIGIT SP reason CRLF``,
token header names, no obs-fold, no control bytes, a bounded size.
"""
import base64
import binascii
import hashlib
import os
import re
from typing import List, Optional, Tuple

from .errors import WsHandshakeError

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_RESPONSE_HEAD = 16384
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS = re.compile(r"^HTTP/1\.1 ([0-9]{3}) ([^\x00-\x08\x0a-\x1f\x7f]*)$")


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def header_tokens(value: Optional[str]) -> List[str]:
    return [t.strip().lower() for t in value.split(",")] if value else []


def valid_key(key: Optional[str]) -> bool:
    if not key or len(key) != 24:
        return False
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return False


def all_tokens(headers, name: str) -> List[str]:
    """The comma-separated tokens of every ``name`` line (RFC 7230 3.2.2: repeated lines join with ",")."""
    return [t.strip().lower() for v in headers.get_all(name) for t in v.split(",")]


def check_request(req) -> Optional[Tuple[int, str]]:
    """None when ``req`` is a valid WebSocket upgrade, else ``(status, reason)``.

    Every line of a repeated header counts, as in the websockets library: the
    list headers (Upgrade, Connection) are joined; a second
    Sec-WebSocket-Key, or a second Sec-WebSocket-Version with another value,
    is a 400 (which one would the accept key or the framing follow?).
    """
    h = req.headers
    if "websocket" not in all_tokens(h, "upgrade"):
        return 426, "this endpoint speaks WebSocket: Upgrade: websocket required"
    if req.method != "GET":
        return 400, "WebSocket handshake must be a GET"
    if req.version != "1.1":
        return 400, "WebSocket handshake must be HTTP/1.1"
    if "upgrade" not in all_tokens(h, "connection"):
        return 400, "Connection: Upgrade missing"
    versions = {v.strip() for v in h.get_all("sec-websocket-version")}
    if len(versions) > 1:
        return 400, "more than one Sec-WebSocket-Version (%s)" % ", ".join(sorted(versions))[:100]
    if versions != {"13"}:
        return 426, "Sec-WebSocket-Version 13 required"
    keys = h.get_all("sec-websocket-key")
    if len(keys) > 1:
        return 400, "more than one Sec-WebSocket-Key"
    if not keys or not valid_key(keys[0].strip()):
        return 400, "Sec-WebSocket-Key must be 16 bytes in base64"
    return None


# The opening handshake's own fields: given in ``headers`` they would contradict it
# (the arguments that set the last two: subprotocols=, compression=)
_HANDSHAKE_FIELDS = {
    "upgrade": None, "connection": None, "sec-websocket-key": None, "sec-websocket-version": None,
    "sec-websocket-protocol": "subprotocols=", "sec-websocket-extensions": "compression=",
}


def client_request(host: str, path: str, key: str, headers, subprotocols, extensions: Optional[str],
                   authorization: Optional[str] = None) -> bytes:
    """The opening request.  ``headers`` (a mapping or pairs) are added; a ``Host`` or
    ``Authorization`` among them replaces the one from the URL; one of the handshake's
    own fields (``Upgrade``, ``Connection``, ``Sec-WebSocket-*``) is a ``ValueError``."""
    extra = []
    for name, value in (headers.items() if hasattr(headers, "items") else headers or ()):
        name, value = str(name), str(value)
        if not _TOKEN.match(name) or _BAD_VALUE.search(value) or not value.isascii() and not _latin1(value):
            raise ValueError("invalid header %r: %r" % (name, value))
        lname = name.lower()
        if lname in _HANDSHAKE_FIELDS:
            arg = _HANDSHAKE_FIELDS[lname]
            raise ValueError("header %r is the WebSocket handshake's own%s" % (
                name, "; use %s" % arg if arg else ""))
        if lname == "host":
            host = value
        elif lname == "authorization":
            authorization = value
        else:
            extra.append("%s: %s" % (name, value))
    lines = ["GET %s HTTP/1.1" % path, "Host: %s" % host, "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: %s" % key, "Sec-WebSocket-Version: 13"]
    if authorization is not None:
        lines.append("Authorization: %s" % authorization)
    if subprotocols:
        lines.append("Sec-WebSocket-Protocol: %s" % ", ".join(subprotocols))
    if extensions:
        lines.append("Sec-WebSocket-Extensions: %s" % extensions)
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


class Response:
    """A parsed response head: ``status``, ``reason``, ``headers`` (lower-case name -> list of values)."""

    def __init__(self, status: int, reason: str, headers) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers

    def get(self, name: str) -> Optional[str]:
        v = self.headers.get(name)
        return ", ".join(v) if v else None


def parse_response(buf: bytes) -> Optional[Tuple[Response, int]]:
    """``(response, head_length)`` once the head is complete, None before; WsHandshakeError if invalid."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_RESPONSE_HEAD:
            raise WsHandshakeError("response head over %d bytes" % MAX_RESPONSE_HEAD)
        return None
    if end > MAX_RESPONSE_HEAD:
        raise WsHandshakeError("response head over %d bytes" % MAX_RESPONSE_HEAD)
    text = buf[:end].decode("latin-1")
    lines = text.split("\r\n")
    m = _STATUS.match(lines[0])
    if m is None:
        raise WsHandshakeError("invalid status line %r" % lines[0][:100])
    headers: dict = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name):
            raise WsHandshakeError("invalid header line %r" % line[:100])
        if "\n" in value or "\r" in value or _BAD_VALUE.search(value):
            raise WsHandshakeError("invalid header value in %r" % line[:100])
        headers.setdefault(name.lower(), []).append(value.strip(" \t"))
    return Response(int(m.group(1)), m.group(2), headers), end + 4


def check_response(resp: Response, key: str, subprotocols) -> Optional[str]:
    """Validate a 101 against our request; returns the chosen subprotocol."""
    if 300 <= resp.status < 400:
        raise WsHandshakeError("redirect refused: %d to %s" % (resp.status, resp.get("location")), resp.status)
    if resp.status != 101:
        raise WsHandshakeError("server answered %d %s instead of 101" % (resp.status, resp.reason), resp.status)
    if "websocket" not in header_tokens(resp.get("upgrade")):
        raise WsHandshakeError("101 without Upgrade: websocket", 101)
    if "upgrade" not in header_tokens(resp.get("connection")):
        raise WsHandshakeError("101 without Connection: upgrade", 101)
    if resp.get("sec-websocket-accept") != accept_key(key):
        raise WsHandshakeError("wrong Sec-WebSocket-Accept", 101)
    proto = resp.get("sec-websocket-protocol")
    if proto is not None:
        if proto not in (subprotocols or ()):
            raise WsHandshakeError("server chose subprotocol %r that was not offered" % proto, 101)
    return proto
