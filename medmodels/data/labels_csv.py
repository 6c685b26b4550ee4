"""Parse a label CSV (``filename,label[,patient_id]``) into rows matched to a task's classes.

Spreadsheets export CSVs in many shapes, so the reader is tolerant where intent is clear and
strict where a guess could silently mislabel images:

* tolerant: UTF-8 with or without BOM, UTF-16 with BOM, Latin-1 as a fallback; ``,`` ``;``
  or tab as delimiter; header names in any case with a few common aliases (``class`` for
  ``label``, ``patientid`` for ``patient_id``...); labels as class names in any case and with
  ``_``/``-``/space differences, or as class numbers; extra columns (kept in ``meta``);
  file names with subfolders or Windows backslashes;
* strict (``DatasetError``): a missing ``filename`` or ``label`` column, labels that are not
  classes of the task, a file listed twice, binary content.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from medmodels.csv_safety import restore
from medmodels.data.archive import printable
from medmodels.data.samples import Skipped
from medmodels.errors import DatasetError

log = logging.getLogger(__name__)

FILENAME_COLUMNS = ("filename", "file_name", "file", "image", "image_name", "path")
LABEL_COLUMNS = ("label", "class", "category")
GROUP_COLUMNS = ("patient_id", "patientid", "patient", "group")
EXPECTED_HEADER = "filename,label,patient_id"
_INTEGER = re.compile(r"^([0-9]+)(\.0*)?$")


def class_key(name: str) -> str:
    """The form class names are compared in: case-folded, without ``_``, ``-``, ``.`` and spaces."""
    return re.sub(r"[\s_\-.]+", "", name.strip().casefold())


def class_lookup(classes: Sequence[str]) -> dict[str, int]:
    """Map each class's ``class_key`` to its index; two classes with one key is a bug."""
    lookup: dict[str, int] = {}
    for index, name in enumerate(classes):
        key = class_key(name)
        if key in lookup:
            raise ValueError(f"Classes {classes[lookup[key]]!r} and {name!r} cannot be told apart.")
        lookup[key] = index
    return lookup


