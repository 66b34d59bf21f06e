"""A model to talk to for `slm run`, `slm bench` and `slm show`: a running server's, or one started here.

A server already answering at the URL (``slm serve`` in another terminal) is used when it serves the model;
otherwise the model is pulled if needed and served from this process on a free loopback port until the
command ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slm_operator.api import SLMDeployment
from slm_operator.local.cache import find_cached
from slm_operator.local.client import ClientError, LocalClient
from slm_operator.local.config import plan_local, prepare
from slm_operator.local.server import BackgroundServer, free_port
from slm_operator.local.targets import TargetError, resource_for_source, resource_for_target
from slm_runtime.fetch import ProgressFactory
from slm_runtime.settings import canonical_model_name

__all__ = ["Session", "open_session", "resolve_target"]

log = logging.getLogger(__name__)


@dataclass
class Session:
    """A client bound to a model; ``server`` is set when this process started it (closed with the session)."""

    client: LocalClient
    model: str
    load_seconds: float | None = None
    server: BackgroundServer | None = None

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _served_names(client: LocalClient) -> set[str]:
    if not client.ready():
        return set()
    try:
        return {canonical_model_name(str(m.get("name") or m.get("model"))) for m in client.models()}
    except ClientError:
        return set()


def resolve_target(target: str, *, cache_dir: Path, name: str | None = None) -> SLMDeployment:
    """A manifest, a Modelfile, a source URI, or the name / digest of a cached model."""
    try:
        return resource_for_target(target, name=name)
    except TargetError:
        matches = find_cached(cache_dir, target)
        if len(matches) == 1:
            return resource_for_source(matches[0].record.source, name=matches[0].name)
        if len(matches) > 1:
            sources = ", ".join(m.record.source for m in matches)
            raise TargetError(f"'{target}' matches several cached models ({sources}); name one by its source") from None
        raise TargetError(
            f"'{target}' is not a file, a model source or a model in the cache {cache_dir}; "
            "pass a manifest or a source such as ollama://qwen2.5:0.5b, or `slm pull` it first"
        ) from None


def open_session(
    target: str,
    *,
    url: str,
    cache_dir: Path,
    api_key: str | None = None,
    name: str | None = None,
    offline: bool = False,
    progress: ProgressFactory | None = None,
    notify: Callable[[str], None] = lambda _: None,
) -> Session:
    """Attach to the server at ``url`` when it serves ``target``, else start one here.

    ``notify`` hears what takes time (loading a model) so a terminal can say so.
    """
    client = LocalClient(url, api_key=api_key)
    served = _served_names(client)
    if canonical_model_name(target) in served:
        return Session(client=client, model=target)
    try:
        resource = resolve_target(target, cache_dir=cache_dir, name=name)
    except TargetError:
        client.close()
        raise
    model = resource.spec.model.served_name()
    if canonical_model_name(model) in served:
        log.info("using %s served at %s", model, url)
        return Session(client=client, model=model)
    client.close()
    plan = plan_local(resource, cache_dir=cache_dir, port=free_port())
    _, settings = prepare(plan, offline=offline, progress=progress, api_key=api_key)
    server = BackgroundServer(settings)
    notify(f"loading {settings.served_name} ...")
    seconds = server.start()
    key = settings.server.api_key.get_secret_value() if settings.server.api_key else None
    local = LocalClient(server.url, api_key=key)
    return Session(client=local, model=settings.served_name, load_seconds=seconds, server=server)
