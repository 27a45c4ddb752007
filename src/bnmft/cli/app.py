"""The ``bnmft`` command: ``theory``, ``propagate``, ``symmetry``, ``simulate``, ``residual``, ``design``, ``conv``,
``probe``, ``predict``, ``finite-width``, ``sweep``, ``heatmap``, ``nonlinearities`` and ``reproduce`` (the main job).

Bad input - a :class:`~bnmft.errors.InputError` from the library, or an argument argparse refuses - ends with a
one-line message naming the argument and exit status 2 (after its traceback with ``--debug`` or ``BNMFT_DEBUG=1``).
Nothing else is caught: any other exception is a bug and shows its traceback (exit status 1).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .. import __version__
from ..errors import InputError
from ..options import check_output_path
from . import conv, experiments, finite_width, predict, residual, simulate, theory


class OneLineParser(argparse.ArgumentParser):
    """argparse with bad arguments reported as one line (``bnmft CMD: error: ...``, exit status 2), like every other
    bad input, pointing at ``--help`` for the usage. Keeps its arguments (``options``) and its subcommands
    (``commands``) for :func:`given_options`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.options: list[argparse.Action] = []
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.options.append(action)
        return action

    def add_subparsers(self, **kwargs: Any) -> Any:
        self.commands = super().add_subparsers(**kwargs)
        return self.commands

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="bnmft", description="Mean field theory of batch normalization.")
    parser.add_argument("--version", action="version", version=f"bnmft {__version__}")
    debug = "on an error, also show its full traceback (the user's own, for a model's exception; or BNMFT_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug)
    sub = parser.add_subparsers(dest="command", required=True)
    # one module per command family
    for family in (theory, simulate, residual, conv, predict, finite_width, experiments):
        family.add_parsers(sub)
    for command in sub.choices.values():  # also after the command; SUPPRESS: absent there, it keeps bnmft's value
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    return parser


#: the output arguments of each command: (attribute, flag, is a directory, suffix added to a bare file name)
OUTPUTS = {
    "theory": [("plot", "--plot", False, ".png")],
    "propagate": [("plot", "--plot", False, ".png"), ("save", "--save", False, ".npz")],
    "symmetry": [("plot", "--plot", False, ".png")],
    "simulate": [("out", "--out", True, "")],
    "residual": [("plot", "--plot", False, ".png")],
    "conv": [("plot", "--plot", False, ".png"), ("out", "--out", True, "")],
    "probe": [("plot", "--plot", False, ".png")],
    "predict": [("plot", "--plot", False, ".png")],
    "sweep": [("store", "--store", False, "")],
    "heatmap": [("out", "--out", False, ".png")],
    "reproduce": [("out", "--out", True, "")],
    "budget": [("out", "--out", True, "")],
}
#: OSErrors about the user's files and disk (not bugs of bnmft): reported like bad input
USER_FILE_ERRNOS = {
    errno.ENOENT,
    errno.EACCES,
    errno.EPERM,
    errno.ENOSPC,
    errno.EROFS,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.EDQUOT,
    errno.EFBIG,
    errno.ENAMETOOLONG,
}


def _simulating(args: argparse.Namespace) -> bool:
    return args.width is not None or args.networks is not None


def _conv_simulating(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.channels, args.depth, args.networks))


def _not_only_knob(knob: str) -> Callable[[argparse.Namespace], bool]:
    return lambda args: set(args.knobs or ()) != {knob}


def _fixed_phi_value(name: str) -> Callable[[argparse.Namespace], bool]:
    return lambda args: args.phi is not None and args.parameter != name


#: why --branch needs eps > 0 in the residual theory
SAME_BRANCHES = "at eps = 0 the BN after the first linear layer removes its scale: both branches have one mean field"
#: options that apply in some modes only: command -> [(destination, applies(args), the mode in words)]. An option
#: the command line gives outside its mode is refused (exit status 2), never ignored - even at its default value.
#: The mode in words may be a function of the arguments (propagate names the method it resolves to).
MODES: dict[str, list[tuple[str, Callable[[argparse.Namespace], bool], str | Callable[[argparse.Namespace], str]]]] = {
    "theory": [
        ("sigma_w", lambda a: any(e > 0 for e in a.eps or ()), "with an --eps > 0 (at eps = 0 batch norm removes "
         "the weight scale: only kappa = eps / sigma_w^2 enters the theory)"),
        ("method", lambda a: not a.eps or 0 in a.eps, "at eps = 0 (the eps > 0 theory has one method)"),
    ],
    "propagate": [
        (name, theory.propagate_samples_apply, theory.propagate_samples_mode) for name in ("samples", "seed")
    ],
    "symmetry": [
        ("alpha_max", lambda a: a.bracket is None, "without --bracket (it is the default bracket's upper end)"),
        *((name, _fixed_phi_value(name), f"with --phi and a --parameter other than {name} (a fixed value of phi's; "
           "without --phi, alpha_relu's alpha is varied at gamma = 1, beta = 0)")
          for name in ("gamma", "beta", "alpha", "slope")),
    ],
    "simulate": [("out", lambda a: a.widths is None, "with --width (the --widths fit writes no per-layer tables)")],
    "residual": [
        *((name, _simulating, "with --width and --networks (the simulation)")
          for name in ("seed", "dtype", "device", "sampler")),
        ("branch", lambda a: a.eps > 0 or _simulating(a), f"with an --eps > 0 or a simulation ({SAME_BRANCHES})"),
    ],
    "design": [
        ("branch_depth", lambda a: a.residual, "with --residual"),
        ("branch", lambda a: a.residual and (a.eps > 0 or a.knobs is None or "eps" in a.knobs),
         f"with --residual and an --eps > 0 or eps among the knobs ({SAME_BRANCHES})"),
        ("branch_scale", lambda a: a.residual and _not_only_knob("branch_scale")(a),
         "with --residual, and not when it is the knob searched (--knobs branch_scale)"),
        *((knob, _not_only_knob(knob), f"when another knob is searched (--knobs {knob} searches it)")
          for knob in ("gamma", "beta", "eps")),
        ("sigma_w", lambda a: a.residual or a.eps > 0 or a.knobs is None or "eps" in a.knobs, "with --residual, an "
         "--eps > 0 or eps among the knobs (a plain network at eps = 0 does not depend on the weight scale)"),
    ],
    "conv": [
        ("padding", lambda a: a.kernel > 1, "with --kernel > 1 (a 1-wide kernel has no neighbours to pad)"),
        ("kernel", lambda a: a.padding == "zero" or _conv_simulating(a), "with --padding zero or a simulation (with "
         "periodic padding the theory is the MLP at batch B x positions, whatever the kernel)"),
        ("sigma_w", lambda a: any(e > 0 for e in a.eps or ()) or _conv_simulating(a), "with an --eps > 0 or a "
         "simulation (at eps = 0 batch norm removes the weight scale from the theory)"),
    ],
}  # fmt: skip
#: the default of every option while :func:`given_options` parses: what the command line leaves out keeps it
_UNSET = object()


