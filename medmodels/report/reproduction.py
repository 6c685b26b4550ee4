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
from pathlib import Path
from typing import Any

from medmodels.latency import TimingRecord, read_timing, time_task_models, timing_of
from medmodels.record import RecordError, RunRecord, record_paths
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


def read_runs(weights_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``{task: {name: record as data}}`` for every run record, model folders and nested comparison runs.

    The tables below lay the records out as plain data (``RunRecord.to_dict()``), with the
    run's folder and whether it ships weights added.
    """
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for path in record_paths(weights_dir):
        try:
            record = RunRecord.read(path)
        except RecordError as err:
            log.warning("skipping %s: %s", path, err)
            continue
        nested = path.parent.parent.parent != weights_dir
        if nested and record.save_weights:
            continue  # only comparison runs (no weights) live below a model folder
        metrics = record.to_dict()
        task, name = record.task, record.name
        metrics["_record"] = record
        metrics["_folder"] = str(path.parent.relative_to(weights_dir))
        metrics["_has_weights"] = (path.parent / "model.safetensors").is_file()
        runs.setdefault(task, {})[name] = metrics
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


def _split_sentence(m: dict[str, Any]) -> str:
    s = m.get("split", {})
    parts = []
    for part in ("train", "val", "test"):
        p = s.get(part) or {}
        if p:
            groups = f", {p['n_groups']} groups" if p.get("n_groups") is not None else ""
            parts.append(f"{part} {p.get('n_images')} images{groups}")
    how = "by group" if s.get("mode") == "grouped" else "**at random by image (leaky)**"
    return f"split {how} (seed {s.get('seed')}): " + "; ".join(parts)


def _timing_of(m: dict[str, Any], timing: TimingRecord | None, name: str) -> Any:
    return timing_of(m["_record"], timing)


# ---------------------------------------------------------------- malaria


def malaria_section(runs: dict[str, dict[str, Any]], timing: TimingRecord | None) -> list[str]:
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
        m = runs.get(name)
        if m and m.get("test"):
            t = m["test"]["metrics"]
            rows.append([name, "**ours**", _pct(t.get("accuracy")), _pct(t.get("sensitivity")),
                         _pct(t.get("specificity")), _pct(t.get("precision")), _int(t.get("tp")),
                         _int(t.get("tn")), _pct(t.get("f1")), _f(t.get("mcc")),
                         _secs(m["training"]["seconds"]), _ms(_timing_of(m, timing, name))])
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


def cv_spread_lines(runs: dict[str, dict[str, Any]], word: str) -> list[str]:
    """Metrics-only k-fold runs of a shipped recipe: how far one fixed test split can be trusted."""
    lines = []
    for name, m in sorted(runs.items()):
        cv = m.get("cv")
        if not cv or "mean" not in cv or m.get("_has_weights") or _cv_scope(m) != "all":
            continue
        accs = [f["test"]["metrics"]["accuracy"] for f in cv["folds"]]
        mean, std = cv["mean"], cv["std"]
        shipped = runs.get(m["model"])
        which = (f"the shipped `{m['model']}` recipe"
                 if shipped is None or _same_model_recipe(m["recipe"], shipped["recipe"])
                 else f"an earlier `{m['model']}` recipe, not the one shipped (see its notes)")
        lines += [
            f"Cross-validation by {word} (`{name}`: {which}, {cv['n_folds']} folds "
            f"over all {m['data']['n_groups']} {word}s, every {word} in one test fold; metrics only):",
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


def _cv_scope(m: dict[str, Any]) -> str:
    return m.get("recipe", {}).get("split", {}).get("cv_scope", "all")


# Recipe settings that change neither the model nor how it is trained: how it is split or
# cross-validated, where it is written, threads, the wall-clock budget and the prose.
_BOOKKEEPING = ("name", "split", "save_weights", "threads", "max_minutes", "notes", "audit")


def _same_model_recipe(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two stored recipes train the same model (records store complete recipes)."""
    def essentials(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in _BOOKKEEPING}

    return essentials(a) == essentials(b)


def model_selection_lines(runs: dict[str, dict[str, Any]], word: str) -> list[str]:
    """Recipe variants compared by cross-validation on the development groups only."""
    chosen = {n: m for n, m in runs.items() if m.get("cv") and _cv_scope(m) == "development"}
    lines: list[str] = []
    for model in sorted({m["model"] for m in chosen.values()}):
        variants = sorted((n for n, m in chosen.items() if m["model"] == model),
                          key=lambda n: -chosen[n]["cv"]["mean"]["accuracy"])
        shipped = runs.get(model)
        rows = []
        for n in variants:
            cv = chosen[n]["cv"]
            same = shipped is not None and _same_model_recipe(chosen[n]["recipe"], shipped["recipe"])
            rows.append([f"`{n}` (the shipped recipe)" if same else f"`{n}`",
                         f"{_pct(cv['mean'].get('accuracy'))} ± {_pct(cv['std'].get('accuracy'))}",
                         f"{_f(cv['mean'].get('mcc'), 3)} ± {_f(cv['std'].get('mcc'), 3)}",
                         " / ".join(_pct(f["test"]["metrics"]["accuracy"]) for f in cv["folds"])])
        any_m = chosen[variants[0]]
        n_groups = len({g for f in any_m["cv"]["folds"] for g in f["split"]["test"]["groups"]})
        lines += [
            f"Model selection for `{model}`: recipe variants cross-validated ({any_m['cv']['n_folds']} "
            f"folds) on the {n_groups} development {word}s only; the fixed test split's {word}s are in "
            "no fold, so choosing among them does not look at the test numbers above (best first; "
            "each recipe's notes say what it changes):",
            "",
            *_table(["variant", "accuracy mean ± sd", "MCC mean ± sd", "per-fold accuracy"], rows),
            "",
        ]
    return lines


def _data_lines(runs: dict[str, dict[str, Any]], order: Sequence[str]) -> list[str]:
    lines = ["Data and split of each of our rows:", ""]
    for name in order:
        m = runs.get(name)
        if m:
            stop = m.get("training", {}).get("stop_reason", "")
            lines.append(f"- `{name}`: {m['data']['n_images']} images; {_split_sentence(m)}; "
                         f"best epoch {m['training']['best_epoch']} of {m['training']['epochs_run']} "
                         f"({stop}).")
    return lines + [""]


def per_group_lines(runs: dict[str, dict[str, Any]], order: Sequence[str], word: str) -> list[str]:
    """Test accuracy per group and class, one column per model: where the errors are."""
    names = [n for n in order if runs.get(n, {}).get("test_per_group")]
    if not names:
        return []
    table: dict[tuple[str, str], dict[str, tuple[int, float]]] = {}
    for n in names:
        for row in runs[n]["test_per_group"]:
            table.setdefault((row["group"], row["true_class"]), {})[n] = (row["n"], row["accuracy"])
    rows = []
    for (group, cls), per in sorted(table.items()):
        count = next(iter(per.values()))[0]
        rows.append([group, cls, str(count), *[_pct(per[n][1]) if n in per else "–" for n in names]])
    return [f"Test accuracy per {word} and class (the test split has few {word}s, so one unusual "
            f"{word} can move the headline numbers):", "",
            *_table([word, "class", "images", *names], rows), ""]


def _speed_lines(runs: dict[str, dict[str, Any]], timing: TimingRecord | None) -> list[str]:
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


def _collapse_lines(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Did the 1-layer net fail as in the paper (49.96% no aug, 69.38% with aug)?"""
    lines = []
    for name in ("shallow_cnn1_noaug", "shallow_cnn1"):
        m = runs.get(name)
        if not m or not m.get("test"):
            continue
        t = m["test"]["metrics"]
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
        history = m.get("training", {}).get("history") or []
        best_train = max((h.get("train_acc", 0.0) for h in history), default=None)
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


def _wbc_model_block(name: str, m: dict[str, Any] | None) -> list[str]:
    paper = load_paper(WBC_PAPER).row(name)
    classes = load_paper(WBC_PAPER).classes
    lines = [f"### `{name}`", ""]
    header = ["class", "paper precision", "paper recall", "paper F1", "our precision", "our recall",
              "our F1", "our support"]
    per = (m or {}).get("test", {}).get("per_class", {}) if m else {}
    rows = []
    for c in classes:
        pc = paper["per_class"][c] if paper else {}
        pp = (pc.get("precision"), pc.get("recall"), pc.get("f1"))
        o = per.get(c, {})
        rows.append([c, _f(pp[0], 3), _f(pp[1], 3), _f(pp[2], 3), _f(o.get("precision"), 3),
                     _f(o.get("recall"), 3), _f(o.get("f1"), 3), _int(o.get("support"))])
    ours = (m or {}).get("test", {}).get("metrics", {}) if m else {}
    training = (m or {}).get("training", {})
    lines.append(f"Overall accuracy: paper {_pct(paper['accuracy']) if paper else '–'} "
                 f"(random split of the augmented Kaggle set); ours {_pct(ours.get('accuracy'))}, "
                 f"balanced accuracy {_pct(ours.get('balanced_accuracy'))} "
                 + (f"({_split_sentence(m)}; best epoch {training.get('best_epoch')} of "
                    f"{training.get('epochs_run')}, {training.get('stop_reason')})." if m else "(not trained)."))
    lines += [""] + _table(header, rows) + [""]
    if paper and paper.get("confusion_matrix"):
        lines += ["Paper confusion matrix (rows truth, columns prediction):", ""]
        lines += _table(["", *classes], [[c, *map(str, r)] for c, r in zip(classes, paper["confusion_matrix"])])
        lines.append("")
    if m and m.get("test", {}).get("confusion_matrix"):
        cm = m["test"]["confusion_matrix"]
        lines += ["Our confusion matrix (rows truth, columns prediction):", ""]
        lines += _table(["", *classes], [[c, *map(str, r)] for c, r in zip(classes, cm)])
        lines.append("")
    if m and not m.get("test"):
        lines += ["No test metrics recorded.", ""]
    if m and not m.get("_has_weights", True):
        lines += [f"Metrics only: no weights file is shipped for this run (`{m.get('_folder')}`; "
                  "its card says why).", ""]
    return lines


def _leak_verdict(grouped: dict[str, Any], leak: dict[str, Any]) -> list[str]:
    """Say what the side-by-side shows, including when it shows nothing."""
    g = grouped["test"]["metrics"]["accuracy"]
    r = leak["test"]["metrics"]["accuracy"]
    history = leak.get("training", {}).get("history") or []
    best_train = max((h.get("train_acc", 0.0) for h in history), default=0.0)
    leak_learned = (leak["test"]["metrics"].get("mcc") or 0.0) > 0.2
    if leak_learned and r > g + 0.1:
        return ["The random split puts augmented copies of the same cell in train and test, so its "
                "accuracy measures recall of near-duplicates; the grouped number is the one to quote."]
    return [f"Inconclusive in this release: the random-split run did not learn within its CPU budget "
            f"({len(history)} epochs, best training accuracy {_pct(best_train)}), so it cannot show "
            "the leak numerically here. The leak itself is documented in the data's SOURCE.md: the "
            "augmented images are rotations, flips and shifts of a few hundred cells, so a random image "
            "split places copies of one cell on both sides; the grouped number is the one to quote."]


def wbc_section(runs: dict[str, dict[str, Any]], not_shipped: dict[str, str]) -> list[str]:
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
    leak = runs.get(WBC_LEAK_RUN)
    grouped = runs.get("wbc_cnn")
    if leak and grouped and leak.get("test") and grouped.get("test"):
        lines += [
            "### The leak: grouped vs random split, same CNN",
            "",
            *_table(["split", "data", "test images", "accuracy", "macro F1"], [
                ["by original image (honest)", f"{grouped['data']['n_images']} cells",
                 _int(grouped["test"]["n"]), _pct(grouped["test"]["metrics"]["accuracy"]),
                 _f(grouped["test"]["metrics"].get("f1"), 3)],
                ["random by image (leaky, as the paper)", f"{leak['data']['n_images']} augmented copies",
                 _int(leak["test"]["n"]), _pct(leak["test"]["metrics"]["accuracy"]),
                 _f(leak["test"]["metrics"].get("f1"), 3)],
            ]),
            "",
            *_leak_verdict(grouped, leak),
            "",
        ]
    for name in WBC_ORDER:
        m = runs.get(name)
        if m is None and name in not_shipped:
            lines += [f"### `{name}`", "", f"{NOT_SHIPPED} {not_shipped[name]}", ""]
            continue
        lines += _wbc_model_block(name, m)
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
        for name, m in runs[task].items():
            t = (m.get("test") or {}).get("metrics", {})
            cv = (m.get("cv") or {}).get("mean", {})
            src = cv or t
            rows.append([name, "**ours**, CV mean" if cv else "**ours**, test", _pct(src.get("accuracy")),
                         _pct(src.get("balanced_accuracy")), _f(src.get("f1"), 3),
                         _f(src.get("roc_auc"), 3), _split_sentence(m)])
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
