"""Registry-parametrised tests: registering a model is enough to have it tested."""
from __future__ import annotations

import pytest
import torch

from medmodels.errors import UnknownModelError, WeightsError
from medmodels.zoo.registry import (
    build_arch,
    count_parameters,
    create_model,
    get_entry,
    list_models,
    list_tasks,
)

ENTRIES = list_models()
ISSUE_MODELS = {
    "malaria": {"shallow_cnn1", "shallow_cnn2", "shallow_cnn3", "vgg16", "resnet50", "quadsnet"},
    "wbc": {"wbc_cnn", "vgg16", "resnet50", "inception_v3", "mobilenet_v2", "quadsnet"},
    "covid": {"kd_teacher", "mobilenet_v2", "mobilenet_v2_kd", "quadsnet"},
    "mortality": {"resnet18", "resnet18_classweight", "resnet18_resample", "resnet18_imputed",
                  "alexnet", "mobilenet_v3", "efficientnet_v2", "swin", "convnext"},
}


def test_every_model_of_the_papers_is_registered() -> None:
    for task, names in ISSUE_MODELS.items():
        assert names <= {e.name for e in list_models(task)}, task
    assert {t.name for t in list_tasks()} == set(ISSUE_MODELS)


@pytest.mark.parametrize("arch_entry", list({e.arch: e for e in ENTRIES}.values()), ids=lambda e: e.arch)
def test_forward_backward_at_input_size(arch_entry) -> None:
    torch.manual_seed(0)
    model = create_model(arch_entry.task, arch_entry.name)
    size = arch_entry.preprocess.input_size
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, len(arch_entry.classes))
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.key)
def test_entry_is_complete(entry) -> None:
    model = build_arch(entry)
    for path in entry.cam_layers.values():
        model.get_submodule(path)  # raises if the Grad-CAM layer does not exist
    assert entry.title and entry.description and entry.paper
    assert entry.preprocess.input_size >= 32


def _count(task: str, name: str) -> int:
    return count_parameters(build_arch(get_entry(task, name)))


def test_parameter_counts_match_the_papers() -> None:
    # The papers' settings: MobileNetV2 student 2.33M, QuadSNet 5,235,944 (two classes).
    assert abs(_count("covid", "mobilenet_v2_kd") - 2.33e6) / 2.33e6 < 0.10
    assert abs(_count("covid", "quadsnet") - 5_235_944) / 5_235_944 < 0.10


def test_teacher_count_at_the_papers_input_size(capsys) -> None:
    from medmodels.zoo.kd import KDTeacher

    at_224 = count_parameters(KDTeacher(2, in_size=224))
    print(f"teacher parameters at 224 px: {at_224:,} (paper: 49.2M)")
    assert abs(at_224 - 49.2e6) / 49.2e6 < 0.02
    student = _count("covid", "mobilenet_v2_kd")
    assert 1 - student / at_224 > 0.95  # the paper's -95.3%


def test_unknown_names_give_clear_errors() -> None:
    with pytest.raises(UnknownModelError, match="Known tasks: covid, malaria, mortality, wbc"):
        create_model("cats", "x")
    with pytest.raises(UnknownModelError, match="Models for malaria: shallow_cnn3"):
        create_model("malaria", "vgg19")


def test_pretrained_fails_clearly_offline(monkeypatch) -> None:
    monkeypatch.setenv("MEDMODELS_OFFLINE", "1")
    with pytest.raises(WeightsError, match="offline"):
        create_model("mortality", "resnet18", pretrained=True)


def test_pretrained_without_imagenet_weights_is_explained(monkeypatch) -> None:
    monkeypatch.delenv("MEDMODELS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        create_model("malaria", "shallow_cnn3", pretrained=True)


def test_pretrained_from_a_checkpoint_file(tmp_path) -> None:
    from safetensors.torch import save_file

    source = create_model("malaria", "shallow_cnn2")
    ckpt = tmp_path / "mine.safetensors"
    save_file(source.state_dict(), str(ckpt))
    loaded = create_model("malaria", "shallow_cnn2", pretrained=ckpt)
    for k, v in source.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    with pytest.raises(WeightsError, match="does not fit"):
        create_model("malaria", "shallow_cnn3", pretrained=ckpt)
    with pytest.raises(WeightsError, match="not found"):
        create_model("malaria", "shallow_cnn3", pretrained=tmp_path / "missing.pt")


def test_the_distilled_student_is_the_default_student() -> None:
    """The teacher-vs-student page preselects the first student: the distilled one."""
    from medmodels.zoo.registry import list_models

    students = [e.name for e in list_models("covid") if e.family == "student"]
    assert students[0] == "mobilenet_v2_kd" and "mobilenet_v2" in students


def test_the_registry_stands_alone_and_the_package_fills_it() -> None:
    """No import loop: registry imports nothing of the zoo; importing the package registers everything."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    registry = Path(__file__).resolve().parents[1] / "medmodels" / "zoo" / "registry.py"
    imported = {n.module for n in ast.walk(ast.parse(registry.read_text())) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(ast.parse(registry.read_text())) if isinstance(n, ast.Import)
                 for a in n.names}
    assert not {m for m in imported if m and m.startswith("medmodels.zoo")}, imported
    code = ("from medmodels.zoo.registry import list_models, list_tasks; "
            "print(len(list_tasks()), len(list_models()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=registry.parents[2]).stdout.split()
    assert int(out[0]) >= 4 and int(out[1]) >= 20
