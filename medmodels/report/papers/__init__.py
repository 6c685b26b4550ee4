"""The papers' tables, as data: one JSON file per paper, each table with its caption and location.

The numbers are quoted from the papers (``../shared/papers/*.txt``), never computed; the
report and the cards put them beside ours. A row is keyed by our registry model name, so
``paper_row("malaria_sarkar", "vgg16")`` is the paper's VGG-16 row.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PaperTable:
    table: str  # as the paper names it, e.g. "Table I"
    page: int | None
    page_note: str | None
    caption: str
    rows: dict[str, dict[str, Any]]  # model name -> label and the quoted values


@dataclass(frozen=True)
class Paper:
    key: str  # the file name without .json
    paper: str  # authors and title
    source: str  # the text copy the numbers were read from
    tables: dict[str, PaperTable]
    classes: tuple[str, ...] = ()
    note: str | None = None

    def row(self, model: str) -> dict[str, Any] | None:
        """The first table row quoted for ``model`` (None if the paper has none)."""
        for table in self.tables.values():
            if model in table.rows:
                return table.rows[model]
        return None

    def rows(self) -> dict[str, dict[str, Any]]:
        """Every quoted row of every table, by model name (first table wins)."""
        out: dict[str, dict[str, Any]] = {}
        for table in self.tables.values():
            for name, row in table.rows.items():
                out.setdefault(name, row)
        return out


@cache
def load_paper(key: str) -> Paper:
    data = json.loads((HERE / f"{key}.json").read_text(encoding="utf-8"))
    tables = {k: PaperTable(table=t["table"], page=t.get("page"), page_note=t.get("page_note"),
                            caption=t["caption"], rows=t["rows"])
              for k, t in data["tables"].items()}
    return Paper(key=key, paper=data["paper"], source=data["source"], tables=tables,
                 classes=tuple(data.get("classes", ())), note=data.get("note"))


def paper_keys() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.json"))


# Which papers a task's models are compared with, first match wins.
TASK_PAPERS: dict[str, tuple[str, ...]] = {
    "malaria": ("malaria_sarkar", "quadsnet_ali"),
    "wbc": ("wbc_asghar",),
    "covid": ("kd_babaahmadi",),
    "mortality": ("mortality_olowolayemo",),
}


def quoted_row(task: str, model: str) -> tuple[Paper, PaperTable, dict[str, Any]] | None:
    """The paper, table and row that quote ``task/model`` (None when no paper reports it)."""
    for key in TASK_PAPERS.get(task, ()):
        paper = load_paper(key)
        for table in paper.tables.values():
            if model in table.rows:
                return paper, table, table.rows[model]
    return None
