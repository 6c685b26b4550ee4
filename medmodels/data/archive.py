"""Open an uploaded zip safely: check it from its central directory, then read members into memory.

Nothing is ever extracted or written to disk. Before any member is decompressed the whole
listing is checked: too many files, paths that escape the zip (``../x.png``, ``/etc/x``),
a total or per-file size over the limits, or a compression ratio only a zip bomb has make
the whole zip refused with ``DatasetError``. Symbolic links, encrypted members, zips inside
the zip and oversized files are left out and listed as ``Skipped``. Each read is bounded by
the size the directory declared, so a member that lies about its size cannot exhaust memory.
"""

from __future__ import annotations

import io
import logging
import lzma
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from medmodels.data.images import MAX_FILE_BYTES, MAX_PIXELS, format_bytes
from medmodels.data.samples import Skipped
from medmodels.errors import DatasetError

log = logging.getLogger(__name__)

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members; an empty zip
JUNK_NAMES = frozenset({"__macosx", "thumbs.db", "desktop.ini", "ehthumbs.db"})
ARCHIVE_SUFFIXES = frozenset({".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar"})
RATIO_CHECK_MIN_BYTES = 1_000_000
"""Members smaller than this are not ratio-checked: they cannot be bombs, and tiny or
uniform files (a black BMP, an empty CSV) legitimately compress very well."""

_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    struct.error,
    IndexError,
    KeyError,
    OverflowError,
    RuntimeError,
    zlib.error,
    lzma.LZMAError,
)


@dataclass(frozen=True)
class ReadLimits:
    """How much of an upload (zip or folder) is read before it is refused.

    ``max_pixels`` is the per-image decompression-bomb limit; it can only be lowered below
    ``medmodels.data.images.MAX_PIXELS``, the value Pillow itself is configured with.
    """

    max_files: int = 20_000
    max_total_uncompressed_bytes: int = 2_000_000_000
    max_member_bytes: int = MAX_FILE_BYTES
    max_compression_ratio: float = 100.0
    max_pixels: int = MAX_PIXELS
    max_total_pixels: int = 3_000_000_000
    """All images of one upload together (read from their headers before any is decoded):
    3,000 megapixels is 3,000 one-megapixel X-rays, decoded and checked in well under 30 s."""

    def __post_init__(self) -> None:
        for field_name in (
            "max_files", "max_total_uncompressed_bytes", "max_member_bytes", "max_pixels", "max_total_pixels"
        ):
            if getattr(self, field_name) <= 0:
                raise ValueError(f"ReadLimits.{field_name} must be positive.")
        if self.max_compression_ratio <= 1:
            raise ValueError("ReadLimits.max_compression_ratio must be above 1.")
        if self.max_pixels > MAX_PIXELS:
            raise ValueError(f"ReadLimits.max_pixels cannot exceed images.MAX_PIXELS ({MAX_PIXELS:,}).")


DEFAULT_LIMITS = ReadLimits()


def is_zip_bytes(data: bytes) -> bool:
    return data[:4] in ZIP_MAGIC


def is_junk(parts: tuple[str, ...]) -> bool:
    """Files users never meant to upload: macOS/Windows metadata and hidden files."""
    return any(p.startswith((".", "~$")) or p.casefold() in JUNK_NAMES for p in parts)


