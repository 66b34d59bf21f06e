"""The flags that point `slm run`, `list`, `ps`, `show` and `bench` at slm-gateway (cluster models), and the client
they make. Without them (and without $SLM_GATEWAY) those commands work on this machine, as before."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TextIO

from slm_operator.local.remote import (
    DEFAULT_GATEWAY_SERVICE,
    DEFAULT_WAKE_TIMEOUT,
    GATEWAY_ENV,
    GATEWAY_KEY_HEADER,
    GATEWAY_SERVICE_ENV,
    KUBE,
    GatewayClient,
    GatewayConfigError,
    choose_gateway,
    gateway_endpoint,
)

__all__ = ["EPILOG", "gateway_arguments", "gateway_client", "status_writer"]

EPILOG = (
    "Cluster models: --host URL, or --context [NAME] (the current or named kube context, through the API "
    f"server's service proxy), or ${GATEWAY_ENV}=URL|{KUBE}|{KUBE}:NAME, point run, list, ps, show and bench at "
    "slm-gateway: `slm run team-a/assistant` then answers from the SLMDeployment assistant in namespace team-a."
)


def gateway_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "cluster models (slm-gateway)",
        f"MODEL is a gateway model name (NAMESPACE/NAME, or NAME when unique) when a flag below or ${GATEWAY_ENV} "
        "names a gateway; a file or source URI still runs here.",
    )
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--host", metavar="URL", default=None, help=f"the gateway's URL (default: ${GATEWAY_ENV} when it is a URL)"
    )
    where.add_argument(
        "--context",
        nargs="?",
        const="",
        default=None,
        metavar="NAME",
        help=f"reach the gateway through this kube context's API server (no NAME: the current context; "
        f"${GATEWAY_ENV}={KUBE} or {KUBE}:NAME). Write --context=NAME before MODEL",
    )
    group.add_argument(
        "--gateway-service",
        metavar="NS/NAME[:PORT]",
        default=None,
        help=f"the gateway Service behind --context (default: ${GATEWAY_SERVICE_ENV}, else "
        f"{DEFAULT_GATEWAY_SERVICE}, port 'http')",
    )
    group.add_argument("--kubeconfig", metavar="PATH", default=None, help="kubeconfig (default: $KUBECONFIG)")
    group.add_argument(
        "--wake-timeout",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_WAKE_TIMEOUT,
        help=f"how long to keep retrying while a model wakes from zero (default {DEFAULT_WAKE_TIMEOUT:.0f}). "
        f"--api-key is the gateway's key (sent as {GATEWAY_KEY_HEADER} through --context)",
    )


def status_writer(stream: TextIO, tty: bool | None = None) -> Callable[[str], None]:
    """A terminal gets a transient status line ('' erases it); elsewhere each new 'waking …' line is printed once."""
    interactive = stream.isatty() if tty is None else tty
    last = [""]

    def write(message: str) -> None:
        if interactive:
            stream.write(f"\r{message}\x1b[K")
        elif message.startswith("waking ") and message != last[0]:
            stream.write(message + "\n")
        else:
            return
        last[0] = message
        stream.flush()

    return write


def gateway_client(args: argparse.Namespace) -> GatewayClient | None:
    """The gateway client the flags or $SLM_GATEWAY ask for; None for the local commands (and with --url)."""
    host: str | None = args.host
    context: str | None = args.context
    if getattr(args, "url", None):
        if host or context is not None:
            raise GatewayConfigError("--url names a local server, --host and --context a gateway: pass one")
        return None
    choice = choose_gateway(host, context)
    if choice is None:
        return None
    endpoint = gateway_endpoint(choice, service=args.gateway_service, kubeconfig=args.kubeconfig, api_key=args.api_key)
    return GatewayClient(endpoint, wake_timeout=args.wake_timeout, notify=status_writer(sys.stderr))
