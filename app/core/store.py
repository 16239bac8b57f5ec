"""Conversation store: SQLite (WAL) in the per-user data dir.

Thread use: one ConversationStore may be shared by the GUI thread and the engine worker (the
ReplyWriter appends from the worker); every call takes the store's lock, so calls are serialised.

Crash safety: a reply is written through ReplyWriter, which keeps the text in memory and flushes
it (an UPDATE of that one row) at most every `flush_interval` seconds or `flush_chars` characters,
so a killed process loses at most the text of the last interval. Opening the store turns any
message still marked 'streaming' into 'stopped'.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sampling import Sampling

COMPLETE = "complete"
STREAMING = "streaming"
STOPPED = "stopped"
STATUSES = (COMPLETE, STREAMING, STOPPED)
ROLES = ("system", "user", "assistant")

DB_NAME = "conversations.sqlite3"


class StoreError(Exception):
    """The conversation database cannot be opened, is from a newer Trit, or an id is unknown."""


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


class ConversationStore:
    """Conversations and messages. `path=None` uses default_db_path(); ":memory:" works for tests.

    Attributes: path, schema_version, recovered (ids of messages turned from 'streaming' to
    'stopped' when the store was opened)."""

    def __init__(self, path: str | Path | None = None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> ConversationStore:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- conversations -----------------------------------------------------------------------------
    def create_conversation(
        self,
        title: str = "New chat",
        *,
        system_prompt: str = "",
        model_id: str = "",
        sampling: Sampling | None = None,
    ) -> Conversation:
        raise NotImplementedError

    def get_conversation(self, conversation_id: int) -> Conversation:
        """Raises NotFoundError (also for a purged one; a soft-deleted one is returned)."""
        raise NotImplementedError

    def list_conversations(self, *, deleted: bool = False) -> list[Conversation]:
        """Live conversations, most recently updated first (deleted=True: the soft-deleted ones)."""
        raise NotImplementedError

    def rename_conversation(self, conversation_id: int, title: str) -> Conversation:
        raise NotImplementedError

    def update_conversation(
        self,
        conversation_id: int,
        *,
        system_prompt: str | None = None,
        model_id: str | None = None,
        sampling: Sampling | None = None,
    ) -> Conversation:
        """Changes the given fields only."""
        raise NotImplementedError

    def delete_conversation(self, conversation_id: int) -> None:
        """Soft delete: hidden from list/search until restore_conversation() or purge_deleted()."""
        raise NotImplementedError

    def restore_conversation(self, conversation_id: int) -> Conversation:
        """Undo of delete_conversation()."""
        raise NotImplementedError

    def purge_deleted(self, older_than_s: float = 0.0) -> int:
        """Removes soft-deleted conversations (and their messages) deleted at least older_than_s
        seconds ago; returns how many were removed."""
        raise NotImplementedError

    def search(self, text: str, *, limit: int = 100) -> list[SearchHit]:
        """Live conversations whose title or any message contains text (case-insensitive for
        ASCII), most recently updated first; one hit per conversation."""
        raise NotImplementedError

    # -- messages ----------------------------------------------------------------------------------
    def messages(self, conversation_id: int) -> list[Message]:
        """The conversation's messages in order."""
        raise NotImplementedError

    def get_message(self, message_id: int) -> Message:
        raise NotImplementedError

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        status: str = COMPLETE,
        stats: dict[str, Any] | None = None,
    ) -> Message:
        raise NotImplementedError

    def edit_message(self, message_id: int, content: str) -> Message:
        """Replaces a message's text (stats and status unchanged). For edit-and-resend, call
        truncate_after(message_id) too, then generate a new reply."""
        raise NotImplementedError

    def set_stats(self, message_id: int, stats: dict[str, Any]) -> Message:
        raise NotImplementedError

    def delete_message(self, message_id: int) -> None:
        raise NotImplementedError

    def truncate_after(self, message_id: int) -> int:
        """Deletes every message after message_id in its conversation; returns how many."""
        raise NotImplementedError

    def begin_reply(
        self,
        conversation_id: int,
        *,
        role: str = "assistant",
        flush_interval: float = 0.5,
        flush_chars: int = 2000,
    ) -> ReplyWriter:
        """Adds an empty 'streaming' message and returns the writer that fills it."""
        raise NotImplementedError

    # -- export ------------------------------------------------------------------------------------
    def export_markdown(self, conversation_id: int) -> str:
        raise NotImplementedError

    def export_json(self, conversation_id: int) -> str:
        """{"format": "trit-conversation", "version": 1, "conversation": {...}, "messages": [...]}"""
        raise NotImplementedError


class ReplyWriter:
    """Streams one reply into the store. append() may be called from the engine worker thread for
    every piece of text; it only touches SQLite when flush_interval seconds have passed since the
    last flush or flush_chars characters are pending. finish()/stop() write the final text once.

    Attributes: message_id, text (everything appended so far), closed."""

    def __init__(
        self,
        store: ConversationStore,
        message_id: int,
        *,
        flush_interval: float = 0.5,
        flush_chars: int = 2000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        raise NotImplementedError

    def append(self, piece: str) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Writes the text appended so far (one UPDATE of this message's row)."""
        raise NotImplementedError

    def finish(self, stats: dict[str, Any] | None = None) -> Message:
        """Marks the reply complete with its stats."""
        raise NotImplementedError

    def stop(self, stats: dict[str, Any] | None = None) -> Message:
        """Marks the reply stopped (the user pressed Stop, or generation failed)."""
        raise NotImplementedError


__all__ = [
    "COMPLETE",
    "ROLES",
    "STATUSES",
    "STOPPED",
    "STREAMING",
    "Conversation",
    "ConversationStore",
    "Message",
    "NotFoundError",
    "ReplyWriter",
    "SearchHit",
    "StoreError",
    "default_db_path",
]
