"""Card sections and REPRODUCTION.md sections for the two chest X-ray studies.

Every number comes from the run records under ``weights/covid`` and ``weights/mortality``,
the task timing record and ``weights/covid/source_audit.json``; the papers' numbers are
quoted from the papers' tables, labelled as such.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medmodels.latency import TimingRecord, read_timing
from medmodels.record import RunRecord, SourceAudit, read_source_audit
from medmodels.report.papers import load_paper
from medmodels.report.cards import format_value
from medmodels.zoo.registry import ModelEntry

XRAY_TASKS = ("covid", "mortality")

# The papers' tables are data (medmodels/report/papers/*.json): quoted, not measured here.
KD_PAPER = "kd_babaahmadi"  # Tables 1-3: teacher, student before and after distillation
MORTALITY_PAPER = "mortality_olowolayemo"  # Table 1 (test rows) and Table 2 (its "Balanced Accuracy" column, as printed)
KD_COLUMNS = ("accuracy", "precision", "specificity", "sensitivity", "f1", "balanced_accuracy")
MORTALITY_COLUMNS = ("balanced_accuracy", "roc_auc", "precision", "sensitivity", "f1")

SHORTCUT_WARNING = (
    "**Known weakness of this data.** Almost all normals come from one source (NIH ChestX-ray14) and "
    "the COVID-19 images from other sources (ieee8023: papers and hospitals, with burned-in letters, "
    "arrows and margins). A model can separate the classes by *source* rather than by disease. The "
    "preprocessing removes the trivial cues it can (pad to square before resizing, grayscale, per-image "
    "1st-99th percentile intensity stretch), but the audit below shows how much source signal remains. "
    "The explanations page shows where each model looks: check whether that is the lungs or burned-in "
    "text, borders and markers before trusting any COVID-19 number here."
)


def _f(value: Any, digits: int = 3) -> str:
    return format_value(value, digits)


def _pm(mean: Any, std: Any) -> str:
    return "n/a" if mean is None else f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def _cv_table(record: RunRecord, columns: tuple[str, ...]) -> list[str]:
    cv = record.cv
    if cv is None or not cv.folds:
        return []
    lines = ["| fold | images | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for f in cv.folds:
        m = f.test.metrics
        lines.append(f"| {f.fold} | {m.get('n')} | " + " | ".join(_f(m.get(c)) for c in columns) + " |")
    if cv.mean is not None and cv.std is not None:
        lines.append("| mean ± sd | | " + " | ".join(_pm(cv.mean.get(c), cv.std.get(c)) for c in columns) + " |")
    return lines


def _audit_lines(record: RunRecord | None, src: SourceAudit | None) -> list[str]:
    lines: list[str] = []
    am = record.audit.actualmed.metrics if record and record.audit and record.audit.actualmed else None
    if am:
        lines.append(f"- Actualmed subset (one hospital source with both classes, never trained on; "
                     f"{am.get('n')} images): accuracy {_f(am.get('accuracy'))}, balanced accuracy "
                     f"{_f(am.get('balanced_accuracy'))}, sensitivity {_f(am.get('sensitivity'))}, "
                     f"specificity {_f(am.get('specificity'))}, ROC AUC {_f(am.get('roc_auc'))}.")
    if src:
        lines.append(f"- Image *source* predicted from the same preprocessed images by "
                     f"{src.what}; {src.cv}: accuracy {_pm(src.accuracy_mean, src.accuracy_std)}, "
                     f"ROC AUC {_f(src.roc_auc)}. The rule \"NIH -> normal, else COVID-19\" alone is "
                     f"{_f(src.label_from_source_rule_accuracy)} accurate on the training pool.")
    if am and src and record is not None:
        test_acc = record.test_metrics.get("balanced_accuracy")
        collapsed = test_acc is not None and am.get("balanced_accuracy") is not None and \
            am["balanced_accuracy"] < test_acc - 0.15
        easy = src.accuracy_mean > 0.9
        if collapsed or easy:
            lines.append("- **Plainly: " + (
                "the image source is easy to predict from these images" if easy else "") + (
                " and" if easy and collapsed else "") + (
                " accuracy on the same-source Actualmed subset collapses relative to the headline test split"
                if collapsed else "") + ". The headline numbers therefore measure, at least in part, "
                "source recognition, not COVID-19 recognition.**")
    return lines


def _timing_rows(timing: TimingRecord) -> list[str]:
    rows = ["| model | parameters | ms/image batch 1 | ms/image batch 32 |", "|---|---|---|---|"]
    for name, t in timing.models.items():
        if t.parameters is not None:
            rows.append(f"| {name} | {t.parameters:,} | {_f(t.ms_per_image_batch1, 2)} | "
                        f"{_f(t.ms_per_image_batch32, 2)} |")
    return rows


def _current_timing(weights_dir: Path | None, record: RunRecord) -> TimingRecord | None:
    """The task timing, if it times this run's model and is newer than its training."""
    from medmodels.latency import is_current

    timing = read_timing(weights_dir, record.task) if weights_dir is not None else None
    if timing is None or record.name not in timing.models or not is_current(timing.created, record.created):
        return None
    return timing


