"""https:// and http:// pulls end to end, and the download faults: drops, stalls, 5xx, corruption, 404/401."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from fetchtest_servers import FakeServer, Fault, model_bytes, quiet, sha
from pydantic import SecretStr

from slm_runtime.fetch import (
    AuthenticationError,
    CacheFullError,
    DigestMismatchError,
    FetchSettings,
    NotCachedError,
    PulledModel,
    SourceNotFoundError,
    TransferError,
    cached,
    pull,
)

DATA = model_bytes()
PATH = "/models/tiny.gguf"


def _pull(server: FakeServer, dest: Path, settings: FetchSettings, **kwargs: object) -> PulledModel:
    return pull(f"{server.url}{PATH}", dest, settings=settings, progress=quiet, **kwargs)  # type: ignore[arg-type]


def _target(server: FakeServer, dest: Path) -> Path:
    return dest / "http" / server.netloc.replace(":", "_") / "models" / "tiny.gguf"


def test_pull_writes_verified_file_and_record(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    server.add(PATH, DATA)
    model = _pull(server, dest, settings, sha256=f"sha256:{sha(DATA)}")
    target = _target(server, dest)
    assert model.path == str(target)
    assert target.read_bytes() == DATA
    assert model.digest == f"sha256:{sha(DATA)}"
    assert model.size_bytes == len(DATA)
    assert model.format == "gguf"  # from the GGUF magic: the URL path says .gguf as well
    assert not model.cached
    record = json.loads(target.with_name("tiny.gguf.slm.json").read_text())
    assert record["sizeBytes"] == len(DATA)
    assert record["digest"] == model.digest
    assert not target.with_name("tiny.gguf.partial").exists()


def test_cached_model_needs_no_network(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    server.add(PATH, DATA)
    first = _pull(server, dest, settings)
    requests = len(server.seen)
    again = _pull(server, dest, settings, sha256=sha(DATA))
    offline = _pull(server, dest, settings, offline=True, verify=True)
    assert len(server.seen) == requests
    assert again.cached and offline.cached
    assert again.path == offline.path == first.path
    assert cached(f"{server.url}{PATH}", dest) is not None


def test_offline_fails_fast_when_not_cached(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    server.add(PATH, DATA)
    with pytest.raises(NotCachedError, match="offline and not cached"):
        _pull(server, dest, settings, offline=True)
    assert server.seen == []


def test_dropped_connection_resumes_with_range(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    server.add(PATH, DATA, etag='"v1"')
    server.fault(PATH, Fault("drop", after=1_500_000))
    model = _pull(server, dest, settings, sha256=sha(DATA))
    gets = server.gets(PATH)
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    resumed_at = int(gets[1].headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 1_500_000
    assert gets[1].headers["if-range"] == '"v1"'
    assert Path(model.path).read_bytes() == DATA


def test_resume_of_partial_file_left_by_a_killed_run(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    server.add(PATH, DATA)
    target = _target(server, dest)
    target.parent.mkdir(parents=True)
    target.with_name("tiny.gguf.partial").write_bytes(DATA[:1_000_000])
    model = _pull(server, dest, settings)
    assert server.gets(PATH)[0].headers["range"] == "bytes=1000000-"
    assert model.digest == f"sha256:{sha(DATA)}"


def test_stale_partial_file_is_downloaded_afresh(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    server.add(PATH, DATA)
    target = _target(server, dest)
    target.parent.mkdir(parents=True)
    target.with_name("tiny.gguf.partial").write_bytes(b"x" * 1000)
    model = _pull(server, dest, settings, sha256=sha(DATA))
    assert [g.headers.get("range") for g in server.gets(PATH)] == ["bytes=1000-", None]
    assert Path(model.path).read_bytes() == DATA


def test_server_ignoring_range_restarts_from_zero(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    server.add(PATH, DATA)
    server.fault(PATH, Fault("drop", after=700_000), Fault("full"))
    model = _pull(server, dest, settings, sha256=sha(DATA))
    assert len(server.gets(PATH)) == 2
    assert Path(model.path).read_bytes() == DATA


def test_corrupted_bytes_are_refused(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    server.add(PATH, DATA, corrupt=True)
    with pytest.raises(DigestMismatchError) as caught:
        _pull(server, dest, settings, sha256=sha(DATA))
    assert caught.value.expected == sha(DATA)
    assert caught.value.actual != sha(DATA)
    assert f"sha256:{sha(DATA)}" in str(caught.value)
    folder = _target(server, dest).parent
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.gguf.lock"]  # no model, no .partial, no record


def test_stalling_server_times_out_then_retry_succeeds(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    server.add(PATH, DATA)
    server.fault(PATH, Fault("stall", seconds=5))
    model = _pull(server, dest, settings)
    assert len(server.gets(PATH)) == 2
    assert model.size_bytes == len(DATA)


def test_5xx_is_retried(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    server.add(PATH, DATA)
    server.fault(PATH, Fault("status", status=503), Fault("status", status=502))
    assert _pull(server, dest, settings).size_bytes == len(DATA)
    assert len(server.gets(PATH)) == 3


def test_persistent_5xx_gives_up(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    server.add(PATH, DATA)
    server.fault(PATH, *[Fault("status", status=500)] * 10)
    with pytest.raises(TransferError, match="failed 4 times"):
        _pull(server, dest, settings)
    assert len(server.gets(PATH)) == settings.max_attempts


def test_404_is_final_and_names_the_source(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    with pytest.raises(SourceNotFoundError, match=f"{server.url}{PATH}.*404"):
        _pull(server, dest, settings)
    assert len(server.seen) == 1


def test_401_is_final_and_names_the_source(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    server.add(PATH, DATA, token="s3cret")
    with pytest.raises(AuthenticationError, match=f"{server.url}{PATH}.*401"):
        _pull(server, dest, settings)
    assert len(server.seen) == 1


def test_authorization_from_settings(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    server.add(PATH, DATA, token="s3cret")
    authed = settings.model_copy(update={"http_authorization": SecretStr("Bearer s3cret")})
    assert _pull(server, dest, authed).size_bytes == len(DATA)


def test_redirects_are_followed(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    server.add("/moved/tiny.gguf", DATA)
    server.add(PATH, redirect="/moved/tiny.gguf", redirect_status=301)
    assert Path(_pull(server, dest, settings).path).read_bytes() == DATA


def test_pin_change_pulls_again_and_verify_catches_corruption(
    server: FakeServer, dest: Path, settings: FetchSettings
) -> None:
    server.add(PATH, DATA)
    model = _pull(server, dest, settings)
    Path(model.path).write_bytes(b"GGUF" + b"\0" * (len(DATA) - 4))  # same size, other bytes
    assert _pull(server, dest, settings).cached  # the record is trusted by default
    repaired = _pull(server, dest, settings, verify=True)
    assert not repaired.cached
    assert Path(repaired.path).read_bytes() == DATA
    other = model_bytes(seed=2)
    server.add(PATH, other)
    assert _pull(server, dest, settings, sha256=sha(other)).digest == f"sha256:{sha(other)}"


def test_too_small_cache_fails_before_writing(
    server: FakeServer, dest: Path, settings: FetchSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.add(PATH, DATA)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: SimpleNamespace(total=10**9, used=10**9, free=1000))
    with pytest.raises(CacheFullError, match=r"spec\.cache\.size"):
        _pull(server, dest, settings)
    assert _target(server, dest).with_name("tiny.gguf.partial").stat().st_size == 0


def test_partial_of_a_file_changed_since_is_not_spliced(
    server: FakeServer, dest: Path, settings: FetchSettings
) -> None:
    old, new = model_bytes(seed=3), model_bytes(seed=4)
    server.add(PATH, old, etag='"old"')
    server.fault(PATH, Fault("drop", after=1_000_000), *[Fault("status", status=503)] * 3)
    with pytest.raises(TransferError):  # the run is "killed" with a partial file and its validator
        _pull(server, dest, settings)
    assert _target(server, dest).with_name("tiny.gguf.partial.validator").read_text() == '"old"'
    server.add(PATH, new, etag='"new"')
    model = _pull(server, dest, settings)  # no pin: only If-Range protects this resume
    last = server.gets(PATH)[-1]
    assert last.headers["if-range"] == '"old"'
    assert Path(model.path).read_bytes() == new
    assert not _target(server, dest).with_name("tiny.gguf.partial.validator").exists()
