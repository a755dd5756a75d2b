"""The docs' links hold: every relative link in the README, CONTRIBUTING.md and
docs/ names a file that exists, and every ``#anchor`` a heading of its target,
slugged as GitHub slugs headings. External links are not fetched. The README
stays a front door (at most README_MAX_LINES lines); the rest lives in docs/."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
# [text](target "title") and ![alt](target); the text may hold one level of brackets and line breaks.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s()]+)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")  # a closing run of # follows a space
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_files() -> list[Path]:
    return [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").rglob("*.md"))]


def _outside_fences(text: str) -> list[str]:
    """The page's lines, those of fenced code blocks (and their fences) blanked."""
    lines, fence = [], None
    for line in text.split("\n"):
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)
            lines.append("" if m else line)
            continue
        if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip().strip(fence[0]):
            fence = None
        lines.append("")
    return lines


def _prose(text: str) -> str:
    """The text without its code: fenced blocks blanked (line numbers kept), code spans neutral."""
    return CODE_SPAN.sub(lambda m: "code" + "\n" * m.group(0).count("\n"), "\n".join(_outside_fences(text)))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (links and images by their text),
    lowercased, punctuation dropped but for hyphens and underscores, spaces → hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _headings(path: Path) -> list[str]:
    """The headings' text as written (code spans included), outside fenced code."""
    return [h.group(2) for line in _outside_fences(path.read_text()) if (h := HEADING.match(line))]


def page_anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set(HTML_ANCHOR.findall(path.read_text()))
    for heading in _headings(path):
        base = slug(heading)
        n = seen.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every link in a page's prose."""
    text = _prose(path.read_text())
    found = [(text.count("\n", 0, m.start()) + 1, m.group(1).strip("<>")) for m in LINK.finditer(text)]
    found += [(text.count("\n", 0, m.start()) + 1, m.group(1).strip("<>")) for m in REFERENCE.finditer(text)]
    return sorted(found)


def broken_links(path: Path) -> list[str]:
    """What is wrong with each relative link of a page, one line each, naming the page, the link and what is missing."""
    problems = []
    name = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    for line, target in links(path):
        if SCHEME.match(target) or target.startswith("//"):
            continue  # external: not fetched
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        shown = dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest
        if not dest.exists():
            problems.append(f"{name}:{line}: link ({target}): no file {shown}")
            continue
        if not anchor:
            continue
        if dest.is_dir() or dest.suffix.lower() != ".md":
            problems.append(f"{name}:{line}: link ({target}): #{anchor} points into {shown}, which has no headings")
            continue
        have = page_anchors(dest)
        if anchor not in have:
            problems.append(f"{name}:{line}: link ({target}): no heading #{anchor} in {shown} "
                            f"(its anchors: {', '.join(sorted(have))})")
    return problems


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_links_and_anchors_hold(path):
    problems = broken_links(path)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_readme_stays_a_front_door():
    n = len((REPO / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, (
        f"README.md is {n} lines (at most {README_MAX_LINES}): move the detail into docs/ and link to it")


def test_every_docs_page_is_reachable_from_the_readme_or_contributing():
    reached, queue = set(), [REPO / "README.md", REPO / "CONTRIBUTING.md"]
    while queue:
        page = queue.pop()
        if page in reached:
            continue
        reached.add(page)
        for _, target in links(page):
            file_part = target.partition("#")[0]
            if file_part and not SCHEME.match(target):
                dest = (page.parent / file_part).resolve()
                if dest.suffix == ".md" and dest.is_file():
                    queue.append(dest)
    orphans = [str(p.relative_to(REPO)) for p in doc_files() if p.resolve() not in reached]
    assert not orphans, f"pages no link leads to from README.md or CONTRIBUTING.md: {orphans}"


@pytest.mark.parametrize("heading, expected", [
    ("Poly's native API", "polys-native-api"),
    ("Stream flushing (`stream_interval_ms`)", "stream-flushing-stream_interval_ms"),
    ("Function tools and formats on /v1/responses", "function-tools-and-formats-on-v1responses"),
    ("Assistants API (v2)", "assistants-api-v2"),
    ("Scaling down, redeploying, shutting down", "scaling-down-redeploying-shutting-down"),
    ("The two ways in: the playground and `poly-ray chat`", "the-two-ways-in-the-playground-and-poly-ray-chat"),
    ("A [linked](x.md) heading", "a-linked-heading"),
    ("Top-n-σ  sampling", "top-n-σ--sampling"),
])
def test_slugs_follow_github(heading, expected):
    assert slug(heading) == expected


def test_headings_are_read_as_written(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# C#\n\n## Closed ##\n\n    # indented code\n~~~\n# fenced\n~~~\n### `code` in it\n")
    assert _headings(page) == ["C#", "Closed", "`code` in it"]
    assert page_anchors(page) == {"c", "closed", "code-in-it"}


def test_the_checker_names_the_page_the_link_and_what_is_missing(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n\n## Same\n\n## Same\n\n```\n## Not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md#same-1) [ok](other.md#same) [ok](#page) [web](https://example.invalid/x#y)\n"
        "`[in code](nowhere.md)`\n\n"
        "```\n[in a block](nowhere.md)\n```\n\n"
        "[gone](missing.md) [a\nbroken anchor](other.md#same-2) [fenced](other.md#not-a-heading) [self](#nope)\n"
    )
    problems = broken_links(page)
    assert len(problems) == 4, problems
    said = "\n".join(problems)
    assert f"page.md:10: link (missing.md): no file {tmp_path / 'missing.md'}" in said
    assert "page.md:10: link (other.md#same-2): no heading #same-2 in" in said
    assert "(its anchors: same, same-1, title)" in said
    assert "page.md:11: link (other.md#not-a-heading): no heading #not-a-heading" in said
    assert "page.md:11: link (#nope): no heading #nope in" in said
