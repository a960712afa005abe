"""``spark-ml jobs …``: list, describe, follow and stop training jobs from the shell."""

from __future__ import annotations

import argparse
import json
import time


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("jobs", help="training jobs: list, describe, logs, stop")
    sub = parser.add_subparsers(dest="jobs_command", metavar="COMMAND", required=True)
    p = sub.add_parser("list", help="recent training jobs")
    p.add_argument("--status", choices=["InProgress", "Completed", "Failed", "Stopping", "Stopped"])
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("describe", help="one job: settings, timings, metrics, failure reason (JSON)")
    p.add_argument("name")
    p.add_argument("--metrics", action="store_true", help="include the metric time series")
    p.set_defaults(func=cmd_describe)
    p = sub.add_parser("logs", help="the workers' log lines")
    p.add_argument("name")
    p.add_argument("--tail", type=int, default=None)
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser("stop", help="stop a running job (its Spark stage is cancelled)")
    p.add_argument("name")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for it to end (0: don't wait)")
    p.set_defaults(func=cmd_stop)
    return parser


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def cmd_list(args) -> int:
    from . import jobs

    rows = jobs.list_jobs(limit=args.limit, status=args.status)
    if not rows:
        print("no training jobs")
        return 0
    print(f"{'NAME':<52}{'ALGORITHM':<24}{'STATUS':<12}{'WORKERS':>8}{'STARTED':>21}{'SECONDS':>9}")
    for job in rows:
        seconds = f"{job.duration:.1f}" if job.duration is not None else "-"
        print(f"{job.name:<52}{job.algorithm:<24}{job.status:<12}{job.num_workers:>8}{_when(job.started_at):>21}"
              f"{seconds:>9}")
    return 0


def cmd_describe(args) -> int:
    from dataclasses import asdict

    from . import jobs

    try:
        job = jobs.get(args.name)
    except KeyError as exc:
        print(exc.args[0])
        return 1
    doc = asdict(job)
    doc["duration_seconds"] = job.duration
    if args.metrics:
        doc["metric_series"] = jobs.metric_series(args.name)
    print(json.dumps(doc, indent=2, default=str))
    return 0


def cmd_logs(args) -> int:
    from . import jobs

    for line in jobs.logs(args.name, tail=args.tail):
        print(f"[worker {line['rank']}] {line['line']}")
    return 0


def cmd_stop(args) -> int:
    from . import jobs

    try:
        job = jobs.request_stop(args.name)
    except KeyError as exc:
        print(exc.args[0])
        return 1
    deadline = time.time() + args.wait
    while job.status not in jobs.TERMINAL and time.time() < deadline:
        time.sleep(0.5)
        job = jobs.get(args.name)
    print(f"{job.name}: {job.status}")
    return 0 if job.status in jobs.TERMINAL or args.wait == 0 else 2
