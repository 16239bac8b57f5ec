"""The main window: conversation list, chat view, prompt, per-conversation settings, readouts.

State lives in the core objects (ConversationStore, Settings, ModelLibrary); the window shows it
and turns user actions into store calls and EngineWorker requests. The only state kept here is
what the screen needs between signals: which conversation is shown, which one is receiving a
reply (and that reply's text so far, so switching back to it mid-reply shows it whole), and which
model is loaded or loading.

Each conversation names its model (Conversation.model_id: a catalog id or a path; "" = the app's
default). Once the window manages models (autoload, or the first load_model() call), showing a
conversation whose model is not the loaded one loads it through the worker; Send waits for it. A
running reply is never cut short by that: the switch happens when the reply ends.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import os
import secrets
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeyEvent, QKeySequence, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from trit.app.core.catalog import LibraryError, path_problem
from trit.app.core.meters import MemoryReading, process_rss
from trit.app.core.sampling import (
    MAX_REPEAT_PENALTY,
    MAX_SEED,
    MAX_TOKENS_LIMIT,
    MAX_TOP_K,
    MIN_REPEAT_PENALTY,
    Sampling,
)
from trit.app.core.settings import Settings
from trit.app.core.store import STREAMING, Message, NotFoundError, StoreError, StoreMovedError, caseless
from trit.app.core.units import count_noun, format_bytes

from trit.text import cut_text, file_name, short_text

from .chart import ThroughputChart
from .chat_view import ChatView, PromptEdit, ShownMessage
from .context import AppContext
from .safe_text import ask
from .worker import EngineWorker

UNDO_SECONDS = 10
TITLE_CHARS = 48
CONV_ID = Qt.ItemDataRole.UserRole


def _session_options(s: Settings) -> tuple[Any, ...]:
    """The settings a new session of the loaded model puts to use (worker.SESSION_OPTIONS)."""
    return (s.threads, s.context, s.kv_cache, s.bitnet_mode)


def _weight_options(s: Settings, no_effect: tuple[str, ...] = ()) -> tuple[Any, ...]:
    """The settings that change how the weights are loaded: a change of them loads the model again.
    no_effect: the loaded model's ModelInfo.no_effect, whose options count as their defaults."""
    return (
        "f32" if "activations" in no_effect else s.activations,
        "f16" if "head" in no_effect else s.lm_head,
    )


def _speed_text(tokens: int, tps: float) -> str:
    """Tokens and speed ("12 tokens · 20.5 tok/s"), without the speed for one token or none: the
    rule of the line under a reply (meters.readout_line), as one token has no decode time."""
    text = count_noun(tokens, "token")
    return f"{text} · {tps:.1f} tok/s" if tokens > 1 else text


