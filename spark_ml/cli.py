"""``spark-ml``: the command line (minimal entry point; subsystems add their commands with ``add_parser``)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from . import cli_endpoints

    parser = argparse.ArgumentParser(
        prog="spark-ml", description="SageMaker's algorithms and hosting on Spark"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cli_endpoints.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "endpoints":
        from .cli_endpoints import run

        return run(args)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
