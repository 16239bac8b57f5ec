"""File › Settings…: engine (threads, context, activation precision), models folder, Hugging Face
endpoint and access token, the energy estimate's watts per core.

The dialog only edits a copy of the Settings: OK checks every field (settings.check_setting, the
rules the settings file is read with) and hands the result to `apply`, the window's
MainWindow.apply_settings, which saves it and reloads the model when threads, context or
precision changed. Problems are shown in the dialog, next to nothing else, and focus goes to the
first bad field; the dialog stays open until the settings are applied or cancelled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QEvent, QRect, QSize, Qt
from PySide6.QtGui import QColor, QPalette, QShowEvent
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from trit.app.core.settings import (
    BITNET_MODES,
    KV_TYPES,
    LM_HEADS,
    WATTS_DECIMALS,
    WATTS_MAX,
    WATTS_MIN,
    Settings,
    check_setting,
    default_settings,
    physical_cores,
)

from .colours import error_colour, muted_colour

# (value, label) of the activation precision choices, in the order shown
PRECISIONS = (
    ("f32", "Exact (f32)"),
    ("q8", "Fast, llama.cpp-style (q8)"),
)
# (value, label) of the output head choices: every head the engine offers (LM_HEADS), labelled
_HEAD_LABELS = {"f16": "Exact (f16, as stored)", "q8_0": "Fast, approximate (Q8_0 built at load)"}
HEAD_CHOICES = tuple((value, _HEAD_LABELS[value]) for value in LM_HEADS)
# (value, label) of the KV cache choices: every type the engine offers (KV_TYPES), labelled
_KV_LABELS = {
    "f32": "Exact (f32)",
    "f16": "Compact, approximate (f16)",
    "q8": "Smallest, approximate (8-bit)",
    "q3": "Tiniest, 3-bit (BitNet a4.8, experimental)",
}
KV_CHOICES = tuple((value, _KV_LABELS[value]) for value in KV_TYPES)
_BITNET_LABELS = {
    "b1.58": "Exact (b1.58 activations)",
    "a4.8": "BitNet a4.8: 4-bit activations (experimental)",
}
BITNET_CHOICES = tuple((value, _BITNET_LABELS[value]) for value in BITNET_MODES)


def _choices(items: tuple[tuple[str, str], ...], name: str, tip: str) -> QComboBox:
    """A combo box of (value, label) items with its accessible name and tooltip."""
    box = QComboBox()
    for value, label in items:
        box.addItem(label, value)
    box.setAccessibleName(name)
    box.setToolTip(tip)
    return box


FIELD_LABELS = {
    "threads": "Threads",
    "context": "Context size",
    "activations": "Activation precision",
    "lm_head": "Output head",
    "kv_cache": "Conversation memory",
    "bitnet_mode": "BitNet mode",
    "models_dir": "Models folder",
    "hf_endpoint": "Hugging Face endpoint",
    "hf_token": "Access token",
    "watts_per_core": "Watts per core",
}


class _FormScroll(QScrollArea):
    """Holds the form's sections: as tall as they are when the screen has room (QScrollArea's own
    size hint stops at 24 lines), scrolling when it has not (200% scaling on a 1080p screen). Its
    narrowest leaves room for the vertical scroll bar, so the form never scrolls sideways."""

    def __init__(self, content: QWidget) -> None:
        super().__init__()
        self.setWidget(content)
        self.setWidgetResizable(True)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        self.setAccessibleName("Settings sections")
        # not a Tab stop: it shows no focus, and took the first one (Settings opened with nothing
        # visibly focused). It still scrolls to the field that has focus.
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)

    def _extra_width(self) -> int:
        return 2 * self.frameWidth() + self.verticalScrollBar().sizeHint().width()

    def sizeHint(self) -> QSize:
        hint = self.widget().sizeHint()
        return QSize(hint.width() + self._extra_width(), hint.height() + 2 * self.frameWidth())

    def minimumSizeHint(self) -> QSize:
        lines = self.fontMetrics().lineSpacing() * 6  # a few fields, whatever the screen
        return QSize(self.widget().minimumSizeHint().width() + self._extra_width(), lines)


# apply(settings) -> {field: problem} (empty: applied) or None (the user backed out of a question)
ApplyFn = Callable[[Settings], "dict[str, str] | None"]


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, apply: ApplyFn, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self._apply = apply
        self.setWindowTitle("Settings")
        self.setAccessibleName("Settings")
        self._build()
        # wide enough for a typical models folder path and a token without scrolling; within the
        # screen (fit_screen) where it is narrower
        self._wide = self.fontMetrics().averageCharWidth() * 96
        self.setMinimumWidth(self._wide)
        self._sized = False  # fit_screen has given the first size
        self.show_values(settings)

    # -- layout ----------------------------------------------------------------------------------
    def _build(self) -> None:
        # wrapped hints get the height of all their lines at the form's width: the scroll area
        # asks its form for its height at that width (a top-level form layout did not, and cut
        # them to one line at scale 2)
        self._hints: list[QLabel] = []

        def hint(text: str) -> QLabel:
            h = QLabel(text)
            h.setWordWrap(True)
            self._hints.append(h)  # grey, in _recolour
            return h

        # engine
        self.threads = QSpinBox()
        self.threads.setRange(1, 512)
        self.threads.setAccessibleName("Threads")
        cores = physical_cores()
        self.threads.setToolTip(f"Engine threads. Default: {cores}, the physical cores of this computer.")
        self.context = QSpinBox()
        self.context.setRange(128, 1 << 20)
        self.context.setSingleStep(512)
        self.context.setSuffix(" tokens")
        self.context.setAccessibleName("Context size")
        self.context.setToolTip(
            "How many tokens of the conversation the model sees. More needs more memory "
            "(KV cache); it is capped at the model's own limit."
        )
        self.precision = _choices(
            PRECISIONS,
            "Activation precision",
            "For llama.cpp weight types (Q4_0, Q8_0, K-quants …). Exact matches the original model; "
            "Fast rounds activations to 8 bits as llama.cpp does. Ternary models always use 8-bit "
            "activations, which they were trained with.",
        )
        self.lm_head = _choices(
            HEAD_CHOICES,
            "Output head",
            "The output head of models that store it as floats (BitNet b1.58 2B4T: more than "
            "half of the bytes read per word). Fast reads an 8-bit copy made when the model loads: "
            "about 40% faster replies on BitNet 2B4T and less memory, with probabilities that differ "
            "slightly from the exact model.",
        )
        self.kv_cache = _choices(
            KV_CHOICES,
            "Conversation memory",
            "How the model keeps the conversation so far (its KV cache). Compact stores it in 16-bit "
            "floats: half the memory (about 300 MB less for a 4096-token chat with BitNet 2B4T). "
            "Smallest stores 8-bit numbers: a quarter of the memory (about 470 MB less), and long "
            "chats reply faster; the model's probabilities differ a little more. Both differ "
            "slightly from the exact model. Tiniest is BitNet a4.8's 3-bit cache (about an eighth of the "
            "memory), for models trained to use it: on others it costs a lot of quality (SmolLM2's "
            "perplexity goes from 8.8 to about 94).",
        )
        self.bitnet_mode = _choices(
            BITNET_CHOICES,
            "BitNet mode",
            "BitNet a4.8 computes with 4-bit activations (the inputs of the attention and feed-forward "
            "layers) and keeps only the larger half of the attention output's values. It is meant for "
            "models trained that way; no such model is public yet. Other models lose most of their "
            "quality: SmolLM2's perplexity goes from 8.8 to about 29,000. It does not make replies "
            "faster on this kind of processor.",
        )
        engine = QGroupBox("Engine (changes reload the model)")
        ef = QFormLayout(engine)
        ef.addRow(self._label("&Threads", self.threads), self.threads)
        ef.addRow("", hint(f"Default: {cores} (physical cores)."))
        ef.addRow(self._label("&Context size", self.context), self.context)
        ef.addRow(self._label("Activation &precision", self.precision), self.precision)
        ef.addRow("", hint("For llama.cpp weight types only; ternary models are unaffected."))
        ef.addRow(self._label("Output &head", self.lm_head), self.lm_head)
        ef.addRow("", hint("For models that store it in 16 bits (BitNet). Fast is approximate."))
        ef.addRow(self._label("Conversation &memory", self.kv_cache), self.kv_cache)
        ef.addRow(
            "",
            hint(
                "Compact: half the memory for long chats, Smallest: a quarter (approximate); "
                "Tiniest: for a4.8 models."
            ),
        )
        ef.addRow(self._label("&BitNet mode", self.bitnet_mode), self.bitnet_mode)
        ef.addRow("", hint("a4.8 is for models trained with it; other models lose most of their quality."))

        # models and downloads
        self.models_dir = QLineEdit()
        self.models_dir.setAccessibleName("Models folder")
        self.browse_button = QPushButton("Browse…")
        self.browse_button.setAccessibleName("Choose models folder")
        self.browse_button.clicked.connect(lambda: self.browse())
        folder_row = QHBoxLayout()
        folder_row.setContentsMargins(0, 0, 0, 0)
        folder_row.addWidget(self.models_dir, 1)
        folder_row.addWidget(self.browse_button)
        self.endpoint = QLineEdit()
        self.endpoint.setAccessibleName("Hugging Face endpoint")
        self.endpoint.setPlaceholderText("https://huggingface.co")
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setAccessibleName("Hugging Face access token")
        self.token.setPlaceholderText("hf_… (only for gated models)")
        self.token.setToolTip(
            "Create a read token at huggingface.co/settings/tokens. It is kept in the settings file, "
            "readable only by you, and sent only to the endpoint above."
        )
        self.show_token = QPushButton("Show")
        self.show_token.setCheckable(True)
        self.show_token.setAccessibleName("Show access token")
        self.show_token.toggled.connect(self._toggle_token)
        token_row = QHBoxLayout()
        token_row.setContentsMargins(0, 0, 0, 0)
        token_row.addWidget(self.token, 1)
        token_row.addWidget(self.show_token)
        models = QGroupBox("Models and downloads")
        mf = QFormLayout(models)
        mf.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        mf.addRow(self._label("Models &folder", self.models_dir), folder_row)
        mf.addRow(self._label("Hugging Face &endpoint", self.endpoint), self.endpoint)
        mf.addRow(self._label("&Access token", self.token), token_row)

        # energy
        self.watts = QDoubleSpinBox()
        # the settings' own range and precision: OK without edits must not change the value
        self.watts.setDecimals(WATTS_DECIMALS)
        self.watts.setRange(WATTS_MIN, WATTS_MAX)
        self.watts.setSingleStep(0.5)
        self.watts.setSuffix(" W")
        self.watts.setAccessibleName("Watts per core")
        self.watts.setToolTip(
            "Used when no power meter can be read: energy = this process's CPU time × this figure."
        )
        energy = QGroupBox("Energy estimate")
        nf = QFormLayout(energy)
        nf.addRow(self._label("&Watts per core", self.watts), self.watts)
        nf.addRow("", hint("Used when no power meter can be read; a busy core draws about 3–8 W."))

        self.problems = QLabel()
        self.problems.setWordWrap(True)
        # no accessible name: a screen reader reads the problems themselves (a name replaced them)
        self.problems.setAccessibleDescription("Settings problems")
        self.problems.setTextFormat(Qt.TextFormat.PlainText)
        self.problems.hide()
        self._recolour()

        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok
            | QDialogButtonBox.StandardButton.Cancel
            | QDialogButtonBox.StandardButton.RestoreDefaults
        )
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setAccessibleName("Save settings")
        self.cancel_button = self.buttons.button(QDialogButtonBox.StandardButton.Cancel)
        self.cancel_button.setAccessibleName("Cancel settings")
        self.defaults_button = self.buttons.button(QDialogButtonBox.StandardButton.RestoreDefaults)
        self.defaults_button.setAccessibleName("Restore default settings")
        self.defaults_button.setToolTip("Engine, endpoint and energy defaults; keeps the folder and token")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.defaults_button.clicked.connect(self.restore_defaults)

        # the sections scroll, the problems and the buttons stay in sight: at 150-200% scaling
        # the form is taller than the screen, and OK must stay reachable
        form = QWidget()
        fl = QVBoxLayout(form)
        fl.setContentsMargins(0, 0, 0, 0)
        fl.addWidget(engine)
        fl.addWidget(models)
        fl.addWidget(energy)
        fl.addStretch(1)
        self.scroll = _FormScroll(form)
        lay = QVBoxLayout(self)
        lay.addWidget(self.scroll, 1)
        lay.addWidget(self.problems)
        lay.addWidget(self.buttons)

        self.fields: dict[str, QWidget] = {
            "threads": self.threads,
            "context": self.context,
            "activations": self.precision,
            "lm_head": self.lm_head,
            "kv_cache": self.kv_cache,
            "bitnet_mode": self.bitnet_mode,
            "models_dir": self.models_dir,
            "hf_endpoint": self.endpoint,
            "hf_token": self.token,
            "watts_per_core": self.watts,
        }
        # a number typed out of a spin box's range ("0" threads) is put back to the old value by
        # Qt as the box loses focus or Enter is pressed: caught first, it is named instead
        self._out_of_range: dict[str, str] = {}
        for name, box in self.fields.items():
            if isinstance(box, QAbstractSpinBox):
                box.installEventFilter(self)
                box.lineEdit().textEdited.connect(lambda _t, n=name: self._out_of_range.pop(n, None))
        self.tab_order: list[QWidget] = [
            self.threads,
            self.context,
            self.precision,
            self.lm_head,
            self.kv_cache,
            self.bitnet_mode,
            self.models_dir,
            self.browse_button,
            self.endpoint,
            self.token,
            self.show_token,
            self.watts,
            self.defaults_button,
            self.ok_button,
            self.cancel_button,
        ]
        for a, b in zip(self.tab_order, self.tab_order[1:], strict=False):
            QWidget.setTabOrder(a, b)
        self.ok_button.setDefault(True)

    def _recolour(self) -> None:
        """Hints in a grey and problems in a red that read on this window's colour, light or dark
        (the palette's own placeholder grey was 3.9:1 on the light window, the fixed red #c0392b
        2.6:1 on a dark one; WCAG AA asks 4.5:1)."""
        grey, red = muted_colour(self.palette()), QColor(error_colour(self.palette()))
        for label, colour in [(h, grey) for h in self._hints] + [(self.problems, red)]:
            if label.palette().color(QPalette.ColorRole.WindowText) != colour:
                own = QPalette()  # only the text colour set: the rest still follows the window
                own.setColor(QPalette.ColorRole.WindowText, colour)
                label.setPalette(own)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "problems"):
            self._recolour()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not event.spontaneous():
            self.fit_screen()
            self.threads.setFocus()  # the first field, each time Settings opens

    def _available(self) -> QRect:
        return (self.parentWidget() or self).screen().availableGeometry()

    def _room(self) -> QSize:
        """The largest size of the dialog (without its frame) inside the screen's free area."""
        avail = self._available()
        frame = self.frameGeometry().size() - self.geometry().size()
        if frame.height() <= 0:  # not mapped yet: a title bar's worth
            frame = QSize(0, self.fontMetrics().height() * 2)
        return QSize(max(avail.width() - frame.width(), 1), max(avail.height() - frame.height(), 1))

    def fit_screen(self) -> None:
        """Keeps the dialog inside its screen's free area: at most its width and height, the
        sections scrolling, and moved into it. The first time, the dialog gets the height of all
        its sections where there is room."""
        avail = self._available()
        room = self._room()
        self.setMinimumWidth(min(self._wide, room.width()))
        want = self.size() if self._sized else self.sizeHint()
        self._sized = True
        w = min(max(want.width(), self.minimumWidth()), room.width())
        h = min(max(want.height(), self.minimumSizeHint().height()), room.height())
        if (w, h) != (self.width(), self.height()):
            self.resize(w, h)
        frame = self.frameGeometry()
        x = max(avail.left(), min(frame.x(), avail.right() + 1 - frame.width()))
        y = max(avail.top(), min(frame.y(), avail.bottom() + 1 - frame.height()))
        if (x, y) != (frame.x(), frame.y()):
            self.move(x, y)

    def _label(self, text: str, buddy: QWidget) -> QLabel:
        label = QLabel(text)
        label.setBuddy(buddy)  # Alt+<underlined letter> moves to the field
        return label

    def _toggle_token(self, shown: bool) -> None:
        self.token.setEchoMode(QLineEdit.EchoMode.Normal if shown else QLineEdit.EchoMode.Password)
        self.show_token.setText("Hide" if shown else "Show")
        self.show_token.setAccessibleName("Hide access token" if shown else "Show access token")

    # -- values ----------------------------------------------------------------------------------
    def show_values(self, s: Settings) -> None:
        self.threads.setValue(s.threads)
        self.context.setValue(s.context)
        i = self.precision.findData(s.activations)
        self.precision.setCurrentIndex(max(i, 0))
        self.lm_head.setCurrentIndex(max(self.lm_head.findData(s.lm_head), 0))
        self.kv_cache.setCurrentIndex(max(self.kv_cache.findData(s.kv_cache), 0))
        self.bitnet_mode.setCurrentIndex(max(self.bitnet_mode.findData(s.bitnet_mode), 0))
        self.models_dir.setText(s.models_dir)
        self.endpoint.setText(s.hf_endpoint)
        self.token.setText(s.hf_token)
        self.watts.setValue(s.watts_per_core)

    def restore_defaults(self) -> None:
        d = default_settings()
        self.show_values(
            dataclasses.replace(d, models_dir=self.models_dir.text(), hf_token=self.token.text())
        )

    def raw_values(self) -> dict[str, Any]:
        return {
            "threads": int(self.threads.value()),
            "context": int(self.context.value()),
            "activations": self.precision.currentData(),
            "lm_head": self.lm_head.currentData(),
            "kv_cache": self.kv_cache.currentData(),
            "bitnet_mode": self.bitnet_mode.currentData(),
            "models_dir": self.models_dir.text().strip(),
            "hf_endpoint": self.endpoint.text().strip(),
            "hf_token": self.token.text(),
            "watts_per_core": round(float(self.watts.value()), WATTS_DECIMALS),
        }

    def values(self) -> tuple[Settings, dict[str, str]]:
        """The edited settings and {field: problem} for the fields that fail their checks (those
        keep their old value in the returned Settings)."""
        changes: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for name, value in self.raw_values().items():
            try:
                changes[name] = check_setting(name, value)
            except ValueError as e:
                problems[name] = str(e)
        return dataclasses.replace(self.settings, **changes), problems

    def show_problems(self, problems: dict[str, str]) -> None:
        """One line per bad field ("Models folder: cannot use this folder …"); focus to the first.
        Each bad field's accessible description says what is wrong with it, for a screen reader
        that follows the focus there (the others' go back to their tooltip)."""
        for name, field in self.fields.items():
            field.setAccessibleDescription(f"Problem: {problems[name]}" if name in problems else "")
        if not problems:
            self.problems.hide()
            return
        lines = [f"{FIELD_LABELS.get(k, k)}: {v}" for k, v in problems.items()]
        self.problems.setText("\n".join(lines))
        self.problems.show()
        if self.isVisible():  # taller by the problems' lines where the screen has room
            self.layout().activate()
            want = max(self.height(), self.sizeHint().height())
            self.resize(self.width(), min(want, self._room().height()))
        first = next((self.fields[k] for k in self.fields if k in problems), None)
        if first is not None:
            self.scroll.ensureWidgetVisible(first)  # scrolled out of sight on a small screen
            first.setFocus()
            if isinstance(first, QLineEdit):
                first.selectAll()

    def browse(self, folder: str | None = None) -> None:
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Models folder", self.models_dir.text())
            if not folder:
                return
        self.models_dir.setText(folder)

    def eventFilter(self, obj: Any, e: Any) -> bool:
        leaving = e.type() == QEvent.Type.FocusOut or (
            e.type() == QEvent.Type.KeyPress and e.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        )
        if leaving and isinstance(obj, QAbstractSpinBox) and not obj.hasAcceptableInput():
            name = next(n for n, w in self.fields.items() if w is obj)
            lo, hi = obj.minimum(), obj.maximum()  # type: ignore[attr-defined]
            self._out_of_range[name] = (
                f"{obj.text().strip() or 'nothing'} is not a number from {lo:g} to {hi:g}"
            )
            self.show_problems(dict(self._out_of_range))
            if e.type() == QEvent.Type.KeyPress:
                return True  # Enter does not accept the dialog with the old value
        return bool(super().eventFilter(obj, e))

    def accept(self) -> None:
        if self._out_of_range:
            self.show_problems(dict(self._out_of_range))
            return
        new, problems = self.values()
        if problems:
            self.show_problems(problems)
            return
        result = self._apply(new)
        if result is None:  # the user said no to a question (e.g. stopping the reply)
            return
        if result:
            self.show_problems(result)
            return
        self.settings = new
        self.show_problems({})
        super().accept()


__all__ = ["PRECISIONS", "SettingsDialog"]
