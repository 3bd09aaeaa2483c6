"""The encoder's token table is read from an unlinked file on disk, with the same embeddings."""
import numpy as np
import torch

from crossmodal.model.clip import ClipModel
from crossmodal.model.paging import map_embedding_tables
from crossmodal.model.resolve import resolve
from tests.harness import TINY_MODEL

TEXTS = ["a red circle", "two small blue squares on a white background", "x"]


def _mapping_of(tensor: torch.Tensor) -> str:
    """The /proc/self/maps line of the memory that holds ``tensor``'s data."""
    address = tensor.data_ptr()
    for line in open("/proc/self/maps"):
        span = line.split()[0].split("-")
        if int(span[0], 16) <= address < int(span[1], 16):
            return line.strip()
    raise AssertionError(f"no mapping holds {address:#x}")


def test_the_token_table_is_a_private_map_of_a_deleted_file_with_the_same_embeddings(tmp_path):
    spec = resolve(TINY_MODEL, "none")
    in_memory = ClipModel(spec, "cpu")
    mapped = ClipModel(spec, "cpu", mmap_dir=str(tmp_path / "ws"))
    table = mapped.text.module.token_embedding.weight
    line = _mapping_of(table)
    assert str(tmp_path / "ws") in line and line.endswith("(deleted)") and " r" in line and "p " in line, line
    assert not table.requires_grad and list((tmp_path / "ws").iterdir()) == []  # no file left behind
    assert "(deleted)" not in _mapping_of(in_memory.text.module.token_embedding.weight)
    assert torch.equal(table, in_memory.text.module.token_embedding.weight)
    assert np.array_equal(mapped.encode_texts(TEXTS, 2), in_memory.encode_texts(TEXTS, 2))


def test_only_large_cpu_tables_move_and_writes_stay_private(tmp_path):
    small, large = torch.nn.Embedding(77, 32), torch.nn.Embedding(4096, 128)  # 10 KB, 2 MB
    before_small, before_large = small.weight.detach().clone(), large.weight.detach().clone()
    module = torch.nn.ModuleDict({"small": small, "large": large})
    assert map_embedding_tables(module, tmp_path) == 4096 * 128 * 4
    assert "(deleted)" in _mapping_of(large.weight) and "(deleted)" not in _mapping_of(small.weight)
    assert torch.equal(large.weight, before_large) and torch.equal(small.weight, before_small)
    with torch.no_grad():
        large.weight[0] += 1  # copy-on-write: the process's own page; the file is not written
    assert torch.equal(large.weight[0], before_large[0] + 1)


def test_a_folder_that_cannot_hold_the_file_keeps_the_table_in_memory(tmp_path, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    model = ClipModel(resolve(TINY_MODEL, "none"), "cpu", mmap_dir=str(blocked))
    assert "(deleted)" not in _mapping_of(model.text.module.token_embedding.weight)
    assert f"cannot map it from a file in {blocked}" in caplog.text
    assert model.encode_texts(TEXTS, 2).shape == (3, 32)
