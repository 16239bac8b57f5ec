"""Conversation store: CRUD, undo, search, edit-and-resend, streaming writes, crash recovery,
schema migration, export."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import unicodedata
from pathlib import Path

import pytest
from trit.app.core.sampling import Sampling
from trit.app.core.store import (
    COMPLETE,
    MIGRATIONS,
    SCHEMA_VERSION,
    STOPPED,
    STREAMING,
    ConversationStore,
    NotFoundError,
    ReplyWriter,
    StoreError,
    StoreFullError,
    StoreMovedError,
)


@pytest.fixture
def store(tmp_path: Path) -> ConversationStore:
    s = ConversationStore(tmp_path / "c.sqlite3")
    yield s
    s.close()


def test_wal_and_version(store: ConversationStore) -> None:
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_conversation_crud(store: ConversationStore) -> None:
    c = store.create_conversation(
        "Hello", system_prompt="Be brief.", model_id="smollm2", sampling=Sampling(0.2, 0.9, 64)
    )
    assert c.title == "Hello" and c.system_prompt == "Be brief." and c.model_id == "smollm2"
    assert c.sampling == Sampling(0.2, 0.9, 64) and c.deleted is None
    assert store.rename_conversation(c.id, "Renamed").title == "Renamed"
    c2 = store.update_conversation(c.id, sampling=Sampling(temperature=0.0))
    assert c2.sampling.temperature == 0.0 and c2.system_prompt == "Be brief."
    with pytest.raises(ValueError, match="top_p"):
        store.update_conversation(c.id, sampling=Sampling(top_p=0.0))
    with pytest.raises(NotFoundError):
        store.get_conversation(999)
    with pytest.raises(NotFoundError):
        store.rename_conversation(999, "x")


def test_list_order_and_soft_delete_undo_purge(store: ConversationStore) -> None:
    a = store.create_conversation("a")
    b = store.create_conversation("b")
    store.add_message(a.id, "user", "bump a")  # a is now the most recently updated
    assert [c.title for c in store.list_conversations()] == ["a", "b"]
    store.add_message(b.id, "user", "in b")
    store.delete_conversation(b.id)
    assert [c.title for c in store.list_conversations()] == ["a"]
    assert [c.title for c in store.list_conversations(deleted=True)] == ["b"]
    assert store.search("in b") == []
    store.restore_conversation(b.id)  # undo
    assert {c.title for c in store.list_conversations()} == {"a", "b"}
    assert [m.content for m in store.messages(b.id)] == ["in b"]
    store.delete_conversation(b.id)
    assert store.purge_deleted(older_than_s=3600) == 0  # too recent
    assert store.purge_deleted() == 1
    with pytest.raises(NotFoundError):
        store.get_conversation(b.id)
    assert (
        store._db.execute("SELECT COUNT(*) FROM messages WHERE conversation_id = ?", (b.id,)).fetchone()[0]
        == 0
    )


def test_search(store: ConversationStore) -> None:
    a = store.create_conversation("Recipes")
    b = store.create_conversation("Physics")
    store.add_message(b.id, "user", "What is the speed of light?")
    store.add_message(b.id, "assistant", "About 300,000 km/s. 100% sure_ish.")
    hits = store.search("SPEED")
    assert [(h.conversation.id, h.message_id is not None) for h in hits] == [(b.id, True)]
    assert "speed of light" in hits[0].snippet
    assert [h.conversation.id for h in store.search("recip")] == [a.id]
    assert store.search("recip")[0].message_id is None
    # LIKE wildcards in the query are literal
    assert [h.conversation.id for h in store.search("100%")] == [b.id]
    assert store.search("%") == [] or all("%" in h.snippet for h in store.search("%"))
    assert store.search("_ish") and store.search("x_sh") == []
    assert store.search("") == []


def test_search_sees_every_write_after_it_has_read_the_texts(store: ConversationStore) -> None:
    """search() keeps each conversation's folded texts between calls; every kind of write must
    show in the next search."""
    c = store.create_conversation("Chat")

    def found(text: str) -> list[int | None]:
        return [h.message_id for h in store.search(text)]

    first = store.add_message(c.id, "user", "alpha")
    assert found("alpha") == [first.id] and found("beta") == []  # the texts are read now
    second = store.add_message(c.id, "assistant", "beta")
    assert found("beta") == [second.id]
    assert found("alphabeta") == [] and found("alpha\0beta") == []  # never across two messages
    store.edit_message(second.id, "gamma")
    assert found("beta") == [] and found("gamma") == [second.id]
    reply = store.begin_reply(c.id, flush_interval=0.0)
    reply.append("delta streaming")
    assert found("delta") == [reply.message_id]  # a flushed part of a reply being written
    reply.finish()
    store.delete_message(first.id)
    assert found("alpha") == []
    store.truncate_after(second.id)
    assert found("delta") == [] and found("gamma") == [second.id]
    store.delete_conversation(c.id)
    assert found("gamma") == []
    store.purge_deleted()
    reused = store.create_conversation("Chat")  # may take the purged conversation's id
    assert found("gamma") == []
    store.add_message(reused.id, "user", "epsilon")
    assert [h.conversation.id for h in store.search("epsilon")] == [reused.id]


def test_search_sees_what_another_connection_wrote(tmp_path: Path) -> None:
    """Two windows on one folder: each store's search texts must notice the other's writes."""
    one, two = ConversationStore(tmp_path / "c.sqlite3"), ConversationStore(tmp_path / "c.sqlite3")
    try:
        c = one.create_conversation("Chat")
        m = one.add_message(c.id, "user", "alpha")
        assert [h.message_id for h in two.search("alpha")] == [m.id]  # two has read the texts
        one.edit_message(m.id, "charlie")
        one.add_message(c.id, "assistant", "delta")
        assert two.search("alpha") == [] and [h.message_id for h in two.search("charlie")] == [m.id]
        assert len(two.search("delta")) == 1
    finally:
        one.close()
        two.close()


def test_search_ignores_case_beyond_ascii(store: ConversationStore) -> None:
    cv = store.create_conversation("Résumé")
    school = store.create_conversation("Notes")
    store.add_message(school.id, "user", "L'ÉCOLE est fermée lundi.")
    street = store.create_conversation("Address")
    store.add_message(street.id, "user", "Sie wohnt in der Hauptstraße 5, ΟΔΟΣ not included.")
    nfd = store.create_conversation("Decomposed")
    store.add_message(nfd.id, "user", "cafe\u0301 au lait")  # é typed as e + combining acute

    def found(text: str) -> list[int]:
        return [h.conversation.id for h in store.search(text)]

    assert found("RÉSUMÉ") == found("résumé") == [cv.id]
    assert found("école") == found("ÉCOLE") == [school.id]
    assert found("HAUPTSTRASSE") == found("hauptstraße") == [street.id]
    assert found("οδος") == [street.id]
    assert found("CAFÉ") == [nfd.id]  # composed query, decomposed text
    hit = store.search("école")[0]
    assert hit.message_id is not None and "ÉCOLE est fermée" in hit.snippet
    assert "Hauptstraße 5" in store.search("STRASSE 5")[0].snippet
    long = store.create_conversation("Long")
    store.add_message(long.id, "user", "ß" * 300 + " needle " + "x" * 300)
    snippet = store.search("NEEDLE")[0].snippet  # found where folding made the text longer
    assert "needle" in snippet and snippet.startswith("…ß")


@pytest.mark.parametrize(
    ("needle", "text", "shown"),
    [
        ("istanbul", "İstanbul'da hava nasıl?", "İstanbul'da"),  # İ folds to i + U+0307
        ("İSTANBUL", "istanbul trip", "istanbul trip"),
        ("مرحبا", "مَرْحَبًا بِكُمْ", "مَرْحَبًا"),  # Arabic harakat
        ("שלום", "שָׁלוֹם עֲלֵיכֶם", "שָׁלוֹם"),  # Hebrew niqqud
        ("2024", "２０２４年の計画", "２０２４年"),  # full-width digits, as IMEs type them
        ("gpu", "ＧＰＵのメモリ", "ＧＰＵ"),  # full-width Latin
        ("カタカナ", "ｶﾀｶﾅ", "ｶﾀｶﾅ"),  # half-width katakana
        ("ｶﾀｶﾅ", "カタカナ", "カタカナ"),
        ("❤", "I \u2764\ufe0f it", "\u2764\ufe0f"),  # a variation selector is a mark
    ],
)
def test_search_ignores_width_marks_and_the_turkish_dotted_i(
    store: ConversationStore, needle: str, text: str, shown: str
) -> None:
    c = store.create_conversation("Chat")
    store.add_message(c.id, "user", text)
    hits = store.search(needle)
    assert [h.conversation.id for h in hits] == [c.id]
    assert shown in hits[0].snippet


def test_search_snippet_maps_back_where_folding_changed_lengths(store: ConversationStore) -> None:
    """Marks dropped before the match (shorter) and ligatures after it (longer): the snippet is
    the original text around the match, 40 characters either side of it."""
    text = "مَرْحَبًا " * 30 + "ＧＰＵ memory" + " ﬁ" * 60
    c = store.create_conversation("Chat")
    store.add_message(c.id, "user", text)
    k = text.index("ＧＰＵ")
    assert store.search("gpu")[0].snippet == "…" + text[k - 40 : k + 3 + 40] + "…"
    assert store.search("ＧＰＵ")[0].snippet == "…" + text[k - 40 : k + 3 + 40] + "…"


def test_search_snippet_starts_and_ends_between_user_perceived_characters(store: ConversationStore) -> None:
    """40 characters either side of the match would start on a letter's harakat or end inside a
    flag: the snippet takes the whole character."""
    text = "مَرْحَبًا " * 30 + "ab needle " + "🇮🇳" * 40
    c = store.create_conversation("Chat")
    store.add_message(c.id, "user", text)
    body = store.search("needle")[0].snippet.strip("…")
    p = text.index(body)
    assert not unicodedata.category(text[p]).startswith("M")
    assert sum("\U0001f1e6" <= ch <= "\U0001f1ff" for ch in body) % 2 == 0  # whole flags only
    assert len(text[text.index("needle") : p + len(body)]) >= 40


def test_messages_edit_and_truncate(store: ConversationStore) -> None:
    c = store.create_conversation()
    m1 = store.add_message(c.id, "user", "one")
    m2 = store.add_message(c.id, "assistant", "reply one", stats={"tokens": 3})
    m3 = store.add_message(c.id, "user", "two")
    store.add_message(c.id, "assistant", "reply two")
    assert store.get_message(m2.id).stats == {"tokens": 3}
    # edit-and-resend of message 1: edit it, drop everything after it
    assert store.edit_message(m1.id, "one, edited").content == "one, edited"
    assert store.truncate_after(m1.id) == 3
    assert [m.content for m in store.messages(c.id)] == ["one, edited"]
    with pytest.raises(NotFoundError):
        store.get_message(m3.id)
    m5 = store.add_message(c.id, "assistant", "new reply")
    assert m5.id > m1.id and [m.id for m in store.messages(c.id)] == [m1.id, m5.id]
    with pytest.raises(ValueError, match="role"):
        store.add_message(c.id, "robot", "x")
    with pytest.raises(NotFoundError):
        store.add_message(12345, "user", "x")
    store.delete_message(m5.id)
    assert [m.id for m in store.messages(c.id)] == [m1.id]


def test_reply_writer_batches(store: ConversationStore) -> None:
    c = store.create_conversation()
    now = [0.0]
    msg = store.add_message(c.id, "assistant", "", status=STREAMING)
    w = ReplyWriter(store, msg.id, flush_interval=0.5, flush_chars=100, clock=lambda: now[0])
    for i in range(40):  # 40 tokens in 0.4 s: no flush yet
        w.append("ab")
        now[0] += 0.01
    assert w.flushes == 0 and store.get_message(msg.id).content == ""
    now[0] = 0.6
    w.append("cd")  # interval passed
    assert w.flushes == 1 and store.get_message(msg.id).content == "ab" * 40 + "cd"
    w.append("x" * 100)  # char budget
    assert w.flushes == 2
    assert store.get_message(msg.id).status == STREAMING
    m = w.finish({"tokens": 42})
    assert m.status == COMPLETE and m.content == "ab" * 40 + "cd" + "x" * 100 and m.stats == {"tokens": 42}
    w.append("late")  # ignored after finish
    assert store.get_message(msg.id).content == m.content


def test_reply_writer_stop_and_recovery(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with ConversationStore(path) as s:
        c = s.create_conversation()
        w = s.begin_reply(c.id)
        w.append("partial")
        w.flush()
        stopped = s.begin_reply(c.id)
        stopped.append("cut")
        assert stopped.stop().status == STOPPED
    with ConversationStore(path) as s:
        assert s.recovered == [w.message_id]
        assert s.get_message(w.message_id).status == STOPPED
        assert s.get_message(w.message_id).content == "partial"
        assert s.get_message(stopped.message_id).content == "cut"


def test_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    ConversationStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer Trit"):
        ConversationStore(path)


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with ConversationStore(path) as s:  # kept as a backup; test_store_salvage.py has the rest
        assert s.salvaged is not None and s.salvaged.conversations == 0 and s.list_conversations() == []
        assert s.salvaged.backup.read_bytes() == b"this is not sqlite" * 100


def test_migrate_v1_to_current(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](db)  # a database written by schema 1
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO conversations (id, title, created, updated, sampling) VALUES (7, 'old', 1, 2, ?)",
        (json.dumps({"temperature": 0.3}),),
    )
    db.execute(
        "INSERT INTO messages (conversation_id, role, content, created, stats) VALUES (7, 'user', 'hi', 1, '{}')"
    )
    db.execute(
        "INSERT INTO messages (conversation_id, role, content, created, stats) "
        "VALUES (7, 'assistant', 'hello', 2, '{\"tokens\": 1}')"
    )
    db.close()
    with ConversationStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        c = s.get_conversation(7)
        assert c.title == "old" and c.deleted is None and c.sampling == Sampling(temperature=0.3)
        ms = s.messages(7)
        assert [(m.role, m.content, m.status, m.stats) for m in ms] == [
            ("user", "hi", COMPLETE, {}),
            ("assistant", "hello", COMPLETE, {"tokens": 1}),
        ]
        s.delete_conversation(7)  # the v2 column works
        s.restore_conversation(7)
    assert (tmp_path / "c.sqlite3.v1.bak").is_file()  # the pre-upgrade copy


@pytest.mark.parametrize("leftover", [b"not a database" * 100, b""])
def test_a_leftover_backup_is_replaced_not_taken_for_damage(tmp_path: Path, leftover: bytes) -> None:
    """A .v1.bak left from a copy cut short made the healthy file count as damaged on the
    upgrade (salvaged, copied aside, the user told the history was damaged), and no real
    pre-upgrade copy was made."""
    path = tmp_path / "c.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO conversations (id, title, created, updated) VALUES (3, 'kept', 1, 2)")
    db.close()
    bak = tmp_path / "c.sqlite3.v1.bak"
    bak.write_bytes(leftover)
    with ConversationStore(path) as s:
        assert s.salvaged is None and s.schema_version == SCHEMA_VERSION
        assert [c.title for c in s.list_conversations()] == ["kept"]
    old = sqlite3.connect(bak)
    assert old.execute("PRAGMA user_version").fetchone()[0] == 1
    assert old.execute("SELECT title FROM conversations").fetchall() == [("kept",)]
    old.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.sqlite3", "c.sqlite3.v1.bak"]


def test_failed_migration_keeps_old_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    db.close()

    def broken(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE conversations ADD COLUMN deleted REAL")
        raise RuntimeError("boom")

    monkeypatch.setattr("trit.app.core.store.MIGRATIONS", [MIGRATIONS[0], broken])
    with pytest.raises(RuntimeError):
        ConversationStore(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    cols = [r[1] for r in db.execute("PRAGMA table_info(conversations)")]
    assert "deleted" not in cols  # rolled back
    db.close()


def test_export(store: ConversationStore) -> None:
    c = store.create_conversation("Chat about π", system_prompt="Be terse.", model_id="bitnet-2b")
    store.add_message(c.id, "user", "What is π?")
    store.add_message(c.id, "assistant", "About 3.14159.", stats={"summary": "12 tok/s"})
    # a reply another model wrote names it (the conversation's Model line is the current one)
    store.add_message(c.id, "user", "And e?")
    store.add_message(c.id, "assistant", "2.718.", stats={"summary": "30 tok/s", "model": "smol.gguf"})
    store.add_message(c.id, "assistant", "2.7.", stats={"summary": "9 tok/s", "model": "bitnet-2b"})
    w = store.begin_reply(c.id)
    w.append("half")
    w.stop()
    md = store.export_markdown(c.id)
    assert md.startswith("# Chat about π\n")
    assert "## System\n\n```\nBe terse.\n```" in md and "## User\n\n```\nWhat is π?\n```" in md
    assert "## Assistant\n\n```\nAbout 3.14159.\n```" in md and "12 tok/s" in md and "*(stopped)*" in md
    assert "<sub>30 tok/s · smol.gguf</sub>" in md and "<sub>9 tok/s</sub>" in md
    doc = json.loads(store.export_json(c.id))
    assert doc["format"] == "trit-conversation" and doc["conversation"]["title"] == "Chat about π"
    assert [m["content"] for m in doc["messages"]][:2] == ["What is π?", "About 3.14159."]
    assert doc["messages"][-1]["content"] == "half" and doc["messages"][-1]["status"] == STOPPED


def test_shared_between_threads(store: ConversationStore) -> None:
    import threading

    c = store.create_conversation()
    w = store.begin_reply(c.id, flush_interval=0.0)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for i in range(200):
                w.append(f"{i},")
        except BaseException as e:  # noqa: BLE001  # reported by the assert below
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    for _ in range(50):
        store.list_conversations()
        store.messages(c.id)
    t.join()
    assert not errors
    assert w.finish().content == "".join(f"{i}," for i in range(200))


CHILD = textwrap.dedent(
    """
    import os, sys, time
    from trit.app.core.store import ConversationStore
    db, log = sys.argv[1], sys.argv[2]
    s = ConversationStore(db)
    c = s.create_conversation("kill test")
    ids = [s.add_message(c.id, "user" if i % 2 == 0 else "assistant", f"earlier {i}").id for i in range(6)]
    w = s.begin_reply(c.id)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(fd, (" ".join(map(str, [c.id, w.message_id, *ids])) + "\\n").encode())
    i = 0
    while True:  # bounded by the parent's SIGKILL (and a 60 s safety limit)
        w.append(f"<{i}>")
        os.write(fd, f"{i} {time.time()}\\n".encode())  # survives SIGKILL: the page cache keeps it
        i += 1
        time.sleep(0.005)
        if i > 12000:
            break
    """
)


def test_kill_mid_reply_loses_at_most_a_second(tmp_path: Path) -> None:
    db, log = tmp_path / "c.sqlite3", tmp_path / "child.log"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(log)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if log.exists() and len(log.read_text().splitlines()) > 150:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the child never started streaming")
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGKILL)
        t_kill = time.time()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    lines = log.read_text().splitlines()
    conv_id, reply_id, *earlier = map(int, lines[0].split())
    appended = [ln.split() for ln in lines[1:] if len(ln.split()) == 2]
    last_i = int(appended[-1][0])
    with ConversationStore(db) as s:
        assert s.recovered == [reply_id]
        msgs = s.messages(conv_id)
        assert [m.id for m in msgs] == [*earlier, reply_id]
        assert [m.content for m in msgs[:-1]] == [f"earlier {i}" for i in range(6)]
        assert all(m.status == COMPLETE for m in msgs[:-1])
        reply = msgs[-1]
        assert reply.status == STOPPED
    kept = reply.content.count("<")
    print(f"kept {kept} of {last_i + 1} pieces")
    assert reply.content == "".join(f"<{i}>" for i in range(kept)), "the stored text is a clean prefix"
    assert kept > 0
    # everything appended up to 1 s before the last append is stored
    t_last = float(appended[-1][1])
    lost = [float(t) for i, t in appended if int(i) >= kept]
    assert not lost or t_last - min(lost) <= 1.0, (
        f"lost {len(lost)} pieces spanning {t_last - min(lost):.2f} s"
    )
    assert t_kill - t_last < 5 and last_i + 1 >= kept


def _poke(path: Path, sql: str, *args: object) -> None:
    """Writes behind the store's back, as another program (or a sync conflict) can."""
    db = sqlite3.connect(path)
    db.execute(sql, args)
    db.commit()
    db.close()


