"""Weights round trip: save, resolve locally, resolve through a real (offline) Hub cache, refuse tampering.

huggingface_hub is not mocked: the test lays out a Hub cache folder the way the library
itself does (models--org--name/refs + snapshots/<commit>/...) and lets hf_hub_download,
running with HF_HUB_OFFLINE=1, resolve files from it.
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from medmodels.errors import WeightsError
from medmodels.hub import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    HubSettings,
    load_trained,
    resolve_weights,
    save_model_folder,
    weights_status,
)
from medmodels.zoo.registry import create_model, get_entry

TASK, NAME = "malaria", "shallow_cnn2"
REPO = "medmodels-test/weights"
COMMIT = "0123456789abcdef0123456789abcdef01234567"



def _record(task: str, name: str, **fields):
    """A minimal run record (the hub stores and returns it as it is)."""
    from medmodels.record import RunRecord

    return RunRecord.from_dict({
        "schema": 2, "task": task, "name": name, "model": name, "arch": name, "parameters": 1,
        "data": {"source": "test", "n_images": 0, "n_groups": None, "class_counts": {}},
        "split": {"mode": "grouped", "by": None, "fractions": [0.0, 0.0, 1.0], "seed": 0},
        "training": {"seconds": 0.0, "best_epoch": 0, "epochs_run": 0, "stop_reason": "test"}, **fields})


@pytest.fixture()

def trained_folder(tmp_path: Path) -> Path:
    torch.manual_seed(1)
    model = create_model(TASK, NAME)
    folder = tmp_path / "weights" / TASK / NAME
    save_model_folder(model, get_entry(TASK, NAME), folder, record=_record(TASK, NAME, test={
                          "n": 2, "metrics": {"accuracy": 0.5}, "per_class": {}, "confusion_matrix": [[1, 1], [0, 0]],
                          "classes": ["a", "b"], "threshold": 0.5}),
                      card="# card\n")
    return folder


def _settings(tmp_path: Path, **kw) -> HubSettings:
    return HubSettings(weights_dir=tmp_path / "weights", **kw)


def build_hub_cache(cache: Path, folder: Path, revision: str = "main") -> None:
    """Lay out the Hub cache structure that hf_hub_download reads in offline mode."""
    repo_dir = cache / ("models--" + REPO.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / COMMIT / TASK / NAME
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        shutil.copy(f, snapshot / f.name)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / revision).write_text(COMMIT)


def test_local_round_trip(tmp_path: Path, trained_folder: Path) -> None:
    model, card = load_trained(TASK, NAME, _settings(tmp_path))
    assert card.source == "local" and card.record.test.metrics["accuracy"] == 0.5
    assert not model.training
    config = json.loads((trained_folder / CONFIG_FILE).read_text())
    assert config["arch"] == "shallow_cnn2" and config["classes"] == ["Parasitized", "Uninfected"]
    assert config["preprocess"]["input_size"] == 64


def test_fp16_folder_loads_as_float32(tmp_path: Path) -> None:
    model = create_model(TASK, NAME)
    save_model_folder(model, get_entry(TASK, NAME), tmp_path / "weights" / TASK / NAME,
                      record=_record(TASK, NAME), card="", half=True)
    loaded, card = load_trained(TASK, NAME, _settings(tmp_path))
    assert card.config["dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_offline_hub_cache_resolves(tmp_path: Path, trained_folder: Path) -> None:
    cache = tmp_path / "hub-cache"
    build_hub_cache(cache, trained_folder)
    shutil.rmtree(tmp_path / "weights")  # nothing local: must come from the Hub cache
    settings = _settings(tmp_path, repo_id=REPO, revision="main", cache_dir=cache)
    resolved = resolve_weights(TASK, NAME, settings)
    assert resolved.source == f"hub:{REPO}@main"
    assert COMMIT in str(resolved.folder)
    model, card = load_trained(TASK, NAME, settings)
    assert card.card == "# card\n"
    assert weights_status(TASK, NAME, settings) == (True, f"hub:{REPO}@main")
    # A pinned commit resolves too; an unknown revision does not.
    pinned = _settings(tmp_path, repo_id=REPO, revision=COMMIT, cache_dir=cache)
    assert resolve_weights(TASK, NAME, pinned).folder == resolved.folder
    other = _settings(tmp_path, repo_id=REPO, revision="v9", cache_dir=cache)
    with pytest.raises(WeightsError, match=r"nothing in .*and the Hub repository medmodels-test/weights@v9"):
        resolve_weights(TASK, NAME, other)


def test_missing_everywhere_names_both_places(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no Hugging Face Hub repository configured"):
        resolve_weights(TASK, NAME, _settings(tmp_path))
    settings = _settings(tmp_path, repo_id=REPO, cache_dir=tmp_path / "empty-cache")
    with pytest.raises(WeightsError) as info:
        resolve_weights(TASK, NAME, settings)
    assert str(tmp_path / "weights" / TASK / NAME) in str(info.value) and REPO in str(info.value)


def test_tampered_weights_are_refused(tmp_path: Path, trained_folder: Path) -> None:
    weights = trained_folder / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match the sha256"):
        load_trained(TASK, NAME, _settings(tmp_path))


def test_pickle_is_refused(tmp_path: Path, trained_folder: Path) -> None:
    weights = trained_folder / WEIGHTS_FILE
    payload = pickle.dumps({"weight": [1, 2, 3]})
    weights.write_bytes(payload)
    config = json.loads((trained_folder / CONFIG_FILE).read_text())
    import hashlib

    config["sha256"] = hashlib.sha256(payload).hexdigest()  # even with a matching hash
    (trained_folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        load_trained(TASK, NAME, _settings(tmp_path))


def test_only_a_pickle_present_is_named(tmp_path: Path, trained_folder: Path) -> None:
    (trained_folder / WEIGHTS_FILE).rename(trained_folder / "pytorch_model.bin")
    settings = _settings(tmp_path)
    from medmodels.hub import load_state

    with pytest.raises(WeightsError, match="pickle files are refused"):
        load_state(trained_folder, get_entry(TASK, NAME))
    with pytest.raises(WeightsError, match="No trained weights"):
        load_trained(TASK, NAME, settings)


def test_config_naming_another_architecture_is_refused(tmp_path: Path, trained_folder: Path) -> None:
    config = json.loads((trained_folder / CONFIG_FILE).read_text())
    config["arch"] = "shallow_cnn3"
    (trained_folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="registry expects malaria/shallow_cnn2"):
        load_trained(TASK, NAME, _settings(tmp_path))


def test_settings_from_env_and_file(tmp_path: Path, monkeypatch) -> None:
    cfg = tmp_path / "hub.toml"
    cfg.write_text('[hub]\nrepo_id = "org/from-file"\nrevision = "abc"\n')
    monkeypatch.delenv("MEDMODELS_HUB_REPO", raising=False)
    monkeypatch.delenv("MEDMODELS_HUB_REVISION", raising=False)
    s = HubSettings.from_env(cfg)
    assert (s.repo_id, s.revision) == ("org/from-file", "abc")
    monkeypatch.setenv("MEDMODELS_HUB_REPO", "org/from-env")
    monkeypatch.setenv("MEDMODELS_HUB_REVISION", "def")
    s = HubSettings.from_env(cfg)
    assert (s.repo_id, s.revision) == ("org/from-env", "def")


def test_store_half_halves_the_file_and_keeps_the_folder_loadable(tmp_path) -> None:
    from medmodels.hub import HubSettings, load_trained, save_model_folder, store_half

    entry = get_entry("malaria", "shallow_cnn1")
    model = create_model("malaria", "shallow_cnn1").eval()
    folder = tmp_path / "malaria" / "shallow_cnn1"
    save_model_folder(model, entry, folder, record=_record(entry.task, entry.name, recipe={"half": False}),
                      card="# card\n")
    before = (folder / "model.safetensors").stat().st_size
    store_half(folder)
    assert (folder / "model.safetensors").stat().st_size < 0.55 * before
    config = json.loads((folder / "config.json").read_text())
    from medmodels.record import RunRecord, Storage

    record = RunRecord.read(folder)
    assert config["dtype"] == "float16" and record.recipe["half"] is True
    assert record.storage == Storage(dtype="float16", converted_after_training=True)
    loaded, _ = load_trained("malaria", "shallow_cnn1", HubSettings(weights_dir=tmp_path))
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(loaded(x), model(x), atol=1e-2)


def test_status_of_a_pinned_hub_model_not_yet_downloaded(tmp_path: Path, monkeypatch) -> None:
    """A deployment without weights/ lists Hub models pinned to a commit; a branch is not trusted."""
    from huggingface_hub import constants

    pinned = _settings(tmp_path, repo_id=REPO, revision=COMMIT, cache_dir=tmp_path / "empty-cache")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the conftest switches the Hub off
    assert weights_status(TASK, NAME, pinned) == (True, f"hub:{REPO}@{COMMIT} (downloaded on first use)")
    branch = _settings(tmp_path, repo_id=REPO, revision="main", cache_dir=tmp_path / "empty-cache")
    available, reason = weights_status(TASK, NAME, branch)
    assert not available and "is not in the local Hub cache" in reason
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert weights_status(TASK, NAME, pinned)[0] is False


def test_no_pinned_revision_is_named(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="has no pinned revision"):
        resolve_weights(TASK, NAME, _settings(tmp_path, repo_id=REPO))


def test_weights_repository_index_is_a_card_the_hub_reads() -> None:
    """One repository, one pinned commit: its root README indexes every model's card."""
    from huggingface_hub import ModelCard

    from medmodels.hub import weights_repo_index

    text = weights_repo_index(["wbc/wbc_cnn", "malaria/shallow_cnn3"])
    card = ModelCard(text)
    assert card.data.license == "other" and card.data.license_link == "LICENSES.md"
    assert card.data.pipeline_tag == "image-classification"
    assert "(malaria/shallow_cnn3/README.md)" in card.text and "(wbc/wbc_cnn/README.md)" in card.text
    assert card.text.index("malaria/shallow_cnn3") < card.text.index("wbc/wbc_cnn")
