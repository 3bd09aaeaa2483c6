"""The one reader of caption tables: ``image,caption[,owner]`` CSVs (datagen and Flickr8k layouts).

Serving (``loaders``), training and evaluation all read captions through here, so a
table that indexes also trains and evaluates, with the same errors.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

CAPTION_HEADER = ("image", "caption")
ENCODING = "utf-8-sig"  # UTF-8, with or without the byte-order mark spreadsheet exports begin with
# a caption longer than csv's 128 kB default must reach the server's own, clearer text limit
csv.field_size_limit(64 * 2**20)


@dataclass(frozen=True)
class CaptionRow:
    line: int
    image: Path  # where the image file is (it may not exist)
    caption: str
    owner: Optional[str]


def header(path: Path) -> tuple[str, ...]:
    with path.open(newline="", encoding=ENCODING) as f:
        first = f.readline()
    return tuple(h.strip().lower() for h in next(csv.reader([first]), []))


def table_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) with lower-cased keys and stripped values."""
    with path.open(newline="", encoding=ENCODING) as f:
        for number, row in enumerate(csv.DictReader(f), start=2):
            yield number, {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}


def is_caption_table(path: Path) -> bool:
    return path.suffix.lower() in (".csv", ".txt") and header(path)[:2] == CAPTION_HEADER


def _image_dir(table: Path, image: str) -> Path:
    """Where a caption table's images live: beside it, or in images/ or Images/ (Flickr8k)."""
    for folder in (table.parent, table.parent / "images", table.parent / "Images"):
        if (folder / image).is_file():
            return folder
    return table.parent


def caption_rows(table: Path, images_dir: Optional[Path] = None) -> Iterator[CaptionRow]:
    """Every row; images are looked up in ``images_dir`` or else beside the table."""
    table = Path(table)
    missing = set(CAPTION_HEADER) - set(header(table))
    if missing:
        raise ValueError(f"{table}: missing column(s) {sorted(missing)}; header is {list(header(table))}")
    for number, row in table_rows(table):
        image, caption = row.get("image"), row.get("caption")
        if not image or not caption:
            raise ValueError(f"{table}:{number}: 'image' and 'caption' are required, got {row!r}")
        folder = Path(images_dir) if images_dir is not None else _image_dir(table, image)
        yield CaptionRow(number, folder / image, caption, row.get("owner") or None)


def read_captions(captions_csv: Path, images_dir: Path) -> list[tuple[Path, str]]:
    """(image path, caption) pairs for training and evaluation; every image must exist."""
    rows = [(r.image, r.caption) for r in caption_rows(Path(captions_csv), Path(images_dir))]
    if not rows:
        raise ValueError(f"{captions_csv}: no caption rows")
    absent = [str(p) for p, _ in rows if not p.is_file()]
    if absent:
        raise FileNotFoundError(f"{len(absent)} image(s) listed in {captions_csv} not found, e.g. {absent[0]}")
    return rows
