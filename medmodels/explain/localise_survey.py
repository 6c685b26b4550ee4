"""Where do our models look? Localisation scores over each shipped model's test split.

``survey_task(task)`` explains every test image of every shipped model of a chest X-ray or
WBC task with every method, scores each map (:mod:`medmodels.explain.localise`) and writes
the means per model and method to ``weights/<task>/localisation.json``, a side record next
to the models (it never touches their metrics.json). ``localisation_table()`` renders those
records as the Markdown table of the reproduction report.

Cost: the single-pass methods (Grad-CAM, Guided Grad-CAM, Saliency) run on the whole test
split; the multi-pass ones (IG, SmoothGrad, Occlusion) on a fixed, seeded, class-stratified
subset with lighter settings (recorded in the file), because occlusion alone costs the
VGG19+ResNet50V2 teacher about 50 s per image on one CPU thread.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmodels.errors import DatasetError, MedModelsError
from medmodels.explain.localise import (
    LocalisationScore,
    box_in_crop,
    box_score,
    box_to_view,
    lung_scores,
)

log = logging.getLogger(__name__)

RECORD_FILE = "localisation.json"
SINGLE_PASS = ("gradcam", "guided_gradcam", "saliency")
MULTI_PASS = ("ig", "smoothgrad", "occlusion")
XRAY_TASKS = ("covid", "mortality")
BOX_TASKS = ("wbc",)


def localisation_region(task: str) -> str | None:
    """What a task's maps are scored against ("lung field", "cell box"), or None."""
    return "lung field" if task in XRAY_TASKS else "cell box" if task in BOX_TASKS else None


@dataclass(frozen=True)
class SurveyConfig:
    """What a survey computes; written into the record so that it can be re-run alike."""

    max_multi_pass_images: int = 24
    ig_steps: int = 16
    smoothgrad_samples: int = 8
    occlusion_stride_is_window: bool = True
    batch_size: int = 8
    seed: int = 0
    threads: int = 1


def test_samples(card: Any) -> list:
    """The test split a shipped model was scored on (``held_out_set``: its record's test groups)."""
    from medmodels.evaluate import held_out_set

    return list(held_out_set(card).samples)


def _subset(samples: list, n: int, seed: int) -> list[int]:
    """A seeded, class-stratified choice of ``n`` indices (all when there are fewer)."""
    if len(samples) <= n:
        return list(range(len(samples)))
    rng = np.random.default_rng(seed)
    by_class: dict[Any, list[int]] = {}
    for i, s in enumerate(samples):
        by_class.setdefault(s.label, []).append(i)
    picked: list[int] = []
    for label, idx in sorted(by_class.items(), key=lambda kv: str(kv[0])):
        k = max(1, round(n * len(idx) / len(samples)))
        picked += rng.choice(idx, size=min(k, len(idx)), replace=False).tolist()
    return sorted(picked)[:n]


def _settings(cfg: SurveyConfig, method: str, size: int) -> Any:
    from medmodels.explain import ExplainSettings, occlusion_geometry

    base = ExplainSettings(ig_steps=cfg.ig_steps, smoothgrad_samples=cfg.smoothgrad_samples, seed=cfg.seed)
    if method == "occlusion" and cfg.occlusion_stride_is_window:
        window, _ = occlusion_geometry(size, base)
        return ExplainSettings(ig_steps=cfg.ig_steps, smoothgrad_samples=cfg.smoothgrad_samples,
                               occlusion_window=window, occlusion_stride=window, seed=cfg.seed)
    return base


def sample_box(sample: Any, image: Any) -> tuple[Any, str | None]:
    """The labelled cell's box of one sample in its image's pixels: (box, None), (None, problem)
    or (None, None) when no box is known.

    Looked up in order: ``x0,y0,x1,y1`` columns of an uploaded label CSV (``sample.meta``); a
    VOC XML file beside the image (folder sets); a bundled example (by its pixels); a crop of a
    BCCD original whose annotation is in ``../shared/data`` (the WBC test splits).
    """
    from medmodels.data.cell_crops import read_voc_boxes, square_around
    from medmodels.data.shared import shared_data_root
    from medmodels.explain.localise import box_from_meta, box_from_voc, bundled_box

    box, problem = box_from_meta(getattr(sample, "meta", {}) or {}, image.size)
    if box is not None or problem is not None:
        return box, problem
    source = getattr(sample, "source", None)
    if isinstance(source, Path) and source.with_suffix(".xml").is_file():
        return box_from_voc(source.with_suffix(".xml"), image.size)
    box = bundled_box(image)
    if box is not None:
        return box, None
    root = shared_data_root()
    xml = root / "wbc_originals" / "Annotations" / f"{Path(sample.name).stem}.xml" if root else None
    if xml is not None and xml.is_file():
        boxes = read_voc_boxes(xml, "WBC")
        if len(boxes) == 1:
            left, top, right, _ = square_around(boxes[0], (640, 480))
            if image.size == (right - left, right - left):  # the image is that original's cell crop
                return box_in_crop(boxes[0], (640, 480)), None
    return None, None


