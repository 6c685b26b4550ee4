"""CSV cells a spreadsheet cannot run: the one place every CSV the project writes goes through.

File names, patient ids and labels come from users. A cell that starts with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return is read as a formula by Excel, LibreOffice and
Google Sheets (``=cmd|' -c calc'!A0`` runs a program). As OWASP recommends, such a text cell
is written with a leading single quote, which spreadsheets show as text and do not display.
Real numbers (``-0.25``, ``1e-3``) are left alone: they are not formulas, and quoting them
would turn them into text. ``restore`` undoes the quote, so a CSV written here reads back
(for example as a label CSV) with the original names.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet evaluate a cell (OWASP CSV injection)."""
QUOTE = "'"
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def neutralise(value: Any) -> Any:
    """``value`` as a cell that cannot be a formula; numbers and safe text are unchanged."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    if _NUMBER.match(value):
        return value
    return QUOTE + value


def restore(value: str) -> str:
    """The text ``neutralise`` was given: drop the quote it added (and only that quote)."""
    if value.startswith(QUOTE) and value[1:2] and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value


def safe_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows (dicts) with every key and value neutralised."""
    return [{neutralise(k): neutralise(v) for k, v in row.items()} for row in rows]


def safe_frame(frame: Any) -> Any:
    """A copy of a pandas DataFrame with its text cells and column names neutralised."""
    out = frame.copy()
    out.columns = [neutralise(str(c)) if isinstance(c, str) else c for c in out.columns]
    for column in out.columns:
        if out[column].dtype == object or str(out[column].dtype).startswith("str"):
            out[column] = out[column].map(neutralise)
    return out


def frame_to_csv(frame: Any, path: str | Path | None = None, **kwargs: Any) -> str | None:
    """``DataFrame.to_csv`` with neutralised cells: the text (no ``path``) or written to ``path``."""
    kwargs.setdefault("index", False)
    return safe_frame(frame).to_csv(path, **kwargs)


def rows_to_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as CSV text with a header; every cell neutralised."""
    buffer = io.StringIO()
    write_rows(buffer, rows, columns)
    return buffer.getvalue()


def write_rows(fh: Any, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write a header and rows to an open text file; every cell neutralised."""
    writer = csv.writer(fh)
    writer.writerow([neutralise(c) for c in columns])
    for row in rows:
        writer.writerow([neutralise(row.get(c, "")) for c in columns])
