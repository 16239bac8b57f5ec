"""A damaged conversation database: opening it keeps the file as a backup and recovers every row
that can still be read into a fresh one; damage met while in use raises StoreDamagedError. The files
are really damaged (pages overwritten with random bytes, truncated), as disks and crashes do."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
from pathlib import Path

import pytest
from trit.app.core.salvage import Salvage
from trit.app.core.store import ConversationStore, StoreDamagedError, StoreError

PAGE = 4096  # SQLite's default page size, which these files use
CHATS, TURNS = 30, 10


def make_db(path: Path) -> dict[int, list[str]]:
    """30 chats of 20 messages of ~500 bytes (about 80 pages); returns {conversation id: contents}."""
    made: dict[int, list[str]] = {}
    with ConversationStore(path) as s:
        for i in range(CHATS):
            c = s.create_conversation(f"chat {i}")
            made[c.id] = []
            for j in range(TURNS):
                for role, text in (("user", f"question {i}.{j} "), ("assistant", f"answer {i}.{j} ")):
                    s.add_message(c.id, role, text + ("x" if role == "user" else "y") * 500)
                    made[c.id].append(text + ("x" if role == "user" else "y") * 500)
    assert not Path(f"{path}-wal").exists()  # closing checkpointed everything into the file
    return made


def page_of(raw: bytes, needle: bytes) -> int:
    i = raw.index(needle)
    return i // PAGE


def damage(path: Path, page: int) -> bytes:
    """Overwrites one page with random bytes; returns the damaged file's content."""
    raw = bytearray(path.read_bytes())
    raw[page * PAGE : (page + 1) * PAGE] = random.Random(page).randbytes(PAGE)
    path.write_bytes(bytes(raw))
    return bytes(raw)


def contents(s: ConversationStore) -> dict[int, list[str]]:
    return {c.id: [m.content for m in s.messages(c.id)] for c in s.list_conversations()}


def backups(folder: Path) -> list[Path]:
    return sorted(folder.glob("c.damaged-*.sqlite3"))


def check_fresh(path: Path) -> None:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def test_a_damaged_message_page_loses_only_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    made = make_db(path)
    damaged = damage(path, page_of(path.read_bytes(), b"answer 12.4 "))
    with ConversationStore(path) as s:
        sv = s.salvaged
        assert isinstance(sv, Salvage)
        # the damaged file is kept byte for byte beside the fresh one
        assert backups(tmp_path) == [sv.backup] and sv.backup.read_bytes() == damaged
        got = contents(s)
        assert set(got) == set(made) and sv.conversations == CHATS  # every chat is still there
        lost = [t for cid, texts in made.items() for t in texts if t not in got[cid]]
        assert 0 < len(lost) <= 8 and all(t.startswith(("question 12.", "answer 12.")) for t in lost)
        assert sv.messages == CHATS * TURNS * 2 - len(lost)
        for cid, texts in got.items():  # what came back is what was written, in order
            assert texts == [t for t in made[cid] if t in texts]
        assert "recovered 30 conversations" in sv.message() and str(sv.backup) in sv.message()
        # the store works as usual on the fresh file
        c = s.create_conversation("after")
        s.add_message(c.id, "user", "still works")
        assert [h.conversation.id for h in s.search("still works")] == [c.id]
    check_fresh(path)
    with ConversationStore(path) as s:  # recovered once: the next start is a normal one
        assert s.salvaged is None and len(s.list_conversations()) == CHATS + 1


def test_a_damaged_index_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    made = make_db(path)
    db = sqlite3.connect(path)
    root = db.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = 'messages_by_conversation'"
    ).fetchone()[0]
    db.close()
    damage(path, root - 1)  # rootpage counts from 1
    with ConversationStore(path) as s:
        assert s.salvaged is not None and s.salvaged.lost_messages == 0
        assert contents(s) == made
        assert s.purge_deleted() == 0  # what crashed the window's start on the damaged file


def rootpage(path: Path, name: str) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0])
    finally:
        db.close()


def test_a_damaged_root_page_hides_no_message(tmp_path: Path) -> None:
    # SQLite reaches every message through this one page; the pages under it are read directly
    path = tmp_path / "c.sqlite3"
    made = make_db(path)
    damage(path, rootpage(path, "messages") - 1)
    with ConversationStore(path) as s:
        assert contents(s) == made and s.salvaged is not None and s.salvaged.lost_messages == 0


def test_a_damaged_first_page_hides_nothing(tmp_path: Path) -> None:
    # page 1 holds the header and the schema: SQLite cannot read anything without it
    path = tmp_path / "c.sqlite3"
    made = make_db(path)
    damage(path, 0)
    with ConversationStore(path) as s:
        assert contents(s) == made
        assert sorted(c.title for c in s.list_conversations()) == sorted(f"chat {i}" for i in range(CHATS))


def table_pages(path: Path, name: str) -> list[int]:
    """The 0-based indexes of every page of a table's b-tree (dbstat: SQLite's own page map)."""
    db = sqlite3.connect(path)
    try:
        return [int(r[0]) - 1 for r in db.execute("SELECT pageno FROM dbstat WHERE name = ?", (name,))]
    finally:
        db.close()


