"""`slm pull`, `list`, `rm`, `ps` and `show`: the local cache and what a local server has loaded; `list`, `ps` and
`show` ask slm-gateway instead when one is named (:mod:`slm_operator.cli.gateway`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slm_operator.api import ManifestError, SLMDeployment
from slm_operator.cli.gateway import gateway_arguments, gateway_client
from slm_operator.local.cache import find_cached, list_cached, remove_cached
from slm_operator.local.client import ClientError, LocalClient, server_url
from slm_operator.local.server import ServerError
from slm_operator.local.table import human_age, human_size, render_table
from slm_operator.local.targets import TargetError, is_local_target
from slm_runtime.fetch import LogProgress, Progress, PullError, TerminalProgress, cached, default_dest, pull
from slm_runtime.settings import SettingsError
from slm_runtime.source import SourceError

__all__ = [
    "EXPECTED_ERRORS",
    "api_key_argument",
    "cache_argument",
    "client_arguments",
    "fail",
    "pull_progress",
    "register",
]

#: errors a user can cause: reported in one line, exit code 1
EXPECTED_ERRORS = (
    ManifestError,
    TargetError,
    PullError,
    SourceError,
    SettingsError,
    ClientError,
    ServerError,
    ValueError,
    OSError,
)


_PULL_LOG = logging.getLogger("slm_operator.pull")


def pull_progress(label: str) -> Progress:
    """A redrawn bar on a terminal; elsewhere (CI, files) a progress line every 10 s, shown whatever --log-level."""
    if sys.stderr.isatty():
        return TerminalProgress(label, sys.stderr)
    _PULL_LOG.setLevel(logging.INFO)
    return LogProgress(label, logger=_PULL_LOG)


def fail(message: str, code: int = 1) -> int:
    sys.stderr.write(f"Error: {message}\n")
    return code


def cache_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache", type=Path, default=default_dest(), help="model cache (default: $SLM_CACHE_HOME/models)"
    )


def api_key_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key", default=os.environ.get("SLM_API_KEY"), help="bearer token (default $SLM_API_KEY)")


def client_arguments(parser: argparse.ArgumentParser) -> None:
    """A local server (--url) or a gateway (--host, --context: :func:`gateway_arguments`), and the API key."""
    parser.add_argument(
        "--url",
        default=None,
        help="local server to use when it serves the model (default: $OLLAMA_HOST or :11434)",
    )
    api_key_argument(parser)
    gateway_arguments(parser)


def _source_of(target: str, name: str | None) -> tuple[str, str | None]:
    """A source URI as is, or the model source and pin of a manifest / Modelfile."""
    if "://" in target and not Path(target).exists():
        return target, None
    from slm_operator.local.targets import resource_for_target

    spec = resource_for_target(target, name=name).spec
    return spec.model.source, spec.model.sha256


def _pull(args: argparse.Namespace) -> int:
    try:
        source, pin = _source_of(args.source, args.name)
        model = pull(source, args.cache, sha256=args.sha256 or pin, progress=pull_progress)
    except ManifestError as exc:
        return fail(f"{args.source}: " + "; ".join(str(e) for e in exc.errors))
    except EXPECTED_ERRORS as exc:
        return fail(str(exc))
    if args.json:
        sys.stdout.write(model.to_json() + "\n")
    else:
        state = "already cached" if model.cached else "pulled"
        sys.stdout.write(f"{source}: {state}, {human_size(model.size_bytes)}, {model.digest}\n{model.path}\n")
    return 0


def _modified(entry: Mapping[str, Any]) -> str:
    try:
        when = datetime.fromisoformat(str(entry.get("modified_at")))
    except ValueError:
        return ""
    return human_age(when if when.tzinfo else when.replace(tzinfo=UTC))


def _list_served(client: LocalClient, as_json: bool) -> int:
    with client:
        try:
            models = client.models()
        except ClientError as exc:
            return fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(models) + "\n")
        return 0
    rows = [
        [
            str(m.get("name") or m.get("model") or ""),
            str(m.get("digest", "")).removeprefix("sha256:")[:12],
            human_size(int(m.get("size") or 0)),
            _modified(m),
        ]
        for m in models
    ]
    sys.stdout.write(render_table(["NAME", "ID", "SIZE", "MODIFIED"], rows))
    return 0


def _list(args: argparse.Namespace) -> int:
    try:
        gateway = gateway_client(args)
    except EXPECTED_ERRORS as exc:
        return fail(str(exc))
    if gateway is not None:
        return _list_served(gateway, args.json)
    models = list_cached(args.cache)
    if args.json:
        sys.stdout.write(json.dumps([m.record.model_dump(by_alias=True, exclude={"cached"}) for m in models]) + "\n")
        return 0
    rows = [
        [
            m.name,
            m.record.sha256[:12],
            human_size(m.record.size_bytes),
            m.record.format or "?",
            human_age(m.modified),
            m.record.source,
        ]
        for m in models
    ]
    sys.stdout.write(render_table(["NAME", "ID", "SIZE", "FORMAT", "MODIFIED", "SOURCE"], rows))
    return 0


def _rm(args: argparse.Namespace) -> int:
    failed = False
    for reference in args.models:
        matches = find_cached(args.cache, reference)
        if not matches:
            failed = True
            fail(f"model '{reference}' not found in {args.cache}; `slm list` shows what is cached")
            continue
        if len(matches) > 1 and not args.all:
            failed = True
            sources = ", ".join(m.record.source for m in matches)
            fail(f"'{reference}' matches {len(matches)} models ({sources}); name one by its source, or pass --all")
            continue
        for model in matches:
            remove_cached(model, args.cache)
            kept = " (the model file stays where it is)" if model.in_place(args.cache) else ""
            sys.stdout.write(f"deleted '{model.name}' ({model.record.source}){kept}\n")
    return 1 if failed else 0


def _processor(entry: Mapping[str, Any]) -> str:
    size = int(entry.get("size") or 0)
    vram = int(entry.get("size_vram") or 0)
    if vram <= 0 or size <= 0:
        return "100% CPU"
    if vram >= size:
        return "100% GPU"
    share = round(100 * vram / size)
    return f"{100 - share}%/{share}% CPU/GPU"


def _server_client(args: argparse.Namespace) -> LocalClient:
    """The gateway when one is named, else the local server at --url."""
    gateway = gateway_client(args)
    return gateway if gateway is not None else LocalClient(server_url(args.url), api_key=args.api_key)


def _ps(args: argparse.Namespace) -> int:
    try:
        client = _server_client(args)
    except EXPECTED_ERRORS as exc:
        return fail(str(exc))
    with client:
        try:
            models = client.loaded()
        except ClientError as exc:
            return fail(str(exc))
    rows = [
        [
            str(m.get("name", "")),
            str(m.get("digest", ""))[:12],
            human_size(int(m.get("size") or 0)),
            _processor(m),
            str(m.get("context_length", "")),
            "Forever",
        ]
        for m in models
    ]
    sys.stdout.write(render_table(["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"], rows))
    return 0


def _section(title: str, pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    width = max(len(key) for key, _ in pairs)
    body = "".join(f"    {key.ljust(width)}    {value}\n" for key, value in pairs)
    return f"  {title}\n{body}\n"


def _text_section(title: str, text: str | None) -> str:
    if not text:
        return ""
    lines = text.strip().splitlines()
    shown = lines[:8] + (["..."] if len(lines) > 8 else [])
    return f"  {title}\n" + "".join(f"    {line}\n" for line in shown) + "\n"


def _parameter_pairs(text: str) -> list[tuple[str, str]]:
    """Ollama's parameters text ('name value' lines; a quoted value may hold newlines) as pairs."""
    pairs: list[tuple[str, str]] = []
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if pairs and (not value or not name.isidentifier()):
            key, previous = pairs[-1]
            pairs[-1] = (key, previous + "\\n" + line)  # the continuation of a quoted value
        elif value:
            pairs.append((name, value.strip()))
    return pairs


