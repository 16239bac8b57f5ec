"""Conversation store: SQLite (WAL) in the per-user data dir.

Thread use: one ConversationStore may be shared by the GUI thread and the engine worker (the
ReplyWriter appends from the worker); every call takes the store's lock, so calls are serialised.

Crash safety: a reply is written through ReplyWriter, which keeps the text in memory and flushes
it (an UPDATE of that one row) at most every `flush_interval` seconds or `flush_chars` characters,
so a killed process loses at most the text of the last interval. Opening the store turns any
message still marked 'streaming' into 'stopped'.

Damage: opening the store checks the file (PRAGMA quick_check). A damaged file is kept byte for
byte as conversations.damaged-<time>.sqlite3 beside it, every conversation and message that can
still be read is copied into a fresh database (salvage.py), and the store opens on that
(`ConversationStore.salvaged` says what was recovered). Damage met later raises StoreDamagedError
and leaves a marker, so that the next start recovers the file even where quick_check passes.

Full disk: an error that comes from a lack of room says that the disk holding the folder is full
(SQLite calls most of them a plain "disk I/O error"). Where the WAL index cannot be made at open,
the store opens with it in memory (see _open), so the conversations can still be read;
`open_warning` says why nothing new is saved until there is room.

Deleted while open: SQLite goes on writing into a deleted file, so every write first checks that
the path still names the file opened. When it is gone (the data folder deleted or moved away) the
open connection, which still holds everything, is copied to a new file there and the store goes on
with it (`rescued`); when another file took its place, it is kept, this store's data is saved
beside it and writes raise StoreMovedError.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trit.text import SURROGATES, grapheme_ceil, grapheme_floor, replace_surrogates, short_repr

from .sampling import Sampling

if TYPE_CHECKING:
    from .salvage import Salvage

COMPLETE = "complete"
STREAMING = "streaming"
STOPPED = "stopped"
STATUSES = (COMPLETE, STREAMING, STOPPED)
ROLES = ("system", "user", "assistant")
log = logging.getLogger(__name__)

DB_NAME = "conversations.sqlite3"


class StoreError(Exception):
    """The conversation database cannot be opened or written, is from a newer Trit, or an id is
    unknown. `message` says what failed, `fix` what the user can do ("" when the message says it)."""

    def __init__(self, message: str, fix: str = "") -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message} {fix}".strip())


class StoreDamagedError(StoreError):
    """SQLite found the database file damaged (malformed pages, not a database)."""


class StoreFullError(StoreError):
    """The disk holding the database has no room (`folder`, `free`: bytes free when it was asked)."""

    def __init__(self, message: str, fix: str = "", *, folder: str = "", free: int = 0) -> None:
        self.folder = folder
        self.free = free
        super().__init__(message, fix)


class StoreMovedError(StoreError):
    """The conversation file was deleted, moved or replaced while the store had it open, and what
    the store holds could not be written back at its path (another file is there, or the folder
    cannot be written). `kept`: where it was saved instead ("" when it could not be)."""

    def __init__(self, message: str, fix: str = "", *, kept: str = "") -> None:
        self.kept = kept
        super().__init__(message, fix)


class NotFoundError(StoreError, KeyError):
    """No conversation or message with that id (``kind``, ``id`` attributes)."""

    def __init__(self, kind: str, id: int) -> None:
        self.kind = kind
        self.id = id
        super().__init__(f"no {kind} with id {id}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return f"no {self.kind} with id {self.id}"


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    created: float  # unix seconds
    updated: float  # unix seconds; bumped by every message change
    system_prompt: str
    model_id: str  # catalog id or model path; "" = the app's default
    sampling: Sampling
    deleted: float | None = None  # unix seconds of the soft delete; None = live


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: str  # "system" | "user" | "assistant"
    content: str
    created: float
    status: str = COMPLETE  # COMPLETE | STREAMING | STOPPED
    stats: dict[str, Any] = field(default_factory=dict)  # meters.ReplyRecord.to_dict() for replies


@dataclass(frozen=True)
class SearchHit:
    conversation: Conversation
    message_id: int | None  # None when the title matched
    snippet: str  # a short excerpt around the match


def default_db_path() -> Path:
    """<user data dir>/Trit/conversations.sqlite3 (platformdirs)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("Trit", appauthor=False)) / DB_NAME


# -- schema ----------------------------------------------------------------------------------------
# PRAGMA user_version holds the schema version. MIGRATIONS[i] takes a database from version i to
# i + 1; each runs in its own transaction, so a failed upgrade leaves the previous version intact.
# Never edit a released migration: append a new one.


def _migrate_0_to_1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            system_prompt TEXT NOT NULL DEFAULT '',
            model_id TEXT NOT NULL DEFAULT '',
            sampling TEXT NOT NULL DEFAULT '{}'
        )"""
    )
    db.execute(
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            created REAL NOT NULL,
            stats TEXT NOT NULL DEFAULT '{}'
        )"""
    )


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    # v2: soft delete (undo), reply status (streaming replies survive a crash as 'stopped'), and
    # the indexes the sidebar and message list query by.
    db.execute("ALTER TABLE conversations ADD COLUMN deleted REAL")
    db.execute("ALTER TABLE messages ADD COLUMN status TEXT NOT NULL DEFAULT 'complete'")
    db.execute("CREATE INDEX messages_by_conversation ON messages(conversation_id, id)")
    db.execute("CREATE INDEX conversations_by_update ON conversations(deleted, updated)")


def _migrate_2_to_3(db: sqlite3.Connection) -> None:
    # v3: what the window had when it closed: the unsent text of a conversation, and when each
    # conversation was last shown (the window reopens on the latest)
    db.execute("ALTER TABLE conversations ADD COLUMN draft TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE conversations ADD COLUMN viewed REAL")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migrate_0_to_1, _migrate_1_to_2, _migrate_2_to_3]
SCHEMA_VERSION = len(MIGRATIONS)

_CONV_COLS = "id, title, created, updated, system_prompt, model_id, sampling, deleted"
_MSG_COLS = "id, conversation_id, role, content, created, status, stats"


def _char_class(chars: list[str]) -> str:
    """A regex class of chars (sorted), with runs of consecutive code points as ranges."""
    out, i = [], 0
    while i < len(chars):
        j = i
        while j + 1 < len(chars) and ord(chars[j + 1]) == ord(chars[j]) + 1:
            j += 1
        out.append(re.escape(chars[i]) + ("-" + re.escape(chars[j]) if j > i else ""))
        i = j + 1
    return "[" + "".join(out) + "]"


@dataclass(frozen=True)
class _FoldTables:
    marks: re.Pattern[str]  # runs of nonspacing marks (Mn) in the BMP
    astral_marks: re.Pattern[str]  # the same past U+FFFF
    unstable: re.Pattern[str]  # a BMP character NFKC may change or join to the one before
    joining: frozenset[str]  # unstable ones and every mark with a combining class


