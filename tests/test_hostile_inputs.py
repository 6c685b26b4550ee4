"""Hostile and broken uploads: each gives one exact user-facing message or skip reason.

Covers damaged and unusual images, zips built to attack the reader (path traversal,
symlinks, bombs, thousands of files) and broken label CSVs. Every input is made here,
in memory or under tmp_path.
"""

from __future__ import annotations

import builtins
import io
import os
import re
import stat
import struct
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmodels.data.datasets import ReadLimits, read_images, read_labelled_set
from medmodels.data.images import MAX_PIXELS, load_image
from medmodels.data.labels_csv import parse_labels_csv
from medmodels.errors import DatasetError, ImageReadError

CLASSES = ("Parasitized", "Uninfected")
MakeImage = Callable[..., bytes]  # the image_bytes fixture
MakeZip = Callable[..., bytes]  # the zip_bytes fixture
TRUNCATED = "the image data is truncated or corrupt, so it cannot be decoded; copy or export the file again."
TOO_LARGE = (
    "the image has more than 40,000,000 pixels, the most accepted (a very large or maliciously "
    "crafted file); downscale it and try again."
)


def _image_error(data: bytes, name: str) -> str:
    with pytest.raises(ImageReadError) as err:
        load_image(data, name)
    return str(err.value)


def _dataset_error(source: object, **kwargs: object) -> str:
    with pytest.raises(DatasetError) as err:
        read_labelled_set(source, CLASSES, **kwargs)  # type: ignore[arg-type]
    return str(err.value)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with almost no pixel data behind it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------- images


