"""The README's Python examples are real code: run each one and check what it prints."""
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def run_block(marker: str, what: str):
    """Run the README's first Python block containing ``marker``; return its stdout lines."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if marker in b]
    assert blocks, "README lost its %s" % what
    proc = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_readme_tour_runs():
    out = run_block("loop = powpow.Loop()", "loop tour")
    assert out[0] == "next iteration, before timers and I/O"
    assert out.count("every 100 ms, no drift") in (9, 10)
    assert "300 ms later, never earlier" in out
    assert out[-1] == "read b'hello'"


def test_readme_networking_example_runs():
    assert run_block("powpow.TcpServer(", "networking example") == ["echoed b'hello'"]


def test_readme_websocket_example_runs():
    assert run_block("ws.connect(loop", "WebSocket example") == ["echoed hello", "closed 1000"]