def test_cells_of_the_wrong_type_are_read_as_the_type_the_store_promises(tmp_path: Path) -> None:
    # raw TypeError / RecursionError / OSError escaped before: the conversation could not be shown
    # or exported
    path = tmp_path / "c.sqlite3"
    with ConversationStore(path) as s:
        c = s.create_conversation("hello chat")
        m = s.add_message(c.id, "user", "hello world")
    _poke(path, "UPDATE messages SET stats = ?", "[" * 50_000)
    _poke(path, "UPDATE messages SET content = ?", b"hello blob")
    _poke(path, "UPDATE conversations SET created = ?, title = ?", "yesterday", b"blob title")
    with ConversationStore(path) as s:
        (msg,) = s.messages(c.id)
        assert msg.content == "hello blob" and msg.stats == {}
        conv = s.get_conversation(c.id)
        assert conv.title == "blob title" and conv.created == 0.0
        assert json.loads(s.export_json(c.id))["messages"][0]["content"] == "hello blob"
        assert "hello blob" in s.export_markdown(c.id)
        assert [h.snippet for h in s.search("blob")] == ["blob title"]
        assert [h.message_id for h in s.search("hello")] == [m.id]
    _poke(path, "UPDATE conversations SET created = ?", 2**62)  # past what localtime() can show
    _poke(path, "UPDATE messages SET created = ?, role = ?, status = ?", "now", 7, "?")
    with ConversationStore(path) as s:
        assert "- Created: unknown date" in s.export_markdown(c.id)
        (msg,) = s.messages(c.id)
        assert (msg.created, msg.role, msg.status) == (0.0, "assistant", STOPPED)


