"""WebSocket masking: the shipped SSE2 C, the pure translate twin and a byte-loop reference agree."""
import importlib
import os
import random

import pytest

from powpow import _ffi
from powpow._ffi import _wsmask

REQUIRE_NATIVE = os.environ.get("POWPOW_REQUIRE_NATIVE", "") not in ("", "0")

try:
    shipped = importlib.import_module("powpow._ffi._native")
except ImportError:
    shipped = None


def reference(data, key, phase=0):
    return bytes(b ^ key[(i + phase) % 4] for i, b in enumerate(data))


def native_mask(data, key, phase=0):
    ffi, lib = shipped.ffi, shipped.lib
    out = bytearray(len(data))
    src = bytearray(data)
    if data:
        lib.pp_ws_mask(ffi.from_buffer(src), ffi.from_buffer(out), len(data), key, phase)
    return bytes(out)


IMPLS = [("pure", lambda d, k, p=0: bytes(_wsmask.ws_mask(d, k, p))),
         ("public", lambda d, k, p=0: bytes(_ffi.ws_mask(d, k, p)))]
if shipped is not None:
    IMPLS.append(("native", native_mask))


def test_shipped_module_present():
    if REQUIRE_NATIVE:
        assert shipped is not None and _ffi.NATIVE


@pytest.mark.parametrize("name,impl", IMPLS, ids=[n for n, _ in IMPLS])
def test_every_length_alignment_and_phase(name, impl):
    rnd = random.Random(7)
    block = bytes(rnd.randrange(256) for _ in range(64 + 16))
    for key in (b"\x00\x00\x00\x00", b"\xff\x01\x80\x7f", bytes(rnd.randrange(256) for _ in range(4))):
        for n in range(0, 65):
            for align in range(0, 16, 3):
                data = memoryview(block)[align:align + n]
                for phase in range(4):
                    assert impl(data, key, phase) == reference(bytes(data), key, phase), (n, align, phase)


@pytest.mark.parametrize("name,impl", IMPLS, ids=[n for n, _ in IMPLS])
def test_large_and_involution(name, impl):
    data = os.urandom(1 << 20 | 13)
    key = os.urandom(4)
    once = impl(data, key)
    assert once[:4096] == reference(data[:4096], key) and once[-4096:] == reference(data[-4096:], key, len(data) - 4096)
    assert impl(once, key) == data  # masking twice is the identity


@pytest.mark.parametrize("name,impl", IMPLS, ids=[n for n, _ in IMPLS])
def test_pieces_with_phase_equal_whole(name, impl):
    data = os.urandom(1000)
    key = os.urandom(4)
    whole = impl(data, key)
    for cut in (1, 3, 17, 500, 999):
        assert impl(data[:cut], key, 0) + impl(data[cut:], key, cut % 4) == whole


def test_native_in_place():
    if shipped is None:  # a source checkout without a build: nothing native to check
        assert not REQUIRE_NATIVE
        return
    buf = bytearray(os.urandom(100))
    orig = bytes(buf)
    key = b"\x01\x02\x03\x04"
    ffi, lib = shipped.ffi, shipped.lib
    p = ffi.from_buffer(buf)
    lib.pp_ws_mask(p, p, len(buf), key, 0)
    assert bytes(buf) == reference(orig, key)