@functools.cache
def _fold_tables() -> _FoldTables:
    """Built on first use from this Python's Unicode data (about 0.1 s). BMP and astral marks are
    two patterns because sre tests a class of BMP characters with a bitmap but one reaching past
    U+FFFF as a list of ranges, one after another (six times slower). Marks sit only in planes 0,
    1 and 14 (2 and 3 hold ideographs, 15 and 16 private use), so only those are scanned."""
    bmp, astral = [], []
    for cp in (*range(0x20000), *range(0xE0000, 0xF0000)):
        if unicodedata.category(chr(cp)) == "Mn":
            (bmp if cp < 0x10000 else astral).append(chr(cp))
    # NFKC_Quick_Check != Yes (unicodedata does not expose it): characters NFKC replaces, the
    # second of every canonical pair that composes, Hangul vowel and final jamo, plus the few
    # marks with a combining class that are not Mn and so survive the fold (Mc viramas, U+302E)
    unstable = set()
    for cp in range(0x10000):
        c = chr(cp)
        if unicodedata.normalize("NFKC", c) != c:
            unstable.add(c)
        if unicodedata.combining(c) and unicodedata.category(c) != "Mn":
            unstable.add(c)
        d = unicodedata.decomposition(c).split()
        if len(d) == 2 and not d[0].startswith("<") and unicodedata.normalize("NFC", c) == c:
            unstable.add(chr(int(d[1], 16)))
    unstable.update(map(chr, range(0x1161, 0x1176)), map(chr, range(0x11A8, 0x11C3)))
    marks = {chr(cp) for cp in range(0x10000) if unicodedata.combining(chr(cp))}
    return _FoldTables(
        re.compile(_char_class(bmp) + "+"),
        re.compile(_char_class(astral) + "+"),
        re.compile(_char_class(sorted(unstable)) + "+"),
        frozenset(unstable | marks),
    )


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _nfkc(text: str, t: _FoldTables) -> str:
    """unicodedata.normalize("NFKC", text), normalizing only around the characters that need it.
    CPython composes at 100 to 200 ns a character (it looks each one up in a list of ranges), so a
    Japanese message with one full-width "！" cost 40 times what finding that character costs. Text splits safely before any character that NFKC
    keeps and that has combining class 0 (UAX #15's stable code points): each span here runs
    from such a character over the ones that may join it."""
    if unicodedata.is_normalized("NFKC", text):  # at C speed, unless the answer is "maybe"
        return text
    if _ASTRAL.search(text):  # the tables cover the BMP (astral text: emoji, mostly)
        return unicodedata.normalize("NFKC", text)
    out, at, spans, limit = [], 0, 0, len(text) // 32
    for m in t.unstable.finditer(text):
        a, b = m.span()
        if a < at:
            continue  # inside the span just normalized
        spans += 1
        if spans > limit:  # a span costs what some 10-30 characters cost in one pass over all
            return unicodedata.normalize("NFKC", text)
        while a > at and text[a - 1] in t.joining:
            a -= 1
        if a > at:
            a -= 1  # the stable character it may join
        while b < len(text) and text[b] in t.joining:
            b += 1
        out += (text[at:a], unicodedata.normalize("NFKC", text[a:b]))
        at = b
    if not out:
        return text
    out.append(text[at:])
    return "".join(out)


def _fold(text: object) -> str | None:
    """The form search compares: NFKC, full case folding, NFKC, then without nonspacing marks (Mn).
    So "RÉSUMÉ" finds "Résumé" and "STRASSE" "Straße" however the text was typed (composed or
    decomposed); "istanbul" finds "İstanbul" (İ folds to i + U+0307, which goes); "مرحبا" finds
    "مَرْحَبًا" and "שלום" "שָׁלוֹם" (harakat and niqqud are marks most text leaves out); "2024",
    "gpu" and "カタカナ" find the full- and half-width forms Japanese and Chinese input methods
    type (NFKC). A letter whose mark composes with it keeps it, since NFKC composes before the
    marks go: "ano" does not find "año", nor "か" "が".

    Both the needle and the text are folded, and nothing stored depends on it (search folds each
    conversation's texts in memory, _SearchTexts; no column or index holds folded text), so this
    may change without a migration. Registered on the connection as trit_fold() for ad-hoc SQL
    (SQLite's LIKE and lower() fold ASCII only); None (SQL NULL) for anything but text."""
    if not isinstance(text, str):
        return None
    if text.isascii():  # NFKC leaves ASCII as it is, and casefold is lower() there
        return text.lower()
    t = _fold_tables()
    normal = _nfkc(text, t)
    folded = normal.casefold()
    if folded != normal:
        # folding may leave a letter and its mark apart where one character exists: "ΐ" ->
        # "ι" + U+0308 + U+0301, or "T" + U+0308 (no such capital) -> "t" + U+0308 ("ẗ")
        folded = _nfkc(folded, t)
    try:
        folded.encode("latin-1")
        return folded  # no marks below U+0300: most European text
    except UnicodeEncodeError:
        pass
    folded = t.marks.sub("", folded)
    if _ASTRAL.search(folded):
        folded = t.astral_marks.sub("", folded)
    return folded


def caseless(text: str) -> str:
    """The form search compares (_fold): "ÉCOLE" and "école" give the same."""
    return _fold(text) or ""


def _fold_index(text: str, folded: str, j: int) -> int:
    """The index in text of the character folded[j] comes from (folded = _fold(text))."""
    if text.isascii():  # folding ASCII maps each character to one
        return j
    # folding may lengthen (ß -> ss, ﬁ -> fi) and shorten (marks go, e + U+0301 -> é) the text,
    # so equal lengths say nothing: the shortest prefix whose folded form reaches past j
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(_fold(text[: mid + 1]) or "") > j:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _snippet(text: str, needle: str, width: int = 40) -> str:
    folded = _fold(text) or ""
    fneedle = _fold(needle) or ""
    j = folded.find(fneedle) if fneedle else -1
    if j < 0:
        return text[: grapheme_floor(text, 2 * width)].replace("\n", " ")
    i = _fold_index(text, folded, j)
    end = _fold_index(text, folded, j + len(fneedle) - 1) + 1  # the match's end in text
    # never inside a user-perceived character: a letter without its harakat, half a flag
    a, b = grapheme_floor(text, i - width), grapheme_ceil(text, end + width)
    return ("…" if a else "") + text[a:b].replace("\n", " ") + ("…" if b < len(text) else "")


def make_data_folder(folder: Path) -> None:
    """Creates the folder of Trit's data; StoreError when it cannot be (a file in its place, no
    permission, a read-only or full disk)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(
            f"{folder}: cannot create the folder for Trit's conversations and settings: {e.strerror or e}.",
            "Check that the folder can be created there (a file of that name, permissions, a read-only "
            "disk), or start Trit with --data-dir pointing at a folder you may write to.",
        ) from e


def _conversation_of(db: sqlite3.Connection, message_id: int) -> int | None:
    row = db.execute("SELECT conversation_id FROM messages WHERE id = ?", (message_id,)).fetchone()
    return None if row is None else int(row[0])


def _loads(doc: object) -> dict[str, Any]:
    """The JSON object in a cell; {} for anything else. One damaged cell (a BLOB, text nested a
    thousand deep) must not make the conversation unreadable."""
    if not isinstance(doc, str):
        return {}
    try:
        v = json.loads(doc or "{}")
    except (ValueError, RecursionError):
        return {}
    return v if isinstance(v, dict) else {}


# Cells come back as whatever was stored: another tool, a sync conflict or damage quick_check does
# not see can leave a BLOB or text where the schema says a number. They are read as the type the
# dataclasses promise, as salvage does, so export and display never meet a bytes or str "created".
def _text(v: object, default: str = "") -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")  # a message's text is kept, even if mangled
    return default


def _number(v: object, default: float = 0.0) -> float:
    if isinstance(v, (int, float)) and math.isfinite(v):  # SQLite integers fit a float
        return float(v)
    return default


# Lone surrogates: Python decodes a file name or argument that is not UTF-8 with surrogateescape
# ("mod\udce8le.gguf"), and SQLite cannot take such a str (UnicodeEncodeError). Text the user
# reads (titles, prompts, drafts, messages) gets U+FFFD in their place (_clean); a model path is
# kept as the file name's bytes (a BLOB), so that it still opens the same file.
_clean = replace_surrogates


def _path_cell(field: str, path: str) -> str | bytes:
    """path as stored: text, or the bytes of a file name that is not UTF-8."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(path)
    except UnicodeEncodeError as e:  # a surrogate no file name decodes to ("\ud800")
        raise StoreError(
            f"{field} {short_repr(path)} holds a character that is not text and not part of a file "
            "name, and cannot be saved.",
            "Choose the model file again in Models.",
        ) from e


