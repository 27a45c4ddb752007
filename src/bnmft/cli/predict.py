"""``bnmft predict``: a model's signal propagation at initialisation predicted from its graph, without running
it (:func:`bnmft.simulate.predict_model`)."""

from __future__ import annotations

import json

from ..errors import InputError
from ..options import check_int, check_seed
from .arguments import positive_int
from .conv import PLOT_SUFFIXES, input_shape_arg, load_factory


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
    from ..simulate.model_graph import predict_model
    from ..simulate.model_probe import seeded_model
    from ..simulate.probe_verdict import make_verdict

    check_int("--batch-size", args.batch_size, 2)
    check_seed(args.seed, "--seed")
    if args.plot and not args.plot.lower().endswith(PLOT_SUFFIXES):
        raise InputError(f"--plot must end in one of {', '.join(PLOT_SUFFIXES)}, got {args.plot!r}")
    shape = input_shape_arg(args.input_shape)
    assert shape is not None  # required by the parser
    model = seeded_model(load_factory(args.model), args.seed, what=f"--model: {args.model}")
    prediction, notes = predict_model(model, shape, args.batch_size)
    growth = {"predicted": None if prediction is None else prediction.growth,
              "first": None if prediction is None else prediction.first,
              "last": None if prediction is None else prediction.last}  # fmt: skip
    verdict = make_verdict(dict(growth, measured=None), [], [])
    out = {"model": args.model, "input_shape": list(shape), "batch_size": args.batch_size, "growth": growth,
           "norm_layers": [] if prediction is None else prediction.norm_layers,
           "tensors": [] if prediction is None else prediction.tensors, "verdict": verdict, "notes": notes}  # fmt: skip
    if args.plot and prediction is not None:
        from ..report.plots import plot_prediction

        plot_prediction(prediction.norm_layers, prediction.growth, args.plot, title=args.model)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    if prediction is not None:
        width = max([len("BN layer"), *(len(n["name"]) for n in prediction.norm_layers)])
        print(f"{'BN layer':<{width}}  {'batch':>7}  {'predicted ln ratio':>18}")
        for n in prediction.norm_layers:
            ratio = "-" if n["log_grad_ratio"] is None else f"{n['log_grad_ratio']:.3f}"
            print(f"{n['name']:<{width}}  {n['batch']:>7}  {ratio:>18}")
        if prediction.growth is not None:
            print(f"\npredicted total ln gradient growth {prediction.first} <- {prediction.last}: "
                  f"{prediction.growth:.3f}")  # fmt: skip
    if verdict.get("summary"):
        print(f"verdict: {verdict['summary']}")
    for note in notes:
        print(f"note: {note}")
    if args.plot and prediction is not None:
        print(f"plot written to {args.plot}")
    return 0
