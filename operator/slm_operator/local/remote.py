"""Cluster models through slm-gateway: where the gateway is, how to authenticate to it, and a client that waits
while a model wakes from zero.

The gateway speaks the runtime's Ollama API for every SLMDeployment, models named ``<namespace>/<name>``, so
`slm run`, `list`, `ps`, `show` and `bench` use it exactly as they use a local server. It is reached either

- at a URL: ``--host URL``, or ``$SLM_GATEWAY=URL``; the API key goes in ``Authorization: Bearer``; or
- through a kube context: ``--context [NAME]``, or ``$SLM_GATEWAY=kube`` (``kube:NAME``): the apiserver's service
  proxy ``<server>/api/v1/namespaces/<ns>/services/<name>:<port>/proxy/`` to the gateway Service
  (``--gateway-service``, ``$SLM_GATEWAY_SERVICE``, default :data:`DEFAULT_GATEWAY_SERVICE`), authenticated with
  the kubeconfig's credentials (client certificate, bearer token, CA). The apiserver removes the
  ``Authorization`` header once it has authenticated the caller, so the gateway's key travels in
  :data:`GATEWAY_KEY_HEADER` instead.

A 503 with Retry-After (a model waking from zero, or still loading) is retried until ``wake_timeout``; the
``notify`` callback hears "waking <model>…" meanwhile and an empty string when the status should be cleared.
"""

from __future__ import annotations

import email.utils
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from slm_operator.local.client import ClientError, LocalClient, StreamChunk, error_text, server_url, stream_chunks

__all__ = [
    "DEFAULT_GATEWAY_SERVICE",
    "DEFAULT_WAKE_TIMEOUT",
    "GATEWAY_ENV",
    "GATEWAY_KEY_HEADER",
    "GATEWAY_SERVICE_ENV",
    "KUBE",
    "Endpoint",
    "GatewayChoice",
    "GatewayClient",
    "GatewayConfigError",
    "KubeAccess",
    "ServiceRef",
    "access_from_configuration",
    "choose_gateway",
    "gateway_endpoint",
    "kube_access",
    "kube_endpoint",
    "retry_after_seconds",
    "service_proxy_url",
    "ssl_context",
    "url_endpoint",
]

#: where the CLI finds the gateway when no flag names one: a URL, or ``kube`` / ``kube:CONTEXT``
GATEWAY_ENV = "SLM_GATEWAY"
#: the gateway Service reached through a kube context, as ``namespace/name[:port]``
GATEWAY_SERVICE_ENV = "SLM_GATEWAY_SERVICE"
#: what `helm install slm-operator charts/slm-operator -n slm-system` names the gateway's Service
DEFAULT_GATEWAY_SERVICE = "slm-system/slm-operator-gateway"
#: the Service port (its name, or a number) when ``--gateway-service`` names none
DEFAULT_SERVICE_PORT = "http"
#: the $SLM_GATEWAY value meaning "through the current kube context"
KUBE = "kube"
#: the header carrying the gateway's API key through the apiserver (which drops Authorization)
GATEWAY_KEY_HEADER = "X-API-Key"
#: how long one request may keep retrying while its model wakes (503 + Retry-After), in seconds
DEFAULT_WAKE_TIMEOUT = 600.0

_MIN_RETRY_SECONDS = 0.1


class GatewayConfigError(ValueError):
    """A gateway setting that cannot work (a bad $SLM_GATEWAY, an unknown kube context, a bad service name)."""


@dataclass(frozen=True)
class ServiceRef:
    """The gateway Service: ``namespace/name[:port]`` (port: a name or a number)."""

    namespace: str
    name: str
    port: str = DEFAULT_SERVICE_PORT

    @classmethod
    def parse(cls, text: str) -> ServiceRef:
        reference, colon, port = text.strip().partition(":")
        namespace, slash, name = reference.partition("/")
        if not slash or not namespace or not name or "/" in name or (colon and not port):
            raise GatewayConfigError(
                f"gateway service '{text}': expected NAMESPACE/NAME[:PORT], such as {DEFAULT_GATEWAY_SERVICE}"
            )
        return cls(namespace=namespace, name=name, port=port or DEFAULT_SERVICE_PORT)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class GatewayChoice:
    """What the flags and environment asked for: a URL, or a kube context ('' for the current one)."""

    url: str | None = None
    context: str | None = None