def test_truncated_png(image_bytes: MakeImage) -> None:
    data = image_bytes("PNG", (64, 64), color=(10, 20, 30))
    assert _image_error(data[: len(data) // 2], "cell.png") == f"cell.png: {TRUNCATED}"
    assert _image_error(data[:30], "cell.png") == f"cell.png: {TRUNCATED}"


def test_truncated_jpeg() -> None:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG")
    data = buffer.getvalue()
    assert _image_error(data[: len(data) // 2], "xray.jpg") == f"xray.jpg: {TRUNCATED}"


def test_random_bytes_with_an_image_extension() -> None:
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert _image_error(data, "photo.png") == (
        "photo.png: this is not an image: its contents are not PNG, JPEG, TIFF, BMP, GIF, WebP or DICOM "
        "data, whatever the file name says."
    )


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"^empty\.png: the file is empty \(0 bytes\)\.$"):
        load_image(path)
    assert _image_error(b"", "upload.png") == "upload.png: the file is empty (0 bytes)."


def test_one_pixel_image_is_refused_as_too_small(image_bytes: MakeImage) -> None:
    assert _image_error(image_bytes("PNG", (1, 1)), "dot.png") == (
        "dot.png: the image is only 1×1 pixels; images must be at least 8×8 pixels."
    )
    assert load_image(image_bytes("PNG", (8, 8))).size == (8, 8)
    assert _image_error(image_bytes("PNG", (300, 7)), "strip.png").startswith(
        "strip.png: the image is only 300×7"
    )


def test_20000_by_20000_image_is_refused_before_decoding() -> None:
    assert MAX_PIXELS == 40_000_000
    assert _image_error(_png_header(20_000, 20_000), "huge.png") == f"huge.png: {TOO_LARGE}"


def test_image_just_over_the_pixel_limit_is_refused_even_with_warnings_as_errors(
    image_bytes: MakeImage,
) -> None:
    data = image_bytes("PNG", (7000, 6000), mode="L", color=0)  # 42 Mpx, compresses to a few KB
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        assert _image_error(data, "big.png") == f"big.png: {TOO_LARGE}"
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert _image_error(data, "big.png") == f"big.png: {TOO_LARGE}"


def test_16_bit_grayscale_tiff_is_scaled_to_8_bits() -> None:
    values = np.linspace(1000, 4000, 16 * 16).reshape(16, 16).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="TIFF")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode == "I;16"
    rgb = np.asarray(load_image(buffer.getvalue()))
    assert rgb.dtype == np.uint8 and rgb.shape == (16, 16, 3)
    assert (rgb[0, 0].tolist(), rgb[-1, -1].tolist()) == ([0, 0, 0], [255, 255, 255])


def test_cmyk_jpeg_becomes_rgb(image_bytes: MakeImage) -> None:
    data = image_bytes("JPEG", (16, 16), mode="CMYK", color=(0, 255, 255, 0), quality=95)
    img = load_image(data)
    assert img.mode == "RGB"
    assert np.allclose(img.getpixel((8, 8)), (255, 0, 0), atol=3)


def test_palette_png_with_transparency_is_composited_on_black() -> None:
    img = Image.new("P", (16, 16), 1)
    img.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", transparency=1)
    rgb = load_image(buffer.getvalue())
    assert rgb.getpixel((5, 5)) == (0, 0, 0)  # the transparent red is gone
    assert rgb.getpixel((0, 0)) == (0, 255, 0)


def test_la_and_rgba_are_composited_on_black(image_bytes: MakeImage) -> None:
    assert load_image(image_bytes("PNG", mode="LA", color=(200, 255))).getpixel((0, 0)) == (200, 200, 200)
    assert load_image(image_bytes("PNG", mode="RGBA", color=(200, 100, 50, 0))).getpixel((0, 0)) == (0, 0, 0)


def test_animated_gif_uses_the_first_frame(caplog: pytest.LogCaptureFixture) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    with caplog.at_level("INFO", logger="medmodels.data.images"):
        img = load_image(buffer.getvalue(), "beat.gif")
    assert img.getpixel((8, 8)) == (255, 0, 0)
    assert "an image with 3 frames: only the first is used." in caplog.messages


def test_exif_rotated_photo_is_turned_upright_and_exif_is_dropped() -> None:
    photo = Image.new("RGB", (40, 20), (255, 0, 0))
    photo.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    exif[0x8825] = {2: (1.0, 2.0, 3.0)}  # a GPS position that must not travel on
    exif[0x010F] = "PhoneMaker"
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    img = load_image(buffer.getvalue())
    assert img.size == (20, 40)
    assert np.allclose(img.getpixel((10, 5)), (0, 0, 255), atol=30)  # blue is now on top
    assert img.info == {} and dict(img.getexif()) == {}


# ---------------------------------------------------------------- zips


def _zip(
    members: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_DEFLATED
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buffer.getvalue()


def test_zip_with_path_traversal_is_refused(image_bytes: MakeImage) -> None:
    data = _zip([("../x.png", image_bytes()), ("Parasitized/a.png", image_bytes())])
    assert _dataset_error(data, name="evil.zip") == (
        "The zip 'evil.zip' was refused: the entry '../x.png' points outside the zip "
        "(its path contains '..'), which only a damaged or malicious zip does."
    )
    data = _zip([("Parasitized/../../x.png", image_bytes())])
    assert "points outside the zip" in _dataset_error(data)


def test_zip_with_absolute_paths_is_refused(image_bytes: MakeImage) -> None:
    for name in ("/etc/x.png", "C:\\Users\\x.png"):
        data = _zip([(zipfile.ZipInfo(name), image_bytes()), ("Parasitized/a.png", image_bytes())])
        assert _dataset_error(data, name="abs.zip") == (
            f"The zip 'abs.zip' was refused: the entry '{name}' has an absolute path, which only a "
            "damaged or malicious zip contains."
        )


def test_zip_symlink_member_is_skipped(image_bytes: MakeImage) -> None:
    link = zipfile.ZipInfo("Parasitized/link.png")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    data = _zip(
        [(link, b"/etc/passwd"), ("Parasitized/a.png", image_bytes()), ("Uninfected/b.png", image_bytes())]
    )
    result = read_labelled_set(data, CLASSES)
    assert len(result) == 2
    assert [(s.name, s.reason) for s in result.skipped] == [
        ("Parasitized/link.png", "a symbolic link; links inside a zip are not followed.")
    ]


def test_nested_folders_and_a_nested_zip(image_bytes: MakeImage) -> None:
    inner = _zip([("Parasitized/a.png", image_bytes())])
    data = _zip(
        [
            ("set/Parasitized/deep/deeper/a.png", image_bytes()),
            ("set/Uninfected/b.png", image_bytes()),
            ("set/Uninfected/more.zip", inner),
        ]
    )
    result = read_labelled_set(data, CLASSES)
    assert sorted(s.name for s in result.samples) == [
        "set/Parasitized/deep/deeper/a.png",
        "set/Uninfected/b.png",
    ]
    assert [(s.name, s.reason) for s in result.skipped] == [
        ("set/Uninfected/more.zip", "an archive inside the zip; archives inside archives are not opened.")
    ]


def test_zip_with_thousands_of_tiny_files_is_refused_over_the_limit() -> None:
    data = _zip([(f"Parasitized/{i}.png", b"x") for i in range(3000)])
    assert _dataset_error(data, name="many.zip", limits=ReadLimits(max_files=2000)) == (
        "The zip 'many.zip' was refused: it holds 3,000 files, more than the 2,000 read from one "
        "upload; split it into smaller zips."
    )


def test_thousands_of_tiny_images_within_the_limit_are_read(image_bytes: MakeImage) -> None:
    png = image_bytes("PNG", (8, 8))
    data = _zip([(f"{c}/{i}.png", png) for c in CLASSES for i in range(1000)], zipfile.ZIP_STORED)
    result = read_labelled_set(data, CLASSES)
    assert len(result) == 2000 and result.labels.count(1) == 1000


def test_zip_bomb_is_refused_from_the_central_directory() -> None:
    data = _zip([("Parasitized/a.png", b"\0" * 20_000_000)])
    assert len(data) < 100_000
    assert re.fullmatch(
        r"The zip 'bomb\.zip' was refused: 'Parasitized/a\.png' would expand [\d,]+ times "
        r"\(from [\d.]+ KB to 20 MB\), more than the 100 times allowed; this is how zip bombs look\.",
        _dataset_error(data, name="bomb.zip"),
    )


def test_zip_over_the_total_size_limit_is_refused(image_bytes: MakeImage) -> None:
    png = image_bytes()
    data = _zip([("Parasitized/a.png", png), ("Uninfected/b.png", png)])
    assert _dataset_error(data, name="big.zip", limits=ReadLimits(max_total_uncompressed_bytes=100)) == (
        f"The zip 'big.zip' was refused: it would expand to {2 * len(png)} bytes, more than the 100 bytes "
        "read from one upload; upload a smaller set."
    )


def test_zip_member_over_the_size_limit_is_skipped(image_bytes: MakeImage) -> None:
    big = image_bytes("BMP", (100, 100))
    data = _zip([("Parasitized/a.png", image_bytes()), ("Parasitized/big.bmp", big)])
    result = read_labelled_set(data, CLASSES, limits=ReadLimits(max_member_bytes=10_000))
    assert [(s.name, s.reason) for s in result.skipped] == [
        ("Parasitized/big.bmp", "the file is 30.1 KB, more than the 10 KB read for one file.")
    ]


def test_member_that_lies_about_its_size_is_read_only_to_the_declared_size(image_bytes: MakeImage) -> None:
    real = image_bytes("BMP", (64, 64))
    data = bytearray(_zip([("Parasitized/a.bmp", real), ("Uninfected/b.png", image_bytes())]))
    size = struct.pack("<I", len(real))
    for at in (data.index(b"PK\x03\x04") + 22, data.index(b"PK\x01\x02") + 24):  # uncompressed size fields
        assert data[at : at + 4] == size
        data[at : at + 4] = struct.pack("<I", 100)
    result = read_labelled_set(bytes(data), CLASSES)
    assert [s.name for s in result.samples] == ["Uninfected/b.png"]
    assert [(s.name, s.reason) for s in result.skipped] == [
        ("Parasitized/a.bmp", "the zip entry is damaged and cannot be decompressed.")
    ]


def _encrypt_flags(data: bytes) -> bytes:
    """Set the 'encrypted' bit on every member, as a password-protected zip has it."""
    raw = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (at := raw.find(signature, start)) >= 0:
            raw[at + offset] |= 0x01
            start = at + 4
    return bytes(raw)


def test_password_protected_zip_is_refused(image_bytes: MakeImage) -> None:
    data = _encrypt_flags(_zip([("Parasitized/a.png", image_bytes())], zipfile.ZIP_STORED))
    assert _dataset_error(data, name="locked.zip") == (
        "The zip 'locked.zip' was refused: it is password-protected; upload a zip made without a password."
    )


def test_encrypted_member_among_plain_ones_is_skipped(image_bytes: MakeImage) -> None:
    data = _zip(
        [
            ("Parasitized/a.png", image_bytes()),
            ("Uninfected/b.png", image_bytes()),
            ("Parasitized/secret.png", image_bytes()),
        ],
        zipfile.ZIP_STORED,
    )
    result = read_labelled_set(_encrypt_flags_of(data, "Parasitized/secret.png"), CLASSES)
    assert len(result) == 2
    assert [(s.name, s.reason) for s in result.skipped] == [
        ("Parasitized/secret.png", "encrypted (password-protected); upload it without a password.")
    ]


def _encrypt_flags_of(data: bytes, name: str) -> bytes:
    raw = bytearray(data)
    encoded = name.encode()
    for signature, offset, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = 0
        while (at := raw.find(signature, start)) >= 0:
            if raw[at + name_at : at + name_at + len(encoded)] == encoded:
                raw[at + offset] |= 0x01
            start = at + 4
    return bytes(raw)


def test_corrupt_zip(image_bytes: MakeImage) -> None:
    expected = (
        "The file 'upload' is not a valid zip file (it may be damaged or only partly uploaded); "
        "create the zip again and re-upload it."
    )
    assert _dataset_error(b"PK\x03\x04 this is not really a zip") == expected
    whole = _zip([("Parasitized/a.png", image_bytes())])
    assert _dataset_error(whole[: len(whole) - 30]) == expected


def test_non_image_files_mixed_in(image_bytes: MakeImage) -> None:
    data = _zip(
        [
            ("Parasitized/a.png", image_bytes()),
            ("Parasitized/b.png", b"I am text pretending to be a PNG"),
            ("Uninfected/c.png", image_bytes()),
            ("Uninfected/report.pdf", b"%PDF-1.4"),
            ("Uninfected/empty.png", b""),
        ]
    )
    result = read_labelled_set(data, CLASSES)
    assert sorted(s.name for s in result.samples) == ["Parasitized/a.png", "Uninfected/c.png"]
    assert {s.name: s.reason for s in result.skipped} == {
        "Parasitized/b.png": "this is not an image: its contents are not PNG, JPEG, TIFF, BMP, GIF, WebP or DICOM "
        "data, whatever the file name says.",
        "Uninfected/report.pdf": "not an image file (.pdf); images must be PNG, JPEG, TIFF, BMP, GIF, "
        "WebP or DICOM.",
        "Uninfected/empty.png": "the file is empty (0 bytes).",
    }


def test_zip_whose_images_are_all_unreadable_says_why(image_bytes: MakeImage) -> None:
    data = _zip([("Parasitized/a.png", b""), ("Uninfected/b.png", image_bytes("PNG", (2, 2)))])
    assert _dataset_error(data, name="bad.zip") == (
        "The zip 'bad.zip' holds 2 files but no readable images in class folders named Parasitized or "
        "Uninfected; found folders: Parasitized, Uninfected. 2 files in class folders could not be used. "
        "For example, 'Parasitized/a.png': the file is empty (0 bytes)."
    )


def test_empty_zip() -> None:
    assert _dataset_error(_zip([]), name="nothing.zip") == "The zip 'nothing.zip' is empty."
    assert _dataset_error(_zip([("__MACOSX/._a.png", b"x")]), name="mac.zip") == (
        "The zip 'mac.zip' holds only hidden or system files (such as __MACOSX or .DS_Store)."
    )


def test_reading_a_zip_writes_nothing_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image_bytes: MakeImage
) -> None:
    data = _zip(
        [
            ("set/Parasitized/a.png", image_bytes()),
            ("set/Uninfected/b.jpg", image_bytes("JPEG")),
            ("set/labels.csv", b"filename,label\nParasitized/a.png,0\nUninfected/b.jpg,1\n"),
        ]
    )
    zip_path = tmp_path / "upload.zip"
    zip_path.write_bytes(data)
    work, temp = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    temp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("TMPDIR", str(temp))
    writes: list[str] = []
    real_open = builtins.open

    def spy_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if any(flag in str(mode) for flag in "wax+"):
            writes.append(f"{file} ({mode})")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(zipfile.ZipFile, "extract", lambda *a, **k: pytest.fail("extract called"))
    monkeypatch.setattr(zipfile.ZipFile, "extractall", lambda *a, **k: pytest.fail("extractall called"))
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    for source in (data, zip_path):
        result = read_labelled_set(source, CLASSES)
        assert [s.label for s in result.samples] == [0, 1]
        assert all(isinstance(s.source, bytes) for s in result.samples)
    assert len(read_images(data)) == 2
    after = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert after == before
    assert writes == []
    assert os.listdir(work) == [] and os.listdir(temp) == []


# ---------------------------------------------------------------- label CSVs


def _labelled_zip(csv: bytes, image_bytes: MakeImage, names: tuple[str, ...] = ("a.png", "b.png")) -> bytes:
    return _zip([("labels.csv", csv)] + [(f"images/{n}", image_bytes()) for n in names])


def test_csv_with_unknown_classes(image_bytes: MakeImage) -> None:
    csv = b"filename,label\na.png,cat\nb.png,dog\nc.png,7\nd.png,Parasitized\n"
    assert _dataset_error(_labelled_zip(csv, image_bytes)) == (
        "The label CSV 'labels.csv' has labels that are not classes of this task: '7', 'cat', 'dog'. "
        "The classes are Parasitized and Uninfected (or their numbers 0 and 1)."
    )


def test_csv_with_an_absurdly_long_number_as_label() -> None:
    with pytest.raises(DatasetError) as err:
        parse_labels_csv(b"filename,label\na.png," + b"9" * 400 + b"\n", CLASSES)
    assert str(err.value) == (
        f"The label CSV has labels that are not classes of this task: '{'9' * 59}…'. "
        "The classes are Parasitized and Uninfected (or their numbers 0 and 1)."
    )


def test_csv_with_missing_files(image_bytes: MakeImage) -> None:
    csv = b"filename,label\na.png,Parasitized\nb.png,Uninfected\ngone.png,Uninfected\n"
    result = read_labelled_set(_labelled_zip(csv, image_bytes), CLASSES)
    assert len(result) == 2
    assert [(s.name, s.reason) for s in result.skipped] == [
        ("gone.png", "listed in the label CSV 'labels.csv' but not found in the zip.")
    ]
    csv = b"filename,label\nx.png,Parasitized\ny.png,Uninfected\n"
    assert _dataset_error(_labelled_zip(csv, image_bytes), name="set.zip") == (
        "None of the 2 files listed in the label CSV 'labels.csv' are in the zip 'set.zip' "
        "(for example 'x.png', 'y.png'); it holds 'images/a.png', 'images/b.png'."
    )


def test_image_not_listed_in_the_csv_is_skipped(image_bytes: MakeImage) -> None:
    csv = b"filename,label\na.png,Parasitized\n"
    result = read_labelled_set(_labelled_zip(csv, image_bytes), CLASSES)
    assert [(s.name, s.reason) for s in result.skipped] == [
        ("images/b.png", "not listed in the label CSV 'labels.csv'.")
    ]


def test_csv_with_duplicate_names(image_bytes: MakeImage) -> None:
    csv = b"filename,label\na.png,Parasitized\nb.png,Uninfected\n./a.png,Uninfected\n"
    assert _dataset_error(_labelled_zip(csv, image_bytes)) == (
        "The label CSV 'labels.csv' lists a file more than once: 'a.png'; each file may appear only once."
    )
    csv += b"b.png,Parasitized\n"
    assert _dataset_error(_labelled_zip(csv, image_bytes)) == (
        "The label CSV 'labels.csv' lists 2 files more than once: 'a.png', 'b.png'; each file may appear "
        "only once."
    )


def test_csv_in_latin_1_and_utf_16(image_bytes: MakeImage) -> None:
    csv = "filename;label;patient_id\nété.png;Parasitized;Zoë\nb.png;Uninfected;Zoë\n"
    for encoded in (csv.encode("latin-1"), csv.encode("utf-16"), csv.encode("cp1252")):
        result = read_labelled_set(_labelled_zip(encoded, image_bytes, ("été.png", "b.png")), CLASSES)
        assert [(s.name, s.label, s.group) for s in result.samples] == [
            ("images/été.png", 0, "Zoë"),
            ("images/b.png", 1, "Zoë"),
        ]


def test_csv_that_is_binary_is_refused() -> None:
    with pytest.raises(DatasetError) as err:
        parse_labels_csv(b"filename,label\x00\x00\x01\x02", CLASSES, name="labels.csv")
    assert str(err.value) == (
        "The label CSV 'labels.csv' is not a text file (it contains binary data); save it from your "
        "spreadsheet as 'CSV UTF-8'."
    )


def test_csv_with_utf8_bom(image_bytes: MakeImage) -> None:
    csv = "\ufeffFilename,Label\na.png,Parasitized\nb.png,Uninfected\n".encode()
    assert read_labelled_set(_labelled_zip(csv, image_bytes), CLASSES).labels == [0, 1]


def test_csv_with_extra_columns(image_bytes: MakeImage) -> None:
    csv = b"id,filename,age,label,notes\n1,a.png,40,Parasitized,x\n2,b.png,,Uninfected,\n"
    result = read_labelled_set(_labelled_zip(csv, image_bytes), CLASSES)
    assert result.labels == [0, 1]
    assert dict(result.samples[0].meta) == {"id": "1", "age": "40", "notes": "x"}


def test_csv_with_missing_required_columns(image_bytes: MakeImage) -> None:
    csv = b"name,diagnosis\na.png,Parasitized\n"
    assert _dataset_error(_labelled_zip(csv, image_bytes)) == (
        "The label CSV 'labels.csv' has no 'filename' or 'label' column; expected a header row like "
        "filename,label,patient_id (patient_id is optional), but the header is: name,diagnosis."
    )


def test_csv_rows_without_label_are_skipped_and_empty_csv_is_refused(image_bytes: MakeImage) -> None:
    csv = b"filename,label\na.png,Parasitized\nb.png,\n"
    result = read_labelled_set(_labelled_zip(csv, image_bytes), CLASSES)
    assert [(s.name, s.reason) for s in result.skipped] == [
        ("b.png", "the label CSV gives no label for this file."),
        ("images/b.png", "not listed in the label CSV 'labels.csv'."),
    ]
    with pytest.raises(DatasetError, match=r"^The label CSV is empty; it needs a header row like"):
        parse_labels_csv(b"\n\n", CLASSES)


def test_csv_with_unbalanced_quotes_is_refused() -> None:
    csv = b'filename,label\n"a.png,Parasitized\n' + b"x" * 200_000
    with pytest.raises(DatasetError) as err:
        parse_labels_csv(csv, CLASSES, name="l.csv")
    assert str(err.value) == (
        "The label CSV 'l.csv' is not a well-formed CSV file (problem on line 3); "
        "check for unbalanced quotes."
    )


def test_two_csvs_at_the_top_without_class_folders(image_bytes: MakeImage) -> None:
    data = _zip([("a.csv", b"filename,label\n"), ("b.csv", b"x"), ("images/a.png", image_bytes())])
    assert _dataset_error(data, name="two.zip") == (
        "The zip 'two.zip' has 2 CSV files at the top level (a.csv, b.csv); keep only the label CSV, "
        "or pass it separately."
    )


# ---------------------------------------------------------------- folders


def test_folder_with_a_linked_folder_does_not_follow_it(tmp_path: Path, image_bytes: MakeImage) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(image_bytes())
    root = tmp_path / "set"
    (root / "Parasitized").mkdir(parents=True)
    (root / "Parasitized" / "a.png").write_bytes(image_bytes())
    (root / "Uninfected").symlink_to(outside, target_is_directory=True)
    result = read_labelled_set(root, CLASSES)
    assert [s.name for s in result.samples] == ["Parasitized/a.png"]
    assert [(s.name, s.reason) for s in result.skipped] == [
        ("Uninfected", "a link to a folder; linked folders are not followed.")
    ]


def test_folder_with_too_many_files_is_refused(tmp_path: Path) -> None:
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(b"x")
    assert _dataset_error(tmp_path, limits=ReadLimits(max_files=3)) == (
        f"The folder '{tmp_path}' was refused: it holds more than 3 files, the most read at once; "
        "split it into smaller folders."
    )


def test_missing_path_and_a_zip_name_with_a_colon(tmp_path: Path, image_bytes: MakeImage) -> None:
    assert (
        _dataset_error(tmp_path / "nope")
        == f"'{tmp_path / 'nope'}' does not exist; give a folder or a zip file."
    )
    data = _zip([("Parasitized/a:b.png", image_bytes()), ("Uninfected/c.png", image_bytes())])
    assert len(read_labelled_set(data, CLASSES)) == 2


def test_unlabelled_upload_without_images() -> None:
    with pytest.raises(DatasetError, match=r"^The zip 'upload' is empty\.$"):
        read_images(_zip([]))
    with pytest.raises(DatasetError) as err:
        read_images(_zip([("notes.txt", b"hi")]))
    assert str(err.value) == (
        "The zip 'upload' holds 1 file but no readable images. For example, 'notes.txt': not an image "
        "file (.txt); images must be PNG, JPEG, TIFF, BMP, GIF, WebP or DICOM."
    )


# ---------------------------------------------------------------- CSV export (formula injection)

FORMULA_NAMES = ("=cmd|' -c calc'!A0.png", "+SUM(1+1).png", "@SUM(1).png", "-2+3.png", "\tx.png", "\ry.png")


def test_csv_cells_that_spreadsheets_would_run_are_neutralised() -> None:
    from medmodels.csv_safety import neutralise, restore

    for name in FORMULA_NAMES:
        assert neutralise(name) == "'" + name and restore(neutralise(name)) == name
    for value in ("a.png", "-0.25", "+1e-3", 3, -1.5, None, "'quoted.png"):
        assert neutralise(value) == value
        assert restore(value) == value if isinstance(value, str) else True


def test_per_image_csv_round_trips_formula_names_and_patient_ids(image_bytes: MakeImage) -> None:
    """The Evaluate download: no cell starts like a formula, and it reads back as a label CSV."""
    import csv as csv_module

    import pandas as pd

    from medmodels.csv_safety import frame_to_csv

    groups = ("=HYPERLINK(\"http://x\")", "+A1", "@x", "-x", "p5", "=1+1")
    rows = [
        {"file": n, "group": g, "label": CLASSES[i % 2], "predicted": CLASSES[0], "p_Parasitized": -0.0}
        for i, (n, g) in enumerate(zip(FORMULA_NAMES, groups))
    ]
    text = frame_to_csv(pd.DataFrame(rows))
    cells = [c for row in csv_module.reader(io.StringIO(text, newline="")) for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r") and c != "-0.0"]
    table = parse_labels_csv(text.encode(), CLASSES)
    assert [r.filename for r in table.rows] == [n.strip() for n in FORMULA_NAMES]
    assert [r.group for r in table.rows] == list(groups)
    # and the same CSV labels a zip holding files with those names
    names = tuple(n for n in FORMULA_NAMES if n == n.strip())
    kept = "\n".join(line for line in text.splitlines() if not any(c in line for c in "\t\r")) + "\n"
    zipped = _zip([(f"images/{n}", image_bytes()) for n in names])
    result = read_labelled_set(zipped, CLASSES, labels_csv=kept.encode())
    assert sorted(s.name.split("/")[-1] for s in result.samples) == sorted(names)


def test_cli_and_training_csv_writers_neutralise_cells(tmp_path: Path) -> None:
    from medmodels.train.run import write_predictions

    path = tmp_path / "predictions.csv"
    write_predictions(path, [{"file": "=1+1.png", "patient": "@p", "label": "a", "score_a": -0.5, "fold": 1}], ["a"])
    assert path.read_text().splitlines()[1] == "'=1+1.png,'@p,a,-0.500000,1"


# ---------------------------------------------------------------- size: memory, CPU and clear limits


def _black_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_6300_square_image_is_reduced_right_after_decoding() -> None:
    from medmodels.data.images import WORK_SIDE

    data = _black_png(6300, 6300)
    assert load_image(data, "big.png", max_side=WORK_SIDE).size == (WORK_SIDE, WORK_SIDE)
    assert load_image(data, "big.png").size == (6300, 6300)  # full size only when asked for
    small = _black_png(300, 200)
    assert load_image(small, "s.png", max_side=WORK_SIDE).size == (300, 200)  # smaller ones untouched


def test_reduced_jpeg_is_decoded_at_a_smaller_scale_and_keeps_its_orientation() -> None:
    from medmodels.data.images import WORK_SIDE

    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 2000), (200, 10, 10)).save(buffer, format="JPEG", exif=exif)
    img = load_image(buffer.getvalue(), "phone.jpg", max_side=WORK_SIDE)
    assert img.size == (WORK_SIDE // 2, WORK_SIDE) and not img.info


def test_upload_over_the_pixel_budget_is_refused_before_decoding() -> None:
    """The issue's 150 black 6300 x 6300 PNGs: refused from the images' headers, in seconds."""
    import time

    png = _black_png(6300, 6300)
    data = _zip([(f"{CLASSES[i % 2]}/{i}.png", png) for i in range(150)])
    started = time.perf_counter()
    message = _dataset_error(data, name="black.zip")
    assert time.perf_counter() - started < 10
    assert message == (
        "The zip 'black.zip' was refused: its images hold more than 3,000 megapixels together, the most "
        "read from one upload (for example 75 images of 6300×6300); downscale the images or split the set."
    )
    small = _zip([(f"{CLASSES[i % 2]}/{i}.png", _black_png(100, 100)) for i in range(4)])
    with pytest.raises(DatasetError, match="more than 0 megapixels"):
        read_labelled_set(small, CLASSES, limits=ReadLimits(max_total_pixels=30_000))
    assert len(read_labelled_set(small, CLASSES, limits=ReadLimits(max_total_pixels=40_000))) == 4


def test_a_40000_by_8_strip_is_refused_with_a_reason() -> None:
    assert _image_error(_black_png(40000, 8), "strip.png") == (
        "strip.png: the image is 40000×8 pixels, more than 20 times longer than it is wide; the models "
        "take whole cells or chest X-rays, so crop it to the region of interest."
    )


def test_a_png_with_a_huge_compressed_text_chunk_says_so() -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * 50_000_000, zip=True)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG", pnginfo=info)
    assert len(buffer.getvalue()) < 100_000
    assert _image_error(buffer.getvalue(), "notes.png") == (
        "notes.png: the PNG carries a text (metadata) chunk that expands to more than 1 MB, which is not "
        "read; save the image again without its metadata (for example 'export as PNG' with metadata off)."
    )


def test_label_csv_without_a_usable_row_says_so(image_bytes: MakeImage) -> None:
    csv = b"filename,label\n,Parasitized\nb.png,\n"
    assert _dataset_error(_labelled_zip(csv, image_bytes)) == (
        "The label CSV 'labels.csv' has no row with both a file name and a label, so no image can be "
        "labelled. For example, 'line 2': this line of the label CSV has no file name."
    )


def test_zip_of_5000_copies_of_one_tiny_image_is_read_and_evaluated_fast() -> None:
    """Evaluation predicts each distinct file once (medmodels.evaluate.distinct_samples)."""
    import time

    from medmodels.evaluate import distinct_samples

    png = _black_png(16, 16)
    data = _zip([(f"{CLASSES[i % 2]}/{i}.png", png) for i in range(5000)])
    started = time.perf_counter()
    result = read_labelled_set(data, CLASSES)
    unique, index = distinct_samples(list(result.samples))
    assert time.perf_counter() - started < 20
    assert len(result) == 5000 and len(unique) == 1 and set(index.tolist()) == {0}