def xray_sections(record: RunRecord, entry: ModelEntry, weights_dir: Path | None) -> list[str]:
    """The X-ray card's own sections: evaluation protocol, per-fold CV, imputation, distillation, audits."""
    r = record.recipe or {}
    extra: list[str] = ["", "## Evaluation protocol (X-ray)", "",
                        f"- metrics.json `test`: {record.test_is or 'held-out split'}.",
                        "- Patients never cross parts: the split is by `split_group` (patients merged where "
                        "one person has two ids; near-duplicate rows dropped).",
                        "- `predictions.csv` holds the test predictions of every trained fold."]
    if not (record.split.val and record.split.val.n_images):
        extra.append("- No validation part (fixed epochs, as the paper): \"best epoch\" above is the epoch "
                     "with the lowest training loss.")
    columns = KD_COLUMNS if entry.task == "covid" else MORTALITY_COLUMNS + ("specificity",)
    table = _cv_table(record, columns)
    cv = record.cv
    if table and cv is not None:
        extra += ["", "### Cross-validation (patient-grouped, per fold)", "", *table]
        if cv.roc_mean is not None and cv.roc_mean.auc is not None and cv.pr_mean is not None:
            extra += ["", f"Fold-averaged ROC AUC {_pm(cv.roc_mean.auc, cv.roc_mean.auc_std)}, "
                          f"PR AUC {_pm(cv.pr_mean.auc, cv.pr_mean.auc_std)}."]
        if cv.cumulative_rates:
            c = cv.cumulative_rates
            extra += ["", f"Cumulative confusion over folds: TP {c['tp']}, TN {c['tn']}, FP {c['fp']}, FN {c['fn']}; "
                          f"TPR {_f(c['tpr'])}, TNR {_f(c['tnr'])}, FPR {_f(c['fpr'])}, FNR {_f(c['fnr'])}."]
        if cv.note:
            extra += ["", cv.note]
        leaked = [f.fold for f in cv.folds if f.teacher_saw_test_groups]
        if leaked:
            extra += ["", f"Folds {', '.join(map(str, leaked))}: the teacher (trained once, on fold 1's training "
                          "part) had seen these folds' test patients, so the distilled student's numbers on them "
                          "are optimistic. Only fold 1 is a clean distillation result."]
    if record.imputation is not None:
        imp = record.imputation
        counts = record.data.class_counts
        extra += ["", "### Label imputation", "",
                  f"Random forest on {', '.join(imp.features)}: {imp.cv}: accuracy "
                  f"{_pm(imp.cv_accuracy_mean, imp.cv_accuracy_std)} over {imp.n_labelled} labelled "
                  f"images ({imp.n_unlabelled} unlabelled; always predicting the majority outcome would score "
                  f"{_f(max(counts.values()) / max(1, sum(counts.values())))}). "
                  "In the CV each fold refits the forest on its "
                  "training rows only; test folds hold real labels only."]
    if record.distillation is not None:
        d = record.distillation
        kd = r.get("distill") or {}
        extra += ["", "### Distillation", "",
                  f"Teacher `{d.teacher}` (frozen), T = {kd.get('temperature', '?')}, "
                  f"alpha = {kd.get('alpha', '?')}; teacher logits "
                  f"{'computed once on the un-augmented images (CPU shortcut)' if d.teacher_logits == 'cached' else 'computed on every augmented batch'}."
                  f" Teacher's test patients = this model's fold-1 test patients: {d.teacher_test_groups_equal_fold1_test}."]
    timing = _current_timing(weights_dir, record)
    if timing is not None and entry.task == "covid":
        extra += ["", "### Teacher vs students, timed in one process (1 CPU thread)", "", *_timing_rows(timing)]
    view = record.audit.view_only if record.audit else None
    if view:
        extra += ["", "## Confounder check", "",
                  f"The X-ray view alone (PA < AP < AP Supine) scores death with ROC AUC {_f(view.roc_auc)} over "
                  "the labelled images, so the view is not what separates the classes here."
                  if view.roc_auc is not None and view.roc_auc < 0.6 else
                  f"The X-ray view alone (PA < AP < AP Supine) scores death with ROC AUC {_f(view.roc_auc)}: "
                  "part of what the model learns may be the view (sicker patients are filmed supine)."]
    if entry.task == "covid":
        src = read_source_audit(weights_dir) if weights_dir is not None else None
        extra += ["", "## Shortcut audit", "", SHORTCUT_WARNING, "", *(_audit_lines(record, src) or ["- not run"])]
    return extra


