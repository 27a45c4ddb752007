"""``bnmft reproduce``: the main job - the theory tables and figures, the paper's simulation figures, Fig 4 and
the preset's training sweep, and a report of the engine's checks (the command fails if one fails).

The job runs the report's sections in order (:data:`SECTIONS`; the interface is in :mod:`.section`), each writing
its files into the output directory:

* :mod:`.theory` - ``theory_table.csv`` / ``theory_table.json`` (q*, c*, mu*, lambda_G, depth scale and max
  trainable depth for several nonlinearities over batch sizes 4 ... 4096 and inf, one row per phi x B),
  ``theory_lambda_G.png`` (lambda_G, 16 / ln lambda_G and the forward eigenvalues against B), ``symmetry_breaking.png``
  (the alpha_relu exponent beyond which BSB1 is not attracting), ``eps_phase_tanh.png``, ``eps_phase_relu.png``
  (the eps > 0 phase diagrams, docs/theory.md section 6) and ``propagation.png`` (a random batch and a copy
  differing in one example through a ReLU-BN network, with the theory's rates);
* :mod:`.simulation` - ``fig1a_lambda_G.png``, ``fig1b_gradients.png``, ``fig1c_symmetry_breaking.png``,
  ``fig1d_gram_examples.png``, ``fig2_two_batches.png`` and their CSV tables (the paper's simulation figures);
* :mod:`.width` - ``width_sweep.png`` / ``.csv``, ``width_fits.csv``, ``finite_width.csv`` (the 1/N extrapolation);
* :mod:`.residual` - ``residual_simulation.png`` / ``.csv`` (residual BN networks, simulator against the exact
  theory, docs/residual.md);
* :mod:`.conv` - ``vgg_gradients.png`` / ``.csv`` (the paper's VGG appendix at initialisation);
* :mod:`.models` - ``models_prediction.png`` / ``.csv``, ``models_profiles.csv`` (torchvision-style models at
  initialisation: the graph prediction against the probe, docs/graph.md);
* :mod:`.training` - ``fig4_first_steps.png`` (Fig 4, the first SGD steps), ``sweeps.db`` and
  ``heatmap_<sweep>.png`` (the preset's training sweeps - quick: Figs 3a-d and 5a-d reduced, and two residual
  sweeps - with the theory's depth line), ``<sweep>.png`` for a plain-vs-residual sweep;

then ``report.md`` and ``report.html``: a summary (every claim with its verdict and measured ratio, the number of
checks that pass, links to the sections), the sections with their checks against independent references, and the
theory table as an appendix (collapsed in ``report.html``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .. import __version__
from ..errors import InputError
from . import conv, models, residual, simulation, theory, training, width
from .html import write_html_report
from .section import Check, Claim, Context, Section, anchor

PRESETS = ("tiny", "quick", "paper")

#: the report's sections, in the order they run and appear
SECTIONS: tuple[Section, ...] = (theory, simulation, width, residual, conv, models, training)


def reproduce(
    out: str | Path,
    *,
    quiet: bool = False,
    preset: str = "quick",
    workers: int | None = None,
    scheduler: str | None = None,
    device: str = "cpu",
) -> Path:
    """Run the main job into ``out`` (created if needed); returns the directory.

    ``preset``: ``"tiny"`` (a smoke run, for tests), ``"quick"`` (every figure of the paper, reduced to fit 2 CPU
    cores in about 18 minutes) or ``"paper"`` (the paper's sizes and grids: for a GPU, ``device="cuda"``, or a Dask
    cluster, ``scheduler=ADDRESS``). Training sweeps are stored in ``<out>/sweeps.db`` and finished simulations in
    ``<out>/.cache``: an interrupted main job resumes where it stopped. Bad input raises
    :class:`~bnmft.InputError`; a failed check raises ``RuntimeError`` after both reports are written."""
    if preset not in PRESETS:
        raise InputError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    if device != "cpu":  # before any work
        from ..experiments.batched import check_device

        check_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out, preset, quiet, workers=workers, scheduler=scheduler, device=device, version=__version__)
    start = time.perf_counter()
    data: dict[str, Any] = {}
    stages: dict[str, float] = {}
    background = training.start(ctx)  # the sweeps train in the background while the other sections run
    try:
        for section in tqdm(SECTIONS, desc="sections", unit="section", disable=quiet, file=sys.stderr):
            mark = time.perf_counter()
            if section is training:
                stages["training sweeps (in the background, from the start)"] = background.wait()
            data[section.NAME] = section.run(ctx)
            stages[section.NAME] = time.perf_counter() - mark
    except BaseException:  # a section failed or the job was interrupted: no training left running behind it
        background.stop()
        raise
    checks = [c for s in SECTIONS for c in s.checks(data[s.NAME])]
    body, appendix = _report(data, checks, time.perf_counter() - start)
    (out / "report.md").write_text(body + "\n" + appendix)
    sweeps = data[training.NAME]["sweeps"]
    write_html_report(body, out, _metadata(preset, stages, sweeps, time.perf_counter() - start), appendix=appendix)
    failed = [c.name for c in checks if not c.passed]
    if failed:
        raise RuntimeError(f"theory checks failed: {failed} (see {out / 'report.md'})")
    if not quiet:
        print(f"wrote {out}/theory_table.csv, theory_table.json, figures, report.md and report.html", file=sys.stderr)
    return out


def _report(data: dict[str, Any], checks: list[Check], seconds: float) -> tuple[str, str]:
    """The report's Markdown: (title, summary, sections) and the appendix."""
    texts = [s.text(data[s.NAME]) for s in SECTIONS]
    appendices = [a for s in SECTIONS if (a := s.appendix(data[s.NAME]))]
    claims = [(c, _first_heading(t)) for s, t in zip(SECTIONS, texts, strict=True) for c in s.claims(data[s.NAME])]
    headings = [h for t in texts + appendices for h in _headings(t)]
    lines = [
        "# bnmft theory report",
        "",
        "Mean-field predictions at initialisation for plain batch-normalised MLPs (eps = 0): the BSB1 "
        "fixed point (q*, c*), the gradient explosion rate lambda_G and the predicted maximum trainable "
        "depth 16 / ln lambda_G (Yang et al. 2019; the math: `docs/theory.md`).",
        "",
        *_summary(checks, claims, headings),
        "",
        *texts,
        f"Computed in {seconds:.1f} s.",
        "",
    ]
    return "\n".join(lines), "\n".join(appendices)


