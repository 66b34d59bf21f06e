"""The local model cache as `slm list`, `slm rm` and `slm show` see it: the fetcher's ``<file>.slm.json`` records.

Each record written by ``pull`` (see ``slm_runtime.fetch.layout``) is one model. Models used in place
(file://, pvc://, a file inside a Python package) keep only their record in the cache: removing them deletes
the record, never the user's file.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from slm_operator.api import ModelSpec
from slm_runtime.fetch import PulledModel
from slm_runtime.fetch.layout import OLLAMA_MODEL_FILE
from slm_runtime.fetch.result import RECORD_SUFFIX, read_record
from slm_runtime.settings import canonical_model_name

__all__ = ["CachedModel", "find_cached", "list_cached", "remove_cached"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedModel:
    """One pulled model: its record, where the record lives and when it was written."""

    record: PulledModel
    record_path: Path
    modified: datetime

    @property
    def name(self) -> str:
        """The name `slm serve` gives it when a manifest sets no spec.model.name."""
        try:
            return ModelSpec(source=self.record.source).served_name()
        except ValueError:
            return self.record.source

    @property
    def path(self) -> Path:
        return Path(self.record.path)

    def in_place(self, dest: Path) -> bool:
        """True when the model itself lives outside the cache (file://, pvc://, package files)."""
        return not self.path.absolute().is_relative_to(dest.absolute())

    def matches(self, reference: str) -> bool:
        """By name (':latest' optional), by source URI, or by a digest prefix of 6+ hex digits."""
        names = {self.name, canonical_model_name(self.name), self.record.source}
        digest = self.record.sha256
        ref = reference.removeprefix("sha256:")
        return reference in names or (len(ref) >= 6 and digest.startswith(ref.lower()))


def list_cached(dest: Path) -> list[CachedModel]:
    """Every model with a readable record under ``dest``, newest first."""
    if not dest.is_dir():
        return []
    found: list[CachedModel] = []
    for record_path in dest.rglob("*" + RECORD_SUFFIX):
        if ".partial" in record_path.parts or not record_path.is_file():
            continue
        record = read_record(record_path)
        if record is None:
            log.debug("%s: not a pull record; skipped", record_path)
            continue
        modified = datetime.fromtimestamp(record_path.stat().st_mtime, UTC)
        found.append(CachedModel(record=record, record_path=record_path, modified=modified))
    return sorted(found, key=lambda model: model.modified, reverse=True)


def find_cached(dest: Path, reference: str) -> list[CachedModel]:
    """The cached models ``reference`` names (name, source or digest prefix)."""
    return [model for model in list_cached(dest) if model.matches(reference)]


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_cached(model: CachedModel, dest: Path) -> list[Path]:
    """Delete the record and, when it lives in the cache, the model and its lock/partial files.

    Folders left empty up to ``dest`` are removed too. Returns what was deleted.
    """
    removed: list[Path] = []
    targets = [model.record_path]
    if not model.in_place(dest):
        base = model.path
        targets += [base, base.with_name(base.name + ".lock"), base.with_name(base.name + ".partial")]
        if base.name == OLLAMA_MODEL_FILE:
            targets.append(base.with_name("manifest.json"))
    for target in targets:
        if target.exists() or target.is_symlink():
            _remove_path(target)
            removed.append(target)
    folder = model.record_path.parent
    root = dest.absolute()
    while folder.absolute() != root and folder.absolute().is_relative_to(root) and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
    return removed
