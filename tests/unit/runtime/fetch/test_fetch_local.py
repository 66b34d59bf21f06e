"""file:// and pvc:// sources: used in place, hashed, never copied or deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fetchtest_servers import model_bytes, quiet, sha

from slm_runtime.fetch import DigestMismatchError, FetchSettings, SourceNotFoundError, cached, model_path, pull
from slm_runtime.fetch.local import tree_digest

DATA = model_bytes(300_000)


def test_file_is_verified_in_place(tmp_path: Path, dest: Path, settings: FetchSettings) -> None:
    model_file = tmp_path / "models" / "tiny.gguf"
    model_file.parent.mkdir()
    model_file.write_bytes(DATA)
    model = pull(f"file://{model_file}", dest, sha256=sha(DATA), settings=settings, progress=quiet)
    assert model.path == str(model_file)
    assert model.digest == f"sha256:{sha(DATA)}"
    assert model.format == "gguf"
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == ["tiny.gguf.slm.json"]
    record = dest.joinpath("file", *model_file.parts[1:]).with_name("tiny.gguf.slm.json")
    assert json.loads(record.read_text())["path"] == str(model_file)
    assert model_path(f"file://{model_file}", dest, settings) == model_file


def test_mismatch_leaves_the_users_file_alone(tmp_path: Path, dest: Path, settings: FetchSettings) -> None:
    model_file = tmp_path / "tiny.gguf"
    model_file.write_bytes(DATA)
    with pytest.raises(DigestMismatchError):
        pull(f"file://{model_file}", dest, sha256="1" * 64, settings=settings, progress=quiet)
    assert model_file.read_bytes() == DATA


def test_pvc_path_under_the_mount_root(dest: Path, settings: FetchSettings) -> None:
    model_file = settings.pvc_root / "models-claim" / "llm" / "tiny.gguf"
    model_file.parent.mkdir(parents=True)
    model_file.write_bytes(DATA)
    model = pull("pvc://models-claim/llm/tiny.gguf", dest, settings=settings, progress=quiet)
    assert model.path == str(model_file)
    assert (dest / "pvc" / "models-claim" / "llm" / "tiny.gguf.slm.json").is_file()


def test_missing_pvc_file_names_the_mount(dest: Path, settings: FetchSettings) -> None:
    with pytest.raises(SourceNotFoundError, match="is the claim mounted there"):
        pull("pvc://models-claim/none.gguf", dest, settings=settings, progress=quiet)


def test_folder_gets_a_tree_digest(tmp_path: Path, dest: Path, settings: FetchSettings) -> None:
    folder = tmp_path / "phi-onnx"
    (folder / "sub").mkdir(parents=True)
    (folder / "genai_config.json").write_text("{}")
    (folder / "sub" / "model.onnx").write_bytes(b"onnx")
    model = pull(f"file://{folder}/", dest, settings=settings, progress=quiet)
    expected = tree_digest([("sub/model.onnx", sha(b"onnx")), ("genai_config.json", sha(b"{}"))])
    assert model.digest == f"sha256:{expected}"
    assert model.size_bytes == 6
    assert model.format == "onnx"


def test_tree_digest_matches_sha256sum_lines() -> None:
    lines = f"{sha(b'a')}  a.txt\n{sha(b'b')}  b/c.txt\n"
    assert tree_digest([("b/c.txt", sha(b"b")), ("a.txt", sha(b"a"))]) == sha(lines.encode())


def test_cached_reports_the_in_place_record(tmp_path: Path, dest: Path, settings: FetchSettings) -> None:
    model_file = tmp_path / "tiny.gguf"
    model_file.write_bytes(DATA)
    source = f"file://{model_file}"
    assert cached(source, dest, settings=settings) is None  # never pulled: nothing recorded
    pulled = pull(source, dest, settings=settings, progress=quiet)
    hit = cached(source, dest, settings=settings)
    assert hit is not None
    assert hit.cached
    assert (hit.path, hit.digest) == (pulled.path, pulled.digest)
    model_file.write_bytes(DATA + b"more")
    assert cached(source, dest, settings=settings) is None
