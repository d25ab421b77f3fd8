"""Thin shim: Dataflow's --setup_file needs a setup.py; all metadata lives in pyproject.toml."""

import setuptools

setuptools.setup()
