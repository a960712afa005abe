"""The ``spark-ml`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spark-ml", description="SageMaker's built-in algorithms on your Spark")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the end-to-end demo on local Spark")
    demo.add_argument("--master", default="local[2]")
    demo.add_argument("--workdir", default=None, help="where to keep the demo's files (default: a temp folder)")
    demo.set_defaults(handler=lambda a: _demo(a))

    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


def _demo(args) -> int:
    from .demo import run

    run(master=args.master, workdir=args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
