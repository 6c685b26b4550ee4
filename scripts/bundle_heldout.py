"""Bundle a few held-out test-split images and what every shipped cell model predicts on them.

    .venv/bin/python scripts/bundle_heldout.py      # needs ../shared/data

Writes ``examples/heldout/<task>/<class>/`` (a few images from the shipped models' by-group
test split: slides for malaria, original smears for WBC) and
``examples/heldout/predictions.json`` (each shipped model's class probabilities for them).
Before writing, every shipped model is re-scored on its whole test split and must reproduce
its run record's test metrics; the bundled predictions are therefore those of weights that
score their committed numbers, and ``tests/test_shipped_reproduce.py`` checks them in a
clone without ../shared.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from medmodels.data.images import load_image  # noqa: E402
from medmodels.data.shared import shared_data_root, shared_samples  # noqa: E402
from medmodels.data.transforms import preprocess_batch  # noqa: E402
from medmodels.hub import load_trained  # noqa: E402
from medmodels.inference import predict_proba  # noqa: E402
from medmodels.record import RunRecord  # noqa: E402
from medmodels.train.run import reevaluate  # noqa: E402

OUT = REPO / "examples" / "heldout"
PER_CLASS = {"malaria": 3, "wbc": 1}  # tiny: about 20 kB a cell, 100-180 kB a WBC crop
REFERENCE = {"malaria": "shallow_cnn3", "wbc": "wbc_cnn"}  # whose test split the images come from
KEYS = ("accuracy", "balanced_accuracy", "mcc", "f1")


def shipped(task: str) -> list[str]:
    names = []
    for weights in sorted((REPO / "weights" / task).glob("*/model.safetensors")):
        record = RunRecord.read(weights.parent)
        if (record.recipe or {}).get("data") == "shared" and record.split.mode == "grouped":
            names.append(weights.parent.name)
    return names


def _suffix(data: bytes) -> str:
    return ".png" if data[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"


def bundle(task: str) -> list[dict]:
    """Copy PER_CLASS test-split images per class, spread over the test groups; return their rows."""
    record = RunRecord.read(REPO / "weights" / task / REFERENCE[task])
    groups = sorted(record.test_groups())
    pool = shared_samples(task)
    rows = []
    for k, cls in enumerate(pool.classes):
        candidates = sorted((s for s in pool.samples if s.label == k and str(s.group) in groups),
                            key=lambda s: (groups.index(str(s.group)), s.name))
        picked, seen = [], set()
        for s in candidates:  # one per group first, so the few images span several groups
            if s.group not in seen:
                picked.append(s)
                seen.add(s.group)
        picked = (picked + [s for s in candidates if s not in picked])[: PER_CLASS[task]]
        for s in picked:
            data = s.source.read_bytes() if isinstance(s.source, Path) else bytes(s.source)
            name = Path(s.name).stem + _suffix(data)
            path = OUT / task / cls / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            rows.append({"file": str(path.relative_to(OUT)), "group": str(s.group), "label": cls})
    return rows


def main() -> int:
    if shared_data_root() is None:
        raise SystemExit("../shared/data is needed to pick held-out images and re-score the models.")
    torch.set_num_threads(1)
    result: dict = {"what": __doc__.splitlines()[0], "images": {}, "predictions": {}}
    for task in PER_CLASS:
        rows = bundle(task)
        result["images"][task] = rows
        images = [load_image(OUT / r["file"]) for r in rows]
        for name in shipped(task):
            folder = REPO / "weights" / task / name
            record = RunRecord.read(folder)
            again = reevaluate(folder)
            assert again is not None and record.test is not None
            for key in KEYS:
                stored = record.test.metrics.get(key)
                if stored is not None and abs(float(again.metrics[key]) - float(stored)) > 2e-3:
                    raise SystemExit(f"{task}/{name}: {key} {again.metrics[key]} != committed {stored}")
            model, card = load_trained(task, name)
            probs = predict_proba(model, preprocess_batch(images, card.entry.preprocess))
            result["predictions"][f"{task}/{name}"] = [[round(float(p), 6) for p in row] for row in probs]
            print(f"{task}/{name}: re-scored as committed; {len(rows)} bundled predictions")
    (OUT / "predictions.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
