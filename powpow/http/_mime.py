"""Content-Type for a file name, from its extension.

What: ``content_type_for(name)`` returns the value of the Content-Type field
for a static file, ``; charset=utf-8`` included where the type is text
(except HTML: see below).

Invariants:
* The answer depends only on the name and the Python version, never on the
  machine: ``/etc/mime.types`` (or the Windows registry) differs between hosts
  and would make the same file served with different types in CI and prod.
  ``WEB_TYPES`` is fixed here for the types a web server meets daily; only
  names it does not know fall back to the *built-in* table of the stdlib
  (``mimetypes.MimeTypes()`` instances start from ``_types_map_default``, not
  from the files ``mimetypes.init()`` reads).
* Unknown or extension-less names are ``application/octet-stream`` (RFC 9110
  §8.3: a sender that does not know the type should not guess one; with
  ``X-Content-Type-Options: nosniff`` the browser will not sniff either).
* ``charset=utf-8`` is added to ``text/*`` and to the textual application
  types (JS, JSON, XML, SVG, ``+json``/``+xml`` suffixes): an absent charset
  makes browsers fall back to windows-1252 for text/plain.
* ``text/html`` gets no charset, as from nginx, Apache and ``http.server``:
  a page declares its own encoding (``<meta charset>``, a BOM), and a charset
  in the header would override that declaration (HTML's encoding sniffing
  puts the transport layer first), turning a legacy ``iso-8859-1`` page into
  mojibake.  A page with no declaration is left to the browser's detection
  (current browsers recognise UTF-8).  HTML that powpow writes itself
  (listings) says ``charset=utf-8`` in the header.

Why a dict lookup: this runs once per static request; a lower-cased suffix and
one dict lookup cost well under a microsecond.
"""
from typing import Dict, Optional

__all__ = ["content_type_for", "WEB_TYPES", "DEFAULT_TYPE"]

DEFAULT_TYPE = "application/octet-stream"

# The common web types, pinned.  JS is text/javascript per RFC 9239 (§6); the
# stdlib said application/javascript before 3.12.
WEB_TYPES: Dict[str, str] = {
    ".html": "text/html", ".htm": "text/html",
    ".css": "text/css",
    ".js": "text/javascript", ".mjs": "text/javascript", ".cjs": "text/javascript",
    ".json": "application/json", ".map": "application/json",
    ".jsonld": "application/ld+json",
    ".webmanifest": "application/manifest+json",
    ".xml": "application/xml", ".xsl": "application/xml",
    ".rss": "application/rss+xml", ".atom": "application/atom+xml",
    ".xhtml": "application/xhtml+xml",
    ".txt": "text/plain", ".text": "text/plain", ".log": "text/plain",
    ".md": "text/markdown", ".markdown": "text/markdown",
    ".csv": "text/csv", ".tsv": "text/tab-separated-values",
    ".ics": "text/calendar", ".vtt": "text/vtt",
    ".svg": "image/svg+xml", ".svgz": "image/svg+xml",
    ".png": "image/png", ".apng": "image/apng",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".jfif": "image/jpeg",
    ".gif": "image/gif", ".webp": "image/webp", ".avif": "image/avif",
    ".ico": "image/vnd.microsoft.icon", ".bmp": "image/bmp",
    ".tif": "image/tiff", ".tiff": "image/tiff",
    ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".oga": "audio/ogg",
    ".opus": "audio/ogg", ".wav": "audio/wav", ".flac": "audio/flac",
    ".m4a": "audio/mp4", ".aac": "audio/aac",
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm",
    ".ogv": "video/ogg", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
    ".pdf": "application/pdf", ".wasm": "application/wasm",
    ".zip": "application/zip", ".gz": "application/gzip",
    ".tgz": "application/gzip", ".br": "application/octet-stream",
    ".bz2": "application/x-bzip2", ".xz": "application/x-xz",
    ".zst": "application/zstd", ".tar": "application/x-tar",
    ".7z": "application/x-7z-compressed",
    ".bin": "application/octet-stream", ".exe": "application/octet-stream",
}

_TEXTUAL_APPLICATION = frozenset((
    "application/json", "application/xml", "application/javascript",
    "application/ecmascript", "application/x-javascript", "image/svg+xml",
))

# Built-in table only (see module docstring); strict types first.  Built the
# first time an extension is not in WEB_TYPES: ``mimetypes.MimeTypes()`` fills
# a dozen maps from ~250 entries, a cost a server that never meets such a
# name should not pay at start-up.
_STDLIB_TYPES: Optional[Dict[str, str]] = None


def _stdlib_types() -> Dict[str, str]:
    global _STDLIB_TYPES
    if _STDLIB_TYPES is None:
        import mimetypes

        table = mimetypes.MimeTypes()
        types = dict(table.types_map[0])
        types.update(table.types_map[1])
        _STDLIB_TYPES = types
    return _STDLIB_TYPES


def _with_charset(mime: str) -> str:
    if mime == "text/html":  # declares its own encoding (module docstring)
        return mime
    if (mime.startswith("text/") or mime in _TEXTUAL_APPLICATION
            or mime.endswith("+json") or mime.endswith("+xml")):
        return mime + "; charset=utf-8"
    return mime


_CACHE: Dict[str, str] = {}


def content_type_for(name: str) -> str:
    """Content-Type value for the file called ``name`` (a base name or a path)."""
    slash = max(name.rfind("/"), name.rfind("\\"))
    dot = name.rfind(".")
    if dot <= slash + 1:  # no extension, or a dotfile such as ".profile"
        return DEFAULT_TYPE
    ext = name[dot:].lower()
    hit = _CACHE.get(ext)
    if hit is None:
        mime = WEB_TYPES.get(ext) or _stdlib_types().get(ext) or DEFAULT_TYPE
        hit = _with_charset(mime)
        if len(_CACHE) < 4096:  # bounded: extensions come from request paths
            _CACHE[ext] = hit
    return hit
