"""The ``spark-ml`` command line: ``demo``, ``jobs`` and ``endpoints``."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from . import cli_jobs
    from .endpoints import cli as cli_endpoints

    parser = argparse.ArgumentParser(prog="spark-ml", description="SageMaker's algorithms and hosting on Spark")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = sub.add_parser("demo", help="run the end-to-end demo on local Spark")
    demo.add_argument("--master", default="local[2]")
    demo.add_argument("--workdir", default=None, help="where to keep the demo's files (default: a temp folder)")
    demo.set_defaults(func=_demo)
    cli_jobs.add_parser(sub)
    cli_endpoints.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "endpoints":
        from .endpoints.cli import run

        return run(args)
    return int(args.func(args) or 0)


def _demo(args) -> int:
    from .demo import run

    run(master=args.master, workdir=args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
