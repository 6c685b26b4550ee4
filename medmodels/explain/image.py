"""One image through one model's explanations: maps, their scores and overlays in one result.

``explain_image`` preprocesses the image once, computes each method's map for the predicted
class, scores it (faithfulness: deletion/insertion against a random order; localisation:
share inside the lung field or cell box) and keeps the model view the overlays are drawn on.
The result holds names and arrays only (no model, no registry entry), so it pickles: the
dashboard caches it as it is and the pages only lay it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from torch import nn

from medmodels.explain.faithfulness import FaithfulnessResult, deletion_insertion
from medmodels.explain.localise import LocalisationScore, map_scores
from medmodels.explain.methods import ExplainSettings, explain
from medmodels.explain.render import render_overlay
from medmodels.zoo.registry import ModelEntry

FAITH_KEYS = ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")


@dataclass(frozen=True)
class MethodMap:
    """One method's map ([H, W], model-view frame) for the predicted class, and its scores."""

    method: str
    map: np.ndarray
    signed: bool
    target: int
    probability: float
    seconds: float
    extra: dict[str, int | float | str] = field(default_factory=dict)
    faithfulness: FaithfulnessResult | None = None
    localisation: tuple[LocalisationScore, ...] = ()

    def faithfulness_numbers(self) -> dict[str, float]:
        """The four AUCs of the map and of a random pixel order (empty when not scored)."""
        f = self.faithfulness
        return {} if f is None else {k: float(getattr(f, k)[0]) for k in FAITH_KEYS}

    def numbers(self, classes: Sequence[str]) -> dict[str, Any]:
        """What the map's download reports: class, probability, time, settings and every score."""
        return {
            "target": classes[self.target],
            "probability": self.probability,
            "seconds": self.seconds,
            **self.extra,
            "localisation": [s.to_dict() for s in self.localisation],
            **self.faithfulness_numbers(),
        }


@dataclass(frozen=True)
class ImageExplanation:
    """Every asked method's map of one image by one model, and what the model saw."""

    task: str
    model: str
    classes: tuple[str, ...]
    view: Image.Image  # the preprocessed image as the model sees it (RGB, input size)
    maps: dict[str, MethodMap]

    def overlay(self, method: str, colormap: str | None = None, opacity: float = 0.5) -> Image.Image:
        """The method's map drawn over the model view."""
        m = self.maps[method]
        return render_overlay(self.view, m.map, colormap=colormap, opacity=opacity, signed=m.signed)

    def numbers(self) -> dict[str, dict[str, Any]]:
        return {method: m.numbers(self.classes) for method, m in self.maps.items()}


def explain_image(
    model: nn.Module,
    entry: ModelEntry,
    image: Image.Image,
    methods: Sequence[str],
    settings: ExplainSettings = ExplainSettings(),
    *,
    faithfulness_steps: int | None = None,
    field: Any = None,
    box: Any = None,
) -> ImageExplanation:
    """``methods``' maps of ``image`` for the model's predicted class, each scored.

    ``faithfulness_steps``: deletion/insertion steps (None: not scored); ``field`` the image's
    ``LungField`` (X-rays; a string says why there is none) or ``box`` its labelled cell's ``PixelBox`` (microscopy) for the
    localisation scores. The caller holds the model's lock when the model is shared.
    """
    from medmodels.data.transforms import model_view, preprocess_batch

    pre = entry.preprocess
    batch = preprocess_batch([image], pre)
    maps: dict[str, MethodMap] = {}
    for method in methods:
        exp = explain(model, entry, batch, method=method, settings=settings)
        attribution = exp.maps[0]
        faith = None
        if faithfulness_steps:
            faith = deletion_insertion(
                model, batch, attribution[None], int(exp.target[0]), steps=faithfulness_steps,
                baseline=settings.ig_baseline, preprocess=pre,
            )
        if isinstance(field, str):  # why the image has no lung field (e.g. the lung model is missing)
            scores = [LocalisationScore("lung field", None, None, field)]
        else:
            scores = map_scores(attribution, pre, entry.task_spec.modality, field=field, box=box,
                                image_size=image.size)
        maps[method] = MethodMap(
            method,
            attribution,
            bool(exp.signed),
            int(exp.target[0]),
            float(exp.probs[0]),
            float(exp.seconds),
            {k: v for k, v in exp.extra.items() if isinstance(v, (int, float, str))},
            faith,
            tuple(scores),
        )
    return ImageExplanation(entry.task, entry.name, tuple(entry.classes), model_view(image, pre), maps)
