"""``slm-runtime pull SOURCE``: the prefetch init container's program (and what ``slm pull`` calls).

Prints the PulledModel JSON on stdout (the record ``<file>.slm.json`` beside the model holds the same), logs
to stderr, and exits 0, or with the failure's code: 2 bad arguments, 3 not found, 4 unauthorized,
5 digest mismatch, 6 offline and not cached, 7 network retries exhausted, 8 cache volume too small,
1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from slm_runtime.source import SCHEMES, SourceError

from .api import pull
from .errors import PullError
from .progress import LogProgress, NullProgress, Progress, ProgressFactory, TerminalProgress, auto_progress
from .settings import FetchSettings, default_dest

__all__ = ["EXIT_USAGE", "register", "run"]

log = logging.getLogger(__name__)

EXIT_USAGE = 2


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``pull`` subcommand to ``slm-runtime``'s subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "pull",
        help="fetch a model into the cache, verified",
        description="Fetch a model into the cache (verified, resumable, once per cache) and print its "
        "PulledModel JSON on stdout; the same JSON is kept beside the model as <file>.slm.json.",
        epilog="sources: "
        + ", ".join(f"{s}://" for s in SCHEMES)
        + ". Environment: HF_TOKEN, HF_ENDPOINT, SLM_OLLAMA_REGISTRY, SLM_PULL_AUTHORIZATION, SLM_PVC_ROOT,"
        " SLM_CACHE_HOME; HTTPS_PROXY/NO_PROXY and SSL_CERT_FILE (a mirror's CA) are honoured."
        " Exit codes: 2 bad arguments, 3 not found, 4 unauthorized, 5 digest mismatch,"
        " 6 offline and not cached, 7 network retries exhausted, 8 cache too small, 1 other.",
    )
    parser.add_argument("source", metavar="SOURCE", help="model source, e.g. ollama://qwen2.5:0.5b")
    parser.add_argument("--dest", type=Path, default=None, help="cache folder (default: $SLM_CACHE_HOME/models)")
    parser.add_argument("--sha256", default=None, help="expected digest (hex or sha256:hex); refuse any other")
    parser.add_argument("--offline", action="store_true", help="never use the network; fail unless cached")
    parser.add_argument("--verify", action="store_true", help="re-hash a cached model instead of trusting its record")
    parser.add_argument("--output", type=Path, default=None, help="also write the result JSON to this file")
    parser.add_argument(
        "--termination-log",
        type=Path,
        default=None,
        help="write the error here on failure (/dev/termination-log)",
    )
    parser.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto", help="progress display")
    net = parser.add_argument_group("endpoints and network (override the environment)")
    net.add_argument("--ollama-registry", default=None, metavar="URL", help="Ollama registry or mirror base URL")
    net.add_argument("--hf-endpoint", default=None, metavar="URL", help="Hugging Face endpoint or mirror base URL")
    net.add_argument(
        "--auth-env",
        default=None,
        metavar="VAR",
        help="environment variable holding the Authorization header value",
    )
    net.add_argument("--pvc-root", type=Path, default=None, help="where pvc:// claims are mounted")
    net.add_argument("--connect-timeout", type=float, default=None, metavar="S")
    net.add_argument("--read-timeout", type=float, default=None, metavar="S")
    net.add_argument("--max-attempts", type=int, default=None, metavar="N", help="tries per request (default 6)")
    net.add_argument("--lock-timeout", type=float, default=None, metavar="S", help="wait for another puller at most S")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``pull`` from parsed arguments; returns the exit code."""
    if not log.isEnabledFor(logging.DEBUG):
        # httpx logs every request URL at INFO, signed CDN URLs included: keep those out of pod logs
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = FetchSettings.from_env(
            ollama_registry=args.ollama_registry,
            hf_endpoint=args.hf_endpoint,
            http_authorization=_env_value(args.auth_env),
            pvc_root=args.pvc_root,
            connect_timeout=args.connect_timeout,
            read_timeout=args.read_timeout,
            max_attempts=args.max_attempts,
            lock_timeout=args.lock_timeout,
        )
        model = pull(
            args.source,
            args.dest or default_dest(),
            sha256=args.sha256,
            offline=args.offline,
            verify=args.verify,
            progress=_progress(args.progress),
            settings=settings,
        )
    except (SourceError, ValueError) as exc:
        return _fail(args, str(exc), EXIT_USAGE)
    except PullError as exc:
        return _fail(args, str(exc), exc.exit_code)
    except OSError as exc:  # the cache volume: full, read-only, permissions
        return _fail(args, f"{args.source}: {exc}", 1)
    text = model.to_json()
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    if args.output is not None:
        try:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            return _fail(args, f"--output {args.output}: {exc.strerror}", 1)
    if args.termination_log is not None:
        summary = model.model_dump_json(by_alias=True, exclude={"metadata"})
        _write_quietly(args.termination_log, summary + "\n")
    return 0


def _env_value(name: str | None) -> str | None:
    if not name:
        return None
    value = os.environ.get(name)
    if value is None:
        raise ValueError(f"--auth-env {name}: that environment variable is not set")
    return value


def _progress(mode: str) -> ProgressFactory:
    def bar(label: str) -> Progress:
        return TerminalProgress(label, sys.stderr)

    def lines(label: str) -> Progress:
        return LogProgress(label)

    def none(label: str) -> Progress:
        return NullProgress()

    return {"auto": auto_progress, "bar": bar, "log": lines, "none": none}[mode]


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    log.error("%s", message)
    if args.termination_log is not None:
        _write_quietly(args.termination_log, message + "\n")
    return code


def _write_quietly(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        log.warning("could not write %s: %s", path, exc)