def given_options(argv: Sequence[str] | None) -> tuple[set[str], dict[str, str]]:
    """The options (destinations) the command line gives explicitly, whatever their value, and each option's flags
    (``--branch-depth/-K``): the command line parsed again with every default replaced by a marker."""
    parser = build_parser()
    flags = {}
    for command in parser.commands.choices.values():
        for action in command.options:
            action.default = _UNSET
            flags[action.dest] = "/".join(action.option_strings)
    return {dest for dest, value in vars(parser.parse_args(argv)).items() if value is not _UNSET}, flags


def check_modes(argv: Sequence[str] | None, args: argparse.Namespace) -> None:
    """Refuse an option given outside the mode it applies to (:data:`MODES`)."""
    rules = MODES.get(args.command, [])
    if not rules:
        return
    given, flags = given_options(argv)
    for dest, applies, mode in rules:
        if dest in given and not applies(args):
            raise InputError(f"{flags[dest]} applies only {mode(args) if callable(mode) else mode}")


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has gone (``bnmft ... | head -1``): poll reports POLLERR."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor (a captured stdout): not a pipe's end
        return False


def _discard_stdout() -> None:
    """Point stdout's descriptor at /dev/null: what is still buffered cannot be delivered, and Python's own flush at
    exit must not fail again (with a second message)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):  # no descriptor (a captured stdout): no file to point elsewhere
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


class _NamedStdout:
    """sys.stdout while a command runs: an error writing it (a full disk, ``>/dev/full``) names stdout - an OSError
    from ``print`` carries no file name - and its output, lost, is discarded. A reader that has gone
    (BrokenPipeError) passes through, for :func:`main`."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _lost(self, err: OSError) -> InputError:
        _discard_stdout()
        return InputError(f"cannot write the output to stdout: {err.strerror or err}")

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as err:
            raise self._lost(err) from err

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as err:
            raise self._lost(err) from err

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...: the stream's own
        return getattr(self._stream, name)


#: the exit status when stdout's reader has gone: 128 + SIGPIPE, what the shell reports for a tool SIGPIPE ends
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if sys.stdout is None:  # started with stdout closed (bnmft ... >&-): every result would be lost
        print(f"bnmft {args.command}: error: standard output is closed, so the results would be lost; redirect it "
              "to a file (or to /dev/null)", file=sys.stderr)  # fmt: skip
        return 2
    stdout, sys.stdout = sys.stdout, _NamedStdout(sys.stdout)
    try:
        check_modes(argv, args)
        for attr, flag, directory, suffix in OUTPUTS.get(args.command, []):
            if getattr(args, attr, None) is not None:  # every output checked before any work starts ('' included)
                setattr(
                    args, attr, str(check_output_path(getattr(args, attr), flag, directory=directory, suffix=suffix))
                )
        code = args.func(args)
        sys.stdout.flush()  # what is buffered is delivered before the exit status says so (or the error names stdout)
        return code
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # another pipe (a worker's): a bug, with its traceback
        _discard_stdout()  # the reader took what it wanted (| head): stop quietly, as Unix tools do
        return EXIT_BROKEN_PIPE
    except InputError as err:
        if args.debug or os.environ.get("BNMFT_DEBUG", "") not in ("", "0"):
            traceback.print_exception(err)  # with its cause: the user's exception where there is one
        print(f"bnmft {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in USER_FILE_ERRNOS:
            raise
        given = [f"{flag} {getattr(args, attr)}" for attr, flag, _, _ in OUTPUTS.get(args.command, [])]
        given = [g for g, (attr, *_) in zip(given, OUTPUTS.get(args.command, []), strict=True) if getattr(args, attr)]
        where = err.filename or (given[0] if len(given) == 1 else " or ".join(given) or "a file")
        print(f"bnmft {args.command}: error: cannot read or write {where}: {err.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bnmft: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout = stdout


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
