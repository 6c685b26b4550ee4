"""``python -m medmodels deploy-check``: would the Hugging Face Hub accept this repository as a Space?

Checks, before a push rather than after a rejected one:

- the README front matter against the Spaces configuration reference (``sdk``, ``app_port``
  for the Docker SDK, ``short_description`` of at most 60 characters, colours, licence);
- that every tracked file over 10 MB is stored in git-lfs (a ``.gitattributes`` rule with
  ``filter=lfs``), since the Hub refuses larger plain-git files;
- that the Hub revision the weights resolver would use is a commit id, not a branch or tag
  (a branch moves, so two deployments could load different bytes);
- that the Dockerfile serves the front matter's ``app_port`` and that every shipped weight
  folder is listed in LICENSES.md.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from medmodels.errors import MedModelsError

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_PLAIN_FILE = 10 * 1000 * 1000  # bytes; the Hub's limit for files outside git-lfs
SHORT_DESCRIPTION_MAX = 60
SDKS = ("gradio", "docker", "static", "streamlit")
COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
COMMIT_ID = re.compile(r"[0-9a-f]{40}")


class DeployCheckError(MedModelsError):
    """The repository would not deploy; the message lists every problem found."""


@dataclass
class Report:
    """What was checked and what failed; ``problems`` empty means the Space would be accepted."""

    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def check(self, what: str, problem: str | None) -> None:
        self.checked.append(what)
        if problem:
            self.problems.append(problem)


def front_matter(readme: Path) -> dict:
    """The YAML block between the first two ``---`` lines of a README, or {} if there is none."""
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    match = re.match(r"---\r?\n(.*?)\r?\n---\r?\n", text, re.S)
    if not match:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        raise DeployCheckError(f"The front matter of {readme.name} is not valid YAML ({err}).") from None
    return data if isinstance(data, dict) else {}


def check_front_matter(meta: dict, report: Report) -> None:
    report.check("front matter present", None if meta else "README.md has no front matter block (--- ... ---).")
    if not meta:
        return
    report.check("title", None if isinstance(meta.get("title"), str) and meta["title"].strip()
                 else "front matter: `title` is missing.")
    sdk = meta.get("sdk")
    report.check("sdk", None if sdk in SDKS else f"front matter: `sdk` is {sdk!r}; it must be one of {', '.join(SDKS)}.")
    if sdk == "docker":
        port = meta.get("app_port")
        report.check("app_port", None if isinstance(port, int) and 0 < port < 65536
                     else f"front matter: the Docker SDK needs an integer `app_port`, not {port!r}.")
    elif sdk in ("gradio", "streamlit"):
        report.check("app_file", None if meta.get("app_file") else f"front matter: sdk {sdk} needs `app_file`.")
    short = meta.get("short_description")
    if short is not None:
        report.check("short_description", None if isinstance(short, str) and len(short) <= SHORT_DESCRIPTION_MAX
                     else f"front matter: `short_description` has {len(str(short))} characters; "
                          f"the Hub accepts at most {SHORT_DESCRIPTION_MAX}.")
    for key in ("colorFrom", "colorTo"):
        if key in meta:
            report.check(key, None if meta[key] in COLORS
                         else f"front matter: `{key}` is {meta[key]!r}; it must be one of {', '.join(COLORS)}.")
    licence = meta.get("license")
    report.check("license", None if isinstance(licence, str) and licence
                 else "front matter: `license` is missing.")
    if licence == "other":
        report.check("license_name/link", None if meta.get("license_name") and meta.get("license_link")
                     else "front matter: `license: other` needs `license_name` and `license_link`.")
    for key in ("models", "datasets", "tags"):
        if key in meta:
            value = meta[key]
            report.check(key, None if isinstance(value, list) and all(isinstance(v, str) for v in value)
                         else f"front matter: `{key}` must be a list of strings.")


def tracked_files(root: Path) -> list[str]:
    """Paths git would push (tracked plus untracked-but-not-ignored), relative to ``root``."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=root, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):  # not a git checkout: every file counts
        return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                      if p.is_file() and ".git" not in p.relative_to(root).parts)
    return sorted({p for p in out.decode().split("\0") if p})


