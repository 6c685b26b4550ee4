"""A card's Hub metadata (YAML front matter) through huggingface_hub's ``ModelCardData``.

The licence of a weight is the strictest licence of its training data, as each data set's
``../shared/data/<set>/SOURCE.md`` states it (summarised in :data:`TRAINING_DATA`): none of
the sets grants a licence that would let the weights be released under a permissive one,
so every card says ``license: other`` with a name and a link to the data's terms. The
``model-index`` holds the run record's measured test numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

from medmodels.record import RunRecord
from medmodels.zoo.registry import ModelEntry


@dataclass(frozen=True)
class DataTerms:
    """The training data of a task and the terms it comes under (from its SOURCE.md)."""

    dataset: str  # the data set's name, for the model-index
    license_name: str  # a slug for ``license: other``
    license_link: str
    summary: str
    sources: tuple[str, ...] = ()  # the repositories the copies came from (SOURCE.md), for ``datasets:``


TRAINING_DATA: dict[str, DataTerms] = {
    "malaria": DataTerms(
        "NIH-NLM malaria cell images (Atman-Kar/Malaria-Detection copy)", "nlm-malaria-cells-no-licence-stated",
        "https://github.com/Atman-Kar/Malaria-Detection",
        "No licence is stated by the source copy or the TensorFlow Datasets entry; NLM distributes the set "
        "for research. Research use only; check NLM's terms before redistributing.",
        ("Atman-Kar/Malaria-Detection",)),
    "wbc": DataTerms(
        "BCCD (Shenggan/BCCD_Dataset) single-cell crops", "bccd-mit-and-unlicensed-copies",
        "https://github.com/Shenggan/BCCD_Dataset",
        "The BCCD photographs are MIT-licensed (Shenggan/BCCD_Dataset); the copies used here "
        "(dhruvp/wbc-classification, cosmicad/dataset) carry no licence file.",
        ("Shenggan/BCCD_Dataset", "dhruvp/wbc-classification")),
    "covid": DataTerms(
        "ieee8023/covid-chestxray-dataset + NIH ChestX-ray14 normals", "cxr-cc-by-nc-nd-and-unlicensed",
        "https://github.com/ieee8023/covid-chestxray-dataset",
        "ieee8023 images carry per-image licences up to CC BY-NC-ND 4.0 (216 with none stated); the "
        "redistributed normals state no licence. Non-commercial research use only.",
        ("ieee8023/covid-chestxray-dataset", "muhammedtalo/COVID-19")),
    "mortality": DataTerms(
        "ieee8023/covid-chestxray-dataset", "cxr-cc-by-nc-nd-and-unlicensed",
        "https://github.com/ieee8023/covid-chestxray-dataset",
        "ieee8023 images carry per-image licences up to CC BY-NC-ND 4.0 (216 with none stated). "
        "Non-commercial research use only.",
        ("ieee8023/covid-chestxray-dataset",)),
}
MODEL_INDEX_METRICS = ("accuracy", "balanced_accuracy", "f1", "mcc", "roc_auc")


def card_data(record: RunRecord, entry: ModelEntry) -> object:
    """``huggingface_hub.ModelCardData`` of a run: licence, task, data, measured numbers."""
    from huggingface_hub import EvalResult, ModelCardData

    terms = TRAINING_DATA.get(record.task)
    test = record.test
    results = []
    if test is not None and terms is not None and not record.untrained:  # random weights claim nothing
        for metric in MODEL_INDEX_METRICS:
            value = test.metrics.get(metric)
            if value is not None:
                results.append(EvalResult(
                    task_type="image-classification", dataset_type=record.data.source,
                    dataset_name=f"{terms.dataset}: {record.test_is or 'held-out test split'} ({test.n} images)",
                    dataset_split="test", metric_type=metric, metric_value=round(float(value), 4)))
    return ModelCardData(
        model_name=f"{record.task}/{record.name}",
        library_name="pytorch",
        pipeline_tag="image-classification",
        license="other" if terms else None,
        license_name=terms.license_name if terms else None,
        license_link=terms.license_link if terms else None,
        datasets=list(terms.sources) if terms else None,
        metrics=[m for m in MODEL_INDEX_METRICS if test is not None and test.metrics.get(m) is not None] or None,
        tags=["medical-imaging", "explainability", record.task],
        eval_results=results or None,
    )


def front_matter(record: RunRecord, entry: ModelEntry) -> str:
    """The YAML block a Hub model card opens with."""
    return "---\n" + card_data(record, entry).to_yaml() + "\n---\n"  # type: ignore[attr-defined]


PAPER_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1", "mcc", "roc_auc")


def paper_lines(record: RunRecord) -> list[str]:
    """The paper's own numbers for this model beside this run's (quoted from report/papers/*.json)."""
    from medmodels.report.papers import quoted_row

    found = quoted_row(record.task, record.name)
    if found is None or record.test is None:
        return []
    paper, table, row = found
    keys = [k for k in PAPER_METRICS if row.get("recall" if k == "sensitivity" and "recall" in row else k) is not None]
    if not keys:
        return []
    lines = ["", "## The paper's numbers", "",
             f"Quoted from {paper.paper}, {table.table} ({table.caption}); the paper's data and split differ "
             f"from ours (see Deviations above), so compare with care. This run: {record.test_is or 'held-out test split'}.", "",
             "| metric | paper | this run |", "|---|---|---|"]
    for k in keys:
        ours = record.test.metrics.get(k)
        theirs = row.get("recall" if k == "sensitivity" and "recall" in row else k)
        lines.append(f"| {k} | {theirs} | {'n/a' if ours is None else f'{ours:.4f}'} |")
    return lines


def citation(record: RunRecord, entry: ModelEntry) -> str:
    """The paper the model reproduces, as its data file names it (else the registry's line)."""
    from medmodels.report.papers import quoted_row

    found = quoted_row(record.task, record.name)
    return found[0].paper if found else entry.paper


def usage_lines(record: RunRecord, entry: ModelEntry) -> list[str]:
    """The paper's numbers, citation, intended and out-of-scope use, and a snippet that runs from a clone."""
    terms = TRAINING_DATA.get(record.task)
    return [
        *paper_lines(record),
        "",
        "## How to use",
        "",
        "```python",
        "from pathlib import Path",
        "from medmodels.data.images import load_image",
        "from medmodels.data.transforms import preprocess_batch",
        "from medmodels.hub import load_trained",
        "from medmodels.inference import predict_proba",
        "",
        f'model, card = load_trained("{entry.task}", "{entry.name}")',
        f'image = load_image(next(p for p in sorted(Path("examples/{entry.task}").rglob("*")) if p.suffix in (".png", ".jpg", ".jpeg")))',
        "probs = predict_proba(model, preprocess_batch([image], card.entry.preprocess))",
        "print(dict(zip(card.entry.classes, probs[0].round(3))))",
        "```",
        "",
        "## Intended and out-of-scope use",
        "",
        "- Intended: research and teaching about the paper's method, its explanations and its limits.",
        "- Out of scope: diagnosis, triage or any decision about a patient; images from other "
        "scanners, microscopes, stains or populations than the training data; commercial use "
        "(the training data's terms do not allow it).",
        "",
        "## Licence",
        "",
        f"`license: other` ({terms.license_name}): {terms.summary} Terms: {terms.license_link}. "
        "The repository's LICENSES.md says which terms cover each weight, the code and the examples."
        if terms else "No training-data terms recorded for this task.",
        "",
        "## Citation",
        "",
        citation(record, entry),
    ]