def _show_served(shown: Mapping[str, Any], model: str) -> str:
    details = shown.get("details") or {}
    info = shown.get("model_info") or {}
    context = next((v for k, v in info.items() if str(k).endswith("context_length")), "")
    pairs = [
        ("name", model),
        ("architecture", str(info.get("general.architecture", details.get("family", "")))),
        ("parameters", str(details.get("parameter_size", ""))),
        ("context length", str(context)),
        ("quantization", str(details.get("quantization_level", ""))),
        ("format", str(details.get("format", ""))),
    ]
    parameters = _parameter_pairs(str(shown.get("parameters", "")))
    return (
        _section("Model", [(k, v) for k, v in pairs if v])
        + _section("Parameters", parameters)
        + _text_section("System", shown.get("system"))
        + _text_section("License", shown.get("license"))
    )


def _show_resource(resource: SLMDeployment, cache_dir: Path) -> str:
    spec = resource.spec
    pairs = [
        ("name", spec.model.served_name()),
        ("source", spec.model.source),
        ("format", spec.resolved_format().value),
        ("engine", spec.resolved_engine().value),
        ("accelerator", (spec.hardware.accelerator.value if spec.hardware else "cpu")),
    ]
    try:
        record = cached(spec.model.source, cache_dir, sha256=spec.model.sha256)
    except (ValueError, PullError):
        record = None
    if record is not None:
        pairs += [("digest", record.digest), ("size", human_size(record.size_bytes)), ("path", record.path)]
    else:
        pairs.append(("cached", f"no (`slm pull {spec.model.source}`)"))
    parameters = [(k, str(v)) for k, v in (spec.parameters.to_wire() if spec.parameters else {}).items()]
    return (
        _section("Model", pairs)
        + _section("Parameters", parameters)
        + _text_section("System", spec.system)
        + _text_section("Template", spec.template)
    )


