"""Reproduction: the papers' tables next to ours, from the same data as REPRODUCTION.md."""

from __future__ import annotations

import importlib
import re

import pandas as pd
import streamlit as st

from dashboard.common import REPO_ROOT, page_errors, page_header

page_header(
    "Reproduction",
    "The five papers' reported results next to what the models trained here reach. Every number of "
    "ours comes from a weights folder's metrics.json; the papers' numbers are quoted from their text.",
)

REPORT_FILE = REPO_ROOT / "REPRODUCTION.md"


def tables_from_library() -> list | None:
    """The tables as data from ``medmodels.report``, if that module offers them."""
    try:
        report = importlib.import_module("medmodels.report")
    except ImportError:
        return None
    for name in ("reproduction_tables", "build_tables", "tables"):
        fn = getattr(report, name, None)
        if callable(fn):
            return list(fn())
    return None


def show_table(table: object, index: int) -> None:
    """A table object with a title and rows (dataclass or dict), drawn as a dataframe."""
    get = table.get if isinstance(table, dict) else lambda k, d=None: getattr(table, k, d)
    title = get("title") or get("name")
    if title:
        st.subheader(str(title))
    notes = get("notes") or get("caption")
    rows = get("rows")
    columns = get("columns")
    frame = (
        pd.DataFrame(rows, columns=columns)
        if columns and rows and not isinstance(rows[0], dict)
        else pd.DataFrame(rows)
    )
    st.dataframe(frame, hide_index=True, width="stretch", key=f"repro_table_{index}")
    if notes:
        st.caption(" ".join(notes) if isinstance(notes, (list, tuple)) else str(notes))


@st.cache_data(ttl=60, show_spinner="Reading every metrics.json…")
def live_report() -> str | None:
    """The report rendered now from the weights folder, if the library can (same code as the file)."""
    try:
        report = importlib.import_module("medmodels.report")
    except ImportError:
        return None
    render = getattr(report, "render_report", None)
    if not callable(render):
        return None
    from medmodels.hub import HubSettings

    return render(HubSettings.from_env().weights_dir)


def for_page(text: str) -> str:
    """Drop the YAML header, HTML comments and the top-level title (the page has its own)."""
    text = re.sub(r"\A---\n.*?\n---\n", "", text, count=1, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    return re.sub(r"\A\s*# [^\n]*\n", "", text, count=1)


with page_errors("Building the reproduction tables"):
    tables = tables_from_library()
    if tables:
        for i, table in enumerate(tables):
            show_table(table, i)
    else:
        text = live_report()
        if text is None and REPORT_FILE.is_file():
            text = REPORT_FILE.read_text(encoding="utf-8")
        if text:
            st.markdown(for_page(text))
        else:
            st.info(
                "No reproduction report yet: it is generated from the trained weights "
                "(`python -m medmodels report`) once training runs have finished."
            )