def _load(weights_dir: Path, task: str, name: str) -> RunRecord | None:
    """A model's run record: a metrics-only run's folder (``<name>/<name>``, where the engine writes
    it) first, else the model folder (where the earlier X-ray runner wrote comparison runs too)."""
    for path in (weights_dir / task / name / name, weights_dir / task / name):
        if (path / "metrics.json").is_file():
            return RunRecord.read(path)
    return None


def xray_report_sections(weights_dir: Path) -> list[str]:
    """Markdown sections for REPRODUCTION.md: the KD study and the mortality study."""
    return [_kd_section(weights_dir), _mortality_section(weights_dir)]


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


def _kd_section(weights_dir: Path) -> str:
    lines = ["## COVID-19 vs normal chest X-ray: teacher, student, distillation", "", SHORTCUT_WARNING, ""]
    names = ("kd_teacher", "mobilenet_v2", "mobilenet_v2_kd", "quadsnet")
    found = {n: _load(weights_dir, "covid", n) for n in names}
    any_m = next((m for m in found.values() if m), None)
    if any_m is None:
        return "\n".join(lines + ["No COVID-19 model has been trained yet."]) + "\n"
    d, s = any_m.data, any_m.split
    assert s.train and s.val and s.test
    lines += [f"Data: {d.n_images} images ({_counts(d.class_counts)}; "
              f"sources {_counts(d.datasets or {})}), {d.n_groups} patient "
              f"groups; Actualmed held out for the audit. Split: patient-grouped stratified "
              f"{s.cv_folds}-fold (seed {s.seed}); fold 1 is the held-out split "
              f"(train {s.train.n_images} / val {s.val.n_images} / test {s.test.n_images} images). "
              "Paper: ieee8023 COVID-19 vs RSNA normals, 224 px, ImageNet weights, 5-fold CV.", ""]
    header = "| model | source | test | " + " | ".join(KD_COLUMNS) + " | parameters |"
    lines += [header, "|---|---|---|" + "---|" * (len(KD_COLUMNS) + 1)]
    for n in names:
        p = load_paper(KD_PAPER).row(n)
        if p is not None:
            lines.append(f"| {n} | paper | 5-fold mean | " + " | ".join(_f(p[c]) for c in KD_COLUMNS)
                         + f" | {p['parameters']:,} |")
        m = found[n]
        if m is None:
            lines.append(f"| {n} | ours | not trained (CPU budget) |" + " |" * (len(KD_COLUMNS) + 1))
            continue
        t = m.test_metrics
        lines.append(f"| {n} | ours | fold 1 held-out ({t.get('n')}) | " + " | ".join(_f(t.get(c)) for c in KD_COLUMNS)
                     + f" | {m.parameters:,} |")
        cv = m.cv
        if cv is not None and cv.mean and cv.std is not None and cv.n_folds > 1:
            lines.append(f"| {n} | ours | {cv.n_folds}-fold mean ± sd | "
                         + " | ".join(_pm(cv.mean.get(c), cv.std.get(c)) for c in KD_COLUMNS) + " | |")
    lines.append("")
    for n in names:
        m = found[n]
        if m and m.cv is not None and len(m.cv.folds) > 1:
            lines += [f"Per fold, {n}:", "", *_cv_table(m, KD_COLUMNS), ""]
    student = found["mobilenet_v2"] or found["mobilenet_v2_kd"]
    timing = _current_timing(weights_dir, student) if student else None
    if timing is not None and "kd_teacher" not in timing.models:
        timing = None
    if timing is not None:
        lines += ["Parameters and CPU latency, teacher and students timed in one process (1 thread):", "",
                  *_timing_rows(timing)]
        red = timing.parameter_reduction("mobilenet_v2", "kd_teacher")
        ratio = timing.ratio_batch1("mobilenet_v2", "kd_teacher")
        lines += ["", f"Parameter reduction {_f(-100 * red if red is not None else None, 1)}% (paper: -95.3%); "
                      f"student/teacher latency at batch 1: {_f(ratio, 3)} (target <= 0.2).", ""]
    lines += ["### Targets of the issue", ""]
    for n in ("mobilenet_v2", "mobilenet_v2_kd"):
        m = found[n]
        if not m:
            continue
        t = m.test_metrics
        cv = m.cv
        cv_ba = cv.mean.get("balanced_accuracy") if cv is not None and cv.mean and cv.n_folds > 1 else None
        best = max(v for v in (t.get("balanced_accuracy"), cv_ba) if v is not None) if t else None
        verdict = "met" if best is not None and best >= 0.95 else "**not met**"
        lines.append(f"- {n} balanced accuracy >= 0.95 on the patient-grouped evaluation: {verdict} "
                     f"(fold 1 {_f(t.get('balanced_accuracy'))}"
                     + (f", {cv.n_folds}-fold mean {_f(cv_ba)}" if cv_ba is not None and cv else "") + ").")
        p = m.parameters
        lines.append(f"- {n} parameters {p:,} vs the paper's 2,334,966: {100 * (p / 2_334_966 - 1):+.1f}% "
                     f"({'within' if abs(p / 2_334_966 - 1) <= 0.10 else 'outside'} 10%).")
    ratio = timing.ratio_batch1("mobilenet_v2", "kd_teacher") if timing else None
    if ratio is not None:
        lines.append(f"- Student latency <= 1/5 of the teacher's (same process, batch 1): "
                     f"{'met' if ratio <= 0.2 else '**not met**'} (ratio {_f(ratio)}).")
    lines += ["", "### Shortcut audit", ""]
    for n in names:
        m = found[n]
        if m and m.audit and m.audit.actualmed:
            am = m.audit.actualmed.metrics
            t = m.test_metrics
            lines.append(f"- {n}: balanced accuracy {_f(t.get('balanced_accuracy'))} on the held-out split vs "
                         f"{_f(am.get('balanced_accuracy'))} on Actualmed (accuracy {_f(am.get('accuracy'))}, "
                         f"{am.get('n')} images, 26 COVID-19 / 18 normal from one source).")
    src = read_source_audit(weights_dir)
    if src is not None:
        lines += ["", _audit_lines(None, src)[0]]
        verdict = _audit_lines(found["mobilenet_v2"], src)
        if len(verdict) > 2:
            lines += [verdict[-1]]
    return "\n".join(lines) + "\n"


