"""Reproduction: the papers' tables next to ours, from the same data as REPRODUCTION.md."""

from __future__ import annotations

import re

import streamlit as st

from dashboard.common import REPO_ROOT, page_errors, page_header

page_header(
    "Reproduction",
    "The five papers' reported results next to what the models trained here reach. Every number of "
    "ours comes from a weights folder's metrics.json; the papers' numbers are quoted from their text.",
)

REPORT_FILE = REPO_ROOT / "REPRODUCTION.md"


@st.cache_data(ttl=60, show_spinner="Reading every metrics.json…")
def live_report() -> str | None:
    """The report rendered now from the weights folder in use (the code that writes the file).

    None when that folder does not exist here (weights served from the Hub only): then the
    committed REPRODUCTION.md is shown instead.
    """
    from medmodels.hub import HubSettings
    from medmodels.report import render_report

    weights_dir = HubSettings.from_env().weights_dir
    return render_report(weights_dir) if weights_dir.is_dir() else None


def for_page(text: str) -> str:
    """Drop the YAML header, HTML comments and the top-level title (the page has its own)."""
    text = re.sub(r"\A---\n.*?\n---\n", "", text, count=1, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    return re.sub(r"\A\s*# [^\n]*\n", "", text, count=1)


with page_errors("Building the reproduction tables"):
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
