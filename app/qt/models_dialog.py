"""The model manager: installed models and catalog entries, downloads with progress, import,
reveal, delete, models folder. A view over ModelLibrary and DownloadQueue (app/core): the queue
lives in the AppContext, so downloads go on when the dialog is closed, and its callbacks (called
on the queue's threads) reach the dialog as Qt signals through DownloadSignals."""

from __future__ import annotations

import dataclasses
import html
import itertools
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QFile, QObject, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)
from trit.app.core.catalog import (
    CatalogEntry,
    ImportCancelledError,
    InstalledModel,
    LibraryError,
    UnverifiedEntryError,
    path_problem,
    skipped_text,
)
from trit.app.core.downloads import (
    DownloadQueue,
    DownloadRequest,
    Progress,
    State,
    discard_partial,
    move_partial,
    part_path,
    pending_requests,
)
from trit.app.core.units import format_bytes, format_duration

from .colours import error_colour
from .context import AppContext
from .safe_text import ask

ROW = Qt.ItemDataRole.UserRole  # ("installed", path) | ("entry", catalog id)


def copy_into_library(
    library: Any, source: str | Path, cancel: threading.Event, progress: Callable[[int, int], None]
) -> InstalledModel:
    """ModelLibrary.import_model in steps that can be watched and stopped: progress(done, total)
    after each chunk copied, ImportCancelledError once cancel is set. Raises LibraryError. Blocks:
    run it on a worker thread."""
    return library.import_model(source, cancel=cancel, progress=progress)


class ImportSignals(QObject):
    """copy_into_library on a worker thread, reported into the GUI thread."""

    progress = Signal(object, object)  # bytes copied, bytes in all (may pass 2**31)
    finished = Signal(object, str)  # InstalledModel or None, message when None ("" = cancelled)


class DownloadSignals(QObject):
    """DownloadQueue callbacks re-emitted as signals (queued into the GUI thread)."""

    progress = Signal(object)  # downloads.Progress (a frozen dataclass of plain values)
    done = Signal(str, str)  # key, final path
    failed = Signal(str, str, str)  # key, message, details (DownloadError.details)

    def attach(self, queue: DownloadQueue) -> None:
        queue.on_progress = self.progress.emit
        queue.on_done = lambda key, path: self.done.emit(key, str(path))
        queue.on_failed = lambda key, err: self.failed.emit(key, str(err), err.details)


STALL_NOTICE = 3.0  # seconds without a byte before the dialog says the download is stalled


def progress_text(p: Progress) -> str:
    """ "12 MB of 98 MB · 4.1 MB/s · 20 s left", or "… · stalled — waiting for the server (8 s)"
    while the server sends nothing (no speed or time left then: neither would be true)."""
    have = format_bytes(p.downloaded)
    text = f"{have} of {format_bytes(p.total)}" if p.total else have
    if p.state == State.DOWNLOADING and p.stalled >= STALL_NOTICE:
        text += f" · stalled — waiting for the server ({p.stalled:.0f} s)"
    elif p.state == State.DOWNLOADING and p.speed > 0:
        text += f" · {format_bytes(p.speed)}/s"
        if p.eta is not None:
            text += f" · {format_duration(p.eta)} left"
    return text


STATE_LABELS = {
    State.QUEUED: "Queued",
    State.RESOLVING: "Connecting",
    State.DOWNLOADING: "Downloading",
    State.PAUSED: "Paused",
    State.VERIFYING: "Verifying",
    State.DONE: "Downloaded",
    State.FAILED: "Failed",
    State.CANCELLED: "Cancelled",
}


