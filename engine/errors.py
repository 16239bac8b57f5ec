"""Typed errors of the engine. Messages say what failed and what the user can do; data the UI
needs sits in attributes."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class ModelFormatError(EngineError):
    """A model file or directory is malformed, unsupported or inconsistent.

    ``path`` names the offending file; ``problem`` is the short reason without the path.
    """

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ModelNotFoundError(ModelFormatError):
    """The model path does not exist (it was moved or deleted)."""

    def __init__(self, path: object) -> None:
        super().__init__(path, "no such file or directory")


class UnsupportedCPUError(EngineError):
    """The requested instruction set is not available on this CPU or in this build."""


def megabytes(n: int) -> str:
    """A size for a message: "94 MB", "1,024 MB", "0.5 MB"."""
    return f"{n / (1 << 20):,.0f} MB" if n >= 1 << 20 else f"{n / (1 << 20):.1f} MB"


class OutOfMemoryError(EngineError):
    """An allocation for weights, activations or the KV cache failed.

    ``needed`` is the size of the allocation that failed in bytes (0: not known); ``part`` says
    what it was for: "weights" (reading or repacking the model), "session" (the KV cache and
    activations of a conversation) or "" (something else)."""

    def __init__(self, message: str, *, needed: int = 0, part: str = "") -> None:
        self.needed = int(needed)
        self.part = part
        super().__init__(message)


class UnsupportedOptionError(EngineError, ValueError):
    """This model cannot run with one of the load options asked for; ``option`` names it
    (load_model's keyword, e.g. "kv")."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(message)


class ContextFullError(EngineError):
    """The prompt plus generated tokens would exceed the model's context window."""


class CancelledError(EngineError):
    """A forward pass was stopped by cancel() (Model.logits, or a prompt run outside generate(),
    which reports a cancelled generation in its stats instead)."""


class NonFiniteLogitsError(EngineError):
    """The model computed NaN or infinite logits, so no token can be chosen. The weights are
    damaged (or overflow in this model's arithmetic): retrying cannot help, another file can."""
