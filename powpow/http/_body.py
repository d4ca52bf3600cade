"""Buffered bodies that move to a temporary file past a threshold.

``SpooledBody`` collects body pieces in memory (a list, joined once) until the
total passes ``threshold`` bytes, then writes everything to a temporary file
created with ``tempfile.NamedTemporaryFile``: mkstemp semantics, i.e. mode 0600
and ``O_CREAT | O_EXCL`` (no following a planted symlink, no reuse of an existing
file), deleted when closed.  Size limits are enforced by the caller *before*
bytes are handed over, so a body never grows past ``max_body``.

Also used by the multipart parser for file parts.
"""
import tempfile
from typing import IO, List, Optional


def open_spool_file(directory: Optional[str] = None, prefix: str = "powpow-body-") -> IO[bytes]:
    """A fresh temporary file: mode 0600, created exclusively, deleted on close."""
    return tempfile.NamedTemporaryFile(mode="w+b", prefix=prefix, dir=directory, delete=True)


class SpooledBody:
    __slots__ = ("_parts", "size", "file", "_threshold", "_dir")

    def __init__(self, threshold: int, directory: Optional[str] = None) -> None:
        self._parts: List[bytes] = []
        self.size = 0
        self.file: Optional[IO[bytes]] = None
        self._threshold = threshold
        self._dir = directory

    def write(self, data) -> None:
        self.size += len(data)
        f = self.file
        if f is not None:
            f.write(data)
            return
        self._parts.append(bytes(data))
        if self.size > self._threshold:
            f = self.file = open_spool_file(self._dir)
            for p in self._parts:
                f.write(p)
            self._parts = []

    def finish(self):
        """Return ``(data, file)``: the bytes in memory, or the file rewound to 0."""
        f = self.file
        if f is not None:
            f.flush()
            f.seek(0)
            return b"", f
        parts = self._parts
        self._parts = []
        return (parts[0] if len(parts) == 1 else b"".join(parts)), None

    def discard(self) -> None:
        f = self.file
        self.file = None
        self._parts = []
        if f is not None:
            f.close()