def _show(args: argparse.Namespace) -> int:
    from slm_operator.local.modelfile import to_modelfile
    from slm_operator.local.session import resolve_target
    from slm_runtime.settings import canonical_model_name

    if not args.env and not is_local_target(args.target):
        try:
            gateway = gateway_client(args)
        except EXPECTED_ERRORS as exc:
            return fail(str(exc))
        if gateway is not None:
            with gateway:
                try:
                    shown = gateway.show(args.target)
                except ClientError as exc:
                    return fail(str(exc))
            sys.stdout.write(str(shown.get("modelfile", "")) if args.modelfile else _show_served(shown, args.target))
            return 0
    url = server_url(args.url)
    if not args.env:
        with LocalClient(url, api_key=args.api_key) as client:
            try:
                names = {canonical_model_name(str(m["name"])) for m in client.models()} if client.ready() else set()
                served = canonical_model_name(args.target) in names
                if served:
                    shown = client.show(args.target)
                    sys.stdout.write(str(shown["modelfile"]) if args.modelfile else _show_served(shown, args.target))
                    return 0
            except ClientError as exc:
                return fail(str(exc))
    try:
        resource = resolve_target(args.target, cache_dir=args.cache, name=args.name)
        if args.env:
            from slm_operator.local.config import plan_local

            env = plan_local(resource, cache_dir=args.cache).env
            sys.stdout.write("".join(f"{key}={json.dumps(value)}\n" for key, value in sorted(env.items())))
        elif args.modelfile:
            sys.stdout.write(to_modelfile(resource))
        else:
            sys.stdout.write(_show_resource(resource, args.cache))
    except ManifestError as exc:
        return fail(f"{args.target}: " + "; ".join(str(e) for e in exc.errors))
    except EXPECTED_ERRORS as exc:
        return fail(str(exc))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pulled = subparsers.add_parser("pull", help="download a model into the local cache (with progress)")
    pulled.add_argument("source", metavar="SOURCE", help="a model source URI, or a manifest / Modelfile naming one")
    pulled.add_argument("--name", default=None, help="the SLMDeployment to use when the manifest holds several")
    pulled.add_argument("--sha256", default=None, help="expected digest; refuse any other")
    pulled.add_argument("--json", action="store_true", help="print the pull record as JSON")
    cache_argument(pulled)
    pulled.set_defaults(func=_pull)

    listed = subparsers.add_parser(
        "list", aliases=["ls"], help="list the models in the local cache, or the gateway's (--host, --context)"
    )
    listed.add_argument("--json", action="store_true", help="print the pull records (or the gateway's models) as JSON")
    cache_argument(listed)
    api_key_argument(listed)
    gateway_arguments(listed)
    listed.set_defaults(func=_list)

    removed = subparsers.add_parser("rm", help="delete models from the local cache")
    removed.add_argument("models", nargs="+", metavar="MODEL", help="name, source URI or digest prefix")
    removed.add_argument("--all", action="store_true", help="delete every model a reference matches")
    cache_argument(removed)
    removed.set_defaults(func=_rm)

    ps = subparsers.add_parser(
        "ps", help="list the models a running local server has loaded, or the gateway's (--host, --context)"
    )
    client_arguments(ps)
    ps.set_defaults(func=_ps)

    show = subparsers.add_parser(
        "show", help="show a model: served (locally or by the gateway) details, or a manifest's model and cache entry"
    )
    show.add_argument("target", metavar="MODEL", help="a served or cached model name, a manifest, Modelfile or URI")
    show.add_argument("--name", default=None, help="the SLMDeployment to use when the manifest holds several")
    show.add_argument("--modelfile", action="store_true", help="print it as an Ollama Modelfile")
    show.add_argument("--env", action="store_true", help="print the SLM_* runtime environment rendered for it")
    cache_argument(show)
    client_arguments(show)
    show.set_defaults(func=_show)
