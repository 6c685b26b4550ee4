"""Weights through a real HTTP Hub: hf_hub_download against a local server, not a hand-laid cache.

The server below (127.0.0.1 only) answers the requests huggingface_hub makes for
``hf_hub_download``: ``HEAD``/``GET /<repo>/resolve/<revision>/<path>`` with ``ETag`` and
``X-Repo-Commit``, LFS files as a redirect to a second "CDN" server (another origin, so the
library takes the signed-URL path with ``X-Linked-Etag``/``X-Linked-Size``), 404 with the
Hub's ``X-Error-Code`` for a missing file, and one 503 before the first success. Its write
side (create_repo, preupload, the LFS batch API and a PUT to the "CDN", create_commit's NDJSON)
lets ``push_folder`` publish a folder whose new commit is then pinned and loaded.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` when it is imported,
and this suite's conftest switches the Hub off for every other test; so the resolver runs in
a fresh interpreter with the environment a deployment would have (nothing mocked).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from medmodels.hub import CARD_FILE, CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, model_config
from medmodels.zoo.registry import create_model, get_entry

REPO_ROOT = Path(__file__).resolve().parents[1]
TASK, NAME = "malaria", "shallow_cnn2"
REPO = "medmodels-test/weights"
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
LFS = (WEIGHTS_FILE,)

# Runs in the fresh interpreter: load each (task, name, revision), print one JSON line.
DRIVER = """
import dataclasses, json, sys
import torch
from medmodels.errors import WeightsError
from medmodels.hub import HubSettings, load_trained
out = []
for task, name, revision in json.loads(sys.argv[1]):
    settings = dataclasses.replace(HubSettings.from_env(), revision=revision)
    try:
        model, card = load_trained(task, name, settings)
    except WeightsError as err:
        out.append({"error": str(err)})
        continue
    torch.manual_seed(0)
    size = card.entry.preprocess.input_size
    with torch.no_grad():
        logits = model(torch.rand(2, 3, size, size)).tolist()
    out.append({"source": card.source, "folder": str(card.folder), "card": card.card, "logits": logits})
