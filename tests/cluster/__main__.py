"""`python -m cluster up|down|status|kubeconfig|logs|import-image` (with PYTHONPATH=tests): the developer entry
point behind `make cluster-up` (`--real-node`: also the real kubelet node and its metrics pipeline, unless
`--no-metrics-pipeline`) / `make cluster-down`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cluster import images
from cluster.controlplane import ControlPlane, ControlPlaneError
from cluster.metrics import MetricsPipelineError
from cluster.paths import REPO_ROOT
from cluster.realnode import RealNodeError, leftovers

DEFAULT_STATE_DIR = REPO_ROOT / ".state" / "cluster" / "dev"


def _progress(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "kubeconfig", "logs", "images", "import-image"])
    parser.add_argument("archives", nargs="*", type=Path, help="import-image: OCI image archives")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where PKI, etcd data, logs and the kubeconfig live (one directory per cluster)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness on `up`")
    parser.add_argument("--purge", action="store_true", help="on `down`, also delete the state directory")
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="on `up`, also start the real node (containerd + kubelet + kube-proxy; needs root) and its metrics "
        "pipeline (metrics-server, KEDA, Prometheus)",
    )
    parser.add_argument(
        "--no-metrics-pipeline",
        dest="metrics_pipeline",
        action="store_false",
        help="with --real-node: do not start the metrics pipeline",
    )
    args = parser.parse_intermixed_args(argv)
    plane = ControlPlane(args.state_dir, progress=_progress)

    if args.command == "up":
        try:
            plane.start(timeout=args.timeout)
            if args.real_node:
                plane.real_node().start(timeout=args.timeout)
                if args.metrics_pipeline:
                    plane.metrics_pipeline().start(timeout=args.timeout)
        except (ControlPlaneError, RealNodeError, MetricsPipelineError) as error:
            print(error, file=sys.stderr)
            return 1
        print(plane.kubeconfig.read_text(encoding="utf-8"))
        _progress(f"kubeconfig: {plane.kubeconfig}")
        if plane.metrics_pipeline().running():
            _progress(f"prometheus: {plane.metrics_pipeline().prometheus_url}")
        _progress(f"use it:     export KUBECONFIG={plane.kubeconfig}")
        _progress(f"tests:      SLM_TEST_KUBECONFIG={plane.kubeconfig} make test")
        return 0
    if args.command == "down":
        if args.purge:
            plane.destroy()
            _progress(f"stopped; deleted {plane.state_dir}")
        else:
            plane.stop()
            _progress(f"stopped; logs kept in {plane.state_dir / 'logs'}")
        return 0
    if args.command == "images":  # build (or find) the real node's own images; prints "reference archive"
        for image in (images.pause_image(), images.http_image()):
            print(f"{image.reference} {image.archive}")
        return 0
    if args.command == "import-image":
        node = plane.real_node()
        if not node.running():
            print(f"no real node runs for {plane.state_dir} (make cluster-up REAL_NODE=1)", file=sys.stderr)
            return 1
        try:
            for archive in args.archives:
                print("\n".join(node.import_image(archive)))
        except RealNodeError as error:
            print(error, file=sys.stderr)
            return 1
        return 0
    if args.command == "kubeconfig":
        print(plane.kubeconfig)
        return 0 if plane.kubeconfig.is_file() else 1
    if args.command == "logs":
        for name, text in plane.log_tails(lines=40).items():
            print(f"----- {name} -----\n{text}")
        return 0
    running = plane.running()
    print(f"{'running' if running else 'stopped'}: {plane.state_dir}")
    node, pipeline = plane.real_node(), plane.metrics_pipeline()
    for name, process in [*plane.processes.items(), *node.processes.items(), *pipeline.processes.items()]:
        print(f"  {name:<24} {'pid ' + str(process.pid()) if process.pid() else 'not running'}")
    if pipeline.running():
        print(f"  prometheus URL           {pipeline.prometheus_url}")
    if not node.running():
        left = leftovers()
        if left:
            print("  real node leftovers on this machine (another cluster's node, or a crashed one):")
            print("\n".join(f"    {item}" for item in left))
    return 0 if running else 3


if __name__ == "__main__":
    sys.exit(main())
