"""``spark-ml endpoints …``: manage models, endpoint configs and endpoints from the shell.

``add_parser(subparsers)`` adds the ``endpoints`` command to the main ``spark-ml`` parser; each
subcommand's handler is set as ``func`` and returns the process exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "endpoints",
        help="inference endpoints: models, configs, endpoints",
        description="Manage inference endpoints, their models and endpoint configs.",
    )
    sub = parser.add_subparsers(dest="endpoints_command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="list endpoints")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("describe", help="describe an endpoint (JSON)")
    p.add_argument("name")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("create", help="create an endpoint from a config, or from --model PATH directly")
    p.add_argument("name")
    p.add_argument("--config", help="endpoint config name")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[VARIANT=]PATH[:COUNT[:WEIGHT]]",
        help="artifact to serve as a variant (repeatable; creates the models and a config)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument(
        "--token", help="bearer token clients must send; 'generate' makes one (required off loopback)"
    )
    p.add_argument("--router-workers", type=int, help="router processes (default: half the CPUs, 1-4)")
    p.add_argument("--max-payload-mb", type=float, default=6.0)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request before a 504")
    p.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="environment of the instances"
    )
    p.set_defaults(func=cmd_create)

    for name, helptext, func in (
        ("delete", "stop an endpoint and remove it", cmd_delete),
        ("stop", "stop an endpoint's processes, keep it registered", cmd_stop),
        ("start", "restart a stopped endpoint", cmd_start),
        ("token", "print an endpoint's bearer token", cmd_token),
        ("metrics", "per-variant invocations, errors and latencies", cmd_metrics),
        ("logs", "print the supervisor's log", cmd_logs),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("name")
        p.set_defaults(func=func)

    p = sub.add_parser("update", help="move an endpoint to another config (no failed request)")
    p.add_argument("name")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_update)

    p = sub.add_parser("update-weights", help="set a variant's weight and/or instance count")
    p.add_argument("name")
    p.add_argument("--variant", required=True)
    p.add_argument("--weight", type=float)
    p.add_argument("--instances", type=int)
    p.set_defaults(func=cmd_update_weights)

    p = sub.add_parser("autoscale", help="target tracking on invocations per instance per minute")
    p.add_argument("name")
    p.add_argument("--variant", required=True)
    p.add_argument("--target", type=float, default=70.0, help="invocations per instance per minute")
    p.add_argument("--min", type=int, default=1)
    p.add_argument("--max", type=int, default=4)
    p.add_argument("--scale-in-cooldown", type=float, default=300.0)
    p.add_argument("--scale-out-cooldown", type=float, default=300.0)
    p.add_argument("--off", action="store_true", help="remove the policy")
    p.set_defaults(func=cmd_autoscale)

    p = sub.add_parser("invoke", help="send one request; the body from --body or stdin")
    p.add_argument("name")
    p.add_argument("--content-type", default="text/csv")
    p.add_argument("--accept")
    p.add_argument("--variant", help="target variant")
    p.add_argument("--body", help="request body (default: stdin)")
    p.set_defaults(func=cmd_invoke)

    p = sub.add_parser("create-model", help="register a model (artifact, server command or URL)")
    p.add_argument("name")
    p.add_argument("--model-data", help="artifact folder or URI")
    p.add_argument("--command", help="your own model server's command line (gets SAGEMAKER_BIND_TO_PORT)")
    p.add_argument("--url", help="a running server's URL")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_create_model)

    p = sub.add_parser("create-config", help="create an endpoint config")
    p.add_argument("name")
    p.add_argument("--variant", action="append", required=True, metavar="NAME=MODEL[:COUNT[:WEIGHT]]")
    p.set_defaults(func=cmd_create_config)

    for name, helptext, func in (
        ("list-models", "list registered models", cmd_list_models),
        ("list-configs", "list endpoint configs", cmd_list_configs),
    ):
        sub.add_parser(name, help=helptext).set_defaults(func=func)
    for name, helptext, func in (
        ("delete-model", "remove a model from the registry", cmd_delete_model),
        ("delete-config", "remove an endpoint config", cmd_delete_config),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("name")
        p.set_defaults(func=func)
    return parser


def _h():
    """The control plane's API, imported when a command runs (``spark-ml --help`` stays fast)."""
    from .. import endpoints

    return endpoints


