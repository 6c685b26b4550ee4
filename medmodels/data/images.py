"""Decode any image a user may have into an 8-bit RGB PIL image, or fail with a clear message.

Uploads are untrusted, so decoding is deliberately narrow:

* only PNG, JPEG (phone MPO included), TIFF, BMP, GIF and WebP are opened; other Pillow plugins
  (EPS, which runs Ghostscript, and many rarely used formats) are never tried;
* images over ``MAX_PIXELS`` are refused before their pixels are decoded (decompression bombs),
  and files over ``MAX_FILE_BYTES`` are refused before they are read;
* images under ``MIN_SIDE`` pixels on a side are refused: nothing can be classified or
  explained at that size, and such files are nearly always icons or export mistakes;
* modes seen in medical images (L, LA, I;16, I, F, P with transparency, RGBA, CMYK) become RGB,
  16-bit and float images by min-max scaling, transparency composited on black;
* the EXIF orientation is applied, then all metadata is dropped: the returned image is a fresh
  one whose ``info`` is empty, so EXIF (which can hold names, dates and GPS) never travels on;
* of a multi-frame file (animated GIF, multi-page TIFF) only the first frame is used, and this
  is logged.
"""

from __future__ import annotations

import io
import logging
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from medmodels.errors import ImageReadError

log = logging.getLogger(__name__)

MAX_PIXELS = 40_000_000
"""Largest accepted image (about 6300 x 6300): above any slide crop or X-ray we expect."""
MAX_FILE_BYTES = 64_000_000
"""Largest accepted image file; larger files are refused before they are read."""
MIN_SIDE = 8
"""Smallest accepted width and height, in pixels."""
MAX_ASPECT = 20
"""Largest accepted ratio of the long side to the short side: a 40000 x 8 strip is no photo
or scan any model here was trained on, and its model view would be a few blank rows."""
WORK_SIDE = 1024
"""Images are decoded to at most this many pixels on their long side for the models and the
dashboard (every model's input is 128 px or less); a 6300 x 6300 upload is reduced right
after decoding, so no full-size copy, RGB conversion or float array of it is ever made."""
FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP")
"""The Pillow formats tried, in this order (JPEG includes the multi-picture JPEGs of phones)."""
FORMAT_NAMES = "PNG, JPEG, TIFF, BMP, GIF, WebP or DICOM"

# The one place where Pillow's own decompression-bomb limit is set: it warns above this
# many pixels and raises above twice as many. load_image turns both into ImageReadError.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# File signatures of the accepted formats: a file that starts like an image but cannot be
# opened is a damaged image, not "not an image".
_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"GIF87a", b"GIF89a")

_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")

# Exceptions Pillow's decoders raise on malformed data. Anything in this list while decoding
# untrusted bytes means "this file is damaged", not a bug in this library.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    EOFError,
    ZeroDivisionError,
    struct.error,
    OverflowError,
    MemoryError,
)


def _fail(label: str, reason: str) -> ImageReadError:
    """An ImageReadError whose ``reason`` attribute is the message without the file name.

    Readers of whole sets list skipped files as (name, reason) and use ``reason``.
    """
    error = ImageReadError(f"{label}: {reason}")
    error.reason = reason  # type: ignore[attr-defined]
    return error


def format_bytes(n: float) -> str:
    """Decimal units, as file managers show them: 64000000 -> '64 MB'."""
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return f"{int(n)} bytes"


def _to_8bit(img: Image.Image) -> Image.Image:
    """Min-max scale high-bit-depth grayscale to 8 bits (16-bit X-rays and TIFFs)."""
    arr = np.asarray(img).astype(np.float32)
    finite = np.isfinite(arr)
    if not finite.all():  # float TIFFs may hold NaN or inf; treat them as the minimum
        arr = np.where(finite, arr, np.nan)
        lo = float(np.nanmin(arr)) if finite.any() else 0.0
        arr = np.nan_to_num(arr, nan=lo)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        scaled = np.zeros(arr.shape, dtype=np.uint8)
    else:
        scaled = np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited on black.

    Black because the microscopy crops and X-rays this library reads have black
    backgrounds: a transparent border then looks like the rest of the background.
    """
    if img.mode in _HIGH_BIT_MODES:
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def _read_source(source: bytes | str | Path, label: str, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise _fail(
                    label,
                    f"the file is {format_bytes(size)}, more than the "
                    f"{format_bytes(max_bytes)} accepted for one image.",
                )
            with path.open("rb") as fh:
                data = fh.read(max_bytes + 1)
        except OSError as err:
            raise _fail(label, f"the file cannot be read ({err.strerror or err}).") from None
    if not data:
        raise _fail(label, "the file is empty (0 bytes).")
    if len(data) > max_bytes:
        raise _fail(
            label,
            f"the file is {format_bytes(len(data))}, more than the "
            f"{format_bytes(max_bytes)} accepted for one image.",
        )
    return data


def _too_large(label: str, max_pixels: int) -> ImageReadError:
    return _fail(
        label,
        f"the image has more than {max_pixels:,} pixels, the most accepted "
        "(a very large or maliciously crafted file); downscale it and try again.",
    )


def _text_chunk_too_large(err: BaseException) -> bool:
    """Pillow's refusal of a PNG text chunk (zTXt/iTXt) that inflates past its limit."""
    return isinstance(err, ValueError) and ("MAX_TEXT_CHUNK" in str(err) or "text chunks" in str(err))


