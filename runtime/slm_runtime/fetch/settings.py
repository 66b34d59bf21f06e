"""Fetcher settings: endpoints (mirrors for air-gapped clusters), credentials, timeouts and retries.

One pydantic model; ``from_env`` reads the environment variables the operator's renderer sets on the init
container, and the CLI flags of ``slm-runtime pull`` override single fields.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["DEFAULT_HF_ENDPOINT", "DEFAULT_OLLAMA_REGISTRY", "ENV", "FetchSettings", "default_dest"]

DEFAULT_OLLAMA_REGISTRY = "https://registry.ollama.ai"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"

#: field name -> environment variables read by ``FetchSettings.from_env`` (first one set wins)
ENV: dict[str, tuple[str, ...]] = {
    "ollama_registry": ("SLM_OLLAMA_REGISTRY", "OLLAMA_REGISTRY"),
    "hf_endpoint": ("HF_ENDPOINT",),
    "hf_token": ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"),
    "http_authorization": ("SLM_PULL_AUTHORIZATION",),
    "pvc_root": ("SLM_PVC_ROOT",),
}


class FetchSettings(BaseModel):
    """How to reach each kind of source."""

    model_config = ConfigDict(frozen=True)

    ollama_registry: str = Field(
        default=DEFAULT_OLLAMA_REGISTRY, description="Base URL of the Ollama registry (or a mirror of it)"
    )
    hf_endpoint: str = Field(default=DEFAULT_HF_ENDPOINT, description="Base URL of the Hugging Face Hub or a mirror")
    hf_token: SecretStr | None = Field(default=None, description="Hugging Face access token (sent as Bearer)")
    http_authorization: SecretStr | None = Field(
        default=None, description="Authorization header value sent to https:// and http:// sources"
    )
    pvc_root: Path = Field(
        default=Path("/mnt/pvc"),
        description="Where the claims of pvc:// sources are mounted (<root>/<claim>/...)",
    )
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for a TCP/TLS connection")
    read_timeout: float = Field(default=60.0, gt=0, description="Seconds without a byte before a read times out")
    max_attempts: int = Field(default=6, ge=1, description="Tries per request, counting the first one")
    backoff_base: float = Field(default=1.0, ge=0, description="Seconds before the first retry; doubles each time")
    backoff_max: float = Field(default=30.0, ge=0, description="Longest wait between two tries, in seconds")
    lock_timeout: float | None = Field(
        default=None,
        ge=0,
        description="Seconds to wait for another puller of the same model; None waits forever",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> FetchSettings:
        """Settings from the environment (see ``ENV``), then ``overrides`` that are not None."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field, names in ENV.items():
            for name in names:
                if env.get(name):
                    values[field] = env[name]
                    break
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls.model_validate(values)


def default_dest(environ: Mapping[str, str] | None = None) -> Path:
    """The laptop default cache: ``$SLM_CACHE_HOME/models`` (``~/.cache/slm-operator/models``)."""
    env = os.environ if environ is None else environ
    home = env.get("SLM_CACHE_HOME") or str(Path.home() / ".cache" / "slm-operator")
    return Path(home) / "models"
