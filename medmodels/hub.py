"""Weights: one resolver (local ``weights/`` folder first, then the Hugging Face Hub), one loader.

A trained model is a folder laid out like a Hub model repo::

    weights/<task>/<model>/model.safetensors   the weights (safetensors only; pickles refused)
                          config.json         registry name, architecture, classes,
                                              preprocessing, sha256 of model.safetensors
                          metrics.json        recipe, split, timings, test metrics
                          README.md           model card

On the Hub, one repository holds every model under the same ``<task>/<model>/`` paths,
pinned to a commit. A download is checked against the sha256 in config.json (and the Hub's
own sha256 ETag for LFS files) before anything is returned; a mismatch is removed from the
cache. Loading always checks the sha256 and the architecture named in config.json against
the registry before touching the weights.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medmodels.errors import WeightsError
from medmodels.record import RECORD_FILE, RecordError, RunRecord, is_run_record
from medmodels.zoo.registry import ModelEntry, build_arch, count_parameters, get_entry

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = RECORD_FILE
CARD_FILE = "README.md"
HUB_CONFIG_FILE = REPO_ROOT / "hub.toml"
COMMIT_ID = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HubSettings:
    """Where weights come from. Environment variables override ``hub.toml``.

    ``MEDMODELS_WEIGHTS_DIR``, ``MEDMODELS_HUB_REPO``, ``MEDMODELS_HUB_REVISION``,
    ``MEDMODELS_HUB_CACHE`` (default: huggingface_hub's own cache under ``HF_HOME``).
    ``endpoint`` is read from ``HF_ENDPOINT`` when the settings are made, not when
    huggingface_hub was imported, and passed to every download. A private repository needs
    ``HF_TOKEN``, which huggingface_hub reads itself.
    """

    weights_dir: Path = REPO_ROOT / "weights"
    repo_id: str | None = None
    revision: str | None = None  # a commit id for deployments; a branch only while developing
    cache_dir: Path | None = None
    endpoint: str | None = None

    @classmethod
    def from_env(cls, config_file: Path = HUB_CONFIG_FILE) -> HubSettings:
        cfg: dict[str, Any] = {}
        if config_file.is_file():
            with config_file.open("rb") as fh:
                cfg = tomllib.load(fh).get("hub", {})
        env = os.environ
        weights_dir = env.get("MEDMODELS_WEIGHTS_DIR") or cfg.get("weights_dir")
        cache_dir = env.get("MEDMODELS_HUB_CACHE") or cfg.get("cache_dir")
        return cls(
            weights_dir=(REPO_ROOT / weights_dir) if weights_dir else REPO_ROOT / "weights",
            repo_id=env.get("MEDMODELS_HUB_REPO") or cfg.get("repo_id") or None,
            revision=env.get("MEDMODELS_HUB_REVISION") or cfg.get("revision") or None,
            cache_dir=Path(cache_dir) if cache_dir else None,
            endpoint=(env.get("HF_ENDPOINT") or "").rstrip("/") or None,
        )


@dataclass(frozen=True)
class ResolvedWeights:
    folder: Path
    source: str  # "local" or "hub:<repo>@<revision>"


@dataclass(frozen=True)
class TrainedCard:
    """What a loaded model carries besides its tensors: config, run record and card text."""

    entry: ModelEntry
    folder: Path
    source: str
    config: dict[str, Any]
    record: RunRecord | None = None
    card: str = ""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_config(entry: ModelEntry, model: nn.Module, sha256: str, dtype: str) -> dict[str, Any]:
    return {
        "task": entry.task,
        "name": entry.name,
        "arch": entry.arch,
        "classes": list(entry.classes),
        "preprocess": asdict(entry.preprocess),
        "num_parameters": count_parameters(model),
        "format": "safetensors",
        "dtype": dtype,
        "sha256": sha256,
    }


def save_model_folder(
    model: nn.Module,
    entry: ModelEntry,
    folder: Path,
    *,
    record: RunRecord | None,
    card: str,
    half: bool = False,
) -> Path:
    """Write the four files of a model folder; ``half`` stores fp16 to halve big models."""
    folder.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    weights = folder / WEIGHTS_FILE
    save_file(state, str(weights), metadata={"task": entry.task, "name": entry.name, "arch": entry.arch})
    config = model_config(entry, model, sha256_of(weights), str(dtype).removeprefix("torch."))
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if record is not None:  # weights made elsewhere may come without a run record
        record.write(folder / METRICS_FILE)
    (folder / CARD_FILE).write_text(card)
    log.info("saved %s to %s (%.1f MB)", entry.key, folder, weights.stat().st_size / 1e6)
    return folder


def _local_folder(entry: ModelEntry, settings: HubSettings) -> Path | None:
    folder = settings.weights_dir / entry.task / entry.name
    return folder if (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file() else None


def _hub_folder(entry: ModelEntry, settings: HubSettings, local_only: bool) -> Path:
    from huggingface_hub import _CACHED_NO_EXIST, hf_hub_download, try_to_load_from_cache

    fetched: list[Path] = []

    def fetch(filename: str) -> Path:
        path = Path(hf_hub_download(
            repo_id=settings.repo_id, filename=f"{entry.task}/{entry.name}/{filename}",
            revision=settings.revision, cache_dir=settings.cache_dir, local_files_only=local_only,
            endpoint=settings.endpoint,
        ))
        fetched.append(path)
        return path

    config_path = fetch(CONFIG_FILE)
    weights_path = fetch(WEIGHTS_FILE)
    if not local_only:
        problem = _hash_problem(config_path, weights_path)
        if problem:
            _purge_cached(fetched)
            raise WeightsError(
                f"{entry.key}: the {WEIGHTS_FILE} downloaded from {settings.repo_id}@{settings.revision} "
                f"{problem}; it was removed from the cache and nothing was loaded."
            )
    for optional in (METRICS_FILE, CARD_FILE):
        # The cache also records files the Hub said it does not have: no request (and no
        # retries against an unreachable Hub) for an optional file already known to be absent.
        known = try_to_load_from_cache(settings.repo_id, f"{entry.task}/{entry.name}/{optional}",
                                       cache_dir=settings.cache_dir, revision=settings.revision)
        if known is _CACHED_NO_EXIST or isinstance(known, str) or local_only:
            continue
        try:
            fetch(optional)
        except Exception:  # noqa: BLE001 - a model card is optional; weights are not
            log.debug("%s: no %s on the Hub", entry.key, optional)
    return config_path.parent


def _hash_problem(config_path: Path, weights_path: Path) -> str | None:
    """Why a downloaded weights file must not be kept, or None when its sha256 checks out.

    Checked against config.json's sha256 and, for a file the Hub stores in LFS, against the
    blob name huggingface_hub gave it (the server's sha256 ETag), so that neither a wrong
    file on the server nor a corrupted transfer ends up in the cache.
    """
    actual = sha256_of(weights_path)
    try:
        expected = json.loads(config_path.read_text()).get("sha256")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return f"comes with a {CONFIG_FILE} that is not valid JSON"
    if expected != actual:
        return f"has sha256 {actual[:12]}…, but its {CONFIG_FILE} says {str(expected)[:12]}…"
    blob = weights_path.resolve().name
    if _SHA256.fullmatch(blob) and blob != actual:
        return f"has sha256 {actual[:12]}…, but the Hub announced {blob[:12]}… (a corrupted transfer)"
    return None


def _purge_cached(paths: list[Path]) -> None:
    """Remove downloaded files from the Hub cache: snapshot entries and blobs no other entry uses."""
    for path in paths:
        blob = path.resolve() if path.is_symlink() else None
        path.unlink(missing_ok=True)
        if blob is None:
            continue
        snapshots = blob.parent.parent / "snapshots"
        still_used = any(p.is_symlink() and p.resolve() == blob for p in snapshots.rglob("*"))
        if not still_used:
            blob.unlink(missing_ok=True)
        parent = path.parent
        while parent != snapshots and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def _hub_failure(err: Exception, settings: HubSettings, local_only: bool) -> str:
    """Why the Hub gave nothing, as the end of a sentence naming what a user can change."""
    kind = type(err).__name__
    if kind in ("RepositoryNotFoundError", "GatedRepoError"):
        return (f"was not found or is not accessible ({kind}); for a private repository set HF_TOKEN "
                "to a token that can read it")
    if kind in ("RevisionNotFoundError", "RemoteEntryNotFoundError", "EntryNotFoundError"):
        return f"does not have it ({kind})"
    if kind == "LocalEntryNotFoundError":
        from huggingface_hub import constants

        if local_only:
            return "is not in the local Hub cache (nothing is downloaded just to list models)"
        if constants.is_offline_mode():
            return "is not in the local Hub cache and downloads are switched off (HF_HUB_OFFLINE)"
        host = settings.endpoint or constants.ENDPOINT
        return (f"could not be reached at {host} and is not in the local Hub cache; check the network "
                "or HF_ENDPOINT, or ship the weights folder")
    first = str(err).splitlines()[0] if str(err) else "not found"
    return f"gave {kind}: {first}"


def resolve_weights(
    task: str, name: str, settings: HubSettings | None = None, *, allow_download: bool = True
) -> ResolvedWeights:
    """The folder holding ``task/name``'s weights: local first, else the Hub (pinned revision).

    ``allow_download=False`` looks only in the local folder and the Hub cache, so that
    listing available models never waits on the network. A download is verified (sha256)
    before it is returned and removed from the cache when it does not match.
    """
    entry = get_entry(task, name)
    settings = settings or HubSettings.from_env()
    local = _local_folder(entry, settings)
    if local is not None:
        return ResolvedWeights(local, "local")
    where_local = settings.weights_dir / task / name
    if not settings.repo_id:
        raise WeightsError(
            f"No trained weights for {entry.key}: nothing in {where_local} and no Hugging Face "
            "Hub repository configured (set MEDMODELS_HUB_REPO or hub.toml)."
        )
    if not settings.revision:
        raise WeightsError(
            f"No trained weights for {entry.key}: nothing in {where_local}, and the Hub repository "
            f"{settings.repo_id} has no pinned revision (set revision in hub.toml or "
            "MEDMODELS_HUB_REVISION to the commit id printed by `python -m medmodels push`)."
        )
    try:
        folder = _hub_folder(entry, settings, local_only=not allow_download)
    except WeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - huggingface_hub raises many types; all mean "not there"
        raise WeightsError(
            f"No trained weights for {entry.key}: nothing in {where_local}, and the Hub repository "
            f"{settings.repo_id}@{settings.revision} {_hub_failure(err, settings, not allow_download)}."
        ) from None
    return ResolvedWeights(folder, f"hub:{settings.repo_id}@{settings.revision}")


def weights_status(task: str, name: str, settings: HubSettings | None = None) -> tuple[bool, str]:
    """(available, reason) without touching the network: for listings and the dashboard.

    A model that is neither local nor cached counts as available when a Hub repository is
    pinned to a commit (a deployment without a weights folder): it is downloaded, verified
    and cached the first time a page loads it, and a failure then is shown as its message.
    """
    settings = settings or HubSettings.from_env()
    try:
        resolved = resolve_weights(task, name, settings, allow_download=False)
    except WeightsError as err:
        if settings.repo_id and COMMIT_ID.fullmatch(settings.revision or "") and not _offline():
            return True, f"hub:{settings.repo_id}@{settings.revision} (downloaded on first use)"
        return False, str(err)
    return True, resolved.source


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{path} is not valid JSON ({err}).") from None


def _read_record(folder: Path) -> RunRecord | None:
    if not (folder / METRICS_FILE).is_file() or not is_run_record(folder / METRICS_FILE):
        return None  # no record, or another kind of model's (segmentation) record
    try:
        return RunRecord.read(folder)
    except RecordError as err:
        raise WeightsError(f"{folder}: {err}") from None


def load_state(folder: Path, entry: ModelEntry) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify (format, sha256, architecture) the state dict of a model folder."""
    weights = folder / WEIGHTS_FILE
    config = _read_json(folder / CONFIG_FILE)
    if not weights.is_file():
        pickles = [p.name for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
        hint = f" Found {', '.join(pickles)}: pickle files are refused." if pickles else ""
        raise WeightsError(f"{entry.key}: {folder} has no {WEIGHTS_FILE}.{hint}")
    if config.get("arch") != entry.arch or config.get("task") != entry.task:
        raise WeightsError(
            f"{entry.key}: {CONFIG_FILE} describes {config.get('task')}/{config.get('arch')}, but the "
            f"registry expects {entry.task}/{entry.arch}; refusing to load."
        )
    expected = config.get("sha256")
    actual = sha256_of(weights)
    if expected != actual:
        raise WeightsError(
            f"{entry.key}: {WEIGHTS_FILE} does not match the sha256 in {CONFIG_FILE} "
            f"(expected {str(expected)[:12]}…, got {actual[:12]}…); the file was changed or is corrupt."
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(
            f"{entry.key}: {WEIGHTS_FILE} is not a valid safetensors file ({err}); "
            "only safetensors are accepted (no pickles)."
        ) from None
    return state, config


def store_half(folder: Path) -> Path:
    """Re-store a trained folder's weights in fp16 and record it in config and metrics.json.

    For a run trained before its recipe asked for fp16 storage (``half``): the recorded recipe
    is marked ``half`` so that it equals the recipe file again, and ``storage`` says the
    conversion came after training (re-check the metrics with ``evaluate --data heldout``).
    """
    config = _read_json(folder / CONFIG_FILE)
    entry = get_entry(config["task"], config["name"])
    state, config = load_state(folder, entry)
    weights = folder / WEIGHTS_FILE
    halved = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(halved, str(weights), metadata={"task": entry.task, "name": entry.name, "arch": entry.arch})
    config.update(dtype="float16", sha256=sha256_of(weights))
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if (folder / METRICS_FILE).is_file():
        from medmodels.record import Storage

        record = RunRecord.read(folder)
        if record.recipe is not None:
            record.recipe["half"] = True
        record.storage = Storage(dtype="float16", converted_after_training=True)
        record.write(folder)
    log.info("stored %s in fp16 (%.1f MB)", entry.key, weights.stat().st_size / 1e6)
    return folder


def load_trained(
    task: str, name: str, settings: HubSettings | None = None
) -> tuple[nn.Module, TrainedCard]:
    """The trained model in eval mode (float32) and its card: the one way to get shipped weights."""
    entry = get_entry(task, name)
    resolved = resolve_weights(task, name, settings)
    state, config = load_state(resolved.folder, entry)
    model = build_arch(entry)
    floats = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        model.load_state_dict(floats, strict=True)
    except RuntimeError as err:
        raise WeightsError(
            f"{entry.key}: the weights do not fit the registered architecture "
            f"({str(err).splitlines()[0]})."
        ) from None
    model.eval()
    card = TrainedCard(
        entry=entry, folder=resolved.folder, source=resolved.source, config=config,
        record=_read_record(resolved.folder),
        card=(resolved.folder / CARD_FILE).read_text() if (resolved.folder / CARD_FILE).is_file() else "",
    )
    return model, card


def weights_repo_index(model_paths: list[str]) -> str:
    """The weights repository's root README: the one card the Hub renders and indexes.

    The repository keeps every model under ``<task>/<model>/`` so that one commit pins all of
    them (one ``revision`` per deployment, as the resolver reads it). The Hub renders and
    indexes only a repository's root README, so this index carries the shared metadata and
    links each model's own card.
    """
    rows = []
    for path in sorted(model_paths):
        task, name = path.split("/", 1)
        try:
            title = get_entry(task, name).title
        except Exception:  # noqa: BLE001 - a model no longer registered keeps its row
            title = name
        rows.append(f"| `{task}` | [{title}]({path}/{CARD_FILE}) | `{path}/` |")
    return "\n".join([
        "---",
        "license: other",
        "license_name: medmodels-weights",
        "license_link: LICENSES.md",
        "library_name: pytorch",
        "pipeline_tag: image-classification",
        "tags:",
        "  - medical-imaging",
        "  - image-classification",
        "  - safetensors",
        "---",
        "",
        "# medmodels weights",
        "",
        "Trained weights of the medmodels dashboard, one folder per model: `model.safetensors`,",
        "`config.json` (architecture, classes, preprocessing, sha256), `metrics.json` (the run",
        "record) and the model card `README.md`. Load one with",
        "`medmodels.hub.load_trained(task, name)` after pinning this repository and a commit id",
        "in `hub.toml`. Research and education only; not for diagnosis. Each model's licence",
        "follows its training data: see `LICENSES.md`.",
        "",
        "| task | model card | folder |",
        "|---|---|---|",
        *rows,
        "",
    ])


def push_folder(folder: Path, repo_id: str, *, token: str | None = None, private: bool = False) -> str:
    """Upload one model folder to ``repo_id`` under ``<task>/<model>/``; returns the commit id.

    One commit carries the folder, the root README indexing every model card in the
    repository (:func:`weights_repo_index`) and LICENSES.md. Put the returned commit id in
    ``hub.toml`` (``revision``) to pin what users download.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    config = _read_json(folder / CONFIG_FILE)
    if not config or not (folder / WEIGHTS_FILE).is_file():
        raise WeightsError(f"{folder} is not a model folder ({CONFIG_FILE} and {WEIGHTS_FILE} needed).")
    entry = get_entry(config["task"], config["name"])
    load_state(folder, entry)  # never publish a folder that would not load
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    prefix = f"{entry.task}/{entry.name}"
    models = {p.rsplit("/", 1)[0] for p in api.list_repo_files(repo_id)
              if p.count("/") == 2 and p.endswith("/" + CARD_FILE)} | {prefix}
    files = [f for f in sorted(folder.iterdir())
             if f.is_file() and (f.name in (WEIGHTS_FILE, CARD_FILE, "predictions.csv") or f.suffix == ".json")]
    operations = [CommitOperationAdd(f"{prefix}/{f.name}", str(f)) for f in files]
    operations.append(CommitOperationAdd(CARD_FILE, weights_repo_index(sorted(models)).encode()))
    if (REPO_ROOT / "LICENSES.md").is_file():
        operations.append(CommitOperationAdd("LICENSES.md", str(REPO_ROOT / "LICENSES.md")))
    info = api.create_commit(repo_id, operations=operations, commit_message=f"Upload {entry.key}",
                             repo_type="model")
    return info.oid