def _write_whole(path: Path, text: str) -> None:
    """Writes text to path whole or not at all: into a new file beside it, renamed over it once
    written (an export on a full disk left a 0-byte file, and would have emptied one it replaced).
    open(..., "x") gives the file the usual permissions, as a plain write would."""
    # a short name of its own: one made from path's name could be too long where path's is not
    tmp = path.with_name(f".trit-export-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _shown(m: Message) -> ShownMessage:
    return ShownMessage(m.id, m.role, m.content, m.status, dict(m.stats))


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """The model a conversation asks for: model_id as stored, the path to load (None when it is
    not on this computer) and a name to show."""

    model_id: str
    path: str | None
    name: str
    bundled: bool = False  # the model that comes with Trit (missing: say how to fetch it)


def model_choice(ctx: AppContext, model_id: str) -> ModelChoice:
    """Where a conversation's model_id is on disk: a catalog id (installed in the library) or a
    path; "" = the default chain of resolve_model_path()."""
    if not model_id:
        path = resolve_model_path(ctx)
        return ModelChoice("", path, Path(path).name if path else "the default model", bundled=path is None)
    try:
        entry = ctx.library.entry(model_id)
    except KeyError:
        p = _in_library(ctx, Path(model_id).expanduser())
        return ModelChoice(model_id, str(p) if p.exists() else None, p.name or model_id)
    bundled = entry.source == "bundled"
    if ctx.library.is_installed(entry):
        return ModelChoice(model_id, str(ctx.library.path_for(entry)), entry.name, bundled)
    return ModelChoice(model_id, None, entry.name, bundled)


def _in_library(ctx: AppContext, p: Path) -> Path:
    """p, or, when it is gone, where the library has it (ModelLibrary.locate): a model imported
    into the library is found after the models folder moved, and one an older Trit saved under a
    shared catalog name after the library moved it to its entry's own name."""
    return ctx.library.locate(p)


def resolve_model_path(ctx: AppContext, model: str | None = None) -> str | None:
    """An explicit path, else the settings' default model (catalog id or path), else the bundled
    default (trit.default_model.default_model_path); None when none of them is on disk."""
    choice = model or ctx.settings.default_model
    if choice:
        try:
            entry = ctx.library.entry(choice)
        except KeyError:
            p = _in_library(ctx, Path(choice).expanduser())
            if p.exists():
                return str(p)
        else:
            if ctx.library.is_installed(entry):
                return str(ctx.library.path_for(entry))
        if model:
            return str(model)  # explicit: let the load fail with the engine's message
    from trit.default_model import default_model_path

    p = default_model_path()
    return str(p) if p is not None else None


class ElidedLabel(QLabel):
    """A one-line status bar label that ends in "…" when it has less room than its text (the whole
    text is in the tooltip), so that it never pushes the status bar's messages out."""

    def __init__(self, text: str = "", *, purpose: str = "") -> None:
        """purpose: what the label shows ("Model"): a screen reader reads "Model: <text>" (an
        accessible name alone would replace the text, and the text alone may be elided)."""
        super().__init__()
        # model and file names, titles: text, never HTML (its images load local files)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self._full = ""
        self._tip = ""
        self.purpose = purpose
        self.setText(text)

    def setText(self, text: str) -> None:  # Qt's name
        self._full = text
        if self.purpose:
            name = f"{self.purpose}: {text}" if text else self.purpose
            if name != self.accessibleName():
                self.setAccessibleName(name)
        self._elide()

    def setToolTip(self, tip: str) -> None:
        self._tip = tip
        self._elide()

    def text(self) -> str:
        """The whole text (what is shown may end in "…")."""
        return self._full

    def minimumSizeHint(self) -> QSize:
        return QSize(self.fontMetrics().horizontalAdvance("…") * 4, super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:
        return QSize(self.fontMetrics().horizontalAdvance(self._full) + 8, super().sizeHint().height())

    def resizeEvent(self, e: Any) -> None:
        super().resizeEvent(e)
        self._elide()

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideMiddle, max(self.width(), 1))
        QLabel.setText(self, shown)
        tip = self._tip or (self._full if shown != self._full else "")
        QLabel.setToolTip(self, tip)


class Banner(QLabel):
    """A message with its fix above the chat (model missing, load failed, generation failed)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setAccessibleName("Problem")  # with the problem's words once one is shown
        self.setAccessibleDescription("A problem and how to fix it")
        self.setStyleSheet(
            "QLabel { border: 1px solid palette(mid); border-left: 4px solid #c0392b;"
            " padding: 6px; background: palette(alternate-base); }"
        )
        self.hide()

    kind = ""  # what the shown problem is about: "model" (hidden once a model is ready), "reply" (a
    # failed reply of conversation_id: hidden by the next reply or another conversation), "store"
    # (a failed read or write of the conversations), "settings" (not saved: hidden once they are) or ""
    conversation_id: int | None = None

    def show_problem(
        self, message: str, fix: str = "", *, kind: str = "", conversation_id: int | None = None
    ) -> None:
        import html

        self.kind = kind
        self.conversation_id = conversation_id
        body = f"<b>{html.escape(message)}</b>"
        if fix:
            body += f"<br>{html.escape(fix)}"
        self.setText(body)
        # a screen reader reads the name in place of the text: both, in plain words
        self.setAccessibleName(f"Problem: {message} {fix}".strip())
        self.show()


class SettingsPanel(QGroupBox):
    """System prompt and sampling of the shown conversation; Apply writes them to the store."""

    applied = Signal(str, object)  # system prompt, Sampling

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Conversation settings", parent)
        self.system = QPlainTextEdit()
        self.system.setAccessibleName("System prompt")
        self.system.setPlaceholderText("Optional instructions for the model")
        self.system.setTabChangesFocus(True)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 5.0)
        self.temperature.setSingleStep(0.05)
        self.temperature.setDecimals(2)
        self.temperature.setAccessibleName("Temperature")
        self.temperature.setToolTip("0 = always the most likely token; higher = more varied")
        self.top_p = QDoubleSpinBox()
        self.top_p.setRange(0.01, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_p.setDecimals(2)
        self.top_p.setAccessibleName("Top-p")
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, MAX_TOKENS_LIMIT)
        self.max_tokens.setAccessibleName("Maximum reply tokens")
        self.top_k = QSpinBox()
        self.top_k.setRange(0, MAX_TOP_K)
        self.top_k.setSpecialValueText("off")
        self.top_k.setAccessibleName("Top-k")
        self.top_k.setToolTip("Only the k most likely tokens can be picked (0 = off)")
        self.min_p = QDoubleSpinBox()
        self.min_p.setRange(0.0, 0.99)
        self.min_p.setSingleStep(0.01)
        self.min_p.setDecimals(2)
        self.min_p.setSpecialValueText("off")
        self.min_p.setAccessibleName("Min-p")
        self.min_p.setToolTip(
            "Tokens less likely than this share of the most likely one are never picked (0 = off)"
        )
        self.repeat_penalty = QDoubleSpinBox()
        self.repeat_penalty.setRange(MIN_REPEAT_PENALTY, MAX_REPEAT_PENALTY)
        self.repeat_penalty.setSingleStep(0.05)
        self.repeat_penalty.setDecimals(2)
        self.repeat_penalty.setAccessibleName("Repeat penalty")
        self.repeat_penalty.setToolTip("Above 1, tokens used in the last 64 are less likely again (1 = off)")
        self.seed = QSpinBox()
        self.seed.setRange(-1, MAX_SEED)
        self.seed.setSpecialValueText("random")
        self.seed.setAccessibleName("Seed")
        self.seed.setToolTip(
            "random: each reply is drawn anew. A number: the same conversation and settings give the "
            "same reply again (Regenerate repeats it)"
        )
        self.apply_button = QPushButton("Apply")
        self.apply_button.setAccessibleName("Apply conversation settings")
        self.apply_button.clicked.connect(self._apply)
        line = self.system.fontMetrics().lineSpacing()
        self.system.setMinimumHeight(line * 3 + 12)
        self.system.setMaximumHeight(line * 10 + 12)
        outer = QVBoxLayout(self)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        outer.addLayout(form)
        outer.addStretch(1)
        form.addRow("System prompt", self.system)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow("Max tokens", self.max_tokens)
        form.addRow("Top-k", self.top_k)
        form.addRow("Min-p", self.min_p)
        form.addRow("Repeat penalty", self.repeat_penalty)
        form.addRow("Seed", self.seed)
        form.addRow(self.apply_button)

    conversation_id: int | None = None  # whose values are shown (None: the next new chat's)
    _saved: tuple[str, Sampling] | None = None  # what show_values set (dirty() compares with it)

    def show_values(
        self, system_prompt: str, sampling: Sampling, *, conversation_id: int | None = None
    ) -> None:
        self.conversation_id = conversation_id
        self.system.setPlainText(system_prompt)
        self.temperature.setValue(sampling.temperature)
        self.top_p.setValue(sampling.top_p)
        self.max_tokens.setValue(sampling.max_tokens)
        self.top_k.setValue(sampling.top_k)
        self.min_p.setValue(sampling.min_p)
        self.repeat_penalty.setValue(sampling.repeat_penalty)
        self.seed.setValue(-1 if sampling.seed is None else sampling.seed)
        self._saved = self.values()

    def dirty(self) -> bool:
        """True when the fields differ from what was last shown or saved."""
        return self._saved is not None and self.values() != self._saved

    def values(self) -> tuple[str, Sampling]:
        s = Sampling(
            temperature=round(self.temperature.value(), 2),
            top_p=round(self.top_p.value(), 2),
            max_tokens=int(self.max_tokens.value()),
            top_k=int(self.top_k.value()),
            min_p=round(self.min_p.value(), 2),
            repeat_penalty=round(self.repeat_penalty.value(), 2),
            seed=None if self.seed.value() < 0 else int(self.seed.value()),
        ).validated()
        return self.system.toPlainText(), s

    def _apply(self) -> None:
        system, s = self.values()
        self.applied.emit(system, s)


class UndoGoesOn(QObject):
    """Event filter for text fields: Ctrl+Z with nothing to undo in the field goes on to the window
    (Edit › Undo delete). A field takes the Undo key whether or not it can use it, so after a delete
    Ctrl+Z in the empty message box, where the keyboard usually is, did nothing."""

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:
        if (
            e.type() == QEvent.Type.ShortcutOverride
            and isinstance(e, QKeyEvent)
            and e.matches(QKeySequence.StandardKey.Undo)
        ):
            can = obj.isUndoAvailable() if isinstance(obj, QLineEdit) else obj.document().isUndoAvailable()
            if not can:
                e.ignore()
                return True  # not offered to the field: the shortcut goes to the window
        return False


SEARCH_LIMIT = 100  # conversations listed for a search (the most recently updated matches)


class MainWindow(QMainWindow):
    model_loaded = Signal(dict)  # re-emitted worker signals, for the self-test and tests
    reply_finished = Signal(dict)
    # the store wrote its file again after it was deleted or moved (on the writing thread: the
    # worker's for a reply), with what it says about it
    store_rescued = Signal(str)

    def __init__(self, ctx: AppContext, *, model: str | None = None, autoload: bool = True) -> None:
        """model: a path or catalog id to use for new conversations (and those without a model)
        in this run, instead of the settings' default; the window then starts on no conversation,
        with that model. autoload=False: nothing is loaded until load_model() is called."""
        super().__init__()
        self.ctx = ctx
        self.store = ctx.store
        self.setWindowTitle("Trit")
        self.setAccessibleName("Trit")
        self.current_id: int | None = None
        self.reply: dict[str, Any] | None = None  # conversation_id, message_id, text
        self.model_info: dict[str, Any] | None = None
        self.model_loading = False
        self.editing_id: int | None = None
        self.editing_conv: int | None = None  # the conversation editing_id belongs to
        self.failed_path: str | None = None  # the model whose last load failed
        self._draft_owner: int | None = None  # the conversation whose unsent text the prompt box holds
        self._draft_taken = ""  # the draft the box got from the store when it was shown
        self._shut_down = False  # shutdown() has run
        self._state_kept = False  # closeEvent has saved the draft and the panel (or was told to close anyway)
        self._typed_before_edit = ""  # the prompt box's text when an edit took it over
        self.last_memory: MemoryReading | None = None
        self._deleted: list[int] = []  # undo stack of the soft-deleted ids the Undo button restores
        # the reply a regenerate replaced, until the next message in its conversation: conversation_id,
        # old (the replaced Messages), new (the reply that took their place), readout (its figures)
        self._regen_undo: dict[str, Any] | None = None
        self._models_dialog: Any = None
        self._settings_dialog: Any = None
        self.loading_path: str | None = None  # the latest model asked for, until it is loaded
        self.loaded_path: str | None = None  # the model the worker holds now
        self._pending_loads = 0  # load requests the worker has not answered yet
        self._cli_model = model or ""
        self._refused_model = ""  # a -m model whose file name cannot be used (shown once built)
        if model and path_problem(model):
            self._cli_model, self._refused_model = "", model
        self.manage_models = False  # load each shown conversation's model (set by the first load)
        self.model_problem: ModelChoice | None = None  # the shown conversation's model is missing
        self._download_signals: Any = None
        # the speed area: the running reply's progress (beside any conversation: Stop is about
        # it), else the shown conversation's last reply of this session (its label text, chart
        # points and where its energy figure came from), else nothing
        self._live_text = ""
        self._readouts: dict[int, tuple[str, list[Any], list[Any], str]] = {}

        self.worker = EngineWorker(self.store, energy=ctx.energy, context=ctx.settings.context)
        # the library moves no file this window has loaded or is loading
        ctx.library.in_use = lambda: (self.worker.model_path, self.loading_path or "")
        self.worker.loaded.connect(self._on_loaded)
        self.worker.load_failed.connect(self._on_load_failed)
        self.worker.started.connect(self._on_started)
        self.worker.token.connect(self._on_token)
        self.worker.progress.connect(self._on_progress)
        self.worker.prompt_progress.connect(self._on_prompt_progress)
        self.worker.finished.connect(self._on_finished)
        self.worker.failed.connect(self._on_failed)
        self.worker.context_trimmed.connect(self._on_context_trimmed)
        self.worker.chat_warning.connect(lambda text: self.statusBar().showMessage(text, 15000))

        self._build()
        self._build_actions()
        self.resize(1180, 760)
        self._sized = False  # showEvent has fitted the first size to the screen it opened on
        self.fit_screen()
        try:
            self.store.purge_deleted(older_than_s=UNDO_SECONDS * 6)  # undo is offered for 10 s only
        except StoreError as e:
            self.show_store_error(e)
        self.refresh_list()
        try:
            convs = self.store.list_conversations()
        except StoreError:
            convs = []  # refresh_list has said why
        if convs and not model:  # with an explicit model: start on a new chat with it
            # where the window was when it closed, with the text that was typed but not sent
            last = self._last_viewed({c.id for c in convs})
            self.select_conversation(last if last is not None else convs[0].id)
        else:
            self._show_new_chat_settings()
            self._render()
        self._update_controls()
        self._rss_timer = QTimer(self)
        self._rss_timer.setInterval(2000)
        self._rss_timer.timeout.connect(self._update_memory_label)
        self._rss_timer.start()
        if ctx.problems:
            self.statusBar().showMessage("; ".join(ctx.problems), 15000)
        if self.store.open_warning is not None:  # a full disk: readable, nothing new saved yet
            self.show_store_error(self.store.open_warning)
        self.store_rescued.connect(self._on_store_rescued)
        self.store.on_rescue = self.store_rescued.emit
        self.salvage_box: QMessageBox | None = None
        if self.store.salvaged is not None:  # the file was damaged: say once what was recovered
            self.salvage_box = QMessageBox(
                QMessageBox.Icon.Warning,
                "Conversation history recovered",
                self.store.salvaged.message(),
                QMessageBox.StandardButton.Ok,
                self,
            )
            QTimer.singleShot(0, self.salvage_box.open)  # over the window, once it is shown
        if self._refused_model:
            self.banner.show_problem(*path_problem(self._refused_model))
        if autoload:
            self.manage_models = True
            self._sync_model()

    # -- layout ----------------------------------------------------------------------------------
    def _build(self) -> None:
        # sidebar
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search conversations")
        self.search.setAccessibleName("Search conversations")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.refresh_list)
        self.search_note = QLabel()  # shown when the matches fill the list
        self.search_note.setWordWrap(True)
        self.search_note.hide()
        self.conv_list = QListWidget()
        self.conv_list.setAccessibleName("Conversations")
        self.conv_list.setTextElideMode(Qt.TextElideMode.ElideRight)  # full title in the tooltip
        self.conv_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.conv_list.setSpacing(1)
        self.conv_list.currentItemChanged.connect(self._on_current_item)
        self.conv_list.itemChanged.connect(self._on_item_renamed)
        # a refresh asked for while a title is being edited waits for the editor to close
        self._refresh_pending = False
        self.conv_list.itemDelegate().closeEditor.connect(self._after_rename_editor)
        self.new_button = QPushButton("New chat")
        self.new_button.setAccessibleName("New chat")
        self.new_button.setToolTip("New chat (Ctrl+N)")
        self.new_button.clicked.connect(lambda: self.new_conversation())
        self.rename_button = QPushButton("Rename")
        self.rename_button.setAccessibleName("Rename conversation")
        self.rename_button.setToolTip("Rename (F2)")
        self.rename_button.clicked.connect(self.rename_current)
        self.delete_button = QPushButton("Delete")
        self.delete_button.setAccessibleName("Delete conversation")
        self.delete_button.setToolTip("Delete (Del); undo from the status bar")
        self.delete_button.clicked.connect(lambda: self.delete_current())
        side = QWidget()
        sl = QVBoxLayout(side)
        sl.setContentsMargins(6, 6, 0, 6)
        sl.addWidget(self.search)
        sl.addWidget(self.search_note)
        sl.addWidget(self.conv_list, 1)
        row = QHBoxLayout()
        for b in (self.new_button, self.rename_button, self.delete_button):
            row.addWidget(b)
        sl.addLayout(row)

        # chat column
        self.banner = Banner()
        self.chat = ChatView()
        self.chat.copy_message.connect(self.copy_message)
        self.chat.edit_message.connect(self.edit_message)
        self.chat.regenerate_requested.connect(self.regenerate)
        self.chart = ThroughputChart()
        # elided: a long one (another conversation's title, watts) must not widen the window past
        # a small screen
        self.live_label = ElidedLabel("", purpose="Reply progress")
        self.prompt = PromptEdit()
        self.prompt.submitted.connect(self.send)
        line = self.prompt.fontMetrics().lineSpacing()
        self.prompt.setMinimumHeight(line * 3 + 12)
        self.prompt.setMaximumHeight(line * 6 + 12)
        self.edit_label = QLabel("Editing your last message: Enter resends it, Esc cancels.")
        self.edit_label.hide()
        self.send_button = QPushButton("Send")
        self.send_button.setAccessibleName("Send")
        self.send_button.setToolTip("Send (Enter)")
        self.send_button.clicked.connect(self._send_clicked)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setAccessibleName("Stop reply")
        self.stop_button.setToolTip("Stop the reply (Esc)")
        self.stop_button.clicked.connect(self.stop)
        self.regen_button = QPushButton("Regenerate")
        self.regen_button.setAccessibleName("Regenerate reply")
        self.regen_button.setToolTip("Write the last reply again (Ctrl+R)")
        self.regen_button.clicked.connect(self.regenerate)
        # beside Regenerate, not in the status bar: every status message hides the bar's own widgets,
        # and this one is offered until the next message is sent
        self.undo_regen_button = QPushButton("Undo regenerate")
        self.undo_regen_button.setAccessibleName("Undo regenerate")
        self.undo_regen_button.setToolTip("Bring back the reply the last regenerate replaced (Ctrl+Z)")
        self.undo_regen_button.clicked.connect(self.undo_regenerate)
        self.undo_regen_button.hide()
        center = QWidget()
        cl = QVBoxLayout(center)
        cl.setContentsMargins(6, 6, 6, 6)
        cl.addWidget(self.banner)
        cl.addWidget(self.chat, 1)
        live = QHBoxLayout()
        live.addWidget(self.chart, 1)
        live.addWidget(self.live_label)
        cl.addLayout(live)
        cl.addWidget(self.edit_label)
        cl.addWidget(self.prompt)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.undo_regen_button, self.regen_button, self.stop_button, self.send_button):
            buttons.addWidget(b)
        cl.addLayout(buttons)

        # settings panel
        self.settings_panel = SettingsPanel()
        self.settings_panel.applied.connect(self._apply_conversation_settings)
        # wide enough for its labels at the user's font size (a fixed 220 px cut "Temperature"
        # to "Temp" at 20 pt)
        self.settings_panel.setMinimumWidth(max(220, self.settings_panel.minimumSizeHint().width()))

        self.splitter = QSplitter()
        self.splitter.addWidget(side)
        self.splitter.addWidget(center)
        self.splitter.addWidget(self.settings_panel)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 0)
        self.splitter.setSizes([250, 690, max(240, self.settings_panel.minimumWidth())])
        self.setCentralWidget(self.splitter)

        # status bar: undo, model, memory
        sb = self.statusBar()
        self.undo_button = QPushButton("Undo")
        self.undo_button.setAccessibleName("Undo delete")
        self.undo_button.clicked.connect(self.undo_delete)
        self.undo_button.hide()
        self._undo_timer = QTimer(self)
        self._undo_timer.setSingleShot(True)
        self._undo_timer.timeout.connect(self._end_undo)
        sb.addWidget(self.undo_button)
        self.model_label = ElidedLabel("No model", purpose="Model")
        self.memory_label = ElidedLabel("", purpose="Memory use")
        sb.addPermanentWidget(self.model_label)
        sb.addPermanentWidget(self.memory_label)

        # keyboard order: sidebar top to bottom, then the chat, the prompt, its buttons, the panel
        order = [
            self.search,
            self.conv_list,
            self.new_button,
            self.rename_button,
            self.delete_button,
            self.chat,
            self.prompt,
            self.undo_regen_button,
            self.regen_button,
            self.stop_button,
            self.send_button,
            self.settings_panel.system,
            self.settings_panel.temperature,
            self.settings_panel.top_p,
            self.settings_panel.max_tokens,
            self.settings_panel.apply_button,
        ]
        for a, b in itertools.pairwise(order):
            QWidget.setTabOrder(a, b)
        self._undo_goes_on = UndoGoesOn(self)
        for field in (self.prompt, self.search, self.settings_panel.system):
            field.installEventFilter(self._undo_goes_on)
        self.tab_order = order

    def _build_actions(self) -> None:
        def act(text: str, keys: Any, slot: Any, menu: Any, name: str | None = None) -> QAction:
            a = QAction(text, self)
            if keys:
                a.setShortcuts(keys if isinstance(keys, list) else [QKeySequence(keys)])
            a.triggered.connect(slot)
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            if name:
                a.setObjectName(name)
            menu.addAction(a)
            self.addAction(a)
            return a

        mb = self.menuBar()
        f = mb.addMenu("&File")
        act("&New chat", QKeySequence.StandardKey.New, lambda: self.new_conversation(), f)
        act("&Export conversation…", "Ctrl+E", lambda: self.export_conversation(), f)
        act("&Models…", "Ctrl+M", self.open_models, f)
        self.settings_action = act("&Settings…", "Ctrl+,", self.open_settings, f, "settings")
        self.settings_action.setMenuRole(QAction.MenuRole.PreferencesRole)
        f.addSeparator()
        act("&Quit", "Ctrl+Q", self.close, f)  # StandardKey.Quit is empty on some platforms
        e = mb.addMenu("&Edit")
        act("&Copy last reply", "Ctrl+Shift+C", self.copy_last_reply, e)
        act("&Edit last message", "Ctrl+Shift+E", lambda: self.edit_message(None), e)
        act("&Regenerate", "Ctrl+R", self.regenerate, e)
        self.stop_action = act("&Stop reply / cancel edit", "Esc", self.escape, e, "stop")
        # Ctrl+Z in a text field undoes typing (the field takes the key first); elsewhere, and
        # from the menu, it brings back the conversation just deleted while Undo is offered, else
        # the reply the last regenerate replaced (undo_last)
        self.undo_action = act("&Undo delete", QKeySequence.StandardKey.Undo, self.undo_last, e, "undo")
        self.undo_action.setEnabled(False)
        act("&Find conversation", QKeySequence.StandardKey.Find, self._focus_search, e)
        act("Re&name conversation", "F2", self.rename_current, e)
        v = mb.addMenu("&View")
        self.panel_action = QAction("Conversation &settings", self, checkable=True, checked=True)
        self.panel_action.setShortcut(QKeySequence("Ctrl+Alt+S"))  # Ctrl+, is File › Settings…
        self.panel_action.toggled.connect(self.settings_panel.setVisible)
        v.addAction(self.panel_action)
        h = mb.addMenu("&Help")
        act("&Keyboard shortcuts", "Ctrl+/", self.show_shortcuts, h, "shortcuts")
        act("&About Trit", None, self.show_about, h, "about").setMenuRole(QAction.MenuRole.AboutRole)
        # Delete only from the list (in the prompt it deletes text)
        self.delete_action = QAction("Delete conversation", self.conv_list)
        self.delete_action.setShortcut(QKeySequence.StandardKey.Delete)
        self.delete_action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        self.delete_action.triggered.connect(lambda: self.delete_current())
        self.conv_list.addAction(self.delete_action)

    # -- help ------------------------------------------------------------------------------------
    def shortcut_rows(self) -> list[tuple[str, str]]:
        """(what, keys) for every menu action that has a shortcut, read from the menus themselves
        (so the list cannot drift from them), plus the keys that live in one widget."""

        def keys(a: QAction) -> str:
            return ", ".join(
                k.toString(QKeySequence.SequenceFormat.NativeText) for k in a.shortcuts() if not k.isEmpty()
            )

        rows: list[tuple[str, str]] = []
        for menu_action in self.menuBar().actions():
            menu = menu_action.menu()
            for a in menu.actions() if menu is not None else []:
                if keys(a):
                    rows.append((a.text().replace("&", "").rstrip("…"), keys(a)))
        rows += [
            ("Send the message", "Enter"),
            ("New line in the message", "Shift+Enter"),
            ("Delete the selected conversation (in the list)", keys(self.delete_action)),
        ]
        return rows

    def show_shortcuts(self) -> QDialog:
        dlg = QDialog(self)
        dlg.setWindowTitle("Keyboard shortcuts")
        dlg.setAccessibleName("Keyboard shortcuts")
        table = QTableWidget(0, 2, dlg)
        table.setHorizontalHeaderLabels(["Action", "Keys"])
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        for what, keys in self.shortcut_rows():
            r = table.rowCount()
            table.insertRow(r)
            table.setItem(r, 0, QTableWidgetItem(what))
            table.setItem(r, 1, QTableWidgetItem(keys))
        table.resizeColumnsToContents()
        table.resizeRowsToContents()
        table.horizontalHeader().setStretchLastSection(True)
        table.setAlternatingRowColors(True)
        table.setShowGrid(False)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, dlg)
        buttons.rejected.connect(dlg.reject)
        layout = QVBoxLayout(dlg)
        layout.addWidget(table)
        layout.addWidget(buttons)
        rows_h = sum(table.rowHeight(r) for r in range(table.rowCount()))
        # as wide as its columns at the user's font (a fixed 560 px pushed Keys off at 20 pt),
        # within the screen
        cols_w = sum(table.columnWidth(c) for c in range(table.columnCount()))
        room = (self.screen() or QApplication.primaryScreen()).availableGeometry()
        width = min(max(560, cols_w + 60), room.width() - 40)
        dlg.resize(width, min(rows_h + table.horizontalHeader().height() + 90, 720, room.height() - 40))
        dlg.show()
        return dlg

    def about_text(self) -> str:
        """Version, the engine's kernel path, where the user's data lives, and the licenses."""
        from trit.engine._kernels import selected_isa

        from trit import __version__

        info = self.model_info or {}
        model = (
            f"{info['name']} ({info.get('isa', '')}, {count_noun(int(info.get('threads', 0)), 'thread')})"
            if info
            else "none"
        )
        return (
            f"<h3>Trit {__version__}</h3>"
            "<p>Offline chat with 1.58-bit (ternary) language models on your CPU. Nothing you type "
            "leaves this computer.</p>"
            f"<p>Engine kernels: {selected_isa()}<br>Model: {model}<br>"
            f"Conversations: {self.store.path}<br>Settings: {self.ctx.settings_store.path}<br>"
            f"Models folder: {self.ctx.library.folder}</p>"
            "<p>Trit is MIT-licensed. It uses Qt for Python (LGPLv3), NumPy, tokenizers, Jinja2, "
            "platformdirs, psutil and huggingface_hub. Each model has its own license, shown in "
            "File › Models.</p>"
        )

    def show_about(self) -> None:
        QMessageBox.about(self, "About Trit", self.about_text())

    # -- conversations ---------------------------------------------------------------------------
    def _after_rename_editor(self, *_args: Any) -> None:
        if self._refresh_pending:
            QTimer.singleShot(0, self.refresh_list)  # after itemChanged has seen the new title

    def refresh_list(self) -> None:
        if self.conv_list.state() == QAbstractItemView.State.EditingState:
            self._refresh_pending = True  # clearing the list now would throw the typed title away
            return
        self._refresh_pending = False
        text = self.search.text().strip()
        try:
            if text:
                rows = [(h.conversation, h.snippet) for h in self.store.search(text, limit=SEARCH_LIMIT + 1)]
            else:
                rows = [(c, "") for c in self.store.list_conversations()]
        except StoreError as e:
            self.show_store_error(e)  # the list stays as it was
            return
        live = self.reply
        # the reply being written: its text is on screen before the store has it (0.5 s)
        if (
            text
            and live is not None
            and caseless(text) in caseless(live["text"])
            and all(conv.id != live["conversation_id"] for conv, _ in rows)
        ):
            try:
                rows.insert(0, (self.store.get_conversation(int(live["conversation_id"])), live["text"][:80]))
            except StoreError:
                pass
        more = bool(text) and len(rows) > SEARCH_LIMIT  # the list itself shows every conversation
        if more:
            rows = rows[:SEARCH_LIMIT]
        self.search_note.setText(
            f"The {SEARCH_LIMIT} most recent matches; type more to narrow the search." if more else ""
        )
        self.search_note.setVisible(more)
        self.conv_list.blockSignals(True)
        self.conv_list.clear()
        for conv, snippet in rows:
            title = conv.title
            if self.reply is not None and self.reply["conversation_id"] == conv.id:
                title = "● " + title
            it = QListWidgetItem(conv.title)
            it.setData(CONV_ID, conv.id)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsEditable)
            it.setToolTip(snippet or conv.title)
            it.setText(title)
            self.conv_list.addItem(it)
            if conv.id == self.current_id:
                self.conv_list.setCurrentItem(it)
        self.conv_list.blockSignals(False)

    def _item_for(self, conv_id: int) -> QListWidgetItem | None:
        for i in range(self.conv_list.count()):
            it = self.conv_list.item(i)
            if it.data(CONV_ID) == conv_id:
                return it
        return None

    def _on_current_item(self, item: QListWidgetItem | None, _prev: QListWidgetItem | None = None) -> None:
        if item is not None:
            self.select_conversation(int(item.data(CONV_ID)))

    def select_conversation(self, conv_id: int | None) -> None:
        msgs: list[Message] | None = None
        if conv_id is not None:
            try:  # read first: an unreadable conversation changes nothing but the banner
                conv = self.store.get_conversation(conv_id)
                msgs = self.store.messages(conv_id)
            except StoreError as e:
                self._unreadable(conv_id, e)
                return
        # callers may set current_id first (new chat, delete): compare with what the panel, the
        # edit and the banner belong to, not with current_id
        self._save_panel()
        if self.editing_id is not None and self.editing_conv != conv_id:
            # the edited message's text stays behind; what was typed before the edit is the
            # conversation's draft again
            self._cancel_edit(restore_typed=True)
        self._switch_draft(conv_id)
        if self.banner.kind == "reply" and self.banner.conversation_id != conv_id:
            self.banner.hide()
        self.current_id = conv_id
        self._show_speed()
        if conv_id is not None:
            try:
                self.store.mark_viewed(conv_id)
            except StoreError:
                pass  # where the window was is a convenience; the conversation is shown anyway
            it = self._item_for(conv_id)
            if it is not None and self.conv_list.currentItem() is not it:
                self.conv_list.blockSignals(True)
                self.conv_list.setCurrentItem(it)
                self.conv_list.blockSignals(False)
            self.settings_panel.show_values(conv.system_prompt, conv.sampling, conversation_id=conv_id)
            self.setWindowTitle(f"{conv.title} — Trit")
        else:
            self._show_new_chat_settings()
            self.setWindowTitle("Trit")
        self._render(msgs)
        self._sync_model()
        self._update_controls()

    def show_store_error(self, e: StoreError) -> None:
        """A failed read or write of the conversation database (damaged file, full disk)."""
        self.banner.show_problem(e.message, e.fix, kind="store")

    def _on_store_rescued(self, message: str) -> None:
        self.banner.show_problem(
            message,
            "Nothing was lost. If you moved the folder on purpose, close Trit and start it with "
            "--data-dir pointing to the new place.",
            kind="rescued",
        )

    def _store_wrote(self) -> None:
        """A write to the conversation database worked: a failed one's banner is out of date (it
        stayed after space was freed and everything worked again)."""
        if self.banner.kind == "store":
            self.banner.hide()

    def _unreadable(self, conv_id: int, e: StoreError) -> None:
        """conv_id cannot be shown: the conversation shown so far stays, selected in the list (or
        none is shown, when the caller had already let go of it or it is that one)."""
        self.show_store_error(e)
        if self.current_id is None or self.current_id == conv_id:
            self.select_conversation(None)
        it = self._item_for(self.current_id) if self.current_id is not None else None
        self.conv_list.blockSignals(True)
        self.conv_list.setCurrentItem(it)
        self.conv_list.blockSignals(False)

    def _show_new_chat_settings(self) -> None:
        """With no conversation shown, the panel shows what the next new chat gets (Apply or the
        first message creates it), not the spin boxes' minimums."""
        self.settings_panel.show_values("", self._default_sampling(self.conversation_model(None)))

    def _default_sampling(self, choice: ModelChoice) -> Sampling:
        name = f"{choice.name} {Path(choice.path).name if choice.path else ''}".lower()
        family = next((f for f in self.ctx.settings.sampling if f in name), "")
        return self.ctx.settings.sampling_for(family)

    def default_model_id(self) -> str:
        """The model new conversations get: the -m model of this run, else the settings' default,
        else the bundled model's catalog id (stored as an id, not "", so that a later change of
        the default does not change what an existing conversation uses). A settings default that
        is no longer on this computer (deleted in Models) gives way to the bundled model, so that a
        new chat still works; conversations that used it keep asking for it."""
        if self._cli_model:
            return self._cli_model
        bundled = [e for e in self.ctx.library.catalog if e.source == "bundled"]
        chosen = self.ctx.settings.default_model
        if chosen and (model_choice(self.ctx, chosen).path is not None or not bundled):
            return chosen
        return bundled[0].id if bundled else ""

    def conversation_model(self, conv_id: int | None) -> ModelChoice:
        """The model conv_id uses (the default one for None or a conversation without one)."""
        model_id = ""
        if conv_id is not None:
            try:
                model_id = self.store.get_conversation(conv_id).model_id
            except StoreError:  # gone, or unreadable (the banner says so)
                model_id = ""
        return model_choice(self.ctx, model_id or self.default_model_id())

    def _create_conversation(self, title: str) -> int:
        """A new conversation in the store, with what the settings panel was set to before any
        chat existed (else the model's defaults)."""
        model_id = self.default_model_id()
        panel = self.settings_panel
        if panel.conversation_id is None and panel.dirty():  # set up before the chat existed
            system, sampling = panel.values()
        else:
            system, sampling = "", self._default_sampling(model_choice(self.ctx, model_id))
        return self.store.create_conversation(
            title, system_prompt=system, model_id=model_id, sampling=sampling
        ).id

    def new_conversation(self, title: str = "New chat") -> int:
        self._save_panel()  # edits of the conversation shown so far stay with it
        conv = self.store.get_conversation(self._create_conversation(title))
        self.search.blockSignals(True)
        self.search.clear()
        self.search.blockSignals(False)
        self.current_id = conv.id
        self.refresh_list()
        self.select_conversation(conv.id)
        self.prompt.setFocus()
        return conv.id

    def rename_current(self) -> None:
        it = self.conv_list.currentItem()
        if it is not None:
            it.setText(self.store.get_conversation(int(it.data(CONV_ID))).title)  # without the ● mark
            self.conv_list.editItem(it)

    def rename(self, conv_id: int, title: str) -> None:
        title = title.strip()
        if title:
            try:
                self.store.rename_conversation(conv_id, title)
            except StoreError as e:
                self.show_store_error(e)  # the list below shows the title kept, not the one typed
            else:
                self._store_wrote()
        self.refresh_list()
        if conv_id == self.current_id:
            self.setWindowTitle(f"{self.store.get_conversation(conv_id).title} — Trit")
        if self.reply is not None:  # the Stop button and the speed area name its conversation
            self._update_controls()
            self._show_speed()

    def _on_item_renamed(self, item: QListWidgetItem) -> None:
        conv_id = int(item.data(CONV_ID))
        text = item.text().removeprefix("● ")
        if text != self.store.get_conversation(conv_id).title:
            QTimer.singleShot(0, lambda: self.rename(conv_id, text))

    def delete_current(self, conv_id: int | None = None) -> None:
        cid = conv_id if conv_id is not None else self.current_id
        if cid is None:
            return
        try:
            title = self.store.get_conversation(cid).title
            self.store.delete_conversation(cid)
        except StoreError as e:
            self.show_store_error(e)  # still there, and its reply goes on
            return
        self._store_wrote()
        if self.reply is not None and self.reply["conversation_id"] == cid:
            self.worker.stop()
        self._deleted.append(cid)
        row = self.conv_list.currentRow()
        self.current_id = None
        self.refresh_list()
        if self.conv_list.count():
            it = self.conv_list.item(min(max(row, 0), self.conv_list.count() - 1))
            self.select_conversation(int(it.data(CONV_ID)))
        else:
            self.select_conversation(None)
        self._drop_regen_undo(cid)
        self.statusBar().showMessage(f"Deleted “{title}” (Ctrl+Z brings it back)", UNDO_SECONDS * 1000)
        self.undo_button.show()
        self._update_undo()
        self._undo_timer.start(UNDO_SECONDS * 1000)

    def undo_last(self) -> None:
        """Ctrl+Z: the delete while its Undo is offered (10 s), else the last regenerate."""
        if self._deleted:
            self.undo_delete()
        else:
            self.undo_regenerate()

    def _regen_undo_here(self) -> bool:
        """Undo regenerate applies now: to the shown conversation, with no reply being written."""
        u = self._regen_undo
        return u is not None and u["conversation_id"] == self.current_id and self.reply is None

    def _update_undo(self) -> None:
        regen = self._regen_undo_here()
        self.undo_regen_button.setVisible(regen)
        self.undo_action.setEnabled(bool(self._deleted) or regen)
        self.undo_action.setText("&Undo delete" if self._deleted or not regen else "&Undo regenerate")

    def _drop_regen_undo(self, conv_id: int | None = None) -> None:
        """The previous reply is no longer offered back (of conv_id only, when given)."""
        if self._regen_undo is not None and conv_id in (None, self._regen_undo["conversation_id"]):
            self._regen_undo = None
            self._update_undo()

    def undo_regenerate(self) -> None:
        """Brings back the reply the last regenerate replaced (complete or stopped, the regenerate
        finished or stopped by the user), in place of the new one. The old reply is written again
        before the new one goes: a failed write (a full disk) leaves the conversation as it was and
        the undo still offered."""
        u = self._regen_undo
        if u is None or self.reply is not None:
            return
        cid = int(u["conversation_id"])
        try:
            msgs = self.store.messages(cid)
            if not msgs or msgs[-1].id != u["new"]:  # changed meanwhile (another window on the folder)
                self._drop_regen_undo()
                self.statusBar().showMessage("The conversation changed since; nothing to undo.", 4000)
                return
            added: list[int] = []
            try:
                for m in u["old"]:
                    added.append(
                        self.store.add_message(cid, m.role, m.content, status=m.status, stats=m.stats).id
                    )
                self.store.delete_message(int(u["new"]))
            except StoreError:
                for mid in added:  # the conversation as it was before the undo
                    try:
                        self.store.delete_message(mid)
                    except StoreError:
                        pass
                raise
        except StoreError as e:
            self.show_store_error(e)
            return
        self._regen_undo = None
        self._store_wrote()
        if u.get("readout") is not None:
            self._readouts[cid] = u["readout"]
        else:
            self._readouts.pop(cid, None)
        if self.current_id == cid:
            self._render()
            self._show_speed()
            self._update_controls()
        else:
            self.select_conversation(cid)
        self.statusBar().showMessage("The previous reply is back", 3000)

    def undo_delete(self) -> None:
        if not self._deleted:
            return
        cid = self._deleted[-1]  # taken off only once it is back: a failed restore can be tried again
        try:
            self.store.restore_conversation(cid)
        except NotFoundError:  # purged meanwhile (another window on the folder): nothing to bring back
            self._deleted.pop()
            if not self._deleted:
                self._end_undo()
            return
        except StoreError as e:
            # a full disk: the delete stays undoable past the 10 s, until space is freed and Ctrl+Z
            # works (it was used up, and the next start purged the conversation)
            self._undo_timer.stop()
            self.show_store_error(e)
            self.undo_button.show()
            self._update_undo()
            return
        self._deleted.pop()
        self._store_wrote()
        self.refresh_list()
        self.select_conversation(cid)
        self.statusBar().showMessage(f"Restored “{self.store.get_conversation(cid).title}”", 3000)
        item = self._item_for(cid)
        if item is not None:
            self.conv_list.setCurrentItem(item)
            if QApplication.focusWidget() in (None, self.undo_button, self.conv_list):
                # the keyboard is back on the restored row (the Undo button hides); Ctrl+Z typed
                # in a text field leaves the keyboard there
                self.conv_list.setFocus(Qt.FocusReason.OtherFocusReason)
        if not self._deleted:
            self._end_undo()

    def _end_undo(self) -> None:
        self._undo_timer.stop()
        self.undo_button.hide()
        self._deleted.clear()
        self._update_undo()

    def _focus_search(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

    # -- rendering -------------------------------------------------------------------------------
    def _render(self, messages: list[Message] | None = None) -> None:
        """Draws the shown conversation (messages: already read from the store)."""
        if self.current_id is None:
            self.chat.show_messages([], placeholder="Start a new chat with Ctrl+N, or just type below.")
            return
        if messages is None:
            try:
                messages = self.store.messages(self.current_id)
            except StoreError as e:
                self.show_store_error(e)
                self.chat.show_messages([], placeholder="This conversation cannot be read.")
                return
        msgs = [_shown(m) for m in messages]
        stream = None
        if self.reply is not None and self.reply["conversation_id"] == self.current_id:
            mid = self.reply.get("message_id")
            # the worker may have added the reply's row before `started` reached us: the live
            # reply is drawn from the streamed text, never from its (lagging) row
            gone = set(self.reply.get("replacing") or ())
            msgs = [m for m in msgs if m.id != mid and m.status != STREAMING and m.id not in gone]
            if mid is not None:
                stream = ShownMessage(int(mid), "assistant", self.reply["text"], "streaming")
        self.chat.show_messages(msgs, stream=stream, placeholder="Type a message below to start.")

    @property
    def model_ready(self) -> bool:
        """A model is loaded, nothing else is loading, and it is the shown conversation's."""
        if self.model_info is None or self.model_loading or self.model_problem is not None:
            return False
        if not self.manage_models or self.reply is not None:
            return True
        return self.loaded_path == self.conversation_model(self.current_id).path

    def _update_controls(self) -> None:
        busy = self.reply is not None
        ready = self.model_ready
        self.send_button.setEnabled(ready and not busy)
        self.stop_button.setEnabled(busy)
        if busy and self.reply is not None and self.reply["conversation_id"] != self.current_id:
            tip = f"Stop the reply being written in {self._reply_title()}"
        else:
            tip = "Stop the reply (Esc)"
        self.stop_button.setToolTip(tip)
        self.stop_button.setAccessibleDescription(tip)
        try:
            msgs = self.store.messages(self.current_id) if self.current_id is not None else []
        except StoreError:
            msgs = []  # _render has said why
        self.regen_button.setEnabled(ready and not busy and any(m.role == "user" for m in msgs))
        self.rename_button.setEnabled(self.current_id is not None)
        self.delete_button.setEnabled(self.current_id is not None)
        self._update_undo()

    def _update_memory_label(self) -> None:
        if self.model_info is None:
            self.memory_label.setText(f"RAM {format_bytes(process_rss())}")
            return
        m = self.last_memory or MemoryReading(0, int(self.model_info.get("file_bytes", 0)), 0)
        self.memory_label.setText(MemoryReading(process_rss(), m.model_file_bytes, m.kv_bytes).text())

    # -- model -----------------------------------------------------------------------------------
    def load_model(self, model: str | None = None) -> None:
        path = resolve_model_path(self.ctx, model)
        if path is None:
            self._pending_loads += 1  # answered at once by _on_load_failed
            self._on_load_failed(*self._no_default_model())
            return
        self.manage_models = True
        self.banner.hide()
        self.model_loading = True
        self.loading_path = path
        self._pending_loads += 1
        self.model_label.setText(f"Loading {Path(path).name}…")
        self.model_label.setToolTip(path)
        self.statusBar().showMessage(f"Loading {Path(path).name}…", 3000)
        self._update_controls()
        s = self.ctx.settings
        self.worker.load(path, s.threads, s.context, **s.engine_options())

    def _no_default_model(self) -> tuple[str, str]:
        from trit.default_model import default_model_spec, how_to_get_default_model

        try:
            name = str(default_model_spec().get("name", "the default model"))
        except (OSError, ValueError):
            name = "the default model"
        return (
            f"No model to open: {name}, which comes with Trit, is not installed.",
            (f"Open File › Models… (Ctrl+M) to download or import a model, or {how_to_get_default_model()}."),
        )

    def _sync_model(self) -> None:
        """Loads the shown conversation's model if another one is loaded (or none), or shows why
        it cannot. Waits while a reply is written: the reply's conversation keeps its model, and
        _on_finished calls this again."""
        if not self.manage_models:
            return
        choice = self.conversation_model(self.current_id)
        if choice.path is None:
            self.model_problem = choice
            if choice.bundled:
                message, fix = self._no_default_model()
            else:
                message = f"{choice.name}, the model this conversation uses, is not on this computer."
                fix = "Choose another model or download it in Models… (Ctrl+M)."
            self.banner.show_problem(message, fix, kind="model")
            self._update_controls()
            return
        if self.model_problem is not None:
            self.model_problem = None
            if self.banner.kind == "model":
                self.banner.hide()
        if self.reply is not None:
            if choice.path not in (self.loaded_path, self.loading_path):
                self.statusBar().showMessage(f"{choice.name} will load when the current reply ends", 5000)
            return
        want = self.loading_path if self.model_loading else self.loaded_path
        if choice.path != want:
            self.load_model(choice.path)
        elif self.banner.kind == "model" and self.model_info is not None:
            self.banner.hide()  # another conversation's load failure is not this one's
        self._update_controls()

    def _on_loaded(self, info: dict[str, Any]) -> None:
        self.model_info = info
        self.loaded_path = str(info.get("path", ""))
        self._pending_loads = max(0, self._pending_loads - 1)
        self.model_loading = self._pending_loads > 0  # a newer request is still queued
        if not self.model_loading:
            self.loading_path = None
        if self.banner.kind == "model" and self.model_problem is None:
            self.banner.hide()
        if self._models_dialog is not None:
            self._models_dialog.current_path = self.loaded_path
            self._models_dialog.refresh()
        if self.model_loading:
            self.model_loaded.emit(info)
            return
        self.last_memory = MemoryReading(
            int(info.get("rss_bytes", 0)), int(info.get("file_bytes", 0)), int(info.get("kv_bytes", 0))
        )
        notes = self._show_model_label(info)
        self._update_memory_label()
        if info.get("problem"):  # the new session options could not be used: the old ones are
            self.banner.show_problem(
                f"{info['name']} keeps its previous settings: {info['problem']}",
                str(info.get("problem_fix", "")),
                kind="settings",
            )
        elif info.get("applied"):  # replaces "Settings saved and applied": in effect now
            self.statusBar().showMessage(
                f"Applied to {info['name']} in {float(info.get('load_s', 0)) * 1e3:.0f} ms", 4000
            )
        elif info.get("chat_warning"):
            self.statusBar().showMessage(str(info["chat_warning"]), 10000)
        else:  # replaces "Loading …"; the settings that do not apply stay in the tooltip
            self.statusBar().showMessage(
                ". ".join([f"Loaded {info['name']} in {float(info.get('load_s', 0)):.1f} s", *notes]),
                10000 if notes else 4000,
            )
        self._update_controls()
        self.model_loaded.emit(info)

    def _not_applied(self, info: dict[str, Any]) -> list[str]:
        """The settings asked for that this model cannot use (ModelInfo.no_effect), in words."""
        s, no_effect, name = self.ctx.settings, info.get("no_effect") or (), info.get("name", "this model")
        notes = []
        if "activations" in no_effect and s.activations != "f32":
            notes.append(
                f"Activation precision Fast does not apply to {name}: it has no llama.cpp-type layers "
                "(Q4_1, Q8_0 …); its ternary layers always use 8-bit activations."
            )
        if "head" in no_effect and s.lm_head != "f16":
            notes.append(
                f"Output head Fast does not apply to {name}: its head is {info.get('head_type', '?')} "
                "already, not a float one."
            )
        return notes

    def _show_model_label(self, info: dict[str, Any]) -> list[str]:
        """The model label and its tooltip from what is in effect (the loaded model's info, not the
        settings' request); returns the settings that do not apply to it, which the tooltip names."""
        approx = bool(info.get("head_approx", False))
        # a compact KV cache: (label, share of the exact cache's memory)
        compact = {
            "f16": ("16-bit", "half"),
            "q8": ("8-bit", "a quarter of"),
            "q3": ("3-bit", "an eighth of"),
        }.get(str(info.get("kv")))
        a48 = bool(info.get("a48", False))
        fast_act = info.get("activations") == "q8"  # Settings > Activation precision: Fast
        self.model_label.setText(
            f"{info['name']} · {info['isa']} · {count_noun(int(info['threads']), 'thread')}"
            + (" · 8-bit activations" if fast_act else "")  # as the memory's "16-bit memory"
            + (" · fast head (approx.)" if approx else "")
            + (f" · {compact[0]} memory" if compact else "")
            + (" · a4.8 (experimental)" if a48 else "")
        )
        tip = str(info.get("path", ""))
        if fast_act:
            tip += (
                "\nActivation precision: Fast (Settings > Activation precision): llama.cpp weight types "
                "meet activations rounded to 8 bits, approximate (ternary layers always use 8 bits)."
            )
        if approx:
            tip += "\nOutput head: an 8-bit copy built at load (Settings > Output head): faster, approximate."
        if compact:
            tip += (
                f"\nConversation memory: {compact[0]} (Settings > Conversation memory): {compact[1]} the "
                "memory, approximate."
            )
        if a48:
            tip += (
                "\nBitNet a4.8 mode (Settings > BitNet mode): 4-bit activations, for models trained with "
                "them; others lose most of their quality."
            )
        notes = self._not_applied(info)
        if notes:
            tip += "\n" + "\n".join(notes)
        self.model_label.setToolTip(tip)
        return notes

    def _on_load_failed(self, message: str, fix: str) -> None:
        self._pending_loads = max(0, self._pending_loads - 1)
        self.model_loading = self._pending_loads > 0
        if not self.model_loading:
            self.failed_path = self.loading_path  # Settings retries it (the fix may be a setting)
            self.loading_path = None
            self.model_label.setText("No model")
            if self.statusBar().currentMessage().startswith("Loading "):
                self.statusBar().clearMessage()  # the banner says what happened
        self.model_info = None  # the worker dropped the old model before trying
        self.loaded_path = None
        self.last_memory = None
        self._update_memory_label()
        self.banner.show_problem(message, fix, kind="model")
        self._update_controls()
        self.model_loaded.emit({"error": message, "fix": fix})

    def open_models(self) -> None:
        from .models_dialog import ModelsDialog

        if self._models_dialog is None:
            self._models_dialog = ModelsDialog(self.ctx, self, current_path=self.worker.model_path)
            self._models_dialog.model_chosen.connect(self.use_model)
        self._models_dialog.refresh()
        self._models_dialog.show()
        self._models_dialog.raise_()

    def open_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        if self._settings_dialog is None:
            self._settings_dialog = SettingsDialog(self.ctx.settings, self.apply_settings, self)
        else:
            self._settings_dialog.settings = self.ctx.settings
            self._settings_dialog.show_values(self.ctx.settings)
            self._settings_dialog.show_problems({})
        self._settings_dialog.show()
        self._settings_dialog.raise_()
        self._settings_dialog.activateWindow()

    def _confirm(self, title: str, text: str) -> bool:
        """Asks the user (tests replace this)."""
        return ask(self, title, text, default_yes=True)  # model names in it stay text

    def apply_settings(self, new: Settings) -> dict[str, str] | None:
        """Saves validated settings and puts them to use: the models folder, the energy estimate,
        a new session of the loaded model when threads, context, conversation memory or BitNet
        mode changed, and a reload of the model when activation precision or the output head did
        (asking first when a reply is being written, since either stops it). Returns {field:
        problem} ({} when applied), or None when the user chose not to stop the reply."""
        old = self.ctx.settings
        # the model the shown conversation uses (a reply in another one may hold its own loaded), or,
        # with one model given at start, that one; after a failed load, the one that failed (the
        # fix it showed may be one of these settings)
        reload_path = self.loading_path or self.loaded_path or self.failed_path
        if self.manage_models:
            reload_path = self.conversation_model(self.current_id).path or reload_path
        # an option that changes nothing on the loaded model (Fast activations on ternary layers, an
        # 8-bit head for a head that is quantized already) is no reason to load it again
        loaded = self.model_info if reload_path == self.loaded_path and not self.model_loading else None
        no_effect = tuple((loaded or {}).get("no_effect") or ())
        weights_changed = _weight_options(new, no_effect) != _weight_options(old, no_effect)
        engine_changed = weights_changed or _session_options(new) != _session_options(old)
        # threads, context, conversation memory and BitNet mode live in the session: the loaded
        # model gets a new one (milliseconds) instead of being loaded again (seconds)
        keep_model = not weights_changed and reload_path is not None and loaded is not None
        if (
            engine_changed
            and reload_path
            and self.reply is not None
            and not self._confirm(
                "Stop the reply?",
                "Threads, context size, conversation memory and BitNet mode take effect in a new, empty "
                "conversation state (the model stays loaded). Stop the reply that is being written and "
                "apply them now?"
                if keep_model
                else "Threads, context size, activation precision, output head, conversation memory and "
                "BitNet mode take effect when the model is loaded again. Stop the reply that is being "
                "written and reload the model now?",
            )
        ):
            return None
        if Path(new.models_dir).expanduser() != self.ctx.library.folder:
            refusal = self.ctx.downloads.folder_change_refusal() if self.ctx.has_downloads else ""
            if self._models_dialog is not None and self._models_dialog.importing is not None:
                refusal = "A model is being imported into the models folder; change it when that is done."
            if refusal:
                return {"models_dir": refusal}
            try:
                self.ctx.library.set_folder(new.models_dir)
            except LibraryError as e:
                return {"models_dir": f"{e}. Choose a folder you can write to."}
            new = dataclasses.replace(new, models_dir=str(self.ctx.library.folder))
        unsaved = self.ctx.save_settings(new)
        if self.ctx.energy is not None:
            self.ctx.energy.estimate.watts_per_core = new.watts_per_core
        if self._models_dialog is not None:
            self._models_dialog.folder_changed()
        if engine_changed and reload_path:
            if self.reply is not None:
                self.worker.stop()
            if keep_model:
                self._apply_to_loaded(reload_path)
            else:
                self.load_model(reload_path)
        after = ""
        if engine_changed and reload_path:
            after = " and applied" if keep_model else "; reloading the model"
        elif loaded is not None:  # nothing to load: the label and tooltip name what does not apply
            notes = self._show_model_label(loaded)
            if notes:
                after = ". " + " ".join(notes)
        if unsaved:  # in use all the same, until Trit closes
            self._settings_unsaved(unsaved)
            self.statusBar().showMessage(
                f"Settings in use but not saved{after}",
                4000,
            )
            return {}
        if self.banner.kind == "settings":
            self.banner.hide()
        self.statusBar().showMessage(f"Settings saved{after}", 10000 if after.startswith(".") else 4000)
        return {}

    def _apply_to_loaded(self, path: str) -> None:
        """The settings' threads, context, conversation memory and BitNet mode put to use in a new
        session of the loaded model (the worker keeps the model; `loaded` says applied)."""
        self.model_loading = True  # (for the few milliseconds: a send waits for the new session)
        self.loading_path = path
        self._pending_loads += 1
        self._update_controls()
        s = self.ctx.settings
        self.worker.load(path, s.threads, s.context, keep_model=True, **s.engine_options())

    def _settings_unsaved(self, why: str) -> None:
        self.banner.show_problem(
            why,
            "They are in use until Trit closes. Free some disk space (or make the folder writable), "
            "then press OK in File › Settings… (Ctrl+,) again.",
            kind="settings",
        )

    def use_model(self, path: str) -> None:
        """The model manager's "Use this model": the shown conversation uses it from now on, and
        so do new conversations (it becomes the settings' default). A reply being written in the
        shown conversation is stopped; one in another conversation ends first."""
        problem = path_problem(path)
        if problem:
            self.banner.show_problem(*problem)
            return
        unsaved = self.ctx.save_settings(dataclasses.replace(self.ctx.settings, default_model=path))
        if unsaved:
            self._settings_unsaved(unsaved)
        self._cli_model = ""  # the user's choice replaces the -m model of this run
        if self.current_id is not None:
            self.store.update_conversation(self.current_id, model_id=path)
        if self.reply is not None and self.reply["conversation_id"] == self.current_id:
            self.worker.stop()
        self.manage_models = True
        self._sync_model()
        if self.loaded_path == path and not self.model_loading:
            self.statusBar().showMessage(f"{Path(path).name} is already loaded", 4000)

    # -- replies ---------------------------------------------------------------------------------
    @property
    def generating(self) -> bool:
        return self.reply is not None

    def _send_clicked(self) -> None:
        """Send (not send(checked): clicked(bool) would be the text), then the keyboard goes back
        to the message box, sent or not: after a refused send (an empty box, no model yet) it
        stayed on the button and what was typed next went nowhere."""
        self.send()
        self.prompt.setFocus(Qt.FocusReason.OtherFocusReason)

    def send(self, text: str | None = None) -> bool:
        """Sends the prompt box's text (or `text`); False when nothing was sent."""
        body = (text if text is not None else self.prompt.toPlainText()).strip()
        if not body:
            return False
        if self.reply is not None:
            if self.reply["conversation_id"] == self.current_id:
                why = "A reply is still being written: Esc stops it, then send again."
            else:
                why = f"A reply is being written in {self._reply_title()}: Stop ends it, then send again."
            self.statusBar().showMessage(why, 4000)
            return False
        if not self.model_ready:
            if self.model_problem is not None:
                why = f"{self.model_problem.name} is not on this computer; choose a model in Models…"
            elif self.model_loading and self.loading_path:
                why = f"Loading {Path(self.loading_path).name}… send again when it is ready."
            else:
                why = "No model is loaded yet."
            self.statusBar().showMessage(why, 4000)
            return False
        if self.current_id is None:
            self.new_conversation()
        cid = self.current_id
        assert cid is not None
        replacing: list[int] = []
        if self.editing_id is not None and self.editing_conv == cid:
            # the edited message and everything after it give way only once the new reply has
            # come (_on_finished): a reply that fails leaves the old turn as it was
            replacing = [m.id for m in self.store.messages(cid) if m.id >= self.editing_id]
        typed_before_edit = self._typed_before_edit if self.editing_id is not None else ""
        try:
            added = self.store.add_message(cid, "user", body)
        except StoreError as e:
            # nothing sent: the text stays in the box and an edit stays an edit, with what was
            # typed before it put aside still (the edit ended first, and Esc then gave back nothing)
            self.show_store_error(e)
            return False
        self._cancel_edit()  # only once the message is written
        self._store_wrote()
        self._drop_regen_undo(cid)  # a new turn: the reply before the last regenerate is not offered back
        self._save_panel()  # what the panel shows is what this reply uses
        conv = self.store.get_conversation(cid)
        if conv.title == "New chat":
            line = body.splitlines()[0]
            # never inside a character drawn as one (a family emoji, a flag, a Hindi conjunct)
            self.store.rename_conversation(cid, cut_text(line, TITLE_CHARS + 1))
            self.setWindowTitle(f"{self.store.get_conversation(cid).title} — Trit")
        self.prompt.setPlainText(typed_before_edit)  # empty, or what the edit had put aside
        self._start_reply(cid, replacing, edit=(added.id, body) if replacing else None)
        return True

    def _start_reply(
        self, conv_id: int, replacing: list[int] | None = None, edit: tuple[int, str] | None = None
    ) -> None:
        """replacing: messages the new reply supersedes (regenerate, edit-and-resend): left out of
        its prompt and hidden while it runs, deleted when it ends unless it failed. edit: the
        edited message (id, text), taken back into the prompt box if the reply fails."""
        conv = self.store.get_conversation(conv_id)
        gone = set(replacing or ())
        messages = [{"role": "system", "content": conv.system_prompt}] if conv.system_prompt.strip() else []
        for m in self.store.messages(conv_id):
            if m.role == "system" or (m.role == "assistant" and not m.content) or m.id in gone:
                continue
            messages.append({"role": m.role, "content": m.content})
        self.reply = {
            "conversation_id": conv_id,
            "message_id": None,
            "text": "",
            "replacing": sorted(gone),
            "edit": edit,
        }
        if self.banner.kind == "reply":
            self.banner.hide()
        self.chart.clear()
        self._live_text = "Reading the prompt…"
        self._show_speed()
        self.worker.generate(
            {"conversation_id": conv_id, "messages": messages, "sampling": conv.sampling.to_dict()}
        )
        self.refresh_list()
        self._render()
        self._update_controls()

    def _on_started(self, d: dict[str, Any]) -> None:
        if self.reply is None or self.reply["conversation_id"] != d["conversation_id"]:
            return
        self.reply["message_id"] = d["message_id"]
        if self.current_id == d["conversation_id"]:
            self.chat.begin_stream(int(d["message_id"]))

    def _on_token(self, piece: str) -> None:
        if self.reply is None:
            return
        self.reply["text"] += piece
        if self.current_id == self.reply["conversation_id"]:
            self.chat.append_stream(piece)

    def _on_prompt_progress(self, p: dict[str, Any]) -> None:
        """A long prompt's count: it may take a minute before the first word on a slow machine."""
        if self.reply is None or self.reply["conversation_id"] != p["conversation_id"]:
            return
        self._live_text = f"Reading the prompt… {int(p['done']):,} of {int(p['total']):,} tokens"
        self._show_speed()

    def _on_progress(self, p: dict[str, Any]) -> None:
        if self.reply is None:
            return
        self.chart.add(p)
        self._live_text = _speed_text(int(p["tokens"]), float(p["tps"]))
        if p.get("watts") is not None:
            self._live_text += f" · {p['watts']:.1f} W"
        self._show_speed()

    def _reply_title(self) -> str:
        """The running reply's conversation, as the Stop button and the speed area name it."""
        assert self.reply is not None
        return self._title_of(int(self.reply["conversation_id"]))

    def _title_of(self, conv_id: int) -> str:
        try:
            title = self.store.get_conversation(conv_id).title
        except StoreError:
            return "another conversation"
        return f"“{short_text(title, 32)}”"

    def _show_speed(self) -> None:
        """The speed label and chart: the running reply's, named when another conversation is
        shown; else the shown conversation's last reply; else nothing."""
        if self.reply is not None:
            other = self.reply["conversation_id"] != self.current_id
            self.live_label.setText(f"{self._reply_title()}: {self._live_text}" if other else self._live_text)
            self._show_energy_note("")  # known once the reply has ended
            return  # the chart has the running reply's points
        kept = self._readouts.get(self.current_id) if self.current_id is not None else None
        if kept is None:
            self.live_label.setText("")
            self.chart.clear()
            self._show_energy_note("")
        else:
            self.live_label.setText(kept[0])
            self.chart.show_points(kept[1], kept[2])
            self._show_energy_note(kept[3])

    def _show_energy_note(self, note: str) -> None:
        """Where the shown reply's energy figure came from, or why it is estimated and what would
        let it be measured (meters.explain_energy): the speed area's tooltip, and the label's
        description for a screen reader (the line under the reply only says "estimated")."""
        self.live_label.setToolTip(note)
        self.live_label.setAccessibleDescription(note)
        self.chart.setToolTip(note)

    def _on_finished(self, d: dict[str, Any]) -> None:
        self.chat.end_stream()
        reply, self.reply = self.reply, None
        discarded = False
        if reply is not None and reply["conversation_id"] == d["conversation_id"] and reply.get("replacing"):
            # a new reply that brought no text (it failed, or was stopped or the window closed
            # before its first token) gives way to the old turn; one with text replaces it
            kept = d.get("status") != "failed" and bool(d.get("text"))
            self._settle_replaced(reply, d.get("message_id"), kept=kept)
            discarded = not kept
        if self._shut_down:
            return  # the window is closing (shutdown() delivers this): nothing to show or load
        if d.get("status") != "failed" and d.get("message_id") is not None:
            self._store_wrote()  # the worker wrote the reply
        mem = d.get("memory") or {}
        if mem:
            self.last_memory = MemoryReading(
                int(mem["rss_bytes"]), int(mem["model_file_bytes"]), int(mem["kv_bytes"])
            )
            self._update_memory_label()
        # the reply's final figures go with its conversation; a discarded attempt (regenerate or
        # edit stopped before its first token) leaves the figures of the reply that stays
        cid = int(d["conversation_id"])
        rec = d.get("record") or {}
        tokens = int(rec.get("tokens", 0) or 0)
        if tokens and not discarded:
            if not rec.get("energy_measured") and self.chart.watts:
                # the measured source failed during the reply, which is reported estimated: its live
                # watts (measured until then) are not shown beside that
                self.chart.watts.clear()
            self.chart.end()
            speed = _speed_text(tokens, float(rec.get("decode_tps", 0)))
            self._readouts[cid] = (speed, *self.chart.points(), str(rec.get("energy_note") or ""))
        elif not discarded:  # failed, or stopped before its first token: no figures to show
            self._readouts.pop(cid, None)
        self._show_speed()
        self.refresh_list()
        if self.current_id == d["conversation_id"]:
            self._render()
        self._sync_model()  # the shown conversation may use another model than the reply did
        self._update_controls()
        self._announce_end(d, tokens)
        self.reply_finished.emit(d)

    def _announce_end(self, d: dict[str, Any], tokens: int) -> None:
        """Tells a screen reader that the reply has ended (nothing on the screen takes focus or
        changes where it is): finished, stopped or failed, and where, if not in the shown chat."""
        status = d.get("status")
        if status == "failed":
            what = "Reply failed"
        elif status == "stopped":
            what = f"Reply stopped after {count_noun(tokens, 'token')}"
        else:
            what = f"Reply finished, {count_noun(tokens, 'token')}"
        if d.get("conversation_id") != self.current_id:
            what += f" in {self._title_of(int(d['conversation_id']))}"
        self.chat.announce(what)

    def _settle_replaced(self, reply: dict[str, Any], new_reply_id: int | None, *, kept: bool) -> None:
        """A regenerate or edit-and-resend has ended. kept: the new reply takes the old messages'
        place. Otherwise the old turn stays as it was: the new reply (empty or partial) and, for an
        edit, the new question are deleted, and the edited text goes back to the prompt box when
        it can (the conversation shown, nothing else typed), else into the conversation's draft."""
        cid = int(reply["conversation_id"])
        try:
            if kept:
                gone = list(reply.get("replacing") or ())
                if reply.get("edit") is None and gone and new_reply_id is not None:
                    # a regenerate: the reply it replaces can be brought back (undo_regenerate)
                    old = [self.store.get_message(int(mid)) for mid in gone]
                    self._regen_undo = {
                        "conversation_id": cid,
                        "old": old,
                        "new": int(new_reply_id),
                        "readout": self._readouts.get(cid),
                    }
            else:
                gone = [i for i in (new_reply_id, (reply.get("edit") or (None,))[0]) if i is not None]
            for mid in gone:
                try:
                    self.store.delete_message(int(mid))
                except NotFoundError:
                    pass
            if kept or reply.get("edit") is None:
                return
            text = reply["edit"][1]
            closing = self._shut_down
            if not closing and self.current_id == cid and self.editing_id is None:
                typed = self.prompt.toPlainText()
                if not typed.strip():
                    self.editing_id, self.editing_conv = reply["replacing"][0], cid
                    self._typed_before_edit = ""
                    self.edit_label.show()
                self.prompt.setPlainText(f"{typed}\n\n{text}" if typed.strip() else text)
            else:
                draft = self.store.draft(cid)
                self.store.set_draft(cid, f"{draft}\n\n{text}" if draft.strip() else text)
        except StoreError as e:
            self.show_store_error(e)

    def _on_failed(self, message: str, fix: str) -> None:
        cid = self.reply["conversation_id"] if self.reply is not None else self.current_id
        self.banner.show_problem(message, fix, kind="reply", conversation_id=cid)

    def _on_context_trimmed(self, d: dict[str, Any]) -> None:
        n = int(d["left_out"])
        self.statusBar().showMessage(
            "This conversation outgrew the model's context: the model does not see its first "
            f"{count_noun(n, 'message')} this time.",
            12000,
        )

    def stop(self) -> None:
        """Stops the running reply, in whichever conversation (the button names it)."""
        if self.reply is not None:
            self.worker.stop()
            self._live_text = "Stopping…"
            self._show_speed()

    def escape(self) -> None:
        """Esc stops the reply being written in the shown conversation, or cancels an edit. Esc
        in another conversation leaves the reply alone: a key pressed there is not about it (the
        Stop button, which names the reply's conversation, stops it). In the search box, Esc
        clears the search first."""
        if self.search.hasFocus() and self.search.text():
            self.search.clear()
        elif self.reply is not None:
            if self.reply["conversation_id"] == self.current_id:
                self.stop()
        elif self.editing_id is not None:
            self._cancel_edit(restore_typed=True)

    def regenerate(self) -> None:
        if self.reply is not None or self.current_id is None or not self.model_ready:
            return
        msgs = self.store.messages(self.current_id)
        replacing = []
        if msgs and msgs[-1].role == "assistant":
            replacing = [msgs[-1].id]  # deleted when the new reply has come (_on_finished)
            msgs = msgs[:-1]
        if not msgs or msgs[-1].role != "user":
            return
        try:
            self._save_panel()  # what the panel shows is what this reply uses, as for Send
        except StoreError as e:
            self.show_store_error(e)
            return
        self._start_reply(self.current_id, replacing)

    def edit_message(self, message_id: int | None = None) -> None:
        """Puts the last user message into the prompt box; sending replaces it and everything
        after it (store.truncate_after) and asks for a new reply."""
        if self.current_id is None or self.reply is not None:
            return
        users = [m for m in self.store.messages(self.current_id) if m.role == "user"]
        if not users or (message_id is not None and users[-1].id != message_id):
            return
        if self.editing_id is None:  # what was typed waits until the edit is sent or cancelled
            self._typed_before_edit = self.prompt.toPlainText()
        self.editing_id = users[-1].id
        self.editing_conv = self.current_id
        self.prompt.setPlainText(users[-1].content)
        self.prompt.moveCursor(self.prompt.textCursor().MoveOperation.End)
        self.edit_label.show()
        self.prompt.setFocus()

    def _cancel_edit(self, *, restore_typed: bool = False) -> None:
        """Ends edit mode; restore_typed: the prompt box gets back what was typed before the edit."""
        was_editing = self.editing_id is not None
        self.editing_id = self.editing_conv = None
        self.edit_label.hide()
        if restore_typed and was_editing:
            self.prompt.setPlainText(self._typed_before_edit)
            self.prompt.moveCursor(self.prompt.textCursor().MoveOperation.End)
        self._typed_before_edit = ""

    def copy_message(self, message_id: int) -> None:
        if self.reply is not None and self.reply.get("message_id") == message_id:
            text = self.reply["text"]  # streaming: the text on screen, not the row's last flush
        else:
            try:
                text = self.store.get_message(message_id).content
            except NotFoundError:
                return
        QApplication.clipboard().setText(text)
        self.statusBar().showMessage("Copied", 2000)

    def copy_last_reply(self) -> None:
        if self.current_id is None:
            return
        replies = [m for m in self.store.messages(self.current_id) if m.role == "assistant"]
        if replies:
            self.copy_message(replies[-1].id)

    def _apply_conversation_settings(self, system: str, sampling: Sampling) -> None:
        if self.current_id is None:
            self.new_conversation()  # takes the panel's values
        assert self.current_id is not None
        self.store.update_conversation(self.current_id, system_prompt=system, sampling=sampling)
        self._store_wrote()
        self.settings_panel.show_values(system, sampling, conversation_id=self.current_id)
        self.statusBar().showMessage("Conversation settings saved (used from the next reply)", 3000)

    def _save_panel(self) -> None:
        """Saves edits left in the settings panel (without Apply) to the conversation it shows, so
        that switching away or sending never drops them; a no-op when nothing changed."""
        conv_id = self.settings_panel.conversation_id
        if conv_id is None or not self.settings_panel.dirty():
            return
        system, sampling = self.settings_panel.values()
        try:
            self.store.update_conversation(conv_id, system_prompt=system, sampling=sampling)
        except NotFoundError:  # deleted meanwhile
            return
        self.settings_panel.show_values(system, sampling, conversation_id=conv_id)

    def export_conversation(self, path: str | None = None) -> str | None:
        """Markdown (.md) or JSON (.json) by the file's extension; asks for a file when path is None."""
        if self.current_id is None:
            return None
        if path is None:
            conv = self.store.get_conversation(self.current_id)
            # keeps every script's letters and marks (isalnum() made नमस्ते "नमस_त_"), within 200 bytes
            safe = file_name(conv.title, fallback="chat")
            path, chosen = QFileDialog.getSaveFileName(
                self,
                "Export conversation",
                str(Path.home() / f"{safe}.md"),
                "Markdown (*.md);;JSON (*.json)",
            )
            if not path:
                return None
            if not Path(path).suffix:
                path += ".json" if "json" in chosen.lower() else ".md"
        as_json = Path(path).suffix.lower() == ".json"
        text = (
            self.store.export_json(self.current_id)
            if as_json
            else self.store.export_markdown(self.current_id)
        )
        try:
            _write_whole(Path(path), text)
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:
                fix = "Choose a shorter name."
            elif e.errno in (errno.ENOSPC, errno.EDQUOT):
                fix = "Free some disk space, or choose another folder."
            else:
                fix = "Choose another folder."
            self.banner.show_problem(f"Cannot export to {path}: {e.strerror or e}", fix)
            return None
        self.statusBar().showMessage(f"Exported to {path}", 4000)
        return path

    # -- size ------------------------------------------------------------------------------------
    def fit_screen(self) -> None:
        """No larger than the screen's free area: the first size (1180x760) is wider than a
        1600x1000 screen at 150% (1067x667) or a 1080p one at 200% (960x540) leaves. The window
        manager places a window that fits."""
        avail = self.screen().availableGeometry()
        frame = self.frameGeometry().size() - self.geometry().size()
        if frame.height() <= 0:  # not mapped yet: a title bar's worth
            frame = QSize(0, self.fontMetrics().height() * 2)
        if self.minimumSizeHint().width() > avail.width() - frame.width() and self.panel_action.isChecked():
            # three columns do not fit (640 logical pixels: 1280x800 at 200%): the conversation
            # settings panel goes (View › Conversation settings, Ctrl+Alt+S, brings it back)
            self.panel_action.setChecked(False)
            # the splitter and the window take the smaller minimum now, before the resize below
            self.settings_panel.parentWidget().updateGeometry()
            self.layout().activate()
        w = min(self.width(), avail.width() - frame.width())
        h = min(self.height(), avail.height() - frame.height())
        if (w, h) != (self.width(), self.height()):
            self.resize(w, h)

    def showEvent(self, e: QShowEvent) -> None:
        if not self._sized and not e.spontaneous():  # on the screen it opens on
            self._sized = True
            self.fit_screen()
            # typing at once writes a message (Qt would start in the search box, first in order)
            self.prompt.setFocus(Qt.FocusReason.OtherFocusReason)
        super().showEvent(e)

    def resizeEvent(self, e: Any) -> None:
        super().resizeEvent(e)
        # the model and memory labels take at most a quarter of the width each: the status bar's
        # messages (a context cut, an error) keep the rest
        for label in (self.model_label, self.memory_label):
            label.setMaximumWidth(max(120, self.width() // 4))

    # -- shutdown --------------------------------------------------------------------------------
    def closeEvent(self, e: QCloseEvent) -> None:
        if not self._shut_down:
            lost = self._keep_window_state()
            if lost and not self._confirm_close(lost):
                e.ignore()  # the window stays, with the text in the box
                return
            self._state_kept = True
        self.shutdown()
        super().closeEvent(e)

    def _confirm_close(self, lost: str) -> bool:
        """Asks whether to close though what the window holds could not be saved (tests replace
        this); lost: what and why, in a sentence."""
        box = QMessageBox(QMessageBox.Icon.Warning, "Close Trit?", lost, parent=self)
        box.setTextFormat(Qt.TextFormat.PlainText)  # the reason may quote a path
        box.setInformativeText("Close anyway and lose it, or cancel, free some disk space and close again?")
        close = box.addButton("Close anyway", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is close

    def _last_viewed(self, live: set[int]) -> int | None:
        try:
            last = self.store.last_viewed()
        except StoreError:
            return None
        return last if last in live else None

    def _switch_draft(self, conv_id: int | None) -> None:
        """The prompt box holds each conversation's own unsent text: what was typed stays with the
        conversation it was typed in (kept in the store) and comes back when it is shown again.
        Text typed before any conversation existed goes along to the one shown next."""
        owner = self._draft_owner
        if owner == conv_id:
            return
        text = self.prompt.toPlainText()
        try:
            if owner is not None:
                if self.editing_id is None:  # an edit in progress is not a draft
                    self._put_draft(owner, text)
                text = ""
            draft = self.store.draft(conv_id) if conv_id is not None else ""
            if draft:
                self.store.set_draft(conv_id, "")  # in the box now; stored again when left
        except StoreError:
            draft = ""  # a draft is a convenience: the conversation is shown anyway
        self._draft_owner = conv_id
        self._draft_taken = draft
        if (draft or text) != self.prompt.toPlainText():
            self.prompt.setPlainText(draft or text)
            self.prompt.moveCursor(self.prompt.textCursor().MoveOperation.End)

    def _put_draft(self, conv_id: int, text: str) -> None:
        """Stores the text left in the box as conv_id's draft. Text this window did not change (what
        it took from the store, or nothing) does not replace a draft another window on the same
        folder stored meanwhile: closing a window that only showed a conversation erased what was
        typed into it in another."""
        if text == self._draft_taken and self.store.draft(conv_id):
            return
        self.store.set_draft(conv_id, text)

    def _empty_reply_row(self, reply: dict[str, Any]) -> int | None:
        """The new reply's row when `started` never reached the window: the conversation's empty
        stopped reply after the messages it was to replace."""
        if reply.get("message_id") is not None:
            return int(reply["message_id"])
        try:
            msgs = self.store.messages(int(reply["conversation_id"]))
        except StoreError:
            return None
        after = max(reply["replacing"])
        rows = [m.id for m in msgs if m.id > after and m.role == "assistant" and not m.content]
        return rows[-1] if rows else None

    def _keep_window_state(self) -> str:
        """At close: the settings panel's unapplied values, and the unsent text of the shown
        conversation (an edit in progress is not kept). Returns what could not be kept and why
        ("" when everything was): the close asks before losing it."""
        try:  # the file deleted since the last write is written again now (close would try too late to ask)
            self.store.ensure_saved()
        except StoreMovedError as e:
            if not e.kept:  # (kept: another file took its place, and this window's is saved beside it)
                return f"Your conversations could not be saved: {e.message} {e.fix}"
        lost: list[str] = []
        error = ""
        try:
            self._save_panel()
        except StoreError as e:
            lost.append("the conversation settings you changed")
            error = e.message
        typed = ""
        try:
            owner = self._draft_owner
            # in an edit, what was typed before it (the edit itself is not kept)
            typed = self._typed_before_edit if self.editing_id is not None else self.prompt.toPlainText()
            if owner is None and typed.strip():  # typed before any chat existed: it becomes one
                owner = self._create_conversation("New chat")
                self.store.mark_viewed(owner)
            if owner is not None:
                self._put_draft(owner, typed)
        except StoreError as e:
            if typed.strip():  # an empty box loses nothing
                lost.insert(0, "your unsent message")
                error = e.message
        if not lost:
            return ""
        what = " and ".join(lost)
        return f"{what[0].upper()}{what[1:]} could not be saved: {error}"

    def shutdown(self) -> None:
        """Stops the reply (kept as 'stopped'), ends the engine thread and the downloads. Once:
        closing the window and the app's exit both call it."""
        if self._shut_down:
            return
        if not self._state_kept:  # closeEvent has kept it (and asked) already
            self._keep_window_state()  # the app ends: nothing left to show a problem in
        self._shut_down = True
        self._rss_timer.stop()
        self.worker.shutdown()
        # the reply's last signals (started, finished) are handled now, while the store is open:
        # a regenerate or edit-and-resend cut by the close settles as any stopped reply does
        QApplication.processEvents()
        reply, self.reply = self.reply, None
        if reply is not None and reply.get("replacing"):  # its `finished` never came
            self._settle_replaced(reply, self._empty_reply_row(reply), kept=False)
        for signal in (
            self.worker.started,
            self.worker.token,
            self.worker.finished,
            self.worker.failed,
            self.worker.chat_warning,
        ):
            try:
                signal.disconnect()
            except (RuntimeError, TypeError):
                pass
        if self._models_dialog is not None:
            self._models_dialog.end_import()
            self._models_dialog.close()
        if self.ctx.has_downloads:
            self.ctx.downloads.close(wait=True, timeout=5)
            self.ctx._downloads = None
        self.store.on_rescue = None  # the store may outlive the window (the app closes it after)
        self.ctx.library.in_use = tuple


__all__ = ["MainWindow", "ModelChoice", "model_choice", "resolve_model_path"]
