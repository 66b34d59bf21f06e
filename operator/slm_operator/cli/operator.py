"""`slm operator run`: the controller process (what the operator Deployment runs)."""

from __future__ import annotations

import argparse
import importlib
import logging

from slm_operator.settings import CONFIG_ENV, ProcessSettings

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    import kopf  # imported here: the rest of the CLI must not need the operator extra

    handlers = importlib.import_module("slm_operator.controller.handlers")
    logging.getLogger("kopf").setLevel(logging.INFO if args.verbose else logging.WARNING)
    namespaces = args.namespace or []
    handlers.WATCH_NAMESPACES[:] = namespaces or [None]  # the operator's own watches follow kopf's
    kopf.run(
        standalone=True,  # leadership comes from our Lease, not kopf's peering CRDs
        clusterwide=not namespaces,
        namespaces=namespaces,
    )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    operator = subparsers.add_parser("operator", help="run the Kubernetes operator")
    commands = operator.add_subparsers(dest="operator_command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="reconcile SLMDeployments (kubeconfig or in-cluster credentials)",
        description=f"Settings: ${CONFIG_ENV} (YAML), {ProcessSettings.describe()}.",
    )
    run.add_argument(
        "--namespace", action="append", metavar="NS", help="watch only this namespace (repeatable); default: all"
    )
    run.add_argument("--verbose", action="store_true", help="log every handler run")
    run.set_defaults(func=_run)