def choose_gateway(
    host: str | None, context: str | None, environ: Mapping[str, str] | None = None
) -> GatewayChoice | None:
    """``--host`` or ``--context`` (the flags win), else $SLM_GATEWAY; None: no gateway, the local commands."""
    if host:
        return GatewayChoice(url=server_url(host))
    if context is not None:
        return GatewayChoice(context=context)
    env = os.environ if environ is None else environ
    value = env.get(GATEWAY_ENV, "").strip()
    if not value:
        return None
    if value == KUBE or value.startswith(KUBE + ":"):
        return GatewayChoice(context=value.removeprefix(KUBE).removeprefix(":"))
    if "://" in value or ":" in value:
        return GatewayChoice(url=server_url(value))
    raise GatewayConfigError(
        f"${GATEWAY_ENV}={value!r}: expected a URL (https://gateway.example.com, host:port), "
        f"'{KUBE}' for the current kube context or '{KUBE}:CONTEXT'"
    )


@dataclass(frozen=True)
class Endpoint:
    """How to reach the gateway: base URL, headers, TLS, and words for messages (``label``, ``hint``)."""

    url: str
    label: str
    hint: str
    headers: Mapping[str, str] = field(default_factory=dict)
    verify: ssl.SSLContext | bool = True
    proxy: str | None = None
    service: ServiceRef | None = None
    context: str | None = None
    """Set when the apiserver proxies (its own errors are told apart from the gateway's)."""


def url_endpoint(url: str, api_key: str | None = None) -> Endpoint:
    return Endpoint(
        url=url,
        label=f"the gateway at {url}",
        hint=f"check the URL (--host, ${GATEWAY_ENV}) and that slm-gateway runs there",
        headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
    )


@dataclass(frozen=True)
class KubeAccess:
    """The apiserver of one kube context and the credentials the kubeconfig holds for it."""

    context: str
    server: str
    authorization: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    proxy: str | None = None


def access_from_configuration(configuration: Any, context: str) -> KubeAccess:
    """What a ``kubernetes.client.Configuration`` filled by the kubeconfig loader says (data is in files)."""
    authorization = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    return KubeAccess(
        context=context,
        server=str(configuration.host).rstrip("/"),
        authorization=str(authorization) if authorization else None,
        ca_file=configuration.ssl_ca_cert or None,
        cert_file=configuration.cert_file or None,
        key_file=configuration.key_file or None,
        verify=bool(configuration.verify_ssl),
        proxy=configuration.proxy or None,
    )


def kube_access(context: str | None = None, kubeconfig: str | None = None) -> KubeAccess:
    """Load the kubeconfig ($KUBECONFIG, ~/.kube/config) with the ``kubernetes`` package's own loader (which runs
    exec plugins and writes inline certificate data to files); ``context`` None or '' is the current one."""
    from kubernetes import client as kube_client
    from kubernetes import config as kube_config
    from kubernetes.config.config_exception import ConfigException

    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        contexts, current = kube_config.list_kube_config_contexts(config_file=path)
        names = [str(c["name"]) for c in contexts or []]
        chosen = context or (current or {}).get("name")
        if not chosen:
            raise GatewayConfigError(f"{path} sets no current-context: pass --context NAME (one of {_or_none(names)})")
        if chosen not in names:
            raise GatewayConfigError(
                f"kube context '{chosen}' is not in {path} (contexts: {_or_none(names)}); --context takes an "
                "optional NAME: write --context=NAME, or put --context after MODEL"
            )
        configuration = kube_client.Configuration()
        kube_config.load_kube_config(
            config_file=path, context=chosen, client_configuration=configuration, persist_config=False
        )
    except ConfigException as exc:
        raise GatewayConfigError(f"kubeconfig {path}: {exc}") from exc
    return access_from_configuration(configuration, chosen)


def _or_none(names: list[str]) -> str:
    return ", ".join(names) or "none"