def normalise_filename(name: str) -> str:
    """'./imgs\\a.png ' -> 'imgs/a.png': the form used to match CSV rows to files."""
    parts = [p for p in name.strip().replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


@dataclass(frozen=True)
class LabelRow:
    """One labelled file from the CSV. ``line`` is the CSV line number, for messages."""

    filename: str
    label: int
    group: str | None
    line: int
    meta: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class LabelTable:
    """The usable rows, the rows left out (no file name or no label), and how the file was decoded."""

    rows: tuple[LabelRow, ...]
    skipped: tuple[Skipped, ...]
    encoding: str


def _subject(name: str | None) -> str:
    return f"The label CSV '{name}'" if name else "The label CSV"


def _decode(data: bytes, subject: str) -> tuple[str, str]:
    utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")  # Excel's "Unicode text"
    candidates = ("utf-16",) if utf16 else ("utf-8-sig", "latin-1")
    for encoding in candidates:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\x00" in text:
            break
        if encoding == "latin-1":
            log.warning("a label CSV is not UTF-8; it was read as Latin-1.")
        return text.lstrip("\ufeff"), encoding
    raise DatasetError(
        f"{subject} is not a text file (it contains binary data); "
        "save it from your spreadsheet as 'CSV UTF-8'."
    )


def _delimiter(text: str) -> str:
    header = next((line for line in text.splitlines() if line.strip()), "")
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _find_column(header: list[str], aliases: tuple[str, ...]) -> int | None:
    keys = [h.strip().strip('"').lstrip("\ufeff").removeprefix("ï»¿").strip().casefold() for h in header]
    for alias in aliases:
        if alias in keys:
            return keys.index(alias)
    return None


def _label_index(text: str, lookup: dict[str, int], n_classes: int) -> int | None:
    index = lookup.get(class_key(text))
    match = _INTEGER.match(text.strip())
    if index is None and match and len(match.group(1)) <= 6:  # "1", "1.0"; never "1e400"
        number = int(match.group(1))
        index = number if number < n_classes else None
    return index


def _or_list(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _few(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(f"'{printable(i, 60)}'" for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def parse_labels_csv(
    data: bytes, classes: Sequence[str], *, name: str | None = None, max_rows: int = 20_000
) -> LabelTable:
    """Parse ``data`` (the CSV file's bytes) against ``classes``; ``name`` is used in messages."""
    subject = _subject(name)
    text, encoding = _decode(data, subject)
    if not text.strip():
        raise DatasetError(
            f"{subject} is empty; it needs a header row like {EXPECTED_HEADER} "
            "(patient_id is optional) and one row per image."
        )
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    try:
        header = next(reader)
        columns = {
            "filename": _find_column(header, FILENAME_COLUMNS),
            "label": _find_column(header, LABEL_COLUMNS),
        }
        missing = [f"'{c}'" for c, i in columns.items() if i is None]
        if missing:
            found = ",".join(h.strip() for h in header)[:200]
            raise DatasetError(
                f"{subject} has no {' or '.join(missing)} column; expected a header row like "
                f"{EXPECTED_HEADER} (patient_id is optional), but the header is: {found}."
            )
        group_col = _find_column(header, GROUP_COLUMNS)
        rows, skipped, unknown = _read_rows(reader, header, columns, group_col, classes, max_rows, subject)
    except csv.Error:
        raise DatasetError(
            f"{subject} is not a well-formed CSV file (problem on line {reader.line_num}); "
            "check for unbalanced quotes."
        ) from None
    if unknown:
        numbers = f"0 to {len(classes) - 1}" if len(classes) > 2 else "0 and 1"
        raise DatasetError(
            f"{subject} has labels that are not classes of this task: {_few(sorted(unknown))}. "
            f"The classes are {_or_list(list(classes))} (or their numbers {numbers})."
        )
    repeated = sorted(n for n, c in Counter(r.filename for r in rows).items() if c > 1)
    if repeated:
        raise DatasetError(
            f"{subject} lists {'a file' if len(repeated) == 1 else f'{len(repeated)} files'} "
            f"more than once: {_few(repeated)}; "
            "each file may appear only once."
        )
    if not rows and not skipped:
        raise DatasetError(f"{subject} has a header row but no rows of files and labels.")
    return LabelTable(tuple(rows), tuple(skipped), encoding)


def _cell_reader(cells: list[str]) -> Callable[[int | None], str]:
    """Cell by column index; short rows read as empty cells. The quote ``csv_safety`` puts
    before a formula-like cell is dropped, so a per-image CSV written here reads back."""
    return lambda i: restore(cells[i].strip()) if i is not None and i < len(cells) else ""


def _read_rows(
    reader: csv.reader,  # type: ignore[valid-type]
    header: list[str],
    columns: dict[str, int | None],
    group_col: int | None,
    classes: Sequence[str],
    max_rows: int,
    subject: str,
) -> tuple[list[LabelRow], list[Skipped], set[str]]:
    lookup = class_lookup(classes)
    file_col, label_col = columns["filename"], columns["label"]
    assert file_col is not None and label_col is not None
    used = {file_col, label_col, group_col}
    extra = [(i, h.strip()) for i, h in enumerate(header) if i not in used and h.strip()]
    rows: list[LabelRow] = []
    skipped: list[Skipped] = []
    unknown: set[str] = set()
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        if len(rows) + len(skipped) >= max_rows:
            raise DatasetError(
                f"{subject} has more than {max_rows:,} rows, the most read at once; split the set."
            )
        line = reader.line_num
        cell = _cell_reader(cells)
        filename = normalise_filename(cell(file_col))
        if not filename:
            skipped.append(Skipped(f"line {line}", "this line of the label CSV has no file name."))
            continue
        label_text = cell(label_col)
        if not label_text:
            skipped.append(Skipped(filename, "the label CSV gives no label for this file."))
            continue
        label = _label_index(label_text, lookup, len(classes))
        if label is None:
            unknown.add(label_text)
            continue
        meta = MappingProxyType({h: cell(i) for i, h in extra})
        rows.append(LabelRow(filename, label, cell(group_col) or None, line, meta))
    return rows, skipped, unknown
