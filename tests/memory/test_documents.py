"""Extraction and chunking: pure logic over real PDF and DOCX files (no model)."""

import pytest
from documents import docx, pdf

from poly_ray.errors import Unprocessable, UnsupportedMedia
from poly_ray.memory import extract
from poly_ray.memory.chunking import Chunker


def words(text: str) -> int:
    """A stand-in tokenizer for chunking tests: one token per word."""
    return len(text.split())


def test_pdf_pages_keep_their_text_and_numbers():
    data = pdf(["The first page talks about apples.", "The second page talks about pears."])
    doc = extract.extract(data, extract.media_type("application/pdf", data))
    assert "apples" in doc.text and "pears" in doc.text
    assert len(doc.pages) == 2
    assert doc.page_at(doc.text.index("apples")) == 1
    assert doc.page_at(doc.text.index("pears")) == 2


def test_docx_paragraphs_and_tables_in_document_order():
    data = docx(["Before the table."], [["Name", "Colour"], ["apple", "red"]], after=["After the table."])
    doc = extract.extract(data, extract.DOCX)
    assert doc.text.index("Before") < doc.text.index("apple | red") < doc.text.index("After")
    assert "Name | Colour" in doc.text


def test_type_from_header_name_or_bytes():
    assert extract.media_type("text/plain; charset=utf-8", b"hi") == extract.TEXT
    assert extract.media_type(None, b"%PDF-1.7 ...") == extract.PDF
    assert extract.media_type("application/octet-stream", b"x", "report.docx") == extract.DOCX
    with pytest.raises(UnsupportedMedia, match="application/pdf"):
        extract.media_type("image/png", b"\x89PNG")
    with pytest.raises(UnsupportedMedia):
        extract.media_type(None, b"\x00\x01")


def test_bad_documents_say_what_is_wrong():
    with pytest.raises(Unprocessable, match="encrypted"):
        extract.extract(pdf(["secret"], password="pw"), extract.PDF)
    with pytest.raises(Unprocessable, match="not a readable PDF"):
        extract.extract(b"%PDF-1.4\nthis is not really a pdf", extract.PDF)
    with pytest.raises(Unprocessable, match="DOCX"):
        extract.extract(b"PK\x03\x04 broken zip", extract.DOCX)
    with pytest.raises(Unprocessable, match="empty"):
        extract.extract(b"   \n ", extract.TEXT)
    with pytest.raises(Unprocessable, match="UTF-8"):
        extract.extract(b"caf\xe9", extract.TEXT)


def test_chunks_fit_and_cover_the_text_in_order():
    text = "\n\n".join(f"Paragraph {i}. " + " ".join(f"w{i}_{j}" for j in range(30)) for i in range(10))
    chunks = Chunker(words, max_tokens=50)(text)
    assert all(words(c.text) <= 50 for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    # Every word is in some chunk, and spans point at the text they came from.
    assert set(text.split()) == {w for c in chunks for w in c.text.split()}
    for c in chunks:
        assert text[c.start : c.end].split() == c.text.split()
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)


def test_separators_are_tried_in_order():
    text = "one two three. four five six.\n\nseven eight nine. ten eleven twelve."
    chunks = Chunker(words, max_tokens=6, separators=("\n\n", ". ", " "))(text)
    assert [c.text for c in chunks] == ["one two three. four five six.", "seven eight nine. ten eleven twelve."]
    chunks = Chunker(words, max_tokens=3, separators=("\n\n", ". ", " "))(text)
    assert chunks[0].text == "one two three."


def test_a_piece_without_separators_is_cut_at_token_boundaries():
    chars = lambda s: len(s)  # noqa: E731: one token per character
    chunks = Chunker(chars, max_tokens=10, separators=(" ",))("abcdefghijklmnopqrstuvwxyz")
    assert [c.text for c in chunks] == ["abcdefghij", "klmnopqrst", "uvwxyz"]


def test_overlap_repeats_the_end_of_the_previous_chunk():
    text = " ".join(f"w{i}" for i in range(40))
    chunks = Chunker(words, max_tokens=10, separators=(" ",), overlap=3)(text)
    for a, b in zip(chunks, chunks[1:]):
        assert a.text.split()[-3:] == b.text.split()[:3]
    assert chunks[-1].text.split()[-1] == "w39"


def test_filters_clean_the_stored_text_only():
    text = "Title\t----\n\nBody text\nwith lines."
    chunker = Chunker(words, max_tokens=100, pre_filter=(r"[\r\t]", r"[\ \n._|-]{2,}"), post_filter=("\n",))
    [chunk] = chunker(text)
    assert chunk.text == "Title Body text with lines."
    assert (chunk.start, chunk.end) == (0, len(text))


def test_chunks_stay_within_their_section():
    text = "a b c\n\nd e f"
    chunks = Chunker(words, max_tokens=100)(text, sections=((0, 5), (7, 12)))
    assert [(c.text, c.start, c.end) for c in chunks] == [("a b c", 0, 5), ("d e f", 7, 12)]


def test_a_long_text_without_separators_is_cut_in_linear_time():
    """The cut is looked for near the start, not over all the rest of the text."""

    def cost(n: int) -> int:
        read = 0

        def chars(text: str) -> int:
            nonlocal read
            read += len(text)
            return len(text)

        Chunker(chars, max_tokens=50, separators=(" ",))("x" * n)
        return read

    assert cost(200_000) < 2.2 * cost(100_000)


def test_a_docx_with_broken_xml_is_a_422():
    import io
    import zipfile

    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as z:
        z.writestr("[Content_Types].xml", "<Types><<")
    with pytest.raises(Unprocessable, match="not a readable DOCX"):
        extract.extract(data.getvalue(), extract.DOCX)
