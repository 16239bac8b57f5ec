"""Trit's Qt-free application core: conversation store, model catalog and library, downloads,
energy/memory meters, settings. Nothing here imports PySide6 (tests/app_core checks it).

Modules: sampling, store, catalog, downloads, meters, settings."""
