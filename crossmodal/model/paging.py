"""Serve a text tower's token table from a file on disk, so only the rows in use take memory.

A CLIP text tower's token table is its vocabulary times its width: 101 MB of fp32 for
ViT-B-32 (49,408 x 512), 1 GB for xlm-roberta-large (250,002 x 1,024); a query reads
only the rows of its own tokens. Copied to an unlinked file and mapped copy-on-write,
the table's pages are read in as queries first use them, and, being clean file pages,
the kernel can drop them again under memory pressure. The file must be on disk: on a
tmpfs its pages would sit in memory anyway (so the service gives its workspace).
Nothing changes in the numbers: a mapped row holds the same bytes as the tensor did.
"""
from __future__ import annotations

import mmap
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

MIN_TABLE_BYTES = 1 << 20  # a position table or a small vocabulary stays where it is
MAPPABLE = (torch.float32, torch.float16)  # dtypes NumPy can hold


def map_embedding_tables(module: torch.nn.Module, folder: str | Path) -> int:
    """Back every large CPU ``nn.Embedding`` of ``module`` with an unlinked file in ``folder``
    (created if missing); returns how many bytes left anonymous memory."""
    moved = 0
    for embedding in module.modules():
        weight = embedding.weight if isinstance(embedding, torch.nn.Embedding) else None
        if (weight is None or weight.device.type != "cpu" or weight.dtype not in MAPPABLE
                or weight.nbytes < MIN_TABLE_BYTES):
            continue
        embedding.weight = torch.nn.Parameter(_file_backed(weight.detach(), Path(folder)), requires_grad=False)
        moved += weight.nbytes
    return moved


def _file_backed(tensor: torch.Tensor, folder: Path) -> torch.Tensor:
    """The same values, in a private (copy-on-write) mapping of a file that has no name."""
    array = tensor.contiguous().numpy()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder) as file:  # unlinked: nothing is left behind, even on a crash
        array.tofile(file)
        file.flush()
        _drop_cached_copy(file.fileno())
        table = mmap.mmap(file.fileno(), array.nbytes, flags=mmap.MAP_PRIVATE)  # the map keeps the file
    if hasattr(table, "madvise"):
        table.madvise(mmap.MADV_RANDOM)  # a lookup reads the page of its row, not a readahead window
    return torch.from_numpy(np.frombuffer(table, dtype=array.dtype).reshape(array.shape))


def _drop_cached_copy(fd: int) -> None:
    """Write the file out and drop it from the page cache: mapped while still cached (in large
    folios), the first lookups would map megabytes of the table each (measured, ext4: 4.5 MB
    for one four-token query, 12 kB without)."""
    if hasattr(os, "fdatasync") and hasattr(os, "posix_fadvise"):
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