def _text_chunk_error(label: str) -> ImageReadError:
    return _fail(
        label,
        "the PNG carries a text (metadata) chunk that expands to more than "
        f"{format_bytes(PngImagePlugin.MAX_TEXT_CHUNK)}, which is not read; save the image again "
        "without its metadata (for example 'export as PNG' with metadata off).",
    )


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the file's header, without decoding pixels; None if unreadable."""
    from medmodels.data.dicom import dicom_size, is_dicom

    if is_dicom(data):
        return dicom_size(data)
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            return img.size
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, *_DECODE_ERRORS):
        return None


def _shrink(img: Image.Image, max_side: int) -> Image.Image:
    """Reduce a decoded image to at most ``max_side`` on its long side (box average, then bilinear)."""
    if max(img.size) <= max_side:
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        img = img.convert("I")  # Pillow reduces 32-bit integers, not 16-bit ones
    factor = max(img.size) // max_side
    if factor > 1:
        try:
            img = img.reduce(factor)
        except ValueError:  # a mode reduce() does not handle; the resize below still bounds it
            pass
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
    return img


def _decode(data: bytes, label: str, max_pixels: int, max_side: int | None = None) -> Image.Image:
    """Open, size-check and decode the first frame (reduced to ``max_side``); pixels are loaded on return."""
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_large(label, max_pixels) from None
    except ValueError as err:
        if _text_chunk_too_large(err):
            raise _text_chunk_error(label) from None
        raise _corrupt(label) from None
    except UnidentifiedImageError:
        if data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            raise _corrupt(label) from None
        raise _fail(
            label,
            f"this is not an image: its contents are not {FORMAT_NAMES} data, whatever the file name says.",
        ) from None
    except _DECODE_ERRORS:
        raise _corrupt(label) from None
    width, height = img.size
    if width * height > max_pixels:
        raise _too_large(label, max_pixels)
    if width < MIN_SIDE or height < MIN_SIDE:
        raise _fail(
            label,
            f"the image is only {width}×{height} pixels; images must be at least "
            f"{MIN_SIDE}×{MIN_SIDE} pixels.",
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise _fail(
            label,
            f"the image is {width}×{height} pixels, more than {MAX_ASPECT} times longer than it is "
            "wide; the models take whole cells or chest X-rays, so crop it to the region of interest.",
        )
    if max_side is not None and img.format == "JPEG":
        img.draft(img.mode, (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale when possible
    try:
        img.load()
        shrunk = _shrink(img, max_side) if max_side is not None else img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_large(label, max_pixels) from None
    except _DECODE_ERRORS as err:
        if _text_chunk_too_large(err):
            raise _text_chunk_error(label) from None
        raise _corrupt(label) from None
    try:
        # EXIF orientation from the file (the reduced copy has none of its own)
        exif = img.getexif()
        orientation = exif.get(0x0112) if exif else None
        first = ImageOps.exif_transpose(shrunk) if shrunk is img else _orient(shrunk, orientation)
    except _DECODE_ERRORS:  # a damaged EXIF block should not cost the user a good image
        log.warning("an image's EXIF orientation could not be read; it is used as stored.")
        first = shrunk.copy()
    _log_frames(img, label)
    return first


_ORIENTATIONS = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


def _orient(img: Image.Image, orientation: object) -> Image.Image:
    """Apply an EXIF orientation value to an image (a new image either way)."""
    out = img
    for step in _ORIENTATIONS.get(orientation if isinstance(orientation, int) else 1, ()):
        out = out.transpose(step)
    return out if out is not img else img.copy()


def _log_frames(img: Image.Image, label: str) -> None:
    """Say when frames are dropped. Counting seeks through the file, which may be damaged."""
    try:
        frames = getattr(img, "n_frames", 1)
    except _DECODE_ERRORS:
        log.info("a multi-frame image: only the first frame is used.")
        return
    if isinstance(frames, int) and frames > 1:
        log.info("an image with %d frames: only the first is used.", frames)


def _corrupt(label: str) -> ImageReadError:
    return _fail(
        label,
        "the image data is truncated or corrupt, so it cannot be decoded; copy or export the file again.",
    )


def load_image(
    source: bytes | str | Path,
    name: str | None = None,
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_FILE_BYTES,
    max_side: int | None = None,
) -> Image.Image:
    """Read ``source`` (bytes or a path) into an 8-bit RGB image with EXIF orientation applied.

    ``name`` labels the file in error messages. ``max_pixels`` can lower, not raise, the
    decompression-bomb limit set for Pillow (``MAX_PIXELS``). ``max_side`` (for example
    ``WORK_SIDE``) reduces larger images right after decoding, before any conversion; ``None``
    keeps the full size (cell crops need original coordinates). The result carries no metadata.
    Raises ``ImageReadError`` (with a ``reason`` attribute: the message without the name).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "uploaded image"
    else:
        label = name or Path(source).name
    max_pixels = min(max_pixels, MAX_PIXELS)
    data = _read_source(source, label, max_bytes)
    from medmodels.data.dicom import DICOM_SUFFIXES, is_dicom, read_dicom

    if is_dicom(data) or Path(label).suffix.casefold() in DICOM_SUFFIXES:
        return read_dicom(data, label, max_side=max_side, max_pixels=max_pixels)[0]
    img = _decode(data, label, max_pixels, max_side)
    try:
        rgb = to_rgb(img)
    except (ValueError, OSError, TypeError):
        raise _fail(
            label, f"the image uses the {img.mode} colour mode, which cannot be converted to RGB."
        ) from None
    finally:
        img.close()
    # A fresh image: nothing of the file's metadata (EXIF, ICC, text chunks) survives.
    return Image.frombytes("RGB", rgb.size, rgb.tobytes())