def service_proxy_url(server: str, service: ServiceRef) -> str:
    """The apiserver's proxy to ``service`` (paths below it reach the Service's port)."""
    return f"{server.rstrip('/')}/api/v1/namespaces/{service.namespace}/services/{service.name}:{service.port}/proxy"


def ssl_context(access: KubeAccess) -> ssl.SSLContext | bool:
    """TLS as the kubeconfig says: its CA (else the system's), its client certificate; False when told to skip."""
    if not access.verify:
        return False
    context = ssl.create_default_context(cafile=access.ca_file)
    if access.cert_file:
        context.load_cert_chain(access.cert_file, access.key_file)
    return context


def kube_endpoint(access: KubeAccess, service: ServiceRef, api_key: str | None = None) -> Endpoint:
    headers: dict[str, str] = {}
    if access.authorization:
        headers["Authorization"] = access.authorization
    if api_key:
        headers[GATEWAY_KEY_HEADER] = api_key
    return Endpoint(
        url=service_proxy_url(access.server, service),
        label=f"the gateway {service} through kube context '{access.context}' (API server {access.server})",
        hint=f"check `kubectl --context {access.context} cluster-info`",
        headers=headers,
        verify=ssl_context(access),
        proxy=access.proxy,
        service=service,
        context=access.context,
    )


