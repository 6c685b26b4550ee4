"""The record types every reader produces and every consumer (training, evaluation, dashboard) takes."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType


@dataclass(frozen=True)
class Sample:
    """One image with its label and the group (patient, slide, original cell) it belongs to.

    ``source`` is a file path or the image's bytes (uploads stay in memory). ``label`` is a
    class index into the task's classes, or ``None`` when unknown. ``meta`` carries extra
    columns (e.g. the X-ray metadata used for label imputation).
    """

    name: str
    source: Path | bytes
    label: int | None
    group: str | None = None
    meta: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Skipped:
    """A file a reader left out, and why (shown to the user as a list)."""

    name: str
    reason: str


@dataclass(frozen=True)
class LabelledSet:
    """A labelled test or training set as read from a folder, zip or CSV."""

    samples: Sequence[Sample]
    classes: tuple[str, ...]
    skipped: Sequence[Skipped] = ()

    @property
    def labels(self) -> list[int | None]:
        return [s.label for s in self.samples]

    @property
    def groups(self) -> list[str | None]:
        return [s.group for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)
