"""Readers for the project's training data in ``../shared/data`` with patient/slide group ids.

Each task's rules (which rows, which label, which group) follow the data's SOURCE.md:
malaria groups by slide (the file-name prefix before ``_IMG``), WBC by original smear image,
X-rays by ``split_group`` (patients merged where the same person has two ids), and the
11 near-duplicate X-ray rows (``duplicate_of``) are dropped.
"""
from __future__ import annotations

import csv
import functools
import os
from pathlib import Path
from types import MappingProxyType

from medmodels.data.samples import LabelledSet, Sample
from medmodels.errors import DatasetError
from medmodels.zoo.registry import get_task

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_ENV = "MEDMODELS_SHARED_DATA"
XRAY_VIEWS = ("PA", "AP", "AP Supine", "AP semi erect")


def shared_data_root() -> Path | None:
    """``$MEDMODELS_SHARED_DATA`` or ``../shared/data`` beside the repository; None if absent."""
    env = os.environ.get(SHARED_ENV)
    root = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return root if root.is_dir() else None


def _root(root: Path | None) -> Path:
    root = root or shared_data_root()
    if root is None:
        raise DatasetError(
            "The training data folder was not found: set MEDMODELS_SHARED_DATA or place "
            "the data in ../shared/data beside the repository."
        )
    return root


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def slide_id(filename: str) -> str:
    """Malaria slide (patient) id: the NIH file-name prefix before ``_IMG``."""
    return filename.split("_IMG")[0]


def malaria_samples(root: Path | None = None) -> LabelledSet:
    base = _root(root) / "malaria"
    classes = get_task("malaria").classes
    samples = [
        Sample(
            name=row["filename"],
            source=base / row["class"] / row["filename"],
            label=classes.index(row["class"]),
            group=row.get("patient_id") or slide_id(row["filename"]),
        )
        for row in _read_csv(base / "manifest.csv")
    ]
    return LabelledSet(samples, classes)


def wbc_smear_samples(root: Path | None = None) -> LabelledSet:
    """The whole 640x480 BCCD originals with one subtype label; each image is its own group."""
    base = _root(root) / "wbc_originals"
    classes = get_task("wbc").classes
    samples = [
        Sample(
            name=row["image"],
            source=base / "JPEGImages" / row["image"],
            label=classes.index(row["category"]),
            group=Path(row["image"]).stem,
            meta=MappingProxyType({"dhruvp_split": row["dhruvp_split"]}),
        )
        for row in _read_csv(base / "split_dhruvp.csv")
        if row["category"] in classes
    ]
    return LabelledSet(samples, classes)


@functools.lru_cache(maxsize=2)
def wbc_samples(root: Path | None = None) -> LabelledSet:
    """The labelled white cell of each single-label BCCD original, cropped by its VOC box.

    Originals with no annotation file or not exactly one WBC box are skipped (listed in
    ``skipped``): the label cannot be tied to a cell. Crops travel as in-memory PNG bytes
    (about 50 MB for all), cached because cropping takes seconds and the set is immutable.
    """
    from medmodels.data.cell_crops import cell_crop, png_bytes, read_voc_boxes
    from medmodels.data.images import load_image
    from medmodels.data.samples import Skipped

    smears = wbc_smear_samples(root)
    annotations = _root(root) / "wbc_originals" / "Annotations"
    samples, skipped = [], list(smears.skipped)
    for s in smears.samples:
        xml = annotations / f"{Path(s.name).stem}.xml"
        boxes = read_voc_boxes(xml, "WBC") if xml.is_file() else []
        if len(boxes) != 1:
            skipped.append(Skipped(s.name, f"{len(boxes)} annotated WBC boxes (need exactly 1)"))
            continue
        crop = cell_crop(load_image(s.source, s.name), boxes[0])
        samples.append(Sample(s.name, png_bytes(crop), s.label, s.group, s.meta))
    return LabelledSet(samples, smears.classes, tuple(skipped))


