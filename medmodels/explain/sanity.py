"""Model-parameter randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

Layers are re-initialised one after another from the classifier down (cascading), on a deep
copy of the model; after each step the explanation is recomputed for the same class and
compared with the original by Spearman rank correlation. A method whose map barely changes
while the weights are destroyed is explaining the image, not the model. Signed maps are
compared by magnitude, as in the paper's "absolute value" variant, because randomisation
often flips signs wholesale.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medmodels.explain.compare import map_rank_correlation
from medmodels.explain.guard import model_lock
from medmodels.explain.methods import Explanation, ExplainSettings, explain
from medmodels.zoo.registry import ModelEntry


@dataclass(frozen=True)
class SanityResult:
    """``spearman[k, i]``: correlation for image i after randomising layers 0..k."""

    layer_names: list[str]
    spearman: np.ndarray
    original: Explanation
    randomised_maps: np.ndarray  # [steps, N, H, W]

    @property
    def mean_spearman(self) -> np.ndarray:
        """Mean over images, one value per cascading step."""
        return self.spearman.mean(axis=1)


def layers_top_down(model: nn.Module, images: torch.Tensor) -> list[str]:
    """Names of modules that own parameters, in reverse order of execution.

    The order is observed on one forward pass (registration order can differ from the
    order a forward method uses its modules).
    """
    owners = {
        module: name
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    }
    seen: list[str] = []
    handles = [
        module.register_forward_hook(
            lambda mod, _inp, _out: seen.append(owners[mod]) if owners[mod] not in seen else None
        )
        for module in owners
    ]
    try:
        with torch.no_grad():
            model(images[:1])
    finally:
        for handle in handles:
            handle.remove()
    missed = [name for name in owners.values() if name not in seen]
    return list(reversed(missed + seen))


def _reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    """Fresh random weights: the module's own initialiser, else a small normal draw."""
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            reset()
        return
    with torch.no_grad():
        for param in module.parameters(recurse=False):
            noise = torch.randn(param.shape, generator=generator) * 0.02
            param.copy_(noise.to(param.device, param.dtype))


def _compare(a: np.ndarray, b: np.ndarray, signed: bool) -> float:
    return map_rank_correlation(np.abs(a), np.abs(b)) if signed else map_rank_correlation(a, b)


def randomisation_check(
    model: nn.Module,
    entry: ModelEntry,
    images: torch.Tensor,
    target: int | np.ndarray | torch.Tensor | None,
    method: str,
    settings: ExplainSettings = ExplainSettings(),
    *,
    layers: int | None = None,
    seed: int = 0,
) -> SanityResult:
    """Cascading randomisation from the top; ``layers`` caps the number of steps (None: all).

    The caller's model is never modified: the randomisation runs on a deep copy.
    """
    original = explain(model, entry, images, target, method, settings)
    with model_lock(model):  # no attribution hook is on the model while it is copied
        shadow = copy.deepcopy(model)
    names = layers_top_down(shadow, images.detach().to(next(shadow.parameters()).device))
    if layers is not None:
        names = names[: max(0, layers)]
    generator = torch.Generator().manual_seed(seed)
    rows, maps = [], []
    for name in names:
        _reinitialise(shadow.get_submodule(name), generator)
        randomised = explain(shadow, entry, images, original.target, method, settings)
        maps.append(randomised.maps)
        rows.append(
            [_compare(o, r, original.signed) for o, r in zip(original.maps, randomised.maps)]
        )
    n, h, w = original.maps.shape
    return SanityResult(
        layer_names=names,
        spearman=np.asarray(rows, dtype=np.float32).reshape(len(names), n),
        original=original,
        randomised_maps=np.asarray(maps, dtype=np.float32).reshape(len(names), n, h, w),
    )
