"""The documentation site (docs/, built by scripts/docs) builds with warnings as errors, its API pages show the
public functions' signatures and docstrings, it loads nothing from the network, and every page renders in a real
browser: no console errors, every image loaded, every formula typeset by the local KaTeX, every internal link and
anchor found."""

import html
import inspect
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.browser import chromium_launcher

ROOT = Path(__file__).resolve().parents[1]
GUIDE = [
    "index", "quickstart", "theory", "families", "simulator", "experiments", "budget", "cli", "errors", "numerics"
]
DERIVATIONS = ["residual", "convolutional", "graph", "finite_width", "outlier", "conv_width", "conditional_sampler"]
API = {
    "api/bnmft": [
        "bnmft.theory",
        "bnmft.residual_theory",
        "bnmft.conv_theory",
        "bnmft.design",
        "bnmft.gram_map",
        "bnmft.propagate",
        "bnmft.symmetry_breaking",
        "bnmft.eps_theory",
        "bnmft.probe",
        "bnmft.InputError",
        "bnmft.Nonlinearity",
        "bnmft.get_nonlinearity",
        "bnmft.TheoryResult",
        "bnmft.fluctuations",
        "bnmft.finite_width",
        "bnmft.outlier_state",
        "bnmft.escape_depth",
        "bnmft.conv_departure_depth",
    ],
    "api/simulate": ["bnmft.simulate.simulate_mlp", "bnmft.simulate.simulate_residual", "bnmft.simulate.simulate_conv"],
    "api/experiments": ["bnmft.experiments.config.TrainConfig", "bnmft.experiments.sweep.run_sweep"],
    "api/nonlinearity": ["bnmft.nonlinearity.from_expression", "bnmft.nonlinearity.resolve"],
}


