"""The model card (README.md of a weights folder), generated from the recipe and metrics.json.

Every number on the card comes from the run that made the weights; the prose comes from
the registry entry (what the model is, which paper) and the recipe's ``notes`` (how this
run deviates from the paper). Nothing is typed in by hand.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medmodels.train.recipe import Recipe
from medmodels.zoo.registry import ModelEntry

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


def _split_lines(metrics: dict[str, Any]) -> list[str]:
    split = metrics["split"]
    task = metrics["task"]
    lines = []
    if split["mode"] == "grouped":
        lines.append(f"Split by {SPLIT_WORDS.get(task, 'group')}, stratified on the group's "
                     f"majority label, seed {split['seed']}; no group is in two parts.")
    else:
        lines.append("Split **by image at random** (leaky: augmented copies of one cell land in "
                     "train and test). This run exists only to show that leak.")
    lines.append("")
    lines.append("| part | images | groups | " + " | ".join(metrics["data"]["class_counts"]) + " |")
    lines.append("|---|---|---|" + "---|" * len(metrics["data"]["class_counts"]))
    for part in ("train", "val", "test"):
        s = split.get(part)
        if not s:
            continue
        counts = " | ".join(str(s["class_counts"].get(c, 0)) for c in metrics["data"]["class_counts"])
        lines.append(f"| {part} | {s['n_images']} | {format_value(s['n_groups'])} | {counts} |")
    return lines


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    test = metrics.get("test") or {}
    m = test.get("metrics", {})
    keys = ["accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1",
            "mcc", "roc_auc", "tp", "tn", "fp", "fn", "ece"]
    rows = [f"| {k} | {format_value(m.get(k))} |" for k in keys if k in m]
    lines = [f"Test split ({test.get('n', 0)} images):", "", "| metric | value |", "|---|---|", *rows]
    per_class = test.get("per_class") or {}
    if per_class and len(per_class) > 2:
        lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for name, row in per_class.items():
            lines.append(f"| {name} | {format_value(row.get('precision'))} | {format_value(row.get('recall'))} | "
                         f"{format_value(row.get('f1'))} | {row.get('support')} |")
    if test.get("confusion_matrix"):
        classes = test.get("classes", [])
        lines += ["", "Confusion matrix (rows = truth, columns = prediction):", "",
                  "| | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
        for name, row in zip(classes, test["confusion_matrix"]):
            lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def _storage_lines(recipe: Recipe, metrics: dict[str, Any]) -> list[str]:
    if not recipe.half:
        return []
    line = ("- weights stored as fp16 safetensors and computed in float32; the results below are "
            "those of the stored weights")
    fp32 = (metrics.get("storage") or {}).get("fp32_test_metrics")
    if fp32:
        line += (f" (converted after training; before conversion the test accuracy was "
                 f"{format_value(fp32.get('accuracy'))})")
    return [line]


def model_card(recipe: Recipe, entry: ModelEntry, metrics: dict[str, Any], cv_section: bool = True) -> str:
    """Markdown model card for a weights folder.

    ``cv_section=False`` leaves out the generic cross-validation table, for callers that
    write their own (the X-ray cards, whose shipped fold is fold 1, not the last).
    """
    tr = metrics["training"]
    inf = metrics.get("inference_ms", {})
    pre = metrics["preprocess"]
    aug = recipe.augment
    aug_text = (f"rotation ±{aug.rotation_deg:g}°, zoom ±{aug.zoom:g}, shift ±{aug.translate:g}, "
                f"hflip {aug.hflip}, vflip {aug.vflip}, brightness ±{aug.brightness:g}, "
                f"per-channel colour gain ±{aug.color:g}"
                + (f", saturation ±{aug.saturation:g}" if aug.saturation else "")
                + (f", contrast ±{aug.contrast:g}" if aug.contrast else "")
                if aug.enabled else "off")
    lines = [
        "---",
        "library_name: pytorch",
        "tags: [medical-imaging, explainability, " + entry.task + "]",
        "---",
        f"# {entry.title} ({entry.task}/{recipe.name})",
        "",
        entry.description,
        "",
        f"Paper: {entry.paper}",
        "",
        "**Intended use: research and education only. Not a medical device; not for diagnosis.**",
        "",
        "## Data and split",
        "",
        f"{metrics['data']['n_images']} labelled images from `{metrics['data']['source']}` data "
        f"({', '.join(f'{k}: {v}' for k, v in metrics['data']['class_counts'].items())}), "
        f"{format_value(metrics['data']['n_groups'])} groups. Fractions (train, val, test) = "
        f"{metrics['split']['fractions']}.",
        "",
        *_split_lines(metrics),
        "",
        "The group ids of every part are listed in `metrics.json`.",
        *(_cv_split_note(metrics) if cv_section else []),
        "",
        "## Training recipe",
        "",
        f"- random initialisation (no ImageNet checkpoint can be had on the training machine)",
        # tuples: metrics.json read back from disk holds lists; the card reads the same either way
        f"- input {pre['input_size']}x{pre['input_size']} ({pre['resize']}), mean {tuple(pre['mean'])}, "
        f"std {tuple(pre['std'])}",
        f"- {recipe.optimizer} lr {recipe.lr:g} ({recipe.lr_schedule}), weight decay {recipe.weight_decay:g}, "
        f"batch {recipe.batch_size}, loss {recipe.loss}, balance {recipe.balance}, "
        f"validation loss {recipe.val_loss}",
        f"- augmentation: {aug_text}",
        *([f"- batch-norm statistics re-estimated on {recipe.recalibrate_bn} training images with "
           "dropout off before each validation (`recalibrate_bn`)"] if recipe.recalibrate_bn else []),
        f"- epochs: up to {recipe.epochs} (frozen-backbone epochs: {recipe.freeze_epochs}); "
        f"{tr['stop_reason']}; best epoch {tr['best_epoch']} by validation loss ("
        + ("weights of that epoch are shipped)" if recipe.save_weights else "the results are that epoch's)"),
        f"- training time {tr['seconds']:.0f} s on {metrics['machine']['torch_threads']} CPU "
        f"thread(s) (torch {metrics['machine']['torch']}), shared with other training jobs",
        f"- re-make: `python -m medmodels train --recipe recipes/{recipe.task}_{recipe.name}.yaml`",
        *_storage_lines(recipe, metrics),
        "",
        "## Deviations from the paper",
        "",
        recipe.notes.strip() or "None recorded.",
        "",
        "## Results",
        "",
        *_metric_lines(metrics),
        "",
        f"CPU inference: {format_value(inf.get('ms_per_image_batch1'), 2)} ms per image at batch 1, "
        f"{format_value(inf.get('ms_per_image_batch32'), 2)} ms per image at batch 32 "
        f"({inf.get('threads', '?')} thread(s), measured right after training).",
        "",
        f"Parameters: {metrics['parameters']:,}.",
        *(_cv_lines(metrics) if cv_section else []),
        "",
        "## Limits",
        "",
        "- Small data: the test figures above come from few groups; expect wide confidence intervals.",
        "- Trained from random initialisation on one public data set; it has not been validated on "
        "other microscopes, stains or sites.",
        "- Probabilities are softmax outputs, not calibrated risks (see `ece`).",
    ]
    if entry.notes:
        lines += ["", "## Notes", "", entry.notes]
    return "\n".join(lines) + "\n"


CV_KEYS = ("accuracy", "balanced_accuracy", "mcc", "roc_auc")


def _cv_split_note(metrics: dict[str, Any]) -> list[str]:
    cv = metrics.get("cv")
    if not cv or "folds" not in cv:
        return []
    return ["", f"This is the split of the last fold ({cv['folds'][-1]['fold']} of {len(cv['folds'])}); "
            "every fold is under Cross-validation below."]


def _cv_lines(metrics: dict[str, Any]) -> list[str]:
    """Per-fold and mean ± std test metrics of a grouped k-fold run (``medmodels.train.cv``)."""
    cv = metrics.get("cv")
    if not cv or "mean" not in cv:
        return []
    rows = ["| fold | test groups | test images | " + " | ".join(CV_KEYS) + " |",
            "|" + "---|" * (3 + len(CV_KEYS))]
    for fold in cv["folds"]:
        t = fold["test"]["metrics"]
        test = fold["split"]["test"]
        rows.append(f"| {fold['fold']} | {test['n_groups']} | {test['n_images']} | "
                    + " | ".join(format_value(t.get(k), 3) for k in CV_KEYS) + " |")
    spread = ", ".join(f"{k} {format_value(cv['mean'].get(k), 3)} ± {format_value(cv['std'].get(k), 3)}"
                       for k in CV_KEYS)
    split = metrics.get("recipe", {}).get("split", {})
    which = ("every development group (the train and val groups of the fixed split; its test "
             "groups are in no fold) is in exactly one test fold"
             if split.get("cv_scope") == "development" else "every group is in exactly one test fold")
    return ["", "## Cross-validation", "",
            f"{cv['n_folds']}-fold cross-validation by group: {which}, and each fold's model is "
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


def with_weights_status(card: str, folder: Path, recipe: Recipe) -> str:
    """``card`` plus a "Weights not shipped" section when ``folder`` holds no weights file.

    A run whose weights are not in the repository (withdrawn near chance, or a metrics-only
    comparison run with ``save_weights: false``) keeps its metrics, split and predictions;
    its card must say why the dashboard cannot load it and how to re-make it.
    """
    if (folder / "model.safetensors").is_file() or "## Weights not shipped" in card:
        return card
    reason = NEAR_CHANCE if recipe.save_weights else METRICS_ONLY
    return card.rstrip("\n") + "\n\n" + "\n".join([
        "## Weights not shipped",
        "",
        reason,
        "The run's metrics.json (split, training history, test metrics) is kept. Re-make the "
        f"weights with `python -m medmodels train --recipe recipes/{recipe.task}_{recipe.name}.yaml`.",
    ]) + "\n"


def untrained_card(entry: ModelEntry, reason: str, recipe_file: str) -> str:
    """Card of a registered model for which no weights are shipped, saying why.

    The first paragraph is the reason (the reproduction report quotes it).
    """
    return "\n".join([
        f"# {entry.title} ({entry.task}/{entry.name}): no trained weights shipped",
        "",
        reason.strip(),
        "",
        entry.description,
        "",
        f"Paper: {entry.paper}",
        "",
        f"To train it yourself: `python -m medmodels train --recipe {recipe_file}` "
        "(or with `--max-minutes` raised on a faster machine).",
        "",
        "Intended use: research and education only; not for diagnosis.",
    ]) + "\n"
