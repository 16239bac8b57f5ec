"""Lower-precision copies of float matrices built at load time (an optional, labelled speed-up).

The tied f16 head of BitNet 2B4T is 656 MB, 56% of the bytes every decoded token reads; as Q8_0
(8.5 bits per weight) it is 349 MB. Its logits then move by the Q8_0 rounding of the head weights
(~0.4% of each weight's magnitude), so this is off by default and reported in Model.info.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .weights import QuantTensor, bf16_to_f32, load_workers

Q8_0_BLOCK = 32
Q8_0_BYTES = 34  # f16 scale + 32 int8
GGML_Q8_0 = 8


def quantize_q8_0(
    m: np.ndarray,
    rows_per_step: int = 512,
    done: Callable[[int, int], None] | None = None,
    *,
    bf16: bool = False,
) -> np.ndarray:
    """float [rows, cols] (cols % 32 == 0; bf16: uint16 bfloat16 bits) -> uint8 [rows, cols / 32 *
    34] in llama.cpp's Q8_0
    layout, byte-identical to ggml's reference quantizer (d = amax / 127 as f16, q = x / d rounded
    half away from zero). Works in row slices so a 2B4T head never needs a float32 copy; done(r0,
    r1) is called after each slice (the loader drops a mapped source's pages there), from the
    thread that quantized it: slices run on up to four threads."""
    rows, cols = m.shape
    if cols % Q8_0_BLOCK:
        raise ValueError(f"Q8_0 needs rows of a multiple of {Q8_0_BLOCK} values, got {cols}")
    nb = cols // Q8_0_BLOCK
    out = np.empty((rows, nb * Q8_0_BYTES), dtype=np.uint8)
    view = out.reshape(rows, nb, Q8_0_BYTES)

    def run(r0: int) -> None:
        s = m[r0 : r0 + rows_per_step]
        f = bf16_to_f32(s) if bf16 else np.asarray(s, dtype=np.float32)
        b = f.reshape(-1, nb, Q8_0_BLOCK)
        d = np.abs(b).max(axis=-1, keepdims=True) / np.float32(127)
        inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
        x = b * inv
        q = np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))  # ggml's roundf: half away from zero
        view[r0 : r0 + rows_per_step, :, :2] = d.astype(np.float16).view(np.uint8)
        view[r0 : r0 + rows_per_step, :, 2:] = q.astype(np.int8).view(np.uint8)
        if done is not None:
            done(r0, min(rows, r0 + rows_per_step))

    # numpy releases the GIL on these array operations: slices run on several threads
    starts = range(0, rows, rows_per_step)
    with ThreadPoolExecutor(load_workers(len(starts))) as ex:
        list(ex.map(run, starts))  # re-raises a slice's error here
    return out


def float_head(head: object) -> tuple[np.ndarray, bool] | None:
    """(matrix [vocab, dim], whether its values are bfloat16 bits) of a float head: an F16 or F32
    array, or a BF16 / F32 QuantTensor (how Hugging Face heads are kept); None for a quantized one."""
    if isinstance(head, np.ndarray) and head.dtype in (np.float16, np.float32) and head.ndim == 2:
        return head, False
    if isinstance(head, QuantTensor) and head.type_name in ("BF16", "F16", "F32"):
        dtype = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}[head.type_name]
        return head.data.view(dtype).reshape(head.rows, head.cols), head.type_name == "BF16"
    return None


def q8_0_head(head: object, done: Callable[[int, int], None] | None = None) -> QuantTensor:
    """A float [vocab, dim] head (see float_head) as a Q8_0 QuantTensor (done: see quantize_q8_0)."""
    found = float_head(head)
    if found is None:
        raise ValueError(f"a Q8_0 head is built from a float head, not {type(head).__name__}")
    m, bf16 = found
    rows, cols = m.shape
    return QuantTensor(quantize_q8_0(m, done=done, bf16=bf16), rows, cols, GGML_Q8_0, "Q8_0")
