"""Find indexable content in a folder or file: photos, caption CSVs, text files.

Every item gets a stable id derived from its path (and row), so indexing the
same data again updates instead of duplicating. Image bytes are read lazily, at
send time, so a large photo folder never sits in memory.
"""
from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from crossmodal.api.schemas import ContentDoc
from crossmodal.inputs.captions import caption_rows, header, is_caption_table, table_rows
from crossmodal.inputs.images import IMAGE_SUFFIXES, ImageLimits, too_large

TEXT_HEADER = ("text",)


@dataclass(frozen=True)
class Source:
    """One item to index; ``path`` is read when the document is built."""

    id: str
    owner: str
    modality: str
    text: Optional[str] = None
    path: Optional[Path] = None
    tags: Optional[dict] = None

    def to_doc(self) -> ContentDoc:
        blob = self.path.read_bytes() if self.path else None
        return ContentDoc(id=self.id, owner=self.owner, modality=self.modality, text=self.text,
                          blob=blob, tags=self.tags)


def _unreadable(path: Path, err: OSError) -> str:
    return f"file: {path}: {err.strerror or err}"


def unsendable(sources: Iterable[Source], limits: ImageLimits = ImageLimits()) -> Iterator[tuple[Source, str]]:
    """Image sources that are missing, not regular files (a FIFO would block the reader),
    empty, or that the server would refuse for their size, with the reason: a client need
    not read (nor send) them, and their siblings still go."""
    for source in sources:
        if source.path is None:
            continue
        try:
            found = source.path.stat()
        except OSError as err:
            yield source, _unreadable(source.path, err)
            continue
        if not stat.S_ISREG(found.st_mode):
            yield source, f"file: {source.path} is not a regular file"
        elif not found.st_size:
            yield source, f"file: {source.path} is empty"
        elif too_large(found.st_size, limits, field="file"):
            yield source, too_large(found.st_size, limits, field="file")


def read_docs(sources: Iterable[Source], failed: Callable[[Source, str], None]) -> Iterator[ContentDoc]:
    """The sources' documents, read one by one; one that cannot be read (permissions, an I/O
    error) goes to ``failed`` with the reason instead of ending the whole run."""
    for source in sources:
        try:
            yield source.to_doc()
        except OSError as err:
            failed(source, _unreadable(source.path, err))


def captions(table: Path, default_owner: str) -> Iterator[Source]:
    """Images and their captions from an ``image,caption[,owner]`` table (Flickr8k style)."""
    seen: dict[str, int] = {}
    root = table.parent
    for row in caption_rows(table):
        owner = row.owner or default_owner
        image_id = row.image.relative_to(root).as_posix() if row.image.is_relative_to(root) else row.image.name
        if image_id not in seen:
            seen[image_id] = 0
            yield Source(image_id, owner, "image", path=row.image, tags={"caption": row.caption})
        seen[image_id] += 1
        yield Source(f"{image_id}#caption{seen[image_id]}", owner, "text", text=row.caption,
                     tags={"image": image_id})


def texts(path: Path, default_owner: str) -> Iterator[Source]:
    """Texts from a ``text[,owner]`` CSV, or one text per line of a plain file."""
    if path.suffix.lower() == ".csv" and header(path)[:1] == TEXT_HEADER:
        for number, row in table_rows(path):
            if row.get("text"):
                yield Source(f"{path.name}:{number}", row.get("owner") or default_owner, "text", text=row["text"])
        return
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield Source(f"{path.name}:{number}", default_owner, "text", text=line.strip())


def _image_entries(folder: Path) -> list[Path]:
    """Every entry with an image suffix under ``folder`` but folders: broken links and other
    non-regular files too, so that they are reported (``unsendable``), not silently skipped."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())


def discover(data: Path, default_owner: str = "demo") -> list[Source]:
    """Everything indexable under ``data`` (a folder, a caption table or a text file)."""
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"--data: {data} does not exist")
    if data.is_file():
        if data.suffix.lower() in IMAGE_SUFFIXES:
            return [Source(data.name, default_owner, "image", path=data)]
        return list(captions(data, default_owner) if is_caption_table(data) else texts(data, default_owner))
    tables = [p for p in sorted(data.iterdir()) if p.is_file() and p.suffix.lower() in (".csv", ".txt")]
    found = {}
    for table in tables:
        for source in (captions(table, default_owner) if is_caption_table(table) else texts(table, default_owner)):
            found[source.id] = source
    for path in _image_entries(data):  # photos no caption table mentions
        image_id = path.relative_to(data).as_posix()
        found.setdefault(image_id, Source(image_id, default_owner, "image", path=path))
    return list(found.values())
