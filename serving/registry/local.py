"""A version fetched to local disk (`LocalVersion`) and the sweep of downloads a crashed fetch
left behind."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.registry.manifest import VERSION_RE
from storage.files import older_than

STALE_DOWNLOAD_S = 3600.0


def sweep_stale_downloads(directory: Path, older_than_s: float = STALE_DOWNLOAD_S) -> list[Path]:
    """Remove the hidden temporary folders (``.{version}.*``) a killed download left in a cache
    folder, once untouched for ``older_than_s`` (a newer one may be another process's download
    in progress). Returns what was removed."""
    removed = []
    if not directory.is_dir():
        return removed
    for child in directory.iterdir():
        name = child.name
        if not (name.startswith(".") and VERSION_RE.fullmatch(name[1:].split(".", 1)[0] or "-")):
            continue
        if child.is_dir() and older_than(child, older_than_s):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


@dataclass(frozen=True)
class LocalVersion:
    """A version fetched to local disk with every checksum verified."""

    surface: str
    version: str
    manifest: dict[str, Any]
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name
