"""Where the CLI finds slm-gateway (flags, $SLM_GATEWAY, a kube context's service proxy and its credentials), and
the gateway client's errors and wait for a waking model, without a network."""

from __future__ import annotations

import base64
import io
import json
import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from slm_operator.cli.gateway import status_writer
from slm_operator.local.client import ClientError
from slm_operator.local.remote import (
    GATEWAY_KEY_HEADER,
    Endpoint,
    GatewayChoice,
    GatewayClient,
    GatewayConfigError,
    KubeAccess,
    ServiceRef,
    choose_gateway,
    gateway_endpoint,
    kube_access,
    kube_endpoint,
    retry_after_seconds,
    service_proxy_url,
    ssl_context,
    url_endpoint,
)


@pytest.mark.parametrize(
    ("host", "context", "env", "expected"),
    [
        (None, None, {}, None),
        ("gw.example.com:8080", None, {"SLM_GATEWAY": "kube"}, GatewayChoice(url="http://gw.example.com:8080")),
        (None, "", {"SLM_GATEWAY": "https://x"}, GatewayChoice(context="")),
        (None, "prod", {}, GatewayChoice(context="prod")),
        (None, None, {"SLM_GATEWAY": "https://gw.example.com/"}, GatewayChoice(url="https://gw.example.com")),
        (None, None, {"SLM_GATEWAY": "kube"}, GatewayChoice(context="")),
        (None, None, {"SLM_GATEWAY": "kube:kind-slm"}, GatewayChoice(context="kind-slm")),
        (None, None, {"SLM_GATEWAY": " "}, None),
    ],
)
def test_choose_gateway(
    host: str | None, context: str | None, env: dict[str, str], expected: GatewayChoice | None
) -> None:
    assert choose_gateway(host, context, env) == expected


def test_a_gateway_variable_that_is_neither_url_nor_kube_is_refused() -> None:
    with pytest.raises(GatewayConfigError, match=r"\$SLM_GATEWAY='cluster': expected a URL .* 'kube'"):
        choose_gateway(None, None, {"SLM_GATEWAY": "cluster"})


def test_service_ref_and_proxy_url() -> None:
    assert ServiceRef.parse("slm-system/slm-operator-gateway") == ServiceRef(
        "slm-system", "slm-operator-gateway", "http"
    )
    ref = ServiceRef.parse("gw/front:8080")
    assert service_proxy_url("https://10.0.0.1:6443/", ref) == (
        "https://10.0.0.1:6443/api/v1/namespaces/gw/services/front:8080/proxy"
    )
    for bad in ("gateway", "a/b/c", "/b", "a/b:", ""):
        with pytest.raises(GatewayConfigError, match="expected NAMESPACE/NAME"):
            ServiceRef.parse(bad)


def test_gateway_service_defaults_to_the_charts_name_then_the_variable(tmp_path: Path) -> None:
    config = _kubeconfig(tmp_path, {"token": "t0k"}, {"insecure-skip-tls-verify": True})
    choice = GatewayChoice(context="")
    default = gateway_endpoint(choice, kubeconfig=str(config), environ={})
    assert default.url.endswith("/api/v1/namespaces/slm-system/services/slm-operator-gateway:http/proxy")
    named = gateway_endpoint(choice, kubeconfig=str(config), environ={"SLM_GATEWAY_SERVICE": "ai/gw:80"})
    assert named.url.endswith("/namespaces/ai/services/gw:80/proxy")
    flag = gateway_endpoint(choice, service="x/y", kubeconfig=str(config), environ={"SLM_GATEWAY_SERVICE": "ai/gw"})
    assert flag.url.endswith("/namespaces/x/services/y:http/proxy")


def _kubeconfig(tmp_path: Path, user: dict[str, object], cluster: dict[str, object]) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://10.1.2.3:6443", **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [
            {"name": "dev", "context": {"cluster": "c", "user": "u"}},
            {"name": "prod", "context": {"cluster": "c", "user": "u"}},
        ],
        "current-context": "dev",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(document))
    return path


def test_kube_context_with_a_token(tmp_path: Path) -> None:
    config = _kubeconfig(tmp_path, {"token": "t0k"}, {"insecure-skip-tls-verify": True})
    access = kube_access(None, str(config))
    assert access == KubeAccess(context="dev", server="https://10.1.2.3:6443", authorization="Bearer t0k", verify=False)
    endpoint = kube_endpoint(access, ServiceRef("slm-system", "slm-operator-gateway"), api_key="sk-1")
    assert endpoint.url == (
        "https://10.1.2.3:6443/api/v1/namespaces/slm-system/services/slm-operator-gateway:http/proxy"
    )
    assert dict(endpoint.headers) == {"Authorization": "Bearer t0k", GATEWAY_KEY_HEADER: "sk-1"}
    assert endpoint.verify is False and endpoint.context == "dev"
    assert kube_access("prod", str(config)).context == "prod"


