"""Property tests: whatever bytes a user uploads, the readers give a result or a MedModelsError.

Any other exception would reach the user as a traceback, so it is a bug. Inputs are random
bytes, valid images and zips with random damage, and zips and CSVs built from hostile parts.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from medmodels.data.datasets import ReadLimits, read_images, read_labelled_set
from medmodels.data.images import load_image
from medmodels.data.labels_csv import parse_labels_csv
from medmodels.data.samples import LabelledSet
from medmodels.errors import MedModelsError

CLASSES = ("Parasitized", "Uninfected")
FUZZ = settings(
    max_examples=200,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow],
)
# Small limits keep a damaged header from making one example decode a huge image.
LIMITS = ReadLimits(
    max_files=200, max_total_uncompressed_bytes=5_000_000, max_member_bytes=1_000_000, max_pixels=1_000_000
)


def _encode(fmt: str, mode: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    img = Image.linear_gradient("L").resize((24, 16)).convert(mode)
    if fmt == "GIF":
        img.save(buffer, format=fmt, save_all=True, append_images=[img.rotate(90)], **kwargs)
    else:
        img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


SEED_IMAGES = [
    _encode("PNG", "RGB"),
    _encode("PNG", "P", transparency=0),
    _encode("JPEG", "RGB"),
    _encode("JPEG", "CMYK"),
    _encode("GIF", "P"),
    _encode("TIFF", "I;16"),
    _encode("TIFF", "RGBA", compression="tiff_deflate"),
    _encode("BMP", "RGB"),
    _encode("WEBP", "RGB"),
]


@st.composite
def damaged(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid file with a few bytes overwritten and maybe cut short."""
    data = bytearray(seeds[draw(st.integers(0, len(seeds) - 1))])
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut] if draw(st.booleans()) else data)


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are part of the fuzzing
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                try:
                    zf.writestr(name, data)
                except (IndexError, ValueError):  # names zipfile itself cannot write (e.g. "\0x")
                    continue
    return buffer.getvalue()


PART = st.one_of(
    st.sampled_from(
        [
            "Parasitized",
            "uninfected",
            "UNINFECTED",
            "testset",
            "..",
            ".",
            "",
            "__MACOSX",
            ".DS_Store",
            "Thumbs.db",
            "a.png",
            "b.JPG",
            "labels.csv",
            "x.zip",
            "C:",
            "~$x",
        ]
    ),
    st.text(min_size=1, max_size=8),
)
NAME = st.lists(PART, min_size=1, max_size=4).map("/".join)
CSV_CELL = st.one_of(
    st.sampled_from(
        [
            "a.png",
            "Parasitized/a.png",
            "b.JPG",
            "Uninfected",
            "parasitized",
            "0",
            "1",
            "7",
            "cat",
            "",
            "P1",
            "9" * 400,
            "1.0",
            "1e3",
            "٣",
            '"',
            "x\ny",
        ]
    ),
    st.text(max_size=6),
)
CSV_TEXT = st.lists(st.lists(CSV_CELL, min_size=0, max_size=4).map(",".join), max_size=6).map(
    lambda rows: "\n".join(["filename,label,patient_id", *rows])
)
CSV_BYTES = st.one_of(
    st.binary(max_size=300),
    st.tuples(CSV_TEXT, st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"])).map(
        lambda t: t[0].encode(t[1], errors="replace")
    ),
)
SEED = st.integers(0, len(SEED_IMAGES) - 1).map(SEED_IMAGES.__getitem__)
MEMBER_DATA = st.one_of(SEED, damaged(SEED_IMAGES), CSV_BYTES, st.binary(max_size=64))
ZIPS = st.lists(st.tuples(NAME, MEMBER_DATA), max_size=6).map(_zip)


@FUZZ
@given(st.one_of(st.binary(max_size=2048), damaged(SEED_IMAGES)))
def test_load_image_never_raises_anything_else(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            img = load_image(data, "fuzz.png", max_pixels=LIMITS.max_pixels)
        except MedModelsError as err:
            event(type(err).__name__)
            return
    event("decoded")
    assert img.mode == "RGB" and img.info == {} and min(img.size) >= 8


@FUZZ
@given(
    st.one_of(
        ZIPS,
        damaged(
            [_zip([("Parasitized/a.png", SEED_IMAGES[0]), ("labels.csv", b"filename,label\na.png,1\n")])]
        ),
        st.binary(max_size=512).map(lambda b: b"PK\x03\x04" + b),
    )
)
def test_read_labelled_set_never_raises_anything_else(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = read_labelled_set(data, CLASSES, limits=LIMITS)
        except MedModelsError as err:
            event(type(err).__name__)
            return
    event("read")
    assert isinstance(result, LabelledSet) and len(result) > 0
    assert all(isinstance(s.source, bytes) and s.label in (0, 1) for s in result.samples)


@FUZZ
@given(ZIPS)
def test_read_images_never_raises_anything_else(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            samples = read_images(data, limits=LIMITS)
        except MedModelsError as err:
            event(type(err).__name__)
            return
    event("read")
    assert samples and all(s.label is None for s in samples)


@FUZZ
@given(CSV_BYTES)
def test_label_csv_parser_never_raises_anything_else(data: bytes) -> None:
    try:
        table = parse_labels_csv(data, CLASSES, name="labels.csv")
    except MedModelsError as err:
        event(type(err).__name__)
        return
    event("parsed")
    assert all(row.label in (0, 1) and row.filename for row in table.rows)


@pytest.fixture(scope="module")
def two_images_zip() -> bytes:
    return _zip([("imgs/a.png", SEED_IMAGES[0]), ("imgs/b.JPG", SEED_IMAGES[2])])


@FUZZ
@given(csv=CSV_BYTES)
def test_label_csv_against_a_zip_never_raises_anything_else(two_images_zip: bytes, csv: bytes) -> None:
    try:
        result = read_labelled_set(two_images_zip, CLASSES, labels_csv=csv, limits=LIMITS)
    except MedModelsError as err:
        event(type(err).__name__)
        return
    event("read")
    assert 1 <= len(result) <= 2
