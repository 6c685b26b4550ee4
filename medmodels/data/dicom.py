"""Read a DICOM chest X-ray into the 8-bit image the models take, and nothing else from it.

Clinicians bring DICOM, not PNG. A DICOM's stored values are not display values, so the
file's own instructions are applied in the standard order (PS3.3 C.11):

1. the first frame only (multi-frame files are noted in ``DicomInfo.notes``);
2. reduced to ``max_side`` right after decoding (box average on integers, as for other images);
3. the Modality LUT or rescale slope/intercept;
4. the VOI LUT, or the window centre/width when there is one;
5. MONOCHROME1 (white = low values) inverted so bone is bright, as in MONOCHROME2;
6. the result (12 to 16 bits, or floats) scaled to 0-255 over its own range.

Patient identifiers are never read into anything kept: the result is a fresh PIL image and a
``DicomInfo`` with six technical tags (modality, photometric interpretation, bits stored and
allocated, view position, frames). Nothing here logs a tag value, a name or a file name.
Compressed pixel data is decoded by pydicom with Pillow (JPEG baseline/extended, JPEG 2000)
or natively (RLE, deflate); other transfer syntaxes give a message naming the decoder they need.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from medmodels.errors import ImageReadError

log = logging.getLogger(__name__)

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
RADIOGRAPHY = frozenset({"CR", "DX", "DR", "RG", "RF"})
"""Modalities accepted as X-ray images: computed/digital radiography, radiographic imaging,
fluoroscopy (a still frame of it). CT, MR, ultrasound... are refused."""
MODALITY_NAMES = {
    "CT": "computed tomography", "MR": "magnetic resonance", "US": "ultrasound", "NM": "nuclear medicine",
    "PT": "PET", "MG": "mammography", "XA": "X-ray angiography", "SM": "slide microscopy",
    "OT": "other", "SR": "a structured report", "DOC": "a document", "SEG": "a segmentation",
}
# Decoders that can be installed for transfer syntaxes this environment cannot decode.
DECODER_PACKAGES = {
    "JPEG Lossless": "pylibjpeg with pylibjpeg-libjpeg",
    "JPEG-LS": "pylibjpeg with pylibjpeg-libjpeg (or pyjpegls)",
    "JPEG 2000": "pylibjpeg with pylibjpeg-openjpeg",
    "High-Throughput JPEG 2000": "pylibjpeg with pylibjpeg-openjpeg",
    "JPEG XL": "pylibjpeg with pylibjjxl",
}


@dataclass(frozen=True)
class DicomInfo:
    """The technical tags read from a DICOM (never patient or study identifiers)."""

    modality: str | None
    photometric: str | None
    bits_stored: int | None
    bits_allocated: int | None
    view_position: str | None
    frames: int
    transfer_syntax: str
    notes: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        """One line for the page: what was read, so the user can check the input."""
        parts = [
            f"modality {self.modality or 'not given'}",
            f"photometric interpretation {self.photometric or 'not given'}"
            + (" (inverted)" if self.photometric == "MONOCHROME1" else ""),
            f"{self.bits_stored} of {self.bits_allocated} bits" if self.bits_stored else "bits not given",
            f"view position {self.view_position or 'not given'}",
        ]
        if self.frames > 1:
            parts.append(f"frame 1 of {self.frames}")
        return "DICOM tags read: " + ", ".join(parts) + "."


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: 128-byte preamble, then 'DICM'."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _fail(label: str, reason: str) -> ImageReadError:
    error = ImageReadError(f"{label}: {reason}")
    error.reason = reason  # type: ignore[attr-defined]
    return error


def _dataset(data: bytes, label: str, stop_before_pixels: bool = False):  # noqa: ANN202 - FileDataset
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns with tag values; nothing of them is kept
            return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise _fail(label, "this is not a DICOM file (it has no DICM marker), whatever the file name says.") from None
    except Exception:  # noqa: BLE001 - any parse failure of untrusted bytes is a damaged file
        raise _fail(label, "the DICOM file is truncated or damaged, so it cannot be read; export it again.") from None


def _text(ds: object, keyword: str) -> str | None:
    value = getattr(ds, keyword, None)
    return str(value).strip().upper() or None if value is not None else None


def _int(ds: object, keyword: str) -> int | None:
    try:
        value = getattr(ds, keyword, None)
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def info_of(ds: object) -> DicomInfo:
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None)
    return DicomInfo(
        modality=_text(ds, "Modality"),
        photometric=_text(ds, "PhotometricInterpretation"),
        bits_stored=_int(ds, "BitsStored"),
        bits_allocated=_int(ds, "BitsAllocated"),
        view_position=_text(ds, "ViewPosition"),
        frames=max(1, _int(ds, "NumberOfFrames") or 1),
        transfer_syntax=getattr(syntax, "name", str(syntax)) if syntax is not None else "not given",
    )


def dicom_info(data: bytes, name: str = "DICOM file") -> DicomInfo:
    """The technical tags of a DICOM, read without its pixel data."""
    return info_of(_dataset(data, name, stop_before_pixels=True))


def dicom_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header; None when it cannot be read."""
    try:
        ds = _dataset(data, "DICOM file", stop_before_pixels=True)
    except ImageReadError:
        return None
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    return (cols, rows) if rows and cols else None


