"""`slm-runtime serve`: flags derived from the settings models, then uvicorn on the app.

Every settings field is a flag (``--max-queue``) and an environment variable (``SLM_MAX_QUEUE``); see
:mod:`slm_runtime.settings` for precedence. ``--help`` lists them with their descriptions and defaults.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic.fields import FieldInfo

from slm_runtime.settings import (
    SECTIONS,
    RuntimeSettings,
    SettingsError,
    env_name,
    flag_name,
    parse_messages,
    settings_from_sources,
)
from slm_runtime.shutdown import INVALID_SETTINGS, Shutdown

__all__ = ["add_settings_arguments", "register", "run_serve", "settings_from_args"]

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _messages(text: str) -> Any:
    try:
        return parse_messages(flag_name("messages"), text)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _choices(annotation: Any) -> list[str] | None:
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is typing.Literal:
        return [str(a) for a in get_args(annotation)]
    for arg in args:
        if get_origin(arg) is typing.Literal:
            return [str(a) for a in get_args(arg)]
    return None


def _is_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    return get_origin(annotation) in {typing.Union, types.UnionType} and bool in get_args(annotation)


def _help(name: str, field: FieldInfo) -> str:
    default = field.get_default(call_default_factory=True)
    shown = "" if default is None or field.is_required() else f" (default: {default!r})"
    if name == "api_key" and default is None:
        shown = ""
    return f"{field.description}{shown} [env {env_name(name)}]"


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per settings field, grouped by section; unset flags stay out of the namespace."""
    for section, model in SECTIONS.items():
        group = parser.add_argument_group(section, model.__doc__)
        for name, field in model.model_fields.items():
            kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": _help(name, field)}
            if name == "stop":
                kwargs.update(action="append", metavar="TEXT")
            elif name == "messages":
                kwargs.update(type=_messages, metavar="JSON")
            elif _is_bool(field.annotation):
                kwargs.update(type=_bool, nargs="?", const=True, metavar="BOOL")
            else:
                choices = _choices(field.annotation)
                if choices:
                    kwargs["choices"] = choices
                else:
                    kwargs["metavar"] = name.upper()
            group.add_argument(flag_name(name), **kwargs)


def settings_from_args(args: argparse.Namespace) -> RuntimeSettings:
    fields = {name for model in SECTIONS.values() for name in model.model_fields}
    flags = {k: v for k, v in vars(args).items() if k in fields}
    return settings_from_sources(flags)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn  # the runtime extra; the rest of the CLI (pull) must not need it

    from slm_runtime.app import create_app

    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        log.error("%s", exc)
        Shutdown(_termination_log(args)).fail(INVALID_SETTINGS, str(exc))
        return INVALID_SETTINGS.exit_code
    shutdown = Shutdown(settings.server.termination_log)
    app = create_app(settings, shutdown=shutdown)
    log.info(
        "serving %s on http://%s:%d (engine %s, %d slot(s), queue %d)",
        settings.served_name,
        settings.server.host,
        settings.server.port,
        settings.engine_name,
        settings.server.parallel,
        settings.server.max_queue,
    )
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(),
        access_log=False,
        # uvicorn stops listening, lets the requests in flight finish for this long, then cancels them
        timeout_graceful_shutdown=max(1, math.ceil(settings.server.drain_timeout)),
    )

    class DrainingServer(uvicorn.Server):
        """uvicorn's server, telling the model service to drain when a stop signal arrives."""

        def handle_exit(self, sig: int, frame: types.FrameType | None) -> None:
            shutdown.drain()
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal once it has stopped, ending the process "killed by SIGTERM"; after a
            # completed drain the process exits with its own code instead (0, or a failure's).
            self._captured_signals.clear()

    server = DrainingServer(config)
    shutdown.on_stop(lambda: setattr(server, "should_exit", True))
    server.run()
    return shutdown.exit_code


def _termination_log(args: argparse.Namespace) -> Path | None:
    """--termination-log / SLM_TERMINATION_LOG when the settings as a whole could not be read."""
    raw = getattr(args, "termination_log", None) or os.environ.get(env_name("termination_log"))
    return Path(raw) if raw else None


def register(subparsers: Any) -> None:
    """Add ``serve`` to the ``slm-runtime`` command."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a model over the Ollama and OpenAI APIs",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    add_settings_arguments(parser)
    parser.set_defaults(func=run_serve)