print(json.dumps(out))
"""


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """One repository at one commit (``main`` points at it), served like the Hub serves it."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.commit = COMMIT  # what ``main`` points at; a push moves it
        self.commits = {COMMIT: dict(files)}  # every commit's files, so old pins keep resolving
        self.uploads: dict[str, bytes] = {}  # LFS objects PUT to the CDN, by sha256
        self.cdn_bytes: dict[str, bytes] = {}  # sha256 -> bytes the CDN sends (tamper here)
        self.fail_once: set[str] = set()  # HEAD paths answered 503 the first time
        self.log: list[tuple[str, str, str, int]] = []  # (server, method, path, status)
        self._servers = [ThreadingHTTPServer(("127.0.0.1", 0), self._handler(name)) for name in ("hub", "cdn")]
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_port}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_port}"

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def _handler(self, server_name: str) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                if self.path.startswith(f"/api/models/{REPO}/tree/"):
                    return self._json(200, [{"type": "file", "path": p, "size": len(d), "oid": git_blob_sha(d)}
                                            for p, d in sorted(hub.files.items())])
                self._answer(body=True)

            def do_POST(self) -> None:
                """The write side huggingface_hub's create_repo/create_commit use (an upload's path)."""
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/api/repos/create":
                    return self._json(200, {"url": f"{hub.url}/{REPO}", "name": REPO})
                if self.path == "/api/validate-yaml":
                    return self._json(200, {"errors": [], "warnings": []})
                if self.path.startswith(f"/api/models/{REPO}/preupload/"):
                    files = json.loads(body)["files"]
                    return self._json(200, {"files": [
                        {"path": f["path"], "uploadMode": "lfs" if f["path"].rsplit("/", 1)[-1] in LFS else "regular",
                         "shouldIgnore": False, "oid": None} for f in files]})
                if self.path == f"/{REPO}.git/info/lfs/objects/batch":
                    objects = json.loads(body)["objects"]
                    return self._json(200, {"transfer": "basic", "objects": [
                        {"oid": o["oid"], "size": o["size"],
                         "actions": {"upload": {"href": f"{hub.cdn_url}/upload/{o['oid']}"}}} for o in objects]})
                if self.path.startswith(f"/api/models/{REPO}/commit/"):
                    return self._json(200, hub._commit([json.loads(line) for line in body.splitlines() if line]))
                return self._send(404, {}, b"not a Hub endpoint")

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if server_name == "cdn" and self.path.startswith("/upload/"):
                    hub.uploads[self.path.rsplit("/", 1)[-1]] = body
                    return self._send(200, {})
                return self._send(404, {})

            def _json(self, status: int, data: object) -> None:
                self._send(status, {"Content-Type": "application/json"}, json.dumps(data).encode())

            def _send(self, status: int, headers: dict[str, str], data: bytes = b"", body: bool = True) -> None:
                hub.log.append((server_name, self.command, self.path, status))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body and data:
                    self.wfile.write(data)

            def _answer(self, body: bool) -> None:
                if server_name == "cdn":
                    data = hub._cdn(self.path.strip("/"))
                    status = 404 if data is None else 200
                    return self._send(status, {}, data or b"", body)
                prefix = f"/{REPO}/resolve/"
                if not self.path.startswith(prefix):
                    return self._send(401, {"X-Error-Code": "RepoNotFound"}, b"Repository not found", body)
                revision, _, path = self.path[len(prefix):].partition("/")
                if revision != "main" and revision not in hub.commits:
                    return self._send(404, {"X-Error-Code": "RevisionNotFound"}, b"Invalid rev id", body)
                commit = hub.commit if revision == "main" else revision
                files = hub.files if commit == hub.commit else hub.commits[commit]
                common = {"X-Repo-Commit": commit}
                if path not in files:
                    return self._send(404, {**common, "X-Error-Code": "EntryNotFound"}, b"Entry not found", body)
                if self.command == "HEAD" and path in hub.fail_once:
                    hub.fail_once.discard(path)
                    return self._send(503, {}, b"Service unavailable", body)
                data = files[path]
                if path.rsplit("/", 1)[-1] in LFS:
                    sha = hashlib.sha256(data).hexdigest()
                    return self._send(302, {
                        **common, "Location": f"{hub.cdn_url}/{sha}", "ETag": f'"{git_blob_sha(sha.encode())}"',
                        "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)),
                    }, b"", body)
                return self._send(200, {**common, "ETag": f'"{git_blob_sha(data)}"'}, data, body)

        return Handler

    def _cdn(self, sha: str) -> bytes | None:
        if sha in self.cdn_bytes:
            return self.cdn_bytes[sha]
        return next((d for files in (self.files, *self.commits.values()) for d in files.values()
                     if hashlib.sha256(d).hexdigest() == sha), None)

    def _commit(self, lines: list[dict]) -> dict:
        """Apply a create_commit NDJSON payload: regular files inline, LFS files by their uploaded oid."""
        import base64

        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                self.files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                self.files[value["path"]] = self.uploads[value["oid"]]
        self.commit = hashlib.sha1(json.dumps(sorted(self.files)).encode() + self.commit.encode()).hexdigest()
        self.commits[self.commit] = dict(self.files)
        return {"commitUrl": f"{self.url}/{REPO}/commit/{self.commit}", "commitOid": self.commit,
                "pullRequestUrl": None}


def model_files(seed: int, name: str = NAME) -> dict[str, bytes]:
    """A model folder's files (weights, config with its sha256, card), keyed by their repo path.

    Written with the hub's own primitives; the run record (metrics.json) is left out, as an
    optional file the server does not have.
    """
    from safetensors.torch import save

    torch.manual_seed(seed)
    entry = get_entry(TASK, name)
    model = create_model(TASK, name)
    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    config = model_config(entry, model, hashlib.sha256(weights).hexdigest(), "float32")
    prefix = f"{TASK}/{name}/"
    return {prefix + WEIGHTS_FILE: weights, prefix + CONFIG_FILE: json.dumps(config).encode(),
            prefix + CARD_FILE: f"# {name} card\n".encode()}


def expected_logits(files: dict[str, bytes]) -> list:
    from safetensors.torch import load

    model = create_model(TASK, NAME)
    state = load(files[f"{TASK}/{NAME}/{WEIGHTS_FILE}"])
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.eval()
    torch.manual_seed(0)
    size = get_entry(TASK, NAME).preprocess.input_size
    with torch.no_grad():
        return model(torch.rand(2, 3, size, size)).tolist()


