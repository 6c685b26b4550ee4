"""DICOM chest X-rays: built here with pydicom from the bundled JPEG examples, read like a PNG.

Each variant (MONOCHROME1/2; 8, 12 and 16 bits; rescale slope/intercept; a window; two frames)
must give the model the same prediction as the JPEG it was made from: the X-ray models
stretch each image to its own percentiles, so an affine change of intensities is invisible to
them. Broken files (wrong modality, truncated, no pixel data, a compression without decoder)
give one clear message each, and no patient field is ever shown, logged or kept.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEGLossless, generate_uid  # noqa: E402

from medmodels.data.datasets import read_labelled_set  # noqa: E402
from medmodels.data.dicom import dicom_info, read_dicom  # noqa: E402
from medmodels.data.images import WORK_SIDE, load_image  # noqa: E402
from medmodels.errors import ImageReadError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
XRAYS = sorted((ROOT / "examples" / "covid").glob("*/*.jpg"))
PATIENT = ("Doe^Jane", "SECRET-4711", "19500101")
DX = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def make_dicom(
    pixels: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    bits: int = 8,
    modality: str = "DX",
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    syntax: str = ExplicitVRLittleEndian,
    encapsulated: bytes | None = None,
) -> bytes:
    """A DICOM Part 10 file with patient fields set, as a modality would write it."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = DX, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT
    ds.Modality, ds.ViewPosition = modality, "PA"
    if pixels is None and encapsulated is None:  # a report or other non-image object
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()
    shape = pixels.shape
    if len(shape) == 3:
        ds.NumberOfFrames = shape[0]
    ds.Rows, ds.Columns = shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if encapsulated is not None:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([encapsulated])
        ds["PixelData"].VR = "OB"
    elif pixels is not None:
        ds.PixelData = pixels.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def gray(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


VARIANTS = {
    "monochrome2_8bit": lambda g: make_dicom(g),
    "monochrome2_12bit": lambda g: make_dicom(g.astype(np.uint16) * 16 + 3, bits=12),
    "monochrome2_16bit": lambda g: make_dicom(g.astype(np.uint16) * 257, bits=16),
    "monochrome1_12bit": lambda g: make_dicom(4095 - g.astype(np.uint16) * 16, bits=12, photometric="MONOCHROME1"),
    "monochrome1_8bit": lambda g: make_dicom(255 - g, photometric="MONOCHROME1"),
    "rescaled_16bit": lambda g: make_dicom(g.astype(np.uint16) * 100, bits=16, rescale=(2.0, -1000.0)),
    "windowed_12bit": lambda g: make_dicom(g.astype(np.uint16) * 16, bits=12, window=(2048.0, 4096.0)),
    "two_frames": lambda g: make_dicom(np.stack([g, 255 - g]), photometric="MONOCHROME2"),
}


@pytest.fixture(scope="module")
def covid_model():  # noqa: ANN201 - (model, entry)
    from medmodels.zoo.registry import create_model, get_entry, list_models

    torch.manual_seed(0)
    torch.set_num_threads(1)
    name = list_models("covid")[0].name
    return create_model("covid", name).eval(), get_entry("covid", name)


def predict(model_entry: tuple, images: list[Image.Image]) -> np.ndarray:
    from medmodels.data.transforms import preprocess_batch

    model, entry = model_entry
    with torch.inference_mode():
        return torch.softmax(model(preprocess_batch(images, entry.preprocess)), 1).numpy()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_dicom_variants_predict_like_the_jpeg_they_were_made_from(variant: str, covid_model: tuple) -> None:
    assert XRAYS, "the bundled COVID-19 examples are missing"
    jpeg = [load_image(p, max_side=WORK_SIDE) for p in XRAYS]
    dicom = [load_image(VARIANTS[variant](gray(p)), f"{p.stem}.dcm", max_side=WORK_SIDE) for p in XRAYS]
    assert all(d.size == j.size and d.mode == "RGB" for d, j in zip(dicom, jpeg))
    np.testing.assert_allclose(predict(covid_model, dicom), predict(covid_model, jpeg), atol=0.02)


def test_8bit_monochrome2_gives_the_same_pixels_as_the_jpeg() -> None:
    path = next(p for p in XRAYS if Image.open(p).convert("L").getextrema() == (0, 255))
    image, info = read_dicom(make_dicom(gray(path)), "x.dcm")
    assert np.array_equal(np.asarray(image), np.asarray(load_image(path)))
    assert (info.modality, info.photometric, info.bits_stored, info.view_position) == ("DX", "MONOCHROME2", 8, "PA")


def test_monochrome1_is_inverted_and_multi_frame_uses_the_first_frame_with_a_note() -> None:
    g = gray(XRAYS[0])
    m1, _ = read_dicom(make_dicom(4095 - g.astype(np.uint16) * 16, bits=12, photometric="MONOCHROME1"), "m1.dcm")
    m2, _ = read_dicom(make_dicom(g.astype(np.uint16) * 16, bits=12), "m2.dcm")
    assert np.abs(np.asarray(m1, dtype=int) - np.asarray(m2, dtype=int)).max() <= 1
    image, info = read_dicom(make_dicom(np.stack([g, 255 - g, g])), "frames.dcm")
    assert info.frames == 3 and info.notes == ("the file holds 3 frames; only the first is used.",)
    assert "frame 1 of 3" in info.summary()


def test_large_dicom_is_reduced_before_any_lut() -> None:
    big = np.tile(gray(XRAYS[0]).astype(np.uint16) * 16, (4, 4))  # 2048 x 2048, 12 bit
    image, _ = read_dicom(make_dicom(big, bits=12), "big.dcm", max_side=WORK_SIDE)
    assert image.size == (WORK_SIDE, WORK_SIDE)


def _error(data: bytes, name: str = "scan.dcm") -> str:
    with pytest.raises(ImageReadError) as err:
        load_image(data, name)
    return str(err.value)


def test_wrong_modality_is_refused() -> None:
    assert _error(make_dicom(gray(XRAYS[0]), modality="CT")) == (
        "scan.dcm: the DICOM's modality is CT (computed tomography); these models read X-ray "
        "radiographs (modality CR, DR, DX, RF, RG)."
    )


def test_truncated_dicom() -> None:
    data = make_dicom(gray(XRAYS[0]))
    message = _error(data[: len(data) // 2])
    assert message in (
        "scan.dcm: the DICOM file is truncated or damaged, so it cannot be read; export it again.",
        "scan.dcm: the DICOM pixel data is truncated or damaged, so it cannot be decoded.",
    )
    assert _error(data[: data.index(b"\xe0\x7f\x10\x00")]) == "scan.dcm: the DICOM file ends before its pixel data (it is truncated); export it again."
    assert _error(data[:140]) in (
        "scan.dcm: the DICOM file is truncated or damaged, so it cannot be read; export it again.",
        "scan.dcm: the DICOM file ends before its pixel data (it is truncated); export it again.",
    )


def test_dicom_without_pixel_data() -> None:
    assert _error(make_dicom(None)) == (
        "scan.dcm: the DICOM file holds no image (it has no pixel data); it may be a report, a "
        "presentation state or a study index rather than an X-ray."
    )


def test_compression_without_a_decoder_names_the_decoder() -> None:
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLossless).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    data = make_dicom(gray(XRAYS[0]), syntax=JPEGLossless, encapsulated=b"\xff\xd8\xff\xc3" + b"\0" * 64)
    assert _error(data) == (
        "scan.dcm: its pixel data is compressed as JPEG Lossless, Non-Hierarchical (Process 14), which "
        "needs the pylibjpeg with pylibjpeg-libjpeg decoder, not installed with this dashboard; export "
        "the image uncompressed (explicit VR little endian) or as PNG."
    )


def test_not_a_dicom_despite_the_name() -> None:
    assert _error(b"hello" * 100) == (
        "scan.dcm: this is not a DICOM file (it has no DICM marker), whatever the file name says."
    )


def test_patient_fields_are_never_kept_shown_or_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    data = make_dicom(gray(XRAYS[0]), bits=8)
    image, info = read_dicom(data, "scan.dcm")
    kept = repr(info) + info.summary() + repr(image.info)
    for bad in (make_dicom(None), make_dicom(gray(XRAYS[0]), modality="MR"), data[:700]):
        with pytest.raises(ImageReadError) as err:
            load_image(bad, "scan.dcm")
        kept += str(err.value)
    for value in PATIENT:
        assert value not in kept and value not in caplog.text
        assert value.encode() not in image.tobytes()


def test_a_zip_of_dicoms_is_a_labelled_set(covid_model: tuple) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for p in XRAYS:
            zf.writestr(f"set/{p.parent.name}/{p.stem}.dcm", VARIANTS["monochrome1_12bit"](gray(p)))
        zf.writestr("set/Normal/ct.dcm", make_dicom(gray(XRAYS[0]), modality="CT"))
    classes = tuple(sorted({p.parent.name for p in XRAYS}))
    result = read_labelled_set(buffer.getvalue(), classes)
    assert len(result) == len(XRAYS)
    assert [s.reason.split(";")[0] for s in result.skipped] == ["the DICOM's modality is CT (computed tomography)"]
    assert dicom_info(result.samples[0].source).photometric == "MONOCHROME1"


def test_cli_predict_reads_dicom_and_prints_the_tags(tmp_path: Path) -> None:
    from medmodels.hub import weights_status
    from medmodels.zoo.registry import list_models

    name = next((e.name for e in list_models("covid") if weights_status("covid", e.name)[0]), None)
    if name is None:
        pytest.skip("no trained COVID-19 weights in this checkout")
    dcm = tmp_path / "scan.dcm"
    dcm.write_bytes(VARIANTS["monochrome1_12bit"](gray(XRAYS[0])))
    run = [sys.executable, "-m", "medmodels", "predict", "--task", "covid", "--model", name, "--json"]
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    outs = [
        subprocess.run([*run, str(p)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        for p in (XRAYS[0], dcm)
    ]
    assert all(o.returncode == 0 for o in outs), outs[-1].stderr[-2000:]
    jpeg, dicom = (json.loads(o.stdout)[0] for o in outs)
    assert dicom["predicted_class"] == jpeg["predicted_class"]
    assert dicom["probability"] == pytest.approx(jpeg["probability"], abs=0.02)
    assert dicom["dicom"].startswith("DICOM tags read: modality DX, photometric interpretation MONOCHROME1 (inverted)")
    assert not any(v in outs[1].stdout + outs[1].stderr for v in PATIENT)


@pytest.fixture(scope="module")
def covid_weights(tmp_path_factory: pytest.TempPathFactory, untrained_weights: object) -> Iterator[Path]:
    with untrained_weights(tmp_path_factory.mktemp("weights"), [("covid", "mobilenet_v2")]) as folder:
        yield folder


def _page_text(at: object) -> str:
    texts = [e.value for kind in (at.markdown, at.caption, at.error, at.info, at.warning) for e in kind]
    texts += [str(c) for img in at.image for c in img.captions if c]
    return " ".join(texts) + " ".join(str(df.value.to_dict()) for df in at.dataframe)


def test_explore_and_evaluate_list_the_dicom_tags_read_and_no_patient_field(covid_weights: Path) -> None:
    from streamlit.testing.v1 import AppTest

    pages = ROOT / "dashboard" / "views"
    data = VARIANTS["monochrome1_12bit"](gray(XRAYS[0]))
    at = AppTest.from_file(str(pages / "explore.py"), default_timeout=300).run()
    at.selectbox(key="explore_task").set_value("covid").run()
    at.file_uploader(key="explore_upload_covid").set_value(("scan.dcm", data, "application/dicom"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = _page_text(at)
    from dashboard.common import as_text

    assert as_text("DICOM tags read: modality DX, photometric interpretation MONOCHROME1 (inverted)") in shown
    assert "Predictions" in [h.value for h in at.subheader]
    assert not any(v in shown for v in PATIENT)

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for p in XRAYS:
            zf.writestr(f"{p.parent.name}/{p.stem}.dcm", VARIANTS["monochrome2_16bit"](gray(p)))
    at = AppTest.from_file(str(pages / "evaluate.py"), default_timeout=300).run()
    at.selectbox(key="evaluate_task").set_value("covid").run()
    at.file_uploader(key="evaluate_zip_covid").set_value(("dicoms.zip", buffer.getvalue(), "application/zip"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    tags = next(df.value for df in at.dataframe if "photometric interpretation" in df.value.columns)
    assert tags.to_dict("records") == [{
        "modality": "DX", "photometric interpretation": "MONOCHROME2", "bits stored": 16,
        "bits allocated": 16, "view position": "PA", "frames": 1, "files": len(XRAYS),
    }]
    assert not any(v in _page_text(at) for v in PATIENT)


def test_cli_evaluate_reads_a_folder_of_dicoms_like_the_jpegs(tmp_path: Path) -> None:
    from medmodels.hub import weights_status
    from medmodels.zoo.registry import list_models

    name = next((e.name for e in list_models("covid") if weights_status("covid", e.name)[0]), None)
    if name is None:
        pytest.skip("no trained COVID-19 weights in this checkout")
    for p in XRAYS:
        folder = tmp_path / "dicoms" / p.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{p.stem}.dcm").write_bytes(VARIANTS["monochrome1_12bit"](gray(p)))
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    results = []
    for data in (ROOT / "examples" / "covid", tmp_path / "dicoms"):
        out = tmp_path / f"{data.name}.json"
        run = subprocess.run(
            [sys.executable, "-m", "medmodels", "evaluate", "--task", "covid", "--model", name,
             "--data", str(data), "--json", str(out)],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        results.append(json.loads(out.read_text()))
    jpeg, dicom = results
    assert dicom["n"] == jpeg["n"] == len(XRAYS)
    assert dicom["metrics"]["accuracy"] == jpeg["metrics"]["accuracy"]