def test_lost_titles_keep_their_messages(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    made = make_db(path)
    # every page of the table: the 30 rows fitted on one until the sampling settings grew
    for page in table_pages(path, "conversations"):
        damage(path, page)
    with ConversationStore(path) as s:
        sv = s.salvaged
        assert sv is not None and sv.untitled == CHATS and contents(s) == made
        assert {c.title for c in s.list_conversations()} == {f"Recovered chat {cid}" for cid in made}
        assert "30 conversations lost the title" in sv.message()


def test_purged_conversations_stay_purged(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    made = make_db(path)
    with ConversationStore(path) as s:
        # as many SQLite builds have it (this one's default is ON): freed pages keep their text
        s._db.execute("PRAGMA secure_delete = OFF")
        for cid in list(made)[5:15]:
            s.delete_conversation(cid)
            del made[cid]
        assert s.purge_deleted() == 10
        assert s._db.execute("PRAGMA freelist_count").fetchone()[0] > 0
    assert b"question 7." in path.read_bytes()  # still in the file, on pages of the freelist
    damage(path, page_of(path.read_bytes(), b"answer 20.4 "))
    with ConversationStore(path) as s:
        got = contents(s)
        assert set(got) == set(made)
        assert not any(t.startswith(("question 7.", "answer 7.")) for texts in got.values() for t in texts)


def test_pages_damaged_everywhere_keep_what_lies_between(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    made = make_db(path)
    raw = path.read_bytes()
    pages = sorted({page_of(raw, f"answer {i}.5 ".encode()) for i in (3, 15, 27)})
    for p in pages:
        damage(path, p)
    with ConversationStore(path) as s:
        got = contents(s)
        assert set(got) == set(made)
        # the chats between and after the damaged pages came back whole
        for i in (0, 9, 20, 29):
            cid = next(c.id for c in s.list_conversations() if c.title == f"chat {i}")
            assert got[cid] == made[cid]


def test_a_truncated_file_keeps_its_first_half(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    made = make_db(path)
    os.truncate(path, path.stat().st_size // 2)
    with ConversationStore(path) as s:
        sv = s.salvaged
        assert sv is not None and 0 < sv.messages < CHATS * TURNS * 2
        got = contents(s)
        first = min(made)
        assert got[first] == made[first]


def test_garbage_opens_empty_and_keeps_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    garbage = random.Random(1).randbytes(PAGE * 10)
    path.write_bytes(garbage)
    with ConversationStore(path) as s:
        sv = s.salvaged
        assert sv is not None and sv.conversations == sv.messages == 0
        assert s.list_conversations() == []
        assert sv.backup.read_bytes() == garbage
        assert "nothing in it could be read" in sv.message() and str(sv.backup) in sv.message()
        s.create_conversation("new")
    with ConversationStore(path) as s:
        assert s.salvaged is None and [c.title for c in s.list_conversations()] == ["new"]


def test_rows_still_in_the_wal_are_recovered(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    made = make_db(path)
    live = ConversationStore(path)
    late = live.create_conversation("late")
    live.add_message(late.id, "user", "only in the WAL")
    # a crash: the files as they are on disk, with the last rows in the WAL only
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    shutil.copy2(path, crashed / "c.sqlite3")
    shutil.copy2(f"{path}-wal", crashed / "c.sqlite3-wal")
    live.close()
    damage(crashed / "c.sqlite3", page_of(path.read_bytes(), b"answer 4.4 "))
    with ConversationStore(crashed / "c.sqlite3") as s:
        sv = s.salvaged
        assert sv is not None
        assert Path(f"{sv.backup}-wal").is_file()  # the backup keeps its WAL
        assert [m.content for m in s.messages(late.id)] == ["only in the WAL"]
        assert len(contents(s)) == len(made) + 1


class _BrokenConnection:
    """A connection whose reads hit a damaged page (damage that quick_check did not see)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql.lstrip().upper().startswith(("SELECT", "DELETE")):
            raise sqlite3.DatabaseError("database disk image is malformed")
        return self.db.execute(sql, *args)

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def close(self) -> None:
        self.db.close()


def test_damage_found_in_use_is_a_store_error_and_recovered_next_start(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    made = make_db(path)
    s = ConversationStore(path)
    s._db = _BrokenConnection(s._db)  # type: ignore[assignment]
    with pytest.raises(StoreDamagedError) as e:
        s.messages(min(made))
    assert "damaged" in e.value.message and "Restart Trit" in e.value.fix
    with pytest.raises(StoreDamagedError):
        s.purge_deleted()  # in a transaction: rolled back, then reported the same way
    s.close()
    with ConversationStore(path) as s:  # the next start recovers, though quick_check passes
        assert s.salvaged is not None and contents(s) == made
    with ConversationStore(path) as s:
        assert s.salvaged is None


def test_other_sqlite_errors_say_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    path.mkdir()  # a folder where the file should be
    with pytest.raises(StoreError, match="cannot open") as e:
        ConversationStore(path)
    assert not isinstance(e.value, StoreDamagedError) and e.value.fix
    assert list(tmp_path.iterdir()) == [path]  # nothing was moved or recovered


def test_a_schema_that_is_not_utf8_is_damage_and_recovered(tmp_path: Path) -> None:
    # SQLite quotes the damaged schema in its error and Python cannot decode it: a raw
    # UnicodeDecodeError came out of the first PRAGMA, and salvage failed the same way
    path = tmp_path / "c.sqlite3"
    made = make_db(path)
    raw = bytearray(path.read_bytes())
    i = raw.index(b"CREATE INDEX messages_by_conversation")
    raw[i + 2] = 0xC5  # CR\xc5ATE
    path.write_bytes(bytes(raw))
    with ConversationStore(path) as s:
        assert s.salvaged is not None and "schema is not valid text" in s.salvaged.message()
        assert contents(s) == made
    assert len(backups(tmp_path)) == 1
    check_fresh(path)
