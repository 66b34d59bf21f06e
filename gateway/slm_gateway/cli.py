"""`slm-gateway`: one OpenAI and Ollama endpoint for every SLMDeployment of the cluster.

Every settings field is a flag and an environment variable (``--max-held`` / ``SLM_GATEWAY_MAX_HELD``; the
namespaces flag is ``--namespace``, repeated); ``--help`` lists them with their defaults.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import types
from collections.abc import Sequence
from enum import Enum
from typing import Any

from slm_gateway import __version__
from slm_gateway.settings import GatewaySettings, SettingsError, env_name, flag_name, settings_from_sources

__all__ = ["build_parser", "main", "settings_from_args"]

log = logging.getLogger(__name__)

_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _bool(text: str) -> bool:
    try:
        return _BOOLEANS[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slm-gateway", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"slm-gateway {__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING, ERROR)")
    for name, field in GatewaySettings.model_fields.items():
        default = field.get_default()
        value = default.value if isinstance(default, Enum) else default
        shown = "" if default in (None, ()) else f" (default: {value})"
        kwargs: dict[str, Any] = {
            "dest": name,
            "default": None,
            "help": f"{field.description}{shown} [env {env_name(name)}]",
        }
        flag = flag_name(name)
        if name == "namespaces":
            flag = "--namespace"
            kwargs.update(action="append", metavar="NAMESPACE")
        elif field.annotation is bool:
            kwargs.update(type=_bool, nargs="?", const=True, metavar="BOOL")
        elif isinstance(default, Enum):
            kwargs["choices"] = [member.value for member in type(default)]
        else:
            kwargs["metavar"] = name.upper()
        parser.add_argument(flag, **kwargs)
    return parser


def settings_from_args(args: argparse.Namespace) -> GatewaySettings:
    return settings_from_sources({name: getattr(args, name) for name in GatewaySettings.model_fields})


def run(settings: GatewaySettings) -> int:
    import uvicorn

    from slm_gateway.activator import Activator, DirectActivator, MetricActivator
    from slm_gateway.app import create_app
    from slm_gateway.keys import KeyFile, KeysError
    from slm_gateway.kube import KubeWakeActions, KubeWatch, api_client
    from slm_gateway.settings import WakeMode

    try:
        keys = KeyFile(settings.keys_file)
    except KeysError as exc:
        log.error("%s", exc)
        return 2
    api = api_client(settings.kubeconfig)
    activator: Activator = (
        DirectActivator(KubeWakeActions(api)) if settings.wake is WakeMode.DIRECT else MetricActivator()
    )
    app = create_app(settings, feed=KubeWatch(api, settings.namespaces), activator=activator, keys=keys)
    log.info(
        "slm-gateway on http://%s:%d: namespaces %s, keys %s, prefix affinity %s, wake %s (hold %d per model, %gs)",
        settings.host,
        settings.port,
        ",".join(settings.namespaces) or "all",
        settings.keys_file or "off",
        f"on ({settings.prefix_chars} chars)" if settings.prefix_affinity else "off",
        settings.wake.value,
        settings.max_held,
        settings.wake_timeout,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(),
        access_log=False,
        # The pods' own Server and Date headers pass through; uvicorn must not add a second pair.
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=max(1, math.ceil(settings.drain_timeout)),
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: types.FrameType | None) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises a stop signal once it has shut down ("killed by SIGTERM"); a gateway that drained
            # its requests exits 0 instead.
            self._captured_signals.clear()

    Server(config).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