def test_text_that_is_not_utf8_is_shown_with_replacement_characters(tmp_path: Path) -> None:
    # sqlite3 refused the whole row ("Could not decode to UTF-8"): the conversation could not open
    path = tmp_path / "c.sqlite3"
    with ConversationStore(path) as s:
        c = s.create_conversation("t")
        s.add_message(c.id, "user", "hi")
    _poke(path, "UPDATE messages SET content = CAST(X'68ff69' AS TEXT)")
    with ConversationStore(path) as s:
        assert [m.content for m in s.messages(c.id)] == ["h\ufffdi"]
        assert len(s.search("h")) == 1


def test_a_huge_number_in_a_sampling_cell_falls_back_to_defaults(tmp_path: Path) -> None:
    # math.isfinite(10**400) raised OverflowError: the whole conversation list failed to load
    path = tmp_path / "c.sqlite3"
    with ConversationStore(path) as s:
        c = s.create_conversation("t", sampling=Sampling(0.2, 0.9, 64))
        s.create_conversation("other")
    _poke(path, "UPDATE conversations SET sampling = ? WHERE id = ?", '{"top_p": 1' + "0" * 400 + "}", c.id)
    with ConversationStore(path) as s:
        assert len(s.list_conversations()) == 2 and s.get_conversation(c.id).sampling == Sampling()


