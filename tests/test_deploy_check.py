"""deploy-check: this repository passes; a repository the Hub would refuse fails with every reason named."""
from __future__ import annotations

from pathlib import Path

import pytest

from medmodels.cli import main
from medmodels.deploy_check import REPO_ROOT, DeployCheckError, front_matter, is_lfs, run_checks

GOOD_FRONT = """---
title: T
sdk: docker
app_port: 7860
license: mit
short_description: short enough
tags: [a, b]
---
# body
"""


def test_this_repository_passes(capsys) -> None:
    report = run_checks(REPO_ROOT)
    assert report.problems == []
    assert main(["deploy-check"]) == 0
    assert "checks passed" in capsys.readouterr().out


def test_front_matter_matches_the_licences_document() -> None:
    meta = front_matter(REPO_ROOT / "README.md")
    assert meta["license"] == "other" and meta["license_link"] == "LICENSES.md"
    assert (REPO_ROOT / meta["license_link"]).is_file()
    assert len(meta["short_description"]) <= 60


def _repo(tmp_path: Path, readme: str = GOOD_FRONT) -> Path:
    (tmp_path / "README.md").write_text(readme)
    (tmp_path / "LICENSES.md").write_text("`malaria/m1`\n")
    (tmp_path / "Dockerfile").write_text('USER user\nWORKDIR /app\nCMD ["x", "--server.port=7860"]\n')
    return tmp_path


def test_a_clean_minimal_repository_passes(tmp_path: Path) -> None:
    assert run_checks(_repo(tmp_path)).problems == []


def test_every_problem_is_named(tmp_path: Path, capsys) -> None:
    root = _repo(tmp_path, GOOD_FRONT.replace("short enough", "x" * 61).replace("app_port: 7860\n", "")
                 .replace("license: mit", "license: other").replace("tags: [a, b]", "tags: a"))
    (root / "Dockerfile").write_text('WORKDIR /app\nUSER user\nCMD ["x"]\n')
    (root / "hub.toml").write_text('[hub]\nrepo_id = "o/w"\nrevision = "main"\n')
    weights = root / "weights" / "malaria" / "m2"
    weights.mkdir(parents=True)
    with (weights / "model.safetensors").open("wb") as fh:
        fh.truncate(10_000_001)  # one byte over the Hub's limit
    report = run_checks(root)
    text = " ".join(report.problems)
    for expected in ("`short_description` has 61 characters", "integer `app_port`",
                     "`license: other` needs `license_name` and `license_link`", "`tags` must be a list",
                     "weights/malaria/m2/model.safetensors (10.0 MB)", "revision 'main' is a branch or tag",
                     "WORKDIR comes before USER", "LICENSES.md does not name these shipped weights: malaria/m2"):
        assert expected in text, expected
    assert main(["deploy-check", "--root", str(root)]) == 2
    assert "deploy checks failed" in capsys.readouterr().err
    # git-lfs cures the large file; a commit id cures the revision.
    (root / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (root / "hub.toml").write_text('[hub]\nrevision = "' + "ab" * 20 + '"\n')
    text = " ".join(run_checks(root).problems)
    assert "git-lfs" not in text and "revision" not in text


def test_environment_revision_is_checked_too(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDMODELS_HUB_REVISION", "v1.0")
    assert any("MEDMODELS_HUB_REVISION: revision 'v1.0'" in p for p in run_checks(_repo(tmp_path)).problems)


def test_gitattributes_matching() -> None:
    assert is_lfs("weights/a/b/model.safetensors", ["*.safetensors"])
    assert is_lfs("big/file.bin", ["big/**"]) and not is_lfs("other/file.bin", ["big/**"])
    assert is_lfs("weights/x.pt", ["weights/*.pt"]) and not is_lfs("weights/a/x.pt", ["weights/*.pt"])


def test_broken_front_matter_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("---\ntitle: [unclosed\n---\n")
    with pytest.raises(DeployCheckError, match="not valid YAML"):
        front_matter(tmp_path / "README.md")
    (tmp_path / "README.md").write_text("# no front matter\n")
    assert "README.md has no front matter block" in " ".join(run_checks(tmp_path).problems)
