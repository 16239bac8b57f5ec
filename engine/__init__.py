"""trit.engine: ternary inference engine."""
from .errors import ContextFullError, EngineError, ModelFormatError, OutOfMemoryError, UnsupportedCPUError

__all__ = ["EngineError", "ModelFormatError", "UnsupportedCPUError", "OutOfMemoryError", "ContextFullError"]
