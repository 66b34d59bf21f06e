"""`slm list` / `slm rm` over the fetcher's records: names, digests, in-place models kept on rm."""

from __future__ import annotations

from pathlib import Path

import pytest

from slm_operator.cli import main
from slm_operator.local.cache import find_cached, list_cached, remove_cached
from slm_runtime.fetch import PulledModel, pull
from slm_runtime.fetch.layout import cache_path
from slm_runtime.fetch.result import record_path, write_record
from slm_runtime.source import parse_source


def _fake_ollama_pull(cache: Path, source: str) -> Path:
    """Lay out a model the way an ollama:// pull leaves it (model.gguf, manifest.json, lock, record)."""
    target = cache_path(parse_source(source), cache.absolute())
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF" + b"\0" * 60)
    target.with_name("manifest.json").write_text("{}")
    target.with_name("model.gguf.lock").write_text("")
    digest = "sha256:" + "ab" * 32
    write_record(record_path(target), PulledModel(path=str(target), source=source, digest=digest, size_bytes=64))
    return target


def test_list_find_and_remove(cache: Path, fake_gguf: Path) -> None:
    ollama_model = _fake_ollama_pull(cache, "ollama://qwen2.5:0.5b")
    pull(f"file://{fake_gguf}", cache)
    models = list_cached(cache)
    assert sorted(m.name for m in models) == ["qwen2.5:0.5b", "tiny"]
    assert [m.name for m in find_cached(cache, "qwen2.5:0.5b")] == ["qwen2.5:0.5b"]
    assert [m.name for m in find_cached(cache, "ababab")] == ["qwen2.5:0.5b"]
    assert [m.name for m in find_cached(cache, f"file://{fake_gguf}")] == ["tiny"]
    assert [m.name for m in find_cached(cache, "tiny:latest")] == ["tiny"]
    assert find_cached(cache, "abab") == []  # digest prefixes need 6 digits

    [local] = find_cached(cache, "tiny")
    assert local.in_place(cache)
    remove_cached(local, cache)
    assert fake_gguf.is_file(), "rm must never delete a file:// model, only its record"
    assert not (cache / "file").exists()

    [remote] = find_cached(cache, "qwen2.5:0.5b")
    removed = remove_cached(remote, cache)
    assert ollama_model in removed and not ollama_model.exists()
    assert not (cache / "ollama").exists(), "empty folders are pruned"
    assert cache.is_dir() and list_cached(cache) == []


def test_cli_list_and_rm(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_ollama_pull(cache, "ollama://qwen2.5:0.5b")
    assert main(["list", "--cache", str(cache)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SIZE", "FORMAT", "MODIFIED", "SOURCE"]
    assert lines[1].split()[:4] == ["qwen2.5:0.5b", "abababababab", "64", "B"]
    assert lines[1].endswith("ollama://qwen2.5:0.5b")
    assert main(["rm", "--cache", str(cache), "nope"]) == 1
    assert "model 'nope' not found" in capsys.readouterr().err
    assert main(["rm", "--cache", str(cache), "qwen2.5:0.5b"]) == 0
    assert capsys.readouterr().out == "deleted 'qwen2.5:0.5b' (ollama://qwen2.5:0.5b)\n"
    assert main(["ls", "--cache", str(cache), "--json"]) == 0
    assert capsys.readouterr().out == "[]\n"


def test_list_of_a_missing_cache_is_empty(tmp_path: Path) -> None:
    assert list_cached(tmp_path / "none") == []


def test_a_cached_name_resolves_to_its_source(cache: Path, fake_gguf: Path) -> None:
    from slm_operator.local.session import resolve_target
    from slm_operator.local.targets import TargetError

    pull(f"file://{fake_gguf}", cache)
    resource = resolve_target("tiny", cache_dir=cache)
    assert resource.spec.model.source == f"file://{fake_gguf}"
    assert resource.spec.model.served_name() == "tiny"
    with pytest.raises(TargetError, match="'other' is not a file, a model source or a model in the cache"):
        resolve_target("other", cache_dir=cache)
