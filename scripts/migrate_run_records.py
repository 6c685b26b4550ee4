"""Upgrade every weights/*/*/metrics.json (and nested metrics-only runs) to the current RunRecord schema.

    .venv/bin/python scripts/migrate_run_records.py [--weights weights] [--check]

Schema 1 -> 2 moves, renames and drops; it never changes a number:

- the ``xray`` options become recipe fields (``split.run_folds``, ``split.ship``,
  ``distill.teacher_logits``, ``audit``), and the stored recipe is completed with the
  defaults of settings added since it was written;
- ``split.<part>_groups`` (copies of ``split.<part>.groups``) are dropped;
- each ``cv.folds[*].split`` keeps its parts (its mode, seed and fractions repeat the record's);
- ``cv.cumulative_confusion_matrix`` is named ``cv.confusion_matrix_sum`` as in every other CV run;
- ``test_per_group[*].class`` is named ``true_class``;
- ``audit.source_classifier`` (a copy of ``weights/covid/source_audit.json``) is dropped; an
  audit that failed (``{"error": ...}``) moves to ``audit.actualmed_error``;
- the top-level ``fold`` of a cross-validation run becomes ``test_is``;
- ``latency_same_run`` (one timing copied into three runs' files) becomes the task's timing
  record ``weights/<task>/inference_timing.json`` (unless a newer one exists).

``--check`` writes nothing and exits 1 if a file would change.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medmodels.latency import TIMING_FILE, ModelTiming, TimingRecord  # noqa: E402
from medmodels.record import SCHEMA_VERSION, MachineInfo, RunRecord, record_paths, to_json  # noqa: E402
from medmodels.train.recipe import recipe_from_dict  # noqa: E402


def _recipe(recipe: dict[str, Any], xray: dict[str, Any] | None) -> dict[str, Any]:
    recipe = copy.deepcopy(recipe)
    if xray:
        split = recipe.setdefault("split", {})
        split["run_folds"] = int(xray.get("run_folds", 0))
        split["ship"] = xray.get("ship", "fold1")
        if recipe.get("distill"):
            recipe["distill"]["teacher_logits"] = xray.get("teacher_logits", "cached")
        recipe["audit"] = bool(xray.get("audit", True))
    return recipe_from_dict(recipe).to_dict()


def _split(split: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in split.items():
        if k.endswith("_groups") and k[: -len("_groups")] in ("train", "val", "test"):
            part = split.get(k[: -len("_groups")]) or {}
            if v != part.get("groups"):
                raise SystemExit(f"split.{k} differs from split.{k[:-7]}.groups: not a copy, not dropped")
            continue
        out[k] = v
    return out


def upgrade(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(schema-2 record dict, the ``latency_same_run`` timing it carried or None)."""
    if data.get("schema") == SCHEMA_VERSION:
        return data, None
    d = copy.deepcopy(data)
    xray = d.pop("xray", None)
    if d.get("recipe") is not None:
        d["recipe"] = _recipe(d["recipe"], xray)
    if "split" in d:
        d["split"] = _split(d["split"])
    cv = d.get("cv")
    for fold in (cv or {}).get("folds", []):  # a fold's split repeats the record's; keep its parts
        extra = {k: v for k, v in fold["split"].items() if k not in ("train", "val", "test")}
        if any(v != d["split"].get(k) for k, v in extra.items() if k in ("mode", "fractions", "seed")):
            raise SystemExit("a fold's split settings differ from the record's: not dropped")
        fold["split"] = {k: fold["split"][k] for k in ("train", "val", "test")}
    if cv and "cumulative_confusion_matrix" in cv:
        cv["confusion_matrix_sum"] = cv.pop("cumulative_confusion_matrix")
    for row in d.get("test_per_group") or []:
        row["true_class"] = row.pop("class")
    audit = d.get("audit")
    if audit:
        audit.pop("source_classifier", None)
        am = audit.get("actualmed")
        if isinstance(am, dict) and set(am) == {"error"}:
            audit["actualmed_error"] = audit.pop("actualmed")["error"]
    if "fold" in d:  # a cross-validation run's record is its last fold's: say so in words
        d["test_is"] = f"the last fold ({d.pop('fold')} of {cv['n_folds']}) of the grouped cross-validation"
    timing = d.pop("latency_same_run", None)
    d["schema"] = SCHEMA_VERSION
    return d, timing


def timing_record(task: str, same_run: dict[str, Any]) -> TimingRecord:
    machine = same_run.get("machine")
    return TimingRecord(
        task=task, threads=int(same_run.get("threads", 1)),
        torch=(machine or {}).get("torch", "?"), created=same_run["measured"],
        models={n: ModelTiming(ms_per_image_batch1=m["ms_per_image_batch1"],
                               ms_per_image_batch32=m.get("ms_per_image_batch32"),
                               parameters=m.get("parameters"))
                for n, m in same_run["models"].items() if "ms_per_image_batch1" in m},
        machine=MachineInfo(**machine) if machine else None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=REPO / "weights")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file would change")
    args = parser.parse_args(argv)
    changed, timings = [], {}
    for path in record_paths(args.weights):
        text = path.read_text(encoding="utf-8")
        new, timing = upgrade(json.loads(text))
        record = RunRecord.from_dict(new, str(path))
        if timing:
            timings.setdefault(record.task, timing)
        out = record.to_json()
        if out != text:
            changed.append(path)
            if not args.check:
                path.write_text(out, encoding="utf-8")
    for task, same_run in timings.items():
        path = args.weights / task / TIMING_FILE
        record = timing_record(task, same_run)
        if path.is_file() and TimingRecord.read(path).created >= record.created:
            continue
        changed.append(path)
        if not args.check:
            record.write(path)
    # every task timing file in the current shape (the older malaria one gains the new optional fields)
    for path in sorted(args.weights.glob(f"*/{TIMING_FILE}")):
        if path in changed and args.check:
            continue
        text = path.read_text(encoding="utf-8")
        out = to_json(TimingRecord.read(path))
        if out != text:
            changed.append(path)
            if not args.check:
                path.write_text(out, encoding="utf-8")
    for p in dict.fromkeys(changed):
        print(p.relative_to(args.weights.parent) if p.is_relative_to(args.weights.parent) else p)
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