def _path_text(v: object) -> str:
    if isinstance(v, bytes):
        try:
            return os.fsdecode(v)  # the file name's bytes, back to what Python calls that file
        except UnicodeDecodeError:  # written on another system
            return _text(v)
    return _text(v)


def _decode_text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _iso(t: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
    except (OverflowError, OSError, ValueError):  # a time past what the C library can show
        return "unknown date"


# -- damage ----------------------------------------------------------------------------------------
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
_SQLITE_IOERR, _SQLITE_FULL = 10, 13
# extended codes (sqlite3.h) for the WAL index (-shm): SQLite maps it with a write of each 32 KiB
# it grows by, so on a full disk even a read fails with SHMSIZE ("disk I/O error")
_SQLITE_SHM_ERRORS = {4618, 4874, 5386}  # IOERR_SHMOPEN, IOERR_SHMSIZE, IOERR_SHMMAP
# the I/O errors of writes, which a full disk can cause: IOERR itself, _WRITE, _FSYNC,
# _DIR_FSYNC, _TRUNCATE and the -shm's (a failed read, lock or close is something else)
_SQLITE_WRITE_ERRORS = {_SQLITE_IOERR, 778, 1034, 1290, 1546, *_SQLITE_SHM_ERRORS}
_SQLITE_FIXES = {  # primary result code -> what the user can do
    5: "Another program is using the file; close it (or the other Trit window) and try again.",  # BUSY
    6: "Another program is using the file; close it (or the other Trit window) and try again.",  # LOCKED
    8: "Check that you may write to that file and its folder.",  # READONLY
    10: "The disk could not be read or written: check it, then restart Trit.",  # IOERR
    13: "The disk is full: free some space, then try again.",  # FULL
}
_DAMAGE_FIX = (
    "Restart Trit: it keeps the damaged file as a backup and recovers every conversation it can still read."
)
# Below this much free space a failed read or write is put down to the full disk: a commit
# appends a few 4 KiB pages to the WAL and a -shm grows by 32 KiB, so an error with more free
# than this is something else (a failing disk, a full temp folder).
_LOW_SPACE = 1 << 20
# At open, with no error to explain, the disk counts as full below a commit's worth of pages.
_FULL_AT_OPEN = 64 << 10


# Python 3.10's sqlite3 errors carry no result code, only sqlite3_errmsg's text, which for these
# is the primary code's fixed message (sqlite3.c's sqlite3ErrStr): the code is read back from it.
_SQLITE_PRIMARY = {  # code: (name, message)
    5: ("SQLITE_BUSY", "database is locked"),
    6: ("SQLITE_LOCKED", "database table is locked"),
    8: ("SQLITE_READONLY", "attempt to write a readonly database"),
    _SQLITE_IOERR: ("SQLITE_IOERR", "disk i/o error"),
    _SQLITE_CORRUPT: ("SQLITE_CORRUPT", "database disk image is malformed"),
    _SQLITE_FULL: ("SQLITE_FULL", "database or disk is full"),
    _SQLITE_NOTADB: ("SQLITE_NOTADB", "file is not a database"),
}
_SQLITE_MESSAGES = {message: code for code, (_, message) in _SQLITE_PRIMARY.items()}


def _errorcode(e: sqlite3.Error) -> int | None:
    """SQLite's (extended) result code for e; on Python 3.10 the primary code its message names."""
    code = getattr(e, "sqlite_errorcode", None)  # Python 3.11+
    return code if code is not None else _SQLITE_MESSAGES.get(str(e).strip().lower())


def _errorname(e: sqlite3.Error) -> str:
    """SQLite's name for e's result code (SQLITE_IOERR_SHMSIZE); on Python 3.10 the primary code's."""
    name = getattr(e, "sqlite_errorname", None)  # Python 3.11+
    if name:
        return str(name)
    primary = _SQLITE_PRIMARY.get(_errorcode(e))  # type: ignore[arg-type]
    return primary[0] if primary else str(e)


def _message_lost(e: sqlite3.Error) -> bool:
    """Python 3.10 raises a bare DatabaseError, no message and no code, where SQLite's message was not
    UTF-8 (it quotes a damaged schema); 3.11 raises UnicodeDecodeError there."""
    return not e.args and getattr(e, "sqlite_errorcode", None) is None


def _may_be_shm_error(e: sqlite3.Error) -> bool:
    """e may be SQLite failing to make or grow the WAL index (-shm): one of its extended codes, or a
    plain I/O error where Python gives no extended code (3.10)."""
    if getattr(e, "sqlite_errorcode", None) is None:  # Python 3.10
        return _errorcode(e) == _SQLITE_IOERR
    return _errorcode(e) in _SQLITE_SHM_ERRORS


def _is_damage(e: sqlite3.Error) -> bool:
    code = _errorcode(e)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(e).lower()
    return "malformed" in text or "not a database" in text


def _sqlite_fix(e: sqlite3.Error) -> str:
    code = _errorcode(e)
    return _SQLITE_FIXES.get(code & 0xFF if code is not None else -1, "Restart Trit and try again.")


def _free_space(folder: Path) -> int | None:
    """Bytes free to this user on the disk holding folder (None when that cannot be told)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    return f"{n / 1000:.0f} KB" if n < 1_000_000 else f"{n / 1_000_000:.1f} MB"


def _no_room(e: sqlite3.Error, folder: Path) -> int | None:
    """The free space (bytes) when e says SQLite found no room on the disk holding folder, else
    None. SQLite names ENOSPC itself only for the file's own writes (SQLITE_FULL); growing the
    -shm, fsync and truncate report it as a plain I/O error, so for those the disk is asked."""
    code = _errorcode(e)
    if code is None or (code & 0xFF != _SQLITE_FULL and code not in _SQLITE_WRITE_ERRORS):
        return None
    free = _free_space(folder)
    if free is None:  # SQLITE_FULL also means a full temp folder; SHMSIZE is nearly always room
        return 0 if code in (_SQLITE_FULL, 4874) else None
    return free if free < _LOW_SPACE else None


def _file_id(path: str, *, strict: bool = False) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at path; None when there is none or the file system gives no
    inode number (0, as FAT may). strict: OSError is raised instead of giving None."""
    try:
        st = os.stat(path)
    except OSError:
        if strict:
            raise
        return None
    return (st.st_dev, st.st_ino) if st.st_ino else None


def _damage_marker(path: str) -> Path:
    """Left beside the database when damage shows up while it is in use: quick_check does not see
    every kind (an index that disagrees with its table), so the next open recovers on its word."""
    return Path(f"{path}.needs-recovery")


class _SearchTexts:
    """Each conversation's messages in caseless form (_fold), joined, for search: filled on the
    first search (at 100k messages about 40 MB and half a second, once) and dropped for a
    conversation whenever one of its messages is written. Searching the joined texts with str.find
    takes milliseconds where folding every message in SQL took half a second a keystroke."""

    SEP = "\0"  # between messages, so a match never spans two

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._texts: dict[int, tuple[str, list[int], list[int]]] = {}  # id -> (joined, starts, ids)
        self._writes: dict[int, int] = {}  # id -> writes seen: a load that raced a write is not kept

    def drop(self, conversation_id: int) -> None:
        """Call after a write to the conversation's messages has been committed."""
        with self._lock:
            self._texts.pop(conversation_id, None)
            self._writes[conversation_id] = self._writes.get(conversation_id, 0) + 1

    def clear(self) -> None:
        with self._lock:
            for cid in list(self._texts):
                self._writes[cid] = self._writes.get(cid, 0) + 1
            self._texts.clear()

    def find(
        self, conversation_id: int, needle: str, load: Callable[[int], list[tuple[int, str]]]
    ) -> int | None:
        """The id of the conversation's first message whose folded text contains needle."""
        with self._lock:
            entry = self._texts.get(conversation_id)
            seen = self._writes.get(conversation_id, 0)
        if entry is None:
            rows = load(conversation_id)
            ids = [mid for mid, _ in rows]
            texts = [_fold(content) or "" for _, content in rows]
            starts, at = [], 0
            for t in texts:
                starts.append(at)
                at += len(t) + 1
            entry = (self.SEP.join(texts), starts, ids)
            with self._lock:
                if self._writes.get(conversation_id, 0) == seen:
                    self._texts[conversation_id] = entry
        joined, starts, ids = entry
        j = joined.find(needle)
        return None if j < 0 else ids[bisect.bisect_right(starts, j) - 1]


class ConversationStore:
    """Conversations and messages. `path=None` uses default_db_path(); ":memory:" works for tests.

    Attributes: path, schema_version, recovered (ids of messages turned from 'streaming' to
    'stopped' when the store was opened), salvaged (a Salvage when the file was damaged and
    recovered on open, else None), open_warning (a StoreError that did not stop the open: the
    disk is full, so the conversations can be read but nothing new is saved until there is
    room; else None), rescued (a message for each time the file was written again after it was
    deleted while the store was open, oldest first).

    Errors: every method raises StoreError (StoreDamagedError for a damaged file, StoreFullError
    for a full disk, StoreMovedError for a file replaced while open) rather than sqlite3's own;
    NotFoundError for an unknown id."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        on_salvage: Callable[[], None] | None = None,
        on_rescue: Callable[[str], None] | None = None,
    ) -> None:
        """on_salvage: called once before a damaged file is recovered (seconds for a large one),
        so that an app can say so first. on_rescue: called with the message added to `rescued`,
        on the thread whose write found the file gone (also settable later as an attribute)."""
        self.path: str = str(default_db_path() if path is None else path)
        if self.path != ":memory:":
            make_data_folder(Path(self.path).parent)
        self._lock = threading.RLock()
        self._search_texts = _SearchTexts()
        self._data_version = -1  # PRAGMA data_version when the search texts were last checked
        self.salvaged: Salvage | None = None
        self.open_warning: StoreFullError | None = None
        self.rescued: list[str] = []
        self._closed = False
        self.on_rescue = on_rescue
        self._exclusive = False  # the WAL index is in this process's memory (see _open)
        self._file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        self._replaced: StoreMovedError | None = None  # raised by every write once the file was replaced
        self._wal_id: tuple[int, int] | None = None  # the same of its -wal
        try:
            self._open()
        except StoreDamagedError as e:  # the connection is still open: see salvage_database
            if self.path == ":memory:":
                self._db.close()
                raise
            from .salvage import salvage_database

            reason = str(e.__cause__ or e.message)
            if on_salvage is not None:
                on_salvage()
            try:
                self.salvaged = salvage_database(self.path, reason, release=self._db.close)
                _damage_marker(self.path).unlink(missing_ok=True)
            except (OSError, sqlite3.Error) as oe:  # a full disk, a folder we may not write to
                self._db.close()
                raise StoreError(
                    f"{self.path}: the conversation database is damaged ({reason}) and could not be "
                    f"recovered: {getattr(oe, 'strerror', None) or oe}.",
                    "Free some disk space or make the folder writable, then start Trit again.",
                ) from oe
            try:
                self._open()
            except StoreDamagedError:
                self._db.close()
                raise

    def _open(self) -> None:
        """_open_once; where the WAL index (-shm) cannot be made, again with it in memory."""
        full = False  # the -shm could not be made for want of room
        try:
            self._open_once(exclusive=False)
        except StoreDamagedError:
            raise
        except StoreError as e:
            cause = e.__cause__
            if not isinstance(cause, sqlite3.Error) or not _may_be_shm_error(cause):
                raise
            # On a full disk SQLite cannot grow the -shm it maps the WAL index from, and fails even
            # reads. In EXCLUSIVE locking mode, set before the first read, it keeps the index in
            # this process's memory and never opens the -shm: the conversations can be read, and
            # saved again as soon as there is room, without a restart. A read-only open (mode=ro)
            # would refuse those saves until a restart, and leaving WAL needs the index first. The
            # price: no other process can open the file while this one has it, which the app's
            # one-window-per-folder lock already means.
            self._open_once(exclusive=True)
            full = _no_room(cause, Path(self.path).parent) is not None
        if self.path != ":memory:":
            folder = Path(self.path).parent
            free = _free_space(folder)
            if free is not None and (full or free < _FULL_AT_OPEN):
                self.open_warning = StoreFullError(
                    f"{folder}: the disk holding Trit's conversations is full ({_size(free)} free).",
                    "They can be read, but new messages and changes are not saved until there is room: "
                    "free some space on that disk.",
                    folder=str(folder),
                    free=free,
                )

    def _open_once(self, *, exclusive: bool) -> None:
        self._db = self._new_connection(self.path)
        try:
            self._set_up(exclusive=exclusive)
            if self.path != ":memory:":
                # reads every page (about 0.1 s for 60 MB): damage is found now, not in the
                # middle of a session
                problem = str(self._db.execute("PRAGMA quick_check(1)").fetchone()[0])
                if problem != "ok":
                    raise StoreDamagedError(problem.replace("*** in database main ***\n", "").strip())
                if _damage_marker(self.path).exists():
                    raise StoreDamagedError("damage was found while Trit was running")
            self.schema_version = self._migrate()
            self.recovered = self._recover_streaming()
        except UnicodeDecodeError:
            # SQLite quotes a damaged schema in its error ("malformed database schema (CR\xc5ATE
            # ...)"), and Python fails to decode that message before any sqlite3 error is raised.
            # Like quick_check's, the message is the reason salvage reports.
            raise StoreDamagedError("the database schema is not valid text") from None
        except sqlite3.DatabaseError as e:
            if _message_lost(e):  # the same on Python 3.10
                raise StoreDamagedError("the database schema is not valid text") from None
            error = self._error(e)
            if not isinstance(error, StoreDamagedError):
                self._db.close()
            raise error from e
        except StoreDamagedError:
            raise  # left open until salvage_database has copied the file and its WAL
        except BaseException:
            self._db.close()
            raise

    def _new_connection(self, path: str) -> sqlite3.Connection:
        try:
            # autocommit (isolation_level=None): we open transactions ourselves, and every single
            # statement outside one is committed at once (that is what makes a flush durable).
            return sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        except sqlite3.Error as e:
            raise StoreError(
                f"{path}: cannot open the conversation database: {e}.",
                "Check that the file is not a folder and that you may write to it.",
            ) from e

    def _set_up(self, *, exclusive: bool) -> None:
        """Sets self._db up as every connection of the store is (no check, no write)."""
        # text that is not UTF-8 (written by another program, or a flipped bit) is read with
        # U+FFFD in place of the bad bytes: sqlite3's default refuses the whole row, and with it
        # the conversation
        self._db.text_factory = _decode_text
        self._db.create_function("trit_fold", 1, _fold, deterministic=True)
        self._db.execute("PRAGMA foreign_keys = ON")
        if self.path == ":memory:":
            return
        if exclusive:
            self._db.execute("PRAGMA locking_mode = EXCLUSIVE")
        self._db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a killed process loses nothing committed; only a power cut may
        # lose the last transactions (never corrupts). FULL would fsync every flush.
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._exclusive = exclusive
        self._file_id = _file_id(self.path)
        self._db.execute("PRAGMA schema_version").fetchone()  # a read: SQLite opens the -wal
        self._wal_id = _file_id(f"{self.path}-wal")

    def _error(self, e: sqlite3.DatabaseError) -> StoreError:
        """The StoreError for a failed SQLite call; damage also leaves the marker for the next open."""
        if _is_damage(e):
            if self.path != ":memory:":
                try:
                    _damage_marker(self.path).touch()
                except OSError:
                    pass  # quick_check will most likely see it anyway
            return StoreDamagedError(f"{self.path}: the conversation database is damaged ({e}).", _DAMAGE_FIX)
        if self.path != ":memory:":
            folder = Path(self.path).parent
            free = _no_room(e, folder)
            if free is not None:
                return StoreFullError(
                    f"{self.path}: cannot read or write the conversation database: the disk holding "
                    f"{folder} is full ({_size(free)} free; {_errorname(e)}).",
                    "Free some space on that disk, then try again.",
                    folder=str(folder),
                    free=free,
                )
        return StoreError(
            f"{self.path}: cannot read or write the conversation database ({e}).", _sqlite_fix(e)
        )

    @contextmanager
    def _using(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; SQLite's errors leave as StoreError. Errors of our own
        making (a closed store, a constraint) stay what they are. write: the file is checked to
        still be the one opened first (_check_file)."""
        with self._lock:
            if write:
                self._check_file()
            try:
                yield self._db
            except (sqlite3.ProgrammingError, sqlite3.IntegrityError):
                raise
            except sqlite3.DatabaseError as e:
                raise self._error(e) from e

    # -- the file deleted or replaced while open ---------------------------------------------------
    # SQLite keeps writing into an open file that was deleted (a cleaner emptying the data folder,
    # the user moving it away), and everything saved after that is lost when Trit closes. Each
    # write first asks whether the path still names the file opened: a stat is about a
    # microsecond, a commit tens of them, so every write asks (a reply flushes twice a second).
    def _check_file(self) -> None:
        if self._replaced is not None:
            raise self._replaced
        if self._file_id is None:
            return  # :memory:, or a file system that could not say
        try:
            now = _file_id(self.path, strict=True)
        except (FileNotFoundError, NotADirectoryError):
            now = None
        except OSError:
            return  # cannot tell (no permission to the folder): the write itself will say
        if now == self._file_id:
            return
        if now is None:
            self._rescue()
        else:
            self._keep_aside()

    def _copy_to_temp(self, folder: Path, prefix: str) -> Path:
        """Everything the connection holds (its file, deleted or not, and its WAL) into a new
        database file in folder, through SQLite's backup API."""
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".partial", dir=folder)
        os.close(fd)
        tmp = Path(name)
        try:
            dest = sqlite3.connect(tmp)
            try:
                self._db.backup(dest)
            finally:
                dest.close()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _rescue(self) -> None:
        """The file is gone: the open connection still holds every conversation, so they are
        written to a new file at the path (its folder made again) and the store goes on there."""
        path, folder = Path(self.path), Path(self.path).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = self._copy_to_temp(folder, f".{path.name}.rescue-")
        except (OSError, sqlite3.Error) as e:
            raise StoreMovedError(
                f"{path}: the conversation file was deleted or moved while Trit ran, and could not be "
                f"written again: {getattr(e, 'strerror', None) or e}.",
                "Trit still holds every conversation until it is closed: keep it open, make room on the "
                f"disk or make {folder} writable, then try again.",
            ) from e
        # the old connection goes first. SQLite sees its file moved and closes it without a
        # checkpoint, leaving the -wal and -shm; where only the file was deleted they are still at
        # the path, and the new file must not find them and take their pages for its own
        self._db.close()
        for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
        try:
            os.replace(tmp, path)
            self._db = self._new_connection(self.path)
            self._set_up(exclusive=self._exclusive)
        except (OSError, sqlite3.Error, StoreError) as e:
            # reads go on from the copy; writes fail (they would go where no Trit looks)
            self._db = self._new_connection(str(tmp))
            self._db.text_factory = _decode_text
            self._db.create_function("trit_fold", 1, _fold, deterministic=True)
            self._file_id = None
            self._replaced = StoreMovedError(
                f"{path}: the conversation file was deleted or moved while Trit ran; its "
                f"conversations are kept in {tmp}, but it could not be put back in its place: "
                f"{getattr(e, 'strerror', None) or e}.",
                f"Quit Trit, then rename {tmp} to {path}.",
                kept=str(tmp),
            )
            raise self._replaced from e
        self._data_version = -1
        message = (
            f"{path} was deleted or moved while Trit ran. Trit wrote it again from the conversations "
            "it had open, and goes on saving there."
        )
        self.rescued.append(message)
        if self.on_rescue is not None:
            self.on_rescue(message)

    def _keep_aside(self) -> None:
        """Another file took the path: it is not written over (it may be a backup the user put
        back). What this store holds is kept beside it, and every write from now on fails."""
        path = Path(self.path)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        try:
            tmp = self._copy_to_temp(path.parent, f".{path.name}.kept-")
            kept = path.with_name(f"{path.stem}.kept-{stamp}{path.suffix}")
            n = 1
            while kept.exists():
                n += 1
                kept = path.with_name(f"{path.stem}.kept-{stamp}-{n}{path.suffix}")
            os.replace(tmp, kept)
            # this store's -wal is still there when only the file was replaced, and whoever opens
            # the new file would take its pages for the new file's own (SQLite checks no more):
            # it goes, with the -shm. The connection keeps reading through its open handles, and
            # closes without a checkpoint (SQLite sees the file moved).
            if self._wal_id is not None and _file_id(f"{path}-wal") == self._wal_id:
                Path(f"{path}-wal").unlink()
                Path(f"{path}-shm").unlink(missing_ok=True)
        except (OSError, sqlite3.Error) as e:
            raise StoreMovedError(
                f"{path}: the conversation file was replaced by another file while Trit ran, and what "
                f"this window holds could not be saved beside it: {getattr(e, 'strerror', None) or e}.",
                "Keep Trit open, make room on the disk or make the folder writable, then try again.",
            ) from e
        self._replaced = StoreMovedError(
            f"{path}: the conversation file was replaced by another file while Trit ran. Nothing is "
            f"saved into the new file; what this window held is kept as {kept}.",
            f"Restart Trit to open the new file. To go back to this window's conversations, quit Trit "
            f"and rename {kept.name} to {path.name}.",
            kept=str(kept),
        )
        raise self._replaced

    def _migrate(self) -> int:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version < 0:  # no Trit writes one: a flipped bit in the header, or another program
            raise StoreDamagedError(f"the schema version is {version}, which no Trit writes")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: the conversations were saved by a newer Trit (schema {version}, this "
                f"version reads up to {SCHEMA_VERSION}). Update Trit to open them."
            )
        if 0 < version < SCHEMA_VERSION and self.path != ":memory:":
            # keep the old file until the user has run the new version once; written fresh beside
            # it and renamed into place, so a leftover .bak (a copy cut short, another program's
            # file) is replaced, not opened as a database, which failed as damage of this one
            bak = f"{self.path}.v{version}.bak"
            partial = Path(f"{bak}.partial")
            partial.unlink(missing_ok=True)
            backup = sqlite3.connect(partial)
            try:
                self._db.backup(backup)
            finally:
                backup.close()
            os.replace(partial, bak)
        while version < SCHEMA_VERSION:
            with self._transaction():
                MIGRATIONS[version](self._db)
                version += 1
                self._db.execute(f"PRAGMA user_version = {version}")
        return version

    def _recover_streaming(self) -> list[int]:
        try:
            with self._transaction():
                ids = [
                    r[0] for r in self._db.execute("SELECT id FROM messages WHERE status = ?", (STREAMING,))
                ]
                self._db.execute("UPDATE messages SET status = ? WHERE status = ?", (STOPPED, STREAMING))
        except StoreError as e:
            cause = e.__cause__
            if isinstance(cause, sqlite3.Error) and _no_room(cause, Path(self.path).parent) is not None:
                return []  # a full disk: they are read as they are, and turned at the next start
            raise
        return ids

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._using(write=True) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back itself (disk full, damage)
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def ensure_saved(self) -> None:
        """Checks that the file opened is still at the path, as every write does: when it was
        deleted (the data folder too), it is written again from the open connection; when another
        file took its place, this store's data is saved beside it. Raises StoreMovedError when
        neither could be done (everything stays readable until close). A window calls it before
        it closes, when it can still ask; close() tries it too."""
        with self._lock:
            if not self._closed:
                self._check_file()

    def close(self) -> None:
        """Closes the connection. A file deleted since the last write is written again first (a
        store that was only read from would otherwise take every conversation with it); where
        that fails, what the StoreMovedError said goes to the log, as nothing is left to show it."""
        with self._lock:
            if self._closed:
                return
            try:
                self._check_file()
            except StoreError as e:
                log.warning("%s %s", e.message, e.fix)
            self._closed = True
            self._db.close()

    def __enter__(self) -> ConversationStore:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rows --------------------------------------------------------------------------------------
    def _conv(self, row: tuple[Any, ...]) -> Conversation:
        try:
            sampling = Sampling.from_dict(_loads(row[6]))
        except ValueError:
            sampling = Sampling()  # a damaged cell falls back to defaults rather than hiding the chat
        created = _number(row[2])
        return Conversation(
            row[0],
            _text(row[1], "Untitled chat"),
            created,
            _number(row[3], created),
            _text(row[4]),
            _path_text(row[5]),
            sampling,
            None if row[7] is None else _number(row[7], time.time()),  # deleted stays deleted
        )

    def _msg(self, row: tuple[Any, ...]) -> Message:
        return Message(
            row[0],
            row[1],
            row[2] if row[2] in ROLES else "assistant",
            _text(row[3]),
            _number(row[4]),
            row[5] if row[5] in STATUSES else STOPPED,
            _loads(row[6]),
        )

    def _one(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        with self._using() as db:
            return db.execute(sql, args).fetchone()  # type: ignore[no-any-return]

    # -- conversations -----------------------------------------------------------------------------
    def create_conversation(
        self,
        title: str = "New chat",
        *,
        system_prompt: str = "",
        model_id: str = "",
        sampling: Sampling | None = None,
    ) -> Conversation:
        s = (sampling or Sampling()).validated()
        now = time.time()
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO conversations (title, created, updated, system_prompt, model_id, sampling)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    _clean(title),
                    now,
                    now,
                    _clean(system_prompt),
                    _path_cell("model_id", model_id),
                    json.dumps(s.to_dict()),
                ),
            )
            cid = int(cur.lastrowid or 0)
        self._search_texts.drop(cid)  # the id of a conversation deleted outside purge_deleted
        return self.get_conversation(cid)

    def get_conversation(self, conversation_id: int) -> Conversation:
        """Raises NotFoundError (also for a purged one; a soft-deleted one is returned)."""
        row = self._one(f"SELECT {_CONV_COLS} FROM conversations WHERE id = ?", (conversation_id,))
        if row is None:
            raise NotFoundError("conversation", conversation_id)
        return self._conv(row)

    def list_conversations(self, *, deleted: bool = False) -> list[Conversation]:
        """Live conversations, most recently updated first (deleted=True: the soft-deleted ones)."""
        where = "deleted IS NOT NULL" if deleted else "deleted IS NULL"
        with self._using() as db:
            rows = db.execute(
                f"SELECT {_CONV_COLS} FROM conversations WHERE {where} ORDER BY updated DESC, id DESC"
            ).fetchall()
        return [self._conv(r) for r in rows]

    def _set(self, conversation_id: int, **cols: Any) -> Conversation:
        sets = ", ".join(f"{k} = ?" for k in cols)
        with self._transaction() as db:
            cur = db.execute(
                f"UPDATE conversations SET {sets} WHERE id = ?", (*cols.values(), conversation_id)
            )
            if cur.rowcount == 0:
                raise NotFoundError("conversation", conversation_id)
        return self.get_conversation(conversation_id)

    def rename_conversation(self, conversation_id: int, title: str) -> Conversation:
        return self._set(conversation_id, title=_clean(title))

    def update_conversation(
        self,
        conversation_id: int,
        *,
        system_prompt: str | None = None,
        model_id: str | None = None,
        sampling: Sampling | None = None,
    ) -> Conversation:
        """Changes the given fields only."""
        cols: dict[str, Any] = {}
        if system_prompt is not None:
            cols["system_prompt"] = _clean(system_prompt)
        if model_id is not None:
            cols["model_id"] = _path_cell("model_id", model_id)
        if sampling is not None:
            cols["sampling"] = json.dumps(sampling.validated().to_dict())
        if not cols:
            return self.get_conversation(conversation_id)
        return self._set(conversation_id, **cols)

    def delete_conversation(self, conversation_id: int) -> None:
        """Soft delete: hidden from list/search until restore_conversation() or purge_deleted()."""
        self._set(conversation_id, deleted=time.time())

    def restore_conversation(self, conversation_id: int) -> Conversation:
        """Undo of delete_conversation()."""
        return self._set(conversation_id, deleted=None)

    def purge_deleted(self, older_than_s: float = 0.0) -> int:
        """Removes soft-deleted conversations (and their messages) deleted at least older_than_s
        seconds ago; returns how many were removed."""
        cutoff = time.time() - older_than_s
        with self._transaction() as db:
            cur = db.execute(
                "DELETE FROM conversations WHERE deleted IS NOT NULL AND deleted <= ?", (cutoff,)
            )
        self._search_texts.clear()  # a purged conversation's id may be given to a new one
        return int(cur.rowcount)

    # -- what the window had open ---------------------------------------------------------------
    def set_draft(self, conversation_id: int, text: str) -> None:
        """The text typed but not sent (kept when the window closes; does not count as an update)."""
        with self._using(write=True) as db:
            db.execute("UPDATE conversations SET draft = ? WHERE id = ?", (_clean(text), conversation_id))

    def draft(self, conversation_id: int) -> str:
        row = self._one("SELECT draft FROM conversations WHERE id = ?", (conversation_id,))
        return str(row[0]) if row is not None and isinstance(row[0], str) else ""

    def mark_viewed(self, conversation_id: int) -> None:
        with self._using(write=True) as db:
            db.execute("UPDATE conversations SET viewed = ? WHERE id = ?", (time.time(), conversation_id))

    def last_viewed(self) -> int | None:
        """The live conversation shown most recently (None when none was)."""
        row = self._one(
            "SELECT id FROM conversations WHERE deleted IS NULL AND viewed IS NOT NULL "
            "ORDER BY viewed DESC, id DESC LIMIT 1",
            (),
        )
        return None if row is None else int(row[0])

    def search(self, text: str, *, limit: int = 100) -> list[SearchHit]:
        """Live conversations whose title or any message contains text, ignoring case in every
        script (see _fold), most recently updated first; one hit per conversation."""
        text = _clean(text)  # as the texts were stored
        needle = (_fold(text) or "").replace(_SearchTexts.SEP, "")
        if not needle:
            return []
        with self._using() as db:
            # another process (a second window on the same folder) committed since the last search:
            # its writes are not seen by drop(), so every text read before may be stale
            version = int(db.execute("PRAGMA data_version").fetchone()[0])
            if version != self._data_version:
                self._search_texts.clear()
                self._data_version = version
            live = db.execute(
                "SELECT id, title FROM conversations WHERE deleted IS NULL ORDER BY updated DESC, id DESC"
            ).fetchall()
        hits = []
        for cid, title in live:
            mid = None
            if needle not in (_fold(_text(title)) or ""):
                mid = self._search_texts.find(cid, needle, self._message_texts)
                if mid is None:
                    continue
            try:  # only the hits become Conversations (parsing every row's settings cost more than the search)
                conv = self.get_conversation(cid)
                row = None if mid is None else self._one("SELECT content FROM messages WHERE id = ?", (mid,))
            except NotFoundError:  # deleted since the list was read
                continue
            if mid is None:
                hits.append(SearchHit(conv, None, _snippet(conv.title, text)))
            elif row is not None:
                hits.append(SearchHit(conv, mid, _snippet(_text(row[0]), text)))
            if len(hits) >= limit:
                break
        return hits

    def _message_texts(self, conversation_id: int) -> list[tuple[int, str]]:
        with self._using() as db:
            return [
                (int(r[0]), _text(r[1]))
                for r in db.execute(
                    "SELECT id, content FROM messages WHERE conversation_id = ? ORDER BY id",
                    (conversation_id,),
                )
            ]

    # -- messages ----------------------------------------------------------------------------------
    def messages(self, conversation_id: int) -> list[Message]:
        """The conversation's messages in order."""
        with self._using() as db:
            rows = db.execute(
                f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            ).fetchall()
        return [self._msg(r) for r in rows]

    def get_message(self, message_id: int) -> Message:
        row = self._one(f"SELECT {_MSG_COLS} FROM messages WHERE id = ?", (message_id,))
        if row is None:
            raise NotFoundError("message", message_id)
        return self._msg(row)

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        status: str = COMPLETE,
        stats: dict[str, Any] | None = None,
    ) -> Message:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        now = time.time()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)).fetchone() is None:
                raise NotFoundError("conversation", conversation_id)
            cur = db.execute(
                "INSERT INTO messages (conversation_id, role, content, created, status, stats)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (conversation_id, role, _clean(content), now, status, json.dumps(stats or {})),
            )
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
            mid = int(cur.lastrowid or 0)
        self._search_texts.drop(conversation_id)
        return self.get_message(mid)

    def _update_message(self, message_id: int, **cols: Any) -> Message:
        if "content" in cols:
            cols["content"] = _clean(cols["content"])
        sets = ", ".join(f"{k} = ?" for k in cols)
        with self._transaction() as db:
            cid = _conversation_of(db, message_id)
            cur = db.execute(f"UPDATE messages SET {sets} WHERE id = ?", (*cols.values(), message_id))
            if cid is None or cur.rowcount == 0:
                raise NotFoundError("message", message_id)
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), cid))
        if "content" in cols:
            self._search_texts.drop(cid)
        return self.get_message(message_id)

    def edit_message(self, message_id: int, content: str) -> Message:
        """Replaces a message's text (stats and status unchanged). For edit-and-resend, call
        truncate_after(message_id) too, then generate a new reply."""
        return self._update_message(message_id, content=content)

    def set_stats(self, message_id: int, stats: dict[str, Any]) -> Message:
        return self._update_message(message_id, stats=json.dumps(stats))

    def delete_message(self, message_id: int) -> None:
        with self._transaction() as db:
            cid = _conversation_of(db, message_id)
            if cid is None or db.execute("DELETE FROM messages WHERE id = ?", (message_id,)).rowcount == 0:
                raise NotFoundError("message", message_id)
        self._search_texts.drop(cid)

    def truncate_after(self, message_id: int) -> int:
        """Deletes every message after message_id in its conversation; returns how many."""
        with self._transaction() as db:
            row = db.execute("SELECT conversation_id FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                raise NotFoundError("message", message_id)
            cur = db.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND id > ?", (row[0], message_id)
            )
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), row[0]))
        self._search_texts.drop(int(row[0]))
        return int(cur.rowcount)

    def begin_reply(
        self,
        conversation_id: int,
        *,
        role: str = "assistant",
        flush_interval: float = 0.5,
        flush_chars: int = 2000,
    ) -> ReplyWriter:
        """Adds an empty 'streaming' message and returns the writer that fills it."""
        msg = self.add_message(conversation_id, role, "", status=STREAMING)
        return ReplyWriter(self, msg.id, flush_interval=flush_interval, flush_chars=flush_chars)

    def _write_reply(self, message_id: int, content: str) -> None:
        # one statement on one row, committed at once (autocommit): no rewrite of the conversation
        with self._using(write=True) as db:
            cur = db.execute(
                "UPDATE messages SET content = ? WHERE id = ? AND status = ?",
                (_clean(content), message_id, STREAMING),
            )
            cid = _conversation_of(db, message_id) if cur.rowcount else None
        if cid is not None:
            self._search_texts.drop(cid)

    # -- export ------------------------------------------------------------------------------------
    def export_dict(self, conversation_id: int) -> dict[str, Any]:
        c = self.get_conversation(conversation_id)
        return {
            "format": "trit-conversation",
            "version": 1,
            "conversation": {
                "id": c.id,
                "title": c.title,
                "created": c.created,
                "updated": c.updated,
                "system_prompt": c.system_prompt,
                "model_id": c.model_id,
                "sampling": c.sampling.to_dict(),
            },
            "messages": [
                {
                    "id": m.id,
                    "role": m.role,
                    "content": m.content,
                    "created": m.created,
                    "status": m.status,
                    "stats": m.stats,
                }
                for m in self.messages(conversation_id)
            ],
        }

    def export_json(self, conversation_id: int) -> str:
        """{"format": "trit-conversation", "version": 1, "conversation": {...}, "messages": [...]}"""
        text = json.dumps(self.export_dict(conversation_id), ensure_ascii=False, indent=2) + "\n"
        # a model path that is not UTF-8 (or a stats value naming one) as JSON escapes, which
        # read back to the same str: raw, the text could not be written as UTF-8
        return SURROGATES.sub(lambda m: f"\\u{ord(m.group()):04x}", text)

    def export_markdown(self, conversation_id: int) -> str:
        """The conversation for people to read. Its structure (the title, a "## Role" heading per
        message, the stats under a reply) is the export's own: each body is a fenced block no line
        of it can close (_md_block), and the one-line fields are escaped (_md_inline), so a reply
        cannot add a "## User" turn, HTML or a stats line. Control characters show as escapes;
        the JSON export keeps every text exactly."""
        c = self.get_conversation(conversation_id)
        out = [f"# {_md_inline(c.title)}", ""]
        meta = [f"- Created: {_iso(c.created)}"]
        if c.model_id:
            meta.append(f"- Model: {_md_inline(c.model_id)}")
        s = c.sampling
        meta.append(
            f"- Sampling: temperature {s.temperature:g}, top_p {s.top_p:g}, max_tokens {s.max_tokens}"
        )
        out += [*meta, ""]
        if c.system_prompt:
            out += ["## System", "", *_md_block(c.system_prompt), ""]
        current = Path(c.model_id).name if c.model_id else ""
        for m in self.messages(conversation_id):
            out += [f"## {m.role.capitalize()}", "", *_md_block(m.content), ""]
            if m.status != COMPLETE:
                out += [f"*({m.status})*", ""]
            summary = m.stats.get("summary") if m.stats else None
            if isinstance(summary, str) and summary:
                # the model that wrote it, where it is not the one the conversation names now
                model = m.stats.get("model")
                by = (
                    f" · {_md_inline(model)}" if isinstance(model, str) and model and model != current else ""
                )
                out += [f"<sub>{_md_inline(summary)}{by}</sub>", ""]
        return _clean("\n".join(out).rstrip("\n") + "\n")  # a path that is not UTF-8 shows U+FFFD


