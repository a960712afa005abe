"""``python -m algorithms.serving --model PATH [--host 127.0.0.1] [--port 8080]``: serve one model.

SageMaker's variables work too: ``SAGEMAKER_BIND_TO_PORT``, ``SAGEMAKER_MAX_PAYLOAD_IN_MB``,
``SM_MODEL_DIR``; ``SPARK_ML_PLUGINS`` (comma-separated modules or ``.py`` files) registers extra
algorithms before the model loads.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(prog="python -m algorithms.serving", description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        default=env.get("SM_MODEL_DIR", "/opt/ml/model"),
        help="model artifact folder or URI (default: $SM_MODEL_DIR or /opt/ml/model)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=int,
        default=int(env.get("SAGEMAKER_BIND_TO_PORT", "8080")),
        help="port (0 picks a free one; see --ready-file)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=int(env.get("SPARK_ML_SERVING_THREADS", "1")),
        help="BLAS/OpenMP threads in this process (default 1)",
    )
    p.add_argument(
        "--max-payload-mb",
        type=float,
        default=float(env.get("SAGEMAKER_MAX_PAYLOAD_IN_MB", "6")),
        help="largest request body in MiB (413 above it; default 6)",
    )
    p.add_argument(
        "--plugin",
        action="append",
        default=[x for x in env.get("SPARK_ML_PLUGINS", "").split(",") if x],
        help="module or .py file registering extra algorithms (repeatable)",
    )
    p.add_argument("--ready-file", help="write {pid, port} here once serving")
    p.add_argument(
        "--handoff",
        metavar="NAME",
        default=env.get("SPARK_ML_HANDOFF"),
        help="also take invocations handed over by an endpoint router on this abstract Unix socket "
        "(shared-memory bodies, see algorithms/serving/handoff.py; Linux; default $SPARK_ML_HANDOFF)",
    )
    p.add_argument("--parent-pid", type=int, help="exit when this parent process goes away")
    p.add_argument(
        "--graceful-timeout", type=float, default=30.0, help="seconds in-flight requests get on SIGTERM"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from .server import cap_threads

    cap_threads(args.threads)  # before numpy and friends load
    import logging

    from .server import bind, is_loopback, load_plugins, run_asgi

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    load_plugins(args.plugin)
    from ..builtin import load_model
    from .app import InferenceApp

    try:
        model = load_model(args.model)
    except Exception as exc:
        print(f"cannot load the model at {args.model}: {exc}", file=sys.stderr)
        sys.exit(2)
    if not is_loopback(args.host):
        logging.getLogger("algorithms.serving").warning(
            "binding to %s: the model server has no authentication; put it behind an endpoint router",
            args.host,
        )
    app = InferenceApp(model, int(args.max_payload_mb * 1024 * 1024))
    sock = bind(args.host, args.port)
    on_start, extra = None, None
    if args.handoff:
        from .handoff import AVAILABLE, HandoffServer

        if AVAILABLE:
            handoff = HandoffServer(app, args.handoff)
            extra = {"handoff": args.handoff}

            async def on_start() -> None:
                import asyncio

                handoff.start(asyncio.get_running_loop())
    run_asgi(
        app,
        sock,
        ready_file=args.ready_file,
        parent_pid=args.parent_pid,
        graceful_timeout=args.graceful_timeout,
        on_start=on_start,
        ready_extra=extra,
    )


if __name__ == "__main__":
    main()
