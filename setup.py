# setuptools has no pyproject key for cffi's build hook; everything else lives
# in pyproject.toml.  This file only attaches the native module build.
from setuptools import setup

setup(cffi_modules=["build_ffi.py:ffibuilder"])
