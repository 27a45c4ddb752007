"""The main job's convolutional section (docs/theory.md 10, docs/convolutional.md): the paper's appendix claim at
initialisation, measured on a VGG-style conv-BN stack. A section of the main job (interface: :mod:`.section`); the
probe is cached (``.cache/vgg_*``)."""

from __future__ import annotations

from .section import Check, Claim, Context

NAME = "convolutional networks (VGG appendix)"


def run(ctx: Context) -> dict:
    """The VGG-style stack at initialisation (imports torch), cached."""
    from .figures import vgg_appendix

    return {"vgg": ctx.cached("vgg", lambda: vgg_appendix(ctx.out, ctx.preset))}


def checks(data: dict) -> list[Check]:
    return []


def claims(data: dict) -> list[Claim]:
    """The paper's appendix claim: at the deepest depth, growth falls with beta (smallest eps) and with eps
    (beta = 0)."""
    rows = data["vgg"]["rows"]
    deepest = max(r["depth"] for r in rows)
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
    return [
        Claim(
            "Paper (appendix)",
            "in VGG19 with BN, initialising beta > 0 and eps > 0 helps training.",
            verdict,
            consistent=helps_beta and helps_eps,
            subject="VGG-style stack at initialisation",
        )
    ]


def appendix(data: dict) -> str:
    return ""


def text(data: dict) -> str:
    v = data["vgg"]
    p, rows = v["settings"], v["rows"]
    deepest = max(r["depth"] for r in rows)
    lines = [
        "## Convolutional BN networks (ours: docs/theory.md section 10, docs/convolutional.md)",
        "",
        "Mean field with spatial BN (`bnmft.conv_theory`): with periodic padding the conv network is exactly the "
        "MLP at batch size B x H x W (a random conv layer leaves translation-invariant covariances alone, and the "
        "BSB1 matrix over all (example, position) pairs is one), whatever the kernel size; zero padding lowers the "
        "rate (its borders). Checked against the conv simulator in tests/simulate/test_conv.py.",
        "",
        f"The paper's appendix at initialisation: a VGG-style stack ({p['channels']} channels, {p['image']}x"
        f"{p['image']} inputs, batch 8, VGG19's pooling, zero padding), probed with `bnmft.probe` ({p['seeds']} "
        "networks per point); measured ln gradient growth from the last BN layer to the first, and the theory's "
        "(the sum over BN layers of the mean-field rate at each layer's measured state), and the whole-model "
        "prediction from the graph (`bnmft predict`, docs/graph.md: zero padding, max pooling and eps modelled).",
        "",
        "![VGG gradients](vgg_gradients.png)",
        "",
        f"| beta | eps | measured growth at depth {deepest} | s.e. | per-layer theory | graph prediction |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["depth"] == deepest:
            t = "-" if r["log_growth_theory"] is None else f"{r['log_growth_theory']:.2f}"
            g = "-" if r.get("log_growth_graph") is None else f"{r['log_growth_graph']:.2f}"
            lines.append(
                f"| {r['beta']:g} | {r['eps']:g} | {r['log_growth']:.2f} | {r['log_growth_stderr']:.2f} | {t} | {g} |"
            )
    note = ". Large eps turns the explosion into vanishing gradients (BN's collapsed phase, docs/theory.md section 6)."
    lines += ["", claims(data)[0].quote("Here, at initialisation", note), ""]
    return "\n".join(lines)