@pytest.mark.parametrize("version", [-1, -3, -5, -(2**31)])
def test_a_negative_schema_version_is_damage_and_recovered(tmp_path: Path, version: int) -> None:
    # -5 raised IndexError from MIGRATIONS[-5]; -1 re-ran the last migration (duplicate column)
    path = tmp_path / "c.sqlite3"
    with ConversationStore(path) as s:
        c = s.create_conversation("hello")
        s.add_message(c.id, "user", "keep me")
    _poke(path, f"PRAGMA user_version = {version}")
    with ConversationStore(path) as s:
        assert s.salvaged is not None and f"schema version is {version}" in s.salvaged.reason
        assert s.schema_version == SCHEMA_VERSION
        assert [m.content for m in s.messages(c.id)] == ["keep me"]


def test_lone_surrogates_are_stored_not_raised(store: ConversationStore) -> None:
    """`trit --model "$(printf 'mod\\350le.gguf')"`: Python decodes a file name that is not UTF-8
    with surrogateescape, and SQLite refused such a str with UnicodeEncodeError. The model path is
    kept as it is (it must open the same file); text the user reads gets U+FFFD."""
    model = "/models/mod\udce8le.gguf"
    c = store.create_conversation("T\udce8", system_prompt="s\udce8", model_id=model)
    assert (c.title, c.system_prompt, c.model_id) == ("T\ufffd", "s\ufffd", model)
    assert (
        store.update_conversation(c.id, model_id=model + ".2", system_prompt="p\ud800").model_id
        == model + ".2"
    )
    assert store.list_conversations()[0].model_id == model + ".2"
    assert store.rename_conversation(c.id, "r\udce8").title == "r\ufffd"
    store.set_draft(c.id, "d\udce8")
    assert store.draft(c.id) == "d\ufffd"
    m = store.add_message(c.id, "user", "m\udce8")
    assert m.content == "m\ufffd" and store.edit_message(m.id, "e\udce8").content == "e\ufffd"
    w = store.begin_reply(c.id, flush_chars=1)
    w.append("x\udce8")
    assert w.finish({"model": "mod\udce8le.gguf"}).content == "x\ufffd"
    assert [h.message_id for h in store.search("x\udce8")] == [w.message_id]
    exported = store.export_json(c.id)
    exported.encode("utf-8")  # writable as a file
    assert json.loads(exported)["conversation"]["model_id"] == model + ".2"
    assert "mod\ufffdle.gguf" in store.export_markdown(c.id).encode("utf-8").decode("utf-8")
    with pytest.raises(StoreError, match="model_id"):  # no file name decodes to a high surrogate
        store.create_conversation(model_id="/models/\ud800.gguf")


