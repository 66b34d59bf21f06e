"""ollama:// pulls against a local server laid out like the Ollama registry (v2 manifest, blobs by digest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fetchtest_servers import FakeServer, Fault, model_bytes, quiet, sha

from slm_runtime.fetch import AuthenticationError, DigestMismatchError, FetchSettings, SourceNotFoundError, pull

MODEL = model_bytes(2 * 1024 * 1024 + 7)
TEMPLATE = "{{ if .System }}<|system|>{{ .System }}{{ end }}<|user|>{{ .Prompt }}<|assistant|>"
SYSTEM = "You are a terse assistant."
PARAMS = {"temperature": 0.2, "num_ctx": 4096, "stop": ["<|user|>"]}
LICENSE = "Apache License 2.0"
MEDIA = "application/vnd.ollama.image."


def _publish(registry: FakeServer, cdn: FakeServer, *, name: str = "library/tiny", tag: str = "1b") -> str:
    """Lay out the manifest and blobs of ``name:tag``; blobs redirect to a CDN as the real registry does."""
    layers = []
    for kind, body in (
        ("model", MODEL),
        ("template", TEMPLATE.encode()),
        ("system", SYSTEM.encode()),
        ("params", json.dumps(PARAMS).encode()),
        ("license", LICENSE.encode()),
        ("projector", b"vision tower"),
    ):
        digest = f"sha256:{sha(body)}"
        layers.append({"mediaType": MEDIA + kind, "digest": digest, "size": len(body)})
        cdn.add(f"/blobs/{digest}", body)
        registry.add(f"/v2/{name}/blobs/{digest}", redirect=f"{cdn.url}/blobs/{digest}", redirect_status=307)
    config = b"{}"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": f"sha256:{sha(config)}",
            "size": 2,
        },
        "layers": layers,
    }
    registry.add(f"/v2/{name}/manifests/{tag}", json.dumps(manifest).encode())
    return f"sha256:{sha(MODEL)}"


@pytest.fixture
def registry(make_server: object, settings: FetchSettings) -> tuple[FakeServer, FakeServer, FetchSettings]:
    registry, cdn = make_server(), make_server()  # type: ignore[operator]
    return registry, cdn, settings.model_copy(update={"ollama_registry": registry.url})


def test_pull_model_blob_and_metadata(registry: tuple[FakeServer, FakeServer, FetchSettings], dest: Path) -> None:
    server, cdn, settings = registry
    digest = _publish(server, cdn)
    model = pull("ollama://tiny:1b", dest, settings=settings, progress=quiet)
    folder = dest / "ollama" / "library" / "tiny" / "1b"
    assert model.path == str(folder / "model.gguf")
    assert (folder / "model.gguf").read_bytes() == MODEL
    assert model.digest == digest
    assert model.format == "gguf"
    assert model.metadata.template == TEMPLATE
    assert model.metadata.system == SYSTEM
    assert model.metadata.parameters == PARAMS
    assert model.metadata.license == LICENSE
    assert json.loads((folder / "manifest.json").read_text())["schemaVersion"] == 2
    record = json.loads((folder / "model.gguf.slm.json").read_text())
    assert record["metadata"]["parameters"]["num_ctx"] == 4096
    manifest_request = server.seen[0]
    assert manifest_request.path == "/v2/library/tiny/manifests/1b"
    assert "manifest.v2+json" in manifest_request.headers["accept"]
    assert not any("projector" in s.path for s in cdn.seen)
    again = pull("ollama://library/tiny:1b", dest, settings=settings, progress=quiet, offline=True)
    assert again.cached
    assert again.metadata == model.metadata


def test_model_blob_resumes_after_drop(registry: tuple[FakeServer, FakeServer, FetchSettings], dest: Path) -> None:
    server, cdn, settings = registry
    digest = _publish(server, cdn)
    cdn.fault(f"/blobs/{digest}", Fault("drop", after=1_000_000))
    model = pull("ollama://tiny:1b", dest, settings=settings, progress=quiet)
    assert Path(model.path).read_bytes() == MODEL
    assert cdn.gets(f"/blobs/{digest}")[1].headers["range"].startswith("bytes=")


def test_pin_that_differs_from_manifest_fails_before_download(
    registry: tuple[FakeServer, FakeServer, FetchSettings], dest: Path
) -> None:
    server, cdn, settings = registry
    digest = _publish(server, cdn)
    with pytest.raises(DigestMismatchError) as caught:
        pull("ollama://tiny:1b", dest, sha256="0" * 64, settings=settings, progress=quiet)
    assert caught.value.actual == digest.removeprefix("sha256:")
    assert cdn.seen == []


def test_corrupted_blob_is_refused(registry: tuple[FakeServer, FakeServer, FetchSettings], dest: Path) -> None:
    server, cdn, settings = registry
    digest = _publish(server, cdn)
    cdn.routes[f"/blobs/{digest}"].corrupt = True
    with pytest.raises(DigestMismatchError):
        pull("ollama://tiny:1b", dest, settings=settings, progress=quiet)
    folder = dest / "ollama" / "library" / "tiny" / "1b"
    assert not (folder / "model.gguf").exists()
    assert not (folder / "model.gguf.partial").exists()


def test_unknown_model_is_not_found(registry: tuple[FakeServer, FakeServer, FetchSettings], dest: Path) -> None:
    _, _, settings = registry
    with pytest.raises(SourceNotFoundError, match=r"ollama://nosuch: .*/manifests/latest answered 404"):
        pull("ollama://nosuch", dest, settings=settings, progress=quiet)


def test_registry_mirror_from_environment(
    registry: tuple[FakeServer, FakeServer, FetchSettings], dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, cdn, _ = registry
    _publish(server, cdn, name="team/tiny", tag="latest")
    monkeypatch.setenv("SLM_OLLAMA_REGISTRY", server.url)
    settings = FetchSettings.from_env(read_timeout=1.0)
    assert settings.ollama_registry == server.url
    model = pull("ollama://team/tiny", dest, settings=settings, progress=quiet)
    assert Path(model.path) == dest / "ollama" / "team" / "tiny" / "latest" / "model.gguf"


def test_mirror_with_registry_token_auth(registry: tuple[FakeServer, FakeServer, FetchSettings], dest: Path) -> None:
    server, cdn, settings = registry
    _publish(server, cdn)
    challenge = f'Bearer realm="{server.url}/token",service="mirror",scope="repository:library/tiny:pull"'
    for path, route in server.routes.items():
        if path.startswith("/v2/"):
            route.token, route.challenge = "tok-1", challenge
    server.add("/token", json.dumps({"token": "tok-1"}).encode())
    model = pull("ollama://tiny:1b", dest, settings=settings, progress=quiet)
    assert Path(model.path).read_bytes() == MODEL
    token_request = next(s for s in server.seen if s.path.startswith("/token"))
    assert "service=mirror" in token_request.path
    assert "scope=repository%3Alibrary%2Ftiny%3Apull" in token_request.path
    assert all("authorization" not in s.headers for s in cdn.seen)  # the token stays with the registry


def test_401_without_challenge_is_an_authentication_error(
    registry: tuple[FakeServer, FakeServer, FetchSettings], dest: Path
) -> None:
    server, cdn, settings = registry
    _publish(server, cdn)
    server.routes["/v2/library/tiny/manifests/1b"].token = "x"
    with pytest.raises(AuthenticationError, match=r"ollama://tiny:1b: .*401"):
        pull("ollama://tiny:1b", dest, settings=settings, progress=quiet)


def test_same_blob_under_another_tag_is_linked_not_downloaded(
    registry: tuple[FakeServer, FakeServer, FetchSettings], dest: Path
) -> None:
    server, cdn, settings = registry
    digest = _publish(server, cdn, tag="1b")
    _publish(server, cdn, tag="latest")
    first = pull("ollama://tiny:1b", dest, settings=settings, progress=quiet)
    second = pull("ollama://tiny", dest, settings=settings, progress=quiet)
    assert len(cdn.gets(f"/blobs/{digest}")) == 1
    assert not second.cached
    assert second.digest == first.digest
    assert Path(second.path).stat().st_ino == Path(first.path).stat().st_ino
    assert second.metadata.template == TEMPLATE
    assert (Path(second.path).parent / "manifest.json").is_file()
