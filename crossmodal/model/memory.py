"""Memory an encoder process holds beyond its weights: what loading a tower freed, which
this gives back to the operating system, and the kernels oneDNN keeps (``bound_kernel_caches``).

Loading builds the whole open_clip model (and, with a checkpoint, a second copy in
the state dict), then keeps one tower: hundreds of MB are freed. glibc raises its
mmap threshold after the first large free, so later tensors come from the heap and
what they free stays in the process. Fixing the threshold and trimming after the load
returns it (measured, ViT-B-32 text tower from a checkpoint: the load left 390 MB of
anonymous memory, 265 MB with this; with random weights 285 vs 265 MB).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from functools import lru_cache
from typing import Optional

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 1 << 20  # tensors above 1 MiB get their own mapping, returned on free


@lru_cache(maxsize=1)
def _libc() -> Optional[ctypes.CDLL]:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def fix_mmap_threshold() -> None:
    """Large allocations from now on are mmapped, so freeing them returns the memory (glibc only)."""
    if _libc() is not None:
        _libc().mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def bound_kernel_caches(capacity: int) -> None:
    """Keep at most ``capacity`` oneDNN matmul kernels (unless the operator set the limits).

    oneDNN compiles a kernel for each shape a packed linear (``cpu_layout.PackedLinear``) runs
    at, and by default keeps 1,024 of them, in its own cache and in torch's (ideep's):
    ~0.6 MB each for ViT-B-32, so texts of 37 lengths in 3 batch sizes grew the encoder by
    255 MB; by ~65 MB with 64 kept and rows rounded (``cpu_layout.padded_rows``). Both caches
    read their limit when the first kernel is built, so this runs before the model loads."""
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(name, str(capacity))


def release_freed_memory() -> None:
    """Collect, then hand the heap's free pages back to the OS (no-op where glibc is absent)."""
    gc.collect()
    if _libc() is not None:
        _libc().malloc_trim(0)