# C0 and C1 controls but \t and \n (a lone \r ends a Markdown line as \n does), DEL, bidi
# embeddings, overrides and isolates (they reorder what is shown) and invisible spaces (U+200B,
# U+2060, U+FEFF). ZWJ and ZWNJ stay: emoji sequences and several scripts need them.
_HIDDEN_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u202a-\u202e\u2060\u2066-\u2069\ufeff]")
# what has a meaning in a line of Markdown or HTML; a backslash before ASCII punctuation shows it as is
_MD_INLINE_SPECIAL = re.compile(r"([\\`*_\[\]<>&#~|!])")


def _visible(text: str) -> str:
    """text with the characters of _HIDDEN_CHARS shown as escapes (ESC -> \\x1b, U+200B -> \\u200b)."""
    text = text.replace("\r\n", "\n")  # pasted from Windows: a line end, not a character to show
    return _HIDDEN_CHARS.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
        text,
    )


def _md_block(text: str) -> list[str]:
    """A message body as a fenced code block: its fence is longer than any run of backticks in it,
    so no line of it closes the block, and inside it nothing is Markdown or HTML ("## User",
    "<h2>", "<!--" and an unclosed ``` all show as the text they are). Escaping only the lines
    that start with # or ---/=== would let HTML and unclosed fences through, and catching those
    needs a Markdown parser's view of code spans; the body shows as its Markdown source instead,
    which reads well as plain text and is exactly what was written."""
    body = _visible(text)
    fence = "`" * max(3, max(map(len, re.findall("`+", body)), default=0) + 1)
    return [fence, body, fence]