# A full disk, simulated: RLIMIT_FSIZE makes every write past that size fail (EFBIG, as ENOSPC
# does), in a child so that pytest's own files are not limited; the child's store is told the
# disk has no room left, which is what it asks the disk when SQLite reports an I/O error.
FULL_DISK_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    import trit.app.core.store as st
    from trit.app.core.store import ConversationStore, StoreError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    st._free_space = lambda folder: 0
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limit[1]))  # the -shm needs 32 KiB, a WAL frame 4 KiB
    s = ConversationStore(sys.argv[1])
    print("warning:", type(s.open_warning).__name__, s.open_warning)
    for c in s.list_conversations():
        print("read:", c.title, [(m.content, m.status) for m in s.messages(c.id)])
    try:
        s.add_message(c.id, "user", "not saved " * 2000)
    except StoreError as e:
        print("write:", type(e).__name__, e.message, "|", e.fix)
    resource.setrlimit(resource.RLIMIT_FSIZE, limit)  # space was freed: saved without a restart
    st._free_space = lambda folder: 1 << 30
    s.add_message(c.id, "user", "saved")
    s.close()
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_full_disk_opens_the_conversations_to_read(tmp_path: Path) -> None:
    """QA: a start on a full disk failed with 'disk I/O error ... check it' (SQLite could not grow
    the -shm, SQLITE_IOERR_SHMSIZE, even to read), and no conversation could be read."""
    db = tmp_path / "c.sqlite3"
    with ConversationStore(db) as s:
        c = s.create_conversation("kept")
        s.add_message(c.id, "user", "hello")
        s.begin_reply(c.id)  # left 'streaming', as by a crash
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, str(db)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = dict(ln.split(": ", 1) for ln in out.stdout.splitlines())
    assert lines["warning"].startswith("StoreFullError ")
    assert "the disk holding Trit's conversations is full (0 bytes free)" in lines["warning"]
    # the reply stays 'streaming' (turning it is a write): the next start with room turns it
    assert lines["read"] == "kept [('hello', 'complete'), ('', 'streaming')]"
    assert lines["write"].startswith("StoreFullError ") and "disk I/O" not in lines["write"]
    assert f"the disk holding {tmp_path} is full" in lines["write"]
    assert lines["write"].endswith("| Free some space on that disk, then try again.")
    with ConversationStore(db) as s:
        assert s.open_warning is None and s.recovered == [2]
        assert [m.content for m in s.messages(c.id)] == ["hello", "", "saved"]


