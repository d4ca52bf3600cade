"""A FastAPI JSON endpoint for perf/bench_asgi.py (every server runs this same module)."""
from fastapi import FastAPI

app = FastAPI()


@app.get("/json")
def hello_json():
    return {"message": "Hello, World!"}
