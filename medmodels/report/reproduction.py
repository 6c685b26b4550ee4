"""REPRODUCTION.md, generated from the ``metrics.json`` of every trained weights folder.

``python -m medmodels report`` puts each paper's table next to ours, with the same
columns, and states the data size and the split of every number. Our numbers are read
from ``weights/<task>/<model>/metrics.json``; the papers' numbers are quoted from their
tables (the constants below), never computed. ``--time`` first re-times every trained model
of a task in one process (``weights/<task>/inference_timing.json``), so that the shallow
vs deep speed comparison is measured under the same conditions.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmodels.latency import TimingRecord, read_timing, time_task_models, timing_of
from medmodels.record import CVSummary, RecordError, RunRecord, record_paths
from medmodels.report.papers import load_paper
from medmodels.report.xray import XRAY_TASKS, xray_report_sections

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
NOT_SHIPPED = "No weights shipped:"  # how a card without weights opens its first paragraph

# ---------------------------------------------------------------- the papers' tables (quoted)

# The papers' numbers are data (medmodels/report/papers/*.json), quoted with their table.
MALARIA_PAPERS = ("malaria_sarkar", "quadsnet_ali")  # the shallow nets' paper; QuadSNet's own for QuadSNet
MALARIA_COLUMNS = ("accuracy", "sensitivity", "specificity", "precision", "tp", "tn", "f1", "mcc",
                   "training_seconds", "single_image_seconds")
MALARIA_ORDER = ("shallow_cnn3", "shallow_cnn3_noaug", "shallow_cnn2", "shallow_cnn2_noaug",
                 "shallow_cnn1", "shallow_cnn1_noaug", "vgg16", "resnet50", "quadsnet")
WBC_PAPER = "wbc_asghar"
WBC_ORDER = ("wbc_cnn", "mobilenet_v2", "quadsnet", "vgg16", "resnet50", "inception_v3")
WBC_LEAK_RUN = "wbc_cnn_random_split"


# ---------------------------------------------------------------- reading our runs


@dataclass(frozen=True)
class Run:
    """A run record with where it lives: its folder (relative to weights/) and whether it ships weights."""

    record: RunRecord
    folder: str
    has_weights: bool


Runs = dict[str, Run]  # name -> run, one task


def read_runs(weights_dir: Path) -> dict[str, Runs]:
    """``{task: {name: Run}}`` for every run record, model folders and nested comparison runs."""
    runs: dict[str, Runs] = {}
    for path in record_paths(weights_dir):
        try:
            record = RunRecord.read(path)
        except RecordError as err:
            log.warning("skipping %s: %s", path, err)
            continue
        nested = path.parent.parent.parent != weights_dir
        if nested and record.save_weights:
            continue  # only comparison runs (no weights) live below a model folder
        runs.setdefault(record.task, {})[record.name] = Run(
            record, str(path.parent.relative_to(weights_dir)), (path.parent / "model.safetensors").is_file())
    return runs


# ---------------------------------------------------------------- formatting


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.2f}%"


def _f(v: Any, digits: int = 4) -> str:
    return "–" if v is None else f"{float(v):.{digits}f}"


def _int(v: Any) -> str:
    return "–" if v is None else str(int(v))


def _secs(v: Any) -> str:
    return "–" if v is None else f"{float(v):.1f}s"


def _ms(v: Any) -> str:
    return "–" if v is None else f"{float(v):.2f} ms"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _split_sentence(r: RunRecord) -> str:
    s = r.split
    parts = []
    for name in ("train", "val", "test"):
        p = getattr(s, name)
        if p is not None:
            groups = f", {p.n_groups} groups" if p.n_groups is not None else ""
            parts.append(f"{name} {p.n_images} images{groups}")
    how = "by group" if s.mode == "grouped" else "**at random by image (leaky)**"
    return f"split {how} (seed {s.seed}): " + "; ".join(parts)


# ---------------------------------------------------------------- malaria


def malaria_section(runs: Runs, timing: TimingRecord | None) -> list[str]:
    header = ["model", "source", "accuracy", "sensitivity", "specificity", "precision", "TP", "TN",
              "F1", "MCC", "training time", "single image"]
    rows = []
    for name in MALARIA_ORDER:
        row = next((r for r in (load_paper(k).row(name) for k in MALARIA_PAPERS) if r), None)
        if row is not None:
            p = [row.get(c) for c in MALARIA_COLUMNS]
            rows.append([name, f"paper: {row['label']}", _pct(p[0]), _pct(p[1]), _pct(p[2]), _pct(p[3]),
                         _int(p[4]), _int(p[5]), _pct(p[6]), _f(p[7]), _secs(p[8]),
                         "–" if p[9] is None else f"{p[9] * 1000:.1f} ms"])
        run = runs.get(name)
        if run and run.record.test:
            t = run.record.test.metrics
            rows.append([name, "**ours**", _pct(t.get("accuracy")), _pct(t.get("sensitivity")),
                         _pct(t.get("specificity")), _pct(t.get("precision")), _int(t.get("tp")),
                         _int(t.get("tn")), _pct(t.get("f1")), _f(t.get("mcc")),
                         _secs(run.record.training.seconds), _ms(timing_of(run.record, timing))])
        else:
            rows.append([name, "**ours**", "not trained", *["–"] * 9])
    lines = [
        "## Malaria (Sarkar et al., Table I; QuadSNet paper for QuadSNet)",
        "",
        "Paper: 27,558 NIH cells, 80:20 split **by image** (cells of one slide on both sides). "
        "Ours: the 3,719-cell, 34-slide subset in `../shared/data/malaria`, split **by slide** "
        "(train/val/test 70/10/20 of the images, stratified, seed 42); TP/TN are counts on our much "
        "smaller test split, so compare rates, not counts. Training times are on one CPU thread "
        "shared with other jobs; the paper's on its own hardware.",
        "",
        *_table(header, rows),
        "",
    ]
    lines += _data_lines(runs, MALARIA_ORDER)
    lines += per_group_lines(runs, MALARIA_ORDER, "slide")
    lines += cv_spread_lines(runs, "slide")
    lines += model_selection_lines(runs, "slide")
    lines += _speed_lines(runs, timing)
    lines += _collapse_lines(runs)
    return lines


def cv_spread_lines(runs: Runs, word: str) -> list[str]:
    """Metrics-only k-fold runs of a shipped recipe: how far one fixed test split can be trusted."""
    lines = []
    for name, run in sorted(runs.items()):
        r, cv = run.record, run.record.cv
        if cv is None or cv.mean is None or cv.std is None or run.has_weights or r.cv_scope != "all":
            continue
        accs = [f.test.metrics["accuracy"] for f in cv.folds]
        mean, std = cv.mean, cv.std
        shipped = runs.get(r.model)
        which = (f"the shipped `{r.model}` recipe"
                 if shipped is None or _same_model_recipe(r, shipped.record)
                 else f"an earlier `{r.model}` recipe, not the one shipped (see its notes)")
        lines += [
            f"Cross-validation by {word} (`{name}`: {which}, {cv.n_folds} folds "
            f"over all {r.data.n_groups} {word}s, every {word} in one test fold; metrics only):",
            "",
            *_table(["", "accuracy", "MCC", "sensitivity", "specificity"],
                    [["mean ± sd",
                      f"{_pct(mean.get('accuracy'))} ± {_pct(std.get('accuracy'))}",
                      f"{_f(mean.get('mcc'), 3)} ± {_f(std.get('mcc'), 3)}",
                      f"{_pct(mean.get('sensitivity'))} ± {_pct(std.get('sensitivity'))}",
                      f"{_pct(mean.get('specificity'))} ± {_pct(std.get('specificity'))}"]]),
            "",
            f"Per-fold test accuracy ranges from {_pct(min(accs))} to {_pct(max(accs))}: a single "
            f"split's number moves by this much with the choice of test {word}s.",
            "",
        ]
    return lines


# Recipe settings that change neither the model nor how it is trained: how it is split or
# cross-validated, where it is written, threads, the wall-clock budget and the prose.
_BOOKKEEPING = ("name", "split", "save_weights", "threads", "max_minutes", "notes", "audit")


def _same_model_recipe(a: RunRecord, b: RunRecord) -> bool:
    """Whether two runs' recipes train the same model (records store complete recipes)."""
    def essentials(r: RunRecord) -> dict[str, Any]:
        return {k: v for k, v in (r.recipe or {}).items() if k not in _BOOKKEEPING}

    return essentials(a) == essentials(b)


