"""Explanations on Captum: attribution maps, overlays, faithfulness and sanity checks.

``explain`` computes maps for any registered model; ``render_overlay`` draws them;
``deletion_insertion`` scores how faithful a map is; ``randomisation_check`` shows whether
a map depends on the model's weights at all.
"""
from medmodels.explain.baselines import BASELINES, ExplainError, make_baseline
from medmodels.explain.compare import map_rank_correlation, topk_iou
from medmodels.explain.faithfulness import FaithfulnessResult, deletion_insertion
from medmodels.explain.guard import hooks_left, model_guard, model_lock
from medmodels.explain.methods import (
    METHODS,
    SIGNED_METHODS,
    Explanation,
    ExplainSettings,
    explain,
    occlusion_geometry,
)
from medmodels.explain.render import COLORMAPS, SIGNED_COLORMAPS, render_map, render_overlay
from medmodels.explain.sanity import SanityResult, layers_top_down, randomisation_check

__all__ = [
    "BASELINES",
    "COLORMAPS",
    "METHODS",
    "SIGNED_COLORMAPS",
    "SIGNED_METHODS",
    "ExplainError",
    "ExplainSettings",
    "Explanation",
    "FaithfulnessResult",
    "SanityResult",
    "deletion_insertion",
    "explain",
    "hooks_left",
    "layers_top_down",
    "make_baseline",
    "map_rank_correlation",
    "model_guard",
    "model_lock",
    "occlusion_geometry",
    "randomisation_check",
    "render_map",
    "render_overlay",
    "topk_iou",
]