def split_path(name: str) -> tuple[str, ...] | None:
    """Split a member name into safe parts, or ``None`` if it is absolute or escapes the root."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"[A-Za-z]:(/|$)", name):  # /etc/x, C:\\x
        return None
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        return None
    return parts


def _display_name(info: zipfile.ZipInfo) -> str:
    """Names from zips made on macOS/Windows are UTF-8 without the UTF-8 flag: undo the cp437 guess."""
    name = info.filename
    if info.flag_bits & 0x800:
        return name
    try:
        return name.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def printable(name: str, limit: int = 120) -> str:
    """A name safe to put in a message: control characters replaced, long names shortened."""
    shown = "".join(ch if ch.isprintable() else "\ufffd" for ch in name)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _unsafe_path_reason(raw: str) -> str:
    name = printable(raw)
    if ".." in raw.replace("\\", "/").split("/"):
        return (
            f"the entry '{name}' points outside the zip (its path contains '..'), "
            "which only a damaged or malicious zip does."
        )
    return f"the entry '{name}' has an absolute path, which only a damaged or malicious zip contains."


@dataclass(frozen=True)
class ZipMember:
    """A file inside the zip that passed the listing checks. ``path`` is '/'-joined safe parts."""

    path: str
    parts: tuple[str, ...]
    size: int
    info: zipfile.ZipInfo


class ZipUpload:
    """An uploaded zip, checked and ready to read member by member (use as a context manager).

    ``members`` are the files that passed the checks, ``skipped`` the files left out with a
    reason, ``file_count`` every file entry (junk included) the zip lists.
    """

    def __init__(self, source: bytes | str | Path, *, name: str, limits: ReadLimits = DEFAULT_LIMITS) -> None:
        self.name = name
        self.limits = limits
        self.members: list[ZipMember] = []
        self.skipped: list[Skipped] = []
        self.file_count = 0
        self._read_total = 0
        self._zip = self._open(source)
        try:
            self._check_listing()
        except BaseException:
            self._zip.close()
            raise

    @property
    def label(self) -> str:
        return f"The zip '{self.name}'"

    def _open(self, source: bytes | str | Path) -> zipfile.ZipFile:
        try:
            fh = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
            return zipfile.ZipFile(fh)
        except _ZIP_ERRORS:
            raise DatasetError(
                f"The file '{self.name}' is not a valid zip file (it may be damaged or only "
                "partly uploaded); create the zip again and re-upload it."
            ) from None

    def _refuse(self, reason: str) -> DatasetError:
        return DatasetError(f"{self.label} was refused: {reason}")

    def _check_listing(self) -> None:
        limits = self.limits
        infos = [i for i in self._zip.infolist() if not i.filename.endswith("/")]  # is_dir() fails on ""
        self.file_count = len(infos)
        if self.file_count > limits.max_files:
            raise self._refuse(
                f"it holds {self.file_count:,} files, more than the {limits.max_files:,} read "
                "from one upload; split it into smaller zips."
            )
        seen: set[str] = set()
        candidates: list[ZipMember] = []
        for info in infos:
            shown = _display_name(info)
            parts = split_path(shown)
            if parts is None:
                raise self._refuse(_unsafe_path_reason(shown))
            if not parts or is_junk(parts):
                continue
            path = "/".join(parts)
            skip = self._skip_reason(info, path, seen)
            seen.add(path)
            if skip:
                self.skipped.append(Skipped(path, skip))
                continue
            candidates.append(ZipMember(path, parts, info.file_size, info))
        if infos and not candidates and all(i.flag_bits & 0x1 for i in infos):
            raise self._refuse("it is password-protected; upload a zip made without a password.")
        total = sum(m.size for m in candidates)
        if total > limits.max_total_uncompressed_bytes:
            raise self._refuse(
                f"it would expand to {format_bytes(total)}, more than the "
                f"{format_bytes(limits.max_total_uncompressed_bytes)} read from one upload; "
                "upload a smaller set."
            )
        for member in candidates:
            ratio = member.size / max(member.info.compress_size, 1)
            if member.size >= RATIO_CHECK_MIN_BYTES and ratio > limits.max_compression_ratio:
                raise self._refuse(
                    f"'{member.path}' would expand {ratio:,.0f} times (from "
                    f"{format_bytes(member.info.compress_size)} to {format_bytes(member.size)}), "
                    f"more than the {limits.max_compression_ratio:,.0f} times allowed; "
                    "this is how zip bombs look."
                )
        self.members = candidates

    def _skip_reason(self, info: zipfile.ZipInfo, path: str, seen: set[str]) -> str | None:
        if path in seen:
            return "the zip holds a second file with this name; only the first is read."
        if _is_symlink(info):
            return "a symbolic link; links inside a zip are not followed."
        if info.flag_bits & 0x1:
            return "encrypted (password-protected); upload it without a password."
        if PurePosixPath(path).suffix.casefold() in ARCHIVE_SUFFIXES:
            return "an archive inside the zip; archives inside archives are not opened."
        if info.file_size > self.limits.max_member_bytes:
            return (
                f"the file is {format_bytes(info.file_size)}, more than the "
                f"{format_bytes(self.limits.max_member_bytes)} read for one file."
            )
        return None

    def peek(self, member: ZipMember) -> bytes | None:
        """The member's bytes (bounded like ``read``) without recording anything: for a first pass."""
        try:
            with self._zip.open(member.info) as fh:
                return fh.read(min(member.size, self.limits.max_member_bytes))
        except (NotImplementedError, *_ZIP_ERRORS):
            return None

    def read(self, member: ZipMember) -> bytes | None:
        """The member's bytes, read at most to its declared size.

        A damaged member is added to ``skipped`` and gives ``None``; going over the total
        size limit while reading refuses the whole zip (``DatasetError``).
        """
        limit = min(member.size, self.limits.max_member_bytes)
        reason = None
        try:
            with self._zip.open(member.info) as fh:
                data = fh.read(limit + 1)
        except NotImplementedError:
            reason = (
                "compressed with a method that cannot be read here; zip it again with "
                "standard (deflate) compression."
            )
        except _ZIP_ERRORS:
            reason = "the zip entry is damaged and cannot be decompressed."
        else:
            if len(data) > limit:
                reason = "the zip entry holds more data than its header declares."
        if reason is not None:
            self.skipped.append(Skipped(member.path, reason))
            return None
        self._read_total += len(data)
        if self._read_total > self.limits.max_total_uncompressed_bytes:
            raise self._refuse(
                "it expands to more than the "
                f"{format_bytes(self.limits.max_total_uncompressed_bytes)} read from one upload."
            )
        return data

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> ZipUpload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
