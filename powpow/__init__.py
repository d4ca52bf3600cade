"""powpow: fast network servers for CPython and PyPy."""