def model_selection_lines(runs: Runs, word: str) -> list[str]:
    """Recipe variants compared by cross-validation on the development groups only."""
    chosen = {n: run.record for n, run in runs.items()
              if run.record.cv is not None and run.record.cv.mean and run.record.cv_scope == "development"}

    def cv_of(n: str) -> CVSummary:
        cv = chosen[n].cv
        assert cv is not None and cv.mean is not None and cv.std is not None
        return cv

    lines: list[str] = []
    for model in sorted({r.model for r in chosen.values()}):
        variants = sorted((n for n, r in chosen.items() if r.model == model),
                          key=lambda n: -(cv_of(n).mean or {})["accuracy"])
        shipped = runs.get(model)
        rows = []
        for n in variants:
            cv = cv_of(n)
            mean, std = cv.mean or {}, cv.std or {}
            same = shipped is not None and _same_model_recipe(chosen[n], shipped.record)
            rows.append([f"`{n}` (the shipped recipe)" if same else f"`{n}`",
                         f"{_pct(mean.get('accuracy'))} ± {_pct(std.get('accuracy'))}",
                         f"{_f(mean.get('mcc'), 3)} ± {_f(std.get('mcc'), 3)}",
                         " / ".join(_pct(f.test.metrics["accuracy"]) for f in cv.folds)])
        first = cv_of(variants[0])
        n_groups = len({g for f in first.folds for g in (f.split.test.groups or [])})
        lines += [
            f"Model selection for `{model}`: recipe variants cross-validated ({first.n_folds} "
            f"folds) on the {n_groups} development {word}s only; the fixed test split's {word}s are in "
            "no fold, so choosing among them does not look at the test numbers above (best first; "
            "each recipe's notes say what it changes):",
            "",
            *_table(["variant", "accuracy mean ± sd", "MCC mean ± sd", "per-fold accuracy"], rows),
            "",
        ]
    return lines


