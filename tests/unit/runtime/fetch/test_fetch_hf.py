"""hf:// pulls against a local Hub: resolve URL, 302 to a CDN on another origin, X-Linked-Etag digests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fetchtest_servers import FakeServer, model_bytes, quiet, sha
from pydantic import SecretStr

from slm_runtime.fetch import AuthenticationError, DigestMismatchError, FetchSettings, SourceNotFoundError, pull
from slm_runtime.fetch.local import tree_digest

DATA = model_bytes(1024 * 1024 + 11)


@pytest.fixture
def hub(make_server: object, settings: FetchSettings) -> tuple[FakeServer, FakeServer, FetchSettings]:
    hub, cdn = make_server(), make_server()  # type: ignore[operator]
    return hub, cdn, settings.model_copy(update={"hf_endpoint": hub.url})


def _publish(
    hub: FakeServer, cdn: FakeServer, repo: str, revision: str, path: str, *, token: str | None = None
) -> None:
    """An LFS file: the resolve URL answers 302 to a signed CDN URL with the sha256 in X-Linked-Etag."""
    digest = sha(DATA)
    cdn.add(f"/repos/{digest}", DATA)
    hub.add(
        f"/{repo}/resolve/{revision}/{path}",
        redirect=f"{cdn.url}/repos/{digest}?X-Amz-Signature=abc",
        token=token,
        headers={
            "X-Linked-Etag": f'"{digest}"',
            "X-Linked-Size": str(len(DATA)),
            "X-Repo-Commit": "0123456789abcdef0123456789abcdef01234567",
        },
    )


def test_pull_follows_redirect_and_keeps_token_on_the_hub(
    hub: tuple[FakeServer, FakeServer, FetchSettings], dest: Path
) -> None:
    server, cdn, settings = hub
    _publish(server, cdn, "org/repo", "v1.0", "gguf/model-q4.gguf", token="hf_x")
    settings = settings.model_copy(update={"hf_token": SecretStr("hf_x")})
    model = pull("hf://org/repo/gguf/model-q4.gguf@v1.0", dest, settings=settings, progress=quiet)
    assert Path(model.path) == dest / "hf" / "org" / "repo" / "v1.0" / "gguf" / "model-q4.gguf"
    assert Path(model.path).read_bytes() == DATA
    assert model.format == "gguf"
    assert [s.method for s in server.seen] == ["HEAD", "GET"]
    assert all(s.headers["authorization"] == "Bearer hf_x" for s in server.seen)
    assert cdn.seen and all("authorization" not in s.headers for s in cdn.seen)


def test_linked_etag_verifies_without_a_pin(hub: tuple[FakeServer, FakeServer, FetchSettings], dest: Path) -> None:
    server, cdn, settings = hub
    _publish(server, cdn, "org/repo", "main", "model.gguf")
    cdn.routes[f"/repos/{sha(DATA)}"].corrupt = True
    with pytest.raises(DigestMismatchError) as caught:
        pull("hf://org/repo/model.gguf", dest, settings=settings, progress=quiet)
    assert caught.value.expected == sha(DATA)
    assert not (dest / "hf" / "org" / "repo" / "main" / "model.gguf").exists()


def test_pin_against_announced_digest_fails_before_download(
    hub: tuple[FakeServer, FakeServer, FetchSettings], dest: Path
) -> None:
    server, cdn, settings = hub
    _publish(server, cdn, "org/repo", "main", "model.gguf")
    with pytest.raises(DigestMismatchError):
        pull("hf://org/repo/model.gguf", dest, sha256="f" * 64, settings=settings, progress=quiet)
    assert cdn.seen == []


def test_missing_token_is_an_authentication_error(
    hub: tuple[FakeServer, FakeServer, FetchSettings], dest: Path
) -> None:
    server, cdn, settings = hub
    _publish(server, cdn, "org/gated", "main", "model.gguf", token="hf_x")
    with pytest.raises(AuthenticationError, match=r"hf://org/gated/model\.gguf.*401.*HF_TOKEN"):
        pull("hf://org/gated/model.gguf", dest, settings=settings, progress=quiet)


def test_missing_file_is_not_found(hub: tuple[FakeServer, FakeServer, FetchSettings], dest: Path) -> None:
    _, _, settings = hub
    with pytest.raises(SourceNotFoundError, match=r"hf://org/repo/nope\.gguf"):
        pull("hf://org/repo/nope.gguf", dest, settings=settings, progress=quiet)


def test_endpoint_and_token_from_environment(
    hub: tuple[FakeServer, FakeServer, FetchSettings], dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, cdn, _ = hub
    _publish(server, cdn, "org/repo", "main", "model.gguf", token="hf_env")
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    model = pull("hf://org/repo/model.gguf", dest, progress=quiet)
    assert model.digest == f"sha256:{sha(DATA)}"


def _publish_folder(hub: FakeServer, cdn: FakeServer) -> dict[str, bytes]:
    """An onnxruntime-genai folder: two LFS files behind the CDN, a small git file, listed on two pages."""
    files = {"genai_config.json": b'{"model": {}}', "model.onnx": b"onnx-graph", "weights/model.onnx.data": DATA}
    listing = []
    for rel, body in files.items():
        entry: dict[str, object] = {"type": "file", "path": f"onnx/cpu/{rel}", "size": len(body), "oid": "1" * 40}
        if rel != "genai_config.json":
            entry["lfs"] = {"oid": sha(body), "size": len(body), "pointerSize": 134}
            cdn.add(f"/lfs/{sha(body)}", body)
            hub.add(f"/org/phi/resolve/main/onnx/cpu/{rel}", redirect=f"{cdn.url}/lfs/{sha(body)}")
        else:
            hub.add(f"/org/phi/resolve/main/onnx/cpu/{rel}", body)
        listing.append(entry)
    listing.insert(1, {"type": "directory", "path": "onnx/cpu/weights", "oid": "2" * 40, "size": 0})
    page1, page2 = json.dumps(listing[:2]).encode(), json.dumps(listing[2:]).encode()
    tree = "/api/models/org/phi/tree/main/onnx/cpu"
    hub.add(tree, page1, headers={"Link": f'<{hub.url}{tree}/page2?cursor=x>; rel="next"'})
    hub.add(f"{tree}/page2", page2)
    return files


def test_folder_is_listed_downloaded_and_renamed_into_place(
    hub: tuple[FakeServer, FakeServer, FetchSettings], dest: Path
) -> None:
    server, cdn, settings = hub
    files = _publish_folder(server, cdn)
    model = pull("hf://org/phi/onnx/cpu/", dest, settings=settings, progress=quiet)
    folder = dest / "hf" / "org" / "phi" / "main" / "onnx" / "cpu"
    assert model.path == str(folder)
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files
    assert model.digest == f"sha256:{tree_digest([(rel, sha(body)) for rel, body in files.items()])}"
    assert model.size_bytes == sum(len(b) for b in files.values())
    assert model.format == "onnx"
    assert not folder.with_name("cpu.partial").exists()
    assert pull("hf://org/phi/onnx/cpu/", dest, settings=settings, progress=quiet, offline=True).cached


def test_folder_resume_keeps_files_already_fetched(
    hub: tuple[FakeServer, FakeServer, FetchSettings], dest: Path
) -> None:
    server, cdn, settings = hub
    files = _publish_folder(server, cdn)
    staging = dest / "hf" / "org" / "phi" / "main" / "onnx" / "cpu.partial" / "weights"
    staging.mkdir(parents=True)
    (staging / "model.onnx.data").write_bytes(files["weights/model.onnx.data"])
    pull("hf://org/phi/onnx/cpu/", dest, settings=settings, progress=quiet)
    assert cdn.gets(f"/lfs/{sha(DATA)}") == []
    assert len(cdn.gets(f"/lfs/{sha(b'onnx-graph')}")) == 1


def test_folder_corrupted_lfs_file_is_refused(hub: tuple[FakeServer, FakeServer, FetchSettings], dest: Path) -> None:
    server, cdn, settings = hub
    _publish_folder(server, cdn)
    cdn.routes[f"/lfs/{sha(DATA)}"].corrupt = True
    with pytest.raises(DigestMismatchError, match=r"weights/model\.onnx\.data"):
        pull("hf://org/phi/onnx/cpu/", dest, settings=settings, progress=quiet)
    assert not (dest / "hf" / "org" / "phi" / "main" / "onnx" / "cpu").exists()


def test_renamed_repo_relative_redirect_is_followed_for_the_digest(
    hub: tuple[FakeServer, FakeServer, FetchSettings], dest: Path
) -> None:
    server, cdn, settings = hub
    _publish(server, cdn, "org/repo", "main", "model.gguf")
    cdn.routes[f"/repos/{sha(DATA)}"].corrupt = True  # only the announced digest can catch this
    server.add(
        "/org/old-name/resolve/main/model.gguf", redirect="/org/repo/resolve/main/model.gguf", redirect_status=307
    )
    with pytest.raises(DigestMismatchError):
        pull("hf://org/old-name/model.gguf", dest, settings=settings, progress=quiet)
    assert [s.path for s in server.seen if s.method == "HEAD"] == [
        "/org/old-name/resolve/main/model.gguf",
        "/org/repo/resolve/main/model.gguf",
    ]


def test_mirror_without_head_support(hub: tuple[FakeServer, FakeServer, FetchSettings], dest: Path) -> None:
    server, _, settings = hub
    server.add("/org/repo/resolve/main/model.gguf", DATA)
    server.head_status = 405
    model = pull("hf://org/repo/model.gguf", dest, sha256=sha(DATA), settings=settings, progress=quiet)
    assert model.digest == f"sha256:{sha(DATA)}"
