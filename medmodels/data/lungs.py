"""Reader for ``../shared/data/lungs``: Shenzhen chest X-rays with manual lung masks.

Every NLM case number (``patient_id``) is one group; splits are by case and stratified by
finding (normal / TB), as the data's SOURCE.md asks. The images may be used for training
here but never shipped.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medmodels.data.shared import shared_data_root
from medmodels.data.splits import grouped_split
from medmodels.errors import DatasetError

FINDINGS = ("normal", "tb")


@dataclass(frozen=True)
class LungCase:
    """One X-ray / mask pair of the Shenzhen lung set."""

    name: str
    image: Path
    mask: Path
    finding: str
    case: str


def lungs_root(root: Path | None = None) -> Path:
    base = (root or shared_data_root() or Path("/nonexistent")) / "lungs"
    if not (base / "manifest.csv").is_file():
        raise DatasetError(
            f"The lung mask data was not found at {base} (manifest.csv missing): set "
            "MEDMODELS_SHARED_DATA or place the data in ../shared/data beside the repository."
        )
    return base


def lung_cases(root: Path | None = None) -> list[LungCase]:
    """Every pair listed in ``manifest.csv``, in file order."""
    base = lungs_root(root)
    with (base / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [
        LungCase(name=r["filename"], image=base / "images" / r["filename"], mask=base / "masks" / r["filename"],
                 finding=r["finding"], case=r["patient_id"])
        for r in rows
    ]


def case_split(cases: list[LungCase], fractions: tuple[float, ...], seed: int) -> list[list[LungCase]]:
    """Case-disjoint parts stratified by finding (the project's greedy grouped split)."""
    labels = [FINDINGS.index(c.finding) for c in cases]
    parts = grouped_split(labels, [c.case for c in cases], fractions, seed=seed)
    return [[cases[i] for i in part] for part in parts]


def read_mask(path: Path) -> np.ndarray:
    """A stored mask as a boolean array (255 = lung)."""
    return np.asarray(Image.open(path).convert("L")) > 127