def _data_lines(runs: Runs, order: Sequence[str]) -> list[str]:
    lines = ["Data and split of each of our rows:", ""]
    for name in order:
        run = runs.get(name)
        if run:
            r, tr = run.record, run.record.training
            lines.append(f"- `{name}`: {r.data.n_images} images; {_split_sentence(r)}; "
                         f"best epoch {tr.best_epoch} of {tr.epochs_run} ({tr.stop_reason}).")
    return lines + [""]


def per_group_lines(runs: Runs, order: Sequence[str], word: str) -> list[str]:
    """Test accuracy per group and class, one column per model: where the errors are."""
    names = [n for n in order if n in runs and runs[n].record.test_per_group]
    if not names:
        return []
    table: dict[tuple[str, str], dict[str, tuple[int, float]]] = {}
    for n in names:
        for row in runs[n].record.test_per_group or []:
            table.setdefault((row.group, row.true_class), {})[n] = (row.n, row.accuracy)
    rows = []
    for (group, cls), per in sorted(table.items()):
        count = next(iter(per.values()))[0]
        rows.append([group, cls, str(count), *[_pct(per[n][1]) if n in per else "–" for n in names]])
    return [f"Test accuracy per {word} and class (the test split has few {word}s, so one unusual "
            f"{word} can move the headline numbers):", "",
            *_table([word, "class", "images", *names], rows), ""]


