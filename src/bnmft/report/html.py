"""The main job's report as one self-contained HTML page (images embedded), from the same text as ``report.md``.

``report.md`` is written in a small subset of Markdown - headings, paragraphs, pipe tables, images, bullet lists,
block quotes, ``code``, **bold** and links - which :func:`markdown_to_html` turns into HTML; every heading gets the
``id`` GitHub gives it (:func:`~bnmft.report.section.anchor`), so the report's in-page links work in both, and every
image is embedded as a ``data:`` URI, so the page can be mailed or archived alone. The appendix is a collapsible
``<details>`` block (its ``id`` the anchor of its heading), and a metadata table (versions, seeds, device, wall time
per section) closes the page. No third-party package is needed.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from .section import anchor

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1, h2, h3 { color: #123; } table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: right; } th { background: #eef; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
blockquote { border-left: 4px solid #58a; margin: 1em 0; padding: 0.3em 1em; background: #f4f8fc; }
code { background: #f2f2f2; padding: 0 0.2em; }
summary { cursor: pointer; } summary h2 { display: inline; }
"""
#: a link to a collapsed block (the appendix) opens it
SCRIPT = """
function openTarget() {
  const target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (target && target.tagName === "DETAILS") target.open = true;
}
window.addEventListener("hashchange", openTarget);
openTarget();
"""


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _image(alt: str, src: str, folder: Path) -> str:
    path = folder / src
    if path.suffix.lower() == ".png" and path.exists():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
    return f'<img alt="{html.escape(alt)}" src="{html.escape(src)}">'  # beside the page in the folder


def markdown_to_html(text: str, folder: Path, ids: dict[str, int] | None = None) -> str:
    """The body HTML of ``text`` (this module's Markdown subset); images are read from ``folder``. ``ids`` counts
    the heading anchors used so far (a repeated one gets ``-1``, ``-2``, ... as on GitHub); pass the same dict to
    render several parts of one page."""
    ids = {} if ids is None else ids
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            title = line[level:].strip()
            out.append(f'<h{level} id="{html.escape(_unique(anchor(title), ids))}">{_inline(title)}</h{level}>')
            i += 1
        elif m := re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", line.strip()):
            out.append(f"<p>{_image(m.group(1), m.group(2), folder)}</p>")
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r"-+", c) for c in cells):
                    rows.append(cells)
                i += 1
            head, *body = rows
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body]
            out.append("</table>")
        elif line.startswith(("* ", "- ")):
            items = []
            while i < len(lines) and lines[i].startswith(("* ", "- ")):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        elif line.startswith(">"):
            quote = []
            while i < len(lines) and lines[i].startswith(">"):
                quote.append(lines[i].lstrip(">").strip())
                i += 1
            out.append(f"<blockquote>{_inline(' '.join(quote))}</blockquote>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "* ", "- ", ">", "![")):
                para.append(lines[i])
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


def _unique(name: str, ids: dict[str, int]) -> str:
    """``name``, or ``name-1``, ``name-2``, ... where it was used before (GitHub's rule)."""
    count = ids.get(name, 0)
    ids[name] = count + 1
    return name if count == 0 else f"{name}-{count}"


def _collapsible(markdown: str, folder: Path, ids: dict[str, int]) -> str:
    """``markdown`` (a ``## heading`` and its content) as a closed ``<details>`` block, the heading its summary
    (without a heading: "Appendix")."""
    head, _, body = markdown.strip().partition("\n")
    level = len(head) - len(head.lstrip("#"))
    if level == 0:
        head, body, level = "## Appendix", markdown, 2
    title = head[level:].strip()
    return (
        f'<details id="{html.escape(_unique(anchor(title), ids))}"><summary><h{level}>{_inline(title)}</h{level}>'
        f"</summary>\n{markdown_to_html(body, folder, ids)}\n</details>"
    )


def write_html_report(
    markdown: str, folder: Path, metadata: dict[str, str], title: str = "bnmft report", appendix: str = ""
) -> Path:
    """Write ``folder/report.html``: the report's text, images embedded, then ``appendix`` (Markdown starting with
    a heading; collapsed, in a ``<details>`` block) and the run's metadata."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in metadata.items())
    ids: dict[str, int] = {}
    body = markdown_to_html(markdown, folder, ids)
    collapsed = _collapsible(appendix, folder, ids) + "\n" if appendix.strip() else ""
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n{body}\n{collapsed}"
        f'<h2 id="{_unique("this-run", ids)}">This run</h2><table>{rows}</table>\n<script>{SCRIPT}</script>\n'
        "</body></html>\n"
    )
    path = folder / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page)
    tmp.replace(path)
    return path


__all__ = ["markdown_to_html", "write_html_report"]
