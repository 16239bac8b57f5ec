"""Recovering a damaged conversation database (used by ConversationStore when it opens one).

The damaged file is kept byte for byte as conversations.damaged-<time>.sqlite3 (with its WAL) and
a fresh database gets every conversation and message that can still be read, ids kept. Reading
goes two ways:

1. Through SQLite, row by row: a scan in id order stops at the first damaged page, a scan in
   reverse order reads what lies after the last one, and the ids between are looked up one by one.
   This reads everything the b-tree still reaches.
2. When that met damage: the file's pages themselves. Every table leaf page (the SQLite file
   format, https://www.sqlite.org/fileformat2.html) is parsed for records shaped like a
   conversation or a message. This finds the rows under a damaged interior page (the root of the
   messages table is one: one bad page there would hide every message from SQLite) and the rows
   of a file whose first page (the schema) is gone. Pages on the freelist are skipped, so purged
   conversations do not come back, and the WAL is first copied into the file (a checkpoint of
   the scratch copy), so no page is read in an outdated version.

Cells that come back with the wrong type get defaults; messages whose conversation row is lost are
kept under a new "Recovered chat <id>".
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import store as _store

Row = tuple[Any, ...]
# what reading a damaged file through SQLite raises: its own errors, and UnicodeDecodeError when
# SQLite's message quotes a damaged schema (invalid UTF-8) that Python cannot decode
_READ_ERRORS = (sqlite3.DatabaseError, UnicodeDecodeError)


@dataclass(frozen=True)
class Salvage:
    """What opening a damaged database recovered. The damaged file is kept unchanged at `backup`
    (its WAL, if it had one, at backup + "-wal"); the store runs on a fresh database holding
    `conversations` conversations and `messages` messages read from it."""

    backup: Path
    reason: str  # what SQLite reported
    conversations: int
    messages: int
    untitled: int = 0  # conversations rebuilt from their messages: title and settings were lost
    # what an index still listed but could not be read (lower bounds: not every loss is listed)
    lost_conversations: int = 0
    lost_messages: int = 0

    def message(self) -> str:
        """One paragraph for the user."""
        if not self.conversations:
            return (
                f"The conversation history was damaged ({self.reason}) and nothing in it could be "
                f"read, so Trit starts with an empty history. The damaged file is kept unchanged as "
                f"{self.backup}."
            )

        def n(k: int, what: str) -> str:
            return f"{k} {what}{'s' if k != 1 else ''}"

        out = (
            f"The conversation history was damaged ({self.reason}). Trit recovered "
            f"{n(self.conversations, 'conversation')} ({n(self.messages, 'message')}) into a new file."
        )
        if self.untitled:
            out += f" {n(self.untitled, 'conversation')} lost the title and settings: see “Recovered chat …”."
        lost = [
            n(k, w)
            for k, w in ((self.lost_conversations, "conversation"), (self.lost_messages, "message"))
            if k
        ]
        if lost:
            out += f" At least {' and '.join(lost)} could not be read."
        return out + f" The damaged file is kept unchanged as {self.backup}."


# -- 1. through SQLite ---------------------------------------------------------------------------
# Beyond the last id a scan saw, ids are still probed this far: rows after a damaged region that no
# reverse scan reached. The probe count is capped so garbage ids cannot make salvage run for ever.
_PROBE_PAST = 1000
_MAX_PROBES = 2_000_000


def _scan(db: sqlite3.Connection, sql: str, rows: dict[int, Row]) -> bool:
    """Adds the rows sql yields (id first) until it ends or hits damage; True when it ended."""
    try:
        for r in db.execute(sql):
            if isinstance(r[0], int):
                rows[r[0]] = r
    except _READ_ERRORS:
        return False
    return True


def _read_table(
    db: sqlite3.Connection, table: str, cols: list[str], id_queries: list[str]
) -> tuple[dict[int, Row], set[int], bool]:
    """(every row of table SQLite can still read, by id; the ids an index lists; True when the
    table read without damage). Columns the table lacks (an older schema) read as NULL."""
    try:
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
    except _READ_ERRORS:
        return {}, set(), False
    if "id" not in have:
        return {}, set(), False
    select = f"SELECT {', '.join(c if c in have else 'NULL' for c in cols)} FROM {table} NOT INDEXED"
    rows: dict[int, Row] = {}
    if _scan(db, f"{select} ORDER BY id", rows):
        return rows, set(), True
    below = max(rows, default=0)  # everything up to here was read
    after: dict[int, Row] = {}
    _scan(db, f"{select} ORDER BY id DESC", after)
    rows.update(after)
    known: dict[int, Row] = {}
    for q in id_queries:  # an index may still list ids whose table pages are gone
        _scan(db, q, known)
    end = min(after) if after else max(known, default=below) + _PROBE_PAST
    for i in range(below + 1, min(end, below + 1 + _MAX_PROBES)):
        if i in rows:
            continue
        try:  # a lookup only reads the pages on its own path
            r = db.execute(f"{select} WHERE id = ?", (i,)).fetchone()
        except _READ_ERRORS:
            continue
        if r is not None:
            rows[i] = r
    return rows, set(known), False


# -- 2. from the pages ---------------------------------------------------------------------------
_TABLE_LEAF = 0x0D  # b-tree page type byte


def _varint(b: bytes, i: int) -> tuple[int, int]:
    """SQLite's big-endian varint at b[i]: (value, index after it)."""
    v = 0
    for k in range(8):
        c = b[i + k]
        v = (v << 7) | (c & 0x7F)
        if c < 0x80:
            return v, i + k + 1
    return (v << 8) | b[i + 8], i + 9


