"""CORS, sans-I/O: which Access-Control-* headers to answer with (Fetch standard §3.2).

What: ``cors_headers(method, get_header, opts)`` looks at ``Origin`` and, for a
preflight, ``Access-Control-Request-Method`` / ``-Headers``, and returns
``(is_preflight, status, headers)``:

* not a CORS request (no ``Origin``): ``(False, None, headers)`` all the same
  -- ``Access-Control-Allow-Origin: *`` (and the exposed headers) for a
  wildcard policy, ``Vary: Origin`` for one that depends on the origin --
  because a shared cache hands this very answer to later cross-origin
  fetches (Fetch standard, "CORS protocol and HTTP caches");
* preflight (``OPTIONS`` + ``Origin`` + ``Access-Control-Request-Method``):
  ``(True, 204, allow-headers)`` or ``(True, 403, [Vary])`` when the origin,
  method or a requested header is not allowed -- the server answers it
  directly and never calls the handler;
* any other request with an ``Origin``: ``(False, None, headers)`` to add to
  the handler's response.  A disallowed origin gets no ``Access-Control-*``
  header (the browser then hides the response), only ``Vary: Origin``, but the
  request is not refused: CORS protects readers, not the server.

Invariants (each a test):
* ``Access-Control-Allow-Origin: *`` only when ``*`` is allowed *and*
  credentials are not -- then on every answer that is not a preflight,
  whatever the ``Origin``; otherwise the origin is echoed, and every answer
  (with an allowed, a refused or no ``Origin``) says ``Vary: Origin``, so a
  shared cache never serves one origin's answer to another.
  (``allow_origins=("*",)`` with ``allow_credentials=True`` therefore lets
  every site read credentialed responses -- that is what was asked for, but
  it is rarely what is meant; list the origins instead.)
* Methods compare case-sensitively (RFC 9110 §9.1), header names
  case-insensitively; allowed requested headers are echoed back (lower-case),
  which also works with credentials, where browsers refuse a literal ``*``.
* Configured values are checked once for CR/LF/NUL, never per request.  An
  origin may end in one ``/`` (as copied from the address bar); it is dropped.
"""
from typing import Callable, Iterable, List, Optional, Tuple, Union

from powpow.errors import PowpowError

__all__ = ["CorsOptions", "cors_headers", "CorsConfigError"]

GetHeader = Callable[[str], Optional[str]]
OriginRule = Union[Iterable[str], Callable[[str], bool]]


class CorsConfigError(PowpowError, ValueError):
    """An unusable CorsOptions value (bad origin, CR/LF in a value)."""


def _clean(what: str, values: Iterable[str]) -> Tuple[str, ...]:
    out = []
    for v in values:
        if not isinstance(v, str) or not v or any(c in v for c in "\r\n\x00,"):
            raise CorsConfigError("%s: bad value %r" % (what, v))
        out.append(v.strip())
    return tuple(out)


