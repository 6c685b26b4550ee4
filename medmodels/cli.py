"""``python -m medmodels <command>``: thin wrappers over library functions.

Errors a user can cause print one line on stderr and exit 2; nothing prints a traceback
unless ``--debug`` is given.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from medmodels.errors import MedModelsError

log = logging.getLogger("medmodels")

# Commands contributed by sub-packages: module exposing add_parser(subparsers) and run(args).
PLUGIN_COMMANDS = ("medmodels.train.cli", "medmodels.explain.cli", "medmodels.report",
                   "medmodels.data.crop_cli", "medmodels.deploy_check", "medmodels.lungs_cli")


def cmd_list(args: argparse.Namespace) -> int:
    from medmodels.hub import weights_status
    from medmodels.zoo.registry import build_arch, count_parameters, list_models

    rows = []
    for entry in list_models(args.task):
        available, where = weights_status(entry.task, entry.name)
        rows.append({
            "task": entry.task, "model": entry.name, "arch": entry.arch, "title": entry.title,
            "parameters": count_parameters(build_arch(entry)), "input_size": entry.preprocess.input_size,
            "weights": where if available else None,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'task':10s} {'model':22s} {'parameters':>12s} {'input':>5s}  weights")
    for r in rows:
        print(f"{r['task']:10s} {r['model']:22s} {r['parameters']:>12,d} {r['input_size']:>5d}  "
              f"{r['weights'] or 'not available'}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from medmodels.data.dicom import dicom_info, is_dicom
    from medmodels.data.images import WORK_SIDE, load_image
    from medmodels.hub import load_trained
    from medmodels.inference import predict_images

    model, card = load_trained(args.task, args.model)
    images = [load_image(Path(p), max_side=WORK_SIDE) for p in args.images]
    preds = predict_images(model, card.entry, images)
    out = [{"file": str(p), "predicted_class": pr.predicted_class, "probability": pr.probability,
            "probabilities": pr.probabilities} for p, pr in zip(args.images, preds)]
    for row in out:  # DICOM: the technical tags read, so the input can be checked (no patient fields)
        with Path(row["file"]).open("rb") as fh:
            head = fh.read(132)
        if is_dicom(head):
            row["dicom"] = dicom_info(Path(row["file"]).read_bytes(), Path(row["file"]).name).summary()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for row in out:
            tags = f"  [{row['dicom']}]" if "dicom" in row else ""
            print(f"{row['file']}: {row['predicted_class']} ({row['probability']:.3f}){tags}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from medmodels.data.datasets import read_labelled_set
    from medmodels.evaluate import evaluate_set, held_out_set
    from medmodels.hub import load_trained

    model, card = load_trained(args.task, args.model)
    if args.data == "heldout":
        data = held_out_set(card)
    else:
        data = read_labelled_set(Path(args.data), card.entry.classes,
                                 Path(args.labels) if args.labels else None)
    for skipped in data.skipped:
        log.warning("skipped %s: %s", skipped.name, skipped.reason)
    bar = tqdm(total=len(data.samples), desc=f"{args.task}/{args.model}", unit="img", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    evaluation = evaluate_set(model, card.entry, data, threshold=args.threshold, progress=progress)
    bar.close()
    result = {"task": args.task, "model": args.model, **evaluation.report.to_dict(),
              "skipped": [{"file": s.name, "reason": s.reason} for s in data.skipped]}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    m = result["metrics"]
    print(f"{args.task}/{args.model} on {result['n']} images: " + ", ".join(
        f"{k}={m[k]:.4f}" for k in ("accuracy", "balanced_accuracy", "sensitivity", "specificity",
                                     "f1", "mcc", "roc_auc") if isinstance(m.get(k), float)))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from medmodels.hub import push_folder

    commit = push_folder(Path(args.folder), args.repo, private=args.private)
    print(f"uploaded {args.folder} to {args.repo} at commit {commit}; pin it as revision in hub.toml")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m medmodels", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="every registered (task, model), parameters, weights")
    p.add_argument("--task")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("predict", help="class and probabilities for images")
    p.add_argument("--task", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("images", nargs="+")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="all metrics on a labelled set (folder, zip or CSV)")
    p.add_argument("--task", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True,
                   help="folder of class folders, zip, folder/zip with --labels, or 'heldout' "
                        "for the model's own held-out test split of the shared data")
    p.add_argument("--labels", help="CSV filename,label[,patient_id]")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--json", metavar="OUT", help="write the full result as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("push", help="upload a model folder to the Hugging Face Hub")
    p.add_argument("folder")
    p.add_argument("--repo", required=True)
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=cmd_push)

    for module_name in PLUGIN_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                continue  # that part of the library is not installed
            raise
        if hasattr(module, "add_parser"):
            module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except MedModelsError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a bug: one line unless --debug
        if args.debug:
            raise
        print(f"internal error ({type(err).__name__}): {err}. Re-run with --debug for details.",
              file=sys.stderr)
        return 1
