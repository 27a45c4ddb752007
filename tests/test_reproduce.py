"""The main job writes its table, figures and reports, the report's checks pass, the HTML report renders in a real
browser, and an interrupted main job resumes without redoing finished work."""

import csv
import json
import math
import re
import shutil

import pytest

from bnmft.cli import main


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
        "fig1_simulation.csv",
        "fig4_first_steps.png",
        "eps_phase_tanh.png",
        "eps_phase_relu.png",
        "heatmap_tiny.png",
        "heatmap_tiny_resnet_vs_plain.png",
        "tiny_resnet_vs_plain.png",
        "residual_simulation.png",
        "residual_simulation.csv",
        "vgg_gradients.png",
        "vgg_gradients.csv",
        "sweeps.db",
    ):
        assert (tmp_path / name).stat().st_size > 0
    rows = list(csv.DictReader(open(tmp_path / "theory_table.csv")))
    relu_32 = next(r for r in rows if r["label"] == "relu" and r["batch_size"] == "32")
    c = -1 / 31  # theory.md section 4, ReLU closed form
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


def test_the_html_report_renders_in_a_real_browser(run):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup installs it where apt-get can)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
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
        browser.close()
    assert title == "bnmft report"
    assert len(widths) >= 12 and all(w > 0 for w in widths), widths
    assert not errors, errors


def test_an_interrupted_main_job_resumes_without_redoing_work(run, capsys):
    cached = sorted((run / ".cache").glob("*.pickle"))
    assert len(cached) == 8  # fig1ab, fig1cd, fig2, fig4, the width sweep and table, residual networks, VGG stack
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    figure = run / "fig1a_lambda_G.png"
    before = figure.stat().st_mtime_ns
    assert main(["reproduce", "--out", str(run), "--json", "--preset", "tiny"]) == 0
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps  # read, not recomputed
    assert figure.stat().st_mtime_ns == before  # the simulation figures were not redrawn
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"out": str(run)}
