"""Is Grad-CAM of the malaria shallow nets faithful, and does it depend on the weights?

For every shallow malaria model with trained weights (``weights/malaria/<name>/``), on its
own held-out test split (slides never seen in training, rebuilt from metrics.json):

* deletion AUC of the Grad-CAM order vs the random order (same baseline, same steps), per
  cell, mean over at least ``--cells`` cells, with a paired Wilcoxon test;
* insertion AUC vs random insertion;
* the cascading model-parameter randomisation check (Adebayo et al. 2018) on
  ``--sanity-cells`` cells: Spearman rank correlation of the original and randomised maps.

Run on demand (needs ../shared/data and trained weights):

    python bench/faithfulness_malaria.py --write
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wilcoxon

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from medmodels.data.images import load_image  # noqa: E402
from medmodels.data.transforms import preprocess_batch  # noqa: E402
from medmodels.evaluate import held_out_set  # noqa: E402
from medmodels.explain import (  # noqa: E402
    ExplainSettings,
    deletion_insertion,
    explain,
    randomisation_check,
)
from medmodels.hub import load_trained, weights_status  # noqa: E402
from medmodels.zoo.registry import list_models  # noqa: E402

log = logging.getLogger("faithfulness_malaria")
TITLE = "Faithfulness of Grad-CAM on the malaria test split"


def _cells(card: object, limit: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    test = held_out_set(card)
    samples = list(test.samples)
    if limit and len(samples) > limit:
        keep = np.random.default_rng(seed).choice(len(samples), limit, replace=False)
        samples = [samples[i] for i in sorted(keep)]
    images = [load_image(s.source, s.name) for s in samples]
    return preprocess_batch(images, card.entry.preprocess), [s.name for s in samples]  # type: ignore[attr-defined]


def _faithfulness(model, entry, x: torch.Tensor, steps: int, batch: int) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), batch):
        xb = x[start : start + batch]
        result = explain(model, entry, xb, None, "gradcam")
        faith = deletion_insertion(model, xb, result.maps, result.target, steps=steps,
                                   baseline="black", preprocess=entry.preprocess)
        for key in ("deletion_auc", "random_deletion_auc", "insertion_auc", "random_insertion_auc"):
            parts.setdefault(key, []).append(getattr(faith, key))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _row(name: str, n: int, f: dict[str, np.ndarray]) -> str:
    d, rd = f["deletion_auc"], f["random_deletion_auc"]
    i, ri = f["insertion_auc"], f["random_insertion_auc"]
    p = wilcoxon(d, rd).pvalue if np.any(d != rd) else 1.0
    return (f"| {name} | {n} | {d.mean():.3f} ± {d.std():.3f} | {rd.mean():.3f} ± {rd.std():.3f} | "
            f"{(d < rd).mean():.0%} | {'< 1e-10' if p < 1e-10 else f'{p:.1e}'} | {i.mean():.3f} | {ri.mean():.3f} |")


def _sanity(model, entry, x: torch.Tensor) -> tuple[list[str], np.ndarray]:
    result = randomisation_check(model, entry, x, None, "gradcam", ExplainSettings())
    return result.layer_names, result.spearman


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=0, help="cells per model (0: the whole test split)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sanity-cells", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    entries = [e for e in list_models("malaria") if e.family == "shallow"]
    rows, sanity_rows, missing = [], [], []
    for entry in entries:
        if not weights_status(entry.task, entry.name)[0]:
            missing.append(entry.name)
            continue
        model, card = load_trained(entry.task, entry.name)
        x, _names = _cells(card, args.cells, args.seed)
        log.info("%s: %d test cells", entry.key, len(x))
        f = _faithfulness(model, entry, x, args.steps, args.batch)
        rows.append(_row(entry.name, len(x), f))
        layers, rho = _sanity(model, entry, x[: args.sanity_cells])
        steps = " → ".join(f"{name} {v:.2f}" for name, v in zip(layers, rho.mean(axis=1)))
        sanity_rows.append(f"| {entry.name} | {len(rho[0])} | {steps} |")
        print(rows[-1], "\n", sanity_rows[-1], flush=True)
    if not rows:
        print("no trained shallow malaria model found under weights/malaria/", file=sys.stderr)
        return 1
    text = (
        f"`python bench/faithfulness_malaria.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
        f"; Grad-CAM of the predicted class on each model's own held-out test slides; "
        f"{args.steps} deletion/insertion steps, black baseline; random = the same curve with "
        "a random pixel order (seed 0). Lower deletion AUC and higher insertion AUC = more "
        "faithful; p = paired Wilcoxon test of deletion vs random deletion.\n\n"
        "| model | cells | deletion AUC | random deletion AUC | cells where deletion < random | p | "
        "insertion AUC | random insertion AUC |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
        + "\n".join(rows)
        + "\n\nModel-parameter randomisation (cascading from the classifier down): mean Spearman "
        "rank correlation between the Grad-CAM maps of the trained and the progressively "
        "randomised model, after each layer is re-initialised.\n\n"
        "| model | cells | layer randomised → mean Spearman |\n|---|---:|---|\n"
        + "\n".join(sanity_rows)
        + (f"\n\nNot run (no trained weights yet): {', '.join(missing)}." if missing else "")
    )
    print(text)
    if args.write:
        from explain import write_subsection  # bench/explain.py

        write_subsection(TITLE, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