def _mortality_section(weights_dir: Path) -> str:
    lines = ["## COVID-19 mortality risk from chest X-ray", ""]
    names = ("resnet18", "resnet18_classweight", "resnet18_resample", "resnet18_imputed",
             "alexnet", "mobilenet_v3", "efficientnet_v2", "swin", "convnext")
    found = {n: _load(weights_dir, "mortality", n) for n in names}
    any_m = next((m for m in found.values() if m), None)
    if any_m is None:
        return "\n".join(lines + ["No mortality model has been trained yet."]) + "\n"
    d = any_m.data
    lines += [f"Data: {d.n_images} labelled ieee8023 COVID-19 frontal X-rays "
              f"({_counts(d.class_counts)}), {d.n_groups} patient groups, "
              f"{d.n_unlabelled or 0} more without a survival label (used only by the imputed variant). "
              f"Paper: 169 labelled images (478 with imputation), ImageNet ResNet-18 at 224 px. "
              f"Ours: random initialisation at {(any_m.preprocess or {}).get('input_size')} px, patient-grouped "
              f"stratified {any_m.split.cv_folds}-fold CV.", ""]
    cols = MORTALITY_COLUMNS
    lines += ["| model | source | " + " | ".join(cols) + " | TPR | TNR | FPR | FNR |",
              "|---|---|" + "---|" * (len(cols) + 4)]
    for n in names:
        p = load_paper(MORTALITY_PAPER).row(n)
        if p:
            lines.append(f"| {n} | paper | " + " | ".join(_f(p.get("recall" if c == "sensitivity" else c)) for c in cols)
                         + " | " + " | ".join(_f(p.get(k)) for k in ("tpr", "tnr", "fpr", "fnr")) + " |")
        m = found[n]
        if m is None:
            lines.append(f"| {n} | ours | not trained (CPU budget) |" + " |" * (len(cols) + 3))
            continue
        cv = m.cv
        rates = (cv.cumulative_rates if cv else None) or {}
        mean = (cv.mean if cv else None) or {}
        std = (cv.std if cv else None) or {}
        lines.append(f"| {n} | ours ({cv.n_folds if cv else None}-fold mean ± sd) | "
                     + " | ".join(_pm(mean.get(c), std.get(c)) for c in cols)
                     + " | " + " | ".join(_f(rates.get(k)) for k in ("tpr", "tnr", "fpr", "fnr")) + " |")
    imp = next((m.imputation for m in found.values() if m and m.imputation), None)
    lines.append("")
    if imp:
        counts = list(d.class_counts.values())
        majority = max(counts) / sum(counts) if counts and sum(counts) else None
        lines += [f"Label imputation: random forest, {imp.cv}: accuracy "
                  f"{_pm(imp.cv_accuracy_mean, imp.cv_accuracy_std)} (paper ~0.925; always predicting the "
                  f"majority outcome would score {_f(majority)} here); refitted per fold on "
                  "training rows only, test folds hold real labels only.", ""]
    view = next((m.audit.view_only for m in found.values() if m and m.audit and m.audit.view_only), None)
    if view:
        lines += [f"Confounder check: the X-ray view alone (PA < AP < AP Supine) scores death with ROC AUC "
                  f"{_f(view.roc_auc)} over the labelled images.", ""]
    r18 = found["resnet18"]
    if r18 and r18.cv and r18.cv.roc_mean:
        roc = r18.cv.roc_mean
        lines += [f"ResNet-18 (no balancing) fold-averaged ROC AUC {_pm(roc.auc, roc.auc_std)} against the "
                  "paper's 0.90 from 169 images with ImageNet weights; ours starts from random weights at a "
                  "lower resolution, on fewer labelled images, with patient-grouped folds.", ""]
    return "\n".join(lines) + "\n"
