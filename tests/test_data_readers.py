"""Every accepted layout of a labelled set (folder, zip, CSV) reads into the right samples."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from medmodels.data.datasets import (
    DEFAULT_LIMITS,
    ReadLimits,
    read_images,
    read_labelled_set,
    read_unlabelled_set,
)
from medmodels.data.images import FORMAT_NAMES, load_image
from medmodels.data.samples import LabelledSet
from medmodels.errors import DatasetError, ImageReadError

CLASSES = ("Parasitized", "Uninfected")
MakeImage = Callable[..., bytes]  # the image_bytes fixture
MakeZip = Callable[..., bytes]  # the zip_bytes fixture


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _by_name(result: LabelledSet) -> dict[str, tuple[int | None, str | None]]:
    return {s.name: (s.label, s.group) for s in result.samples}


@pytest.fixture
def two_class_files(image_bytes: MakeImage) -> dict[str, bytes]:
    return {
        "Parasitized/p1.png": image_bytes(color=(255, 0, 0)),
        "Parasitized/p2.jpg": image_bytes("JPEG", color=(250, 0, 0)),
        "Uninfected/u1.png": image_bytes(color=(0, 0, 255)),
    }


def test_folder_of_class_folders(tmp_path: Path, two_class_files: dict[str, bytes]) -> None:
    _write(tmp_path, two_class_files)
    result = read_labelled_set(tmp_path, CLASSES)
    assert _by_name(result) == {
        "Parasitized/p1.png": (0, None),
        "Parasitized/p2.jpg": (0, None),
        "Uninfected/u1.png": (1, None),
    }
    assert result.classes == CLASSES
    assert result.skipped == ()
    assert all(isinstance(s.source, Path) and s.source.is_file() for s in result.samples)


def test_class_folder_names_ignore_case_and_separators(tmp_path: Path, image_bytes: MakeImage) -> None:
    _write(
        tmp_path,
        {
            "covid_19/a.png": image_bytes(),
            "Covid 19/b.png": image_bytes(),
            "NORMAL/c.png": image_bytes(),
        },
    )
    result = read_labelled_set(tmp_path, ("COVID-19", "Normal"))
    assert sorted(result.labels) == [0, 0, 1]
    result = read_labelled_set(tmp_path.as_posix(), ("covid-19", "normal"))
    assert len(result) == 3


def test_zip_path_and_bytes_keep_image_bytes_in_memory(
    tmp_path: Path, two_class_files: dict[str, bytes], zip_bytes: MakeZip
) -> None:
    data = zip_bytes(two_class_files)
    zip_path = tmp_path / "set.zip"
    zip_path.write_bytes(data)
    for source in (data, zip_path):
        result = read_labelled_set(source, CLASSES)
        assert _by_name(result) == {
            "Parasitized/p1.png": (0, None),
            "Parasitized/p2.jpg": (0, None),
            "Uninfected/u1.png": (1, None),
        }
        for sample in result.samples:
            assert sample.source == two_class_files[sample.name]


def test_wrapping_folder_and_system_files_are_ignored(
    tmp_path: Path, two_class_files: dict[str, bytes], zip_bytes: MakeZip
) -> None:
    files = {f"testset/{k}": v for k, v in two_class_files.items()}
    files |= {
        "__MACOSX/testset/Parasitized/._p1.png": b"\x00\x05\x16\x07junk",
        "testset/.DS_Store": b"junk",
        "testset/Uninfected/Thumbs.db": b"junk",
        "testset/Uninfected/.hidden.png": b"junk",
    }
    result = read_labelled_set(zip_bytes(files), CLASSES)
    assert sorted(result.labels) == [0, 0, 1]
    assert result.skipped == ()
    assert {s.name for s in result.samples} == {f"testset/{k}" for k in two_class_files}
    folder = _write(tmp_path / "upload", files)
    assert sorted(read_labelled_set(folder, CLASSES).labels) == [0, 0, 1]


def test_wrapping_folder_named_like_a_class_is_a_class_folder(
    zip_bytes: MakeZip, image_bytes: MakeImage
) -> None:
    result = read_labelled_set(zip_bytes({"Uninfected/a.png": image_bytes()}), CLASSES)
    assert result.labels == [1]


def test_images_nested_inside_class_folders(zip_bytes: MakeZip, image_bytes: MakeImage) -> None:
    data = zip_bytes({"Parasitized/patient7/a.png": image_bytes(), "Uninfected/b.png": image_bytes()})
    assert _by_name(read_labelled_set(data, CLASSES)) == {
        "Parasitized/patient7/a.png": (0, None),
        "Uninfected/b.png": (1, None),
    }


def test_csv_in_zip_sets_labels_and_patient_groups(zip_bytes: MakeZip, image_bytes: MakeImage) -> None:
    csv = (
        b"filename,label,patient_id,stain\n"
        b"a.png,Parasitized,P1,giemsa\nb.png,uninfected,P2,giemsa\nc.png,0,P1,\n"
    )
    data = zip_bytes(
        {
            "labels.csv": csv,
            "images/a.png": image_bytes(),
            "images/b.png": image_bytes(),
            "images/c.png": image_bytes(),
        }
    )
    result = read_labelled_set(data, CLASSES)
    assert _by_name(result) == {
        "images/a.png": (0, "P1"),
        "images/b.png": (1, "P2"),
        "images/c.png": (0, "P1"),
    }
    assert result.groups.count("P1") == 2
    assert dict(result.samples[0].meta) == {"stain": "giemsa"}


def test_csv_given_separately_as_path_or_bytes(tmp_path: Path, image_bytes: MakeImage) -> None:
    folder = _write(tmp_path / "imgs", {"x/a.png": image_bytes(), "x/b.png": image_bytes()})
    csv = b"filename,label\nx/a.png,1\nx\\b.png,Parasitized\n"
    csv_path = tmp_path / "labels.csv"
    csv_path.write_bytes(csv)
    for labels in (csv, csv_path, str(csv_path)):
        assert _by_name(read_labelled_set(folder, CLASSES, labels)) == {
            "x/a.png": (1, None),
            "x/b.png": (0, None),
        }


def test_csv_inside_the_folder_it_labels_is_not_listed_as_skipped(
    tmp_path: Path, image_bytes: MakeImage
) -> None:
    _write(tmp_path, {"a.png": image_bytes(), "meta/labels.csv": b"filename,label\na.png,Uninfected\n"})
    result = read_labelled_set(tmp_path, CLASSES, tmp_path / "meta" / "labels.csv")
    assert (result.labels, result.skipped) == ([1], ())


def test_csv_filenames_with_wrapper_folder_or_subfolders(zip_bytes: MakeZip, image_bytes: MakeImage) -> None:
    data = zip_bytes(
        {
            "testset/labels.csv": b"filename,label\ntestset/imgs/a.png,Uninfected\nimgs/B.PNG,Parasitized\n",
            "testset/imgs/a.png": image_bytes(),
            "testset/imgs/b.png": image_bytes(),
        }
    )
    assert _by_name(read_labelled_set(data, CLASSES)) == {
        "testset/imgs/a.png": (1, None),
        "testset/imgs/b.png": (0, None),
    }


def test_malaria_manifest_header_with_class_column(zip_bytes: MakeZip, image_bytes: MakeImage) -> None:
    manifest = b"class,filename,patient_id,bytes\nParasitized,a.png,C1,10\nUninfected,b.png,C2,10\n"
    data = zip_bytes(
        {
            "malaria/manifest.csv": manifest,
            "malaria/Parasitized/a.png": image_bytes(),
            "malaria/Uninfected/b.png": image_bytes(),
        }
    )
    assert _by_name(read_labelled_set(data, CLASSES)) == {
        "malaria/Parasitized/a.png": (0, "C1"),
        "malaria/Uninfected/b.png": (1, "C2"),
    }


def test_top_level_csv_without_labels_beside_class_folders_is_skipped(
    zip_bytes: MakeZip, image_bytes: MakeImage
) -> None:
    data = zip_bytes(
        {
            "notes.csv": b"patient,age\nP1,40\n",
            "Parasitized/a.png": image_bytes(),
            "Uninfected/b.png": image_bytes(),
        }
    )
    result = read_labelled_set(data, CLASSES)
    assert sorted(result.labels) == [0, 1]
    assert [s.name for s in result.skipped] == ["notes.csv"]
    assert result.skipped[0].reason.startswith("not used as labels (the class folders are): ")


def test_non_images_and_stray_files_are_listed_as_skipped(zip_bytes: MakeZip, image_bytes: MakeImage) -> None:
    data = zip_bytes(
        {
            "Parasitized/a.png": image_bytes(),
            "Parasitized/notes.txt": b"hello",
            "Uninfected/b.png": image_bytes(),
            "Uninfected/scan.dcm": b"DICM",
            "loose.png": image_bytes(),
            "cats/c.png": image_bytes(),
        }
    )
    result = read_labelled_set(data, CLASSES)
    assert sorted(result.labels) == [0, 1]
    assert {s.name: s.reason for s in result.skipped} == {
        "Parasitized/notes.txt": f"not an image file (.txt); images must be {FORMAT_NAMES}.",
        "Uninfected/scan.dcm": "this is not a DICOM file (it has no DICM marker), whatever the file name says.",
        "loose.png": "not inside a class folder (expected Parasitized/ or Uninfected/).",
        "cats/c.png": "in the folder 'cats', which is not a class of this task (Parasitized, Uninfected).",
    }


def test_no_matching_class_folders_says_what_was_found(zip_bytes: MakeZip, image_bytes: MakeImage) -> None:
    data = zip_bytes({"cats/a.png": image_bytes(), "dogs/b.png": image_bytes(), "readme.txt": b"hi"})
    with pytest.raises(DatasetError) as err:
        read_labelled_set(data, CLASSES, name="pets.zip")
    assert str(err.value) == (
        "The zip 'pets.zip' holds 3 files but no readable images in class folders named "
        "Parasitized or Uninfected; found folders: cats, dogs."
    )


def test_unlabelled_images_from_zip_folder_and_single_image(
    tmp_path: Path, zip_bytes: MakeZip, image_bytes: MakeImage
) -> None:
    png = image_bytes()
    data = zip_bytes({"a.png": png, "sub/b.jpg": image_bytes("JPEG"), "c.txt": b"x"})
    samples = read_images(data)
    assert [(s.name, s.label) for s in samples] == [("a.png", None), ("sub/b.jpg", None)]
    assert samples[0].source == png
    assert read_unlabelled_set(data).skipped[0].name == "c.txt"
    folder = _write(tmp_path / "f", {"a.png": png, "b/c.png": png})
    assert [s.name for s in read_images(folder)] == ["a.png", "b/c.png"]
    single = read_images(png, name="cell.png")
    assert [(s.name, s.source) for s in single] == [("cell.png", png)]
    (tmp_path / "one.png").write_bytes(png)
    assert read_images(tmp_path / "one.png")[0].source == tmp_path / "one.png"
    with pytest.raises(ImageReadError):
        read_images(b"not an image", name="x.png")


def test_read_limits_are_validated() -> None:
    assert DEFAULT_LIMITS.max_files == 20_000
    with pytest.raises(ValueError):
        ReadLimits(max_files=0)
    with pytest.raises(ValueError):
        ReadLimits(max_pixels=10**12)


def test_load_image_gives_rgb_without_metadata(image_bytes: MakeImage) -> None:
    img = load_image(image_bytes("PNG", (12, 9), mode="L", color=77, pnginfo=None))
    assert (img.mode, img.size, img.info) == ("RGB", (12, 9), {})
    assert img.getpixel((0, 0)) == (77, 77, 77)


def test_zip_listing_uses_utf8_names_from_macos(image_bytes: MakeImage) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        info = zipfile.ZipInfo("Uninfected/été.png")
        zf.writestr(info, image_bytes())
    raw = bytearray(buffer.getvalue())
    for flags_at in (6, raw.index(b"PK\x01\x02") + 8):  # clear the UTF-8 flag, as macOS zips do
        raw[flags_at + 1] &= ~0x08
    raw = bytes(raw)
    result = read_labelled_set(raw, CLASSES)
    assert [s.name for s in result.samples] == ["Uninfected/été.png"]


def test_image_in_pil_form_round_trips(image_bytes: MakeImage) -> None:
    img = load_image(image_bytes("BMP", (10, 10), color=(1, 2, 3)))
    assert isinstance(img, Image.Image) and img.getpixel((5, 5)) == (1, 2, 3)