def _speed_lines(runs: Runs, timing: TimingRecord | None) -> list[str]:
    if not timing:
        return ["Single-image times above were measured right after each training run (not in one "
                "process); run `python -m medmodels report --time` for a same-run comparison.", ""]
    models = timing.models
    lines = [f"Single-image CPU inference measured in one process ({timing.threads} thread(s), "
             f"{timing.created}), batch 1 and batch 32, ms per image:", ""]
    untrained = set(timing.architecture_only)
    rows = [[n + (" (architecture only: no weights shipped)" if n in untrained else ""),
             _ms(v.ms_per_image_batch1), _ms(v.ms_per_image_batch32)]
            for n, v in models.items()]
    lines += _table(["model", "batch 1", "batch 32"], rows) + [""]
    deep = {n: models[n].ms_per_image_batch1 for n in ("vgg16", "resnet50") if n in models}
    for shallow in ("shallow_cnn3", "shallow_cnn2", "shallow_cnn1"):
        if shallow in models and deep:
            t = models[shallow].ms_per_image_batch1
            ratios = ", ".join(f"{d} {v / t:.1f}x" for d, v in deep.items())
            lines.append(f"- `{shallow}` is faster than {ratios} at batch 1.")
    return lines + [""]


def _collapse_lines(runs: Runs) -> list[str]:
    """Did the 1-layer net fail as in the paper (49.96% no aug, 69.38% with aug)?"""
    lines = []
    for name in ("shallow_cnn1_noaug", "shallow_cnn1"):
        run = runs.get(name)
        if not run or not run.record.test:
            continue
        t = run.record.test.metrics
        spec, sens, mcc = t.get("specificity"), t.get("sensitivity"), t.get("mcc")
        one_class = spec is not None and sens is not None and min(spec, sens) < 0.05
        failed = mcc is not None and mcc < 0.2
        if one_class:
            verdict = "collapsed to one class, as the paper's 1-layer net did"
        elif failed:
            verdict = "failed to learn (near-chance test performance), like the paper's 1-layer net"
        else:
            verdict = ("did **not** collapse (the paper's 1-layer net predicted almost every cell "
                       "Parasitized without augmentation); here it learned")
        best_train = _best_train_accuracy(run.record, default=None)
        lines.append(
            f"- `{name}`: {verdict} (accuracy {_pct(t.get('accuracy'))}, sensitivity {_pct(sens)}, "
            f"specificity {_pct(spec)}, MCC {_f(mcc)}; best training accuracy "
            f"{_pct(best_train)})."
        )
    if lines:
        lines.append("  Our 1-layer net keeps the 2- and 3-layer nets' head, so its dense layer takes "
                     "32x32x32 = 32,768 inputs; the paper's exact shape is not in its text.")
    return (["1-layer network:", ""] + lines + [""]) if lines else []


# ---------------------------------------------------------------- WBC


def _best_train_accuracy(r: RunRecord, default: float | None) -> float | None:
    """The best training accuracy of any epoch (from the history each epoch appends)."""
    return max((h.get("train_acc", 0.0) for h in r.training.history or []), default=default)


def _wbc_model_block(name: str, run: Run | None) -> list[str]:
    paper = load_paper(WBC_PAPER).row(name)
    classes = load_paper(WBC_PAPER).classes
    r = run.record if run else None
    test = r.test if r else None
    lines = [f"### `{name}`", ""]
    header = ["class", "paper precision", "paper recall", "paper F1", "our precision", "our recall",
              "our F1", "our support"]
    per = test.per_class if test else {}
    rows = []
    for c in classes:
        pc = paper["per_class"][c] if paper else {}
        pp = (pc.get("precision"), pc.get("recall"), pc.get("f1"))
        o = per.get(c, {})
        rows.append([c, _f(pp[0], 3), _f(pp[1], 3), _f(pp[2], 3), _f(o.get("precision"), 3),
                     _f(o.get("recall"), 3), _f(o.get("f1"), 3), _int(o.get("support"))])
    ours = test.metrics if test else {}
    lines.append(f"Overall accuracy: paper {_pct(paper['accuracy']) if paper else '–'} "
                 f"(random split of the augmented Kaggle set); ours {_pct(ours.get('accuracy'))}, "
                 f"balanced accuracy {_pct(ours.get('balanced_accuracy'))} "
                 + (f"({_split_sentence(r)}; best epoch {r.training.best_epoch} of "
                    f"{r.training.epochs_run}, {r.training.stop_reason})." if r else "(not trained)."))
    lines += [""] + _table(header, rows) + [""]
    if paper and paper.get("confusion_matrix"):
        lines += ["Paper confusion matrix (rows truth, columns prediction):", ""]
        lines += _table(["", *classes], [[c, *map(str, r)] for c, r in zip(classes, paper["confusion_matrix"])])
        lines.append("")
    if test and test.confusion_matrix:
        lines += ["Our confusion matrix (rows truth, columns prediction):", ""]
        lines += _table(["", *classes], [[c, *map(str, row)] for c, row in zip(classes, test.confusion_matrix)])
        lines.append("")
    if run and not test:
        lines += ["No test metrics recorded.", ""]
    if run and not run.has_weights:
        lines += [f"Metrics only: no weights file is shipped for this run (`{run.folder}`; "
                  "its card says why).", ""]
    return lines


