"""Text out of uploaded documents: plain text, PDF (pypdf) and DOCX (python-docx).

A document becomes one string plus the character span of each PDF page, so
that chunks can say which page they came from. Anything that cannot be read
is an ``Unprocessable`` (422) that says why; an unknown type is an
``UnsupportedMedia`` (415) that lists the accepted ones.
"""

from __future__ import annotations

import bisect
import io
from dataclasses import dataclass

from poly_ray.errors import Unprocessable, UnsupportedMedia

from . import isolated

TEXT = "text/plain"
MARKDOWN = "text/markdown"
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
ACCEPTED = (TEXT, MARKDOWN, PDF, DOCX)
_BY_SUFFIX = {".txt": TEXT, ".md": MARKDOWN, ".pdf": PDF, ".docx": DOCX}
_PAGE_BREAK = "\n\n"
# Set in the child process that parses (memory/isolated.py); None in-process.
MAX_PAGES: int | None = None
MAX_CHARACTERS: int | None = None


@dataclass(frozen=True)
class Document:
    text: str
    content_type: str
    # (start, end) of each page's text in ``text``; empty when the format has no pages.
    pages: tuple[tuple[int, int], ...] = ()

    def page_at(self, offset: int) -> int | None:
        """The 1-based page where character ``offset`` lies (None: no pages)."""
        if not self.pages:
            return None
        return max(1, bisect.bisect_right([start for start, _ in self.pages], offset))


def media_type(content_type: str | None, data: bytes, filename: str | None = None) -> str:
    """The document's type from its Content-Type, else its name, else its first bytes."""
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared in ACCEPTED:
        return declared
    if declared and declared not in ("application/octet-stream", "binary/octet-stream"):
        raise UnsupportedMedia(f"unsupported document type '{declared}'; accepted: {', '.join(ACCEPTED)}")
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if filename and "." in filename else ""
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    if data.startswith(b"%PDF-"):
        return PDF
    if data.startswith(b"PK\x03\x04"):
        return DOCX
    raise UnsupportedMedia(
        f"cannot tell the type of {filename or 'the document'}: send a Content-Type, one of {', '.join(ACCEPTED)}"
    )


def extract(data: bytes, content_type: str) -> Document:
    """The document's text: plain text here, PDF and DOCX in a child process (memory/isolated.py)."""
    if content_type in (PDF, DOCX):
        if content_type == DOCX:
            isolated.check_zip(data)
        answer = isolated.run(__name__ if __name__ != "__main__" else "poly_ray.memory.extract", [content_type], data)
        doc = Document(answer["text"], content_type, tuple(tuple(p) for p in answer["pages"]))
    else:
        doc = parse(data, content_type)
    if not doc.text.strip():
        hint = " (a scanned PDF has no text layer; run OCR first)" if content_type == PDF else ""
        raise Unprocessable(f"the document is empty: no text found{hint}")
    return doc


def parse(data: bytes, content_type: str) -> Document:
    """The document's text, parsed in this process."""
    if content_type in (TEXT, MARKDOWN):
        return Document(_decode(data), content_type)
    if content_type == PDF:
        return _pdf(data)
    if content_type == DOCX:
        return Document(_docx(data), DOCX)
    raise UnsupportedMedia(f"unsupported document type '{content_type}'; accepted: {', '.join(ACCEPTED)}")


def _count(chars: int) -> None:
    if MAX_CHARACTERS is not None and chars > MAX_CHARACTERS:
        raise Unprocessable(f"the document holds more than {MAX_CHARACTERS} characters of text")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise Unprocessable(f"the text is not valid UTF-8 (byte {e.start})") from None


def _pdf(data: bytes) -> Document:
    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unprocessable("the PDF is encrypted (password-protected); send it decrypted")
        if MAX_PAGES is not None and len(reader.pages) > MAX_PAGES:
            raise Unprocessable(f"the PDF has {len(reader.pages)} pages; at most {MAX_PAGES} are read")
        texts, chars = [], 0
        for page in reader.pages:
            texts.append(page.extract_text() or "")
            chars += len(texts[-1])
            _count(chars)
    except (Unprocessable, MemoryError):
        raise
    except Exception as e:  # pypdf raises many kinds on a broken file
        raise Unprocessable(f"not a readable PDF: {e}") from None
    pages, parts, offset = [], [], 0
    for text in texts:
        pages.append((offset, offset + len(text)))
        parts.append(text)
        offset += len(text) + len(_PAGE_BREAK)
    return Document(_PAGE_BREAK.join(parts), PDF, tuple(pages))


def _docx(data: bytes) -> str:
    """Paragraphs and tables in document order; a table row is its cells joined by " | "."""
    import docx
    from docx.table import Table

    blocks, chars = [], 0
    try:
        for block in docx.Document(io.BytesIO(data)).iter_inner_content():
            if isinstance(block, Table):
                rows = (" | ".join(cell.text.strip() for cell in row.cells) for row in block.rows)
                blocks.append("\n".join(rows))
            elif block.text.strip():
                blocks.append(block.text)
            else:
                continue
            chars += len(blocks[-1])
            _count(chars)
    except (Unprocessable, MemoryError):
        raise
    except Exception as e:  # a bad zip, bad XML, a missing part: python-docx raises many kinds
        raise Unprocessable(f"not a readable DOCX document: {e}") from None
    return "\n\n".join(blocks)


def _in_child(data: bytes, content_type: str, max_pages: int, max_characters: int) -> dict:
    global MAX_PAGES, MAX_CHARACTERS
    MAX_PAGES, MAX_CHARACTERS = max_pages, max_characters
    doc = parse(data, content_type)
    return {"text": doc.text, "pages": doc.pages}


if __name__ == "__main__":
    # The parsers are imported before the memory limit is set: it bounds the parsing.
    import docx  # noqa: F401
    import pypdf  # noqa: F401

    isolated.child(_in_child)