class ModelsDialog(QDialog):
    # path of the model to open: object, not str, keeps a non-UTF-8 name's surrogates (Qt drops them)
    model_chosen = Signal(object)

    def __init__(self, ctx: AppContext, parent: QWidget | None = None, *, current_path: str = "") -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.library = ctx.library
        self.library.remove_stale_imports()  # copies of an import the app died in
        self.current_path = current_path
        self.setWindowTitle("Models")
        self.setAccessibleName("Models")
        # not larger than the screen (800x500 logical pixels at 200 % on a small laptop)
        avail = (parent.screen() if parent is not None else self.screen()).availableGeometry()
        self.resize(min(900, avail.width() - 40), min(520, avail.height() - 60))
        self.progress: dict[str, Progress] = {}  # latest per download key
        self.errors: dict[str, str] = {}
        self.error_details: dict[str, str] = {}  # paths, digests: the details label's tooltip
        self.resumable: dict[str, DownloadRequest] = {}  # part files from an earlier run, by key
        # keys the user cancelled: progress the worker sent before it saw the cancel is stale
        self.cancelled: set[str] = set()
        self.signals = DownloadSignals(self)
        self.signals.attach(ctx.downloads)
        self.signals.progress.connect(self._on_progress)
        self.signals.done.connect(self._on_done)
        self.signals.failed.connect(self._on_failed)
        for p in ctx.downloads.jobs():
            # finished jobs stay in the queue's list; here they are installed models (or deleted
            # ones that can be downloaded again), not downloads in progress
            if p.state not in (State.DONE, State.CANCELLED):
                self.progress[p.key] = p
        self._build()
        self._find_resumable()
        self.refresh()

    # -- layout ----------------------------------------------------------------------------------
    def _build(self) -> None:
        # information labels keep an empty accessible name: a screen reader then reads their text
        # (the path, the details, the speed); their purpose is the description. A name replaced
        # the text, and "Models folder" was all that could be heard.
        self.folder_label = QLabel()
        self.folder_label.setAccessibleDescription("Models folder")
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.folder_button = QPushButton("Choose &folder…")
        self.folder_button.setAccessibleName("Choose models folder")
        self.folder_button.setAutoDefault(False)
        self.folder_button.clicked.connect(lambda: self.choose_folder())
        top = QHBoxLayout()
        top.addWidget(QLabel("Folder:"))
        top.addWidget(self.folder_label, 1)
        top.addWidget(self.folder_button)

        self.tree = QTreeWidget()
        self.tree.setAccessibleName("Models")
        self.tree.setHeaderLabels(["Model", "Status", "Size", "Memory", "License"])
        self.tree.setRootIsDecorated(True)
        self.tree.setAlternatingRowColors(True)
        # long names differ at the end (Q2_K, Q4_0): keep both ends, the tooltip has it all
        self.tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        hdr = self.tree.header()
        hdr.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for i in range(1, 5):
            hdr.setSectionResizeMode(i, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.currentItemChanged.connect(lambda *_: self._update_details())
        # Enter or a double click: use an installed model, download a catalog entry. Not
        # itemActivated: on desktops set to open items with one click (KDE's option) a click meant
        # to select a catalog entry would start a download of gigabytes.
        self.tree.itemDoubleClicked.connect(lambda *_: self.activate_selected())
        for key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            enter = QShortcut(QKeySequence(key), self.tree)
            enter.setContext(Qt.ShortcutContext.WidgetShortcut)
            enter.activated.connect(lambda: self.activate_selected())
        delete = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.tree)
        delete.setContext(Qt.ShortcutContext.WidgetShortcut)
        delete.activated.connect(lambda: self.delete_selected())

        self.details = QLabel()
        self.details.setWordWrap(True)
        self.details.setOpenExternalLinks(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.details.setAccessibleDescription("Model details")
        self.details.setMinimumHeight(self.fontMetrics().height() * 3)
        self.bar = QProgressBar()
        self.bar.setAccessibleName("Download progress")
        self.bar.setTextVisible(True)
        self.bar.hide()
        self.bar_label = QLabel()
        self.bar_label.setAccessibleDescription("Download speed and time left")
        self.status = QLabel()
        self.status.setWordWrap(True)
        # model, file and folder names in them are text, never HTML (its images load local files)
        for label in (self.folder_label, self.bar_label, self.status):
            label.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setAccessibleDescription("Models status")

        def button(text: str, name: str, slot: Any) -> QPushButton:
            b = QPushButton(text)
            b.setAccessibleName(name)
            # no default button: Enter belongs to the list (use or download the selected row)
            b.setAutoDefault(False)
            b.clicked.connect(lambda: slot())
            return b

        self.download_button = button("&Download", "Download model", self.download_selected)
        self.pause_button = button("&Pause", "Pause download", self.pause_selected)
        self.resume_button = button("&Resume", "Resume download", self.resume_selected)
        self.cancel_button = button("&Cancel download", "Cancel download", self.cancel_selected)
        self.use_button = button("&Use this model", "Use this model", self.use_selected)
        self.import_file_button = button("&Import GGUF…", "Import a GGUF file", self.choose_import)
        self.import_dir_button = button(
            "Import f&older…", "Import a Hugging Face model folder", lambda: self.choose_import(folder=True)
        )
        self.import_bar = QProgressBar()
        self.import_bar.setAccessibleName("Import progress")
        self.import_cancel_button = button("Cancel i&mport", "Cancel import", self.cancel_import)
        self.importing: threading.Event | None = None  # set = cancel; None: no import running
        self._import_thread: threading.Thread | None = None
        self.reveal_button = button("&Show in folder", "Show in file manager", self.reveal_selected)
        self.delete_button = button("De&lete", "Delete model (to the trash)", self.delete_selected)
        self.undo_button = button("U&ndo delete", "Undo delete", self.undo_delete)
        self.undo_button.hide()
        self.trashed: tuple[Path, Path] | None = None  # (where the model was, where the trash has it)
        self.close_button = button("Close", "Close models", self.close)

        row1 = QHBoxLayout()
        for b in (
            self.use_button,
            self.download_button,
            self.pause_button,
            self.resume_button,
            self.cancel_button,
        ):
            row1.addWidget(b)
        row1.addStretch(1)
        row2 = QHBoxLayout()
        for b in (
            self.import_file_button,
            self.import_dir_button,
            self.reveal_button,
            self.delete_button,
            self.undo_button,
        ):
            row2.addWidget(b)
        row2.addStretch(1)
        row2.addWidget(self.close_button)
        bar_row = QHBoxLayout()
        bar_row.addWidget(self.bar, 1)
        bar_row.addWidget(self.bar_label)
        import_row = QHBoxLayout()
        import_row.addWidget(self.import_bar, 1)
        import_row.addWidget(self.import_cancel_button)
        self.import_bar.hide()
        self.import_cancel_button.hide()

        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.tree, 1)
        lay.addWidget(self.details)
        lay.addLayout(bar_row)
        lay.addLayout(row1)
        lay.addLayout(row2)
        lay.addLayout(import_row)
        lay.addWidget(self.status)

        # Tab follows the screen: folder, list, details (its links), then the buttons row by row
        chain = [self.folder_button, self.tree, self.details]
        chain += [row1.itemAt(i).widget() for i in range(row1.count())]
        chain += [row2.itemAt(i).widget() for i in range(row2.count())]
        chain.append(self.import_cancel_button)
        chain = [w for w in chain if w is not None]
        for a, b in itertools.pairwise(chain):
            QWidget.setTabOrder(a, b)
        self.tree.setFocus()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "tree"):
            self._update_details()  # the error's red depends on the window colour

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not event.spontaneous():
            self.tree.setFocus()  # the list, not "Choose folder…", takes the keys

    # -- content ---------------------------------------------------------------------------------
    def _find_resumable(self) -> None:
        """Part files left by an earlier run: offered as paused downloads."""
        queued = set(self.progress)  # the queue's jobs this dialog shows
        for req in pending_requests(
            self.library.folder, endpoint=self.ctx.settings.hf_endpoint, token=self._token()
        ):
            key = req.key or f"{req.repo}/{req.file}"
            if key not in queued:
                self.resumable[key] = self._under_local_name(req)

    def _under_local_name(self, req: DownloadRequest) -> DownloadRequest:
        """A part file of a catalog entry left under an earlier catalog's local name (five entries
        shared "ggml-model-i2_s.gguf") moves to the entry's own name, so that it does not finish
        as another entry's file."""
        entry = next((e for e in self.library.catalog if e.id == req.key and e.source != "bundled"), None)
        want = self.library.folder / entry.local_name if entry is not None else req.dest
        if want == req.dest or want.exists() or not move_partial(req.dest, want):
            return req  # offered where it is
        return dataclasses.replace(req, dest=want)

    def _token(self) -> str | None:
        """The access token from Settings, for gated repos (None: send none)."""
        return self.ctx.settings.hf_token or None

    def _entry_progress(self, entry: CatalogEntry) -> Progress | None:
        return self.progress.get(entry.id)

    def refresh(self) -> None:
        sel = self.selected()
        self.folder_label.setText(str(self.library.folder))
        self.tree.clear()
        installed_root = QTreeWidgetItem(self.tree, ["Installed"])
        available_root = QTreeWidgetItem(self.tree, ["Available to download"])
        for root in (installed_root, available_root):
            root.setFlags(root.flags() & ~Qt.ItemFlag.ItemIsSelectable)
            f = root.font(0)
            f.setBold(True)
            root.setFont(0, f)
        for m in self.library.installed():
            fit = self.library.ram_fit(m)
            status = "In use" if self.current_path and Path(self.current_path) == m.path else "Installed"
            it = QTreeWidgetItem(
                installed_root,
                [
                    m.name,
                    status,
                    format_bytes(m.size),
                    "fits" if fit.fits else "too big",
                    m.entry.license if m.entry else "",
                ],
            )
            it.setData(0, ROW, ("installed", str(m.path)))
            it.setToolTip(0, f"{m.name}\n{m.path}")
            it.setToolTip(3, fit.text)
        for e in self.library.available():
            fit = self.library.ram_fit(e)
            it = QTreeWidgetItem(
                available_root,
                [
                    e.name,
                    self._status_text(e),
                    format_bytes(e.size) if e.size else "size unknown",
                    "fits" if fit.fits else "too big",
                    e.license,
                ],
            )
            it.setData(0, ROW, ("entry", e.id))
            it.setToolTip(0, f"{e.name}\n{e.repo}: {e.file}")
            it.setToolTip(3, fit.text)
        self.tree.expandAll()
        if sel is not None:
            self.select(sel)
        self._update_details()

    def _status_text(self, e: CatalogEntry) -> str:
        p = self.progress.get(e.id)
        if e.id in self.errors and (p is None or p.state == State.FAILED):
            return "Failed"
        if p is None:
            if e.id in self.resumable:
                return "Paused (can resume)"
            return "Available" if e.verified else "Available (unverified)"
        label = STATE_LABELS.get(p.state, str(p.state))
        if p.fraction is not None and p.state in (State.DOWNLOADING, State.PAUSED, State.QUEUED):
            label += f" {p.fraction * 100:.0f}%"
        return label

    def _items(self) -> list[QTreeWidgetItem]:
        out = []
        for i in range(self.tree.topLevelItemCount()):
            root = self.tree.topLevelItem(i)
            out += [root.child(j) for j in range(root.childCount())]
        return out

    def selected(self) -> tuple[str, str] | None:
        it = self.tree.currentItem()
        d = it.data(0, ROW) if it is not None else None
        return tuple(d) if d else None  # type: ignore[return-value]

    def select(self, row: tuple[str, str]) -> bool:
        for it in self._items():
            if tuple(it.data(0, ROW) or ()) == tuple(row):
                self.tree.setCurrentItem(it)
                return True
        return False

    def _selected_entry(self) -> CatalogEntry | None:
        s = self.selected()
        if s is None or s[0] != "entry":
            return None
        try:
            return self.library.entry(s[1])
        except KeyError:
            return None

    def _selected_installed(self) -> InstalledModel | None:
        s = self.selected()
        if s is None or s[0] != "installed":
            return None
        return next((m for m in self.library.installed() if str(m.path) == s[1]), None)

    def _update_details(self) -> None:
        e, m = self._selected_entry(), self._selected_installed()
        p = self.progress.get(e.id) if e is not None else None
        state = p.state if p is not None else None
        active = state in (State.QUEUED, State.RESOLVING, State.DOWNLOADING, State.VERIFYING)
        # a failure trying again cannot fix (checksum, 404): the part file is gone, start anew
        over = p is not None and state == State.FAILED and not p.retryable
        can_resume = e is not None and (
            state == State.PAUSED
            or (state == State.FAILED and not over)
            or (p is None and e.id in self.resumable)
        )
        self.download_button.setEnabled(
            e is not None and (over or (p is None and e.id not in self.resumable))
        )
        self.pause_button.setEnabled(active and state != State.VERIFYING)
        self.resume_button.setEnabled(can_resume)
        self.cancel_button.setEnabled(
            e is not None and ((p is not None and not over) or e.id in self.resumable)
        )
        self.use_button.setEnabled(m is not None)
        self.reveal_button.setEnabled(m is not None or e is not None)
        deletable = m is not None and self.library.holds(m.path)
        self.delete_button.setEnabled(deletable)
        if e is not None:
            fit = self.library.ram_fit(e)
            lines = [f"<b>{html.escape(e.name)}</b>"]
            if e.description:
                lines.append(html.escape(e.description))
            lic = html.escape(e.license)
            if e.license_url:
                lic = f'<a href="{html.escape(e.license_url)}">{lic}</a>'
            lines.append(f"License: {lic} · Memory: {html.escape(fit.text)}")
            if not e.verified:
                lines.append("<i>No pinned checksum: Trit cannot check this download is intact.</i>")
            if e.id in self.errors:
                red = error_colour(self.palette())
                lines.append(f"<span style='color:{red}'>{html.escape(self.errors[e.id])}</span>")
            self.details.setText("<br>".join(lines))
            self.details.setToolTip(self.error_details.get(e.id, "") if e.id in self.errors else "")
        elif m is not None:
            fit = self.library.ram_fit(m)
            lic = ""
            if m.entry is not None:
                lic = html.escape(m.entry.license)
                if m.entry.license_url:
                    lic = f' · License: <a href="{html.escape(m.entry.license_url)}">{lic}</a>'
                else:
                    lic = f" · License: {lic}"
            self.details.setText(
                f"<b>{html.escape(m.name)}</b><br>{html.escape(str(m.path))}<br>"
                f"{format_bytes(m.size)} · Memory: {html.escape(fit.text)}{lic}"
            )
            self.details.setToolTip("")
        else:
            self.details.setText("Select a model to see its details.")
            self.details.setToolTip("")
        self._update_bar(p)

    def _update_bar(self, p: Progress | None) -> None:
        gone = p is not None and p.state == State.FAILED and not (p.retryable and p.downloaded)
        if p is None or gone or p.state in (State.DONE, State.CANCELLED):
            # nothing downloaded is left after such a failure: no bar claiming 100%
            self.bar.hide()
            self.bar_label.setText("")
            return
        self.bar.show()
        if p.total:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * p.downloaded / p.total))
            self.bar.setFormat(f"{STATE_LABELS.get(p.state, '')} {100 * p.downloaded / p.total:.0f}%")
        else:
            self.bar.setRange(0, 0)
        self.bar_label.setText(progress_text(p))

    # -- downloads -------------------------------------------------------------------------------
    def _confirm(self, title: str, text: str) -> bool:
        """Asks the user (tests replace this)."""
        return ask(self, title, text, default_yes=True)  # a model's name in it stays text

    def download(self, entry: CatalogEntry) -> str | None:
        where = {"endpoint": self.ctx.settings.hf_endpoint, "token": self._token()}
        try:
            req = self.library.download_request(entry, **where)
        except UnverifiedEntryError as e:
            if not self._confirm("Download without a checksum?", str(e)):
                return None
            req = self.library.download_request(entry, **where, confirmed=True)
        except LibraryError as e:
            self.status.setText(str(e))
            return None
        req = dataclasses.replace(req, name=entry.name)  # messages name the model, not repo/file
        self.errors.pop(entry.id, None)
        self.cancelled.discard(entry.id)
        key = self.ctx.downloads.add(req)
        self.status.setText(f"Downloading {entry.name}…")
        self.refresh()
        return key

    def download_selected(self) -> None:
        e = self._selected_entry()
        if e is not None:
            self.download(e)

    def pause_selected(self) -> None:
        e = self._selected_entry()
        if e is not None and e.id in self.progress:
            self.ctx.downloads.pause(e.id)

    def resume_selected(self) -> None:
        e = self._selected_entry()
        if e is None:
            return
        self.errors.pop(e.id, None)
        if e.id in self.progress:
            self.ctx.downloads.resume(e.id)
        elif e.id in self.resumable:
            req = self.resumable.pop(e.id)
            self.cancelled.discard(e.id)
            self.ctx.downloads.add(
                dataclasses.replace(
                    req, endpoint=self.ctx.settings.hf_endpoint, token=self._token(), name=e.name
                )
            )
        self.refresh()

    def cancel_selected(self) -> None:
        e = self._selected_entry()
        if e is None:
            return
        if e.id in self.progress:
            self.cancelled.add(e.id)
            self.ctx.downloads.cancel(e.id)
            self.progress.pop(e.id, None)
        elif e.id in self.resumable:
            if not discard_partial(self.resumable[e.id].dest):
                self.status.setText(
                    f"Another Trit is downloading {e.name} into this folder; cancel it there."
                )
                self.refresh()
                return
            del self.resumable[e.id]
        self.errors.pop(e.id, None)
        self.status.setText(f"Cancelled the download of {e.name}.")
        self.refresh()

    def _on_progress(self, p: Progress) -> None:
        if p.state == State.CANCELLED:
            self.progress.pop(p.key, None)
            self.cancelled.discard(p.key)
        elif p.key in self.cancelled:
            return  # sent before the worker saw the cancel; the row already says Available
        else:
            self.progress[p.key] = p
        for it in self._items():
            if tuple(it.data(0, ROW) or ()) == ("entry", p.key):
                try:
                    it.setText(1, self._status_text(self.library.entry(p.key)))
                except KeyError:
                    pass
        e = self._selected_entry()
        if e is not None and e.id == p.key:
            self._update_details()

    def _on_done(self, key: str, path: str) -> None:
        self.progress.pop(key, None)
        self.errors.pop(key, None)
        self.status.setText(f"Downloaded {Path(path).name}; it is ready to use.")
        self.refresh()
        self.select(("installed", path))

    def _on_failed(self, key: str, message: str, details: str = "") -> None:
        self.errors[key] = message
        self.error_details[key] = details
        req = self.ctx.downloads.request(key)
        try:
            kept = req is not None and part_path(req.dest).stat().st_size > 0
        except OSError:
            kept = False
        # only a part file left on disk makes "continue" true (not after a checksum failure or 404)
        hint = " Select it and press Resume to continue from where it stopped." if kept else ""
        if hint and not message.endswith((".", "!", "?")):
            message += "."
        self.status.setText(message + hint)
        self.refresh()

    # -- library ---------------------------------------------------------------------------------
    def activate_selected(self) -> None:
        """Enter or a double click on a row: use the installed model, or download (or resume)
        the catalog entry. Does nothing where the matching button is disabled."""
        for b in (self.use_button, self.download_button, self.resume_button):
            if b.isEnabled():
                b.click()
                return

    def use_selected(self) -> None:
        m = self._selected_installed()
        if m is None:
            return
        problem = path_problem(str(m.path))
        if problem is not None:
            self.status.setText(" ".join(problem))
            return
        self.current_path = str(m.path)
        self.model_chosen.emit(str(m.path))
        self.status.setText(f"Opening {m.name}…")
        self.refresh()

    def choose_import(self, *, folder: bool = False) -> None:
        """Import GGUF… / Import folder…: asks for the model, then copies it on a worker thread
        with a progress bar and Cancel (a 2 GB copy froze the window for seconds)."""
        if folder:
            path = QFileDialog.getExistingDirectory(self, "Import a Hugging Face model folder")
        else:
            path, _ = QFileDialog.getOpenFileName(
                self, "Import a GGUF model", "", "GGUF models (*.gguf);;All files (*)"
            )
        if path:
            self.start_import(path)

    def start_import(self, path: str) -> None:
        """Imports path in the background; status and the list follow when it is done."""
        if self.importing is not None:
            self.status.setText("Another model is being imported; wait for it or cancel it.")
            return
        cancel = self.importing = threading.Event()
        signals = ImportSignals()  # no parent: the thread may outlive this dialog
        signals.progress.connect(self._on_import_progress)
        signals.finished.connect(self._on_import_finished)
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.1 or done == total:
                last[0] = now
                signals.progress.emit(done, total)

        def run() -> None:
            try:
                m = copy_into_library(self.library, path, cancel, progress)
            except ImportCancelledError:
                signals.finished.emit(None, "")
            except LibraryError as e:
                signals.finished.emit(None, f"Cannot import: {e}")
            except Exception as e:  # noqa: BLE001  # reported, not lost with the thread
                signals.finished.emit(None, f"Cannot import {Path(path).name}: unexpected error: {e!r}")
            else:
                signals.finished.emit(m, "")

        self.import_file_button.setEnabled(False)
        self.import_dir_button.setEnabled(False)
        self.import_bar.setRange(0, 0)  # busy until the first chunk (validation)
        self.import_bar.setFormat("Checking the file…")
        self.import_bar.show()
        self.import_cancel_button.show()
        self.import_cancel_button.setEnabled(True)
        self.status.setText(f"Importing {Path(path).name}…")
        self._import_thread = threading.Thread(target=run, name="trit-import", daemon=True)
        self._import_thread.start()

    def cancel_import(self) -> None:
        if self.importing is not None:
            self.importing.set()
            self.import_cancel_button.setEnabled(False)
            self.status.setText("Cancelling the import…")

    def end_import(self, timeout: float = 10.0) -> None:
        """Cancels a running import and waits for its thread to delete its partial copy (the app is
        quitting: a daemon thread cut mid-copy left gigabytes in a hidden folder)."""
        thread = self._import_thread
        if self.importing is not None:
            self.importing.set()
        if thread is not None:
            thread.join(timeout)

    def _on_import_progress(self, done: int, total: int) -> None:
        if self.importing is None or not total:
            return
        self.import_bar.setRange(0, 1000)
        self.import_bar.setValue(int(1000 * done / total))
        # the name is in the status line: with it, a long one pushed the figures out of the bar
        self.import_bar.setFormat(f"{format_bytes(done)} of {format_bytes(total)}")

    def _on_import_finished(self, m: InstalledModel | None, message: str) -> None:
        self.importing = None
        self.import_bar.hide()
        self.import_cancel_button.hide()
        self.import_file_button.setEnabled(True)
        self.import_dir_button.setEnabled(True)
        if m is None:
            self.status.setText(message or "Import cancelled; nothing was added to the models folder.")
            return
        self._show_imported(m)

    def import_model(self, path: str) -> InstalledModel | None:
        """Imports at once, on this thread (scripts and tests; the buttons use start_import)."""
        try:
            m = self.library.import_model(path)
        except LibraryError as e:
            self.status.setText(f"Cannot import: {e}")
            return None
        self._show_imported(m)
        return m

    def _show_imported(self, m: InstalledModel) -> None:
        self.status.setText(" ".join(filter(None, [f"Imported {m.name}.", skipped_text(m.skipped)])))
        self.refresh()
        self.select(("installed", str(m.path)))

    def reveal_selected(self) -> None:
        m = self._selected_installed()
        target = m.path if m is not None else self.library.folder
        folder = target if target.is_dir() else target.parent
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def delete_selected(self) -> None:
        m = self._selected_installed()
        if m is None:
            return
        if self.current_path and Path(self.current_path) == m.path:
            self.status.setText(f"{m.name} is in use; open another model first.")
            return
        if not self.library.holds(m.path):
            self.status.setText(f"{m.name} is not in the models folder; Trit deletes only models there.")
            return
        # to the system's trash first, so that Undo (or the trash itself) can bring it back
        f = QFile(str(m.path))
        if f.moveToTrash():  # fileName() is then the path inside the trash
            self.trashed = (m.path, Path(f.fileName()))
            self.undo_button.show()
            self.status.setText(f"Moved {m.name} ({format_bytes(m.size)}) to the trash.")
            self.refresh()
            return
        if not self._confirm(
            "Delete model permanently?",
            f"{m.name} cannot be moved to the trash here. Delete it ({format_bytes(m.size)}) from "
            f"{m.path.parent} for good?",
        ):
            return
        try:
            self.library.delete(m, confirmed=True)
        except LibraryError as e:
            self.status.setText(str(e))
            return
        self.status.setText(f"Deleted {m.name}.")
        self.refresh()

    def undo_delete(self) -> None:
        """Moves the model last sent to the trash back to where it was."""
        if self.trashed is None:
            return
        original, in_trash = self.trashed
        if original.exists():
            self.status.setText(f"Cannot restore {original.name}: a file of that name is back in the folder.")
            return
        try:
            shutil.move(str(in_trash), str(original))
        except OSError as e:
            self.status.setText(f"Cannot restore {original.name} from the trash: {e.strerror or e}")
            return
        # the freedesktop trash keeps a .trashinfo beside files/; without its file it is stale
        info = in_trash.parent.parent / "info" / (in_trash.name + ".trashinfo")
        if in_trash.parent.name == "files" and info.is_file():
            info.unlink(missing_ok=True)
        self.trashed = None
        self.undo_button.hide()
        self.status.setText(f"Restored {original.name}.")
        self.refresh()
        self.select(("installed", str(original)))

    def choose_folder(self, folder: str | None = None) -> None:
        if self.importing is not None:
            self.status.setText("Cannot change the models folder while a model is being imported.")
            return
        if busy := self.ctx.downloads.folder_change_refusal():
            self.status.setText(busy)
            return
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Models folder", str(self.library.folder))
            if not folder:
                return
        try:
            self.library.set_folder(folder)
        except LibraryError as e:
            self.status.setText(str(e))
            return
        self.ctx.save_settings(dataclasses.replace(self.ctx.settings, models_dir=str(self.library.folder)))
        self.folder_changed()

    def folder_changed(self) -> None:
        """The library's folder changed (here or in Settings): list what is in the new one."""
        # paused or failed downloads would resume into the old folder: forget them here (their
        # part files stay there, offered again if the user switches back); Download starts anew
        for key in list(self.progress):
            req = self.ctx.downloads.request(key)
            if req is None or req.dest.parent != self.library.folder:
                self.progress.pop(key, None)
                self.errors.pop(key, None)
        self.resumable.clear()
        self._find_resumable()
        self.status.setText(f"Models folder: {self.library.folder}")
        self.refresh()

    def download_error(self, key: str) -> str:
        return self.errors.get(key, "")


__all__ = ["DownloadSignals", "ModelsDialog", "progress_text"]
