"""The ``largemeta`` command line.

Each command group lives in its own module exposing ``register(subparsers)``; the handler it installs
(``set_defaults(func=...)``) takes the parsed namespace and returns an exit code. Bad input raises
:class:`largemeta.errors.UserError`, printed here as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from largemeta import __version__
from largemeta.errors import UserError

# Command-group modules, in the order their help lists them.
COMMAND_MODULES = (
    "largemeta.cli.experiment",
    "largemeta.cli.train",
    "largemeta.cli.evaluate",
    "largemeta.cli.data",
    "largemeta.cli.synthetic",
)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``largemeta synthetic flow: error: ...``), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = OneLineParser(
        prog="largemeta",
        description="Large-scale meta-learning with Continual Trajectory "
        "Shifting (CTS) and its first-order baselines.",
    )
    parser.add_argument("--version", action="version", version=f"largemeta {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        if args.debug:
            traceback.print_exc()
        print(f"largemeta: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("largemeta: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