def lfs_patterns(root: Path) -> list[str]:
    """The ``.gitattributes`` patterns that route files to git-lfs (``filter=lfs``)."""
    path = root / ".gitattributes"
    if not path.is_file():
        return []
    patterns = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def _wildmatch(pattern: str) -> re.Pattern[str]:
    """A gitattributes path pattern as a regex: ``*`` and ``?`` stop at '/', ``**`` does not."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def is_lfs(path: str, patterns: list[str]) -> bool:
    """gitattributes matching: a pattern without '/' matches the file name at any depth."""
    for pattern in patterns:
        if "/" in pattern:
            if _wildmatch(pattern.lstrip("/")).fullmatch(path):
                return True
        elif _wildmatch(pattern).fullmatch(path.rsplit("/", 1)[-1]):
            return True
    return False


def check_large_files(root: Path, report: Report) -> None:
    patterns = lfs_patterns(root)
    big = [(p, (root / p).stat().st_size) for p in tracked_files(root)
           if (root / p).is_file() and (root / p).stat().st_size > MAX_PLAIN_FILE]
    plain = [f"{p} ({size / 1e6:.1f} MB)" for p, size in big if not is_lfs(p, patterns)]
    report.check(f"{len(big)} files over 10 MB are in git-lfs",
                 None if not plain else "Files over 10 MB outside git-lfs (add a filter=lfs rule to "
                                        ".gitattributes or leave them out of the Space): " + ", ".join(plain) + ".")


def check_revision(root: Path, report: Report) -> None:
    """The revision from hub.toml (or MEDMODELS_HUB_REVISION) must be a commit id when one is set."""
    cfg: dict = {}
    hub_toml = root / "hub.toml"
    if hub_toml.is_file():
        with hub_toml.open("rb") as fh:
            cfg = tomllib.load(fh).get("hub", {})
    for where, revision in (("hub.toml", cfg.get("revision")),
                            ("MEDMODELS_HUB_REVISION", os.environ.get("MEDMODELS_HUB_REVISION"))):
        if revision:
            report.check(f"{where} revision is a commit id", None if COMMIT_ID.fullmatch(str(revision))
                         else f"{where}: revision {revision!r} is a branch or tag, not a commit id; pin the "
                              "40-character commit printed by `python -m medmodels push`.")


def check_dockerfile(root: Path, meta: dict, report: Report) -> None:
    dockerfile = root / "Dockerfile"
    if meta.get("sdk") != "docker" or not dockerfile.is_file():
        return
    text = dockerfile.read_text()
    port = meta.get("app_port")
    report.check("Dockerfile serves app_port", None if f"--server.port={port}" in text
                 else f"Dockerfile: the app is not started on app_port {port} (--server.port={port}).")
    lines = [ln.split()[0] for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if "USER" in lines and "WORKDIR" in lines:
        report.check("USER before WORKDIR", None if lines.index("USER") < lines.index("WORKDIR")
                     else "Dockerfile: WORKDIR comes before USER, so the app folder is owned by root.")


def check_licences(root: Path, report: Report) -> None:
    licences = root / "LICENSES.md"
    shipped = sorted(str(p.parent.relative_to(root / "weights"))
                     for p in (root / "weights").glob("*/*/model.safetensors"))
    if not licences.is_file():
        report.check("LICENSES.md", "LICENSES.md is missing: it must say which licence covers each shipped weight.")
        return
    text = licences.read_text()
    missing = [f for f in shipped if f"`{f}`" not in text]
    report.check(f"{len(shipped)} shipped weights named in LICENSES.md",
                 None if not missing else "LICENSES.md does not name these shipped weights: " + ", ".join(missing) + ".")


def run_checks(root: Path = REPO_ROOT) -> Report:
    report = Report()
    meta = front_matter(root / "README.md")
    check_front_matter(meta, report)
    check_large_files(root, report)
    check_revision(root, report)
    check_dockerfile(root, meta, report)
    check_licences(root, report)
    return report


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("deploy-check", help="would the Hub accept this repository as a Space?")
    p.add_argument("--root", default=str(REPO_ROOT), help="repository to check (default: this one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = run_checks(Path(args.root))
    if report.problems:
        raise DeployCheckError(f"{len(report.problems)} of {len(report.checked)} deploy checks failed: "
                               + " ".join(report.problems))
    print(f"deploy-check: all {len(report.checked)} checks passed ({'; '.join(report.checked)}).")
    return 0