def _wbc_boxes(samples: list, images: list) -> dict[str, Any]:
    """Box of the labelled cell inside each test crop (from the BCCD VOC annotation)."""
    out = {}
    for s, image in zip(samples, images):
        box, _ = sample_box(s, image)
        if box is not None:
            out[s.name] = box
    return out


def score_samples(model: Any, entry: Any, samples: list, images: list, methods: tuple[str, ...],
                  settings_for: Any, lung_fields: dict[str, Any] | None = None,
                  batch_size: int = 8, progress: Any = None, cache_dir: Path | None = None
                  ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Mean localisation per method over ``samples`` (lungs for X-rays, cell box otherwise).

    ``lung_fields`` maps sample names to ``LungField`` (X-rays); boxes come from
    :func:`sample_box`. Returns (per-method aggregate, [(image, box problem)]): rows with a
    bad box are reported and skipped, the rest still count. ``cache_dir`` keeps each map
    (float16 .npy per method and image) so that a re-run only re-scores.
    """
    from medmodels.data.transforms import preprocess_batch
    from medmodels.explain import explain

    pre = entry.preprocess
    xray = entry.task_spec.modality == "x-ray"
    problems: list[tuple[str, str]] = []
    boxes: dict[str, Any] = {}
    if not xray:
        for s, image in zip(samples, images):
            box, problem = sample_box(s, image)
            if problem:
                problems.append((s.name, problem))
            elif box is not None:
                boxes[s.name] = box
    usable = [i for i, s in enumerate(samples) if (s.name in lung_fields if xray else s.name in boxes)]
    out: dict[str, Any] = {}
    done, total = 0, len(usable) * len(methods)
    for method in methods:
        scores: list[tuple[LocalisationScore, ...]] = []
        t0 = time.perf_counter()
        for start in range(0, len(usable), batch_size):
            chunk = usable[start:start + batch_size]
            maps = _cached_maps(cache_dir, method, [samples[i].name for i in chunk])
            if maps is None:
                batch = preprocess_batch([images[i] for i in chunk], pre)
                maps = explain(model, entry, batch, method=method, settings=settings_for(method)).maps
                _store_maps(cache_dir, method, [samples[i].name for i in chunk], maps)
            for i, m in zip(chunk, maps):
                if xray:
                    scores.append(lung_scores(m, lung_fields[samples[i].name], pre))
                else:
                    scores.append((box_score(m, box_to_view(boxes[samples[i].name], images[i].size, pre)),))
            done += len(chunk)
            if progress:
                progress(done, total)
        out[method] = _aggregate(scores, time.perf_counter() - t0)
    return out, problems


def _map_path(cache_dir: Path, method: str, name: str) -> Path:
    import hashlib

    return cache_dir / method / f"{hashlib.sha1(name.encode()).hexdigest()[:16]}.npy"


def _cached_maps(cache_dir: Path | None, method: str, names: list[str]) -> np.ndarray | None:
    if cache_dir is None or not all(_map_path(cache_dir, method, n).is_file() for n in names):
        return None
    return np.stack([np.load(_map_path(cache_dir, method, n)).astype(np.float32) for n in names])


def _store_maps(cache_dir: Path | None, method: str, names: list[str], maps: np.ndarray) -> None:
    if cache_dir is None:
        return
    (cache_dir / method).mkdir(parents=True, exist_ok=True)
    for n, m in zip(names, maps):
        np.save(_map_path(cache_dir, method, n), m.astype(np.float16))


def lung_fields_for(samples: list, images: list, batch_size: int = 8,
                    cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """``LungField`` of every X-ray (shipped lung model), keyed by sample name."""
    from medmodels.lungs import load_lung_model, segment_batch

    cache = {} if cache is None else cache
    model, _ = load_lung_model()
    todo = [i for i, s in enumerate(samples) if s.name not in cache]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        for i, field in zip(chunk, segment_batch(model, [images[i] for i in chunk])):
            cache[samples[i].name] = field
    return {s.name: cache[s.name] for s in samples}


def _aggregate(scores: list[tuple[LocalisationScore, ...]], seconds: float) -> dict[str, Any]:
    first = [s[0] for s in scores]
    done = [s for s in first if s.computed]
    out: dict[str, Any] = {
        "n_images": len(scores),
        "n_scored": len(done),
        "not_computed": dict(Counter(s.note.split(" (")[0] for s in first if not s.computed)),
        "inside_mean": float(np.mean([s.inside for s in done])) if done else None,
        "chance_mean": float(np.mean([s.chance for s in done])) if done else None,
        "ratio_mean": float(np.mean([s.ratio for s in done if s.ratio is not None])) if done else None,
        "seconds_per_map": seconds / max(len(scores), 1),
    }
    if scores and len(scores[0]) > 1:
        wide = [s[1] for s in scores if s[1].computed]
        out["dilated_inside_mean"] = float(np.mean([s.inside for s in wide])) if wide else None
        out["dilated_chance_mean"] = float(np.mean([s.chance for s in wide])) if wide else None
    return out


def survey_model(task: str, name: str, cfg: SurveyConfig, lung_cache: dict[str, Any],
                 methods: tuple[str, ...] = SINGLE_PASS + MULTI_PASS) -> dict[str, Any]:
    """Localisation of one shipped model on its test split, per method."""
    from medmodels.data.images import load_image
    from medmodels.hub import load_trained

    model, card = load_trained(task, name)
    pre = card.entry.preprocess
    samples = test_samples(card)
    images = [load_image(s.source, s.name) for s in samples]
    multi = set(_subset(samples, cfg.max_multi_pass_images, cfg.seed))
    fields = lung_fields_for(samples, images, cfg.batch_size, lung_cache) if task in XRAY_TASKS else None
    result: dict[str, Any] = {"test_images": len(samples), "methods": {}}
    if fields is not None:
        result["implausible_lung_fields"] = sum(not f.plausible for f in fields.values())
    else:
        result["images_with_box"] = len(_wbc_boxes(samples, images))
    for method in methods:
        idx = [i for i in range(len(samples)) if method in SINGLE_PASS or i in multi]
        sub = [samples[i] for i in idx]
        scored, _ = score_samples(model, card.entry, sub, [images[i] for i in idx], (method,),
                                  lambda m: _settings(cfg, m, pre.input_size), fields, cfg.batch_size,
                                  cache_dir=_cache_dir(task, name, card, cfg))
        result["methods"][method] = scored[method]
        log.info("%s/%s %s: %s", task, name, method, {k: v for k, v in scored[method].items()
                                                     if k in ("n_scored", "inside_mean", "chance_mean")})
    return result


def _cache_dir(task: str, name: str, card: Any, cfg: SurveyConfig) -> Path:
    """Maps depend on the weights and the method settings, never on the lung model."""
    import hashlib

    from medmodels.hub import REPO_ROOT

    key = hashlib.sha1(json.dumps([card.config.get("sha256"), asdict(cfg)], sort_keys=True).encode())
    return REPO_ROOT / ".cache" / "localise" / task / name / key.hexdigest()[:12]


def shipped_models(task: str) -> list[str]:
    from medmodels.hub import weights_status
    from medmodels.zoo.registry import list_models

    return [e.name for e in list_models(task) if weights_status(task, e.name)[0]]


def survey_task(task: str, cfg: SurveyConfig = SurveyConfig(), models: list[str] | None = None,
                out: Path | None = None) -> Path:
    """Survey every shipped model of ``task``; write and return ``weights/<task>/localisation.json``."""
    from medmodels.hub import HubSettings, sha256_of
    from medmodels.lungs import lung_model_folder

    if task not in XRAY_TASKS + BOX_TASKS:
        raise MedModelsError(f"Localisation scores exist for the chest X-ray and WBC tasks "
                             f"({', '.join(XRAY_TASKS + BOX_TASKS)}), not {task!r}.")
    torch.set_num_threads(cfg.threads)
    out = out or HubSettings.from_env().weights_dir / task / RECORD_FILE
    record: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    record.update({
        "task": task,
        "region": "lung field" if task in XRAY_TASKS else "cell box",
        "config": asdict(cfg),
        "single_pass_methods_on": "every test image",
        "multi_pass_methods_on": f"a seeded class-stratified subset of {cfg.max_multi_pass_images} test images",
    })
    if task in XRAY_TASKS:
        folder = lung_model_folder()
        record["lung_model"] = {"model": "lungs/unet_lite0", "sha256": sha256_of(folder / "model.safetensors")}
    record.setdefault("models", {})
    record.setdefault("skipped", {})
    lung_cache: dict[str, Any] = {}
    for name in models or shipped_models(task):
        t0 = time.perf_counter()
        try:
            result = survey_model(task, name, cfg, lung_cache)
        except DatasetError as err:
            record["skipped"][name] = ("no held-out test split: the shipped weights were refitted on every "
                                       "labelled image after cross-validation" if "no test split" in str(err)
                                       else str(err))
            record["models"].pop(name, None)
            log.warning("%s/%s skipped: %s", task, name, err)
            continue
        result["seconds"] = round(time.perf_counter() - t0, 1)
        result["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record["models"][name] = result
        record["skipped"].pop(name, None)
        out.write_text(json.dumps(record, indent=2) + "\n")  # after each model: a killed run keeps them
    out.write_text(json.dumps(record, indent=2) + "\n")
    return out


# --------------------------------------------------------------------------- report table


def read_records(weights_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    from medmodels.hub import HubSettings

    base = weights_dir or HubSettings.from_env().weights_dir
    out = {}
    for task in XRAY_TASKS + BOX_TASKS:
        path = base / task / RECORD_FILE
        if path.is_file():
            out[task] = json.loads(path.read_text())
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def localisation_table(weights_dir: Path | None = None) -> str:
    """Markdown: per task, model and method, the share inside the region vs chance."""
    from medmodels.explain import METHODS

    records = read_records(weights_dir)
    if not records:
        return ""
    lines = [
        "Share of each map's positive attribution inside the predicted lung field (chest X-rays; "
        "in brackets the field dilated by 3 % of the side) or inside the labelled cell's box (WBC), "
        "averaged over the model's test split; *chance* is the region's share of the image, what an "
        "evenly spread map scores. Multi-pass methods ran on a fixed subset (n in the table).",
        "",
        "| task | model | method | n | inside | chance | inside / chance |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, rec in records.items():
        for name, res in rec.get("models", {}).items():
            for method, m in res.get("methods", {}).items():
                inside = _pct(m.get("inside_mean"))
                if "dilated_inside_mean" in m:
                    inside += f" ({_pct(m.get('dilated_inside_mean'))})"
                ratio = "–" if m.get("ratio_mean") is None else f"{m['ratio_mean']:.2f}"
                n = f"{m['n_scored']}" + (f" of {m['n_images']}" if m["n_scored"] != m["n_images"] else "")
                lines.append(f"| {task} | {name} | {METHODS.get(method, method)} | {n} | {inside} | "
                             f"{_pct(m.get('chance_mean'))} | {ratio} |")
        for name, why in rec.get("skipped", {}).items():
            lines.append(f"| {task} | {name} | – | 0 | not surveyed: {why} | | |")
    lung_only = lung_only_table(weights_dir)
    if lung_only:
        lines += ["", "**Lung-only inputs** (issue 19): the same architecture and fold trained on X-rays cropped to "
                  "the predicted lung field and black outside it, beside the full-image model.", "", lung_only.rstrip()]
    return "\n".join(lines) + "\n"


def stored_summary(task: str, names: list[str], method: str = "gradcam",
                   weights_dir: Path | None = None) -> str:
    """One sentence from ``weights/<task>/localisation.json`` for the models ``names`` (or "")."""
    rec = read_records(weights_dir).get(task)
    if not rec:
        return ""
    parts, chance = [], None
    for name in names:
        m = (rec.get("models", {}).get(name) or {}).get("methods", {}).get(method)
        if m and m.get("inside_mean") is not None:
            parts.append(f"{name} {_pct(m['inside_mean'])} (over {m['n_scored']} images)")
            chance = m.get("chance_mean")
    if not parts:
        return ""
    from medmodels.explain import METHODS

    return (f"Over each model's whole test split (stored survey), the share of {METHODS[method]} inside "
            f"the {rec.get('region', 'region')}: " + ", ".join(parts) + f"; chance {_pct(chance)}.")


def survey_lung_only(task: str, name: str, base: str, state_file: Path, cfg: SurveyConfig = SurveyConfig(),
                     methods: tuple[str, ...] = SINGLE_PASS + MULTI_PASS, out: Path | None = None) -> Path:
    """Localisation of a lung-only model (issue 19) on the test split of the shipped ``base`` model.

    The model (architecture of ``task/base``, weights from ``state_file``, e.g. the fold-1
    model kept in the engine's fold cache) sees ``lung_only`` crops; its maps are scored
    against the lung field cropped the same way. Images whose field is flagged are not
    scored, as in the full-image survey. Written into ``weights/<task>/localisation.json``
    under ``name``, marked ``inputs: lung_only``.
    """
    import dataclasses as dc

    from PIL import Image

    from medmodels.data.images import load_image
    from medmodels.data.transforms import resize_for_model
    from medmodels.hub import HubSettings, load_trained
    from medmodels.lungs import lung_only, lung_only_region
    from medmodels.zoo.registry import build_arch

    torch.set_num_threads(cfg.threads)
    _, card = load_trained(task, base)
    entry = card.entry
    model = build_arch(entry)
    model.load_state_dict(torch.load(state_file, map_location="cpu", weights_only=True))
    model.eval()
    samples = test_samples(card)
    originals = [load_image(s.source, s.name) for s in samples]
    fields = lung_fields_for(samples, originals, cfg.batch_size)
    plausible = [i for i, s in enumerate(samples) if fields[s.name].plausible]
    inputs = {i: lung_only(originals[i], fields[samples[i].name]) for i in plausible}
    regions = {}
    for i in plausible:
        crop = Image.fromarray(lung_only_region(fields[samples[i].name]).astype(np.uint8) * 255)
        regions[i] = np.asarray(resize_for_model(crop, entry.preprocess))[..., 0] > 127
    multi = set(_subset(samples, cfg.max_multi_pass_images, cfg.seed))
    from medmodels.data.transforms import preprocess_batch
    from medmodels.explain import explain
    from medmodels.explain.localise import positive_share

    result: dict[str, Any] = {"test_images": len(samples), "inputs": "lung_only", "base_model": base,
                              "weights": str(state_file.name), "implausible_lung_fields": len(samples) - len(plausible),
                              "methods": {}}
    for method in methods:
        idx = [i for i in plausible if method in SINGLE_PASS or i in multi]
        scores: list[tuple[LocalisationScore, ...]] = []
        t0 = time.perf_counter()
        for start in range(0, len(idx), cfg.batch_size):
            chunk = idx[start:start + cfg.batch_size]
            batch = preprocess_batch([inputs[i] for i in chunk], entry.preprocess)
            maps = explain(model, entry, batch, method=method,
                           settings=_settings(cfg, method, entry.preprocess.input_size)).maps
            scores += [(positive_share(m, regions[i], "lung field"),) for i, m in zip(chunk, maps)]
        result["methods"][method] = _aggregate(scores, time.perf_counter() - t0)
        log.info("%s/%s %s: %s", task, name, method, result["methods"][method].get("inside_mean"))
    out = out or HubSettings.from_env().weights_dir / task / RECORD_FILE
    record = json.loads(out.read_text()) if out.is_file() else {"task": task, "models": {}}
    result["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record.setdefault("models", {})[name] = result
    out.write_text(json.dumps(record, indent=2) + "\n")
    return out


# --------------------------------------------------------------------------- lung-only experiment

#: (full-image model, its lung-only run folder below it): the issue-19 comparison pairs, one
#: trained from scratch and one ImageNet-initialised
LUNG_ONLY_RUNS = (("covid", "mobilenet_v2", "mobilenet_v2_lungs"),
                  ("covid", "efficientnet_lite0", "efficientnet_lite0_lungs"))


def lung_only_rows(weights_dir: Path | None = None) -> list[dict[str, Any]]:
    """Full-image vs lung-only model, side by side, from their run records (empty until run).

    Balanced accuracy on the same held-out fold, the Actualmed same-source audit, how
    predictable the image source is from the inputs, and the Grad-CAM share inside the lungs.
    """
    from medmodels.hub import HubSettings
    from medmodels.record import RunRecord, SourceAudit

    base = weights_dir or HubSettings.from_env().weights_dir
    rows = []
    for task, full, lungs in LUNG_ONLY_RUNS:
        paths = {"full": base / task / full / "metrics.json", "lung_only": base / task / full / lungs / "metrics.json"}
        if not all(p.is_file() for p in paths.values()):
            continue
        loc = (read_records(base).get(task) or {}).get("models", {})
        audits = {"full": base / task / "source_audit.json", "lung_only": base / task / "source_audit_lung_only.json"}
        for kind, path in paths.items():
            record = RunRecord.read(path)
            test = record.test_metrics
            actualmed = record.audit.actualmed if record.audit is not None else None
            actual = actualmed.metrics if actualmed is not None else {}
            src = SourceAudit.read(audits[kind]) if audits[kind].is_file() else None
            cam = ((loc.get(full if kind == "full" else lungs) or {}).get("methods") or {}).get("gradcam") or {}
            rows.append({
                "task": task, "model": full if kind == "full" else lungs, "inputs": kind.replace("_", "-"),
                "test": record.test_is or "", "balanced_accuracy": test.get("balanced_accuracy"),
                "roc_auc": test.get("roc_auc"), "actualmed_balanced_accuracy": actual.get("balanced_accuracy"),
                "actualmed_roc_auc": actual.get("roc_auc"),
                "source_accuracy": src.accuracy_mean if src is not None else None,
                "gradcam_inside_lungs": cam.get("inside_mean"), "gradcam_chance": cam.get("chance_mean"),
            })
    return rows


def lung_only_table(weights_dir: Path | None = None) -> str:
    """Markdown of :func:`lung_only_rows` (empty string until the lung-only run exists)."""
    rows = lung_only_rows(weights_dir)
    if not rows:
        return ""

    def f(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}"

    lines = ["| model | inputs | balanced acc. (fold 1) | ROC AUC | Actualmed balanced acc. | Actualmed ROC AUC "
             "| source predictable (acc.) | Grad-CAM inside lungs (chance) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cam = "–" if r["gradcam_inside_lungs"] is None else \
            f"{100 * r['gradcam_inside_lungs']:.0f} % ({100 * r['gradcam_chance']:.0f} %)"
        lines.append(f"| {r['task']}/{r['model']} | {r['inputs']} | {f(r['balanced_accuracy'])} | {f(r['roc_auc'])} | "
                     f"{f(r['actualmed_balanced_accuracy'])} | {f(r['actualmed_roc_auc'])} | "
                     f"{f(r['source_accuracy'])} | {cam} |")
    return "\n".join(lines) + "\n"


def lung_only_verdict(rows: list[dict[str, Any]]) -> str:
    """One sentence that reads the full-image vs lung-only rows, whatever they say."""
    if len(rows) < 2 or any(r["balanced_accuracy"] is None for r in rows[:2]):
        return ""
    full, lungs = rows[0], rows[1]
    acc = lungs["balanced_accuracy"] - full["balanced_accuracy"]
    parts = [f"balanced accuracy {'fell' if acc < 0 else 'rose'} from {full['balanced_accuracy']:.3f} to "
             f"{lungs['balanced_accuracy']:.3f}"]
    if full["actualmed_balanced_accuracy"] is not None and lungs["actualmed_balanced_accuracy"] is not None:
        gain = lungs["actualmed_balanced_accuracy"] - full["actualmed_balanced_accuracy"]
        parts.append(f"the Actualmed same-source audit {'gained' if gain > 0 else 'did not gain'} "
                     f"({full['actualmed_balanced_accuracy']:.3f} -> {lungs['actualmed_balanced_accuracy']:.3f})")
    if full["source_accuracy"] is not None and lungs["source_accuracy"] is not None:
        parts.append(f"the image source is predictable at {lungs['source_accuracy']:.3f} from the lung-only inputs "
                     f"({full['source_accuracy']:.3f} from full images)")
    return "With lung-only inputs, " + "; ".join(parts) + "."
