"""The app's core objects, built once and passed in (no singletons): store, settings, model
library, download queue, energy meter. `data_dir` keeps all of them in one folder (tests, the
self-test); without it they live in the per-user data and config dirs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trit.app.core.catalog import CatalogEntry, CatalogError, ModelLibrary, load_catalog
from trit.app.core.downloads import DownloadQueue
from trit.app.core.meters import CpuTimeEstimate, EnergyMeter, cpu_seconds_without
from trit.app.core.settings import Settings, SettingsStore
from trit.app.core.store import ConversationStore


@dataclass
class AppContext:
    store: ConversationStore
    settings_store: SettingsStore
    settings: Settings
    library: ModelLibrary
    energy: EnergyMeter | None = None
    problems: list[str] = field(default_factory=list)  # shown once in the window
    download_options: dict[str, Any] = field(default_factory=dict)  # downloads.Download keywords
    _downloads: DownloadQueue | None = None

    @classmethod
    def create(
        cls,
        data_dir: str | Path | None = None,
        *,
        catalog: list[CatalogEntry] | None = None,
        models_dir: str | Path | None = None,
        on_salvage: Callable[[], None] | None = None,
    ) -> AppContext:
        """on_salvage: see ConversationStore."""
        problems: list[str] = []
        if data_dir is not None:
            d = Path(data_dir)
            # creates d (StoreError if it cannot)
            store = ConversationStore(d / "conversations.sqlite3", on_salvage=on_salvage)
            settings_store = SettingsStore(d / "settings.json")
        else:
            store = ConversationStore(on_salvage=on_salvage)
            settings_store = SettingsStore()
        settings = settings_store.load()
        problems += settings_store.problems
        if models_dir is not None:
            settings = replace(settings, models_dir=str(models_dir))
        if catalog is None:
            try:
                catalog = load_catalog()
            except CatalogError as e:
                problems.append(str(e))
                catalog = []
        library = ModelLibrary(settings.models_dir, catalog)
        library.settle_old_names()  # before a model is loaded under an old name
        # the estimate leaves out the window's thread (this one): drawing is not a reply's work
        cpu = cpu_seconds_without(threading.current_thread())
        energy = EnergyMeter(estimate=CpuTimeEstimate(settings.watts_per_core, cpu_seconds=cpu))
        return cls(store, settings_store, settings, library, energy, problems)

    @property
    def downloads(self) -> DownloadQueue:
        """Created on first use; it outlives the models dialog so downloads go on when it closes."""
        if self._downloads is None:
            self._downloads = DownloadQueue(
                max_parallel=self.settings.max_parallel_downloads, download_options=self.download_options
            )
        return self._downloads

    @property
    def has_downloads(self) -> bool:
        return self._downloads is not None

    def save_settings(self, settings: Settings) -> str:
        """Puts settings in use and saves them; returns why they could not be saved ("" when they
        were), for the window to show (it was appended to `problems`, which are shown only at
        start: a full disk said "Settings saved")."""
        self.settings = settings
        try:
            self.settings_store.save(settings)
        except OSError as e:
            return f"Cannot save the settings to {self.settings_store.path}: {e.strerror or e}."
        return ""

    def close(self) -> None:
        if self._downloads is not None:
            self._downloads.close(wait=True, timeout=5)  # part files stay for resuming next time
            self._downloads = None
        self.store.close()


__all__ = ["AppContext"]