class CorsOptions:
    """CORS policy.  ``allow_origins``: ``("*",)``, a list of exact origins
    (``"https://example.com"``, ``"http://localhost:8080"``, ``"null"``), or a
    callable ``origin -> bool``.  ``allow_methods``/``allow_headers`` may contain
    ``"*"`` (any).  ``max_age``: seconds a preflight may be cached, None to omit."""

    __slots__ = ("allow_origins", "origin_predicate", "any_origin", "allow_methods",
                 "any_method", "allow_headers", "any_header", "expose_headers",
                 "allow_credentials", "max_age", "_methods_value", "_static_headers")

    def __init__(
        self,
        allow_origins: OriginRule = ("*",),
        allow_methods: Iterable[str] = ("GET", "HEAD", "POST"),
        allow_headers: Iterable[str] = (),
        expose_headers: Iterable[str] = (),
        allow_credentials: bool = False,
        max_age: Optional[int] = 600,
    ) -> None:
        if callable(allow_origins):
            self.origin_predicate: Optional[Callable[[str], bool]] = allow_origins
            self.allow_origins: Tuple[str, ...] = ()
        else:
            if isinstance(allow_origins, str):
                allow_origins = (allow_origins,)
            # "https://app.example/" (copied from the address bar) means the origin
            # "https://app.example": one trailing slash goes before the check
            origins = tuple(o[:-1] if o.endswith("/") and "://" in o and not o.endswith("//") else o
                            for o in _clean("allow_origins", allow_origins))
            for o in origins:
                if o not in ("*", "null") and ("://" not in o or not o.split("://", 1)[1]
                                               or "/" in o.split("://", 1)[1]):
                    raise CorsConfigError("allow_origins: %r is not scheme://host[:port]" % (o,))
            self.origin_predicate = None
            self.allow_origins = origins
        self.any_origin = "*" in self.allow_origins
        if isinstance(allow_methods, str):
            allow_methods = (allow_methods,)
        self.allow_methods = _clean("allow_methods", allow_methods)
        self.any_method = "*" in self.allow_methods
        if isinstance(allow_headers, str):
            allow_headers = (allow_headers,)
        self.allow_headers = tuple(h.lower() for h in _clean("allow_headers", allow_headers))
        self.any_header = "*" in self.allow_headers
        if isinstance(expose_headers, str):
            expose_headers = (expose_headers,)
        self.expose_headers = _clean("expose_headers", expose_headers)
        self.allow_credentials = bool(allow_credentials)
        if max_age is not None and (not isinstance(max_age, int) or max_age < 0):
            raise CorsConfigError("max_age must be a non-negative int or None")
        self.max_age = max_age
        self._methods_value = ", ".join(m for m in self.allow_methods if m != "*")
        # What every answer that is not a preflight carries whatever its Origin (see
        # the module docstring): computed once, copied per request.
        if self.varies_by_origin:
            self._static_headers = [("Vary", "Origin")]
        else:
            self._static_headers = [("Access-Control-Allow-Origin", "*")]
            if self.expose_headers:
                self._static_headers.append(("Access-Control-Expose-Headers", ", ".join(self.expose_headers)))

    def origin_allowed(self, origin: str) -> bool:
        if self.origin_predicate is not None:
            return bool(self.origin_predicate(origin))
        return self.any_origin or origin in self.allow_origins

    def _origin_headers(self, origin: str) -> List[Tuple[str, str]]:
        if self.any_origin and not self.allow_credentials and self.origin_predicate is None:
            headers = [("Access-Control-Allow-Origin", "*")]
        else:
            headers = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        if self.allow_credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers

    @property
    def varies_by_origin(self) -> bool:
        return not (self.any_origin and not self.allow_credentials
                    and self.origin_predicate is None)


_PREFLIGHT_VARY = ("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")


def cors_headers(method: str, get_header: GetHeader, opts: CorsOptions,
                 ) -> Tuple[bool, Optional[int], List[Tuple[str, str]]]:
    """``(is_preflight, status, headers)`` for one request; see the module docstring."""
    origin = get_header("origin")
    if origin is None:
        return False, None, list(opts._static_headers)
    origin = origin.strip(" \t")
    # An Origin with CR/LF cannot arrive through the parser; refuse to echo one anyway.
    safe_origin = origin and not any(c in origin for c in "\r\n\x00,")
    requested_method = get_header("access-control-request-method") if method == "OPTIONS" else None
    if requested_method is None:
        if not opts.varies_by_origin:  # "*": the same answer for every origin
            return False, None, list(opts._static_headers)
        if not safe_origin or not opts.origin_allowed(origin):
            return False, None, [("Vary", "Origin")]
        headers = opts._origin_headers(origin)
        if opts.expose_headers:
            headers.append(("Access-Control-Expose-Headers", ", ".join(opts.expose_headers)))
        return False, None, headers

    requested_method = requested_method.strip(" \t")
    refused = (True, 403, [_PREFLIGHT_VARY])
    if not safe_origin or not opts.origin_allowed(origin):
        return refused
    if not _is_token(requested_method) or not (
            opts.any_method or requested_method in opts.allow_methods):
        return refused
    asked = get_header("access-control-request-headers") or ""
    names = [h.strip(" \t").lower() for h in asked.split(",")]
    names = [h for h in names if h]
    for name in names:
        if not _is_token(name):
            return refused
        if not opts.any_header and name not in opts.allow_headers:
            return refused

    headers = opts._origin_headers(origin)
    # The Vary of a preflight covers what the answer was computed from.
    headers = [h for h in headers if h[0] != "Vary"]
    headers.append(("Access-Control-Allow-Methods",
                    requested_method if opts.any_method else opts._methods_value))
    if names:
        headers.append(("Access-Control-Allow-Headers", ", ".join(names)))
    if opts.max_age is not None:
        headers.append(("Access-Control-Max-Age", str(opts.max_age)))
    headers.append(_PREFLIGHT_VARY)
    return True, 204, headers


_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")


def _is_token(value: str) -> bool:
    return bool(value) and all(c in _TCHAR for c in value.lower())