def _leak_verdict(grouped: RunRecord, leak: RunRecord) -> list[str]:
    """Say what the side-by-side shows, including when it shows nothing."""
    g = grouped.test_metrics["accuracy"]
    r = leak.test_metrics["accuracy"]
    history = leak.training.history or []
    best_train = _best_train_accuracy(leak, default=0.0)
    leak_learned = (leak.test_metrics.get("mcc") or 0.0) > 0.2
    if leak_learned and r > g + 0.1:
        return ["The random split puts augmented copies of the same cell in train and test, so its "
                "accuracy measures recall of near-duplicates; the grouped number is the one to quote."]
    return [f"Inconclusive in this release: the random-split run did not learn within its CPU budget "
            f"({len(history)} epochs, best training accuracy {_pct(best_train)}), so it cannot show "
            "the leak numerically here. The leak itself is documented in the data's SOURCE.md: the "
            "augmented images are rotations, flips and shifts of a few hundred cells, so a random image "
            "split places copies of one cell on both sides; the grouped number is the one to quote."]


def wbc_section(runs: Runs, not_shipped: dict[str, str]) -> list[str]:
    lines = [
        "## White blood cells (Asghar et al., Tables 1-3)",
        "",
        "Paper: the Kaggle set (12,500 augmented images of about 410 originals), 70/20/10 split at "
        "random **by image**, 992 test images; the baselines used frozen ImageNet features. Ours: "
        "the single-label BCCD originals in `../shared/data/wbc_originals` that have exactly one "
        "annotated WBC box, each cropped to a square around that box (1.3 times its longer side), "
        "70/20/10 (train/val/test) **by original image**, stratified, seed 42, every model trained "
        "from random initialisation at 100x100 on one CPU thread. The crops are a deviation: the "
        "paper's images are whole smears, where the labelled cell spans a median 31x38 of 100x100 "
        "pixels, and from-scratch models trained on whole smears here stayed at chance.",
        "",
    ]
    leak = runs[WBC_LEAK_RUN].record if WBC_LEAK_RUN in runs else None
    grouped = runs["wbc_cnn"].record if "wbc_cnn" in runs else None
    if leak and grouped and leak.test and grouped.test:
        lines += [
            "### The leak: grouped vs random split, same CNN",
            "",
            *_table(["split", "data", "test images", "accuracy", "macro F1"], [
                ["by original image (honest)", f"{grouped.data.n_images} cells",
                 _int(grouped.test.n), _pct(grouped.test.metrics["accuracy"]),
                 _f(grouped.test.metrics.get("f1"), 3)],
                ["random by image (leaky, as the paper)", f"{leak.data.n_images} augmented copies",
                 _int(leak.test.n), _pct(leak.test.metrics["accuracy"]),
                 _f(leak.test.metrics.get("f1"), 3)],
            ]),
            "",
            *_leak_verdict(grouped, leak),
            "",
        ]
    for name in WBC_ORDER:
        run = runs.get(name)
        if run is None and name in not_shipped:
            lines += [f"### `{name}`", "", f"{NOT_SHIPPED} {not_shipped[name]}", ""]
            continue
        lines += _wbc_model_block(name, run)
    return lines


