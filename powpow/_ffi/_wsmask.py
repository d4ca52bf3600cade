"""Pure-Python twin of the native WebSocket mask (``pp_ws_mask`` in src/pp_ws.c).

``ws_mask(data, key, phase)`` returns a new bytearray with
``out[i] = data[i] ^ key[(i + phase) % 4]``.  Byte ``i`` of a payload is XORed
with key byte ``i % 4``, so the four strided slices ``data[j::4]`` are each
XORed with one constant byte: a ``bytes.translate`` with a precomputed
256-byte table, which runs in C on CPython and PyPy alike (four passes, no
Python loop per byte, no big-integer arithmetic).  The 256 tables (64 KiB)
are built on first use.
"""
from typing import List, Optional

_TABLES: Optional[List[bytes]] = None


def _tables() -> List[bytes]:
    global _TABLES
    if _TABLES is None:
        ident = bytes(range(256))
        _TABLES = [ident.translate(bytes(b ^ k for b in range(256))) for k in range(256)]
    return _TABLES


def ws_mask(data, key: bytes, phase: int = 0) -> bytearray:
    n = len(data)
    if n < 8:
        return bytearray(b ^ key[(i + phase) & 3] for i, b in enumerate(bytes(data)))
    tables = _tables()
    src = data if isinstance(data, bytes) else bytes(data)
    out = bytearray(n)
    for j in range(4):
        out[j::4] = src[j::4].translate(tables[key[(j + phase) & 3]])
    return out
