"""WebSocket (RFC 6455 + RFC 7692) for powpow: sans-I/O core, server, client, broadcast and pub/sub.

Layout: ``frames`` (parse/build), ``protocol`` (state machine, close
codes), ``deflate`` (permessage-deflate), ``handshake`` (HTTP side),
``connection`` (``WebSocket`` on a Transport), ``server`` (``upgrade``,
``WsServer``, ``broadcast``, ``Hub``), ``client`` (``connect``,
``connect_sync``).  See README "WebSocket".
"""
from .client import SyncClient, connect, connect_sync
from .connection import SendStatus, WebSocket, WsOptions
from .deflate import DeflateOptions
from .errors import WsClosed, WsError, WsHandshakeError, WsProtocolError
from .protocol import Protocol
from .server import Hub, WsServer, broadcast, encode_frame, upgrade

__all__ = ["DeflateOptions", "Hub", "Protocol", "SendStatus", "SyncClient", "WebSocket", "WsClosed", "WsError",
           "WsHandshakeError", "WsOptions", "WsProtocolError", "WsServer", "broadcast", "connect",
           "connect_sync", "encode_frame", "upgrade"]