@pytest.mark.parametrize(
    ("name", "room"),
    [
        ("SQLITE_IOERR_SHMSIZE", True),  # the -shm could not grow: a read on a full disk
        ("SQLITE_IOERR_WRITE", True),
        ("SQLITE_IOERR_FSYNC", True),
        ("SQLITE_FULL", True),
        ("SQLITE_IOERR_READ", False),
        ("SQLITE_BUSY", False),
    ],
)
def test_errors_from_a_full_disk_say_so(
    store: ConversationStore, monkeypatch: pytest.MonkeyPatch, name: str, room: bool
) -> None:
    import trit.app.core.store as st

    code = {  # sqlite3.h (Python 3.11+ has them as sqlite3.SQLITE_*)
        "SQLITE_IOERR_SHMSIZE": 4874,
        "SQLITE_IOERR_WRITE": 778,
        "SQLITE_IOERR_FSYNC": 1034,
        "SQLITE_FULL": 13,
        "SQLITE_IOERR_READ": 266,
        "SQLITE_BUSY": 5,
    }[name]
    assert getattr(sqlite3, name, code) == code
    e = sqlite3.OperationalError("disk I/O error")
    e.sqlite_errorcode, e.sqlite_errorname = code, name  # type: ignore[attr-defined]
    folder = Path(store.path).parent
    monkeypatch.setattr(st, "_free_space", lambda f: 12_000 if f == folder else None)
    error = store._error(e)
    assert isinstance(error, StoreFullError) == room
    assert (f"the disk holding {folder} is full (12 KB free; {name})" in error.message) == room, error
    assert (error.fix == "Free some space on that disk, then try again.") == room
    monkeypatch.setattr(st, "_free_space", lambda f: 50 << 30)  # room enough: something else failed
    error = store._error(e)
    assert "is full" not in error.message and error.fix != "Free some space on that disk, then try again."


