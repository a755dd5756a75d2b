"""Real PDF and DOCX files for the tests, written with fpdf2 and python-docx."""

from __future__ import annotations

import io


def pdf(pages: list[str], *, password: str | None = None) -> bytes:
    from fpdf import FPDF

    doc = FPDF()
    doc.set_font("Helvetica", size=11)
    for text in pages:
        doc.add_page()
        doc.multi_cell(0, 6, text)
    data = bytes(doc.output())
    if password is None:
        return data
    import pypdf

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=password, algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx(paragraphs: list[str], table: list[list[str]] | None = None, after: list[str] = ()) -> bytes:
    """Paragraphs, then a table, then more paragraphs (to check document order)."""
    import docx as python_docx

    doc = python_docx.Document()
    for p in paragraphs:
        doc.add_paragraph(p)
    if table:
        t = doc.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                t.cell(r, c).text = value
    for p in after:
        doc.add_paragraph(p)
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()
