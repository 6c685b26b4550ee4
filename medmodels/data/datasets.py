"""Read a user's labelled test set (or unlabelled images) from a folder, a zip or a label CSV.

Accepted layouts, for a folder or a zip alike:

1. class folders, ``root/<class>/*.png`` (nested subfolders inside a class folder are fine);
   folder names match the task's classes ignoring case and ``_``/``-``/space differences;
2. the same inside one wrapping folder (``testset/<class>/...``), as zips made on macOS and
   Windows usually are;
3. images anywhere plus a CSV ``filename,label[,patient_id]``, passed as ``labels_csv`` or
   found as the only ``*.csv`` at the top; labels are class names or class numbers and
   ``patient_id`` becomes ``Sample.group``. A top-level CSV without label columns next to
   class folders is not taken as labels (it is listed as skipped).

Hidden files, ``__MACOSX``, ``.DS_Store`` and ``Thumbs.db`` are ignored silently. Every image is
decoded once with ``load_image`` to check it; files that are not images or do not decode are
left out and listed in ``LabelledSet.skipped`` with the reason. Zips are read in memory only
(``Sample.source`` holds the bytes); folders give ``Sample.source`` as a ``Path``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from medmodels.data.archive import (
    DEFAULT_LIMITS,
    ReadLimits,
    ZipMember,
    ZipUpload,
    is_junk,
    is_zip_bytes,
    printable,
)
from medmodels.data.images import FORMAT_NAMES, WORK_SIDE, format_bytes, image_size, load_image
from medmodels.data.labels_csv import LabelRow, LabelTable, class_key, class_lookup, parse_labels_csv
from medmodels.data.samples import LabelledSet, Sample, Skipped
from medmodels.errors import DatasetError, ImageReadError

__all__ = [
    "DEFAULT_LIMITS",
    "IMAGE_SUFFIXES",
    "LabelledSet",
    "ReadLimits",
    "Sample",
    "Skipped",
    "read_images",
    "read_labelled_set",
    "read_unlabelled_set",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".dcm", ".dicom"}
)


@dataclass(frozen=True)
class _Entry:
    """One file of the upload. ``parts`` is its path below the set's root, split on '/';
    ``top`` is the wrapping folder above that root, if any."""

    parts: tuple[str, ...]
    member: ZipMember | None = None
    file: Path | None = None
    top: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        """The path inside the upload, as the user sees it (the name of samples and skips)."""
        return "/".join(self.top + self.parts)

    @property
    def rel(self) -> str:
        return "/".join(self.parts)

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.parts[-1]).suffix.casefold()


class _Upload:
    """The files of a zip or a folder, read the same way; damaged files go to ``skipped``."""

    def __init__(
        self,
        label: str,
        kind: str,
        entries: list[_Entry],
        skipped: list[Skipped],
        file_count: int,
        zip_upload: ZipUpload | None,
        limits: ReadLimits,
    ) -> None:
        self.label, self.kind, self.entries, self.file_count = label, kind, entries, file_count
        self._skipped, self._zip, self.limits = skipped, zip_upload, limits

    @property
    def skipped(self) -> list[Skipped]:
        return self._skipped + (self._zip.skipped if self._zip else [])

    def read(self, entry: _Entry) -> bytes | None:
        if entry.member is not None and self._zip is not None:
            return self._zip.read(entry.member)
        assert entry.file is not None
        try:
            with entry.file.open("rb") as fh:
                return fh.read(self.limits.max_member_bytes + 1)
        except OSError as err:
            self._skipped.append(Skipped(entry.path, f"the file cannot be read ({err.strerror or err})."))
            return None

    def check_pixels(self, entries: Sequence[_Entry]) -> None:
        """Refuse the upload, before decoding anything, when its images hold more pixels in all
        than ``limits.max_total_pixels`` (sizes come from each file's header)."""
        total = 0
        for entry in entries:
            if _not_image_reason(entry):
                continue
            if entry.member is not None and self._zip is not None:
                data = self._zip.peek(entry.member)
            else:
                data = _head(entry.file)
            size = image_size(data) if data else None
            if size:
                total += size[0] * size[1]
            if total > self.limits.max_total_pixels:
                raise DatasetError(
                    f"{self.label} was refused: its images hold more than "
                    f"{self.limits.max_total_pixels / 1e6:,.0f} megapixels together, the most read from one "
                    "upload (for example 75 images of 6300×6300); downscale the images or split the set."
                )

    def skip(self, entry: _Entry, reason: str) -> None:
        self._skipped.append(Skipped(entry.path, reason))

    def note(self, skipped: Sequence[Skipped]) -> None:
        self._skipped.extend(skipped)

    def source(self, entry: _Entry, data: bytes) -> Path | bytes:
        return entry.file if entry.file is not None else data

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _head(path: Path | None, size: int = 1 << 16) -> bytes | None:
    """The first bytes of a file: enough for an image header."""
    try:
        with path.open("rb") as fh:  # type: ignore[union-attr]
            return fh.read(size)
    except (OSError, AttributeError):
        return None


def _display(source: str | Path, name: str) -> str:
    return Path(source).name if name == "upload" else name


@contextmanager
def _open_upload(source: str | Path | bytes, name: str, limits: ReadLimits) -> Iterator[_Upload]:
    """Open a zip (bytes or path) or a folder as an ``_Upload``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        upload = _zip_upload(bytes(source), name, limits)
    else:
        path = Path(source)
        if path.is_dir():
            upload = _folder_upload(path, limits)
        elif path.is_file():
            upload = _zip_upload(path, _display(path, name), limits)
        else:
            raise DatasetError(f"'{path}' does not exist; give a folder or a zip file.")
    try:
        yield upload
    finally:
        upload.close()


def _zip_upload(source: bytes | Path, name: str, limits: ReadLimits) -> _Upload:
    archive = ZipUpload(source, name=name, limits=limits)
    entries = [_Entry(m.parts, member=m) for m in archive.members]
    return _Upload(archive.label, "zip", entries, [], archive.file_count, archive, limits)


def _walk(root: Path, skipped: list[Skipped]) -> Iterator[tuple[tuple[str, ...], Path]]:
    """Every non-junk file under ``root`` in a stable order; linked folders are listed as skipped."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        rel = base.relative_to(root).parts
        dirnames[:] = sorted(d for d in dirnames if not is_junk((d,)))
        for d in dirnames:
            if (base / d).is_symlink():
                reason = "a link to a folder; linked folders are not followed."
                skipped.append(Skipped("/".join((*rel, d)), reason))
        for filename in sorted(filenames):
            if not is_junk((*rel, filename)):
                yield (*rel, filename), base / filename


def _folder_upload(root: Path, limits: ReadLimits) -> _Upload:
    """List a local folder under the same limits as a zip (files are read later, one by one)."""
    label = f"The folder '{root}'"
    entries: list[_Entry] = []
    skipped: list[Skipped] = []
    count, total = 0, 0
    for parts, path in _walk(root, skipped):
        count += 1
        if count > limits.max_files:
            raise DatasetError(
                f"{label} was refused: it holds more than {limits.max_files:,} files, the most "
                "read at once; split it into smaller folders."
            )
        try:
            size = path.stat().st_size
        except OSError as err:
            skipped.append(Skipped("/".join(parts), f"the file cannot be read ({err.strerror or err})."))
            continue
        if size > limits.max_member_bytes:
            reason = (
                f"the file is {format_bytes(size)}, more than the "
                f"{format_bytes(limits.max_member_bytes)} read for one file."
            )
            skipped.append(Skipped("/".join(parts), reason))
            continue
        total += size
        if total > limits.max_total_uncompressed_bytes:
            raise DatasetError(
                f"{label} was refused: its files add up to more than "
                f"{format_bytes(limits.max_total_uncompressed_bytes)}, the most read at once."
            )
        entries.append(_Entry(parts, file=path))
    return _Upload(label, "folder", entries, skipped, count, None, limits)


def _strip_wrapper(entries: list[_Entry], lookup: dict[str, int]) -> list[_Entry]:
    """Drop one top folder that wraps everything, unless it is itself a class folder."""
    tops = {e.parts[0] for e in entries}
    if len(tops) != 1 or any(len(e.parts) < 2 for e in entries):
        return entries
    if class_key(next(iter(tops))) in lookup:
        return entries
    return [_Entry(e.parts[1:], e.member, e.file, e.top + e.parts[:1]) for e in entries]


def _not_image_reason(entry: _Entry) -> str | None:
    """Why a file is not even tried as an image (by its extension), or None to try it."""
    if entry.suffix in IMAGE_SUFFIXES or not entry.suffix:
        return None
    return f"not an image file ({entry.suffix}); images must be {FORMAT_NAMES}."


def _checked_image(upload: _Upload, entry: _Entry, display: str) -> bytes | None:
    """The file's bytes if it decodes as an image, else ``None`` with a skip entry recorded."""
    data = upload.read(entry)
    if data is None:
        return None
    try:
        load_image(
            data,
            name=display,
            max_pixels=upload.limits.max_pixels,
            max_bytes=upload.limits.max_member_bytes,
            max_side=WORK_SIDE,
        )
    except ImageReadError as err:
        upload.skip(entry, getattr(err, "reason", str(err)))
        return None
    return data


def _nothing_message(upload: _Upload) -> str:
    if upload.skipped:
        return f"{upload.label} holds no usable files.{_first_problem(upload.skipped)}"
    if upload.file_count:
        return f"{upload.label} holds only hidden or system files (such as __MACOSX or .DS_Store)."
    return f"{upload.label} is empty."


def _or_list(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _files(n: int) -> str:
    return f"{n:,} file" + ("" if n == 1 else "s")


def _first_problem(skipped: Sequence[Skipped]) -> str:
    return f" For example, '{skipped[0].name}': {skipped[0].reason}" if skipped else ""


def _read_class_folders(
    upload: _Upload, entries: list[_Entry], classes: tuple[str, ...], lookup: dict[str, int]
) -> list[Sample]:
    samples: list[Sample] = []
    for entry in entries:
        reason = _not_image_reason(entry)
        if reason:
            upload.skip(entry, reason)
            continue
        if len(entry.parts) < 2:
            upload.skip(
                entry, f"not inside a class folder (expected {_or_list([c + '/' for c in classes])})."
            )
            continue
        label = lookup.get(class_key(entry.parts[0]))
        if label is None:
            upload.skip(
                entry,
                f"in the folder '{entry.parts[0]}', which is not a class of this task "
                f"({', '.join(classes)}).",
            )
            continue
        data = _checked_image(upload, entry, entry.path)
        if data is not None:
            samples.append(Sample(entry.path, upload.source(entry, data), label))
    if not samples:
        folders = sorted({printable(e.parts[0], 40) for e in entries if len(e.parts) > 1})
        if len(folders) > 10:
            folders = [*folders[:10], f"and {len(folders) - 10} more"]
        class_paths = {e.path for e in entries if len(e.parts) > 1 and class_key(e.parts[0]) in lookup}
        in_classes = [s for s in upload.skipped if s.name in class_paths]
        unreadable = (
            f" {_files(len(in_classes))} in class folders could not be used.{_first_problem(in_classes)}"
            if in_classes
            else ""
        )
        raise DatasetError(
            f"{upload.label} holds {_files(upload.file_count)} but no readable images in class "
            f"folders named {_or_list(list(classes))}; found folders: {', '.join(folders) or 'none'}."
            f"{unreadable}"
        )
    return samples


def _index(entries: list[_Entry]) -> dict[str, dict[str, list[_Entry]]]:
    """Entries by exact path, case-folded path, file name and case-folded file name."""
    index: dict[str, dict[str, list[_Entry]]] = {"path": {}, "ipath": {}, "name": {}, "iname": {}}
    for e in entries:
        keys = [
            ("path", e.rel),
            ("ipath", e.rel.casefold()),
            ("name", e.parts[-1]),
            ("iname", e.parts[-1].casefold()),
        ]
        if e.top:
            keys += [("path", e.path), ("ipath", e.path.casefold())]
        for kind, key in keys:
            index[kind].setdefault(key, []).append(e)
    return index


def _match(row: LabelRow, index: dict[str, dict[str, list[_Entry]]]) -> list[_Entry]:
    base = row.filename.rsplit("/", 1)[-1]
    for kind, key in (
        ("path", row.filename),
        ("ipath", row.filename.casefold()),
        ("name", base),
        ("iname", base.casefold()),
    ):
        found = index[kind].get(key)
        if found:
            return found
    return []


def _read_with_csv(
    upload: _Upload, entries: list[_Entry], rows: Sequence[LabelRow], csv_label: str
) -> list[Sample]:
    if not rows:
        left_out = [s for s in upload.skipped if s.reason.startswith(("this line of the label CSV", "the label CSV"))]
        raise DatasetError(
            f"{csv_label[0].upper()}{csv_label[1:]} has no row with both a file name and a label, so "
            f"no image can be labelled.{_first_problem(left_out)}"
        )
    index = _index(entries)
    matched: dict[int, LabelRow] = {}
    for row in rows:
        found = _match(row, index)
        if not found:
            upload.note([Skipped(row.filename, f"listed in {csv_label} but not found in the {upload.kind}.")])
        elif len(found) > 1:
            reason = (
                f"{csv_label} names this file without its folder, and {len(found)} files have "
                "this name; give the path inside the upload."
            )
            upload.note([Skipped(row.filename, reason)])
        elif id(found[0]) in matched:
            first = matched[id(found[0])].line
            upload.note([Skipped(row.filename, f"the same file as line {first} of {csv_label}.")])
        else:
            matched[id(found[0])] = row
    if not matched:
        examples = ", ".join(f"'{r.filename}'" for r in rows[:3])
        present = ", ".join(f"'{e.path}'" for e in entries[:3]) or "no files"
        raise DatasetError(
            f"None of the {_files(len(rows))} listed in {csv_label} are in {upload.label[0].lower()}"
            f"{upload.label[1:]} (for example {examples}); it holds {present}"
            f"{' and more' if len(entries) > 3 else ''}."
        )
    samples: list[Sample] = []
    listed = {e.path for e in entries if id(e) in matched}
    for entry in entries:
        row = matched.get(id(entry))
        if row is None:
            upload.skip(entry, _not_image_reason(entry) or f"not listed in {csv_label}.")
            continue
        data = _checked_image(upload, entry, entry.path)
        if data is not None:
            samples.append(Sample(entry.path, upload.source(entry, data), row.label, row.group, row.meta))
    if not samples:
        raise DatasetError(
            f"None of the files listed in {csv_label} could be read as images."
            f"{_first_problem([s for s in upload.skipped if s.name in listed])}"
        )
    return samples


def _csv_bytes(labels_csv: str | Path | bytes, limits: ReadLimits) -> tuple[bytes, str | None]:
    if isinstance(labels_csv, (bytes, bytearray, memoryview)):
        return bytes(labels_csv), None
    path = Path(labels_csv)
    try:
        with path.open("rb") as fh:
            data = fh.read(limits.max_member_bytes + 1)
    except OSError as err:
        raise DatasetError(f"The label CSV '{path}' cannot be read ({err.strerror or err}).") from None
    if len(data) > limits.max_member_bytes:
        raise DatasetError(f"The label CSV '{path}' is larger than {format_bytes(limits.max_member_bytes)}.")
    return data, path.name


def _csv_label(name: str | None) -> str:
    return f"the label CSV '{name}'" if name else "the label CSV"


def _root_csv(upload: _Upload, entries: list[_Entry], lookup: dict[str, int]) -> _Entry | None:
    """The one top-level CSV to read labels from, or None when class folders are the labels."""
    csvs = [e for e in entries if len(e.parts) == 1 and e.suffix == ".csv"]
    has_class_folders = any(len(e.parts) > 1 and class_key(e.parts[0]) in lookup for e in entries)
    if len(csvs) > 1 and not has_class_folders:
        raise DatasetError(
            f"{upload.label} has {len(csvs)} CSV files at the top level "
            f"({', '.join(e.path for e in csvs[:5])}); keep only the label CSV, or pass it separately."
        )
    return csvs[0] if len(csvs) == 1 else None


def _is_same_file(entry: _Entry, labels_csv: str | Path | bytes) -> bool:
    """The label CSV kept inside the folder it labels is not one of its files."""
    if entry.file is None or isinstance(labels_csv, (bytes, bytearray, memoryview)):
        return False
    try:
        return entry.file.samefile(labels_csv)
    except OSError:
        return False


def _with_table(upload: _Upload, entries: list[_Entry], table: LabelTable, csv_label: str) -> list[Sample]:
    upload.note(table.skipped)
    return _read_with_csv(upload, entries, table.rows, csv_label)


def _auto_layout(
    upload: _Upload, entries: list[_Entry], classes: tuple[str, ...], lookup: dict[str, int]
) -> list[Sample]:
    """A top-level label CSV if there is a usable one, class folders otherwise."""
    csv_entry = _root_csv(upload, entries, lookup)
    if csv_entry is None:
        return _read_class_folders(upload, entries, classes, lookup)
    others = [e for e in entries if e is not csv_entry]
    data = upload.read(csv_entry)
    has_class_folders = any(len(e.parts) > 1 and class_key(e.parts[0]) in lookup for e in entries)
    try:
        if data is None:
            raise DatasetError(f"The label CSV '{csv_entry.path}' cannot be read.")
        table = parse_labels_csv(data, classes, name=csv_entry.path, max_rows=upload.limits.max_files)
    except DatasetError as err:
        if not has_class_folders:
            raise
        upload.skip(csv_entry, f"not used as labels (the class folders are): {err}")
        return _read_class_folders(upload, others, classes, lookup)
    return _with_table(upload, others, table, _csv_label(csv_entry.path))


def read_labelled_set(
    source: str | Path | bytes,
    classes: Sequence[str],
    labels_csv: str | Path | bytes | None = None,
    *,
    name: str = "upload",
    limits: ReadLimits = DEFAULT_LIMITS,
) -> LabelledSet:
    """Read a labelled set from a folder, a zip (path or bytes) and optionally a label CSV.

    ``name`` is the upload's name in messages (a path source shows its own file name).
    Raises ``DatasetError`` when nothing usable is found, saying what was found instead.
    """
    classes = tuple(classes)
    lookup = class_lookup(classes)
    with _open_upload(source, name, limits) as upload:
        entries = _strip_wrapper(upload.entries, lookup)
        if not entries:
            raise DatasetError(_nothing_message(upload))
        upload.check_pixels(entries)
        if labels_csv is not None:
            data, csv_name = _csv_bytes(labels_csv, limits)
            table = parse_labels_csv(data, classes, name=csv_name, max_rows=limits.max_files)
            entries = [e for e in entries if not _is_same_file(e, labels_csv)]
            samples = _with_table(upload, entries, table, _csv_label(csv_name))
        else:
            samples = _auto_layout(upload, entries, classes, lookup)
        return LabelledSet(tuple(samples), classes, tuple(upload.skipped))


def read_unlabelled_set(
    source: str | Path | bytes, *, name: str = "upload", limits: ReadLimits = DEFAULT_LIMITS
) -> LabelledSet:
    """Images without labels (``label=None``) from a zip, a folder, or one image's bytes or path.

    One image that cannot be decoded raises ``ImageReadError``; in a zip or folder such files
    are skipped and listed, and ``DatasetError`` is raised only if none can be read.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not is_zip_bytes(data):
            load_image(
                data, name=name, max_pixels=limits.max_pixels, max_bytes=limits.max_member_bytes, max_side=WORK_SIDE
            )
            return LabelledSet((Sample(name, data, None),), ())
    elif Path(source).is_file() and Path(source).suffix.casefold() != ".zip":
        path = Path(source)
        with path.open("rb") as fh:
            is_zip = is_zip_bytes(fh.read(4))
        if not is_zip:
            load_image(path, name=path.name, max_pixels=limits.max_pixels, max_bytes=limits.max_member_bytes,
                       max_side=WORK_SIDE)
            return LabelledSet((Sample(path.name, path, None),), ())
    with _open_upload(source, name, limits) as upload:
        upload.check_pixels(upload.entries)
        samples: list[Sample] = []
        for entry in upload.entries:
            reason = _not_image_reason(entry)
            if reason:
                upload.skip(entry, reason)
                continue
            data = _checked_image(upload, entry, entry.path)
            if data is not None:
                samples.append(Sample(entry.path, upload.source(entry, data), None))
        if not upload.entries:
            raise DatasetError(_nothing_message(upload))
        if not samples:
            raise DatasetError(
                f"{upload.label} holds {_files(upload.file_count)} but no readable images."
                f"{_first_problem(upload.skipped)}"
            )
        return LabelledSet(tuple(samples), (), tuple(upload.skipped))


def read_images(
    source: str | Path | bytes, *, name: str = "upload", limits: ReadLimits = DEFAULT_LIMITS
) -> list[Sample]:
    """Unlabelled images as ``Sample``s; files left out are logged (use ``read_unlabelled_set``
    to get them as a list)."""
    result = read_unlabelled_set(source, name=name, limits=limits)
    if result.skipped:  # counts only: file names of uploads are never logged
        log.warning("%d file(s) of the upload were skipped", len(result.skipped))
    return list(result.samples)