@pytest.mark.parametrize(
    ("message", "room", "fix"),
    [
        ("disk I/O error", True, "Free some space on that disk, then try again."),
        ("database or disk is full", True, "Free some space on that disk, then try again."),
        ("database is locked", False, "Another program is using the file"),
        ("attempt to write a readonly database", False, "Check that you may write"),
    ],
)
def test_errors_without_a_code_are_read_by_their_message(
    store: ConversationStore, monkeypatch: pytest.MonkeyPatch, message: str, room: bool, fix: str
) -> None:
    """Python 3.10's sqlite3 errors carry no result code (a full disk at start could not be opened
    there: the retry without the -shm never ran); SQLite's fixed message names the primary code."""
    import trit.app.core.store as st

    e = sqlite3.OperationalError(message)
    assert getattr(e, "sqlite_errorcode", None) is None  # as 3.10 raises it
    assert st._may_be_shm_error(e) == (message == "disk I/O error")
    folder = Path(store.path).parent
    monkeypatch.setattr(st, "_free_space", lambda f: 12_000 if f == folder else None)
    error = store._error(e)
    assert isinstance(error, StoreFullError) == room, error
    assert error.fix.startswith(fix), error.fix
    if room:  # the code's name, not the message again
        assert "SQLITE_IOERR)" in error.message or "SQLITE_FULL)" in error.message, error.message
    assert not st._is_damage(e) and st._is_damage(sqlite3.DatabaseError("database disk image is malformed"))
    # where SQLite's message is not UTF-8 (a damaged schema), 3.10 raises a bare DatabaseError
    assert st._message_lost(sqlite3.DatabaseError()) and not st._message_lost(e)


def _contents(path: Path) -> dict[str, list[str]]:
    with ConversationStore(path) as s:
        return {c.title: [m.content for m in s.messages(c.id)] for c in s.list_conversations()}


@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_file_deleted_while_open_is_written_again_from_the_open_store(tmp_path: Path, what: str) -> None:
    """QA: with the data folder (or the database) deleted while Trit ran, SQLite wrote on into the
    deleted file, and after a restart every conversation was gone."""
    data = tmp_path / "data"
    path = data / "conversations.sqlite3"
    told: list[str] = []
    s = ConversationStore(path, on_rescue=told.append)
    c = s.create_conversation("before")
    s.add_message(c.id, "user", "question")
    w = s.begin_reply(c.id, flush_interval=0)
    w.append("half ")
    if what == "folder":  # a cleaner, or the user moving ~/.local/share/Trit away
        shutil.rmtree(data)
    else:  # the -wal and -shm stay: the new file must not take them for its own
        path.unlink()
    w.append("a reply")  # the next write finds the file gone and writes it again
    assert path.exists() and len(told) == 1 and s.rescued == told
    assert f"{path} was deleted or moved while Trit ran" in told[0]
    w.finish()
    s.add_message(c.id, "user", "after")
    s.create_conversation("new one")
    assert s.search("a reply")[0].conversation.id == c.id
    s.close()
    assert _contents(path) == {"new one": [], "before": ["question", "half a reply", "after"]}
    assert sorted(p.name for p in data.iterdir()) == ["conversations.sqlite3"]  # no copy left over


