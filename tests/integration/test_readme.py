"""The README's loop tour is real code: run it and check what it prints."""
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_tour_runs():
    text = README.read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "loop = powpow.Loop()" in b]
    assert blocks, "README lost its Python tour"
    proc = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "next iteration, before timers and I/O"
    assert out.count("every 100 ms, no drift") in (9, 10)
    assert "300 ms later, never earlier" in out
    assert out[-1] == "read b'hello'"
