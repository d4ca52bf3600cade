"""A plain Starlette application (routes, a WebSocket endpoint, lifespan state)."""
import contextlib

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute


@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"counter": [0]}


async def home(request):
    request.state.counter[0] += 1
    return PlainTextResponse("home %d" % request.state.counter[0])


async def echo_body(request):
    body = await request.body()
    return JSONResponse({"len": len(body), "ct": request.headers.get("content-type", "")})


async def ws(websocket):
    await websocket.accept(subprotocol="v1" if "v1" in websocket.scope["subprotocols"] else None)
    data = await websocket.receive_bytes()
    await websocket.send_bytes(data[::-1])
    await websocket.close(code=4000, reason="done")


app = Starlette(routes=[Route("/", home), Route("/echo", echo_body, methods=["POST"]), WebSocketRoute("/ws", ws)],
                lifespan=lifespan)