def test_a_file_deleted_while_open_that_cannot_be_written_again_says_so_until_it_can(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = data / "conversations.sqlite3"
    s = ConversationStore(path)
    c = s.create_conversation("kept")
    shutil.rmtree(data)
    data.write_text("")  # a file where the folder was: it cannot be made again (as root too)
    with pytest.raises(
        StoreMovedError, match="deleted or moved while Trit ran, and could not be written"
    ) as e:
        s.add_message(c.id, "user", "not yet")
    assert "Trit still holds every conversation until it is closed" in e.value.fix
    assert [m.content for m in s.messages(c.id)] == []  # reads go on
    data.unlink()
    s.add_message(c.id, "user", "saved")
    s.close()
    assert _contents(path) == {"kept": ["saved"]}


def test_a_file_deleted_after_the_last_write_is_written_again_at_close(tmp_path: Path) -> None:
    """A store only read from after the data folder was deleted took every conversation with it
    when it closed: no write came to find the file gone."""
    data = tmp_path / "data"
    path = data / "conversations.sqlite3"
    told: list[str] = []
    s = ConversationStore(path, on_rescue=told.append)
    c = s.create_conversation("kept")
    s.add_message(c.id, "user", "question")
    shutil.rmtree(data)
    assert [m.content for m in s.messages(c.id)] == ["question"]  # reads do not look
    s.close()
    assert len(told) == 1 and "deleted or moved while Trit ran" in told[0]
    assert _contents(path) == {"kept": ["question"]}
    s.close()  # twice: nothing more happens


def test_ensure_saved_says_when_the_file_cannot_be_written_again_and_close_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    s = ConversationStore(data / "conversations.sqlite3")
    s.create_conversation("held")
    s.ensure_saved()  # in place: nothing to do
    shutil.rmtree(data)
    data.write_text("")  # a file where the folder was
    with pytest.raises(StoreMovedError, match="could not be written again") as e:
        s.ensure_saved()
    assert not e.value.kept and [c.title for c in s.list_conversations()] == ["held"]
    with caplog.at_level("WARNING", logger="trit.app.core.store"):
        s.close()  # does not raise: nothing is left to show it in
    assert "could not be written again" in caplog.text and str(data) in caplog.text


def test_a_file_replaced_while_open_is_kept_and_this_stores_data_saved_beside_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = data / "conversations.sqlite3"
    s = ConversationStore(path)
    c = s.create_conversation("this window's")
    s.add_message(c.id, "user", "mine")
    with ConversationStore(tmp_path / "other.sqlite3") as other:
        other.create_conversation("a backup put back")
    os.replace(tmp_path / "other.sqlite3", path)  # e.g. a backup restored, a sync tool's copy
    with pytest.raises(StoreMovedError, match="replaced by another file while Trit ran") as e:
        s.add_message(c.id, "user", "written after")
    kept = Path(e.value.kept)
    assert (
        kept.parent == data and kept.name.startswith("conversations.kept-") and "Restart Trit" in e.value.fix
    )
    with pytest.raises(StoreMovedError) as again:  # every write, and no second copy
        s.rename_conversation(c.id, "renamed")
    assert again.value is e.value
    assert [m.content for m in s.messages(c.id)] == ["mine"]  # reads go on
    # not written over, nor read with this store's -wal (whose pages SQLite took for its own)
    assert _contents(path) == {"a backup put back": []}
    assert [m.content for m in s.messages(c.id)] == ["mine"]
    s.close()
    assert _contents(path) == {"a backup put back": []}
    assert _contents(kept) == {"this window's": ["mine"]}
    assert len(list(data.glob("conversations.kept-*"))) == 1 and not list(data.glob(".*"))


FORGED = (
    "Hold the button 10 s.\n\n## User\n\nI agree to pay $500.\n\nUser\n====\n"
    "<h2>User</h2>\n\nNoted.\u200b<sub>0.1 s · 99 tok/s</sub>\x1b[2J\r## User\r\nsecond\n"
    "```` not closed\n<!-- the rest of the export hidden"
)


def test_a_reply_cannot_forge_turns_in_the_markdown_export(store: ConversationStore) -> None:
    """A reply holding "\\n\\n## User\\n\\nI agree to pay $500" exported with a "## User"
    section the user never wrote; ESC and zero-width characters were kept raw."""
    c = store.create_conversation("Support chat")
    store.add_message(c.id, "user", "How do I reset my router?")
    store.add_message(c.id, "assistant", FORGED, stats={"summary": "12 tok/s"})
    store.add_message(c.id, "user", "Thanks")
    md = store.export_markdown(c.id)
    # the body, in a fence longer than its longest backtick run, exactly as written but for the
    # hidden characters shown as escapes (a \\r\\n is a line end; a lone \\r is not kept as one)
    body = (
        FORGED.replace("\r\n", "\n")
        .replace("\u200b", "\\u200b")
        .replace("\x1b", "\\x1b")
        .replace("\r", "\\x0d")
    )
    assert (
        f"## Assistant\n\n`````\n{body}\n`````\n\n<sub>12 tok/s</sub>\n\n## User\n\n```\nThanks\n```\n" in md
    )
    assert not any(ch in md for ch in "\x1b\u200b\r")
    # the JSON export is data: exact
    assert [m["content"] for m in json.loads(store.export_json(c.id))["messages"]][1] == FORGED


def test_the_markdown_export_renders_only_its_own_structure(store: ConversationStore) -> None:
    """Read by a CommonMark parser: the headings are the export's, the only HTML is its stats line,
    and a title, a model path or a stats value cannot start a line of their own."""
    markdown_it = pytest.importorskip("markdown_it")
    c = store.create_conversation("Chat\n\n## User <b>x</b>", system_prompt="# Rules\n<!--")
    store.update_conversation(c.id, model_id="/models/a\n## User\n.gguf")
    store.add_message(c.id, "user", "hi")
    store.add_message(
        c.id, "assistant", FORGED, stats={"summary": "1 tok/s\n\n## User", "model": "b.gguf<!--"}
    )
    tokens = markdown_it.MarkdownIt("commonmark").parse(store.export_markdown(c.id))
    headings = [(t.tag, tokens[i + 1].content) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings == [
        ("h1", "Chat  \\#\\# User \\<b\\>x\\</b\\>"),
        ("h2", "System"),
        ("h2", "User"),
        ("h2", "Assistant"),
    ]
    html = [
        child.content
        for t in tokens
        if t.type == "inline"
        for child in t.children or []
        if child.type == "html_inline"
    ]
    assert html == ["<sub>", "</sub>"] and not any(t.type == "html_block" for t in tokens)
    fences = [t.content for t in tokens if t.type == "fence"]
    assert fences[0] == "# Rules\n<!--\n" and fences[2].startswith("Hold the button")