def _decoder_message(syntax: str) -> str:
    package = next((p for k, p in DECODER_PACKAGES.items() if syntax.startswith(k)), None)
    if package is None:
        return (
            f"its pixel data is compressed as {syntax}, which cannot be decoded here; "
            "export the image uncompressed (explicit VR little endian) or as PNG."
        )
    return (
        f"its pixel data is compressed as {syntax}, which needs the {package} decoder, not installed "
        "with this dashboard; export the image uncompressed (explicit VR little endian) or as PNG."
    )


def _check(ds: object, label: str, max_pixels: int) -> DicomInfo:
    info = info_of(ds)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:  # type: ignore[operator]
        if len(ds) == 0 or (_int(ds, "Rows") and _int(ds, "Columns")):  # the file stops early
            raise _fail(label, "the DICOM file ends before its pixel data (it is truncated); export it again.")
        raise _fail(
            label,
            "the DICOM file holds no image (it has no pixel data); it may be a report, a "
            "presentation state or a study index rather than an X-ray.",
        )
    if info.modality is not None and info.modality not in RADIOGRAPHY:
        kind = MODALITY_NAMES.get(info.modality, "not a radiograph")
        raise _fail(
            label,
            f"the DICOM's modality is {info.modality} ({kind}); these models read X-ray radiographs "
            f"(modality {', '.join(sorted(RADIOGRAPHY))}).",
        )
    rows, cols = _int(ds, "Rows") or 0, _int(ds, "Columns") or 0
    if rows * cols > max_pixels:
        raise _fail(
            label,
            f"the image has more than {max_pixels:,} pixels, the most accepted (a very large or "
            "maliciously crafted file); downscale it and try again.",
        )
    return info


def _first_frame(ds: object, data: bytes, label: str, info: DicomInfo) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pixel_array(ds, index=0 if info.frames > 1 else None)  # type: ignore[arg-type]
    except (NotImplementedError, RuntimeError) as err:
        if "decod" in str(err).lower() or "plugin" in str(err).lower() or "missing" in str(err).lower():
            raise _fail(label, _decoder_message(info.transfer_syntax)) from None
        raise _fail(label, "the DICOM pixel data is truncated or damaged, so it cannot be decoded.") from None
    except Exception:  # noqa: BLE001 - damaged pixel data of an untrusted file
        raise _fail(label, "the DICOM pixel data is truncated or damaged, so it cannot be decoded.") from None


def _reduce(arr: np.ndarray, max_side: int | None) -> np.ndarray:
    """Box-average integer or float pixels to at most ``max_side`` on the long side."""
    if max_side is None or max(arr.shape[:2]) <= max_side:
        return arr
    from medmodels.data.images import _shrink

    if arr.ndim == 3:  # colour
        return np.asarray(_shrink(Image.fromarray(arr.astype(np.uint8)), max_side))
    mode, values = ("F", arr.astype(np.float32)) if arr.dtype.kind == "f" else ("I", arr.astype(np.int32))
    return np.asarray(_shrink(Image.fromarray(values, mode=mode), max_side))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_dicom(
    data: bytes, name: str = "DICOM file", *, max_side: int | None = None, max_pixels: int = 40_000_000
) -> tuple[Image.Image, DicomInfo]:
    """An 8-bit RGB image of the DICOM's first frame, display-ready, and the tags that were read."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = _dataset(data, name)
    info = _check(ds, name, max_pixels)
    notes: list[str] = []
    if info.frames > 1:
        notes.append(f"the file holds {info.frames} frames; only the first is used.")
    arr = _reduce(_first_frame(ds, data, name, info), max_side)
    if arr.ndim == 3 and arr.shape[-1] == 3:
        rgb = arr.astype(np.uint8) if arr.dtype == np.uint8 else np.stack([_to_uint8(arr[..., i]) for i in range(3)], -1)
        image = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    else:
        if arr.ndim == 3:  # one sample per pixel stored with a trailing axis
            arr = arr[..., 0]
        try:
            values = apply_modality_lut(arr, ds)
            values = apply_voi_lut(values, ds, index=0)
        except Exception:  # noqa: BLE001 - malformed LUT tags of an untrusted file
            notes.append("its modality or VOI LUT could not be applied; the stored values were scaled instead.")
            values = arr
        gray = _to_uint8(np.asarray(values))
        if info.photometric == "MONOCHROME1":
            gray = 255 - gray
        image = Image.fromarray(gray, mode="L").convert("RGB")
    del ds
    return Image.frombytes("RGB", image.size, image.tobytes()), DicomInfo(**{**info.__dict__, "notes": tuple(notes)})