def _record(payload: bytes) -> Row:
    """The values of one record (fileformat2 §2.1); raises on anything malformed."""
    size, i = _varint(payload, 0)
    types = []
    while i < size:
        t, i = _varint(payload, i)
        types.append(t)
    if i != size:
        raise ValueError("record header")
    out: list[Any] = []
    at = size
    for t in types:
        if t == 0:
            out.append(None)
        elif 1 <= t <= 6:
            n = (1, 2, 3, 4, 6, 8)[t - 1]
            out.append(int.from_bytes(payload[at : at + n], "big", signed=True))
            at += n
        elif t == 7:
            out.append(struct.unpack(">d", payload[at : at + 8])[0])
            at += 8
        elif t in (8, 9):
            out.append(t - 8)
        elif t >= 12:
            n = (t - 12) // 2
            raw = payload[at : at + n]
            out.append(raw.decode("utf-8") if t % 2 else raw)  # strict: garbage text is not kept
            at += n
        else:
            raise ValueError("serial type")
        if at > len(payload):
            raise ValueError("record body")
    return tuple(out)


def _freelist(data: bytes, page_size: int, pages: int) -> set[int]:
    """The free pages (trunk and leaf) the header's freelist reaches."""
    free: set[int] = set()
    trunk = int.from_bytes(data[32:36], "big")
    while 0 < trunk <= pages and trunk not in free:
        free.add(trunk)
        p = data[(trunk - 1) * page_size : trunk * page_size]
        n = int.from_bytes(p[4:8], "big")
        for k in range(min(n, page_size // 4 - 2)):
            free.add(int.from_bytes(p[8 + 4 * k : 12 + 4 * k], "big"))
        trunk = int.from_bytes(p[0:4], "big")
    return free


def _leaf_rows(path: Path) -> tuple[dict[int, Row], dict[int, Row]]:
    """(conversation rows, message rows) by id, from every table leaf page of the file, in the
    store's column order."""
    data = path.read_bytes()
    head_ok = data.startswith(b"SQLite format 3\0") and len(data) >= 100
    page_size = int.from_bytes(data[16:18], "big") if head_ok else 4096
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        page_size, head_ok = 4096, False  # a damaged header: SQLite's default page size
    usable = page_size - (data[20] if head_ok else 0)
    pages = len(data) // page_size
    free = _freelist(data, page_size, pages) if head_ok else set()
    max_local = usable - 35
    min_local = (usable - 12) * 32 // 255 - 23
    convs: dict[int, Row] = {}
    msgs: dict[int, Row] = {}
    for n in range(1, pages + 1):
        if n in free:
            continue
        page = data[(n - 1) * page_size : n * page_size]
        h = 100 if n == 1 else 0
        if page[h] != _TABLE_LEAF:
            continue
        cells = int.from_bytes(page[h + 3 : h + 5], "big")
        if h + 8 + 2 * cells > usable:
            continue
        for c in range(cells):
            try:
                at = int.from_bytes(page[h + 8 + 2 * c : h + 10 + 2 * c], "big")
                size, at = _varint(page, at)
                rowid, at = _varint(page, at)
                if size <= max_local:
                    payload = page[at : at + size]
                else:  # the rest is on a chain of overflow pages
                    local = min_local + (size - min_local) % (usable - 4)
                    local = local if local <= max_local else min_local
                    parts = [page[at : at + local]]
                    nxt = int.from_bytes(page[at + local : at + local + 4], "big")
                    got, seen = local, set()
                    while got < size and 0 < nxt <= pages and nxt not in seen:
                        seen.add(nxt)
                        o = data[(nxt - 1) * page_size : nxt * page_size]
                        parts.append(o[4 : 4 + min(usable - 4, size - got)])
                        got += min(usable - 4, size - got)
                        nxt = int.from_bytes(o[0:4], "big")
                    if got < size:
                        continue
                    payload = b"".join(parts)
                r = _record(payload)
            except (IndexError, ValueError, struct.error):
                continue  # UnicodeDecodeError is a ValueError
            if len(r) in (6, 7) and r[0] is None and isinstance(r[1], int) and r[2] in _store.ROLES:
                if isinstance(r[3], str):  # messages: id, conversation_id, role, content, created,
                    # stats, status (added by schema 2, so older rows lack it)
                    status = r[6] if len(r) == 7 else _store.COMPLETE
                    msgs[rowid] = (rowid, r[1], r[2], r[3], r[4], status, r[5])
            elif (
                len(r) in (7, 8, 9, 10)
                and r[0] is None
                and all(isinstance(v, str) for v in (r[1], r[4], r[5], r[6]))
                and all(isinstance(v, (int, float)) for v in (r[2], r[3]))
            ):  # conversations: id, title, created, updated, system_prompt, model_id, sampling, deleted
                # (schema 2), draft, viewed (schema 3; rows written before an upgrade lack them)
                convs[rowid] = (rowid, *r[1:7], r[7] if len(r) >= 8 else None)
    return convs, msgs


# -- together --------------------------------------------------------------------------------------
def _text(v: Any, default: str = "") -> str:
    return v if isinstance(v, str) else default


def _number(v: Any, default: float) -> float:
    return float(v) if isinstance(v, (int, float)) else default


def _read_damaged(path: Path) -> tuple[list[Row], list[Row], dict[str, int]]:
    """(conversation rows, message rows, the losses: Salvage's untitled, lost_conversations and
    lost_messages) of a damaged database, in the current schema's column order."""
    convs: dict[int, Row] = {}
    msgs: dict[int, Row] = {}
    known_c: set[int] = set()
    known_m: set[int] = set()
    whole = False
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error:
        pass  # the page pass below still reads the file
    if db is not None:
        try:
            try:  # the WAL's pages into the file, so that the page pass reads their latest version
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except _READ_ERRORS:
                pass
            convs, known_c, whole_c = _read_table(
                db,
                "conversations",
                [c.strip() for c in _store._CONV_COLS.split(",")],
                ["SELECT id FROM conversations INDEXED BY conversations_by_update"],
            )
            msgs, known_m, whole_m = _read_table(
                db,
                "messages",
                [c.strip() for c in _store._MSG_COLS.split(",")],
                ["SELECT id FROM messages INDEXED BY messages_by_conversation"],
            )
            whole = whole_c and whole_m
        finally:
            db.close()
    if not whole:
        more_c, more_m = _leaf_rows(path)
        convs = {**more_c, **convs}  # what SQLite read wins
        msgs = {**more_m, **msgs}
    lost = {"untitled": 0, "lost_messages": len(known_m - msgs.keys())}
    now = time.time()
    conv_rows = {
        cid: (
            cid,
            _text(r[1], "Recovered chat"),
            _number(r[2], now),
            _number(r[3], now),
            _text(r[4]),
            _text(r[5]),
            _text(r[6], "{}"),
            r[7] if isinstance(r[7], (int, float)) else None,
        )
        for cid, r in convs.items()
    }
    msg_rows = []
    for mid, r in sorted(msgs.items()):
        cid, content = r[1], r[3]
        if not isinstance(cid, int) or not isinstance(content, str):
            lost["lost_messages"] += 1
            continue
        created = _number(r[4], now)
        if cid not in conv_rows:  # its conversation's row is gone: keep the messages under a new one
            conv_rows[cid] = (cid, f"Recovered chat {cid}", created, created, "", "", "{}", None)
            lost["untitled"] += 1
        msg_rows.append(
            (
                mid,
                cid,
                r[2] if r[2] in _store.ROLES else "assistant",
                content,
                created,
                r[5] if r[5] in _store.STATUSES else _store.STOPPED,
                _text(r[6], "{}"),
            )
        )
    lost["lost_conversations"] = len(known_c - conv_rows.keys())
    return [conv_rows[k] for k in sorted(conv_rows)], msg_rows, lost


def _write_fresh(path: Path, convs: list[Row], msgs: list[Row]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN")
        for migrate in _store.MIGRATIONS:
            migrate(db)
        db.execute(f"PRAGMA user_version = {len(_store.MIGRATIONS)}")
        db.executemany(
            f"INSERT INTO conversations ({_store._CONV_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", convs
        )
        db.executemany(f"INSERT INTO messages ({_store._MSG_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)", msgs)
        db.execute("COMMIT")
    finally:
        db.close()


def _free_backup_name(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        b = path.with_name(f"{path.stem}.damaged-{stamp}{f'-{n}' if n > 1 else ''}{path.suffix}")
        if not b.exists():
            return b
    raise FileExistsError(path.with_name(f"{path.stem}.damaged-{stamp}{path.suffix}"))


def _mend_size(path: Path) -> None:
    """A file cut short (a full disk, a copy that stopped) ends in a partial page and its header
    still counts the missing pages; SQLite then refuses even the pages that are there. Cuts the
    partial page and sets the count to what is left."""
    with open(path, "r+b") as f:
        head = f.read(100)
        if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
            return
        page = int.from_bytes(head[16:18], "big")
        page = 65536 if page == 1 else page
        if page < 512 or page & (page - 1):
            return
        size = f.seek(0, os.SEEK_END)
        pages = size // page
        if pages and pages < int.from_bytes(head[28:32], "big"):
            f.truncate(pages * page)
            f.seek(28)
            f.write(pages.to_bytes(4, "big"))


def salvage_database(path: str | Path, reason: str, release: Callable[[], None] | None = None) -> Salvage:
    """Keeps the damaged database at path (and its WAL) as a backup beside it, and replaces it by a
    fresh database holding every conversation and message that can still be read (ids kept).

    release: closes the caller's connection to path; called once the backup is taken, because
    closing the last connection moves the WAL into the file, which would change it first.

    The original stays in place until the fresh file replaces it in one rename, so a crash on the
    way leaves the damaged file where it was, to be recovered again on the next start. Raises
    OSError when the folder cannot be written."""
    path = Path(path)
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    backup = _free_backup_name(path)
    if wal.exists() and wal.stat().st_size:
        shutil.copy2(wal, f"{backup}-wal")  # committed rows that were not yet in the main file
    shutil.copy2(path, backup)
    if release is not None:
        release()
    with tempfile.TemporaryDirectory(prefix=".trit-salvage-", dir=path.parent) as tmp:
        # read a copy: opening a database with a WAL writes to it, and the backup stays as it was
        scratch = Path(tmp) / "damaged.sqlite3"
        shutil.copy2(backup, scratch)
        if Path(f"{backup}-wal").exists():
            shutil.copy2(f"{backup}-wal", f"{scratch}-wal")
        _mend_size(scratch)
        convs, msgs, lost = _read_damaged(scratch)
        fresh = Path(tmp) / "fresh.sqlite3"
        _write_fresh(fresh, convs, msgs)
        # a WAL left beside the fresh file would be replayed into it: it goes first
        wal.unlink(missing_ok=True)
        shm.unlink(missing_ok=True)
        os.replace(fresh, path)
    return Salvage(backup, reason, len(convs), len(msgs), **lost)


__all__ = ["Salvage", "salvage_database"]
