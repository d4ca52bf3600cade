"""Buffered bodies that move to a temporary file past a threshold.

``SpooledBody`` collects body pieces in memory (a list, joined once) until the
total passes ``threshold`` bytes, then writes everything to an *unnamed*
temporary file (``tempfile.TemporaryFile``: ``O_TMPFILE`` on Linux, so the file
never has a name in the directory; elsewhere it is created 0600 with
``O_CREAT | O_EXCL`` and unlinked at once).  No name means nothing to find, to
open by name or to leave behind: the space is freed when the descriptor is
closed, or by the kernel when the process dies, even by SIGKILL.  Size limits
are enforced by the caller *before* bytes are handed over, so a body never
grows past ``max_body``.

Ownership: whoever holds the ``SpooledBody`` (or the file ``finish()`` returned)
closes it: ``close()`` (idempotent) drops the memory pieces and closes the
file.  ``Request.close()`` closes ``body_file``; ``multipart.Part.close()`` its
part's file.

Also used by the multipart parser for file parts.

A file that cannot be made or written (no descriptor left, ``EMFILE``; a full
disk, ``ENOSPC``) is the server's trouble, not the client's: ``write`` and
``finish`` raise ``ParseError(503)`` (the ``OSError`` is its ``__cause__``), so
the request is answered 503 with ``Retry-After`` and the connection closed, as
for any body that cannot be taken -- not reset with a traceback.
"""
import os
import sys
from typing import IO, List, Optional

from ..errors import ParseError

STORE_FAILED = "the server cannot store the request body now"

# Linux's O_TMPFILE (with O_DIRECTORY, as the kernel defines it).  PyPy 3.9's
# os module lacks the constant, and tempfile then falls back to a named file
# unlinked a moment later: open it ourselves so no name ever exists there too.
_O_TMPFILE = getattr(os, "O_TMPFILE", 0o20200000 if sys.platform.startswith("linux") else 0)


def open_spool_file(directory: Optional[str] = None, prefix: str = "powpow-body-") -> IO[bytes]:
    """A fresh unnamed temporary file (see the module docstring), opened ``w+b``.

    ``prefix`` only names the file for the instant it exists on systems without
    ``O_TMPFILE``."""
    import tempfile  # ~3 ms (shutil, random...): only once a body is spooled

    if _O_TMPFILE:
        try:
            fd = os.open(directory or tempfile.gettempdir(),
                         _O_TMPFILE | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError:
            pass  # a filesystem without O_TMPFILE support: tempfile's way below
        else:
            return os.fdopen(fd, "w+b")
    return tempfile.TemporaryFile(mode="w+b", prefix=prefix, dir=directory)


class SpooledBody:
    __slots__ = ("_parts", "size", "file", "_threshold", "_dir")

    def __init__(self, threshold: int, directory: Optional[str] = None) -> None:
        self._parts: List[bytes] = []
        self.size = 0
        self.file: Optional[IO[bytes]] = None
        self._threshold = threshold
        self._dir = directory

    def will_spill(self, more: int) -> bool:
        """Would ``more`` further bytes move the body to a (new) file?"""
        return self.file is None and self.size + more > self._threshold

    def write(self, data) -> None:
        self.size += len(data)
        f = self.file
        try:
            if f is not None:
                f.write(data)
                return
            self._parts.append(bytes(data))
            if self.size > self._threshold:
                f = self.file = open_spool_file(self._dir)
                for p in self._parts:
                    f.write(p)
                self._parts = []
        except OSError as exc:
            raise ParseError(503, STORE_FAILED) from exc

    def finish(self):
        """Return ``(data, file)``: the bytes in memory, or the file rewound to 0.

        The file is then the caller's to close (this object forgets it)."""
        f = self.file
        if f is not None:
            self.file = None
            try:
                f.flush()
                f.seek(0)
            except OSError as exc:
                f.close()
                raise ParseError(503, STORE_FAILED) from exc
            return b"", f
        parts = self._parts
        self._parts = []
        return (parts[0] if len(parts) == 1 else b"".join(parts)), None

    def close(self) -> None:
        """Drop what was collected and close the file, if any; idempotent."""
        f = self.file
        self.file = None
        self._parts = []
        if f is not None:
            f.close()

    discard = close

    def __enter__(self) -> "SpooledBody":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
