"""Fixtures shared by the integration tests (see _net.py)."""
from ._net import net_loop  # noqa: F401  (one loop on the default backend, for the heavy network tests)
