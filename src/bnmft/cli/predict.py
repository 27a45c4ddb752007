"""``bnmft predict``: a model's signal propagation at initialisation predicted from its graph, without running
it (:func:`bnmft.simulate.predict_model`)."""

from __future__ import annotations

import json

from ..options import check_int, check_seed
from .arguments import positive_int
from .conv import input_shape_arg, load_factory


def add_parsers(sub) -> None:
    p = sub.add_parser("predict", help="a PyTorch model's BN gradient profile at initialisation, predicted from its "
                       "graph (mean field, no forward or backward pass)")  # fmt: skip
    p.add_argument("--model", required=True, metavar="MODULE:CALLABLE", help="MODULE importable from here")
    p.add_argument("--input-shape", required=True, metavar="SHAPE", help="one example's shape, e.g. 3x32x32")
    p.add_argument("--batch-size", "-B", required=True, type=positive_int)
    p.add_argument("--seed", type=int, default=0, help="the model's initialisation (torch.manual_seed before it)")
    p.add_argument("--json", action="store_true", help="one object: growth, norm_layers, tensors, verdict, notes")
    p.add_argument("--plot", metavar="FILE", help="the predicted ln gradient ratio of every BN layer")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from ..simulate.model_probe import seeded_model
    from ..simulate.prediction_report import prediction_report

    check_int("--batch-size", args.batch_size, 2)
    check_seed(args.seed, "--seed")
    shape = input_shape_arg(args.input_shape)
    assert shape is not None  # required by the parser
    model = seeded_model(load_factory(args.model), args.seed, what=f"--model: {args.model}")
    report = prediction_report(model, shape, args.batch_size)
    if args.plot:
        from ..report.plots import plot_prediction

        layers = [{"name": b["name"], "log_grad_ratio": b["predicted_log_grad_ratio"]} for b in report["bn_layers"]]
        plot_prediction(layers, report["growth"]["predicted"], args.plot, title=args.model)
    if args.json:
        out = {"model": args.model, "input_shape": list(shape), "batch_size": args.batch_size, **report}
        print(json.dumps(out, indent=2))
        return 0
    bn = report["bn_layers"]
    width = max([len("BN layer"), *(len(b["name"]) for b in bn)])
    print(f"{'BN layer':<{width}}  {'phi':>10}  {'batch':>7}  {'theory rate':>11}  {'predicted ln ratio':>18}")
    for b in bn:
        phi = str(b["phi"]) if b["phi"] is None or len(b["phi"]) <= 10 else b["phi"][:9] + "~"
        rate = "-" if b["theory_rate"] is None else f"{b['theory_rate']:.4f}"
        ratio = "-" if b["predicted_log_grad_ratio"] is None else f"{b['predicted_log_grad_ratio']:.3f}"
        print(f"{b['name']:<{width}}  {phi:>10}  {b['batch']:>7}  {rate:>11}  {ratio:>18}")
    g, v = report["growth"], report["verdict"]
    if g["predicted"] is not None:
        print(f"\npredicted total ln gradient growth {g['first']} <- {g['last']}: {g['predicted']:.3f}")
    if v.get("summary"):
        print(f"verdict: {v['summary']}")
        for c in v.get("changes", []):
            print(f"  change {c['knob']} -> {c['value']:.4g}: {c['effect']}")
    for note in report["notes"]:
        print(f"note: {note}")
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0
