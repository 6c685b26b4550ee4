"""Replace one ``## `` section of a markdown document, leaving the others alone (bench/RESULTS.md)."""
from __future__ import annotations

import re
from pathlib import Path


def replace_section(path: Path | str, text: str, title: str = "# Benchmarks") -> Path:
    """Put ``text`` (whose first line is its ``## `` heading) in place of that section, or append it.

    Sections are separated by one blank line; a missing file starts with ``title``.
    """
    path = Path(path)
    heading = text.lstrip("\n").splitlines()[0]
    body = text.strip("\n") + "\n"
    old = path.read_text(encoding="utf-8") if path.is_file() else title + "\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _m: body + "\n", old).rstrip("\n") + "\n"
    else:
        new = old.rstrip("\n") + "\n\n" + body
    path.write_text(new, encoding="utf-8")
    return path
