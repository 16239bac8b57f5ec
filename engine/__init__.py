"""trit.engine: ternary (BitNet b1.58) inference on the CPU.

from trit.engine import load_model
model = load_model("model.gguf")
gen = model.generate([1, 2, 3], max_tokens=16, temperature=0)
"""

from .errors import (
    CancelledError,
    ContextFullError,
    EngineError,
    ModelFormatError,
    ModelNotFoundError,
    NonFiniteLogitsError,
    OutOfMemoryError,
    UnsupportedCPUError,
    UnsupportedOptionError,
)
from .model import Generation, Model, ModelInfo, Session, Stats, load_model, release_free_memory
from .sampler import SamplingParams

__all__ = [
    "CancelledError",
    "ContextFullError",
    "EngineError",
    "Generation",
    "Model",
    "ModelFormatError",
    "ModelInfo",
    "ModelNotFoundError",
    "NonFiniteLogitsError",
    "OutOfMemoryError",
    "SamplingParams",
    "Session",
    "Stats",
    "UnsupportedCPUError",
    "UnsupportedOptionError",
    "load_model",
    "release_free_memory",
]
