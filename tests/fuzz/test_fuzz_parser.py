"""CI runs the seeded fuzzer briefly on every interpreter (atheris is optional)."""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "powpow_fuzz_parser", os.path.join(os.path.dirname(__file__), "fuzz_parser.py"))
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


def test_seeded_fuzzer_finds_no_violation():
    n = fuzz.run_seeded(seconds=3.0, seed=int(os.environ.get("FUZZ_SEED", "1")))
    assert n > 50


def test_fixed_inputs_pass_the_invariant():
    import random
    for data in fuzz.CORPUS + fuzz.MP_CORPUS + [b"", b"\r\n", b"\x00" * 10, b"GET " * 100]:
        fuzz.check_one(data, random.Random(0))
