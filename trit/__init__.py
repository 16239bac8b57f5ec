"""Trit: offline chat with 1.58-bit (ternary) language models (trit.engine, trit.app, trit.cli)."""

__version__ = "0.1.0"  # the one place: pyproject.toml reads it (tool.setuptools.dynamic)