def wbc_cell_copies(root: Path | None = None, copies: int = 5, seed: int = 0) -> LabelledSet:
    """``copies`` augmented versions of every WBC crop, grouped by their original.

    This rebuilds, on the crops, how the Kaggle set the WBC paper used was made: each
    original cell was rotated (±20°), shifted (±10%) and flipped many times, and the copies
    were then split at random by image. Split at random, copies of one cell land on both
    sides; split by group, they cannot. The two splits of this pool measure the leak.
    """
    import random

    from PIL import Image

    from medmodels.data.cell_crops import png_bytes
    from medmodels.data.images import load_image

    cells = wbc_samples(root)
    rng = random.Random(seed)
    samples = []
    for s in cells.samples:
        image = load_image(s.source, s.name)
        for k in range(copies):
            side = image.width
            shift = (rng.uniform(-0.1, 0.1) * side, rng.uniform(-0.1, 0.1) * side)
            copy = image.rotate(rng.uniform(-20, 20), resample=Image.BILINEAR, translate=shift)
            if rng.random() < 0.5:
                copy = copy.transpose(Image.FLIP_LEFT_RIGHT)
            if rng.random() < 0.5:
                copy = copy.transpose(Image.FLIP_TOP_BOTTOM)
            samples.append(Sample(f"{Path(s.name).stem}_copy{k}.png", png_bytes(copy), s.label, s.group))
    return LabelledSet(samples, cells.classes, cells.skipped)


def wbc_augmented_samples(root: Path | None = None) -> LabelledSet:
    """The Kaggle-style augmented images (``wbc/{train,test,test_simple}``); no group is known.

    Used only to demonstrate the leak of a random image split (SOURCE.md: the original
    cell cannot be recovered from the file name).
    """
    base = _root(root) / "wbc"
    classes = get_task("wbc").classes
    samples = [
        Sample(
            name=f"{row['split']}/{row['class']}/{row['filename']}",
            source=base / row["split"] / row["class"] / row["filename"],
            label=classes.index(row["class"]),
            group=None,
            meta=MappingProxyType({"split": row["split"]}),
        )
        for row in _read_csv(base / "manifest.csv")
    ]
    return LabelledSet(samples, classes)


def _xray_rows(root: Path | None) -> tuple[Path, list[dict[str, str]]]:
    base = _root(root) / "cxr"
    rows = [r for r in _read_csv(base / "metadata.csv") if not r.get("duplicate_of")]
    return base, rows


def _xray_sample(base: Path, row: dict[str, str], label: int | None) -> Sample:
    return Sample(
        name=row["filename"],
        source=base / "images" / row["filename"],
        label=label,
        group=row["split_group"] or row["patientid"],
        meta=MappingProxyType(dict(row)),
    )


def covid_samples(root: Path | None = None, *, external: bool = False) -> LabelledSet:
    """COVID-19 vs normal. ``external=False``: ieee8023 + NIH (train/test pool);
    ``external=True``: the Actualmed subset, the only source with both classes, never trained on.
    """
    base, rows = _xray_rows(root)
    classes = get_task("covid").classes
    wanted = (lambda r: r["dataset"] == "actualmed") if external else (
        lambda r: r["dataset"] != "actualmed"
    )
    samples = [
        _xray_sample(base, r, classes.index("COVID-19") if r["label_covid"] == "1" else classes.index("Normal"))
        for r in rows
        if r["label_covid"] in ("0", "1") and wanted(r)
    ]
    return LabelledSet(samples, classes)


def mortality_samples(root: Path | None = None) -> LabelledSet:
    """ieee8023 COVID-19 frontal X-rays; label from ``survival`` (Y: survived, N: died), else None."""
    base, rows = _xray_rows(root)
    classes = get_task("mortality").classes
    to_label = {"Y": classes.index("survived"), "N": classes.index("died")}
    samples = [
        _xray_sample(base, r, to_label.get(r["survival"]))
        for r in rows
        if r["dataset"] == "ieee8023" and r["label_covid"] == "1" and r["view"] in XRAY_VIEWS
    ]
    return LabelledSet(samples, classes)


_READERS = {
    "malaria": malaria_samples,
    "wbc": wbc_samples,
    "covid": covid_samples,
    "mortality": mortality_samples,
}


def shared_samples(task: str, root: Path | None = None) -> LabelledSet:
    """The training/evaluation pool of ``task`` with group ids (unlabelled rows keep label None)."""
    get_task(task)
    return _READERS[task](root)
