"""Stdlib functions that some requests need, imported on their first call.

``from powpow import HttpServer`` must not pay for ``json`` or ``urllib.parse``
(with ``ipaddress``) before a handler asks for ``req.args``, ``req.json()`` or
``res.json()``.  A ``from urllib.parse import parse_qsl`` inside the function
that needs it would cost every call: CPython 3.11 spends ~10k instructions on
a local import of a dotted module name (~1k for ``import json``), as much as
``parse_qsl`` itself on a short query.  Instead each name below starts as a
stub that imports the real function, rebinds the module global to it and
calls it: callers write ``_lazy.parse_qsl(...)`` (one global and one
attribute lookup, which PyPy's JIT folds away), and from the second call on
they reach the stdlib function directly.

The stubs accept what the real functions accept; results are identical.
"""


def _load_parse_qsl(*args, **kwargs):
    global parse_qsl
    from urllib.parse import parse_qsl as real

    parse_qsl = real
    return real(*args, **kwargs)


parse_qsl = _load_parse_qsl


def _load_unquote(*args, **kwargs):
    global unquote
    from urllib.parse import unquote as real

    unquote = real
    return real(*args, **kwargs)


unquote = _load_unquote


def _load_json_loads(*args, **kwargs):
    global json_loads
    from json import loads as real

    json_loads = real
    return real(*args, **kwargs)


json_loads = _load_json_loads


def _load_json_dumps_compact(obj) -> str:
    """``json.dumps(obj, ensure_ascii=False, separators=(",", ":"))``.

    ``dumps`` with non-default options builds a ``JSONEncoder`` on every call;
    one encoder made with the same options gives the same text (its state
    lives in each ``encode`` call, so threads may share it)."""
    global json_dumps_compact
    from json import JSONEncoder

    real = JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    json_dumps_compact = real
    return real(obj)


json_dumps_compact = _load_json_dumps_compact