def _pem(tmp_path: Path) -> tuple[bytes, bytes]:
    """A self-signed certificate and its key (the CA and the client certificate of the kubeconfig)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=slm-test"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert.read_bytes(), key.read_bytes()


def test_kube_context_with_a_client_certificate_and_ca(tmp_path: Path) -> None:
    cert, key = _pem(tmp_path)

    def data(value: bytes) -> str:
        return base64.b64encode(value).decode()

    config = _kubeconfig(
        tmp_path,
        {"client-certificate-data": data(cert), "client-key-data": data(key)},
        {"certificate-authority-data": data(cert)},
    )
    access = kube_access("", str(config))
    assert access.authorization is None and access.verify
    assert access.ca_file and Path(access.ca_file).read_bytes() == cert
    assert access.cert_file and Path(access.cert_file).read_bytes() == cert
    assert access.key_file and Path(access.key_file).read_bytes() == key
    context = ssl_context(access)
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert any(c.get("subject") == ((("commonName", "slm-test"),),) for c in context.get_ca_certs())
    endpoint = kube_endpoint(access, ServiceRef("slm-system", "gw"))
    assert dict(endpoint.headers) == {} and isinstance(endpoint.verify, ssl.SSLContext)


def test_an_unknown_kube_context_lists_the_known_ones(tmp_path: Path) -> None:
    config = _kubeconfig(tmp_path, {"token": "t"}, {})
    with pytest.raises(GatewayConfigError, match=r"context 'team-a/assistant' is not in .* \(contexts: dev, prod\)"):
        kube_access("team-a/assistant", str(config))
    with pytest.raises(GatewayConfigError, match=r"kubeconfig .*missing"):
        kube_access(None, str(tmp_path / "missing"))


def test_retry_after() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:05 GMT", now=1445412480.0) == 5.0


def test_a_url_gateway_sends_its_key_as_a_bearer_token() -> None:
    endpoint = url_endpoint("https://gw", api_key="sk-2")
    assert dict(endpoint.headers) == {"Authorization": "Bearer sk-2"}
    assert endpoint.context is None


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _client(handler: object, clock: _Clock, notes: list[str], *, wake_timeout: float = 10) -> GatewayClient:
    endpoint = Endpoint(url="http://gw", label="the gateway at http://gw", hint="check it")
    return GatewayClient(
        endpoint,
        wake_timeout=wake_timeout,
        notify=notes.append,
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
        sleep=clock.sleep,
        clock=clock,
    )


def test_a_waking_model_is_retried_until_it_answers() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) < 3:
            return httpx.Response(503, headers={"Retry-After": "2"}, json={"error": "model team-a/x is waking"})
        return httpx.Response(200, text=json.dumps({"response": "ok", "done": True}) + "\n")

    clock, notes = _Clock(), list[str]()
    chunks = list(_client(handler, clock, notes).generate("team-a/x", "hi"))
    assert [c.text for c in chunks] == ["ok"] and clock.slept == [2.0, 2.0]
    assert notes == ["waking team-a/x… (model team-a/x is waking)"] * 2 + [""]


def test_the_wait_for_a_waking_model_is_bounded() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "4"}, json={"error": "waking"})

    clock, notes = _Clock(), list[str]()
    with pytest.raises(ClientError, match=r"team-a/x is still not ready after 10s at the gateway at http://gw"):
        list(_client(handler, clock, notes).chat("team-a/x", [{"role": "user", "content": "hi"}]))
    assert clock.slept == [4.0, 4.0, 2.0] and notes[-1] == ""


def test_a_503_without_retry_after_fails_at_once() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": "no capacity"})

    clock, notes = _Clock(), list[str]()
    with pytest.raises(ClientError, match="/api/generate at the gateway at http://gw: HTTP 503: no capacity"):
        list(_client(handler, clock, notes).generate("m", "hi"))
    assert clock.slept == [] and notes == []


def test_unauthorized_and_missing_models_say_what_to_do() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/tags":
            return httpx.Response(200, json={"models": [{"name": "team-a/assistant"}, {"name": "team-b/coder"}]})
        if request.url.path == "/api/ps":
            return httpx.Response(401, json={"error": "missing API key"})
        return httpx.Response(404, json={"error": {"message": "model 'x' not found"}})

    client = _client(handler, _Clock(), [])
    with pytest.raises(ClientError, match=r"refused the request \(HTTP 401: missing API key\): pass the gateway's"):
        client.loaded()
    with pytest.raises(
        ClientError, match="model 'x' not found at the gateway at http://gw; it serves: team-a/assistant, team-b/coder"
    ):
        client.show("x")


def test_the_apiservers_own_errors_are_told_apart() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path.startswith("/api/v1/namespaces/slm-system/services/gw:http/proxy/api/")
        status = {"tags": 403, "ps": 503}.get(request.url.path.rsplit("/", 1)[-1], 404)
        return httpx.Response(status, json={"kind": "Status", "code": status, "message": f"m{status}"})

    access = KubeAccess(context="dev", server="https://k")
    endpoint = kube_endpoint(access, ServiceRef("slm-system", "gw"))
    client = GatewayClient(endpoint, transport=httpx.MockTransport(handler))
    with pytest.raises(ClientError, match=r"needs get and create on services/proxy in namespace slm-system"):
        client.models()
    with pytest.raises(ClientError, match=r"the gateway Service slm-system/gw has no ready pod \(m503\)"):
        client.loaded()
    with pytest.raises(ClientError, match=r"has no gateway Service slm-system/gw port 'http' \(m404\)"):
        client.show("m")


def test_unreachable_gateway_names_the_url_and_what_to_check() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = GatewayClient(url_endpoint("http://127.0.0.1:9"), transport=httpx.MockTransport(refuse))
    with pytest.raises(
        ClientError,
        match=r"cannot reach the gateway at http://127.0.0.1:9: connection refused; check the URL \(--host, "
        r"\$SLM_GATEWAY\) and that slm-gateway runs there",
    ):
        client.models()


def test_status_lines() -> None:
    out = io.StringIO()
    write = status_writer(out, tty=True)
    write("waiting for m…")
    write("")
    assert out.getvalue() == "\rwaiting for m…\x1b[K\r\x1b[K"
    log = io.StringIO()
    write = status_writer(log, tty=False)
    for message in ("waiting for m…", "waking m… (a)", "waking m… (a)", "", "waking m… (b)"):
        write(message)
    assert log.getvalue() == "waking m… (a)\nwaking m… (b)\n"