def _summary(checks: list[Check], claims: list[tuple[Claim, str]], headings: list[str]) -> list[str]:
    passed = sum(c.passed for c in checks)
    failed = [c.name for c in checks if not c.passed]
    lines = [
        "## Summary",
        "",
        f"**{passed} of {len(checks)} checks pass** (the theory engine against independent references, the "
        "simulators against the theory; each section ends with its checks)"
        + (f"; failed: {'; '.join(failed)}." if failed else "."),
        "",
        "The paper's claims (and ours) tested here, with what this run measured:",
        "",
        "| claim | verdict | measured / predicted | section |",
        "|---|---|---|---|",
    ]
    for c, heading in claims:
        what = f" ({c.subject})" if c.subject else ""
        ratio = "-" if c.ratio is None else f"{c.ratio:.2f} ({c.ratio_of})"
        lines.append(
            f"| **{c.source}**{what}: {c.claim or '(no claim stated)'} | {c.verdict} | {ratio} | {_link(heading)} |"
        )
    lines += ["", "Sections:", ""]
    lines += [f"* {_link(h)}" for h in headings]
    return lines


def _link(heading: str) -> str:
    return f"[{heading}](#{anchor(heading)})"


def _headings(text: str) -> list[str]:
    """The text's ``##`` headings."""
    return [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]


def _first_heading(text: str) -> str:
    return _headings(text)[0]


def _metadata(preset: str, stages: dict[str, float], sweeps: dict, total: float) -> dict[str, str]:
    """The run's metadata for the HTML report: versions, machine, seeds, device, wall time per section."""
    import platform
    from importlib.metadata import version

    from ..experiments.batched import cuda_available

    meta = {
        "bnmft": __version__,
        "python": platform.python_version(),
        **{name: version(name) for name in ("numpy", "scipy", "torch", "matplotlib")},
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "device": "cpu" + (" (CUDA available, not used)" if cuda_available() else ""),
        "preset": preset,
        "seeds": "simulations: seed 0; sweeps: "
        + ", ".join(f"{n} {list(m['sweep'].seeds)}" for n, m in sweeps.items()),
    }
    meta.update({f"wall time: {name}": f"{seconds:.1f} s" for name, seconds in stages.items()})
    meta.update({f"wall time: sweep {n}": f"{m['seconds']:.1f} s" for n, m in sweeps.items()})
    meta["wall time: total"] = f"{total:.1f} s"
    return meta
