"""A FastAPI application exercising what powpow.asgi must serve (see tests/integration/test_asgi_apps.py)."""
import contextlib
import os
from typing import List

from fastapi import FastAPI, File, Form, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel

HERE = os.path.dirname(os.path.abspath(__file__))
SENT_TYPES: List[str] = []  # message types the app sent (to see pathsend in use)
LIFESPAN: List[str] = []


@contextlib.asynccontextmanager
async def lifespan(app):
    LIFESPAN.append("startup")
    yield {"greeting": "hello from lifespan"}
    LIFESPAN.append("shutdown")


api = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    tags: List[str] = []


@api.get("/items/{item_id}")
async def read_item(item_id: int, q: str = ""):
    return {"item_id": item_id, "q": q}


@api.post("/items")
async def create_item(item: Item):
    return {"name": item.name, "total": item.price * 2, "tags": item.tags}


@api.get("/greeting")
async def greeting(request: Request):
    return {"greeting": request.state.greeting}


@api.get("/json")
def hello_json():
    return {"message": "Hello, World!"}


@api.get("/stream")
async def stream():
    async def gen():
        for i in range(100):
            yield b"chunk %03d\n" % i

    return StreamingResponse(gen(), media_type="text/plain")


@api.get("/file")
async def file():
    return FileResponse(os.path.join(HERE, "static", "site.css"), media_type="text/css")


@api.post("/upload")
async def upload(title: str = Form(...), doc: UploadFile = File(...)):  # noqa: B008 (FastAPI's idiom)
    data = await doc.read()
    return {"title": title, "filename": doc.filename, "size": len(data), "head": data[:10].decode("latin-1")}


@api.websocket("/ws")
async def ws_echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_json({"echo": text})
    except WebSocketDisconnect:
        pass


async def app(scope, receive, send):
    """The FastAPI app, recording the message types it sends."""
    async def recording_send(message):
        SENT_TYPES.append(message["type"])
        await send(message)

    await api(scope, receive, recording_send)