def _print_json(doc) -> None:
    print(json.dumps(doc, indent=2, default=str))


def _env(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--env {item!r}: use KEY=VALUE")
        out[key] = value
    return out


def cmd_list(args) -> int:
    rows = _h().list_endpoints()
    if not rows:
        print("no endpoints")
        return 0
    print(f"{'NAME':24} {'STATUS':14} {'URL':28} VARIANTS")
    for e in rows:
        variants = ", ".join(
            f"{v.variant_name}(w={v.current_weight if v.current_weight is not None else '-'}, "
            f"n={v.current_instance_count})"
            for v in e.variants
        )
        print(f"{e.name:24} {e.status:14} {e.url or '-':28} {variants}")
    return 0


def cmd_describe(args) -> int:
    _print_json(asdict(_h().describe_endpoint(args.name)))
    return 0


def _variant_spec(text: str, default_name: str) -> tuple[str, str, int, float]:
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = default_name, text
    # PATH[:COUNT[:WEIGHT]], where PATH may be a URI with colons of its own (s3://…, hdfs://nn:8020/…): only
    # trailing fields that are numbers (or empty) are the count and weight
    fields = rest.split(":")
    numbers: list[str] = []
    while len(fields) > 1 and len(numbers) < 2 and _numeric_or_empty(fields[-1]):
        numbers.insert(0, fields.pop())
    path, count, weight = ":".join(fields), 1, 1.0
    if numbers and numbers[0]:
        count = int(numbers[0])
    if len(numbers) > 1 and numbers[1]:
        weight = float(numbers[1])
    return name, path, count, weight


def _numeric_or_empty(text: str) -> bool:
    try:
        float(text or "0")
    except ValueError:
        return False
    return True


def cmd_create(args) -> int:
    h = _h()
    token = True if args.token == "generate" else args.token
    config = args.config
    if bool(config) == bool(args.model):
        raise ValueError("give --config or --model (one or more), not both")
    if args.model:
        suffix = time.strftime("%Y%m%d%H%M%S")
        variants = []
        for k, spec in enumerate(args.model):
            name, path, count, weight = _variant_spec(
                spec, "AllTraffic" if len(args.model) == 1 else f"variant-{k + 1}"
            )
            model = f"{args.name}-{name}-{suffix}".replace("_", "-")[:63]
            h.create_model(model, path, environment=_env(args.env))
            variants.append(h.ProductionVariant(name, model, count, weight))
        config = f"{args.name}-{suffix}"
        h.create_endpoint_config(config, variants)
    d = h.create_endpoint(
        args.name,
        config,
        host=args.host,
        port=args.port,
        auth_token=token,
        router_workers=args.router_workers,
        max_payload_mb=args.max_payload_mb,
        timeout=args.timeout,
    )
    print(
        f"endpoint {d.name} is {d.status} at {d.url}"
        + (f" (bearer token: spark-ml endpoints token {d.name})" if d.auth == "bearer" else "")
    )
    return 0


def cmd_delete(args) -> int:
    _h().delete_endpoint(args.name)
    print(f"endpoint {args.name} deleted")
    return 0


def cmd_stop(args) -> int:
    _h().stop_endpoint(args.name)
    print(f"endpoint {args.name} stopped")
    return 0


def cmd_start(args) -> int:
    d = _h().start_endpoint(args.name)
    print(f"endpoint {d.name} is {d.status} at {d.url}")
    return 0


def cmd_token(args) -> int:
    token = _h().endpoint_token(args.name)
    print(token if token else f"endpoint {args.name} needs no token")
    return 0


def cmd_metrics(args) -> int:
    metrics = _h().endpoint_metrics(args.name)
    print(format_metrics(metrics))
    return 0


def format_metrics(metrics: dict) -> str:
    total = sum(m.invocations for m in metrics.values()) or 1.0
    lines = [
        f"{'VARIANT':16} {'INVOCATIONS':>11} {'SHARE':>6} {'4XX':>5} {'5XX':>5} {'INSTANCES':>9} "
        f"{'MODEL ms (mean/p50/p99)':>25} {'OVERHEAD ms':>11}"
    ]
    for m in sorted(metrics.values(), key=lambda m: m.variant):
        lines.append(
            f"{m.variant:16} {m.invocations:11.0f} {100 * m.invocations / total:5.1f}% {m.errors_4xx:5.0f} "
            f"{m.errors_5xx:5.0f} {m.instances:9.0f} {m.model_latency_mean_ms:8.2f}/"
            f"{m.model_latency_p50_ms:6.2f}/{m.model_latency_p99_ms:8.2f} {m.overhead_latency_mean_ms:11.3f}"
        )
    return "\n".join(lines)


def cmd_logs(args) -> int:
    import os

    from .registry import Registry

    registry = Registry()
    try:
        run_dir = registry.endpoint(args.name).settings["run_dir"]
    finally:
        registry.close()
    path = os.path.join(run_dir, "supervisor.log")
    with open(path) as f:
        sys.stdout.write(f.read())
    return 0


def cmd_update(args) -> int:
    d = _h().update_endpoint(args.name, args.config)
    print(f"endpoint {d.name} now serves {d.config_name}")
    return 0


def cmd_update_weights(args) -> int:
    change = {}
    if args.weight is not None:
        change["weight"] = args.weight
    if args.instances is not None:
        change["instance_count"] = args.instances
    d = _h().update_endpoint_weights_and_capacities(args.name, {args.variant: change})
    for v in d.variants:
        print(f"{v.variant_name}: weight {v.current_weight}, {v.current_instance_count} instance(s)")
    return 0


def cmd_autoscale(args) -> int:
    h = _h()
    if args.off:
        h.delete_scaling_policy(args.name, args.variant)
        print(f"autoscaling off for {args.name}/{args.variant}")
        return 0
    policy = h.put_scaling_policy(
        args.name,
        args.variant,
        target_value=args.target,
        min_capacity=args.min,
        max_capacity=args.max,
        scale_in_cooldown=args.scale_in_cooldown,
        scale_out_cooldown=args.scale_out_cooldown,
    )
    print(f"autoscaling {args.name}/{args.variant}: {policy}")
    return 0


def cmd_invoke(args) -> int:
    body = args.body.encode() if args.body is not None else sys.stdin.buffer.read()
    result = _h().invoke_endpoint(
        args.name, body, args.content_type, accept=args.accept, target_variant=args.variant
    )
    print(f"variant: {result.variant}", file=sys.stderr)
    sys.stdout.buffer.write(result.body)
    if not result.body.endswith(b"\n"):
        sys.stdout.write("\n")
    return 0


def cmd_create_model(args) -> int:
    import shlex

    model = _h().create_model(
        args.name,
        args.model_data,
        command=shlex.split(args.command) if args.command else None,
        url=args.url,
        environment=_env(args.env),
    )
    print(f"model {model.name} ({model.kind}) registered")
    return 0


def cmd_create_config(args) -> int:
    h = _h()
    variants = []
    for spec in args.variant:
        name, model, count, weight = _variant_spec(spec, "AllTraffic")
        variants.append(h.ProductionVariant(name, model, count, weight))
    h.create_endpoint_config(args.name, variants)
    print(f"endpoint config {args.name} created")
    return 0


def cmd_list_models(args) -> int:
    for m in _h().list_models():
        print(f"{m.name:40} {m.kind:9} {m.model_data or m.url or ' '.join(m.command or [])}")
    return 0


def cmd_list_configs(args) -> int:
    for c in _h().list_endpoint_configs():
        print(
            f"{c.name:40} "
            + ", ".join(
                f"{v.variant_name}={v.model}:{v.initial_instance_count}:{v.initial_weight:g}"
                for v in c.variants
            )
        )
    return 0


def cmd_delete_model(args) -> int:
    _h().delete_model(args.name)
    return 0


def cmd_delete_config(args) -> int:
    _h().delete_endpoint_config(args.name)
    return 0


def run(args) -> int:
    """Run a parsed ``endpoints`` command; errors print one line and exit 1."""
    try:
        return args.func(args)
    except (ValueError, LookupError, RuntimeError, OSError) as exc:
        print(f"spark-ml endpoints {args.endpoints_command}: {exc}", file=sys.stderr)
        return 1
