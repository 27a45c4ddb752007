"""The main job writes its table, figures and reports, the report's checks pass, the report opens with a true
summary (claims, the count of passing checks, working links) and ends with the theory table, the HTML report renders
in a real browser, and an interrupted main job resumes without redoing finished work."""

import csv
import json
import math
import re
import statistics

import pytest

from bnmft.cli import main
from bnmft.report.section import Check
from tests.browser import chromium_launcher

CHECK_ROW = re.compile(r"^\| .* \| (yes|NO) \|$", flags=re.M)


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading (docs.github.com, "Section links"): lower case, drop everything but
    letters, digits, spaces, hyphens and underscores, then spaces to hyphens."""
    kept = "".join(ch for ch in heading.strip().lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("main_job")
    assert main(["reproduce", "--out", str(out), "--json", "--preset", "tiny"]) == 0
    return out


def test_reproduce_writes_everything(run):
    tmp_path = run
    for name in (
        "theory_table.csv",
        "theory_table.json",
        "theory_lambda_G.png",
        "report.md",
        "report.html",
        "symmetry_breaking.png",
        "propagation.png",
        "fig1a_lambda_G.png",
        "fig1b_gradients.png",
        "fig1c_symmetry_breaking.png",
        "fig1d_gram_examples.png",
        "fig2_two_batches.png",
        "width_sweep.png",
        "width_sweep.csv",
        "width_fits.csv",
        "finite_width.csv",
        "wide_enough_distance.png",
        "wide_enough_map.png",
        "wide_enough_conv.png",
        "wide_enough_conv.csv",
        "fig1_simulation.csv",
        "fig4_first_steps.png",
        "eps_phase_tanh.png",
        "eps_phase_relu.png",
        "heatmap_tiny.png",
        "heatmap_tiny_resnet_vs_plain.png",
        "tiny_resnet_vs_plain.png",
        "residual_simulation.png",
        "models_prediction.png",
        "models_prediction.csv",
        "models_profiles.csv",
        "residual_simulation.csv",
        "vgg_gradients.png",
        "vgg_gradients.csv",
        "sweeps.db",
    ):
        assert (tmp_path / name).stat().st_size > 0
    rows = list(csv.DictReader(open(tmp_path / "theory_table.csv")))
    relu_32 = next(r for r in rows if r["label"] == "relu" and r["batch_size"] == "32")
    c = -1 / 31  # docs/theory.md section 3.4, ReLU closed form
    j1 = (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi
    expected = ((math.pi - math.acos(c)) / math.pi + 31) / (29 * (1 - j1)) - 1 / 29
    assert float(relu_32["lambda_G"]) == pytest.approx(expected, rel=1e-14)
    assert len(json.loads((tmp_path / "theory_table.json").read_text())) == len(rows)
    report = (tmp_path / "report.md").read_text()
    verdicts = re.findall(r"\| (yes|NO) \|$", report, flags=re.M)
    assert len(verdicts) >= 20 and set(verdicts) == {"yes"}
    assert "Sweep `tiny`" in report and "16/ln lambda_G" in report
    assert "Median ratio measured / theory" in report and "**Paper:**" in report
    assert "## Residual BN networks" in report and "**Ours:**" in report and "theory (e^16)" in report
    assert "## Convolutional BN networks" in report and "**Paper (appendix):**" in report
    # the residual checks: theory vs simulation per case and block, all within their allowance
    assert len(re.findall(r"^\| residual .* \| yes \|$", report, flags=re.M)) == 9


def test_the_html_report_is_self_contained(run):
    page = (run / "report.html").read_text()
    images = re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)
    assert len(images) >= 12 and all(src.startswith("data:image/png;base64,") for src in images)
    for key in ("numpy", "torch", "wall time: total", "seeds", "device"):
        assert f"<th>{key}" in page
    assert page.count("<table>") >= 8


def test_the_report_opens_with_a_summary_that_is_true(run):
    report = (run / "report.md").read_text()
    headings = re.findall(r"^## (.+)$", report, flags=re.M)
    assert headings[0] == "Summary" and headings[-1].startswith("Appendix")
    summary = report.split("\n## ", 2)[1]
    # the count of passing checks is the count of check rows in the whole report
    passed, total = map(int, re.search(r"\*\*(\d+) of (\d+) checks pass\*\*", summary).groups())
    verdicts = CHECK_ROW.findall(report)
    assert total == len(verdicts) >= 60 and passed == verdicts.count("yes") == total
    # every claim a section states is in the summary, in order, with the same verdict and a link to its section
    quotes = re.findall(r"^> \*\*(?:Paper|Ours)[^*]*:\*\* .*\*\*Here[^*]*:\*\* (.*)$", report, flags=re.M)
    claim_row = r"^\| (\*\*(?:Paper|Ours)[^|]*) \| ([^|]*) \| ([^|]*) \| \[[^]]+\]\(#([^)]+)\) \|$"
    claims = re.findall(claim_row, summary, flags=re.M)
    assert len(claims) == len(quotes) == 5  # tiny: Fig 1a, the VGG appendix, whole models, two sweeps
    for (_, verdict, _, _), quoted in zip(claims, quotes, strict=True):
        assert quoted.startswith(verdict)
    # the Fig 1a ratio is the median of simulated / theory lambda_G over the rows of the Fig 1a table
    simulation = next(part for part in report.split("\n## ") if part.startswith("Finite-width simulations"))
    row = r"^\| (\d+) \| ([\d.]+) \| [\d.]+ \| ([\d.]+) \| [\d.]+ \| [\d.]+ \|$"
    fig1a = re.findall(row, simulation, flags=re.M)
    assert len(fig1a) == 12
    ratio = statistics.median(float(sim) / float(theory) for _, sim, theory in fig1a)
    measured = next(c[2] for c in claims if "(Fig 1a)" in c[0])
    assert float(measured.split()[0]) == pytest.approx(ratio, abs=0.006)
    # every in-page link goes to a heading, and the summary links every section
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", report, flags=re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", report)
    assert links and set(links) <= anchors
    listed = re.findall(r"^\* \[[^]]+\]\(#([^)]+)\)$", summary, flags=re.M)
    assert listed == [github_anchor(h) for h in headings[1:]]
    # the theory table is the appendix, at the end: every row of theory_table.csv, after every section
    appendix = report.split("\n## Appendix", 1)[1]
    phis = "relu|tanh|alpha_relu|gelu|selu|sin|identity"
    table = re.findall(rf"^\| (?:{phis})[^|]* \| (?:\d+|inf) \| ", appendix, flags=re.M)
    assert len(table) == len(list(csv.DictReader(open(run / "theory_table.csv")))) == 108
    # report.html: the same links work there (ids on the headings), the appendix is collapsed
    page = (run / "report.html").read_text()
    ids = set(re.findall(r' id="([^"]+)"', page))
    assert set(re.findall(r'<a href="#([^"]+)"', page)) == set(links) and set(links) <= ids
    before, details = page.split("<details", 1)
    assert details.startswith(' id="appendix-') and "</details>" in details
    assert "<td>relu, beta=1</td>" not in before and details.count("<td>relu, beta=1</td>") == 12


def test_a_check_passes_within_its_tolerance_and_never_on_nan():
    assert Check("x", 1.0, 1.1, 0.1, 0.1).passed and not Check("x", 1.0, 1.2, 0.2, 0.1).passed
    assert not Check("x", math.nan, 1.0, math.nan, 0.1).passed


def test_the_html_report_renders_in_a_real_browser(run):
    sync_playwright, chromium, args = chromium_launcher()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=args)
        page = browser.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((run / "report.html").as_uri())
        page.wait_for_load_state("load")
        widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        title = page.title()
        # the summary's links: each has its target; the one to the (collapsed) appendix opens it and scrolls to it
        links = page.evaluate("Array.from(document.querySelectorAll('a[href^=\"#\"]')).map(a => a.hash.slice(1))")
        missing = page.evaluate("ids => ids.filter(id => !document.getElementById(id))", links)
        closed = page.evaluate("!document.querySelector('details').open")
        page.click("#summary ~ ul a[href^='#appendix']")
        page.wait_for_function("document.querySelector('details').open")
        box = page.evaluate("(() => { const r = document.querySelector('details').getBoundingClientRect(); "
                            "return [r.top, window.innerHeight]; })()")  # fmt: skip
        browser.close()
    assert title == "bnmft report"
    assert len(links) >= 10 and not missing and closed
    assert 0 <= box[0] < box[1]  # in view
    assert len(widths) >= 12 and all(w > 0 for w in widths), widths
    assert not errors, errors


def test_an_interrupted_main_job_resumes_without_redoing_work(run, capsys):
    cached = sorted((run / ".cache").glob("*.json"))
    assert len(cached) == 10  # fig1ab, fig1cd, fig2, fig4, the width sweep and table, how wide is wide enough,
    # residual networks, VGG stack,
    # the whole models
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    figure = run / "fig1a_lambda_G.png"
    before = figure.stat().st_mtime_ns
    assert main(["reproduce", "--out", str(run), "--json", "--preset", "tiny"]) == 0
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps  # read, not recomputed
    assert figure.stat().st_mtime_ns == before  # the simulation figures were not redrawn
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"out": str(run)}


def test_the_background_training_hands_over_its_error_and_stops_on_request():
    import threading
    import time

    import torch

    from bnmft.errors import InputError
    from bnmft.report.training import Background

    def fails(stop: threading.Event) -> None:
        raise InputError("store: not a sweep store")

    threads = torch.get_num_threads()
    with pytest.raises(InputError, match="not a sweep store"):
        Background(fails, threads).wait()

    def runs_until_stopped(stop: threading.Event) -> None:
        while not stop.wait(0.01):
            pass

    began = time.perf_counter()
    Background(runs_until_stopped, threads).stop()  # returns once the work has seen the stop
    assert time.perf_counter() - began < 10 and torch.get_num_threads() == threads


def test_the_presets_sweeps_are_worked_out_once_per_data_directory(monkeypatch, capsys, tmp_path):
    """start() and run() share one list: a CIFAR-10 sweep skipped on this machine is named once, not twice."""
    from bnmft.experiments import data
    from bnmft.report import training

    def missing(name, data_dir=None):
        raise data.DatasetUnavailable(f"no {name} files here")

    monkeypatch.setattr(data, "load_dataset", missing)
    training._preset_sweeps.cache_clear()
    first = training._preset_sweeps("quick", str(tmp_path))
    assert training._preset_sweeps("quick", str(tmp_path)) is first
    err = capsys.readouterr().err
    assert err.count("skipping fig3d: no CIFAR-10 files in") == 1 and "no fashion_mnist files here" in err
    assert "fig3d" not in {s.name for s in first} and "fig3a" in {s.name for s in first}
    training._preset_sweeps.cache_clear()  # (the next test's machine has its data again)
