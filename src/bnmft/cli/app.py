"""The ``bnmft`` command: ``theory``, ``propagate``, ``symmetry``, ``simulate``, ``residual``, ``design``, ``conv``,
``probe``, ``sweep``, ``heatmap``, ``nonlinearities`` and ``reproduce`` (the main job).

Bad input - a :class:`~bnmft.errors.InputError` from the library, or an argument argparse refuses - ends with a
one-line message naming the argument and exit status 2. Nothing else is caught: any other exception is a bug
and shows its traceback (exit status 1).
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ..errors import InputError
from ..options import check_output_path
from . import conv, experiments, residual, simulate, theory


class OneLineParser(argparse.ArgumentParser):
    """argparse with bad arguments reported as one line (``bnmft CMD: error: ...``, exit status 2), like every other
    bad input, pointing at ``--help`` for the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="bnmft", description="Mean field theory of batch normalization.")
    parser.add_argument("--version", action="version", version=f"bnmft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for family in (theory, simulate, residual, conv, experiments):  # one module per command family
        family.add_parsers(sub)
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
    "sweep": [("store", "--store", False, "")],
    "heatmap": [("out", "--out", False, ".png")],
    "reproduce": [("out", "--out", True, "")],
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        for attr, flag, directory, suffix in OUTPUTS.get(args.command, []):
            if getattr(args, attr, None):  # every output checked before any work starts
                setattr(
                    args, attr, str(check_output_path(getattr(args, attr), flag, directory=directory, suffix=suffix))
                )
        return args.func(args)
    except InputError as err:
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