def _not_shipped(weights_dir: Path, task: str) -> dict[str, str]:
    """Models with a card (README.md) but no weights: the card's first paragraph says why."""
    out = {}
    for card in sorted((weights_dir / task).glob("*/README.md")):
        if (card.parent / "metrics.json").is_file():
            continue
        text = [ln for ln in card.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
        reason = text[0] if text else "see the card."
        out[card.parent.name] = reason.removeprefix(NOT_SHIPPED).strip()
    return out


# ---------------------------------------------------------------- the document


def render_report(weights_dir: Path) -> str:
    runs = read_runs(weights_dir)
    lines = [
        "# Reproduction report",
        "",
        "<!-- Generated by `python -m medmodels report` from weights/*/*/metrics.json. Do not edit. -->",
        "",
        "Every number marked *ours* is read from the `metrics.json` written by the training run "
        "(`python -m medmodels train --recipe recipes/<task>_<model>.yaml`); the paper rows are "
        "quoted from the papers' tables. All our splits keep a slide / original image / patient "
        "on one side only; the papers' splits were by image. All our models were trained from "
        "random initialisation on a 2-core CPU (no ImageNet checkpoint was available), usually "
        "for fewer epochs than the papers (see each model card).",
        "",
    ]
    if "malaria" in runs:
        lines += malaria_section(runs["malaria"], read_timing(weights_dir, "malaria"))
    if "wbc" in runs or _not_shipped(weights_dir, "wbc"):
        lines += wbc_section(runs.get("wbc", {}), _not_shipped(weights_dir, "wbc"))
    lines += _xray_sections(weights_dir)
    from medmodels.explain.localise_survey import localisation_table  # issue 19's survey records

    if localisation_table(weights_dir):
        lines += ["## Where do our models look?", "", localisation_table(weights_dir), ""]
    # a task without a section of its own (a new one) still gets its numbers listed
    others = sorted(t for t in runs if t not in ("malaria", "wbc", *XRAY_TASKS))
    for task in others:
        lines += [f"## {task}", ""]
        rows = []
        for name, run in runs[task].items():
            r = run.record
            cv = (r.cv.mean if r.cv else None) or {}
            src = cv or r.test_metrics
            rows.append([name, "**ours**, CV mean" if cv else "**ours**, test", _pct(src.get("accuracy")),
                         _pct(src.get("balanced_accuracy")), _f(src.get("f1"), 3),
                         _f(src.get("roc_auc"), 3), _split_sentence(r)])
        lines += _table(["model", "over", "accuracy", "balanced acc.", "F1", "ROC AUC", "split"], rows)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _xray_sections(weights_dir: Path) -> list[str]:
    """The chest X-ray studies' sections (``report.xray``)."""
    sections = xray_report_sections(weights_dir)
    return [line for section in sections for line in (section.rstrip("\n"), "")]


def write_report(weights_dir: Path | str, out_path: Path | str) -> Path:
    """Regenerate the reproduction report from the metrics.json files under ``weights_dir``."""
    out = Path(out_path)
    out.write_text(render_report(Path(weights_dir)), encoding="utf-8")
    log.info("wrote %s", out)
    return out


# ---------------------------------------------------------------- CLI


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="regenerate REPRODUCTION.md from weights/*/*/metrics.json")
    p.add_argument("--weights", type=Path, default=REPO_ROOT / "weights", help="weights folder")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "REPRODUCTION.md", help="output file")
    p.add_argument("--cards", action="store_true",
                   help="also re-render every run folder's README.md (model card) from its record")
    p.add_argument("--time", nargs="*", metavar="TASK", default=None,
                   help="first re-time the trained models of these tasks in one process "
                        "(default with no task: malaria)")
    p.set_defaults(func=run)
    return p


def write_cards(weights_dir: Path) -> list[Path]:
    """Re-render the README.md of every run folder from its record (text only)."""
    from medmodels.report.cards import render_card

    done = []
    for path in record_paths(weights_dir):
        folder = path.parent
        (folder / "README.md").write_text(render_card(RunRecord.read(folder), folder, weights_dir), encoding="utf-8")
        done.append(folder)
    return done


def run(args: argparse.Namespace) -> int:
    if args.time is not None:
        for task in args.time or ["malaria"]:
            log.info("timing %s models", task)
            time_task_models(args.weights, task)
    out = write_report(args.weights, args.out)
    if args.cards:
        for folder in write_cards(args.weights):
            log.info("card %s", folder)
    print(out)
    return 0
