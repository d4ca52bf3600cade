"""TCP (and unix stream) connections and the TCP server -- the names, kept in one place.

The code lives in modules cut along its seams:

* ``connection`` -- ``Connection`` (the ``Transport`` implementation): reading,
  end of input, closing, identity;
* ``_writing``   -- its write path: queue, TCP_CORK, backpressure, the cap rule;
* ``_filesend``  -- file chunks: ``sendfile`` with a pread+send fallback;
* ``listener``   -- ``TcpServer``: listening sockets and the accept path.

``powpow.net.tcp`` re-exports them so existing imports keep working.
"""
from ._filesend import FileChunk as _FileChunk
from .connection import (DEFAULT_HIGH_WATER, DEFAULT_LINGER_MS, DEFAULT_LOW_WATER, DEFAULT_MAX_QUEUED, Connection,
                         edge_capable, report)
from .listener import TcpServer
from .listener import _Listener  # noqa: F401  (http.server adopts pre-bound sockets with it; prefer TcpServer.adopt)

__all__ = ["Connection", "TcpServer"]

_ = (_FileChunk, DEFAULT_HIGH_WATER, DEFAULT_LINGER_MS, DEFAULT_LOW_WATER, DEFAULT_MAX_QUEUED, edge_capable, report)
