"""Sphinx configuration of the documentation site: the guide (Markdown pages here, README sections included by
heading, read by MyST) and the API reference (autodoc + napoleon: the docstrings are Google-style with reST roles).

Math (``$...$``, ``$$...$$``) renders offline with Debian's KaTeX (``libjs-katex``, installed by scripts/setup;
``BNMFT_KATEX_DIR`` points elsewhere), copied into ``_static/katex``: the built site loads nothing from the network.
Build: ``scripts/docs`` (warnings are errors); tested by ``tests/test_docs.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from docutils import nodes
from sphinx.errors import ConfigError
from sphinx.locale import _
from sphinx.util.math import get_node_equation_number

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # document the checkout, installed or not

import bnmft  # noqa: E402

project = "bnmft"
author = "the bnmft authors"
copyright = "the bnmft authors, Apache-2.0"
release = version = bnmft.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]

# MyST: $...$ and $$...$$ math, anchors on headings (README's "#section" links), README sections included under a
# page's own heading (so their "###" may follow a "#": not an error).
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

# autodoc + napoleon: signatures with their type hints, members in source order, Google-style sections.
autodoc_default_options = {"members": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True  # show "phi='relu'"-style defaults as written, not as evaluated objects
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = f"bnmft {release}"
html_static_path = ["_static"]
html_theme_options = {
    "description": "the mean field theory of batch normalization, as software",
    "fixed_sidebar": True,
    "show_relbars": True,
}
html_show_sphinx = False  # no links off the site in the footer
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
html_math_renderer = "katex_local"

KATEX = Path(os.environ.get("BNMFT_KATEX_DIR", "/usr/share/javascript/katex"))
KATEX_FILES = ["katex.min.js", "katex.min.css", "contrib/auto-render.js"]


def _visit_math(self, node: nodes.math) -> None:
    self.body.append(self.starttag(node, "span", "", CLASS="math notranslate"))
    self.body.append(r"\(" + self.encode(node.astext()) + r"\)</span>")
    raise nodes.SkipNode


def _visit_math_block(self, node: nodes.math_block) -> None:
    self.body.append(self.starttag(node, "div", CLASS="math notranslate"))
    if node["number"]:
        self.body.append(f'<span class="eqno">({get_node_equation_number(self, node)})')
        self.add_permalink_ref(node, _("Link to this equation"))
        self.body.append("</span>")
    # several equations (blank-line separated) are stacked, one per line, as Sphinx's MathJax renderer does
    parts = [self.encode(part) for part in node.astext().split("\n\n") if part.strip()]
    latex = parts[0] if len(parts) == 1 else r"\begin{gathered}" + r"\\".join(parts) + r"\end{gathered}"
    self.body.append(r"\[" + latex + r"\]</div>" + "\n")
    raise nodes.SkipNode


_ARG_WITH_STARS = re.compile(r"^(\s+[\w\s,*]*?)(?<!\\)\*\*(\w+)([\w\s,]*:(?:\s|$))")


def _escape_star_args(app, what, name, obj, options, lines: list[str]) -> None:
    """``derivative, kinks, **params: ...`` in an Args section: napoleon escapes ``**params`` only when it stands
    alone, so escape it here (before napoleon runs) rather than let reST read ``**`` as the start of bold text."""
    lines[:] = [_ARG_WITH_STARS.sub(r"\1\\*\\*\2\3", line) for line in lines]


def _copy_katex(app, exception) -> None:
    """Copy KaTeX (script, style, auto-render, fonts) into the site: no CDN, works from file:// and offline."""
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "katex"
    for name in KATEX_FILES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(KATEX / name, target / name)
    (target / "fonts").mkdir(exist_ok=True)
    for font in (KATEX / "fonts").resolve().glob("*.woff*"):
        shutil.copyfile(font, target / "fonts" / font.name)


def setup(app) -> None:
    missing = [name for name in [*KATEX_FILES, "fonts"] if not (KATEX / name).exists()]
    if missing:
        raise ConfigError(
            f"KaTeX not found in {KATEX} (missing {', '.join(missing)}): scripts/setup installs Debian's libjs-katex; "
            "set BNMFT_KATEX_DIR to another copy of KaTeX's dist folder"
        )
    app.add_html_math_renderer("katex_local", (_visit_math, None), (_visit_math_block, None))
    app.add_css_file("katex/katex.min.css")
    app.add_js_file("katex/katex.min.js", loading_method="defer")
    app.add_js_file("katex/contrib/auto-render.js", loading_method="defer")
    app.add_js_file("katex-render.js", loading_method="defer")
    app.connect("autodoc-process-docstring", _escape_star_args, priority=400)  # napoleon's is 500
    app.connect("build-finished", _copy_katex)