def hub_env(hf_home: Path, endpoint: str, *, offline: bool = False) -> dict[str, str]:
    """The environment of a deployment that reads HF_ENDPOINT and caches under HF_HOME."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "MEDMODELS_HUB_")) and k not in ("MEDMODELS_OFFLINE", "HUGGINGFACE_HUB_CACHE")}
    env.update(
        HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_XET="1", NO_PROXY="127.0.0.1,localhost",
        MEDMODELS_WEIGHTS_DIR=str(hf_home.parent / "no-local-weights"), MEDMODELS_HUB_REPO=REPO,
        OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT),
    )
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run_resolver(loads: list[tuple[str, str, str]], hf_home: Path, endpoint: str, *, offline: bool = False) -> list:
    """Load each (task, name, revision) in a fresh interpreter set up like a deployment."""
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(loads)], env=hub_env(hf_home, endpoint, offline=offline),
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cached_files(hf_home: Path) -> list[Path]:
    """Every file of the test repository in the Hub cache (blobs and snapshot entries)."""
    repo_dir = hf_home / "hub" / ("models--" + REPO.replace("/", "--"))
    return sorted(p for sub in ("blobs", "snapshots") for p in (repo_dir / sub).rglob("*")
                  if p.is_file() or p.is_symlink())


@pytest.fixture()
def served() -> Iterator[tuple[FakeHub, dict[str, bytes]]]:
    files = model_files(seed=3)
    hub = FakeHub(files)
    yield hub, files
    hub.stop()


def test_download_verify_cache_then_load_offline(tmp_path: Path, served) -> None:
    hub, files = served
    del hub.files[f"{TASK}/{NAME}/{CARD_FILE}"]  # optional file missing: a 404 the resolver accepts
    hub.fail_once.add(f"{TASK}/{NAME}/{CONFIG_FILE}")  # the Hub hiccups once
    hf_home = tmp_path / "hf"
    [loaded] = run_resolver([(TASK, NAME, "main")], hf_home, hub.url)
    assert "error" not in loaded, loaded
    assert loaded["source"] == f"hub:{REPO}@main" and loaded["card"] == ""
    assert torch.allclose(torch.tensor(loaded["logits"]), torch.tensor(expected_logits(files)), atol=1e-6)
    # What went over the wire: one 503 then success, the weights through the CDN redirect, a 404.
    seen = {(server, method, path.rsplit("/", 1)[-1], status) for server, method, path, status in hub.log}
    assert ("hub", "HEAD", CONFIG_FILE, 503) in seen and ("hub", "HEAD", CONFIG_FILE, 200) in seen
    sha = hashlib.sha256(files[f"{TASK}/{NAME}/{WEIGHTS_FILE}"]).hexdigest()
    assert ("hub", "HEAD", WEIGHTS_FILE, 302) in seen and ("cdn", "GET", sha, 200) in seen
    assert ("hub", "HEAD", CARD_FILE, 404) in seen and ("hub", "HEAD", METRICS_FILE, 404) in seen
    # The cache is huggingface_hub's own layout under HF_HOME, pinned by the server's commit.
    repo_dir = hf_home / "hub" / ("models--" + REPO.replace("/", "--"))
    assert (repo_dir / "refs" / "main").read_text() == COMMIT
    assert (repo_dir / "blobs" / sha).is_file()
    assert Path(loaded["folder"]) == repo_dir / "snapshots" / COMMIT / TASK / NAME
    hub.stop()  # from here on nothing answers
    # Offline (HF_HUB_OFFLINE) by branch and by pinned commit, and online with the server gone.
    for offline in (True, False):
        results = run_resolver([(TASK, NAME, "main"), (TASK, NAME, COMMIT)], hf_home, hub.url, offline=offline)
        for result in results:
            assert "error" not in result, result
            assert result["logits"] == loaded["logits"] and result["folder"] == loaded["folder"]


@pytest.mark.parametrize("lie", ["config", "transfer"])
def test_wrong_hash_is_refused_and_nothing_is_cached(tmp_path: Path, served, lie: str) -> None:
    hub, files = served
    key = f"{TASK}/{NAME}/{WEIGHTS_FILE}"
    other = model_files(seed=4)[key]  # a valid safetensors file with other weights
    if lie == "config":  # the repository holds weights that its config.json does not describe
        hub.files[key] = other
    else:  # the CDN sends other bytes than the Hub announced (sha256 ETag and size)
        good = hashlib.sha256(files[key]).hexdigest()
        hub.cdn_bytes[good] = other[:len(files[key])].ljust(len(files[key]), b"\0")
    hf_home = tmp_path / "hf"
    [result] = run_resolver([(TASK, NAME, COMMIT)], hf_home, hub.url)
    assert "logits" not in result
    assert f"downloaded from {REPO}@{COMMIT}" in result["error"]
    assert "sha256" in result["error"] and "removed from the cache and nothing was loaded" in result["error"]
    left = cached_files(hf_home)
    assert not any(p.name in (WEIGHTS_FILE, CONFIG_FILE) for p in left), left
    assert not any(p.parent.name == "blobs" for p in left), left
    # A second try downloads again (nothing stale was kept) and is refused the same way.
    [again] = run_resolver([(TASK, NAME, COMMIT)], hf_home, hub.url)
    assert "removed from the cache" in again["error"]


def test_missing_model_and_unknown_revision(tmp_path: Path, served) -> None:
    hub, _ = served
    hf_home = tmp_path / "hf"
    missing, bad_rev = run_resolver([("malaria", "shallow_cnn3", COMMIT), (TASK, NAME, "v9")], hf_home, hub.url)
    assert f"the Hub repository {REPO}@{COMMIT} does not have it (RemoteEntryNotFoundError)" in missing["error"]
    assert f"{REPO}@v9 does not have it (RevisionNotFoundError)" in bad_rev["error"]


@pytest.mark.slow
def test_unreachable_hub_says_so(tmp_path: Path, served) -> None:
    """huggingface_hub retries a refused connection with backoff (about 23 s) before giving up."""
    hub, _ = served
    hf_home = tmp_path / "hf"
    hub.stop()
    [down] = run_resolver([(TASK, NAME, COMMIT)], hf_home, hub.url)
    assert f"could not be reached at {hub.url} and is not in the local Hub cache" in down["error"]
    assert not cached_files(hf_home)


def test_push_then_pin_the_commit_then_load(tmp_path: Path, served) -> None:
    """push_folder through create_repo/create_commit (LFS for the weights), then the pinned commit loads."""
    hub, _ = served
    pushed = model_files(seed=5, name="shallow_cnn1")
    folder = tmp_path / "weights" / TASK / "shallow_cnn1"
    folder.mkdir(parents=True)
    for path, data in pushed.items():
        (folder / path.rsplit("/", 1)[-1]).write_bytes(data)
    code = "import sys; from pathlib import Path; from medmodels.hub import push_folder; " \
           "print(push_folder(Path(sys.argv[1]), sys.argv[2]))"
    env = {**hub_env(tmp_path / "hf", hub.url), "HF_TOKEN": "hf_test_token_not_real"}
    proc = subprocess.run([sys.executable, "-c", code, str(folder), REPO], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    commit = proc.stdout.strip().splitlines()[-1]
    assert commit == hub.commit and commit != COMMIT
    # One commit: the folder (weights through LFS), the root index of every card, the licences.
    weights = pushed[f"{TASK}/shallow_cnn1/{WEIGHTS_FILE}"]
    assert hub.uploads == {hashlib.sha256(weights).hexdigest(): weights}
    assert all(hub.files[path] == data for path, data in pushed.items())
    index = hub.files["README.md"].decode()
    assert f"({TASK}/{NAME}/README.md)" in index and f"({TASK}/shallow_cnn1/README.md)" in index
    assert "license_link: LICENSES.md" in index and hub.files["LICENSES.md"] == (REPO_ROOT / "LICENSES.md").read_bytes()
    # Pin the new commit: the pushed model loads from it; the old pin still gives the old repository.
    new, old = run_resolver([(TASK, "shallow_cnn1", commit), (TASK, "shallow_cnn1", COMMIT)],
                            tmp_path / "hf", hub.url)
    assert new["source"] == f"hub:{REPO}@{commit}" and new["card"] == "# shallow_cnn1 card\n"
    assert f"{REPO}@{COMMIT} does not have it" in old["error"]


APP_DRIVER = """
import json, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=240).run()
models = next(w for w in at.multiselect if w.label.startswith("Models"))
listed = [m for m in models.options]
models.set_value([sys.argv[2]]).run()
examples = next(w for w in at.multiselect if "example" in w.label)
examples.set_value(examples.options[:1]).run()
print(json.dumps({"listed": listed, "errors": [e.value for e in at.error],
                  "exceptions": [str(e.value) for e in at.exception]}))
"""


@pytest.mark.slow
def test_dashboard_says_when_the_hub_cannot_be_reached(tmp_path: Path, served) -> None:
    """A deployment without weights/, pinned to a commit, with the Hub gone: a message, no traceback."""
    hub, _ = served
    hub.stop()
    env = {**hub_env(tmp_path / "hf", hub.url), "MEDMODELS_HUB_REVISION": COMMIT}
    proc = subprocess.run([sys.executable, "-c", APP_DRIVER, str(REPO_ROOT / "dashboard" / "views" / "explore.py"),
                           NAME], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = json.loads(proc.stdout.strip().splitlines()[-1])
    assert page["listed"] and not page["exceptions"], page
    shown = [re.sub(r"\\(.)", r"\1", e) for e in page["errors"]]  # the page escapes Markdown
    assert any(f"the Hub repository {REPO}@{COMMIT} could not be reached at {hub.url}" in e for e in shown), shown
