"""Local mode: `slm serve`, `run`, `bench` and `import` (this module) and the cache and server commands
`pull`, `list`, `rm`, `ps`, `show` (:mod:`slm_operator.cli.local_models`). `run` and `bench` talk to slm-gateway
instead when one is named (:mod:`slm_operator.cli.gateway`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from slm_operator.api import Accelerator, ManifestError
from slm_operator.cli import local_models
from slm_operator.cli.gateway import gateway_client
from slm_operator.cli.local_models import EXPECTED_ERRORS, cache_argument, client_arguments, fail, pull_progress
from slm_operator.local.bench import DEFAULT_PROMPT
from slm_operator.local.client import ClientError, server_url
from slm_operator.local.config import DEFAULT_HOST, load_resource, plan_local, prepare
from slm_operator.local.remote import GatewayClient
from slm_operator.local.server import ServerError, port_in_use, serve_foreground
from slm_operator.local.session import Session
from slm_operator.local.targets import is_local_target

__all__ = ["register"]

log = logging.getLogger(__name__)


def _serve(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        resource = load_resource(path, args.name)
        accelerator = Accelerator(args.accelerator) if args.accelerator else None
        plan = plan_local(resource, cache_dir=args.cache, host=args.host, port=args.port, accelerator=accelerator)
        port = int(plan.env["SLM_PORT"])
        if port_in_use(DEFAULT_HOST if args.host in ("0.0.0.0", "::") else args.host, port):
            return fail(f"port {port} is in use (another `slm serve` or `ollama serve`?); choose one with --port")
        model, settings = prepare(plan, offline=args.offline, progress=pull_progress, api_key=args.api_key)
    except ManifestError as exc:
        sys.stderr.write(f"{path}: invalid\n" + "".join(f"  {error}\n" for error in exc.errors))
        return 1
    except EXPECTED_ERRORS as exc:
        return fail(str(exc))
    except KeyboardInterrupt:  # while pulling
        return INTERRUPTED
    out = sys.stdout
    out.write(
        f"Serving {settings.served_name} ({model.digest[:19]}, {plan.accelerator.value}) from {path} on "
        f"{plan.url} — Ollama API at /api, OpenAI API at /v1. Ctrl-C stops.\n"
    )
    out.flush()

    def ready(seconds: float) -> None:
        out.write(f"Model {settings.served_name} loaded in {seconds:.1f}s; ready.\n")
        out.flush()

    try:
        serve_foreground(settings, on_ready=ready)
    except ServerError as exc:
        return fail(str(exc))
    out.write("Stopped.\n")
    return 0


def _import(args: argparse.Namespace) -> int:
    from slm_operator.local.modelfile import ModelfileError, import_modelfile, manifest_yaml

    path = Path(args.modelfile)
    try:
        text = path.read_text(encoding="utf-8")
        result = import_modelfile(text, name=args.name, base_dir=path.absolute().parent)
        document = manifest_yaml(result, origin=path.name)
    except ModelfileError as exc:
        return fail(f"{path}: {exc}")
    except ManifestError as exc:
        return fail(f"{path}: the imported manifest is invalid: " + "; ".join(str(e) for e in exc.errors))
    except OSError as exc:
        return fail(f"{path}: {exc.strerror}")
    for note in result.notes:
        sys.stderr.write(f"{path}: {note}\n")
    if args.output:
        Path(args.output).write_text(document, encoding="utf-8")
        sys.stderr.write(f"wrote {args.output}\n")
    else:
        sys.stdout.write(document)
    return 0


def _prompt_text(args: argparse.Namespace) -> str | None:
    if args.prompt:
        return " ".join(args.prompt)
    if not sys.stdin.isatty():
        return sys.stdin.read()
    return None


INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C


def _status(message: str) -> None:
    """A transient status line on an interactive stderr (erased by the next write), nothing otherwise."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{message}\x1b[K")
        sys.stderr.flush()


def _clear_status() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


def _gateway_session(args: argparse.Namespace) -> Session | int | None:
    """A session on the gateway's model MODEL when a gateway is named and MODEL is no file or source URI."""
    if is_local_target(args.target):
        return None
    try:
        gateway = gateway_client(args)
    except EXPECTED_ERRORS as exc:
        return fail(str(exc))
    return None if gateway is None else Session(client=gateway, model=args.target)


def _open_session(args: argparse.Namespace) -> Session | int:
    """The session `run` and `bench` talk through, or the exit code of why there is none."""
    from slm_operator.local.session import open_session

    remote = _gateway_session(args)
    if remote is not None:
        return remote
    try:
        session = open_session(
            args.target,
            url=server_url(args.url),
            cache_dir=args.cache,
            api_key=args.api_key,
            name=args.name,
            offline=args.offline,
            progress=pull_progress,
            notify=_status,
        )
    except ManifestError as exc:
        return fail(f"{args.target}: " + "; ".join(str(e) for e in exc.errors))
    except EXPECTED_ERRORS as exc:
        _clear_status()
        return fail(str(exc))
    except KeyboardInterrupt:
        _clear_status()
        return INTERRUPTED
    _clear_status()
    return session


