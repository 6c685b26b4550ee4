"""The samples a recipe trains on: the task's shared set or generated CI images, decoded once.

``recipe_pool(recipe)`` keeps unlabelled rows (label None): the mortality imputation needs
them; every split and fold is drawn from the labelled ones only.
"""
from __future__ import annotations

import hashlib
import io
import logging
import time
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch

from medmodels.data.images import load_image
from medmodels.data.samples import LabelledSet, Sample
from medmodels.data.transforms import to_uint8_tensor
from medmodels.train.recipe import Recipe, RecipeError
from medmodels.zoo.registry import Preprocess, get_task

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache" / "tensors"


def synthetic_cells(task: str, n: int, seed: int, size: int = 48) -> LabelledSet:
    """Generated colour images for the CI recipes: class k draws a blob of brightness tied to k.

    Learnable in one epoch, eight groups, no files; each sample's ``source`` is PNG bytes.
    """
    from PIL import Image

    classes = get_task(task).classes
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        label = i % len(classes)
        img = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        c = size // 2 + rng.integers(-4, 5, size=2)
        yy, xx = np.ogrid[:size, :size]
        disc = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 < (size // 4) ** 2
        img[disc] = 80 + 170 * label // max(len(classes) - 1, 1)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        samples.append(Sample(name=f"synthetic_{i:04d}.png", source=buf.getvalue(),
                              label=label, group=f"g{i % 8}"))
    return LabelledSet(samples, classes)


def synthetic_xrays(task: str, n: int, seed: int, size: int = 40) -> LabelledSet:
    """Generated X-ray-like images with metadata, for CI: a disc whose brightness is the class.

    Mortality pools get a quarter unlabelled rows and metadata (ICU, O2, intubation, age)
    tied to the label, so that imputation and CV run end to end without data files.
    """
    from PIL import Image

    classes = get_task(task).classes
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        label = (i // 2) % 2
        img = rng.integers(0, 60, size=(size, size), dtype=np.uint8)
        yy, xx = np.ogrid[:size, :size]
        img[(yy - size // 2) ** 2 + (xx - size // 2) ** 2 < (size // 4) ** 2] = 90 + 150 * label
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG")
        yn = "Y" if label else "N"
        meta = {"went_icu": yn, "needed_supplemental_O2": yn, "intubation_present": yn, "extubated": "N",
                "age": str(40 + 30 * label + int(rng.integers(0, 10))), "dataset": "synthetic",
                "survival": ("N" if label else "Y")}
        unlabelled = task == "mortality" and i % 4 == 3
        if unlabelled:
            meta["survival"] = ""
        samples.append(Sample(name=f"synthetic_{i:04d}.png", source=buf.getvalue(),
                              label=None if unlabelled else label, group=f"p{i // 2}",
                              meta=MappingProxyType(meta)))
    return LabelledSet(samples, classes)


# Generated images per task (default: cells); the X-ray tasks need metadata and patients.
SYNTHETIC = {"covid": (synthetic_xrays, 48), "mortality": (synthetic_xrays, 48)}


def _source(recipe: Recipe) -> LabelledSet:
    from medmodels.data.shared import shared_samples, wbc_augmented_samples, wbc_cell_copies

    if recipe.data == "synthetic":
        make, default_n = SYNTHETIC.get(recipe.task, (synthetic_cells, 32))
        return make(recipe.task, recipe.max_images or default_n, recipe.seed)
    if recipe.data == "wbc_cell_copies":
        return wbc_cell_copies()
    if recipe.data == "wbc_augmented":
        pool = wbc_augmented_samples()
        return LabelledSet([s for s in pool.samples if s.meta.get("split") in ("train", "test")],
                           pool.classes, pool.skipped)
    return shared_samples(recipe.task)


def recipe_pool(recipe: Recipe) -> LabelledSet:
    """Every sample the recipe may use; ``max_images`` draws that many labelled ones (seeded)."""
    pool = _source(recipe)
    labelled = [i for i, s in enumerate(pool.samples) if s.label is not None]
    if not labelled:
        raise RecipeError(f"Recipe {recipe.name}: the data set holds no labelled images.")
    if recipe.max_images and len(labelled) > recipe.max_images:
        rng = np.random.default_rng(recipe.seed)
        keep = set(np.asarray(labelled)[rng.choice(len(labelled), size=recipe.max_images, replace=False)].tolist())
        pool = LabelledSet([s for i, s in enumerate(pool.samples) if s.label is None or i in keep],
                           pool.classes, pool.skipped)
    if recipe.inputs == "lung_only":
        from medmodels.lungs import lung_only_set

        pool = lung_only_set(pool)
    return pool


def labelled_indices(pool: LabelledSet) -> np.ndarray:
    return np.asarray([i for i, s in enumerate(pool.samples) if s.label is not None], dtype=int)


def cache_key(recipe: Recipe, pre: Preprocess, pool: LabelledSet) -> str | None:
    """Disk-cache key of the decoded pool (None for generated images, which are never cached)."""
    if recipe.data == "synthetic":
        return None
    h = hashlib.sha256()
    h.update(repr((recipe.task, recipe.data, pre.input_size, pre.resize, pre.grayscale)).encode())
    for s in pool.samples:
        h.update(s.name.encode())
        h.update(str(s.source if isinstance(s.source, Path) else len(s.source)).encode())
    return h.hexdigest()[:16]


def decode_all(pool: LabelledSet, pre: Preprocess, key: str | None = None) -> torch.Tensor:
    """Every image decoded once and resized to the model view: uint8 [N, C, H, W].

    Kept in memory for the whole run (and in ``.cache/tensors`` when a key is given), since
    decoding PNG/JPEG files every epoch would cost more than training a shallow net.
    """
    path = CACHE_DIR / f"{key}.pt" if key else None
    if path is not None and path.is_file():
        cached = torch.load(path, weights_only=True)
        if cached.shape[0] == len(pool):
            log.info("decoded images from cache %s", path.name)
            return cached
    t0 = time.perf_counter()
    images = torch.stack([to_uint8_tensor(load_image(s.source, s.name), pre) for s in pool.samples])
    log.info("decoded %d images in %.1fs", len(pool), time.perf_counter() - t0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(images, path)
    return images
