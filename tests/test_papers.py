"""The papers' tables as data: every file loads, names registered models, and quotes the paper's text."""
from __future__ import annotations

from pathlib import Path

import pytest

from medmodels.report.papers import TASK_PAPERS, load_paper, paper_keys
from medmodels.zoo.registry import get_entry

REPO = Path(__file__).resolve().parents[1]


def _numbers(row: dict) -> list[float]:
    out = []
    for k, v in row.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "parameters":
            out.append(v)
        elif isinstance(v, dict):
            out += _numbers(v)
    return out


def _printed(v: float) -> list[str]:
    forms = {str(v), f"{v:.2f}", f"{v:.3f}", f"{v:.4f}", f"{100 * v:.2f}%", f"{v:.2f}s", f"{v:.1f}"}
    if float(v).is_integer():
        forms.add(str(int(v)))
    if 0 <= v < 1:
        forms.add(f"{100 * v:05.2f}%")  # "00.00%"
    return sorted(forms)


def test_every_paper_file_loads_and_every_task_paper_exists() -> None:
    keys = paper_keys()
    assert {k for ks in TASK_PAPERS.values() for k in ks} <= set(keys)
    for key in keys:
        paper = load_paper(key)
        assert paper.tables and paper.paper and paper.source.startswith("../shared/papers/")
        for table in paper.tables.values():
            assert table.table and table.caption and table.rows


@pytest.mark.parametrize("task", sorted(TASK_PAPERS))
def test_every_quoted_row_is_a_registered_model(task: str) -> None:
    for key in TASK_PAPERS[task]:
        for name in load_paper(key).rows():
            get_entry(task, name)  # raises for an unknown name


@pytest.mark.parametrize("key", paper_keys())
def test_every_quoted_number_is_printed_in_the_paper(key: str) -> None:
    paper = load_paper(key)
    text_file = REPO / paper.source
    if not text_file.is_file():
        pytest.skip(f"{paper.source} is not beside the repository")
    text = text_file.read_text(encoding="utf-8")
    for table in paper.tables.values():
        for name, row in table.rows.items():
            for v in _numbers(row):
                assert any(form in text for form in _printed(v)), f"{key} {table.table} {name}: {v}"
