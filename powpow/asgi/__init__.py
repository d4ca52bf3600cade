"""powpow.asgi: an ASGI 3 server (spec 2.5) on powpow's HTTP server, WebSocket layer and powpow.aio.

    import powpow.asgi
    powpow.asgi.serve(app, host="127.0.0.1", port=8000)        # blocking

    server = powpow.asgi.Server(app, port=0).listen()           # embedding, tests
    server.port; server.run(); server.shutdown()                # run() blocks; shutdown() from any thread

or ``python -m powpow asgi module:app``.  Scopes ``http``, ``websocket``
and ``lifespan``; extensions ``http.response.pathsend``,
``http.response.trailers``, ``http.response.early_hint`` and
``websocket.http.response``.  Layout: ``server`` (Server, serve, shutdown),
``_http`` (the http cycle and scopes), ``_ws`` (the websocket cycle),
``_lifespan``.  This package imports asyncio; ``import powpow`` does not.
"""
from ._http import ClientDisconnected
from .server import GRACE_DEFAULT, Server, serve

__all__ = ["ClientDisconnected", "GRACE_DEFAULT", "Server", "serve"]
