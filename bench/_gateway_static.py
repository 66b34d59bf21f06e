#!/usr/bin/env python3
"""The gateway of bench/gateway.py: slm-gateway's app in front of one runtime, with a fixed catalog, no Kubernetes.

    .venv/bin/python bench/_gateway_static.py --port G --upstream-port P [--namespace bench] [--name gemma3]
        [--served-name bench]

``slm_gateway.app.create_app`` gets a static catalog feed: one SLMDeployment ``<namespace>/<name>`` in phase Ready
whose runtime answers to ``--served-name``, and one EndpointSlice with one ready endpoint, 127.0.0.1:P. Both come
as full lists (Resync), so the gateway's /readyz answers 200 at once. uvicorn runs it with the settings that
``slm-gateway`` itself uses (no access log, no Server or Date header of its own), in its own process, so the
gateway's event loop shares no interpreter with the benchmark's load generator.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from slm_gateway.app import create_app
from slm_gateway.catalog import SERVICE_NAME_LABEL, Event, Kind, Resync
from slm_gateway.settings import GatewaySettings


def slm_object(namespace: str, name: str, served_name: str) -> dict[str, Any]:
    """The SLMDeployment as the apiserver would send it (the fields the gateway reads)."""
    return {
        "apiVersion": "slm-operator.io/v1alpha1",
        "kind": "SLMDeployment",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"model": {"source": f"file:///models/{served_name}.gguf", "name": served_name}},
        "status": {"phase": "Ready"},
    }


def slice_object(namespace: str, service: str, port: int) -> dict[str, Any]:
    """The EndpointSlice of the model's Service: one ready endpoint on loopback, port named ``http``."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"namespace": namespace, "name": f"{service}-static", "labels": {SERVICE_NAME_LABEL: service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
    }


class StaticFeed:
    """A CatalogFeed (slm_gateway.app) that delivers a fixed list of events once, at start."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events

    def start(self, apply: Callable[[Event], None]) -> None:
        for event in self.events:
            apply(event)

    def stop(self) -> None:
        pass


def feed_for(namespace: str, name: str, served_name: str, upstream_port: int) -> StaticFeed:
    return StaticFeed(
        [
            Resync(Kind.SLM, None, (slm_object(namespace, name, served_name),)),
            Resync(Kind.SLICE, None, (slice_object(namespace, name, upstream_port),)),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True, help="the runtime's port on 127.0.0.1")
    parser.add_argument("--namespace", default="bench")
    parser.add_argument("--name", default="gemma3")
    parser.add_argument("--served-name", default="bench", help="the runtime's --model-name")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = GatewaySettings(host="127.0.0.1", port=args.port)
    app = create_app(settings, feed=feed_for(args.namespace, args.name, args.served_name, args.upstream_port))
    config = uvicorn.Config(  # as slm_gateway.cli.run configures it
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level.lower(),
        access_log=False,
        server_header=False,
        date_header=False,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