def _run(args: argparse.Namespace) -> int:
    from slm_operator.local.chat import ChatSession, format_stats, repl, stream_reply

    prompt = _prompt_text(args)
    session = _open_session(args)
    if isinstance(session, int):
        return session
    with session:
        chat = ChatSession(client=session.client, model=session.model, verbose=args.verbose)
        if prompt is not None:
            try:
                stream_reply(chat, prompt, sys.stdout)
            except ClientError as exc:
                return fail(str(exc))
            sys.stdout.write("\n")
            if args.verbose and chat.last_stats:
                sys.stderr.write("\n" + format_stats(chat.last_stats))
            return 0
        if isinstance(session.client, GatewayClient):
            try:  # like `ollama run`: the model is there (and awake) before the first prompt
                session.client.show(session.model)
            except ClientError as exc:
                return fail(str(exc))
            except KeyboardInterrupt:
                return INTERRUPTED
        _enable_line_editing()
        return repl(chat, input, sys.stdout)


def _enable_line_editing() -> None:
    try:
        import readline  # noqa: F401  (importing it gives input() history and editing)
    except ImportError:
        log.debug("no readline: plain input")


def _bench(args: argparse.Namespace) -> int:
    from slm_operator.local.bench import run_bench

    session = _open_session(args)
    if isinstance(session, int):
        return session
    with session:
        try:
            report = run_bench(
                session.client,
                session.model,
                runs=args.runs,
                tokens=args.tokens,
                prompt=args.prompt,
                load_seconds=session.load_seconds,
            )
        except ClientError as exc:
            return fail(str(exc))
        except KeyboardInterrupt:
            return INTERRUPTED
    sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n" if args.json else report.render())
    return 0


def _target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        metavar="MODEL",
        help="a manifest, a Modelfile, a source URI, a cached or served model name, or a gateway model NAMESPACE/NAME",
    )
    parser.add_argument("--name", default=None, help="the SLMDeployment to use when the manifest holds several")
    parser.add_argument("--offline", action="store_true", help="never download; the model must be cached")
    cache_argument(parser)
    client_arguments(parser)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve a manifest's model on this machine (Ollama and OpenAI APIs on 127.0.0.1:11434)",
        description="Pull the model if needed, render the runtime configuration exactly as the operator does for "
        "pods, and serve it until Ctrl-C.",
    )
    serve.add_argument("file", metavar="FILE", help="an SLMDeployment manifest (YAML)")
    serve.add_argument("--name", default=None, help="the SLMDeployment to serve when the file holds several")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=None, help="port (default: spec.server.port, 11434)")
    serve.add_argument(
        "--accelerator",
        choices=[a.value for a in Accelerator],
        default=None,
        help="hardware profile (default: the first tier of spec.hardware this machine runs; cpu otherwise)",
    )
    serve.add_argument(
        "--api-key",
        default=None,
        help="require this bearer token (default: $SLM_API_KEY; none means no auth)",
    )
    serve.add_argument("--offline", action="store_true", help="never download; the model must be cached")
    cache_argument(serve)
    serve.set_defaults(func=_serve)

    run = subparsers.add_parser(
        "run",
        help="chat with a model (interactive), or answer PROMPT and exit; here or through the gateway",
        description="Uses the server at --url when it serves MODEL, else serves MODEL from this process; with "
        "--host, --context or $SLM_GATEWAY, MODEL (NAMESPACE/NAME) is a cluster model answered through slm-gateway. "
        'Interactive: /bye leaves, """ starts and ends a multi-line message, /set parameter NAME VALUE, '
        "/clear forgets, /? helps.",
    )
    _target_arguments(run)
    run.add_argument("prompt", nargs="*", metavar="PROMPT", help="answer this and exit (stdin is read when piped)")
    run.add_argument("--verbose", action="store_true", help="print timing statistics after each reply")
    run.set_defaults(func=_run)

    bench = subparsers.add_parser(
        "bench",
        help="measure tokens/s, time to first token and load time of a model on this machine (or through the gateway)",
    )
    _target_arguments(bench)
    bench.add_argument("--runs", type=int, default=3, help="measured generations (default 3)")
    bench.add_argument("--tokens", type=int, default=128, help="tokens per generation (default 128)")
    bench.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt to generate from")
    bench.add_argument("--json", action="store_true", help="print the report as JSON")
    bench.set_defaults(func=_bench)

    imported = subparsers.add_parser(
        "import", help="convert an Ollama Modelfile into an SLMDeployment manifest (printed, or written with -o)"
    )
    imported.add_argument("modelfile", metavar="MODELFILE", help="path of the Modelfile")
    imported.add_argument("--name", default=None, help="metadata.name (default: from the FROM model)")
    imported.add_argument("-o", "--output", default=None, help="write the manifest to this file")
    imported.set_defaults(func=_import)

    local_models.register(subparsers)
