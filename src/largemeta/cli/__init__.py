"""The ``largemeta`` command line.

Each command group lives in its own module exposing ``register(subparsers)``; the handler it installs
(``set_defaults(func=...)``) takes the parsed namespace and returns an exit code. Bad input raises
:class:`largemeta.errors.UserError`, printed here as one line on stderr with exit code 2. SIGTERM and SIGINT
are handled (:mod:`largemeta.signals`): a command that stopped resumably exits 75, any other 128 + the
signal.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import NoReturn

from largemeta import console, provenance
from largemeta._version import __version__
from largemeta.errors import Preempted, UserError

# Command-group modules, in the order their help lists them.
COMMAND_MODULES = (
    "largemeta.cli.experiment",
    "largemeta.cli.train",
    "largemeta.cli.evaluate",
    "largemeta.cli.data",
    "largemeta.cli.synthetic",
    "largemeta.cli.config_command",
)


RESUMABLE = ("train", "experiment", "demo")
"""Commands whose work survives a signal (exit 75: run them again); they also say so with resumable=True."""


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
    _add_verbosity(parser)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    """``-q`` / ``-v`` on the top level and on every command (``largemeta train -q ...``)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q",
        "--quiet",
        dest="verbosity",
        action="store_const",
        const=-1,
        default=argparse.SUPPRESS,
        help="show warnings and errors only (no header, progress or notices)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="store_const",
        const=1,
        default=argparse.SUPPRESS,
        help="show debug detail too",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                _add_verbosity(sub)


def main(argv: Sequence[str] | None = None) -> int:
    from largemeta import signals

    raw = list(sys.argv[1:] if argv is None else argv)
    provenance.set_command_line(["largemeta", *raw])
    parsed: list[argparse.Namespace] = []
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        with signals.handling():
            try:
                return _run(argv, raw, parsed)
            except KeyboardInterrupt as err:  # SIGINT, or SIGTERM (errors.Stopped), even while reporting
                return _stopped(err, raw, parsed[0] if parsed else None)
    finally:
        warnings.formatwarning = formatwarning


def run() -> NoReturn:
    """The ``largemeta`` command (and ``python -m largemeta``): :func:`main`, then exit with its code; a
    process that joined a process group skips interpreter finalization
    (:func:`largemeta.train.distributed.leave`)."""
    code = main()
    distributed = sys.modules.get("largemeta.train.distributed")
    if distributed is not None and distributed.joined():
        distributed.leave(code)
    sys.exit(code)


def _run(argv: Sequence[str] | None, raw: list[str], parsed: list[argparse.Namespace]) -> int:
    try:
        args = build_parser().parse_args(argv)
        parsed.append(args)
        with console.session(getattr(args, "verbosity", 0)):
            return int(args.func(args) or 0)
    except UserError as err:
        if "--debug" in raw:
            traceback.print_exc()
        print(f"largemeta: error: {err}", file=sys.stderr)
        return err.exit_code
    except Preempted as err:
        print(f"largemeta: {err}", file=sys.stderr)
        return err.exit_code


def _stopped(err: KeyboardInterrupt, raw: list[str], args: argparse.Namespace | None) -> int:
    """A signal before a command could say more: a resumable command has nothing half done (exit 75, run it
    again); any other exits 128 + the signal."""
    signum = getattr(err, "signum", signal.SIGINT)
    name = signal.Signals(signum).name
    command = next((a for a in raw if not a.startswith("-")), None)
    if getattr(args, "resumable", command in RESUMABLE):
        print(f"largemeta: stopped by {name} before work began; run the same command again", file=sys.stderr)
        return Preempted.exit_code
    print(f"largemeta: {'interrupted' if signum == signal.SIGINT else f'stopped by {name}'}", file=sys.stderr)
    return 128 + signum


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"largemeta: warning: {message}\n"


if __name__ == "__main__":  # pragma: no cover
    run()