def gateway_endpoint(
    choice: GatewayChoice,
    *,
    service: str | None = None,
    kubeconfig: str | None = None,
    api_key: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Endpoint:
    """The endpoint ``choice`` names; a kube context is loaded here (the only I/O)."""
    if choice.url is not None:
        return url_endpoint(choice.url, api_key)
    env = os.environ if environ is None else environ
    ref = ServiceRef.parse(service or env.get(GATEWAY_SERVICE_ENV) or DEFAULT_GATEWAY_SERVICE)
    try:
        return kube_endpoint(kube_access(choice.context, kubeconfig), ref, api_key)
    except (OSError, ssl.SSLError) as exc:
        raise GatewayConfigError(f"the TLS files of kube context '{choice.context or 'current'}': {exc}") from exc


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header in seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _kube_status(response: httpx.Response) -> dict[str, Any] | None:
    """The apiserver's own error (a ``Status`` object), as opposed to an answer the gateway sent through it."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and body.get("kind") == "Status" else None


class GatewayClient(LocalClient):
    """:class:`LocalClient` for slm-gateway: messages that name the gateway and say what to do, and a wait while
    a model wakes (503 + Retry-After retried until ``wake_timeout`` seconds have passed)."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        wake_timeout: float = DEFAULT_WAKE_TIMEOUT,
        notify: Callable[[str], None] = lambda _: None,
        waiting_after: float = 1.0,
        timeout: float = 600,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            endpoint.url,
            timeout=timeout,
            transport=transport,
            headers=endpoint.headers,
            verify=endpoint.verify,
            proxy=endpoint.proxy,
        )
        self.endpoint = endpoint
        self.wake_timeout = wake_timeout
        self._notify = notify
        self._waiting_after = waiting_after
        self._sleep = sleep
        self._clock = clock

    def ready(self) -> bool:
        return self.reachable()

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        response = self._send(method, path, body, stream=False)
        return response.json()

    def _stream(
        self, path: str, body: Mapping[str, Any], text_of: Callable[[Mapping[str, Any]], str]
    ) -> Iterator[StreamChunk]:
        response = self._send("POST", path, body, stream=True)
        try:
            yield from stream_chunks(path, response, text_of)
        except httpx.TransportError as exc:
            raise ClientError(f"{self.endpoint.label} broke off the answer: {exc}") from exc
        finally:
            response.close()

    def _send(self, method: str, path: str, body: Mapping[str, Any] | None, *, stream: bool) -> httpx.Response:
        """A response below 400 (open when ``stream``), after any wait for a waking model; else ClientError."""
        model = str((body or {}).get("model") or "")
        deadline: float | None = None
        shown = _Shown(self._notify)
        try:
            while True:
                request = self._http.build_request(method, path, json=body)
                with shown.after(self._waiting_after, f"waiting for {model}…" if model else ""):
                    response = self._transmit(request, stream=stream)
                if response.status_code < 400:
                    return response
                if stream:
                    response.read()
                    response.close()
                wait = retry_after_seconds(response.headers.get("retry-after"))
                if response.status_code != 503 or wait is None or _kube_status(response) is not None:
                    raise self._failure(path, model, response)
                now = self._clock()
                deadline = now + self.wake_timeout if deadline is None else deadline
                if now >= deadline:
                    raise ClientError(
                        f"{model or path} is still not ready after {self.wake_timeout:g}s at {self.endpoint.label}: "
                        f"{error_text(response)}; try again later, or wait longer with --wake-timeout"
                    )
                shown.show(f"waking {model or path}… ({error_text(response)})")
                self._sleep(min(max(wait, _MIN_RETRY_SECONDS), deadline - now))
        finally:
            shown.clear()

    def _transmit(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        try:
            return self._http.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise ClientError(f"{self.endpoint.label} did not answer in time ({exc!r}); {self.endpoint.hint}") from exc
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach {self.endpoint.label}: {exc}; {self.endpoint.hint}") from exc

    def _failure(self, path: str, model: str, response: httpx.Response) -> ClientError:
        status = response.status_code
        status_object = _kube_status(response) if self.endpoint.context is not None else None
        if status_object is not None:
            return ClientError(self._apiserver_failure(status, str(status_object.get("message") or "")))
        message = error_text(response)
        label = self.endpoint.label
        if status == 401:
            return ClientError(
                f"{label} refused the request (HTTP 401: {message}): pass the gateway's API key with --api-key "
                "or $SLM_API_KEY"
            )
        if status == 403:
            target = f" to {model}" if model else ""
            return ClientError(f"{label} refused access{target} (HTTP 403: {message}): this API key may not use it")
        if status == 404 and model:
            return ClientError(f"model '{model}' not found at {label}; {self._offered()}")
        return ClientError(f"{path} at {label}: HTTP {status}: {message}")

    def _offered(self) -> str:
        try:
            names = sorted(str(m.get("name") or m.get("model")) for m in self.models())
        except ClientError:
            return "listing its models failed too"
        if not names:
            return "it serves no model now (`kubectl get slm -A` shows what is deployed and whether it is Ready)"
        return "it serves: " + ", ".join(names)

    def _apiserver_failure(self, status: int, message: str) -> str:
        service = self.endpoint.service
        context = self.endpoint.context
        where = f"the Kubernetes API server of kube context '{context}'"
        if status == 401:
            return (
                f"{where} refused its credentials ({message}); log in again, and check with "
                f"`kubectl --context {context} get --raw /version`"
            )
        if service is None:
            return f"{where}: HTTP {status}: {message}"
        if status == 403:
            return (
                f"{where} refused the service proxy to {service} ({message}): the user needs get and create on "
                f"services/proxy in namespace {service.namespace} "
                f"(`kubectl --context {context} auth can-i create services/proxy -n {service.namespace}`)"
            )
        if status == 404:
            return (
                f"{where} has no gateway Service {service} port '{service.port}' ({message}): is slm-gateway "
                f"installed (the chart's gateway toggle)? Name another with --gateway-service or "
                f"${GATEWAY_SERVICE_ENV}"
            )
        if status == 503:
            return (
                f"the gateway Service {service} has no ready pod ({message}): "
                f"`kubectl --context {context} -n {service.namespace} get pods` shows why"
            )
        return f"{where}: HTTP {status}: {message}"


class _Shown:
    """A status line that may be shown after a delay (from a timer thread), and cleared if it was shown."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        self._notify = notify
        self._lock = threading.Lock()
        self._visible = False

    def show(self, message: str) -> None:
        with self._lock:
            self._notify(message)
            self._visible = True

    def clear(self) -> None:
        with self._lock:
            if self._visible:
                self._notify("")
                self._visible = False

    @contextmanager
    def after(self, delay: float, message: str) -> Iterator[None]:
        """Show ``message`` if the block is still running after ``delay`` seconds."""
        if not message:
            yield
            return
        finished = threading.Event()

        def fire() -> None:
            with self._lock:
                if not finished.is_set():
                    self._notify(message)
                    self._visible = True

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            with self._lock:
                finished.set()
            timer.cancel()
