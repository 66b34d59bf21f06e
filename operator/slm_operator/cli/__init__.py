"""`slm`: the command for people: validate manifests, print the CRD, (later) serve models locally and run the
operator.

Each group of subcommands lives in its own module and registers itself through ``register(subparsers)``,
which adds parsers whose ``func`` takes the parsed arguments and returns an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from slm_operator import __version__
from slm_operator.cli import local, manifests, operator
from slm_operator.cli.gateway import EPILOG

__all__ = ["build_parser", "main"]

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

COMMAND_GROUPS: tuple[Register, ...] = (manifests.register, operator.register, local.register)


def _version(_: argparse.Namespace) -> int:
    sys.stdout.write(f"slm {__version__}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slm",
        description="Small language models on Kubernetes and on your laptop, from one manifest.",
        epilog=EPILOG,
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING, ERROR)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    version = subparsers.add_parser("version", help="print the version")
    version.set_defaults(func=_version)
    for register in COMMAND_GROUPS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