def _md_inline(text: str) -> str:
    """Text for one line of the export (a title, a model path, a stats summary): on one line, with
    hidden characters shown as escapes and Markdown's and HTML's characters escaped."""
    return _MD_INLINE_SPECIAL.sub(r"\\\1", " ".join(_visible(text).split("\n")))


class ReplyWriter:
    """Streams one reply into the store. append() may be called from the engine worker thread for
    every piece of text; it only touches SQLite when flush_interval seconds have passed since the
    last flush or flush_chars characters are pending. finish()/stop() write the final text once.
    Appends after finish()/stop() are ignored (a token may race with the user's Stop).

    Attributes: message_id, text (everything appended so far), closed, flushes (count)."""

    def __init__(
        self,
        store: ConversationStore,
        message_id: int,
        *,
        flush_interval: float = 0.5,
        flush_chars: int = 2000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.message_id = message_id
        self.flush_interval = flush_interval
        self.flush_chars = flush_chars
        self._clock = clock
        self._parts: list[str] = []
        self._pending = 0
        self._last = clock()
        self._lock = threading.Lock()
        self.closed = False
        self.flushes = 0

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self._parts)

    def append(self, piece: str) -> None:
        if not piece:
            return
        with self._lock:
            if self.closed:
                return
            self._parts.append(piece)
            self._pending += len(piece)
            due = self._pending >= self.flush_chars or self._clock() - self._last >= self.flush_interval
            if due:
                self._flush_locked()

    def _flush_locked(self) -> None:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]  # keeps the join O(total) over the reply
        self.store._write_reply(self.message_id, self._parts[0] if self._parts else "")
        self._pending = 0
        self._last = self._clock()
        self.flushes += 1

    def flush(self) -> None:
        """Writes the text appended so far (one UPDATE of this message's row)."""
        with self._lock:
            if not self.closed:
                self._flush_locked()

    def _close(self, status: str, stats: dict[str, Any] | None) -> Message:
        with self._lock:
            if self.closed:
                return self.store.get_message(self.message_id)
            self.closed = True
            text = "".join(self._parts)
        cols: dict[str, Any] = {"content": text, "status": status}
        if stats is not None:
            cols["stats"] = json.dumps(stats)
        return self.store._update_message(self.message_id, **cols)

    def finish(self, stats: dict[str, Any] | None = None) -> Message:
        """Marks the reply complete with its stats."""
        return self._close(COMPLETE, stats)

    def stop(self, stats: dict[str, Any] | None = None) -> Message:
        """Marks the reply stopped (the user pressed Stop, or generation failed)."""
        return self._close(STOPPED, stats)


__all__ = [
    "COMPLETE",
    "MIGRATIONS",
    "ROLES",
    "SCHEMA_VERSION",
    "STATUSES",
    "STOPPED",
    "STREAMING",
    "Conversation",
    "ConversationStore",
    "Message",
    "NotFoundError",
    "ReplyWriter",
    "SearchHit",
    "StoreDamagedError",
    "StoreError",
    "StoreFullError",
    "StoreMovedError",
    "caseless",
    "default_db_path",
    "make_data_folder",
]
