"""The main job's convolutional section (theory.md section 4d, docs/convolutional.md): the paper's appendix claim at
initialisation, measured on a VGG-style conv-BN stack. Called by :mod:`bnmft.reproduce`."""

from __future__ import annotations


def conv_report(sims: dict) -> list[str]:
    v = sims["vgg"]
    p, rows = v["settings"], v["rows"]
    deepest = max(r["depth"] for r in rows)
    lines = [
        "## Convolutional BN networks (ours: theory.md section 4d, docs/convolutional.md)",
        "",
        "Mean field with spatial BN (`bnmft.conv_theory`): with periodic padding the conv network is exactly the "
        "MLP at batch size B x H x W (a random conv layer leaves translation-invariant covariances alone, and the "
        "BSB1 matrix over all (example, position) pairs is one), whatever the kernel size; zero padding lowers the "
        "rate (its borders). Checked against the conv simulator in tests/simulate/test_conv.py.",
        "",
        f"The paper's appendix at initialisation: a VGG-style stack ({p['channels']} channels, {p['image']}x"
        f"{p['image']} inputs, batch 8, VGG19's pooling, zero padding), probed with `bnmft.probe` ({p['seeds']} "
        "networks per point); measured ln gradient growth from the last BN layer to the first, and the theory's "
        "(the sum over BN layers of the mean-field rate at each layer's measured state).",
        "",
        "![VGG gradients](vgg_gradients.png)",
        "",
        f"| beta | eps | measured growth at depth {deepest} | s.e. | theory |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r["depth"] == deepest:
            t = "-" if r["log_growth_theory"] is None else f"{r['log_growth_theory']:.2f}"
            lines.append(
                f"| {r['beta']:g} | {r['eps']:g} | {r['log_growth']:.2f} | {r['log_growth_stderr']:.2f} | {t} |"
            )
    small = {
        r["beta"]: r["log_growth"] for r in rows if r["depth"] == deepest and r["eps"] == min(x["eps"] for x in rows)
    }
    big = {r["eps"]: r["log_growth"] for r in rows if r["depth"] == deepest and r["beta"] == 0.0}
    helps_beta = all(small[a] > small[b] for a, b in zip(sorted(small), sorted(small)[1:], strict=False))
    helps_eps = big[max(big)] < big[min(big)]
    verdict = (
        f"at depth {deepest}, gradient growth falls from {small[min(small)]:.2f} (beta = 0) to "
        f"{small[max(small)]:.2f} (beta = {max(small):g}) at the smallest eps, and from {big[min(big)]:.2f} "
        f"(eps = {min(big):g}) to {big[max(big)]:.2f} (eps = {max(big):g}) at beta = 0"
        + (" - consistent" if helps_beta and helps_eps else " - not as claimed")
    )
    lines += [
        "",
        "> **Paper (appendix):** in VGG19 with BN, initialising beta > 0 and eps > 0 helps training. **Here, at "
        f"initialisation:** {verdict}. Large eps turns the explosion into vanishing gradients (BN's collapsed "
        "phase, theory.md section 4b).",
        "",
    ]
    return lines
