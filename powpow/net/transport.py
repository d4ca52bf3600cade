"""The transport contract: what protocol code (HTTP, WebSocket, asyncio, ASGI) may use of a connection.

Why a contract: the HTTP server, and after it WebSocket, the asyncio bridge
and TLS, must not depend on ``net.tcp.Connection`` and its private state.
``net.tls.TlsTransport`` is the second implementation of this same
``Transport`` (over a ``Connection``), so everything above it works unchanged
over TLS; there ``bytes_sent`` counts ciphertext, ``queued_bytes`` plaintext
waiting for encryption plus ciphertext waiting for the kernel, and ``tls``
(absent on plain connections) says what the handshake negotiated.  ``Transport`` is a
``typing.Protocol`` (structural: implementations do not inherit from it),
``runtime_checkable`` so ``isinstance(conn, Transport)`` checks the names.

The contract, as ``net.tcp.Connection`` implements it:

Writing (ordered: bytes, buffers and file chunks leave in call order)
    ``write(data) -> bool`` / ``writev(buffers) -> bool``: write now, queue
    what the kernel does not take.  False when not accepted (closing or
    closed) or when the queue is now at/above ``high_water`` -- the data IS
    queued then: stop producing until ``on_drain``.  ``send``/``sendv`` are
    the same methods under their older names.

    ``send_file(path_or_fd, offset=0, count=None, header=None, own_fd=False)``:
    ``sendfile`` from a path or fd (pread+send where sendfile is impossible),
    ``header`` first.  With ``own_fd=True`` an int fd is taken over (no dup):
    the transport closes it once sent, on teardown, or at once if the call
    does not accept it.

    Cap rule: one large ``bytes`` object is queued by reference whatever its
    size (it streams from the caller's buffer), but data handed over while
    the queue already holds more than ``max_queued`` bytes is refused loudly:
    the transport closes with ``WriteQueueFull`` (given to ``on_close``) and
    logs a warning.  Never a silent truncation.

Reading
    ``on_data(conn, memoryview)``: the view is valid only during the call.
    ``pause_reading()`` / ``resume_reading()`` / ``reading_paused``.

End of input and closing
    ``on_eof(conn)``: runs once when the peer's FIN is read, after all data
    before it.  When set, EOF does not close the transport: the write side
    stays open until the owner calls ``close()`` or ``close_after_drain()``
    (which after EOF closes as soon as the queue is empty).  When None, the
    transport closes itself once its queue is delivered.
    ``peer_closed``: the peer's FIN was seen -- read, or while reading is
    paused, reported by the poller (EPOLLRDHUP, POLLRDHUP, kqueue EV_EOF).
    ``close()`` now; ``abort()`` now with an RST; ``close_after_drain()``
    deliver, FIN, then close; ``write_eof()`` FIN after the queue, keep reading.
    ``on_close(conn, exc)`` runs exactly once (``exc`` None when orderly);
    do not use the transport after it returned.

Flow control and progress
    ``queued_bytes`` (memory bytes queued), ``output_pending`` (anything not
    yet on the wire: bytes, file chunks, a pending FIN), ``bytes_sent``
    (monotonic count of bytes the kernel accepted: the measure of write
    progress; a growing queue is not progress), ``high_water``,
    ``low_water``, ``max_queued``, ``set_write_buffer_limits(high, low)``,
    ``writable``, ``on_drain(conn)`` (the queue fell to ``low_water`` after a
    write returned False).  Queued file chunks count towards ``high_water``/
    ``low_water`` as ``high_water // FILES_HIGH`` each (the fd they hold, not
    their size), not in ``queued_bytes``.

Identity
    ``peer_address``, ``sock_address``, ``get_client_ip()`` (None for unix
    sockets), ``family``, ``is_unix``, ``context`` (free for the owner),
    ``closed``, ``loop``.
"""
from typing import Any, Callable, Optional

try:
    from typing import Protocol, runtime_checkable
except ImportError:  # pragma: no cover - Python < 3.8
    from typing_extensions import Protocol, runtime_checkable  # type: ignore

__all__ = ["Transport"]


@runtime_checkable
class Transport(Protocol):
    """A byte-stream connection as protocol code sees it (see the module docstring)."""

    # Callbacks: attributes the owner sets (None = not interested).
    on_data: Optional[Callable[[Any, memoryview], None]]
    on_close: Optional[Callable[[Any, Optional[BaseException]], None]]
    on_drain: Optional[Callable[[Any], None]]
    on_eof: Optional[Callable[[Any], None]]
    context: Any

    high_water: int
    low_water: int
    max_queued: int
    peer_closed: bool
    bytes_sent: int
    family: int
    loop: Any

    def write(self, data) -> bool:
        """Write bytes-like ``data``; False when refused or now at/above high water (data queued)."""

    def writev(self, buffers) -> bool:
        """Write several buffers in order, with one ``writev`` where possible."""

    def send_file(self, path_or_fd, offset: int = 0, count: Optional[int] = None, header=None,
                  own_fd: bool = False) -> bool:
        """Send a file range (sendfile, or pread+send), ``header`` first; ordered with writes."""

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        """Set ``high_water`` / ``low_water``."""

    def read_now(self) -> None:
        """Read (and hand to ``on_data``) what is waiting now, before the next poll."""

    def pause_reading(self) -> None:
        """Stop ``on_data`` until ``resume_reading()``; a hang-up still sets ``peer_closed``."""

    def resume_reading(self) -> None:
        """Deliver data again (from the loop, never inside this call)."""

    @property
    def reading_paused(self) -> bool:
        """True between ``pause_reading()`` and ``resume_reading()``."""

    def close(self) -> None:
        """Close now, dropping anything queued."""

    def abort(self) -> None:
        """Close now with an RST, dropping anything queued."""

    def close_after_drain(self) -> None:
        """Deliver everything queued, send FIN, then close (input is discarded meanwhile)."""

    def write_eof(self) -> None:
        """Send FIN once the queue is delivered; reading goes on."""

    @property
    def queued_bytes(self) -> int:
        """Bytes in memory not yet accepted by the kernel."""

    @property
    def output_pending(self) -> bool:
        """True while bytes, file chunks or a FIN wait to be sent."""

    @property
    def writable(self) -> bool:
        """False when a write would be refused or the queue is above high water."""

    @property
    def closed(self) -> bool:
        """True once closed (``on_close`` has run or is running)."""

    @property
    def peer_address(self) -> Any:
        """The peer's address (``(host, port)``, 4-tuple for IPv6, path for unix), or None."""

    @property
    def sock_address(self) -> Any:
        """This end's address, or None."""

    @property
    def is_unix(self) -> bool:
        """True for a unix-domain socket."""

    def get_client_ip(self) -> Optional[str]:
        """The peer's IP as text; None for unix sockets."""
