"""The native layer's build: warning-free C, nothing heavy imported by ``import powpow``."""
import glob
import os
import subprocess
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_c_sources_compile_without_warnings():
    """src/*.c with -Wall -Wextra -Werror, with and without SSE2."""
    cc = os.environ.get("CC", "cc")
    sources = sorted(glob.glob(os.path.join(ROOT, "src", "*.c")))
    assert len(sources) >= 2
    py_include = ["-I", sysconfig.get_paths()["include"]]  # pp_cpy.c uses the C API
    for extra in ([], ["-DPP_NO_SSE2"]):
        for src in sources:
            r = subprocess.run([cc, "-std=gnu99", "-O2", "-Wall", "-Wextra", "-Werror", "-fsyntax-only"] + extra
                               + py_include + [src], capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and not r.stderr, (src, extra, r.stderr)


def test_import_powpow_does_not_import_numpy():
    """numpy (~100 ms to import) is loaded only when the vectorised pure scanner is chosen."""
    code = ("import sys, powpow\n"
            "assert 'numpy' not in sys.modules, 'import powpow imported numpy'\n"
            "print(powpow.NATIVE)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    pure = os.environ.get("POWPOW_PURE", "") not in ("", "0")
    assert r.stdout.strip() == str(not pure)


def test_pure_scanner_loads_numpy_only_for_a_large_span():
    code = ("import sys, array\n"
            "from powpow._ffi import _scan\n"
            "out = array.array('I', bytes(4 * 8))\n"
            "assert _scan.scan_lines(b'A: b\\r\\n\\r\\n', 0, 8, out, 0) == (2, -1)\n"
            "assert 'numpy' not in sys.modules\n"
            "big = b'X: ' + b'v' * _scan.NUMPY_MIN_SPAN + b'\\r\\n\\r\\n'\n"
            "assert _scan.scan_lines(big, 0, len(big), out, 0) == (2, -1)\n"
            "assert ('numpy' in sys.modules) == _scan.HAVE_NUMPY\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_wheel_ships_py_typed_and_no_test_only_c(tmp_path):
    """The built wheel carries py.typed (the public API is typed) and the C sources stay out of it."""
    import zipfile

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), root], check=True, timeout=600)
    wheels = [p for p in os.listdir(str(tmp_path)) if p.endswith(".whl")]
    assert len(wheels) == 1, wheels
    names = zipfile.ZipFile(os.path.join(str(tmp_path), wheels[0])).namelist()
    assert "powpow/py.typed" in names
    assert not [n for n in names if n.endswith(".c") or n.startswith("tests/")], names
