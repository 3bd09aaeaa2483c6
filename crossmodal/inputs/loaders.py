"""Find indexable content in a folder or file: photos, caption CSVs, text files.

Every item gets a stable id derived from its path (and row), so indexing the
same data again updates instead of duplicating. Image bytes are read lazily, at
send time, so a large photo folder never sits in memory.
"""
from __future__ import annotations

import csv
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from crossmodal.api.schemas import ContentDoc
from crossmodal.inputs.captions import ENCODING, caption_rows, header, is_caption_table, table_rows
from crossmodal.inputs.images import IMAGE_SUFFIXES, ImageLimits
from crossmodal.settings import LIMITS, Limits

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

    def to_doc(self, limits: Optional[ImageLimits] = None) -> ContentDoc:
        blob = read_image_file(self.path, limits or ImageLimits()) if self.path else None
        return ContentDoc(id=self.id, owner=self.owner, modality=self.modality, text=self.text,
                          blob=blob, tags=self.tags)


class UnreadableFile(ValueError):
    """An image file that is not sent: the message says why."""


def read_image_file(path: Path, limits: ImageLimits) -> bytes:
    """The file's bytes, checked on the file actually opened: it may have changed since it
    was listed (a FIFO would block the reader forever, a grown file overflow a request)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise UnreadableFile(_unreadable(path, err)) from None
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise UnreadableFile(f"file: {path} is not a regular file")
        if found.st_size > limits.max_bytes:  # refused unread; a file still growing is caught below
            raise UnreadableFile(f"file: {path}: {found.st_size} bytes exceeds max_image_bytes={limits.max_bytes}")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limits.max_bytes + 1)
    except OSError as err:
        raise UnreadableFile(_unreadable(path, err)) from None
    finally:
        os.close(fd)
    if not data:
        raise UnreadableFile(f"file: {path} is empty")
    if len(data) > limits.max_bytes:
        raise UnreadableFile(f"file: {path}: {len(data)} bytes or more exceeds max_image_bytes={limits.max_bytes}")
    return data


def _unreadable(path: Path, err: OSError) -> str:
    return f"file: {path}: {err.strerror or err}"


def read_docs(sources: Iterable[Source], failed: Callable[[Source, str], None],
              limits: ImageLimits = ImageLimits()) -> Iterator[ContentDoc]:
    """The sources' documents, read one by one; an image file that is missing, not a regular
    file, empty, too large or unreadable goes to ``failed`` with the reason, unsent, instead
    of ending (or hanging) the whole run."""
    for source in sources:
        try:
            yield source.to_doc(limits)
        except UnreadableFile as err:
            failed(source, str(err))


def _caption_tag(caption: str, limits: Limits = LIMITS) -> str:
    """The caption copied into its image's tags, for display: cut to what fits ``max_tags_bytes``
    however it is escaped (12 JSON bytes a character at worst), so that a long caption, itself
    indexed in full as text, cannot fail its image on ``tags``."""
    most = limits.max_tags_bytes // 16
    return caption if len(caption) <= most else caption[:most - 1] + "…"


def captions(table: Path, default_owner: str) -> Iterator[Source]:
    """Images and their captions from an ``image,caption[,owner]`` table (Flickr8k style)."""
    seen: dict[str, int] = {}
    root = table.parent
    for row in caption_rows(table):
        owner = row.owner or default_owner
        image_id = row.image.relative_to(root).as_posix() if row.image.is_relative_to(root) else row.image.name
        if image_id not in seen:
            seen[image_id] = 0
            yield Source(image_id, owner, "image", path=row.image, tags={"caption": _caption_tag(row.caption)})
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
    with path.open(encoding=ENCODING) as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield Source(f"{path.name}:{number}", default_owner, "text", text=line.strip())


def _image_entries(folder: Path) -> list[Path]:
    """Every entry with an image suffix under ``folder`` but folders: broken links and other
    non-regular files too, so that they are reported (``read_docs``), not silently skipped."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())


def _table(path: Path, default_owner: str) -> list[Source]:
    return list(captions(path, default_owner) if is_caption_table(path) else texts(path, default_owner))


TABLE_ERRORS = (ValueError, OSError, csv.Error)  # UnicodeDecodeError is a ValueError


def discover(data: Path, default_owner: str = "demo",
             failed: Optional[Callable[[str, str], None]] = None) -> list[Source]:
    """Everything indexable under ``data`` (a folder, a caption table or a text file).

    In a folder, a table that cannot be read (its encoding, a row without caption) goes to
    ``failed`` (its name, the reason) and the rest of the folder is still found; without
    ``failed``, or when ``data`` is the table itself, the error is raised.
    """
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"--data: {data} does not exist")
    if not data.is_dir() and not data.is_file():
        raise ValueError(f"--data: {data} is neither a folder nor a regular file")
    if data.is_file():
        if data.suffix.lower() in IMAGE_SUFFIXES:
            return [Source(data.name, default_owner, "image", path=data)]
        return _table(data, default_owner)
    tables = [p for p in sorted(data.iterdir()) if p.suffix.lower() in (".csv", ".txt")]
    found = {}
    for table in tables:
        if not table.is_file():  # a FIFO would hang the read, a folder is no table
            if failed is not None and not table.is_dir():
                failed(table.name, f"file: {table} is not a regular file")
            continue
        try:
            found.update((source.id, source) for source in _table(table, default_owner))
        except TABLE_ERRORS as err:
            if failed is None:
                raise
            failed(table.name, f"file: {table}: {err}")
    for path in _image_entries(data):  # photos no caption table mentions
        image_id = path.relative_to(data).as_posix()
        found.setdefault(image_id, Source(image_id, default_owner, "image", path=path))
    return list(found.values())
