"""PDF and DOCX extraction in a child process with a memory limit and a timeout.

An upload is hostile input for the parsers: python-docx inflates every zip member
whole, and pypdf caps each stream but not a document's total or its pages. So a
DOCX's zip directory is checked first (members, inflated size, ratio), and both
formats are parsed in a child (``python -m poly_ray.memory.extract``), which caps
its own address space, pages and characters; at most ``AT_ONCE`` run together. A child
that runs out of memory or time is a 422 and takes nothing else down.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import zipfile

from poly_ray.errors import PolyError, Unprocessable, UnsupportedMedia

MEMORY_BYTES = 1 << 30  # the child's address space
TIMEOUT_S = 60.0
AT_ONCE = 2  # extractions running together, per memory actor
MAX_PAGES = 2000
MAX_CHARACTERS = 20_000_000
MAX_ZIP_MEMBERS = 2000
MAX_INFLATED_BYTES = 256 << 20  # a DOCX's members, inflated, in all
MAX_RATIO = 200  # inflated / compressed, for a member over 1 MiB

_slots = threading.BoundedSemaphore(AT_ONCE)
_ERRORS = {cls.status: cls for cls in (Unprocessable, UnsupportedMedia)}


def check_zip(data: bytes) -> None:
    """Unprocessable unless a DOCX's zip directory promises a bounded inflation."""
    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise Unprocessable(f"not a readable DOCX document: {e}") from None
    if len(members) > MAX_ZIP_MEMBERS:
        raise Unprocessable(f"the DOCX holds {len(members)} files; at most {MAX_ZIP_MEMBERS} are read")
    total = sum(m.file_size for m in members)
    if total > MAX_INFLATED_BYTES:
        raise Unprocessable(f"the DOCX inflates to {total} bytes; at most {MAX_INFLATED_BYTES} are read")
    for m in members:
        if m.file_size > 1 << 20 and m.file_size > MAX_RATIO * max(m.compress_size, 1):
            raise Unprocessable(f"the DOCX member {m.filename!r} inflates {m.file_size // max(m.compress_size, 1)} "
                                f"times (at most {MAX_RATIO}): a decompression bomb")


def run(module: str, args: list[str], data: bytes) -> dict:
    """``python -m module *args`` fed ``data``, under the limits; its JSON answer.
    Blocking: call it off the event loop."""
    with _slots:
        try:
            limits = [str(n) for n in (MEMORY_BYTES, MAX_PAGES, MAX_CHARACTERS)]
            done = subprocess.run([sys.executable, "-m", module, *args, *limits], input=data,
                                  capture_output=True, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise Unprocessable(f"reading the document took longer than {TIMEOUT_S:.0f} s") from None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        # Killed (out of memory past the limit's reach) or crashed: no answer.
        raise Unprocessable(f"the document could not be read within {MEMORY_BYTES >> 20} MiB of memory") from None
    if "error" in answer:
        raise _ERRORS.get(answer["error"]["status"], Unprocessable)(answer["error"]["message"])
    return answer


def child(parse) -> None:
    """The child's side of ``run``: ``parse(data, arg, max_pages, max_characters)`` → a JSON-able
    answer, under the address-space limit (set after the imports, so it covers the parsing)."""
    import resource

    arg, memory, max_pages, max_characters = sys.argv[1], *map(int, sys.argv[2:5])
    data = sys.stdin.buffer.read()
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    try:
        answer = parse(data, arg, max_pages, max_characters)
    except PolyError as e:
        answer = {"error": {"status": e.status, "message": e.message}}
    except MemoryError:
        answer = {"error": {"status": 422, "message": f"the document needs more than {memory >> 20} MiB of memory to read"}}
    sys.stdout.write(json.dumps(answer))
