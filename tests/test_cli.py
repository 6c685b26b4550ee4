"""`python -m medmodels` end to end on a tiny model trained here, on folder, zip and CSV inputs."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medmodels.cli import main
from medmodels.data.transforms import preprocess_batch
from medmodels.hub import save_model_folder
from medmodels.zoo.registry import create_model, get_entry

REPO = Path(__file__).resolve().parents[1]
TASK, NAME = "malaria", "shallow_cnn1"
CLASSES = ("Parasitized", "Uninfected")


def _cell(label: int, seed: int) -> Image.Image:
    """Parasitized: a dark purple dot in a pink cell; uninfected: a plain pink cell."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((48, 48, 3), np.uint8)
    yy, xx = np.mgrid[:48, :48]
    arr[(yy - 24) ** 2 + (xx - 24) ** 2 < 400] = (230, 150, 160)
    if label == 0:
        cy, cx = rng.integers(16, 32, size=2)
        arr[(yy - cy) ** 2 + (xx - cx) ** 2 < 16] = (80, 20, 110)
    noise = rng.integers(-10, 10, arr.shape)
    return Image.fromarray(np.clip(arr.astype(int) + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """Train the 1-layer CNN for a few steps on generated cells and save it as a model folder."""
    torch.manual_seed(0)
    entry = get_entry(TASK, NAME)
    images = [_cell(i % 2, i) for i in range(40)]
    x = preprocess_batch(images, entry.preprocess)
    y = torch.tensor([i % 2 for i in range(40)])
    model = create_model(TASK, NAME)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    root = tmp_path_factory.mktemp("weights")
    save_model_folder(model.eval(), entry, root / TASK / NAME, record=None, card="# tiny\n")
    return root


@pytest.fixture()
def env(tiny_weights, monkeypatch) -> Path:
    monkeypatch.setenv("MEDMODELS_WEIGHTS_DIR", str(tiny_weights))
    monkeypatch.delenv("MEDMODELS_HUB_REPO", raising=False)
    return tiny_weights


def _write_set(root: Path, n: int = 12) -> Path:
    for i in range(n):
        cls = CLASSES[i % 2]
        (root / cls).mkdir(parents=True, exist_ok=True)
        _cell(i % 2, 1000 + i).save(root / cls / f"cell_{i}.png")
    return root


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_pair_with_parameters(capsys, env) -> None:
    code, out, _ = _run(capsys, "list", "--json")
    rows = json.loads(out)
    assert code == 0
    keys = {(r["task"], r["model"]) for r in rows}
    assert ("covid", "kd_teacher") in keys and ("mortality", "convnext") in keys
    tiny = next(r for r in rows if (r["task"], r["model"]) == (TASK, NAME))
    assert tiny["weights"] == "local" and tiny["parameters"] > 1_000_000


def test_predict_json(capsys, env, tmp_path) -> None:
    _cell(0, 5).save(tmp_path / "a.png")
    _cell(1, 6).convert("L").save(tmp_path / "b.jpg")  # grayscale input converted as the model needs
    code, out, _ = _run(capsys, "predict", "--task", TASK, "--model", NAME,
                        str(tmp_path / "a.png"), str(tmp_path / "b.jpg"), "--json")
    assert code == 0
    rows = json.loads(out)
    assert [set(r["probabilities"]) for r in rows] == [set(CLASSES)] * 2
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)


@pytest.mark.parametrize("layout", ["folder", "zip", "csv"])
def test_evaluate_on_folder_zip_and_csv(capsys, env, tmp_path, layout) -> None:
    data = _write_set(tmp_path / "set")
    labels: list[str] = []
    if layout == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for f in sorted(data.rglob("*.png")):
                zf.write(f, f"testset/{f.relative_to(data)}")
        (tmp_path / "set.zip").write_bytes(buf.getvalue())
        target = tmp_path / "set.zip"
    elif layout == "csv":
        flat = tmp_path / "flat"
        flat.mkdir()
        rows = ["filename,label,patient_id"]
        for f in sorted(data.rglob("*.png")):
            (flat / f.name).write_bytes(f.read_bytes())
            rows.append(f"{f.name},{f.parent.name.lower()},slide{f.stem[-1]}")
        (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
        target, labels = flat, ["--labels", str(tmp_path / "labels.csv")]
    else:
        target = data
    out_json = tmp_path / "result.json"
    code, out, err = _run(capsys, "evaluate", "--task", TASK, "--model", NAME, "--data", str(target),
                          *labels, "--json", str(out_json))
    assert code == 0, err
    result = json.loads(out_json.read_text())
    assert result["task"] == TASK and result["model"] == NAME and result["n"] == 12
    for key in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1",
                "mcc", "roc_auc", "pr_auc", "ece"):
        assert key in result["metrics"]
    assert np.asarray(result["confusion_matrix"]).sum() == 12
    assert result["metrics"]["accuracy"] >= 0.75  # the tiny model learned the dot
    assert "accuracy=" in out


def test_errors_are_one_line_without_traceback(env, tmp_path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    cmd_env = {**os.environ, "MEDMODELS_WEIGHTS_DIR": str(env)}
    for argv, expected in (
        (["predict", "--task", TASK, "--model", NAME, str(bad)], "bad.png: this is not an image"),
        (["predict", "--task", "dogs", "--model", NAME, str(bad)], "Unknown task 'dogs'"),
        (["evaluate", "--task", TASK, "--model", "vgg16", "--data", str(tmp_path)], "No trained weights"),
    ):
        proc = subprocess.run([sys.executable, "-m", "medmodels", *argv], cwd=REPO, env=cmd_env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and expected in lines[0], proc.stderr


def test_crop_cells_writes_one_crop_per_box_and_lists_what_it_skipped(tmp_path, capsys) -> None:
    images, notes = tmp_path / "images", tmp_path / "xml"
    images.mkdir()
    notes.mkdir()
    smear = Image.new("RGB", (640, 480), (220, 200, 200))
    smear.paste((90, 40, 160), (300, 200, 400, 280))
    smear.save(images / "smear1.jpg")
    smear.save(images / "smear2.jpg")  # no annotation: skipped, not an error
    (images / "notes.txt").write_text("not an image")
    (notes / "smear1.xml").write_text(
        "<annotation><object><name>WBC</name><bndbox><xmin>300</xmin><ymin>200</ymin>"
        "<xmax>400</xmax><ymax>280</ymax></bndbox></object></annotation>")
    code, out, _ = _run(capsys, "crop-cells", str(images), "--annotations", str(notes),
                        "--out", str(tmp_path / "crops"))
    assert code == 0 and "1 crops written" in out and "1 images skipped" in out
    (crop,) = (tmp_path / "crops").iterdir()
    assert crop.name == "smear1_wbc0.png" and Image.open(crop).size == (130, 130)
    code, out, err = _run(capsys, "crop-cells", str(tmp_path / "empty"), "--annotations", str(notes),
                          "--out", str(tmp_path / "c2"))
    assert code == 2 and "no image files found" in err