SMART_QUOTES = str.maketrans("\u2018\u2019\u201c\u201d", "''\"\"")  # Sphinx's typography in the text


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    argv = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(out / "doctrees")]
    done = subprocess.run([*argv, str(ROOT / "docs"), str(out / "html")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"the docs build (warnings are errors) failed:\n{done.stderr}"
    return out / "html"


def _object(name: str):
    module, _, attr = name.rpartition(".")
    parent = sys.modules.get(module) or __import__(module, fromlist=[attr])
    return getattr(parent, attr)


def _text(fragment: str) -> str:
    plain = html.unescape(re.sub(r"<[^>]+>", " ", fragment)).translate(SMART_QUOTES)
    return " ".join(plain.split())


def test_the_site_has_the_guide_the_derivations_and_the_api_pages(site):
    for page in [*GUIDE, *DERIVATIONS, *API, "api/index", "genindex", "search"]:
        assert (site / f"{page}.html").is_file(), page
    index = (site / "index.html").read_text()
    for page in [*GUIDE[1:], *DERIVATIONS, "api/index"]:
        assert f'href="{page}.html"' in index, f"{page} is not in the navigation"


def test_every_public_name_has_an_entry_on_the_api_page():
    import bnmft

    source = (ROOT / "docs/api/bnmft.md").read_text()
    missing = [n for n in bnmft.__all__ if n != "__version__" and f"bnmft.{n}\n" not in source]
    assert not missing, f"public names without an entry in docs/api/bnmft.md: {missing}"


@pytest.mark.parametrize("page", sorted(API))
def test_the_api_pages_show_signatures_and_docstrings(site, page):
    text = (site / f"{page}.html").read_text()
    for name in API[page]:
        found = re.search(rf'<dt class="sig[^"]*" id="{re.escape(name)}">(.*?)</dt>\s*<dd>(.*?)</dd>', text, re.S)
        assert found, f"{name} is not documented on {page}"
        signature, body = _text(found.group(1)), _text(found.group(2))
        obj = _object(name)
        params = [] if isinstance(obj, type) and issubclass(obj, Exception) else inspect.signature(obj).parameters
        for parameter in params:
            assert parameter in signature, (name, parameter, signature)
        first_line = inspect.getdoc(obj).splitlines()[0]
        words = _text(re.sub(r":\w+:`~?([^`]+)`|``([^`]+)``", r"\1\2", first_line)).split()
        assert " ".join(words[:6]) in body, (name, first_line, body[:300])


def test_the_site_loads_nothing_from_the_network(site):
    for page in site.rglob("*.html"):
        text = page.read_text()
        for tag, attribute in (("script", "src"), ("link", "href"), ("img", "src")):
            for url in re.findall(rf'<{tag}\b[^>]*\b{attribute}="([^"]*)"', text):
                assert not urlsplit(url).scheme and not url.startswith("//"), (page.name, url)
    assert (site / "_static/katex/katex.min.js").is_file() and any((site / "_static/katex/fonts").glob("*.woff2"))


# Per page: console errors go to the list; every image's natural width; every formula element and whether KaTeX
# typeset it; KaTeX error nodes; raw TeX delimiters left in the text outside code; every link's resolved address.
INSPECT = """() => {
  const text = document.body.cloneNode(true);
  text.querySelectorAll("pre, code, script, style, .katex").forEach(e => e.remove());
  const body = text.textContent;
  return {
    images: Array.from(document.images).map(i => [i.getAttribute("src"), i.complete ? i.naturalWidth : 0]),
    formulas: Array.from(document.querySelectorAll(".math")).map(e => e.querySelector(".katex") !== null),
    katexErrors: document.querySelectorAll(".katex-error").length,
    rawTex: ["$$", "\\\\(", "\\\\[", "\\\\begin{"].filter(d => body.includes(d)),
    rawInline: (body.match(/\\$[^\\s$][^$\\n]{0,80}[^\\s$]\\$/g) || []),
    fonts: Array.from(document.fonts).filter(f => f.status === "error").map(f => f.family),
    links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
  };
}"""


def test_every_page_renders_in_a_real_browser(site):
    sync_playwright, chromium, args = chromium_launcher()
    pages = sorted(site.rglob("*.html"))
    errors: list[str] = []
    off_site: list[str] = []
    seen: dict[str, dict] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=args)
        page = browser.new_page()
        page.on("console", lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
        page.on("requestfailed", lambda r: errors.append(f"{page.url}: {r.url} failed ({r.failure})"))

        def block(route):
            off_site.append(route.request.url)
            route.abort()

        page.route(re.compile(r"^(?!file:|data:|about:)"), block)
        for path in pages:
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            page.evaluate("document.fonts.ready.then(() => true)")
            seen[path.relative_to(site).as_posix()] = page.evaluate(INSPECT)
        browser.close()
    assert not errors, errors
    assert not off_site, off_site
    images = [(name, src, width) for name, info in seen.items() for src, width in info["images"]]
    assert images and all(width > 0 for _, _, width in images), [i for i in images if i[2] == 0]
    assert any(src.endswith("residual_simulation.png") for _, src, _ in images)  # the README's figures are there
    formulas = {name: info["formulas"] for name, info in seen.items() if info["formulas"]}
    assert "index.html" in formulas and "theory.html" in formulas, sorted(formulas)
    untypeset = {name: flags.count(False) for name, flags in formulas.items() if not all(flags)}
    assert not untypeset, untypeset
    for name, info in seen.items():
        assert info["katexErrors"] == 0 and not info["fonts"], (name, info["katexErrors"], info["fonts"])
        assert not info["rawTex"] and not info["rawInline"], (name, info["rawTex"], info["rawInline"])
    broken = []
    for name, info in seen.items():
        for link in info["links"]:
            parts = urlsplit(link)
            if parts.scheme != "file":
                continue
            target = Path(unquote(parts.path))
            if not target.is_file():
                broken.append((name, link))
            elif parts.fragment and f'id="{unquote(parts.fragment)}"' not in target.read_text():
                broken.append((name, link))
    assert not broken, broken


def test_readme_budget_tables_are_the_committed_study():
    # the README's copy of the budget study's tables (docs/budget/budget.json) stays equal to what the code draws
    # (scripts/budget-tables redraws them)
    import json

    from bnmft.report.budget import tables

    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- budget tables: bnmft.report.budget.tables(docs/budget/budget.json);", "<!-- end of the budget"
    assert readme.count(start) == 1 and readme.count(end) == 1
    block = readme.split(start)[1].split(end)[0].splitlines()[1:]
    study = json.loads((ROOT / "docs" / "budget" / "budget.json").read_text())
    assert [line for line in block if line.strip()] == [line for line in tables(study) if line.strip()]
    assert "](docs/budget/budget.png)" in readme and (ROOT / "docs" / "budget" / "budget.png").is_file()
