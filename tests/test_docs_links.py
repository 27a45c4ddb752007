"""Citations stay inside the repository: no file of src/, README.md or docs/ points at a file outside it (the old
``../shared/reference/theory.md``), every relative Markdown link of README.md and docs/ resolves to a file (and a
heading, where it names one), every ``docs/*.md`` and every repository path (``src/...py``, ``tests/...py``) that
src/, README.md, docs/, tests/ or benchmarks/ cite exists, and every "docs/theory.md section N" names a section that
docs/theory.md has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".rst", ".cfg", ".ini", ".yml", ".yaml", ".html", ".css", ".js"}
#: text that only a path outside the repository (or the machine it was written on) contains
OUTSIDE = re.compile(r"shared/reference|\.\./shared/|/work/|/tmp/prompts")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
MYST_LABEL = re.compile(r"^\(([\w\-.:]+)\)=\s*$", re.M)
HTML_ID = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
#: "docs/theory.md section 3", "theory.md, section 6.4", "docs/theory.md sections 2, 5 and 7", "docs/theory.md 2.5"
THEORY_CITATION = re.compile(
    r"theory\.md`?,?\s+(?:sections?\s+)?(\d+(?:\.\d+)?(?:(?:\s*,\s*|\s*-\s*|\s+and\s+)\d+(?:\.\d+)?)*)"
)
DOC_PATH = re.compile(r"\bdocs/([\w\-]+\.md)\b")


def _text_files(*roots: Path) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        if root.is_file():
            files.append(root)
            continue
        files += [
            p
            for p in sorted(root.rglob("*"))
            if p.is_file()
            and p.suffix in TEXT_SUFFIXES
            and not any(part.startswith(".") or part.endswith(".egg-info") or part in {"_build", "__pycache__"}
                        for part in p.relative_to(ROOT).parts)
        ]
    return files


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)]


def _prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code (links there are code, not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(title: str) -> str:
    """The heading anchor GitHub and MyST (``myst_heading_anchors``) both generate for plain-text headings."""
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link in a heading anchors on its text
    title = title.strip().lower().replace(" ", "-")
    return re.sub(r"[^\w\-]", "", title)


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    found = {slug(m.group(2)) for m in HEADING.finditer(text)}
    found |= set(MYST_LABEL.findall(text)) | set(HTML_ID.findall(text))
    return found


def theory_sections() -> set[str]:
    """Section numbers of docs/theory.md: "## 3. Title" gives "3", "### 3.2 Title" gives "3.2"."""
    text = FENCE.sub("", (DOCS / "theory.md").read_text(encoding="utf-8"))
    return {m.group(1) for m in re.finditer(r"^#{2,3}\s+(\d+(?:\.\d+)?)\.?\s", text, re.M)}


def test_nothing_cites_a_file_outside_the_repository():
    bad = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
        for p in _text_files(ROOT / "src", ROOT / "README.md", DOCS)
        for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not bad, "citations of files outside the repository:\n" + "\n".join(bad)


def test_relative_markdown_links_resolve():
    bad = []
    for md in _markdown_files():
        for m in LINK.finditer(_prose(md.read_text(encoding="utf-8"))):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.\-]*:", target, re.I):  # http:, https:, mailto:, ...
                continue
            path_part, _, anchor = target.partition("#")
            dest = (md.parent / path_part).resolve() if path_part else md
            where = f"{md.relative_to(ROOT)}: ({target})"
            if ROOT not in dest.parents and dest != ROOT:
                bad.append(f"{where} leaves the repository")
            elif not dest.exists():
                bad.append(f"{where} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{where}: no heading with anchor #{anchor}")
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_cited_docs_pages_exist():
    bad = sorted(
        {
            f"{p.relative_to(ROOT)}: docs/{name}"
            for p in _text_files(ROOT / "src", ROOT / "README.md", DOCS, ROOT / "tests", ROOT / "benchmarks")
            for name in DOC_PATH.findall(p.read_text(encoding="utf-8", errors="replace"))
            if not (DOCS / name).exists()
        }
    )
    assert not bad, "citations of docs pages that do not exist:\n" + "\n".join(bad)


def test_theory_section_citations_name_existing_sections():
    sections = theory_sections()
    assert {"1", "2", "3", "3.2", "5.3", "6", "7", "8", "11"} <= sections  # the parser reads the headings
    bad = []
    for p in _text_files(ROOT / "src", ROOT / "README.md", DOCS, ROOT / "tests", ROOT / "benchmarks"):
        text = p.read_text(encoding="utf-8", errors="replace")
        for m in THEORY_CITATION.finditer(text):
            numbers = re.findall(r"\d+(?:\.\d+)?", m.group(1))
            if "-" in m.group(1) and len(numbers) == 2 and "." not in m.group(1):  # a range "2-5"
                numbers = [str(n) for n in range(int(numbers[0]), int(numbers[1]) + 1)]
            bad += [f"{p.relative_to(ROOT)}: {m.group(0)!r} (no section {n})" for n in numbers if n not in sections]
    assert not bad, "citations of sections docs/theory.md does not have:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("3. The gradient explosion rate", "3-the-gradient-explosion-rate"),
        ("5.1 The Jacobian of the Gram map (ours)", "51-the-jacobian-of-the-gram-map-ours"),
        ("6.4 The backward rate and lambda_W", "64-the-backward-rate-and-lambda_w"),
        ("12. The paper's experiments", "12-the-papers-experiments"),
    ],
)
def test_slug_is_the_github_and_myst_anchor(title, expected):
    # written out by hand from GitHub's rule (lower case, punctuation dropped, spaces to hyphens)
    assert slug(title) == expected


#: a path of this repository cited in prose or a docstring: ``src/bnmft/meanfield/moments.py``, ``tests/...``
REPO_PATH = re.compile(r"(?<![\w/.\-])((?:src|tests|benchmarks|scripts|docs)/[\w\-/]+\.(?:py|md|toml|png|sh))\b")


def test_cited_repository_paths_exist():
    bad = sorted(
        {
            f"{p.relative_to(ROOT)}: {path}"
            for p in _text_files(ROOT / "src", ROOT / "README.md", DOCS, ROOT / "tests", ROOT / "benchmarks")
            for path in REPO_PATH.findall(p.read_text(encoding="utf-8", errors="replace"))
            if not (ROOT / path).exists()
        }
    )
    assert not bad, "citations of repository files that do not exist:\n" + "\n".join(bad)
